//! Round-trip time estimation, RFC 9002 section 5, and the probe timeout derived from it.
//!
//! Every PART echoes the `req_seq` of the REQUEST that asked for it and every REQUEST has a fresh
//! `req_seq`, so each sample is unambiguous (no Karn's algorithm needed). The server answers at
//! once, so there is no ack delay to subtract.
//!
//! The PTO deliberately has no 1-second floor (RFC 6298 has one; RFC 9002 does not): on a 2 ms path
//! a lost tail would otherwise stall the download for 500 round trips. Exponential backoff keeps
//! repeated timeouts (a blackholed path) from flooding.
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download: loss after 9/8 × max(srtt,
//! latest RTT), probe timeout srtt + 4·rttvar, doubling, capped at 2 s).
//!
//! [§2.3]: ../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download

use std::time::Duration;

/// Before any sample (RFC 9002 6.2.2 kInitialRtt).
pub const INITIAL_RTT: Duration = Duration::from_millis(333);
/// Timer granularity (RFC 9002 kGranularity): never arm a timer closer than this.
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// Smoothed RTT, RTT variation, minimum and latest sample.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
    /// A round trip measured before the first sample (see [`RttEstimator::with_hint`]).
    hint: Option<Duration>,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator {
            latest: INITIAL_RTT,
            smoothed: None,
            var: INITIAL_RTT / 2,
            min: INITIAL_RTT,
            hint: None,
        }
    }
}

impl RttEstimator {
    /// Feeds one sample (RFC 9002 5.3).
    pub fn on_sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        match self.smoothed {
            None => {
                self.smoothed = Some(rtt);
                self.var = rtt / 2;
                self.min = rtt;
            }
            Some(srtt) => {
                self.min = self.min.min(rtt);
                let diff = srtt.abs_diff(rtt);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// An estimator that starts from `hint`, a round trip of the same path measured some other
    /// way (the chat connection's), instead of [`INITIAL_RTT`]: the smoothed RTT, the latest and
    /// the variation start as a first sample of `hint` would set them, so the probe timeout is
    /// about 3 x `hint` rather than a second. The first real sample replaces all of it, as a first
    /// sample does (RFC 9002 5.3), and [`RttEstimator::has_sample`] stays false until then.
    pub fn with_hint(hint: Duration) -> Self {
        let hint = hint.max(GRANULARITY);
        RttEstimator {
            latest: hint,
            smoothed: None,
            var: hint / 2,
            min: INITIAL_RTT,
            hint: Some(hint),
        }
    }

    /// Whether at least one sample arrived; until then every estimate is derived from the hint
    /// ([`RttEstimator::with_hint`]) or [`INITIAL_RTT`].
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// Whether a sample or a hint says something about this path (not just [`INITIAL_RTT`]).
    pub fn is_known(&self) -> bool {
        self.smoothed.is_some() || self.hint.is_some()
    }

    /// The smoothed RTT (srtt, an EWMA with weight 1/8); before any sample the hint, if any, or
    /// [`INITIAL_RTT`].
    pub fn smoothed(&self) -> Duration {
        self.smoothed.or(self.hint).unwrap_or(INITIAL_RTT)
    }

    /// The most recent sample ([`INITIAL_RTT`] before any); the loss threshold uses it so a sudden
    /// rise in delay is not taken for loss.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// The smallest sample seen so far ([`INITIAL_RTT`] before any): the path's propagation delay
    /// as best known. A delivery-rate sample over a shorter interval is not taken.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The RTT variation (rttvar, an EWMA of |srtt - sample| with weight 1/4); it sizes the PTO.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// The time threshold for loss (RFC 9002 6.1.2): 9/8 * max(srtt, latest), at least 1 ms.
    pub fn loss_delay(&self) -> Duration {
        (self.smoothed().max(self.latest) * 9 / 8).max(GRANULARITY)
    }

    /// The probe timeout before backoff (RFC 9002 6.2.1 without max_ack_delay).
    pub fn pto(&self) -> Duration {
        self.smoothed() + (self.var * 4).max(GRANULARITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc9002_arithmetic() {
        let mut r = RttEstimator::default();
        assert_eq!(r.pto(), INITIAL_RTT + INITIAL_RTT * 2);
        r.on_sample(Duration::from_millis(100));
        assert_eq!(r.smoothed(), Duration::from_millis(100));
        assert_eq!(r.var(), Duration::from_millis(50));
        r.on_sample(Duration::from_millis(60));
        // srtt = 7/8*100 + 1/8*60 = 95; var = 3/4*50 + 1/4*40 = 47.5
        assert_eq!(r.smoothed(), Duration::from_millis(95));
        assert_eq!(r.var(), Duration::from_micros(47_500));
        assert_eq!(r.min(), Duration::from_millis(60));
        assert_eq!(r.loss_delay(), Duration::from_micros(106_875));
    }

    #[test]
    fn a_hint_stands_in_until_the_first_sample_replaces_it() {
        let mut r = RttEstimator::with_hint(Duration::from_millis(20));
        assert!(!r.has_sample() && r.is_known());
        assert_eq!(r.smoothed(), Duration::from_millis(20));
        assert_eq!(r.pto(), Duration::from_millis(60));
        r.on_sample(Duration::from_millis(30));
        assert_eq!((r.smoothed(), r.min()), (Duration::from_millis(30), Duration::from_millis(30)));
        assert_eq!(r.var(), Duration::from_millis(15));
    }

    #[test]
    fn pto_has_no_one_second_floor() {
        let mut r = RttEstimator::default();
        for _ in 0..50 {
            r.on_sample(Duration::from_millis(2));
        }
        assert!(r.pto() < Duration::from_millis(5), "{:?}", r.pto());
    }
}
