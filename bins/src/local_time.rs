//! The wall clock for the chat clients' timestamps: the core reads no clock, so the UI hands the
//! client model a [`Clock`] each time.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use natter_core::client_model::{Clock, TimeOfDay};

/// The local UTC offset in seconds, read once.
static OFFSET: OnceLock<i64> = OnceLock::new();

/// Reads the local UTC offset. Call it at the start of `main`, before any thread runs: the `time`
/// crate can only read it soundly then (elsewhere the timestamps are in UTC).
pub fn init() {
    let offset =
        time::UtcOffset::current_local_offset().map_or(0, |o| i64::from(o.whole_seconds()));
    let _ = OFFSET.set(offset);
}

/// Now, for the client model.
pub fn clock() -> Clock {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let local = (unix as i64 + OFFSET.get().copied().unwrap_or(0)).rem_euclid(86_400);
    Clock { now: Instant::now(), time: TimeOfDay::from_seconds(local as u64) }
}
