//! The admin token in force. A reload replaces it, so that a leaked token is revoked by writing
//! a new one to `token_file` and `systemctl reload`, without dropping a tracker connection.

use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct AdminToken(Arc<RwLock<Arc<str>>>);

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(Arc::new(RwLock::new(Arc::from(token))))
    }

    /// Whether `offered` is the token, compared in constant time.
    pub fn matches(&self, offered: &str) -> bool {
        let Ok(t) = self.0.read() else {
            return false;
        };
        constant_time_eq(offered.as_bytes(), t.as_bytes())
    }

    pub fn replace(&self, token: &str) {
        if let Ok(mut t) = self.0.write() {
            *t = Arc::from(token);
        }
    }
}

/// Compares the SHA-256 digests of both, byte by byte to the end: neither the place of the
/// first difference nor the token's length shows in the time taken.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_token_stops_matching() {
        let t = AdminToken::new("old-token-0001");
        let shared = t.clone();
        assert!(t.matches("old-token-0001"));
        assert!(!t.matches("old-token-000"));
        assert!(!t.matches(""));
        assert!(!t.matches("old-token-00010"));
        shared.replace("new-token-0002");
        assert!(!t.matches("old-token-0001"));
        assert!(t.matches("new-token-0002"));
    }
}
