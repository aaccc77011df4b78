//! Serving an axum router on 127.0.0.1 from a thread of its own, so sync and
//! async tests alike can use it.

use std::future::Future;
use std::net::SocketAddr;

pub fn spawn(router: axum::Router) -> SocketAddr {
    spawn_with(|listener| async move {
        let _ = axum::serve(listener, router).await;
    })
}

/// Runs `serve` on a listener bound to 127.0.0.1:0, on a thread and a
/// runtime of its own; the address it listens on.
pub fn spawn_with<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            serve(listener).await;
        });
    });
    addr
}
