//! What a person following a page's ack link sees (`GET` and `POST
//! /ops/ack-link`), the same in both shells: a confirmation (a GET
//! acknowledges nothing: link previews follow links), then the outcome, or
//! why not.

use crate::core::acklink::{AckLinkError, AckLinks};
use crate::core::state::StateError;
use crate::html::escape;

/// An HTML answer.
pub struct Page {
    pub status: u16,
    pub html: String,
}

fn page(status: u16, title: &str, body: &str) -> Page {
    let html = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>{t}</title><h1>{t}</h1>{body}",
        t = escape(title)
    );
    Page { status, html }
}

/// A link refused: forged (403), expired (410), used already (409).
pub fn refused(e: AckLinkError) -> Page {
    let status = match e {
        AckLinkError::BadSignature => 403,
        AckLinkError::Expired => 410,
        AckLinkError::Used => 409,
    };
    page(status, "Not acknowledged", &format!("<p>{e}.</p>"))
}

/// The answer to opening a link (GET): the confirmation, or why not.
pub fn open(
    links: Option<&AckLinks>,
    incident: &str,
    expires: u64,
    sig: &str,
    now_ms: u64,
) -> Page {
    let checked = links
        .ok_or(AckLinkError::BadSignature)
        .and_then(|l| l.check(incident, expires, sig, now_ms));
    match checked {
        Ok(()) => confirm(incident, expires, sig),
        Err(e) => refused(e),
    }
}

/// The confirmation asked before acknowledging (its form posts the link).
fn confirm(incident: &str, expires: u64, sig: &str) -> Page {
    let form = format!(
        "<p>Acknowledge incident {id}? Vigil stops remediating it, reminding and escalating.</p><form method=post action=\"?incident={id}&amp;expires={expires}&amp;sig={sig}\"><button>Acknowledge</button></form>",
        id = escape(incident),
        sig = escape(sig),
    );
    page(200, "Acknowledge the page", &form)
}

/// What `State::acknowledge_by_link` answered (once it is stored).
pub fn outcome(done: Result<Result<(), StateError>, AckLinkError>) -> Page {
    match done {
        Ok(Ok(())) => page(200, "Acknowledged", "<p>The incident is acknowledged.</p>"),
        Ok(Err(StateError::NoIncident)) => {
            page(404, "Not acknowledged", "<p>No such incident.</p>")
        }
        Ok(Err(StateError::AlreadyResolved)) => page(
            409,
            "Not acknowledged",
            "<p>The incident is already resolved.</p>",
        ),
        Err(e) => refused(e),
    }
}

/// The acknowledgement could not be stored (503): nothing changed.
pub fn unstored(error: &str) -> Page {
    page(
        503,
        "Not acknowledged",
        &format!(
            "<p>The acknowledgement could not be stored: {}. Try again.</p>",
            escape(error)
        ),
    )
}
