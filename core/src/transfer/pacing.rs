//! Spreads requests over the round trip instead of sending the window as one burst.
//!
//! Why: the server answers each REQUEST at once with a back-to-back burst of PARTs. If the receiver
//! asked for a whole window at once, a window-sized burst would hit the bottleneck queue every round
//! trip and overflow it (self-inflicted loss). Asking in small batches at the controller's pacing
//! rate makes the PART stream arrive at the bottleneck at about that rate.
//!
//! Batch size is a trade-off: every REQUEST costs an upstream datagram (which can be lost too, taking
//! its whole batch with it), every burst costs queue space. We aim for one request per
//! [`QUANTUM`] (1 ms) of data at the pacing rate, at least one part and at most a quarter of the
//! window, and never more than a REQUEST may carry (256 parts, 2 MiB). At 100 Mbit/s and 1200-byte
//! parts that is ~10 parts per request, at 1 Gbit/s ~100.
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download: "requests go out paced") and
//! [§2.2] (Datagrams: the per-request limits).
//!
//! [§2.3]: ../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download
//! [§2.2]: ../../../docs/PROTOCOL.md#22-datagrams

use std::time::{Duration, Instant};

/// The time's worth of data one request asks for at the pacing rate.
pub const QUANTUM: Duration = Duration::from_millis(1);

/// How late a request may be and still be made up for (see [`Pacer::on_send`]).
///
/// Why this much: a real event loop does not wake when the pacer asks. mio rounds poll
/// timeouts up to whole milliseconds, and on a busy machine a wake-up is often a few
/// milliseconds late. If every late slot were lost, the loop would ask at well under the pacing
/// rate, the deliveries (and so the bandwidth estimate, and so the pacing rate) would shrink
/// with it, and the estimate would spiral down: on a real 1 Gbit/s, 20 ms path we watched it sink
/// to a third of the link while the path sat idle. The simulator reproduces it with a client that
/// stalls (`sim::Stalls`): at 1 Gbit/s, 20 ms, 5% loss, a client stalled 4 ms in every 10 never
/// finished with 1 ms of catch-up, got 89% with 5 ms but still collapsed at 8 ms in every 20,
/// and gets 89-90% in every case with 10 ms. After a stall the path has a gap of the stall's
/// length, so the catch-up burst (at most 10 ms of the rate, and never more than the window)
/// lands on a drained bottleneck queue.
pub const CATCH_UP: Duration = Duration::from_millis(10);

/// A leaky-bucket pacer: after a request of `b` bytes the next may go `b / rate` later.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    next: Option<Instant>,
}

impl Pacer {
    /// When the next request may be sent; `None` means now.
    pub fn next_send(&self) -> Option<Instant> {
        self.next
    }

    /// Whether a request may go out at `now`: no slot is scheduled, or its time has come.
    pub fn can_send(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// A request for `bytes` went out at `now` under `rate` bytes/s (`None`: unpaced).
    ///
    /// A lateness of up to [`CATCH_UP`] (coarse timers, a busy machine) is made up for by
    /// counting from the scheduled slot, so the following requests may go at once until the
    /// average rate is back on schedule. Beyond that, no credit is banked (the next slot counts
    /// from `now`), so an idle period never turns into a long burst.
    pub fn on_send(&mut self, now: Instant, bytes: u64, rate: Option<f64>) {
        let Some(rate) = rate.filter(|r| *r > 0.0) else {
            self.next = None;
            return;
        };
        let start = match self.next {
            Some(t) if t + CATCH_UP > now => t,
            _ => now,
        };
        let gap = Duration::from_secs_f64((bytes as f64 / rate).min(10.0));
        self.next = Some(start + gap);
    }

    /// How many payload bytes the next request should ask for. Unpaced (no rate yet: before
    /// the first RTT sample, or a controller without pacing), the whole window goes in one
    /// request, as QUIC sends its initial window.
    pub fn batch_bytes(rate: Option<f64>, part: u64, window: u64) -> u64 {
        match rate {
            Some(r) => ((r * QUANTUM.as_secs_f64()) as u64).min(window / 4).max(part),
            None => window.max(part),
        }
    }
}

#[cfg(test)]
#[path = "../../tests/unit/pacing.rs"]
mod tests;
