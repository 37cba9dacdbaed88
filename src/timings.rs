//! `TACK_TIMINGS=1`: how long each phase of a run took, on stderr, for
//! finding where a slow deploy spends its time.

use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED
        .get_or_init(|| std::env::var_os("TACK_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Reports `phase` as taking the time since `since`, and returns now.
pub fn phase(phase: &str, since: Instant) -> Instant {
    let now = Instant::now();
    if enabled() {
        eprintln!(
            "timing: {phase}: {:.1} ms",
            (now - since).as_secs_f64() * 1000.0
        );
    }
    now
}
