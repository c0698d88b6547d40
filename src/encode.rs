//! Compact binary records (postcard), encoded without regrowing a buffer.
//!
//! Why: `postcard::to_allocvec` starts from an empty vector and doubles it as it writes, so a
//! 200-byte rule state costs five or six reallocations: more than the encoding itself, and the
//! engine encodes one state per vehicle and commit on the ingest path.

use serde::Serialize;

/// The postcard bytes of `value`: encoded on the stack, then copied into one exact allocation.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut buf = [0u8; 512];
    match postcard::to_slice(value, &mut buf) {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(postcard::Error::SerializeBufferFull) => postcard::to_allocvec(value),
        Err(e) => Err(e),
    }
}

/// Appends the postcard bytes of `value` to `out` (encoded on the stack: `out` grows by at most
/// one reservation, never byte by byte). Returns the appended range.
pub fn append<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<std::ops::Range<usize>, postcard::Error> {
    let start = out.len();
    let mut buf = [0u8; 512];
    match postcard::to_slice(value, &mut buf) {
        Ok(bytes) => out.extend_from_slice(bytes),
        Err(postcard::Error::SerializeBufferFull) => {
            out.extend_from_slice(&postcard::to_allocvec(value)?)
        }
        Err(e) => return Err(e),
    }
    Ok(start..out.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_and_large_values_encode_as_postcard_does() {
        let small = (7u32, "id", -3i64, 2.5f64);
        assert_eq!(
            super::to_vec(&small).unwrap(),
            postcard::to_allocvec(&small).unwrap()
        );
        let large: Vec<u64> = (0..200).map(|i| i * 1_000_003).collect();
        let bytes = super::to_vec(&large).unwrap();
        assert!(bytes.len() > 512);
        assert_eq!(bytes, postcard::to_allocvec(&large).unwrap());
        let mut out = vec![9u8];
        let r = super::append(&small, &mut out).unwrap();
        let r2 = super::append(&large, &mut out).unwrap();
        assert_eq!(out[r], postcard::to_allocvec(&small).unwrap()[..]);
        assert_eq!(out[r2], postcard::to_allocvec(&large).unwrap()[..]);
        assert_eq!(out[0], 9);
    }
}
