//! Bearer-token check, shared by the ops-agent and the edge's API: constant
//! time, on SHA-256 digests so that not even the token's length leaks through
//! timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct TokenCheck {
    digest: [u8; 32],
}

impl TokenCheck {
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// True when `header` is exactly `Bearer <token>`.
    pub fn accepts_header(&self, header: Option<&str>) -> bool {
        let presented = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        self.accepts(presented)
    }

    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // An empty presentation is hashed and compared too: missing and wrong
        // tokens take the same path.
        bool::from(digest.ct_eq(&self.digest)) & !presented.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let c = TokenCheck::new("0123456789abcdef");
        assert!(c.accepts("0123456789abcdef"));
        assert!(!c.accepts("0123456789abcdeF"));
        assert!(!c.accepts("0123456789abcde"));
        assert!(!c.accepts("0123456789abcdef0"));
        assert!(!c.accepts(""));
    }

    #[test]
    fn header_needs_the_bearer_scheme() {
        let c = TokenCheck::new("0123456789abcdef");
        assert!(c.accepts_header(Some("Bearer 0123456789abcdef")));
        assert!(!c.accepts_header(Some("bearer 0123456789abcdef")));
        assert!(!c.accepts_header(Some("Basic 0123456789abcdef")));
        assert!(!c.accepts_header(Some("0123456789abcdef")));
        assert!(!c.accepts_header(None));
    }

    #[test]
    fn an_empty_configured_token_accepts_nothing() {
        assert!(!TokenCheck::new("").accepts(""));
    }
}
