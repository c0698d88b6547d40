//! Key layouts of the two history trees. Both start with the device (length-prefixed, so one
//! device's keys are contiguous and never a prefix of another's), then a big-endian time, so a
//! device's track is one range scan in time order.
//!
//! - recent: `[len][device id][first fix time ms][pass]`: a run of one device's fixes within one
//!   bucket, filed by one drain pass (`pass` tells runs with the same first fix apart); the
//!   first layout, `[len][device id][fix time ms]` with one fix, is still read;
//! - blocks of the first layout (`history` tree): `[len][device id][bucket]`, read and moved;
//! - the index of sealed blocks: `[bucket][len][device id]`, bucket first (see [`by_bucket`]).

use crate::time::Timestamp;

/// Fixes are sealed into blocks of this span: a device reporting every 10 s fills a block with
/// 2,160 fixes (~25 KB); one reporting hourly still shares a key among six.
pub const BUCKET_MS: i64 = 6 * 3600 * 1000;

/// Orders signed values as unsigned big-endian bytes.
fn ordered(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered(b: &[u8]) -> Option<i64> {
    let a: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(a) ^ (1 << 63)) as i64)
}

/// `[len][id]`, or `None` for an id longer than 255 bytes (no protocol produces one).
pub fn device_prefix(id: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(id.len()).ok()?;
    let mut k = Vec::with_capacity(1 + id.len() + 8);
    k.push(len);
    k.extend_from_slice(id.as_bytes());
    Some(k)
}

pub fn bucket_of(t: Timestamp) -> i64 {
    t.millis().div_euclid(BUCKET_MS)
}

pub fn bucket_start(bucket: i64) -> Timestamp {
    Timestamp::from_millis(bucket.saturating_mul(BUCKET_MS))
}

/// The index key of a device's sealed bucket. Bucket first, so that each sealing pass appends
/// at the end of the index (sled rewrites only the last leaves) and retention drops a prefix of
/// it; keyed by device first, every pass rewrote every leaf of an index that grows with the
/// fleet and the retention, and sled kept the garbage.
pub fn by_bucket(bucket: i64, prefix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + prefix.len());
    k.extend_from_slice(&ordered(bucket));
    k.extend_from_slice(prefix);
    k
}

/// Splits an index key into its bucket and device prefix.
pub fn split_by_bucket(key: &[u8]) -> Option<(i64, &[u8])> {
    if key.len() < 9 || key.len() != 9 + key[8] as usize {
        return None;
    }
    let (b, prefix) = key.split_at(8);
    Some((from_ordered(b)?, prefix))
}

/// The first index key of `bucket`.
pub fn bucket_floor(bucket: i64) -> [u8; 8] {
    ordered(bucket)
}

/// A key under `prefix` with a time or bucket suffix.
pub fn with(prefix: &[u8], v: i64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&ordered(v));
    k
}

/// The key just past every key of `prefix` (a device's keys all have an 8-byte suffix).
pub fn past(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&[0xff; 9]);
    k
}

/// A recent run's key: the device, the run's first fix time, then the pass that filed it.
pub fn run(prefix: &[u8], first_ms: i64, pass: u64) -> Vec<u8> {
    let mut k = with(prefix, first_ms);
    k.extend_from_slice(&pass.to_be_bytes());
    k
}

/// Splits a key into its device prefix and its time or bucket suffix (a run key's pass aside).
pub fn split(key: &[u8]) -> Option<(&[u8], i64)> {
    let len = *key.first()? as usize;
    if key.len() != 1 + len + 8 && key.len() != 1 + len + 16 {
        return None;
    }
    let (prefix, suffix) = key.split_at(1 + len);
    Some((prefix, from_ordered(&suffix[..8])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_device_then_time_including_negative_times() {
        let p = device_prefix("868120").unwrap();
        let a = with(&p, -5);
        let b = with(&p, 0);
        let c = with(&p, 1_764_000_000_000);
        assert!(a < b && b < c && c < past(&p));
        assert_eq!(split(&c), Some((&p[..], 1_764_000_000_000)));
        // A longer id sharing the digits is another device, outside the range.
        let q = device_prefix("8681201").unwrap();
        assert!(with(&q, 0) > past(&p) || with(&q, 0) < p);
        assert_eq!(bucket_of(bucket_start(7)), 7);
        assert_eq!(bucket_of(Timestamp::from_millis(-1)), -1);
        let i = by_bucket(-3, &p);
        assert_eq!(split_by_bucket(&i), Some((-3, &p[..])));
        assert!(bucket_floor(-3).as_slice() <= i.as_slice());
        assert!(i.as_slice() < bucket_floor(-2).as_slice());
        assert_eq!(split_by_bucket(&i[..i.len() - 1]), None);
        // Runs sort among the first layout's keys by their first fix, and split the same way.
        let r = run(&p, 0, u64::MAX);
        assert!(b < r && r < with(&p, 1) && r < past(&p));
        assert_eq!(split(&r), Some((&p[..], 0)));
        assert_eq!(split(&r[..r.len() - 1]), None);
    }
}
