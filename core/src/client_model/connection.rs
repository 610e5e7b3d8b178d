//! The state of the connection to the server, as a person sees it, and when to try again after
//! losing it.
//!
//! The model decides; the runner performs: when the back-off runs out the model asks for a new
//! session ([`super::Action::Connect`]), and the runner starts one.

use std::time::{Duration, Instant};

/// The first wait before trying a lost server again; each failed try doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// A session is starting: connecting, or waiting for the server to accept our name.
    /// `attempt` counts the tries since the last time we were in (1 for the first).
    Connecting {
        /// Tries since we were last in.
        attempt: u32,
    },
    /// In the chat.
    Joined,
    /// The server refused the name; the connection stays open and the next line typed is the
    /// next name to try (PROTOCOL 1.1).
    NameRefused {
        /// The server's reason.
        reason: String,
    },
    /// The connection is gone; another try is due at `retry_at`.
    Lost {
        /// Why, for the person.
        reason: String,
        /// When the next try starts by itself.
        retry_at: Instant,
        /// Tries so far since we were last in.
        attempt: u32,
    },
    /// `/quit` was sent; waiting for the server to close.
    Quitting,
    /// The person left: the UI closes.
    Closed,
}

impl Connection {
    /// A short word for a status bar.
    pub fn label(&self) -> &'static str {
        match self {
            Connection::Connecting { .. } => "connecting",
            Connection::Joined => "connected",
            Connection::NameRefused { .. } => "name refused",
            Connection::Lost { .. } => "disconnected",
            Connection::Quitting => "leaving",
            Connection::Closed => "closed",
        }
    }
}

/// The wait before try number `attempt + 1` after `attempt` tries failed: 1 s, 2 s, 4 s, ... at
/// most [`MAX_RETRY`].
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 13 (reconnect back-off)
    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
        assert_eq!(backoff(0), FIRST_RETRY);
    }
}
