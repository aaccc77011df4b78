//! Certificate expiry: a target with `tls_expiry_days` warns when the
//! certificate its probe saw expires within that many days. One alert per
//! certificate (by fingerprint), never an incident: a renewed certificate
//! is a new one and is watched afresh.

use super::probe::PeerCert;
use super::state::TargetState;
use crate::config::Target;

const DAY_MS: u64 = 86_400_000;

impl TargetState {
    /// Whether `cert` calls for its warning now; records it as warned, so
    /// the caller queues the alert once.
    pub(super) fn cert_expiring(&mut self, target: &Target, cert: &PeerCert, now_ms: u64) -> bool {
        let Some(days) = target.tls_expiry_days else {
            return false;
        };
        let within = cert.not_after_ms <= now_ms.saturating_add(u64::from(days) * DAY_MS);
        if !within || self.cert_warned.as_deref() == Some(cert.fingerprint.as_str()) {
            return false;
        }
        self.cert_warned = Some(cert.fingerprint.clone());
        true
    }
}

/// Whole days from `now_ms` to the certificate's end (negative: expired).
pub fn days_left(cert: &PeerCert, now_ms: u64) -> i64 {
    (cert.not_after_ms as i64 - now_ms as i64).div_euclid(DAY_MS as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::probe::{Health, Observation};
    use crate::core::state::State;

    const NOW: u64 = 1_800_000_000_000;

    fn config() -> Config {
        Config::parse(
            "t.toml",
            "[[target]]\nid = \"web\"\nurl = \"https://127.0.0.1:9/\"\ntls_expiry_days = 14\n",
        )
        .unwrap()
    }

    fn seen(fingerprint: &str, days: u64, health: Health) -> Observation {
        Observation {
            target: "web".into(),
            at_ms: NOW,
            health,
            status: Some(200),
            latency_ms: 5,
            error: None,
            cert: Some(PeerCert {
                not_after_ms: NOW + days * DAY_MS + 1,
                fingerprint: fingerprint.into(),
            }),
        }
    }

    #[test]
    fn one_warning_per_certificate_and_no_incident() {
        let config = config();
        let mut state = State::default();
        state.observe(&config, &seen("aa", 30, Health::Healthy), NOW);
        assert!(state.outbox.entries.is_empty(), "30 days left: quiet");
        for _ in 0..3 {
            state.observe(&config, &seen("aa", 10, Health::Healthy), NOW);
        }
        assert_eq!(state.outbox.entries.len(), 1, "once for this certificate");
        let title = &state.outbox.entries[0].message.embeds[0].title;
        assert_eq!(title, "web: TLS certificate expires in 10 days");
        assert!(state.incidents.is_empty());
        // Renewed, then the new one nears its end: a second warning.
        state.observe(&config, &seen("bb", 90, Health::Healthy), NOW);
        state.observe(&config, &seen("bb", 3, Health::Healthy), NOW);
        assert_eq!(state.outbox.entries.len(), 2);
        assert!(state.incidents.is_empty());
        // The warned fingerprint is in the stored document.
        let stored: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(stored.targets["web"].cert_warned.as_deref(), Some("bb"));
    }

    #[test]
    fn days_left_counts_whole_days_and_expired_is_negative() {
        let cert = |ms| PeerCert {
            not_after_ms: ms,
            fingerprint: "x".into(),
        };
        assert_eq!(days_left(&cert(NOW + 10 * DAY_MS + 5), NOW), 10);
        assert_eq!(days_left(&cert(NOW - 5), NOW), -1);
    }
}
