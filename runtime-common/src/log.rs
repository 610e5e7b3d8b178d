//! The server's log lines, and the one random seed a server needs.

use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use natter_core::chat::server::LogEvent;

/// Logs what the chat core reported, in the original system's words where it had some. The core
/// knows no clock, so the time of a connection is added here.
pub fn server_event(event: &LogEvent) {
    match event {
        LogEvent::Connected { .. } => {
            let unix_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            tracing::info!("{event} at {unix_time:.6}");
        }
        _ => tracing::info!("{event}"),
    }
}

/// A seed from the operating system's random source, for the core's token generator.
///
/// `RandomState` is keyed from the OS generator once per process (and its keys move on for every
/// new value), which is all we need for one number without another dependency.
pub fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(SystemTime::now())
}
