//! The server's log lines, and the one random seed a server needs.

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

/// 32 bytes from the operating system's random source (`getrandom`): the key of the server's
/// token and transfer-key generator. Sealed downloads (PROTOCOL 2.7) are as private as this seed
/// is unguessable, which a 64-bit seed is not; a system that cannot give them is an error.
pub fn secret_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|err| std::io::Error::other(format!("no random seed from the system: {err}")))?;
    Ok(seed)
}
