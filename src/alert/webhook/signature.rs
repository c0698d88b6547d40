//! Webhook signatures (CONTRACT.md "Webhook delivery"): `X-Lienwatch-Signature: v1=<hex
//! HMAC-SHA256(secret, "<timestamp>.<raw body>")>`, so a receiver can prove who sent an alert and
//! refuse replays by the timestamp.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const HEADER_ALERT_ID: &str = "X-Lienwatch-Alert-Id";
pub const HEADER_TIMESTAMP: &str = "X-Lienwatch-Timestamp";
pub const HEADER_SIGNATURE: &str = "X-Lienwatch-Signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never fails.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Lienwatch-Signature` value: `v1=` + lowercase hex HMAC-SHA256(secret,
/// `"<timestamp>.<raw body>"`).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a signature header in constant time, for receivers and tests. Receivers should also
/// reject timestamps far from their own clock, to refuse replays.
pub fn verify(secret: &[u8], timestamp: i64, signature: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("v1=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip() {
        let sig = sign(b"s3cret", 1_700_000_000, b"{\"id\":\"a\"}");
        assert!(sig.starts_with("v1="));
        assert_eq!(sig.len(), 3 + 64);
        assert_eq!(sig, sig.to_lowercase());
        assert!(verify(b"s3cret", 1_700_000_000, &sig, b"{\"id\":\"a\"}"));
        assert!(!verify(b"other", 1_700_000_000, &sig, b"{\"id\":\"a\"}"));
        assert!(!verify(b"s3cret", 1_700_000_001, &sig, b"{\"id\":\"a\"}"));
        assert!(!verify(b"s3cret", 1_700_000_000, &sig, b"{\"id\":\"b\"}"));
        assert!(!verify(b"s3cret", 1_700_000_000, "v1=zz", b""));
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"),
        // split as "<timestamp>.<body>" would be.
        let sig = sign(b"key", 0, b"");
        assert!(verify(b"key", 0, &sig, b""));
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"key").unwrap();
        m.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"key").unwrap();
        m.update(b"42.{}");
        let expect = format!("v1={}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(sign(b"key", 42, b"{}"), expect);
    }
}
