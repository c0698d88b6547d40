//! Cache prefetch hints for the engine's batches.
//!
//! Why: a position touches a dozen objects of one vehicle among 100,000 (its rule states, its
//! fence, its stay tracker, a grid cell of the zones), each a cache miss, and one after the other
//! they cost most of the rules' time. The engine asks for the next few positions' objects before
//! it runs the rules on them, so that their misses overlap instead of queueing. A hint changes
//! no result: on other targets it does nothing.

/// Asks for every cache line of `value` (at most the first 512 bytes).
#[inline(always)]
pub fn object<T: ?Sized>(value: &T) {
    let start = (value as *const T).cast::<u8>() as usize;
    let len = std::mem::size_of_val(value).min(512);
    let mut line = start & !63;
    while line < start + len {
        hint(line as *const u8);
        line += 64;
    }
}

#[inline(always)]
fn hint(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program can see, whatever the
    // address; SSE is part of every x86_64 target.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_object_or_slice_can_be_asked_for() {
        let v: Vec<u64> = (0..1000).collect();
        super::object(&v[..]);
        super::object(&v);
        super::object(&[0u8; 0][..]);
        super::object("text");
    }
}
