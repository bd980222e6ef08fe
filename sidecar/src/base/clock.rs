//! The clocks, read in the units each consumer keeps: the policy engine decides at a [`Now`]
//! (Unix milliseconds, and a monotonic reading for its windows), tokens and certificates count
//! Unix seconds. Uses nothing of the crate.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use portcullis_policy::Now;

/// The engine's clock at Unix time `unix_ms`, read at `at` (a monotonic reading of the same
/// moment, give or take the microseconds between the two reads).
pub fn decision_clock(unix_ms: u64, at: Instant) -> Now {
    Now {
        unix_ms,
        mono_ms: mono_millis_at(at),
    }
}

/// Milliseconds on a clock that never goes back: the wall clock at the process's first
/// reading plus the time elapsed since (so windows start near wall time, and a step of the
/// wall clock later moves nothing).
pub fn mono_millis() -> u64 {
    mono_millis_at(Instant::now())
}

/// [`mono_millis`] at the moment `at` (no earlier than the process's first reading).
pub fn mono_millis_at(at: Instant) -> u64 {
    static START: OnceLock<(Instant, u64)> = OnceLock::new();
    let (start, unix) = START.get_or_init(|| (Instant::now(), unix_millis()));
    unix.saturating_add(at.saturating_duration_since(*start).as_millis() as u64)
}

/// Milliseconds since the Unix epoch, the engine's clock.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch (token lifetimes).
pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch, signed (certificate validity, as X.509 times compare).
pub fn unix_now() -> i64 {
    unix_secs() as i64
}
