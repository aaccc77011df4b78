//! One-click acknowledgement: a page carries a link signed with HMAC-SHA256
//! over the incident id and an expiry. The link opens a confirmation page
//! (GET, so a link preview acknowledges nothing); its POST acknowledges,
//! once: a used link, an expired one or a bad signature is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckLinkError {
    #[error("the link's signature does not match")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
    #[error("the link was used already")]
    Used,
}

/// Signs and checks links (`[ack_link]`, the secret from the environment).
#[derive(Clone, PartialEq, Eq)]
pub struct AckLinks {
    pub base_url: String,
    secret: String,
    pub valid_ms: u64,
}

impl std::fmt::Debug for AckLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckLinks")
            .field("base_url", &self.base_url)
            .field("valid_ms", &self.valid_ms)
            .finish_non_exhaustive()
    }
}

impl AckLinks {
    pub fn new(base_url: &str, secret: String, valid_ms: u64) -> Self {
        AckLinks {
            base_url: base_url.trim_end_matches('/').to_string(),
            secret,
            valid_ms,
        }
    }

    fn mac(&self, incident: &str, expires_ms: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(format!("ack\n{incident}\n{expires_ms}").as_bytes());
        mac
    }

    /// The link for `incident`, valid `valid_ms` from `now_ms`.
    pub fn link(&self, incident: &str, now_ms: u64) -> String {
        let expires = now_ms.saturating_add(self.valid_ms);
        let sig = hex::encode(self.mac(incident, expires).finalize().into_bytes());
        format!(
            "{}/ops/ack-link?incident={incident}&expires={expires}&sig={sig}",
            self.base_url
        )
    }

    /// Whether a link's parts are genuine and not expired at `now_ms`
    /// (compared in constant time).
    pub fn check(
        &self,
        incident: &str,
        expires_ms: u64,
        sig: &str,
        now_ms: u64,
    ) -> Result<(), AckLinkError> {
        let bytes = hex::decode(sig).map_err(|_| AckLinkError::BadSignature)?;
        self.mac(incident, expires_ms)
            .verify_slice(&bytes)
            .map_err(|_| AckLinkError::BadSignature)?;
        if now_ms >= expires_ms {
            return Err(AckLinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(link: &str) -> (String, u64, String) {
        let q = link.split_once('?').unwrap().1;
        let get = |k: &str| {
            q.split('&')
                .find_map(|p| p.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_string()
        };
        (get("incident"), get("expires").parse().unwrap(), get("sig"))
    }

    #[test]
    fn a_link_is_genuine_until_it_expires_and_nothing_else_passes() {
        let l = AckLinks::new("https://vigil.example.com/", "s".repeat(32), 3_600_000);
        let link = l.link("inc-1-abc", 1000);
        assert!(link.starts_with(
            "https://vigil.example.com/ops/ack-link?incident=inc-1-abc&expires=3601000&sig="
        ));
        let (inc, exp, sig) = parts(&link);
        assert_eq!(l.check(&inc, exp, &sig, 3_600_999), Ok(()));
        assert_eq!(
            l.check(&inc, exp, &sig, 3_601_000),
            Err(AckLinkError::Expired)
        );
        assert_eq!(
            l.check("inc-2-abc", exp, &sig, 2000),
            Err(AckLinkError::BadSignature)
        );
        assert_eq!(
            l.check(&inc, exp + 1, &sig, 2000),
            Err(AckLinkError::BadSignature),
            "a longer life is forged"
        );
        assert_eq!(
            l.check(&inc, exp, "zz", 2000),
            Err(AckLinkError::BadSignature)
        );
        let other = AckLinks::new("https://vigil.example.com", "t".repeat(32), 3_600_000);
        assert_eq!(
            other.check(&inc, exp, &sig, 2000),
            Err(AckLinkError::BadSignature)
        );
        assert!(
            !format!("{l:?}").contains("sss"),
            "the secret is not logged"
        );
    }
}
