//! How fast one connection may send (C6).
//!
//! Round-robin reading is fair between senders, but a line from one sender is multiplied by the
//! size of the room on the way out: a single client that floods as fast as the server reads it
//! fills every other client's queue, and the slow readers among them get closed for it (C5)
//! while the flooder stays. A token bucket of input bytes per connection bounds what any one
//! client can make the server relay; when it is empty the runtime stops reading that socket until
//! it refills, so the flooder's own TCP window closes and nobody else notices. The rate is far
//! above what a person types or pastes.
//!
//! Spec: `docs/PROTOCOL.md` [§1.5] (Limits and protection: 256 KiB/s sustained, 1 MiB burst by
//! default; a rate of 0 turns it off).
//!
//! [§1.5]: ../../../docs/PROTOCOL.md#15-limits-and-protection

use std::time::{Duration, Instant};

/// A token bucket of bytes: `rate` per second, at most `burst` saved up. The rate and the burst
/// are kept as `f32` (exact up to 16 MiB, and within a millionth beyond): every connection has a
/// bucket, and 8 bytes less per idle person is worth it (issue 12).
#[derive(Debug, Clone)]
pub struct InputBudget {
    tokens: f64,
    last: Instant,
    rate: f32,
    burst: f32,
}

impl InputBudget {
    /// A full bucket. A rate of 0 means no limit.
    pub fn new(now: Instant, rate: u32, burst: u32) -> Self {
        #[allow(clippy::cast_precision_loss)] // see the type's documentation
        let (rate, burst) = (rate as f32, burst as f32);
        Self { tokens: f64::from(burst), last: now, rate, burst }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.burst));
        self.last = now;
    }

    /// `bytes` were read from this connection. The bucket may go below zero: a read is not cut
    /// short, the pause that follows is longer instead.
    pub fn spend(&mut self, now: Instant, bytes: usize) {
        if self.rate == 0.0 {
            return;
        }
        self.refill(now);
        self.tokens -= bytes as f64;
    }

    /// When reading may resume, or `None` when it may go on now.
    pub fn paused_until(&mut self, now: Instant) -> Option<Instant> {
        if self.rate == 0.0 {
            return None;
        }
        self.refill(now);
        if self.tokens > 0.0 {
            return None;
        }
        // Resume once a little more than the debt is paid back, so reads are not one byte each.
        let wait = (1.0 - self.tokens) / f64::from(self.rate);
        Some(now + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
#[path = "../../tests/unit/flood.rs"]
mod tests;
