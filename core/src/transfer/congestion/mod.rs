//! Congestion controllers behind one small trait.
//!
//! In natter the *receiver* sends the requests, so the "congestion window" is the number of payload
//! bytes the receiver has asked for and not yet received (nor declared lost), and the pacing rate
//! is the rate at which it asks. The server answers every request at once, so the request pacing
//! becomes the data pacing one round trip later.
//!
//! Three controllers:
//! - [`bbr::Bbr`] (the default): a delivery-rate model (bottleneck bandwidth x min RTT), BBRv1
//!   style, plus a measured random-loss rate it compensates for. Loss-based controllers read every
//!   random loss as congestion and collapse at a few percent loss; this one keeps the link full.
//! - [`newreno::NewReno`]: the classic loss-based AIMD, as a baseline and a conservative choice.
//! - [`StopAndWait`]: one part in flight, the original design, for comparison tables only.
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download: "a congestion controller sizes
//! the window"). The wire does not depend on the choice: only the client runs a controller.
//!
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download

use std::fmt::Debug;
use std::time::{Duration, Instant};

pub mod bbr;
pub mod newreno;

/// Which controller a receiver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControllerKind {
    /// Delivery-rate based, random-loss tolerant; the fastest safe choice, so the default.
    #[default]
    Bbr,
    /// Loss-based AIMD (RFC 9002 7 / RFC 6582 style).
    NewReno,
    /// One part per round trip (the original design); for comparisons.
    StopAndWait,
}

/// The initial window (RFC 9002 7.2): min(10 parts, max(14720 bytes, 2 parts)). Ten parts is the
/// tested Internet default; the byte cap keeps a client that asks for 64 KB parts from opening
/// with a 640 KB burst into an unknown path.
pub fn initial_window(part_size: u16) -> u64 {
    let p = u64::from(part_size.max(1));
    (10 * p).min(14_720u64.max(2 * p))
}

/// The rate a download's first flight is asked for at when the path's round trip is known
/// before its first request (from the chat connection): 400 Mbit/s.
///
/// Why this rate: a small file (a photo, a document) is over before any controller learns the
/// path, so its time is the number of round trips its first flight leaves. Ten parts (RFC 9002)
/// and BBR's startup take five round trips of data for 1 MiB at 20 ms. A first flight of
/// `FIRST_RATE x RTT`, paced over that round trip, fetches 1 MiB at 20 ms in one. The price is
/// paid on slower paths: the excess beyond the bottleneck's queue is lost, and recovered from
/// in the next round. In the simulator (`core/tests/sim_small_file.rs`, a 10 ms drop-tail queue as
/// in the shared harness), `natter get` of 1 MiB took, median of 8 seeds with the connect:
///
/// | first rate | 1 Gbit/s, 20 ms, 5% loss | 100 Mbit/s, 50 ms, 1% loss |
/// |---|---|---|
/// | 100 Mbit/s | 155 ms | 302 ms |
/// | 200 Mbit/s | 137 ms | 307 ms |
/// | 400 Mbit/s, at most 1 MiB (this) | 109 ms | 307 ms |
/// | 800 Mbit/s, at most 4 MiB | 109 ms | 331 ms |
pub const FIRST_RATE: f64 = 50e6;
/// The largest first flight, whatever the round trip: 1 MiB. It bounds what a first flight can
/// lose on a slow path with a long round trip (at 100 Mbit/s and 50 ms, the table above).
pub const MAX_FIRST_WINDOW: u64 = 1 << 20;

/// The first flight of a download whose path round trip is known before its first request:
/// a window of [`FIRST_RATE`] x RTT, asked for at [`FIRST_RATE`] (never less than
/// [`initial_window`], never more than [`MAX_FIRST_WINDOW`]). How long it stands is the
/// controller's: BBR keeps it until its own first round ends, asking for the flight's repairs at
/// the rate the flight arrives ([`bbr::Bbr`]); NewReno starts its slow start from the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstFlight {
    /// Bytes that may be in flight while the first flight stands.
    pub window: u64,
    /// Bytes per second to ask at while the first flight stands (BBR).
    pub rate: f64,
}

impl FirstFlight {
    /// The first flight for parts of `part_size` on a path of round trip `rtt`.
    pub fn for_path(part_size: u16, rtt: Duration) -> Self {
        let secs = rtt.max(crate::transfer::rtt::GRANULARITY).as_secs_f64();
        let window = ((FIRST_RATE * secs) as u64)
            .clamp(initial_window(part_size), MAX_FIRST_WINDOW.max(initial_window(part_size)));
        FirstFlight { window, rate: window as f64 / secs }
    }
}

/// One part arrived (the controller's "ack").
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// When the part arrived.
    pub now: Instant,
    /// Payload bytes of the part.
    pub bytes: u64,
    /// When the request that asked for it was sent.
    pub sent: Instant,
    /// RTT sample of that request, if it was unambiguous.
    pub rtt: Option<Duration>,
    /// The delivery-rate sample this arrival completes, if valid.
    pub rate: Option<RateSample>,
    /// True on the first delivery of a new round trip (of a part requested after the previous
    /// round's start was delivered).
    pub round_start: bool,
    /// Bytes in flight after this delivery.
    pub in_flight: u64,
    /// The smoothed RTT after this delivery's sample ([`crate::transfer::rtt::INITIAL_RTT`] until
    /// the first one).
    pub srtt: Duration,
    /// The RTT variation after this delivery's sample (rttvar, RFC 6298): how jittery the path is.
    pub rttvar: Duration,
}

/// A delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation).
#[derive(Debug, Clone, Copy)]
pub struct RateSample {
    /// Payload bytes delivered between the request of this part and its arrival.
    pub delivered: u64,
    /// The time those bytes took: the longer of the send and the arrival spans, never shorter than
    /// the minimum RTT (shorter samples are not taken).
    pub interval: Duration,
    /// The receiver was not using its whole window (nothing left to ask): the sample may be low.
    pub app_limited: bool,
}

impl RateSample {
    /// Bytes per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.interval.as_secs_f64().max(1e-9)
    }
}

/// A congestion controller as seen by the receiver.
pub trait Controller: Debug + Send {
    /// A request for `bytes` of parts was sent.
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _in_flight: u64) {}
    /// A requested part arrived.
    fn on_delivered(&mut self, d: &Delivery);
    /// Parts totalling `bytes`, requested at `sent`, were declared lost. `persistent` is set when
    /// the probe timer fired repeatedly (RFC 9002 7.6 persistent congestion).
    fn on_lost(&mut self, now: Instant, bytes: u64, sent: Instant, persistent: bool);
    /// Bytes that may be in flight.
    fn window(&self) -> u64;
    /// Bytes per second to request at; `None` requests as fast as the window allows.
    fn pacing_rate(&self, srtt: Duration) -> Option<f64>;
    /// Bottleneck bandwidth estimate in bytes per second, if the controller has one.
    fn bandwidth(&self) -> Option<f64> {
        None
    }
}

/// Builds a controller; `first`: the first flight, when the path's round trip is known (stop
/// and wait has none).
pub fn new_controller(
    kind: ControllerKind,
    part_size: u16,
    first: Option<FirstFlight>,
) -> Box<dyn Controller> {
    match kind {
        ControllerKind::Bbr => Box::new(bbr::Bbr::new(part_size).with_first_flight(first)),
        ControllerKind::NewReno => {
            Box::new(newreno::NewReno::new(part_size).with_first_flight(first))
        }
        ControllerKind::StopAndWait => Box::new(StopAndWait { part: u64::from(part_size.max(1)) }),
    }
}

/// Exactly one part in flight, unpaced: each part is asked for when the previous one arrived
/// or was declared lost.
#[derive(Debug)]
pub struct StopAndWait {
    part: u64,
}

impl Controller for StopAndWait {
    fn on_delivered(&mut self, _d: &Delivery) {}
    fn on_lost(&mut self, _now: Instant, _bytes: u64, _sent: Instant, _persistent: bool) {}
    fn window(&self) -> u64 {
        self.part
    }
    fn pacing_rate(&self, _srtt: Duration) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_window_follows_rfc9002() {
        assert_eq!(initial_window(1200), 12_000);
        assert_eq!(initial_window(512), 5120);
        assert_eq!(initial_window(65_000), 130_000);
        assert_eq!(initial_window(1472), 14_720);
    }

    #[test]
    fn the_first_flight_is_the_first_rate_over_the_round_trip() {
        let ms = Duration::from_millis;
        let f = FirstFlight::for_path(1446, ms(10));
        assert_eq!(f.window, 500_000);
        assert!((f.rate - FIRST_RATE).abs() < 1.0);
        // Never below the initial window (a LAN), never above the cap (a satellite).
        assert_eq!(FirstFlight::for_path(65_000, ms(0)).window, initial_window(65_000));
        assert_eq!(FirstFlight::for_path(1446, Duration::from_secs(2)).window, MAX_FIRST_WINDOW);
    }
}
