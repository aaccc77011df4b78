//! Bearer-token check, shared by the ops-agent and the edge's API: constant
//! time, on SHA-256 digests so that not even the token's length leaks through
//! timing. Also what a configured token must look like.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted in a configuration.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a configured token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    /// Fewer than [`MIN_TOKEN_LEN`] characters.
    TooShort(usize),
    /// Only whitespace, or whitespace (a newline from a file) at either end:
    /// no client would send it, and a blank one guards nothing.
    Whitespace,
}

impl std::fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenProblem::TooShort(n) => {
                write!(f, "is {n} characters: it must be at least {MIN_TOKEN_LEN}")
            }
            TokenProblem::Whitespace => f.write_str(
                "is blank or starts or ends with whitespace (a trailing newline?): remove it",
            ),
        }
    }
}

/// Checks a token read from the configuration.
pub fn check_configured(token: &str) -> Result<(), TokenProblem> {
    if token.trim() != token || token.is_empty() {
        return Err(TokenProblem::Whitespace);
    }
    match token.chars().count() {
        n if n < MIN_TOKEN_LEN => Err(TokenProblem::TooShort(n)),
        _ => Ok(()),
    }
}

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

    /// True when `header` is `Bearer <token>`; the scheme's case does not
    /// matter (RFC 9110, 11.1).
    pub fn accepts_header(&self, header: Option<&str>) -> bool {
        let presented = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim_start_matches(' '))
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
    fn header_needs_the_bearer_scheme_in_any_case() {
        let c = TokenCheck::new("0123456789abcdef");
        assert!(c.accepts_header(Some("Bearer 0123456789abcdef")));
        assert!(c.accepts_header(Some("bearer 0123456789abcdef")));
        assert!(c.accepts_header(Some("BEARER  0123456789abcdef")));
        assert!(!c.accepts_header(Some("Basic 0123456789abcdef")));
        assert!(!c.accepts_header(Some("Bearer0123456789abcdef")));
        assert!(!c.accepts_header(Some("0123456789abcdef")));
        assert!(!c.accepts_header(Some("Bearer 0123456789abcdef ")));
        assert!(!c.accepts_header(None));
    }

    #[test]
    fn an_empty_configured_token_accepts_nothing() {
        assert!(!TokenCheck::new("").accepts(""));
    }

    #[test]
    fn configured_tokens_must_be_long_and_unpadded() {
        assert_eq!(check_configured("0123456789abcdef"), Ok(()));
        assert_eq!(check_configured("short"), Err(TokenProblem::TooShort(5)));
        for bad in [
            "",
            "                ",
            "0123456789abcdef\n",
            " 0123456789abcdef",
            "0123456789abcdef\t",
        ] {
            assert_eq!(
                check_configured(bad),
                Err(TokenProblem::Whitespace),
                "{bad:?}"
            );
        }
    }
}
