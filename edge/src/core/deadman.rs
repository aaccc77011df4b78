//! A watcher for the watcher: after each cycle the edge pings a URL
//! (`[deadman] url_env`, the healthchecks.io convention), so an outside
//! service pages when the edge stops. This decides what the ping after a
//! cycle says (`/start` goes before each cycle).

use super::state::State;

/// What a cycle tells the deadman URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping {
    /// `<url>/start`: a cycle begins (the service measures its run time).
    Start,
    /// The cycle ran, saved its state, and alerts go out.
    Success,
    /// `<url>/fail` with the reason.
    Fail(String),
}

/// The ping after a cycle at `now_ms`: a failure while the state cannot be
/// saved, or while an alert has waited `fail_after_ms` or more without
/// being delivered (with the channel's last error).
pub fn ping(state: &State, now_ms: u64, fail_after_ms: u64) -> Ping {
    if let Some(since) = state.store.failing_since_ms {
        let error = state.store.error.as_deref().unwrap_or("unknown error");
        return Ping::Fail(format!(
            "the state cannot be saved for {} s: {error}",
            now_ms.saturating_sub(since) / 1000
        ));
    }
    let stuck = state
        .outbox
        .entries
        .iter()
        .filter(|e| e.attempts > 0 && now_ms.saturating_sub(e.created_at_ms) >= fail_after_ms)
        .min_by_key(|e| e.created_at_ms);
    match stuck {
        Some(e) => Ping::Fail(format!(
            "alerts undelivered for {} s on channel {}: {}",
            now_ms.saturating_sub(e.created_at_ms) / 1000,
            e.channel,
            e.last_error.as_deref().unwrap_or("not sent")
        )),
        None => Ping::Success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alert::{store_message, Alert, Delivery};
    use crate::core::route::Severity;

    #[test]
    fn a_cycle_pings_success_unless_saving_or_delivery_fails_too_long() {
        let mut s = State::default();
        assert_eq!(ping(&s, 0, 60_000), Ping::Success);
        let m = store_message(None, 0, 0, 0);
        s.outbox
            .push(Alert::notice("a".into(), Severity::Info, "vigil", m), 0);
        assert_eq!(ping(&s, 120_000, 60_000), Ping::Success, "not tried yet");
        let id = s.outbox.entries[0].id;
        s.outbox.record(
            id,
            Delivery::Failed {
                error: "HTTP 500".into(),
            },
            1,
        );
        assert_eq!(ping(&s, 59_999, 60_000), Ping::Success);
        assert_eq!(
            ping(&s, 60_000, 60_000),
            Ping::Fail("alerts undelivered for 60 s on channel discord: HTTP 500".into())
        );
        s.store_failed("disk full", 70_000);
        assert_eq!(
            ping(&s, 75_000, 60_000),
            Ping::Fail("the state cannot be saved for 5 s: disk full".into())
        );
    }
}
