//! `/ui`: the incident audit view for a browser. A token pasted into the
//! sign-in form (the read or the control token) gives a session: a signed
//! cookie (HMAC-SHA256 under a key derived from the tokens, so changing a
//! token ends every session), HttpOnly, SameSite=Strict, Secure when the
//! request came over TLS (`X-Forwarded-Proto: https`), for 8 hours. Ack and
//! resolve need the control token's session and a CSRF token bound to it.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use vigil_wire::TokenCheck;

use super::io::now_ms;
use super::runner::Runner;
use crate::audit_page::{self, ListFilter, CSP};
use crate::core::state::{State, StateError};
use crate::ops_requests;

const COOKIE: &str = "vigil_ui";
const SESSION_MS: u64 = 8 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Read,
    Control,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Control => "control",
        }
    }
}

struct Ui {
    runner: Arc<Runner>,
    read: Option<TokenCheck>,
    control: Option<TokenCheck>,
    key: [u8; 32],
}

type Shared = Arc<Ui>;

/// The `/ui` routes; without a read or control token they refuse to sign in.
pub fn router(runner: Arc<Runner>) -> Router {
    let secrets = runner.io.secrets().clone();
    let (read, control) = (
        secrets.read_token.as_deref(),
        secrets.control_token.as_deref(),
    );
    let mut seed = Sha256::new();
    seed.update(b"vigil-ui-session\0");
    seed.update(read.unwrap_or_default());
    seed.update(b"\0");
    seed.update(control.unwrap_or_default());
    let ui = Arc::new(Ui {
        read: read.map(TokenCheck::new),
        control: control.map(TokenCheck::new),
        key: seed.finalize().into(),
        runner,
    });
    Router::new()
        .route("/ui", get(list))
        .route("/ui/sign-in", post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/incidents/{id}", get(incident))
        .route("/ui/incidents/{id}/{what}", post(act))
        .with_state(ui)
}

impl Ui {
    fn mac(&self, data: &str) -> String {
        // HMAC accepts a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(data.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn cookie_value(&self, role: Role, expires_ms: u64) -> String {
        let data = format!("{}.{expires_ms}", role.as_str());
        format!("{data}.{}", self.mac(&data))
    }

    /// The session the request's cookie proves, if any: (role, cookie value).
    fn session(&self, headers: &HeaderMap) -> Option<(Role, String)> {
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))?;
        let mut parts = value.splitn(3, '.');
        let (role, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let role = match role {
            "read" => Role::Read,
            "control" => Role::Control,
            _ => return None,
        };
        let expires_ms: u64 = expires.parse().ok()?;
        let expected = self.cookie_value(role, expires_ms);
        let proven = TokenCheck::new(&expected).accepts(value) && mac.len() == 64;
        (proven && now_ms() < expires_ms).then(|| (role, value.to_string()))
    }

    fn csrf(&self, cookie: &str) -> String {
        self.mac(&format!("csrf.{cookie}"))
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

fn not_found(id: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        audit_page::message("Not found", &format!("No incident {id:?}.")),
    )
}

fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(value: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/ui; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}")
}

async fn list(
    AxState(ui): AxState<Shared>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if ui.session(&headers).is_none() {
        return html(StatusCode::OK, audit_page::sign_in(None));
    }
    let state = q.get("state").map(String::as_str).filter(|s| !s.is_empty());
    let open = match ops_requests::state_filter(state) {
        Ok(o) => o,
        Err(why) => {
            return html(
                StatusCode::BAD_REQUEST,
                audit_page::message("Bad filter", &why),
            )
        }
    };
    let filter = ListFilter {
        target: q.get("target").filter(|t| !t.is_empty()).cloned(),
        open,
    };
    let targets: Vec<String> = ui
        .runner
        .config()
        .targets
        .iter()
        .map(|t| t.id.clone())
        .collect();
    let page = ui
        .runner
        .read(|s| audit_page::list(&s.incidents, &targets, &filter));
    html(StatusCode::OK, page)
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    AxState(ui): AxState<Shared>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let bearer = format!("Bearer {}", form.token.trim());
    // Both checks run, so timing does not tell which token matched.
    let control = ui
        .control
        .as_ref()
        .is_some_and(|t| t.accepts_header(Some(&bearer)));
    let read = ui
        .read
        .as_ref()
        .is_some_and(|t| t.accepts_header(Some(&bearer)));
    let role = match (control, read) {
        (true, _) => Role::Control,
        (false, true) => Role::Read,
        _ => {
            return html(
                StatusCode::UNAUTHORIZED,
                audit_page::sign_in(Some("That token is not accepted.")),
            )
        }
    };
    let value = ui.cookie_value(role, now_ms() + SESSION_MS);
    let cookie = set_cookie(&value, SESSION_MS / 1000, over_tls(&headers));
    see_other("/ui", Some(cookie))
}

async fn sign_out(headers: HeaderMap) -> Response {
    see_other("/ui", Some(set_cookie("", 0, over_tls(&headers))))
}

async fn incident(
    AxState(ui): AxState<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some((role, cookie)) = ui.session(&headers) else {
        return see_other("/ui", None);
    };
    let csrf = (role == Role::Control).then(|| ui.csrf(&cookie));
    match ui.runner.read(|s| {
        s.incident(&id)
            .map(|i| audit_page::incident(i, csrf.as_deref()))
    }) {
        Some(page) => html(StatusCode::OK, page),
        None => not_found(&id),
    }
}

#[derive(Deserialize)]
struct Csrf {
    #[serde(default)]
    csrf: String,
}

/// Runs a control change for the page, after the session and CSRF checks.
fn control(
    ui: &Ui,
    headers: &HeaderMap,
    id: &str,
    csrf: &str,
    change: impl FnOnce(&mut State, &str) -> Result<(), StateError>,
) -> Response {
    let Some((Role::Control, cookie)) = ui.session(headers) else {
        return html(
            StatusCode::FORBIDDEN,
            audit_page::message("Refused", "Sign in with the control token to do that."),
        );
    };
    if !TokenCheck::new(&ui.csrf(&cookie)).accepts(csrf) {
        return html(
            StatusCode::FORBIDDEN,
            audit_page::message(
                "Refused",
                "The form was not this page's (CSRF check failed).",
            ),
        );
    }
    match ui.runner.update(|s| change(s, "ui (control token)")) {
        Ok(()) | Err(StateError::AlreadyResolved) => {
            see_other(&format!("/ui/incidents/{id}"), None)
        }
        Err(StateError::NoIncident) => not_found(id),
    }
}

/// `POST /ui/incidents/{id}/ack` and `/resolve`, from the page's forms.
async fn act(
    AxState(ui): AxState<Shared>,
    headers: HeaderMap,
    Path((id, what)): Path<(String, String)>,
    Form(form): Form<Csrf>,
) -> Response {
    let change = match what.as_str() {
        "ack" => State::acknowledge,
        "resolve" => State::resolve,
        _ => return not_found(&id),
    };
    control(&ui, &headers, &id, &form.csrf, |s, by| {
        change(s, &id, by, now_ms())
    })
}
