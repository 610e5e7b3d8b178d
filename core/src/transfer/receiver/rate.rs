//! Delivery-rate sampling: what each arriving part tells the congestion controller.
//!
//! draft-cheng-iccrg-delivery-rate-estimation, with parts for packets and the request's send time
//! for the packet's: every request remembers how much had been delivered, and since when, at the
//! time it was sent ([`SendState`]); when one of its parts arrives, the bytes delivered in between
//! over the longer of the send and the arrival spans give a rate sample. Samples shorter than the
//! minimum RTT are not taken, and samples taken while the receiver had too little left to ask for
//! to fill its window are marked app-limited. The first delivery of a part asked for after the
//! previous round's start was delivered starts a new round trip.
//!
//! The samples go to [`Controller::on_delivered`] with the RTT sample of the same arrival (RFC 9002
//! section 5).
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download: the congestion controller).
//!
//! [`Controller::on_delivered`]: crate::transfer::congestion::Controller::on_delivered
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download

use std::time::{Duration, Instant};

use crate::transfer::congestion::{Delivery, RateSample};

use super::Receiver;
use super::loss::Slot;

/// The delivery state as it was when a request went out, kept in each of its slots (the draft's
/// per-packet state).
#[derive(Debug, Clone, Copy)]
pub(super) struct SendState {
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited: bool,
}

/// The delivery state of the whole transfer (the draft's per-connection state).
#[derive(Debug)]
pub(super) struct RateSampler {
    /// Payload bytes delivered so far (of parts that answered the request of their slot).
    delivered: u64,
    /// When `delivered` last grew.
    delivered_time: Instant,
    /// When the request of the part delivered last went out.
    first_sent_time: Instant,
    /// A delivery of a part requested once this much was delivered starts a new round.
    next_round_delivered: u64,
    /// Samples are app-limited until `delivered` passes this.
    app_limited_until: u64,
}

impl RateSampler {
    /// Nothing delivered yet, at `now`.
    pub(super) fn new(now: Instant) -> Self {
        RateSampler {
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            next_round_delivered: 0,
            app_limited_until: 0,
        }
    }

    /// A request goes out at `now` with `in_flight` bytes outstanding before it; returns the
    /// state its slots keep.
    pub(super) fn on_send(&mut self, now: Instant, in_flight: u64) -> SendState {
        if in_flight == 0 {
            // Draft-cheng 3.2: a flight that starts from idle starts a fresh rate interval.
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        SendState {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            app_limited: self.app_limited_until > self.delivered,
        }
    }

    /// Not enough is left to ask for to fill the window: rate samples from now on, until what is
    /// in flight has been delivered, understate the path.
    pub(super) fn set_app_limited(&mut self, in_flight: u64) {
        self.app_limited_until = self.delivered + in_flight;
    }

    /// `len` bytes asked for at `sent` (with `at_send` kept then) arrived at `now`. Returns the
    /// rate sample, if one may be taken given the minimum RTT (`None`: no RTT sample yet), and
    /// whether this delivery starts a new round trip.
    fn on_delivered(
        &mut self,
        now: Instant,
        sent: Instant,
        len: u64,
        at_send: &SendState,
        min_rtt: Option<Duration>,
    ) -> (Option<RateSample>, bool) {
        self.delivered += len;
        self.delivered_time = now;
        let send_elapsed = sent.saturating_duration_since(at_send.first_sent_time);
        let ack_elapsed = now.saturating_duration_since(at_send.delivered_time);
        self.first_sent_time = sent;
        let interval = send_elapsed.max(ack_elapsed);
        let rate = (min_rtt.is_some_and(|min| interval >= min) && !interval.is_zero()).then_some(
            RateSample {
                delivered: self.delivered - at_send.delivered,
                interval,
                app_limited: at_send.app_limited,
            },
        );
        let round_start = at_send.delivered >= self.next_round_delivered;
        if round_start {
            self.next_round_delivered = self.delivered;
        }
        (rate, round_start)
    }
}

impl Receiver {
    /// The part of `slot` arrived at `now`, answering the request that asked for it (with `rtt`,
    /// that request's RTT sample if it had one): take the rate sample and tell the controller.
    pub(super) fn on_delivered(&mut self, now: Instant, slot: &Slot, rtt: Option<Duration>) {
        let min_rtt = self.rtt.has_sample().then(|| self.rtt.min());
        let len = u64::from(slot.len);
        let (rate, round_start) = self.rate.on_delivered(now, slot.sent, len, &slot.rate, min_rtt);
        self.controller.on_delivered(&Delivery {
            now,
            bytes: len,
            sent: slot.sent,
            rtt,
            rate,
            round_start,
            in_flight: self.in_flight,
            srtt: self.rtt.smoothed(),
            rttvar: self.rtt.var(),
        });
    }
}
