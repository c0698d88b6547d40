//! CPU time a process has used, from `/proc/<pid>/stat`: the benches report what each side
//! costs in CPU per item, beside its rate, so that a rate bound by the machine's cores can be
//! told from one bound by waiting.

/// User and system CPU seconds of process `pid` (`"self"` for this one) so far; NaN where
/// `/proc` cannot tell.
pub fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // The kernel reports in USER_HZ, 100 on every Linux architecture that matters here.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}
