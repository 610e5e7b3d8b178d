//! One direction of a simulated path: loss, a rate-limited drop-tail bottleneck, delay, jitter,
//! duplication and corruption.
//!
//! Order of effects, as with Linux netem in front of a rate limiter: a datagram is first subjected to
//! random and burst loss (so lost datagrams do not use the bottleneck), then queues for the
//! bottleneck (dropped if the queue would exceed its byte bound), is serialised at the link rate,
//! then travels the one-way delay plus a random jitter (which reorders datagrams), and may arrive
//! twice or damaged ([`super::damage`]).

use std::time::Duration;

use super::damage::DamageMix;
use super::rng::SplitMix64;

/// The Gilbert-Elliott two-state burst-loss model: in the bad state datagrams are lost with
/// `loss_bad`; each datagram the state flips with the given probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Per datagram, the probability of going from the good state to the bad one.
    pub p_enter_bad: f64,
    /// Per datagram, the probability of going from the bad state back to the good one.
    pub p_leave_bad: f64,
    /// The loss probability in the bad state (none is lost for it in the good state).
    pub loss_bad: f64,
}

/// The conditions of one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck rate in bits per second; 0 means unlimited (no queue).
    pub rate_bps: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..jitter` per datagram; reorders datagrams closer
    /// together than the jitter.
    pub jitter: Duration,
    /// Independent random loss probability.
    pub loss: f64,
    /// Burst loss on top of `loss`, if any.
    pub burst: Option<GilbertElliott>,
    /// Probability a datagram is delivered twice (the copy gets its own jitter).
    pub duplicate: f64,
    /// Probability a delivered datagram is damaged.
    pub corrupt: f64,
    /// How a damaged datagram is damaged; one bit flipped unless set.
    pub damage: DamageMix,
    /// Drop-tail bound of the bottleneck queue, bytes.
    pub queue_bytes: u64,
    /// Everything entering during `[from, until)` (simulated time) is lost: an outage.
    pub blackhole: Option<(Duration, Duration)>,
    /// An on-path attacker records this share of the datagrams delivered and sends each again,
    /// unchanged, this long after it first arrived (plus the jitter): replays, for sealed
    /// datagrams (PROTOCOL 2.7). `None` draws nothing, so seeds keep their meaning.
    pub replay: Option<(f64, Duration)>,
}

impl LinkConfig {
    /// A clean link: rate, one-way delay, and a queue of `queue_bytes`.
    pub fn clean(rate_bps: u64, delay: Duration, queue_bytes: u64) -> Self {
        LinkConfig {
            rate_bps,
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            corrupt: 0.0,
            damage: DamageMix::ONE_BIT,
            queue_bytes,
            blackhole: None,
            replay: None,
        }
    }
}

/// Queue statistics of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkStats {
    /// Datagrams that entered the link.
    pub sent: u64,
    /// Datagrams lost at random, in a burst or in a blackhole.
    pub lost: u64,
    /// Datagrams dropped because the bottleneck queue was full.
    pub queue_drops: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Copies delivered damaged (see [`LinkConfig::damage`]).
    pub corrupted: u64,
    /// Datagrams delivered once more by the attacker of [`LinkConfig::replay`].
    pub replayed: u64,
    /// Sum of the time datagrams waited in the bottleneck queue, nanoseconds.
    pub queue_wait_ns: u128,
    /// The longest a datagram waited in the bottleneck queue, nanoseconds.
    pub max_queue_wait_ns: u64,
    /// Datagrams that went through the bottleneck queue.
    pub queued: u64,
}

impl LinkStats {
    /// Average time a datagram that entered the queue waited there.
    pub fn avg_queue_delay(&self) -> Duration {
        if self.queued == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.queue_wait_ns / u128::from(self.queued)) as u64)
    }
}

/// A link's state: when the bottleneck is next free, the burst-loss state, the statistics.
#[derive(Debug, Clone)]
pub struct Link {
    /// Its conditions.
    pub config: LinkConfig,
    busy_until_ns: u64,
    bad: bool,
    /// What it did so far.
    pub stats: LinkStats,
}

impl Link {
    /// A link with these conditions, its queue empty, in the good burst state.
    pub fn new(config: LinkConfig) -> Self {
        Link { config, busy_until_ns: 0, bad: false, stats: LinkStats::default() }
    }

    /// A datagram of `len` bytes enters at `now_ns`: returns the arrival times of its copies
    /// (none if lost) and for each whether it is corrupted, via `out`.
    pub fn transmit(
        &mut self,
        now_ns: u64,
        len: usize,
        rng: &mut SplitMix64,
        out: &mut Vec<(u64, bool)>,
    ) {
        out.clear();
        self.stats.sent += 1;
        let mut lost = rng.chance(self.config.loss);
        if let Some(ge) = self.config.burst {
            self.bad =
                if self.bad { !rng.chance(ge.p_leave_bad) } else { rng.chance(ge.p_enter_bad) };
            lost |= self.bad && rng.chance(ge.loss_bad);
        }
        if let Some((from, until)) = self.config.blackhole {
            lost |= (from.as_nanos()..until.as_nanos()).contains(&u128::from(now_ns));
        }
        if lost {
            self.stats.lost += 1;
            return;
        }
        let depart = if self.config.rate_bps == 0 {
            now_ns
        } else {
            let start = self.busy_until_ns.max(now_ns);
            let wait = start - now_ns;
            let queued_bytes = u128::from(wait) * u128::from(self.config.rate_bps) / 8_000_000_000;
            if queued_bytes + len as u128 > u128::from(self.config.queue_bytes) {
                self.stats.queue_drops += 1;
                return;
            }
            self.stats.queued += 1;
            self.stats.queue_wait_ns += u128::from(wait);
            self.stats.max_queue_wait_ns = self.stats.max_queue_wait_ns.max(wait);
            let tx = (len as u128 * 8_000_000_000).div_ceil(u128::from(self.config.rate_bps));
            self.busy_until_ns = start + tx as u64;
            self.busy_until_ns
        };
        let copies = if rng.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = rng.below(self.config.jitter.as_nanos() as u64);
            let corrupt = rng.chance(self.config.corrupt);
            if corrupt {
                self.stats.corrupted += 1;
            }
            out.push((depart + self.config.delay.as_nanos() as u64 + jitter, corrupt));
        }
        if let Some((share, after)) = self.config.replay
            && let Some(&(first, _)) = out.first()
            && rng.chance(share)
        {
            self.stats.replayed += 1;
            let jitter = rng.below(self.config.jitter.as_nanos() as u64);
            out.push((first + after.as_nanos() as u64 + jitter, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_at_rate_and_drops_at_queue_bound() {
        // 8 Mbit/s = 1 byte per microsecond; queue of 3000 bytes.
        let mut link = Link::new(LinkConfig::clean(8_000_000, Duration::from_millis(1), 3000));
        let mut rng = SplitMix64::new(1);
        let mut out = Vec::new();
        link.transmit(0, 1000, &mut rng, &mut out);
        assert_eq!(out, vec![(1_000_000 + 1_000_000, false)]);
        link.transmit(0, 1000, &mut rng, &mut out);
        assert_eq!(out, vec![(2_000_000 + 1_000_000, false)]);
        link.transmit(0, 1000, &mut rng, &mut out);
        link.transmit(0, 1000, &mut rng, &mut out);
        // Queue holds 3000 bytes of wait: the 4th (3000 queued + 1000) is dropped.
        assert!(out.is_empty());
        assert_eq!(link.stats.queue_drops, 1);
        assert_eq!(link.stats.max_queue_wait_ns, 2_000_000);
    }

    #[test]
    fn loss_rate_is_close_to_configured() {
        let mut cfg = LinkConfig::clean(0, Duration::ZERO, 0);
        cfg.loss = 0.2;
        let mut link = Link::new(cfg);
        let mut rng = SplitMix64::new(7);
        let mut out = Vec::new();
        for _ in 0..100_000 {
            link.transmit(0, 100, &mut rng, &mut out);
        }
        let rate = link.stats.lost as f64 / 100_000.0;
        assert!((rate - 0.2).abs() < 0.01, "{rate}");
    }
}
