//! NewReno-style AIMD (RFC 9002 section 7): slow start, halve once per round trip on loss,
//! then one part per window per round trip.
//!
//! It reads every loss as congestion, so random loss keeps its window small; it is here as the
//! conservative baseline and to show in the goodput table why the default is delivery-rate based.
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download; NewReno is one of the
//! controllers a client may run).
//!
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download

use std::time::{Duration, Instant};

use super::{Controller, Delivery, FirstFlight, initial_window};

/// The loss-based controller ([`super::ControllerKind::NewReno`]): a byte window that grows in slow
/// start, then by one part per round trip, and halves at most once per round trip of losses.
#[derive(Debug)]
pub struct NewReno {
    part: u64,
    cwnd: u64,
    ssthresh: u64,
    /// Losses of parts requested before this instant belong to the reduction already made.
    recovery_start: Option<Instant>,
}

impl NewReno {
    /// A controller in slow start for parts of `part_size` payload bytes, with the
    /// [`super::initial_window`] and no slow-start threshold yet.
    pub fn new(part_size: u16) -> Self {
        NewReno {
            part: u64::from(part_size.max(1)),
            cwnd: initial_window(part_size),
            ssthresh: u64::MAX,
            recovery_start: None,
        }
    }

    /// The same controller with a first window of `first` (if any): slow start goes on from
    /// there.
    pub fn with_first_flight(mut self, first: Option<FirstFlight>) -> Self {
        if let Some(first) = first {
            self.cwnd = first.window;
        }
        self
    }

    fn min_window(&self) -> u64 {
        2 * self.part
    }
}

impl Controller for NewReno {
    fn on_delivered(&mut self, d: &Delivery) {
        if self.recovery_start.is_some_and(|r| d.sent <= r) {
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd += d.bytes;
        } else {
            self.cwnd += (self.part * d.bytes / self.cwnd).max(1);
        }
    }

    fn on_lost(&mut self, now: Instant, _bytes: u64, sent: Instant, persistent: bool) {
        if persistent {
            self.cwnd = self.min_window();
            self.recovery_start = Some(now);
            return;
        }
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        self.recovery_start = Some(now);
        self.cwnd = (self.cwnd / 2).max(self.min_window());
        self.ssthresh = self.cwnd;
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    /// Paced at 1.25 x cwnd / srtt (as Linux and quinn do) so the window is spread over the
    /// round trip with a little headroom, instead of sent as one burst.
    fn pacing_rate(&self, srtt: Duration) -> Option<f64> {
        Some(1.25 * self.cwnd as f64 / srtt.as_secs_f64().max(1e-4))
    }
}

#[cfg(test)]
#[path = "../../../tests/unit/newreno.rs"]
mod tests;
