//! The wall clock, read in the units each consumer keeps: the policy engine decides in Unix
//! milliseconds, tokens and certificates count Unix seconds. Uses nothing of the crate.

use std::time::{SystemTime, UNIX_EPOCH};

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
