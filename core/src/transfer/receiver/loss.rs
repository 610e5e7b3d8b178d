//! Loss detection: which requested parts are lost, and when to look again.
//!
//! RFC 9002 section 6 applied to parts instead of packets. Every part asked for gets a *slot* at a
//! position, in the order the server will send it (it answers requests in order and ranges in
//! order), like a QUIC packet number:
//!
//! - a part is lost when a part [`PACKET_THRESHOLD`] positions later has arrived (RFC 9002 6.1.1),
//!   or when a later one has arrived and it was asked for more than 9/8 x max(srtt, latest RTT)
//!   ago (6.1.2); the loss timer is armed for the earliest part that may still become lost by
//!   time;
//! - when nothing arrives at all (a lost tail, a blackhole) the probe timeout (6.2) fires after
//!   srtt + 4 rttvar, doubling each time up to [`MAX_PTO`]; everything outstanding is then
//!   declared lost (persistently from the third PTO in a row, 7.6) and so asked for again.
//!
//! Parts declared lost wait in the lost queue, which `requests` empties first.
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download: the thresholds and the 2 s
//! cap) and [§2.6] (Timeouts: why the cap is well under the server's 10 s).
//!
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download
//! [§2.6]: ../../../../docs/PROTOCOL.md#26-timeouts-and-how-a-transfer-ends

use std::time::{Duration, Instant};

use super::Receiver;
use super::rate::SendState;

/// RFC 9002 kPacketThreshold.
const PACKET_THRESHOLD: u64 = 3;
/// The probe timeout backs off exponentially (RFC 9002 6.2) but not beyond this (unless one PTO is
/// already longer): the server frees a transfer after 10 s without a valid request, so the gaps
/// between our probes must stay well under that, and a path that comes back after a long outage
/// (TEST-CATALOGUE U4: a 5 s blackhole) is noticed within 2 s, not 16. One window of requests
/// every 2 s is no flood, all the more as the controllers collapse their window on persistent loss.
const MAX_PTO: Duration = Duration::from_secs(2);

/// One requested part, at its position.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) part: u32,
    pub(super) req_seq: u32,
    pub(super) sent: Instant,
    pub(super) len: u32,
    pub(super) outstanding: bool,
    /// Delivery-rate state at the time of the request.
    pub(super) rate: SendState,
}

/// Where a part that is wanted but has not arrived stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Track {
    /// Outstanding at this position.
    InFlight(u64),
    /// Declared lost, waiting in `lost_queue` to be asked for again.
    Queued,
}

impl Receiver {
    /// The part at `pos` arrived, answering `req_seq`: its slot is no longer outstanding. Returns
    /// the slot when the answer is to the request that placed it there, and only then moves the
    /// largest arrived position (RFC 9002's largest acknowledged): an answer to an earlier request
    /// says nothing about this position's timing.
    pub(super) fn on_slot_arrived(&mut self, pos: u64, req_seq: u32) -> Option<Slot> {
        let slot = pos.checked_sub(self.base_pos).and_then(|i| self.slots.get_mut(i as usize))?;
        slot.outstanding = false;
        let slot = slot.clone();
        self.in_flight -= u64::from(slot.len);
        if slot.req_seq != req_seq {
            // The answer to an earlier request for this part, judged lost too early: the data is
            // good, but it says nothing about this position's timing.
            return None;
        }
        self.largest_arrived = Some(self.largest_arrived.map_or(pos, |l| l.max(pos)));
        Some(slot)
    }

    /// RFC 9002 6.1: declare lost what the packet or time threshold says is lost, and arm the
    /// loss timer for the earliest part that may become lost by time.
    pub(super) fn detect_lost(&mut self, now: Instant) {
        self.loss_time = None;
        let Some(largest) = self.largest_arrived else {
            return;
        };
        let delay = self.rtt.loss_delay();
        let mut i = 0;
        while i < self.slots.len() {
            let pos = self.base_pos + i as u64;
            if pos >= largest {
                break;
            }
            let slot = &self.slots[i];
            if slot.outstanding {
                if pos + PACKET_THRESHOLD <= largest || slot.sent + delay <= now {
                    self.declare_lost(i, now, false);
                } else {
                    self.loss_time = Some(slot.sent + delay);
                    break;
                }
            }
            i += 1;
        }
        self.pop_settled();
    }

    fn declare_lost(&mut self, i: usize, now: Instant, persistent: bool) {
        let (len, sent) = self.give_up_slot(i);
        self.controller.on_lost(now, len, sent, persistent);
    }

    /// The part at slot `i` will not come: it leaves the flight and, unless it is here after
    /// all, waits to be asked for again. Returns its length and when it was asked for.
    pub(super) fn give_up_slot(&mut self, i: usize) -> (u64, Instant) {
        let slot = &mut self.slots[i];
        slot.outstanding = false;
        let (part, len, sent) = (slot.part, u64::from(slot.len), slot.sent);
        self.in_flight -= len;
        self.progress.parts_lost += 1;
        if !self.map.has(part) {
            self.track.insert(part, Track::Queued);
            self.lost_queue.push_back(part);
            self.lost_bytes += len;
        }
        (len, sent)
    }

    pub(super) fn pop_settled(&mut self) {
        while self.slots.front().is_some_and(|s| !s.outstanding) {
            self.slots.pop_front();
            self.base_pos += 1;
        }
    }

    /// When the loss timer or, if it is not armed, the probe timer fires.
    pub(super) fn loss_deadline(&self) -> Option<Instant> {
        self.loss_time.or_else(|| self.pto_deadline())
    }

    /// Runs the loss timer or, if it is not armed, the probe timer, if it is due.
    pub(super) fn on_loss_timeout(&mut self, now: Instant) {
        if let Some(lt) = self.loss_time {
            if now >= lt {
                self.detect_lost(now);
            }
        } else if self.pto_deadline().is_some_and(|t| now >= t) {
            self.on_pto(now);
        }
    }

    fn pto_deadline(&self) -> Option<Instant> {
        if self.in_flight == 0 {
            return None;
        }
        let pto = self.rtt.pto();
        let backed_off = (pto * (1u32 << self.pto_count.min(10))).min(MAX_PTO.max(pto));
        Some(self.last_sent? + backed_off)
    }

    /// The probe timer fired: nothing has arrived for a PTO. Ask again for everything outstanding
    /// (the requests or all their answers are gone) and back off.
    fn on_pto(&mut self, now: Instant) {
        self.pto_count += 1;
        self.progress.probe_timeouts += 1;
        let persistent = self.pto_count >= 3;
        for i in 0..self.slots.len() {
            if self.slots[i].outstanding {
                self.declare_lost(i, now, persistent);
            }
        }
        self.pop_settled();
    }
}
