//! Whether the shell can store the state: a failing store is an episode,
//! alerted once when it begins and once when it ends. The alerts go through
//! the outbox in memory, so they are delivered while nothing can be stored.

use serde::Serialize;

use super::alert::{store_message, Alert};
use super::route::Severity;
use super::state::State;

/// The store's health as this process sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreHealth {
    /// The last save's error while the store fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// Saves that failed in the current episode.
    #[serde(skip_serializing_if = "is_zero")]
    pub failed_saves: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What `/healthz` and the summary show: `ok` is false while the store
/// fails, with the error, since when and how many saves failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreView {
    pub ok: bool,
    #[serde(flatten)]
    pub health: StoreHealth,
}

impl StoreHealth {
    pub fn view(&self) -> StoreView {
        StoreView {
            ok: self.failing_since_ms.is_none(),
            health: self.clone(),
        }
    }
}

impl State {
    /// A save failed. The first failure of an episode queues an alert.
    pub fn store_failed(&mut self, error: &str, now_ms: u64) {
        let since = *self.store.failing_since_ms.get_or_insert(now_ms);
        self.store.failed_saves += 1;
        self.store.error = Some(error.to_string());
        if self.store.failed_saves == 1 {
            let message = store_message(Some(error), since, now_ms, 1);
            let key = format!("store/failing/{since}");
            self.outbox.push(
                Alert::notice(key, Severity::Critical, "vigil", message),
                now_ms,
            );
        }
    }

    /// A save worked. Ends a failing episode with an alert; true when one
    /// ended (the alert is in the state, which wants saving again).
    pub fn store_saved(&mut self, now_ms: u64) -> bool {
        let Some(since) = self.store.failing_since_ms else {
            return false;
        };
        let failed = self.store.failed_saves;
        self.store = StoreHealth::default();
        let message = store_message(None, since, now_ms, failed);
        let key = format!("store/recovered/{since}");
        self.outbox
            .push(Alert::notice(key, Severity::Info, "vigil", message), now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_store_alerts_once_when_it_begins_and_once_when_it_ends() {
        let mut s = State::default();
        assert!(!s.store_saved(1), "nothing to recover from");
        s.store_failed("No space left on device (os error 28)", 1_000);
        s.store_failed("No space left on device (os error 28)", 2_000);
        assert_eq!(s.outbox.entries.len(), 1);
        assert!(!s.store.view().ok);
        assert_eq!(s.store.failing_since_ms, Some(1_000));
        assert_eq!(s.store.failed_saves, 2);
        assert!(s.store_saved(61_000));
        assert_eq!(s.store, StoreHealth::default());
        assert!(s.store.view().ok);
        let titles: Vec<_> = s
            .outbox
            .entries
            .iter()
            .map(|e| e.message.embeds[0].title.clone())
            .collect();
        assert_eq!(
            titles,
            ["vigil: state store failing", "vigil: state store recovered"]
        );
        // A second episode alerts again.
        s.store_failed("read-only file system", 70_000);
        assert_eq!(s.outbox.entries.len(), 3);
    }
}
