//! A delivery-rate controller in the style of BBR (v1, with a measured-loss compensation).
//!
//! Model: the path has a bottleneck bandwidth `bw` (the max delivery rate seen over the last 10
//! round trips) and a propagation delay `min_rtt` (the min RTT over 10 s). Ask at
//! `pacing_gain * bw` and keep at most `cwnd_gain * bw * min_rtt` in flight: with cwnd_gain 2 the
//! standing queue is bounded by about one BDP even with several flows, and the link stays full.
//!
//! Phases (as BBR): STARTUP (gain 2.885, doubling-plus per round until the bandwidth stops growing by
//! 25% for 3 rounds), DRAIN (gain 1/2.885 until in flight <= BDP), PROBE_BW (gains 1.25, 0.75, then
//! 1 x 6, one min_rtt each: probe for more, drain what the probe queued, cruise), PROBE_RTT (every 10 s
//! without a new min RTT, 4 parts in flight for 200 ms so flows sharing a queue see the true delay).
//!
//! Random loss: BBR's delivery rate counts only what arrived, so at 30% loss a plain BBR measures 70%
//! of what it asks for and its estimate shrinks every round. We measure the loss rate per round and
//! ask for `1 / (1 - loss)` more, *but only learn from rounds without a standing queue* (round min
//! RTT within 12.5% + 1 ms of min_rtt, or within twice the RTT's mean deviation on a jittery path):
//! losses with a full queue are congestion, and compensating for them would feed the queue. The compensation is capped at 50% loss so that a broken path
//! cannot make us send more than twice the useful rate.
//!
//! Why a round that loses parts behind a standing queue also *backs the compensation off* (by a
//! quarter): asking for `1 / (1 - loss)` more makes the path drop exactly that excess, so any
//! compensation, right or too high, measures itself back. Once a probe's queue losses had been
//! learnt, nothing brought the estimate down again. On the shared harness's 1 Gbit/s, 5% loss,
//! 20 ms path it crept from 5% to 26% within one 256 MiB download, and a quarter of all parts
//! asked for were dropped (at the bottleneck, or from the server's bounded list of owed parts)
//! and asked for again. A standing queue with losses is the sign of asking too much, so that is
//! what turns it down.
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download; this is the default
//! controller).
//!
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Controller, Delivery, FirstFlight, initial_window};

const STARTUP_GAIN: f64 = 2.885;
const CWND_GAIN: f64 = 2.0;
const PROBE_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const BW_WINDOW_ROUNDS: u64 = 10;
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
const MAX_LOSS_COMPENSATION: f64 = 0.5;
/// A round has no standing queue when its min RTT is within `min_rtt / QUEUE_FREE_DIVISOR` + 1 ms
/// of the path's: 3.5 ms at 20 ms, 7.25 ms at 50 ms, inside the 10 ms drop-tail queue of the
/// shared harness (with a divisor of 4 a full queue at 50 ms still passed for "free"). On a
/// jittery path the allowance is twice the RTT's mean deviation, if that is more: there a round's
/// min RTT is above the floor by chance, and taking that for a queue would back off the
/// compensation that keeps a lossy link full.
const QUEUE_FREE_DIVISOR: u32 = 8;
/// What is left of the loss compensation after a round that lost parts behind a standing queue.
const LOSS_BACKOFF: f64 = 0.75;
/// The shortest span of the first flight's arrivals whose rate is taken as the path's
/// ([`Bbr::flight_arrival_rate`]): 17 parts of 1446 bytes at 100 Mbit/s, 3 at 20 Mbit/s. Fewer
/// parts make a rougher estimate, high by up to a part (the first part's bytes are counted, see
/// `on_delivered`), and it sharpens with every part that comes.
const FLIGHT_RATE_SPAN: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw { phase: usize, since: Instant },
    ProbeRtt { done_at: Option<Instant> },
}

/// The default controller ([`super::ControllerKind::Bbr`]): window and pacing rate from the
/// bottleneck-bandwidth and min-RTT model described in the module documentation.
#[derive(Debug)]
pub struct Bbr {
    part: u64,
    mode: Mode,
    /// Monotone deque of (round, rate): the windowed max filter of delivery rate.
    bw_samples: VecDeque<(u64, f64)>,
    round: u64,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Option<Instant>,
    full_bw: f64,
    full_bw_rounds: u32,
    filled_pipe: bool,
    /// Measured random loss rate (0..=MAX_LOSS_COMPENSATION).
    loss: f64,
    round_delivered: u64,
    round_lost: u64,
    round_min_rtt: Option<Duration>,
    /// The receiver's RTT variation at the last delivery: how jittery the path is.
    rttvar: Duration,
    in_flight: u64,
    /// The probe timer fired repeatedly: the path may be gone, so keep the minimum window until
    /// something arrives again (BBR does the same after a retransmission timeout).
    collapsed: bool,
    /// The window and rate of the first flight, when the path's RTT was known: they stand
    /// until the controller's own first round ends ([`Bbr::in_first_flight`]).
    first: Option<FirstFlight>,
    /// The first flight's arrivals: when the first and the latest came, and their bytes.
    flight_arrivals: Option<(Instant, Instant, u64)>,
}

impl Bbr {
    /// A controller in STARTUP for parts of `part_size` payload bytes, starting from
    /// [`super::initial_window`] and no bandwidth estimate; until the first rate sample it paces
    /// the initial window over the smoothed RTT at the startup gain.
    pub fn new(part_size: u16) -> Self {
        Bbr {
            part: u64::from(part_size.max(1)),
            mode: Mode::Startup,
            bw_samples: VecDeque::new(),
            round: 0,
            min_rtt: None,
            min_rtt_stamp: None,
            full_bw: 0.0,
            full_bw_rounds: 0,
            filled_pipe: false,
            loss: 0.0,
            round_delivered: 0,
            round_lost: 0,
            round_min_rtt: None,
            rttvar: Duration::ZERO,
            in_flight: 0,
            collapsed: false,
            first: None,
            flight_arrivals: None,
        }
    }

    /// The same controller starting with `first` (if any) instead of the initial window paced
    /// over the smoothed RTT at the startup gain.
    pub fn with_first_flight(mut self, first: Option<FirstFlight>) -> Self {
        self.first = first;
        self
    }

    /// The first flight, while it is what arrives: until a part asked for after its first
    /// arrival comes back (the first round of the controller's own), none without a first
    /// flight.
    ///
    /// Why the first flight's window and an arrival rate stand for that round, not the model: the
    /// model's first rate samples span the round trip before the flight (the flight was asked
    /// for a round trip before it came), so they read far below the path (at 100 Mbit/s and 50 ms,
    /// 53 Mbit/s at the round's end), and a window and pace built on them held back the repairs
    /// of the flight's losses, a round trip's worth at most, while the flight still arrived.
    /// The price: on a path faster than the flight, the round after it starts from the flight's
    /// rate, where the model's startup gain would have gone past it late in the round. A probe
    /// timeout ends the first flight ([`Controller::on_lost`] with `persistent`).
    fn in_first_flight(&self) -> Option<FirstFlight> {
        self.first.filter(|_| self.round <= 1)
    }

    /// What the first flight's arrivals show of the path, bytes per second: their bytes over
    /// their span, once that is [`FLIGHT_RATE_SPAN`] or more. A flight that outran the path's
    /// bottleneck arrives at the bottleneck's rate (the excess is lost), so repairs asked at this
    /// rate join the queue as fast as it drains, and do not overflow it again.
    fn flight_arrival_rate(&self) -> Option<f64> {
        let (first, latest, bytes) = self.flight_arrivals?;
        let span = latest.saturating_duration_since(first);
        (span >= FLIGHT_RATE_SPAN).then(|| bytes as f64 / span.as_secs_f64())
    }

    /// The bottleneck bandwidth estimate, bytes per second.
    pub fn bw(&self) -> Option<f64> {
        self.bw_samples.front().map(|&(_, r)| r)
    }

    /// The measured random loss rate being compensated for.
    pub fn loss_rate(&self) -> f64 {
        self.loss
    }

    /// Bandwidth times round trip: what the path holds. The round trip is taken as at least the
    /// timer granularity (1 ms): below that, the "propagation delay" is the time two event loops
    /// take to notice a datagram (loopback measures 5-10 us on an idle machine and hundreds of us
    /// under load), and a window sized on the idle figure (4 parts) leaves the pipe empty while a
    /// loop is busy. On any real path (RTT of 1 ms or more) the floor changes nothing; on a LAN
    /// it allows at most 1 ms of rate in flight, which no switch buffer notices.
    fn bdp(&self) -> Option<f64> {
        let rtt = self.min_rtt?.max(crate::transfer::rtt::GRANULARITY);
        Some(self.bw()? * rtt.as_secs_f64() / (1.0 - self.loss))
    }

    fn gains(&self) -> (f64, f64) {
        match self.mode {
            Mode::Startup => (STARTUP_GAIN, STARTUP_GAIN),
            Mode::Drain => (1.0 / STARTUP_GAIN, STARTUP_GAIN),
            Mode::ProbeBw { phase, .. } => (PROBE_GAINS[phase], CWND_GAIN),
            Mode::ProbeRtt { .. } => (1.0, 1.0),
        }
    }

    fn min_window(&self) -> u64 {
        4 * self.part
    }

    fn end_round(&mut self) {
        self.round += 1;
        let total = self.round_delivered + self.round_lost;
        if total >= 8 * self.part {
            let sample = self.round_lost as f64 / total as f64;
            let queue_free = match (self.round_min_rtt, self.min_rtt) {
                (Some(r), Some(m)) => {
                    let allowance = m / QUEUE_FREE_DIVISOR + Duration::from_millis(1);
                    r <= m + allowance.max(self.rttvar * 2)
                }
                _ => true,
            };
            if queue_free {
                self.loss += (sample - self.loss) / 4.0;
                self.loss = self.loss.clamp(0.0, MAX_LOSS_COMPENSATION);
            } else if sample > 0.0 {
                // Losses behind a standing queue: the compensation asks for more than the path
                // carries, so it is backed off (see the module documentation).
                self.loss *= LOSS_BACKOFF;
            }
        }
        self.round_delivered = 0;
        self.round_lost = 0;
        self.round_min_rtt = None;
        // Full-pipe detection (BBR): three rounds without 25% bandwidth growth.
        if !self.filled_pipe
            && let Some(bw) = self.bw()
        {
            if bw >= self.full_bw * 1.25 {
                self.full_bw = bw;
                self.full_bw_rounds = 0;
            } else {
                self.full_bw_rounds += 1;
                if self.full_bw_rounds >= 3 {
                    self.filled_pipe = true;
                }
            }
        }
    }

    fn update_bw(&mut self, rate: f64) {
        while self.bw_samples.back().is_some_and(|&(_, r)| r <= rate) {
            self.bw_samples.pop_back();
        }
        self.bw_samples.push_back((self.round, rate));
        while self
            .bw_samples
            .front()
            .is_some_and(|&(round, _)| round + BW_WINDOW_ROUNDS < self.round)
        {
            self.bw_samples.pop_front();
        }
    }

    fn update_mode(&mut self, now: Instant) {
        let bdp = self.bdp().unwrap_or(0.0);
        let min_rtt = self.min_rtt.unwrap_or(Duration::from_millis(1));
        match self.mode {
            Mode::Startup if self.filled_pipe => self.mode = Mode::Drain,
            Mode::Drain if (self.in_flight as f64) <= bdp => {
                self.mode = Mode::ProbeBw {
                    // Start in a cruising phase, varied by round so that flows desynchronise.
                    phase: 2 + (self.round % 6) as usize,
                    since: now,
                }
            }
            Mode::ProbeBw { phase, since } => {
                let elapsed = now.saturating_duration_since(since);
                let advance = match phase {
                    // Probe up for a round trip; drain early once the probe's queue is gone.
                    0 => elapsed >= min_rtt,
                    1 => elapsed >= min_rtt || (self.in_flight as f64) <= bdp,
                    _ => elapsed >= min_rtt,
                };
                if advance {
                    self.mode =
                        Mode::ProbeBw { phase: (phase + 1) % PROBE_GAINS.len(), since: now };
                }
            }
            Mode::ProbeRtt { done_at: None } if self.in_flight <= self.min_window() => {
                self.mode = Mode::ProbeRtt { done_at: Some(now + PROBE_RTT_TIME.max(min_rtt)) }
            }
            Mode::ProbeRtt { done_at: Some(done_at) } if now >= done_at => {
                self.min_rtt_stamp = Some(now);
                self.mode = if self.filled_pipe {
                    Mode::ProbeBw { phase: 2, since: now }
                } else {
                    Mode::Startup
                };
            }
            _ => {}
        }
    }
}

impl Controller for Bbr {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, in_flight: u64) {
        self.in_flight = in_flight;
    }

    fn on_delivered(&mut self, d: &Delivery) {
        self.in_flight = d.in_flight;
        if self.in_first_flight().is_some() {
            // The first part's bytes are counted too, though they came in no span of time: over
            // a few parts that reads high by up to a part, which errs toward asking the repairs
            // a little sooner. In the simulator, 100 files of 100 KiB, 32 at once, at 1 Gbit/s,
            // 20 ms, 5% loss took 195-199 ms this way, 209-212 ms with the first part left out.
            let (first, _, bytes) = self.flight_arrivals.unwrap_or((d.now, d.now, 0));
            self.flight_arrivals = Some((first, d.now, bytes + d.bytes));
        }
        self.rttvar = d.rttvar;
        self.collapsed = false;
        if d.round_start {
            self.end_round();
        }
        self.round_delivered += d.bytes;
        if let Some(rtt) = d.rtt {
            self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
            let expired = self
                .min_rtt_stamp
                .is_some_and(|s| d.now.saturating_duration_since(s) > MIN_RTT_WINDOW);
            if self.min_rtt.is_none_or(|m| rtt <= m) {
                self.min_rtt = Some(rtt);
                self.min_rtt_stamp = Some(d.now);
            } else if expired && !matches!(self.mode, Mode::ProbeRtt { .. }) {
                self.mode = Mode::ProbeRtt { done_at: None };
            }
            if expired && matches!(self.mode, Mode::ProbeRtt { .. }) {
                // Take whatever the drained path shows as the new floor.
                self.min_rtt = Some(self.round_min_rtt.unwrap_or(rtt));
            }
        }
        if let Some(rate) = d.rate {
            let r = rate.rate();
            if !rate.app_limited || self.bw().is_none_or(|bw| r > bw) {
                self.update_bw(r);
            }
        }
        self.update_mode(d.now);
    }

    fn on_lost(&mut self, _now: Instant, bytes: u64, _sent: Instant, persistent: bool) {
        self.collapsed |= persistent;
        if persistent {
            // Nothing came for probe after probe: whatever the first flight showed of the path
            // no longer holds, and a late part of it must not bring its whole window back.
            self.first = None;
        }
        self.round_lost += bytes;
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }

    fn window(&self) -> u64 {
        if self.collapsed || matches!(self.mode, Mode::ProbeRtt { .. }) {
            return self.min_window();
        }
        if let Some(first) = self.in_first_flight() {
            return first.window.max(self.min_window());
        }
        let (_, cwnd_gain) = self.gains();
        match self.bdp() {
            Some(bdp) => ((cwnd_gain * bdp) as u64).max(self.min_window()),
            None => match self.first {
                Some(first) => first.window.max(self.min_window()),
                None => initial_window(self.part as u16).max(self.min_window()),
            },
        }
    }

    fn pacing_rate(&self, srtt: Duration) -> Option<f64> {
        if let Some(first) = self.in_first_flight() {
            // The flight's repairs, at the pace the flight arrives (never above its own).
            return Some(
                self.flight_arrival_rate().map_or(first.rate, |rate| rate.min(first.rate)),
            );
        }
        let (gain, _) = self.gains();
        Some(match self.bw() {
            Some(bw) => gain * bw / (1.0 - self.loss),
            // No sample yet, but the first flight is known: ask for it at its own rate.
            None if self.first.is_some() => self.first.map_or(0.0, |f| f.rate),
            // No sample yet: spread the initial window over the (initial) RTT at startup gain.
            None => {
                STARTUP_GAIN * initial_window(self.part as u16) as f64
                    / srtt.as_secs_f64().max(1e-4)
            }
        })
    }

    fn bandwidth(&self) -> Option<f64> {
        self.bw()
    }
}

#[cfg(test)]
#[path = "../../../tests/unit/bbr.rs"]
mod tests;
