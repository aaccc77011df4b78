//! The audit view's requests (`/ui`), answered alike by both shells: what a
//! request asks ([`UiRequest::parse`]), the session it proves and what to
//! answer ([`Ui::answer`]). A token pasted into the sign-in form (the read
//! or the control token) gives a session: a signed cookie (HMAC-SHA256 under
//! a key derived from the tokens, so changing a token ends every session),
//! HttpOnly, SameSite=Strict, Secure when the request came over TLS, for 8
//! hours. Ack and resolve need the control token's session and a CSRF token
//! bound to it; the shell makes the change ([`Step::Change`]) and stores it,
//! then [`changed`] answers. The shells only carry bytes in and out.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use vigil_wire::TokenCheck;

use crate::audit_page::{self, ListFilter, CSP};
use crate::config::Target;
use crate::core::state::{State, StateError};
use crate::ops_requests::{form_param, state_filter};
use crate::shell::Secrets;

const COOKIE: &str = "vigil_ui";
const SESSION_MS: u64 = 8 * 3600 * 1000;
/// Who a change made from the page is recorded as.
pub const BY: &str = "ui (control token)";

/// The headers every answer carries.
pub const HEADERS: [(&str, &str); 5] = [
    ("content-type", "text/html; charset=utf-8"),
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
];

/// What to send back: a page, or a redirect (303) that may set the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
}

impl Answer {
    fn page(status: u16, body: String) -> Self {
        Answer {
            status,
            body,
            location: None,
            set_cookie: None,
        }
    }

    fn see_other(to: String, set_cookie: Option<String>) -> Self {
        Answer {
            status: 303,
            body: String::new(),
            location: Some(to),
            set_cookie,
        }
    }

    fn message(status: u16, title: &str, text: &str) -> Self {
        Self::page(status, audit_page::message(title, text))
    }
}

fn not_found(id: &str) -> Answer {
    Answer::message(404, "Not found", &format!("No incident {id:?}."))
}

/// A control change the page's forms ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ack,
    Resolve,
}

impl Verb {
    /// Makes the change, recorded as by [`BY`].
    pub fn apply(self, state: &mut State, id: &str, now_ms: u64) -> Result<(), StateError> {
        match self {
            Verb::Ack => state.acknowledge(id, BY, now_ms),
            Verb::Resolve => state.resolve(id, BY, now_ms),
        }
    }
}

/// A `/ui` request, parsed from its method, path, query and form body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiRequest {
    List {
        target: Option<String>,
        state: Option<String>,
    },
    SignIn {
        token: String,
    },
    SignOut,
    Incident {
        id: String,
    },
    Act {
        id: String,
        verb: Verb,
        csrf: String,
    },
}

impl UiRequest {
    /// `None` when `path` is not a `/ui` route for this method.
    pub fn parse(post: bool, path: &str, query: &str, body: &[u8]) -> Option<Self> {
        let form = String::from_utf8_lossy(body);
        let field = |text: &str, key: &str| form_param(text, key).filter(|v| !v.is_empty());
        let path = path.trim_end_matches('/');
        // `/ui/incidents/{id}` and `/ui/incidents/{id}/{verb}`.
        let incident = path
            .strip_prefix("/ui/incidents/")
            .filter(|rest| !rest.is_empty())
            .map(|rest| rest.split_once('/').unwrap_or((rest, "")));
        Some(match (post, path, incident) {
            (false, "/ui", _) => UiRequest::List {
                target: field(query, "target"),
                state: field(query, "state"),
            },
            (true, "/ui/sign-in", _) => UiRequest::SignIn {
                token: field(&form, "token").unwrap_or_default(),
            },
            (true, "/ui/sign-out", _) => UiRequest::SignOut,
            (false, _, Some((id, ""))) => UiRequest::Incident { id: id.into() },
            (true, _, Some((id, verb))) => UiRequest::Act {
                id: id.into(),
                verb: match verb {
                    "ack" => Verb::Ack,
                    "resolve" => Verb::Resolve,
                    _ => return None,
                },
                csrf: field(&form, "csrf").unwrap_or_default(),
            },
            _ => return None,
        })
    }
}

/// What the shell does next.
#[derive(Debug)]
pub enum Step {
    Answer(Answer),
    /// Apply `verb` to incident `id`, store it, answer with [`changed`].
    Change {
        id: String,
        verb: Verb,
    },
}

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

/// The sessions' key and the tokens that sign in.
pub struct Ui {
    read: Option<TokenCheck>,
    control: Option<TokenCheck>,
    key: [u8; 32],
}

impl Ui {
    /// Without a read or control token nobody can sign in.
    pub fn new(secrets: &Secrets) -> Self {
        let (read, control) = (
            secrets.read_token.as_deref(),
            secrets.control_token.as_deref(),
        );
        let mut seed = Sha256::new();
        seed.update(b"vigil-ui-session\0");
        seed.update(read.unwrap_or_default());
        seed.update(b"\0");
        seed.update(control.unwrap_or_default());
        Ui {
            read: read.map(TokenCheck::new),
            control: control.map(TokenCheck::new),
            key: seed.finalize().into(),
        }
    }

    fn mac(&self, data: &str) -> String {
        // HMAC accepts a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(data.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn cookie_value(&self, role: Role, expires_ms: u64) -> String {
        let data = format!("{}.{expires_ms}", role.as_str());
        format!("{data}.{}", self.mac(&data))
    }

    /// The session the `Cookie` header proves, if any: (role, cookie value).
    fn session(&self, cookie: Option<&str>, now_ms: u64) -> Option<(Role, String)> {
        let value = cookie?
            .split(';')
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
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
        (proven && now_ms < expires_ms).then(|| (role, value.to_string()))
    }

    fn csrf(&self, cookie: &str) -> String {
        self.mac(&format!("csrf.{cookie}"))
    }

    /// Answers `req`. `cookie` is the request's `Cookie` header, `tls`
    /// whether it came over TLS, `targets` the configured targets.
    pub fn answer(
        &self,
        req: UiRequest,
        cookie: Option<&str>,
        tls: bool,
        now_ms: u64,
        state: &State,
        targets: &[Target],
    ) -> Step {
        let session = self.session(cookie, now_ms);
        Step::Answer(match (req, session) {
            (UiRequest::SignIn { token }, _) => self.sign_in(&token, tls, now_ms),
            (UiRequest::SignOut, _) => {
                Answer::see_other("/ui".into(), Some(set_cookie("", 0, tls)))
            }
            (UiRequest::List { .. }, None) => Answer::page(200, audit_page::sign_in(None)),
            (
                UiRequest::List {
                    target,
                    state: open,
                },
                Some(_),
            ) => match state_filter(open.as_deref()) {
                Ok(open) => {
                    let filter = ListFilter { target, open };
                    Answer::page(200, audit_page::list(&state.incidents, targets, &filter))
                }
                Err(why) => Answer::message(400, "Bad filter", &why),
            },
            (UiRequest::Incident { .. }, None) => Answer::see_other("/ui".into(), None),
            (UiRequest::Incident { id }, Some((role, cookie))) => {
                let csrf = (role == Role::Control).then(|| self.csrf(&cookie));
                match state.incident(&id) {
                    Some(i) => Answer::page(200, audit_page::incident(i, csrf.as_deref())),
                    None => not_found(&id),
                }
            }
            (UiRequest::Act { id, verb, csrf }, Some((Role::Control, cookie))) => {
                if !TokenCheck::new(&self.csrf(&cookie)).accepts(&csrf) {
                    Answer::message(
                        403,
                        "Refused",
                        "The form was not this page's (CSRF check failed).",
                    )
                } else {
                    return Step::Change { id, verb };
                }
            }
            (UiRequest::Act { .. }, _) => {
                Answer::message(403, "Refused", "Sign in with the control token to do that.")
            }
        })
    }

    fn sign_in(&self, token: &str, tls: bool, now_ms: u64) -> Answer {
        let bearer = format!("Bearer {}", token.trim());
        // Both checks run, so timing does not tell which token matched.
        let control = self
            .control
            .as_ref()
            .is_some_and(|t| t.accepts_header(Some(&bearer)));
        let read = self
            .read
            .as_ref()
            .is_some_and(|t| t.accepts_header(Some(&bearer)));
        let role = match (control, read) {
            (true, _) => Role::Control,
            (false, true) => Role::Read,
            _ => {
                return Answer::page(
                    401,
                    audit_page::sign_in(Some("That token is not accepted.")),
                )
            }
        };
        let value = self.cookie_value(role, now_ms + SESSION_MS);
        Answer::see_other(
            "/ui".into(),
            Some(set_cookie(&value, SESSION_MS / 1000, tls)),
        )
    }
}

fn set_cookie(value: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/ui; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}")
}

/// The answer to a [`Step::Change`]: back to the incident once the change is
/// stored (or there was nothing to change); `Err` says why it could not be
/// stored, and then it was not made.
pub fn changed(id: &str, result: Result<Result<(), StateError>, String>) -> Answer {
    match result {
        Ok(Ok(()) | Err(StateError::AlreadyResolved)) => {
            Answer::see_other(format!("/ui/incidents/{id}"), None)
        }
        Ok(Err(StateError::NoIncident)) => not_found(id),
        Err(why) => Answer::message(
            503,
            "Not stored",
            &format!("The change could not be stored, so it was not made: {why}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui() -> Ui {
        Ui::new(&Secrets {
            read_token: Some("read-token-0123456789".into()),
            control_token: Some("control-token-0123456789".into()),
            ..Secrets::default()
        })
    }

    fn answer(ui: &Ui, req: UiRequest, cookie: Option<&str>, tls: bool, now: u64) -> Step {
        ui.answer(req, cookie, tls, now, &State::default(), &[])
    }

    fn sign_in(ui: &Ui, token: &str, tls: bool) -> Answer {
        let form = format!("token={token}");
        let req = UiRequest::parse(true, "/ui/sign-in", "", form.as_bytes()).unwrap();
        match answer(ui, req, None, tls, 1_000) {
            Step::Answer(a) => a,
            step => panic!("{step:?}"),
        }
    }

    #[test]
    fn requests_parse_alike_in_both_shells() {
        assert_eq!(
            UiRequest::parse(false, "/ui", "target=a%20b&state=", b""),
            Some(UiRequest::List {
                target: Some("a b".into()),
                state: None
            })
        );
        assert_eq!(
            UiRequest::parse(true, "/ui/incidents/inc-1/resolve", "", b"csrf=x%2By"),
            Some(UiRequest::Act {
                id: "inc-1".into(),
                verb: Verb::Resolve,
                csrf: "x+y".into()
            })
        );
        for (post, path) in [
            (true, "/ui"),
            (false, "/ui/sign-in"),
            (true, "/ui/incidents/inc-1/delete"),
            (false, "/uix"),
            (false, "/ui/incidents/a/b/c"),
        ] {
            assert_eq!(UiRequest::parse(post, path, "", b""), None, "{path}");
        }
    }

    #[test]
    fn the_cookie_is_secure_over_tls_and_proves_its_role_until_it_expires() {
        let ui = ui();
        let plain = sign_in(&ui, "read-token-0123456789", false);
        let cookie = plain.set_cookie.unwrap();
        assert!(cookie.contains("; HttpOnly; SameSite=Strict"), "{cookie}");
        assert!(!cookie.contains("Secure"), "{cookie}");
        let secure = sign_in(&ui, "control-token-0123456789", true);
        assert!(secure.set_cookie.unwrap().ends_with("; Secure"));
        assert_eq!(sign_in(&ui, "nope-nope-nope-nope", false).status, 401);

        let value = cookie.split(';').next().unwrap().to_string();
        assert_eq!(
            ui.session(Some(&format!("a=b; {value}")), 2_000)
                .map(|s| s.0),
            Some(Role::Read)
        );
        assert_eq!(
            ui.session(Some(&value), 1_000 + SESSION_MS),
            None,
            "expired"
        );
        let forged = value.replace("vigil_ui=read", "vigil_ui=control");
        assert_eq!(ui.session(Some(&forged), 2_000), None, "the role is signed");
        // A read session may not act, whatever CSRF token it sends.
        let act = UiRequest::Act {
            id: "inc-1".into(),
            verb: Verb::Ack,
            csrf: ui.csrf(&value["vigil_ui=".len()..]),
        };
        match answer(&ui, act, Some(&value), false, 2_000) {
            Step::Answer(a) => assert_eq!(a.status, 403),
            step => panic!("{step:?}"),
        }
    }

    #[test]
    fn a_change_that_could_not_be_stored_is_not_answered_as_done() {
        assert_eq!(changed("inc-1", Err("disk full".into())).status, 503);
        assert_eq!(changed("inc-1", Ok(Ok(()))).status, 303);
        assert_eq!(
            changed("inc-1", Ok(Err(StateError::NoIncident))).status,
            404
        );
    }
}
