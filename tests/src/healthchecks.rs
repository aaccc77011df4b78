//! A healthchecks.io-style ping endpoint: `GET /ping/<uuid>` (success),
//! `GET /ping/<uuid>/start` and `POST /ping/<uuid>/fail` (with the reason as
//! the body), each recorded with when it came.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;

/// One ping: when, and `None` for success or `Some(reason)` for `/fail`
/// (starts are counted apart).
pub type Ping = (Instant, Option<String>);

#[derive(Clone)]
pub struct Healthchecks {
    pub addr: SocketAddr,
    pings: Arc<Mutex<Vec<Ping>>>,
    starts: Arc<Mutex<usize>>,
}

impl Healthchecks {
    pub fn start() -> Self {
        let pings = Arc::new(Mutex::new(Vec::new()));
        let starts = Arc::new(Mutex::new(0));
        let counter = starts.clone();
        let start = move || {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                "OK"
            }
        };
        let router = Router::new()
            .route("/ping/{uuid}", get(success))
            .route("/ping/{uuid}/fail", post(fail))
            .with_state(pings.clone())
            .route("/ping/{uuid}/start", get(start));
        Healthchecks {
            addr: crate::serve::spawn(router),
            pings,
            starts,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "http://{}/ping/5f1c0a52-9d3e-4b7a-8c21-6e0f4d2b9a77",
            self.addr
        )
    }

    pub fn pings(&self) -> Vec<Ping> {
        self.pings.lock().unwrap().clone()
    }

    pub fn starts(&self) -> usize {
        *self.starts.lock().unwrap()
    }

    pub fn successes(&self) -> usize {
        self.pings().iter().filter(|(_, f)| f.is_none()).count()
    }

    pub fn failures(&self) -> Vec<String> {
        self.pings().into_iter().filter_map(|(_, f)| f).collect()
    }
}

async fn success(State(pings): State<Arc<Mutex<Vec<Ping>>>>) -> &'static str {
    pings.lock().unwrap().push((Instant::now(), None));
    "OK"
}

async fn fail(State(pings): State<Arc<Mutex<Vec<Ping>>>>, body: String) -> &'static str {
    pings.lock().unwrap().push((Instant::now(), Some(body)));
    "OK"
}
