//! Building what the receiver sends: REQUESTs, their copies, and FINISHED.
//!
//! A request goes out when the pacer allows it and the congestion window has room for a batch
//! (about a millisecond of the pacing rate, see [`Pacer::batch_bytes`]). It asks for parts judged
//! lost first (they hold up the in-order prefix and the hash), then for parts never asked for, in
//! as few ranges as they make; each part gets a slot at its position for `loss`, with the delivery
//! state for `rate`. Every REQUEST is then sent [`ReceiverConfig::request_copies`] times in all,
//! back to back, with the same `req_seq`; once the download is complete, FINISHED goes out
//! [`FINISHED_COPIES`] times.
//!
//! In the tail, once every part has been asked for, a REQUEST of lost parts only is followed by
//! a second one for the same parts under the next `req_seq`. The server answers both, so each
//! repaired part comes twice. A lost repair in the tail costs a whole round trip more (few
//! parts come after it to reveal it early), and at 5% loss a tail of 40 repairs loses one of
//! them more often than not. Asked twice, a part is lost both times about once in 400 (both
//! askings are sent twice, so a lost REQUEST rarely matters), and a tail of 40 needs a second
//! round in about one download of ten. The parts move to the second asking's slots, so a lost
//! first answer is neither a loss nor a reason to ask a third time. The cost is the tail's
//! repairs sent twice, paced. Only while the download has lost at most one part in three: up to
//! that, asking the repairs twice costs at most half of the round trip it may save
//! ([`TAIL_REPAIR_MAX_LOSS`]). After a probe timeout only a tail of a few parts is asked for
//! twice ([`PROBED_TAIL_MAX_PARTS`]): a bigger one then most likely met a dead path, where a
//! second asking would only double the probes.
//!
//! Spec: `docs/PROTOCOL.md` [§2.2] (Datagrams: the REQUEST layout, `req_seq`, why a copy is free,
//! the per-request limits) and [§2.3] (The client's side of a download: paced requests, lost
//! parts first, FINISHED three times).
//!
//! [`ReceiverConfig::request_copies`]: super::ReceiverConfig::request_copies
//! [§2.2]: ../../../../docs/PROTOCOL.md#22-datagrams
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download

use std::time::{Duration, Instant};

use crate::transfer::pacing::Pacer;
use crate::wire::chat::EarlyFlight;
use crate::wire::datagram::{self, MAX_PARTS_PER_REQUEST, MAX_REQUEST_PAYLOAD, RANGE_LEN};
use crate::wire::sealed;

use super::loss::{Slot, Track};
use super::{EarlyAsked, Receiver, ReceiverState};

/// How many copies of FINISHED are sent: one lost FINISHED would hold the server's port for the
/// idle timeout, and three independent copies make that unlikely without any timer.
pub(super) const FINISHED_COPIES: u8 = 3;
/// The share of lost parts up to which the tail's repairs are asked for twice. Why a third: a
/// download that lost a share `f` of what it asked for has repairs of `f / (1 - f)` of what the
/// path carried; when the first flight is what was lost, a second asking costs about that share
/// of the time the flight took to arrive (a round trip and the queue it filled), while a repair
/// lost again costs such a round trip more. Up to a third, the second asking costs at most half of
/// it, so it pays whenever a repair is likely to be lost again (226 repairs at 1% loss: 9
/// downloads in 10). The first flight's repairs go at the rate it arrived
/// (`Bbr::in_first_flight`), so the second asking does not overflow the queue that dropped the
/// flight. The price is on a path with no random loss, where a repair is never lost again: a
/// flight that overflowed its queue by up to a third pays for nothing (the u9 transcript's
/// 200 KiB on a clean 100 Mbit/s, 10 ms path: 36 ms before, 39 ms after). At 100 Mbit/s, 50 ms
/// and 1% loss a flight loses 31% at the harness's 10 ms queue: with a tenth as the limit,
/// `natter get` of 1 MiB took 0.250-0.266 s there (medians of 16, three rounds), with a third
/// 0.240-0.246 s.
const TAIL_REPAIR_MAX_LOSS: f64 = 1.0 / 3.0;
/// The most parts a REQUEST sent after a probe timeout may ask for and still be asked for a
/// second time (see the module documentation).
///
/// Why: the last parts of a download are found lost only by the probe timeout (nothing comes
/// after them to reveal them), about three round trips while the round trip is little known,
/// and each lost repair of them doubles it. Of 100 downloads of 100 KiB at 5% loss, one such
/// tail often took longer than the other 99 together took to end (a capture of one `natter get`:
/// its last part asked for at 34, 65 and 141 ms). On a path that went dead in the tail the second
/// asking costs at most this many parts more per probe timeout, and the probe timeouts back off
/// (a path dead from the start has lost more than [`TAIL_REPAIR_MAX_LOSS`] of what was asked,
/// and gets no second asking at all).
const PROBED_TAIL_MAX_PARTS: usize = 16;
/// How many recent request send times are kept for RTT samples of late answers.
const REQUEST_TIMES_KEPT: usize = 4096;
/// How long after the offer a receiver waits for the first part of its early flight before it
/// takes the flight for blocked, at least (a quarter of the round trip if that is more): the
/// flight's first parts leave the server with the offer.
pub(super) const EARLY_CHECK: Duration = Duration::from_millis(3);

impl Receiver {
    /// The next copy of FINISHED, if one is due and `buf` holds it.
    pub(super) fn finished_copy(&mut self, buf: &mut [u8]) -> Option<usize> {
        // Sealed, every copy is the same bytes: an empty body under one nonce (PROTOCOL 2.7).
        let len =
            if self.config.seal.is_some() { sealed::FINISHED_LEN } else { datagram::FINISHED_LEN };
        if self.finished_left > 0 && buf.len() >= len {
            self.finished_left -= 1;
            return Some(match &self.config.seal {
                Some(key) => sealed::encode_finished(key, buf),
                None => datagram::encode_finished(self.config.token, buf),
            });
        }
        None
    }

    /// The next copy of the last REQUEST, if one is due. A copy that `buf` cannot hold is
    /// skipped, not kept for later.
    pub(super) fn request_copy(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.repeats_left > 0 && self.state == ReceiverState::Running {
            self.repeats_left -= 1;
            let n = self.repeat.len();
            if buf.len() >= n {
                buf[..n].copy_from_slice(&self.repeat);
                return Some(n);
            }
        }
        None
    }

    /// A new REQUEST, if pacing and the window allow one and there is something to ask for.
    pub(super) fn new_request(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if !self.pacer.can_send(now) {
            return None;
        }
        let need = self.request_need()?;
        let overhead = self.request_len(0);
        let max_ranges =
            (buf.len().saturating_sub(overhead) / RANGE_LEN).min(MAX_PARTS_PER_REQUEST);
        if self.config.seal.is_some() && self.progress.requests_sent > 0 && self.next_req_seq == 0 {
            // Sealed, a `req_seq` may not wrap: the server answers only a larger one, and a
            // repeated one would repeat nonces (PROTOCOL 2.7). 2^32 requests are used up.
            self.fail(super::TransferError::RequestsExhausted);
            return None;
        }
        if max_ranges == 0 {
            return None;
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        let mut parts: Vec<(u32, bool)> = Vec::new();
        let mut bytes = 0u64;
        while parts.len() < MAX_PARTS_PER_REQUEST && bytes < need {
            let Some((part, retransmit)) = self.next_wanted() else {
                break;
            };
            let len = self.layout.part_len(part) as u64;
            let extends = ranges.last().is_some_and(|&(_, last)| last.wrapping_add(1) == part);
            if (!extends && ranges.len() == max_ranges) || (bytes + len > need && bytes > 0) {
                self.unwant(part, retransmit);
                break;
            }
            add_to_ranges(&mut ranges, part);
            parts.push((part, retransmit));
            bytes += len;
        }
        if parts.is_empty() {
            return None;
        }
        let req_seq = self.take_req_seq(now);
        let tail_repair = self.unrequested_bytes == 0
            && (self.pto_count == 0 || parts.len() <= PROBED_TAIL_MAX_PARTS)
            && self.repairs_cheap_to_ask_twice()
            && parts.iter().all(|&(_, again)| again);
        let at_send = self.rate.on_send(now, self.in_flight);
        for (part, retransmit) in parts {
            let pos = self.base_pos + self.slots.len() as u64;
            let len = self.layout.part_len(part) as u32;
            self.slots.push_back(Slot {
                part,
                req_seq,
                sent: now,
                len,
                outstanding: true,
                rate: at_send,
            });
            self.track.insert(part, Track::InFlight(pos));
            self.in_flight += u64::from(len);
            if retransmit {
                self.progress.parts_retransmitted += 1;
            }
        }
        self.last_sent = Some(now);
        self.first_request.get_or_insert(now);
        self.progress.requests_sent += 1;
        let rate = self.pacing_rate();
        self.pacer.on_send(now, bytes, rate);
        self.controller.on_sent(now, bytes, self.in_flight);
        let n = self.encode_with_copies(req_seq, &ranges, buf);
        if tail_repair {
            self.tail_repair = ranges;
        }
        Some(n)
    }

    /// The tail's lost parts asked for a second time (see the module documentation), once the
    /// copies of the first asking are out. Each part still on its way moves to a new slot at
    /// this request's position: the server answers the first asking before the second, so the
    /// part is late, not lost, until the second's answers come. Its first answer settles the new
    /// slot as any answer to an earlier request does (the data is good, the timing is not this
    /// position's); a lost first answer is not counted as a loss. This REQUEST goes out right
    /// after the first asking's copies, without waiting for the pacer but charged to it, and is
    /// sent [`ReceiverConfig::request_copies`] times like any other.
    ///
    /// [`ReceiverConfig::request_copies`]: super::ReceiverConfig::request_copies
    pub(super) fn tail_repair_again(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.tail_repair.is_empty() {
            return None;
        }
        let first_asking = std::mem::take(&mut self.tail_repair);
        // Sealed, a `req_seq` may not wrap (PROTOCOL 2.7): if the first asking took the last
        // one, there is no second.
        let wrapped = self.config.seal.is_some() && self.next_req_seq == 0;
        if wrapped {
            return None;
        }
        // Only parts still on their way: one may have arrived, or been declared lost, since.
        let mut moving = Vec::new();
        for part in first_asking.iter().flat_map(|&(first, last)| first..=last) {
            if let Some(&Track::InFlight(pos)) = self.track.get(&part)
                && let Some(i) = pos.checked_sub(self.base_pos).map(|i| i as usize)
                && self.slots.get(i).is_some_and(|slot| slot.outstanding)
            {
                moving.push(i);
            }
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for &i in &moving {
            add_to_ranges(&mut ranges, self.slots[i].part);
        }
        if ranges.is_empty() || buf.len() < self.request_len(ranges.len()) {
            return None;
        }
        let req_seq = self.take_req_seq(now);
        let at_send = self.rate.on_send(now, self.in_flight);
        let mut bytes = 0u64;
        for i in moving {
            let old = &mut self.slots[i];
            old.outstanding = false;
            let mut slot = old.clone();
            slot.outstanding = true;
            slot.req_seq = req_seq;
            slot.sent = now;
            slot.rate = at_send;
            bytes += u64::from(slot.len);
            let pos = self.base_pos + self.slots.len() as u64;
            self.track.insert(slot.part, Track::InFlight(pos));
            self.slots.push_back(slot);
        }
        self.pop_settled();
        self.progress.requests_sent += 1;
        let rate = self.pacing_rate();
        self.pacer.on_send(now, bytes, rate);
        Some(self.encode_with_copies(req_seq, &ranges, buf))
    }

    /// Bytes a REQUEST of `n_ranges` ranges takes on the wire, sealed or not.
    fn request_len(&self, n_ranges: usize) -> usize {
        match self.config.seal {
            Some(_) => sealed::request_len(n_ranges),
            None => datagram::request_len(n_ranges),
        }
    }

    /// Writes the REQUEST `req_seq` for `ranges` into `buf` and keeps it for its
    /// [`ReceiverConfig::request_copies`]; returns its length. Sealed once: its copies are the
    /// same bytes, so its nonce seals one message (PROTOCOL 2.7).
    ///
    /// [`ReceiverConfig::request_copies`]: super::ReceiverConfig::request_copies
    fn encode_with_copies(&mut self, req_seq: u32, ranges: &[(u32, u32)], buf: &mut [u8]) -> usize {
        let n = match &self.config.seal {
            Some(key) => sealed::encode_request(key, req_seq, ranges, buf),
            None => datagram::encode_request(self.config.token, req_seq, ranges, buf),
        };
        self.repeats_left = self.config.request_copies.saturating_sub(1);
        if self.repeats_left > 0 {
            self.repeat.clear();
            self.repeat.extend_from_slice(&buf[..n]);
        }
        n
    }

    /// Whether this run of the download has lost few enough parts (at most
    /// [`TAIL_REPAIR_MAX_LOSS`] of those asked for, parts on disk at a resume not counted) that
    /// asking its tail's repairs twice costs at most half of the round trip it may save. A first
    /// flight far larger than a slow path, for one, loses much more: there the repairs are most
    /// of the file, and asking them twice would take longer than asking the few lost again.
    fn repairs_cheap_to_ask_twice(&self) -> bool {
        let lost = self.progress.parts_lost as f64;
        let arrived = self.map.count().saturating_sub(self.resumed_parts);
        let asked = lost + f64::from(arrived);
        lost <= TAIL_REPAIR_MAX_LOSS * asked
    }

    /// The next `req_seq`, its send time remembered for RTT samples of its answers.
    fn take_req_seq(&mut self, now: Instant) -> u32 {
        let req_seq = self.next_req_seq;
        self.next_req_seq = self.next_req_seq.wrapping_add(1);
        if self.req_times.len() == REQUEST_TIMES_KEPT {
            self.req_times.pop_front();
            self.req_times_base = self.req_times_base.wrapping_add(1);
        }
        self.req_times.push_back(now);
        req_seq
    }

    /// Counts the early flight (PROTOCOL 2.1) as the requests it stands for. The server answers
    /// it as early requests of [`EarlyFlight::PARTS_PER_REQUEST`] parts with `req_seq` 0, 1, ...,
    /// the first at once with the offer, then one part every `part_size / rate`; each part's slot
    /// is dated as if the client had asked for it when the server lets it out, less the half
    /// round trip the line took, so that its RTT sample and its loss timer are those of a part
    /// asked for by a REQUEST. Parts already on disk (a resume) get no slot: the server sends
    /// them all the same, and they arrive as duplicates.
    ///
    /// When the offer comes later than a round trip after the line (`now`, a TCP segment was
    /// lost on the way), the flight is dated from one round trip before the offer instead: the
    /// server sends it with the offer, and its parts may be waiting in the socket. Dated from the
    /// line, every timer would be overdue at once, and the whole flight asked for again before
    /// a single waiting part is read.
    ///
    /// Not one part of a flight may arrive at all: a firewall that drops datagrams nobody asked
    /// for, a NAT, a client that did not bind the socket. So if nothing has arrived
    /// [`EARLY_CHECK`] after the offer (the flight's first parts leave with it), the flight is
    /// asked for again at once instead of after a probe timeout, and the REQUEST opens the way.
    pub(super) fn expect_early(&mut self, early: EarlyAsked, now: Instant) {
        let flight = early.flight;
        let rtt = self.config.path_rtt.unwrap_or_default();
        // Later than a round trip and a half after the line: a TCP segment was lost on the way.
        let late = now > early.asked_at + rtt + rtt / 2;
        let asked_at = if late { now.checked_sub(rtt).unwrap_or(now) } else { early.asked_at };
        let early = EarlyAsked { asked_at, ..early };
        if late {
            // Parts that waited in the socket would read as a round trip of almost nothing.
            self.unsampled_requests = flight.requests();
        }
        let check = now + self.early_check_delay();
        self.early_check = Some(check);
        self.early_check_latest = Some(check + rtt);
        let per_part = Duration::from_secs_f64(
            f64::from(self.layout.part_size) / f64::from(flight.rate.max(1)),
        );
        let released = |part: u32| {
            early.asked_at + per_part * (part + 1).saturating_sub(EarlyFlight::PARTS_PER_REQUEST)
        };
        let mut bytes = 0u64;
        for req_seq in 0..flight.requests() {
            let first = req_seq * EarlyFlight::PARTS_PER_REQUEST;
            let end = (first + EarlyFlight::PARTS_PER_REQUEST).min(flight.parts);
            self.req_times.push_back(released(first));
            let at_send = self.rate.on_send(released(first), self.in_flight);
            for part in (first..end).filter(|&p| !self.map.has(p)) {
                let pos = self.base_pos + self.slots.len() as u64;
                let len = self.layout.part_len(part) as u32;
                self.slots.push_back(Slot {
                    part,
                    req_seq,
                    sent: released(part),
                    len,
                    outstanding: true,
                    rate: at_send,
                });
                self.track.insert(part, Track::InFlight(pos));
                self.in_flight += u64::from(len);
                self.unrequested_bytes -= u64::from(len);
                bytes += u64::from(len);
            }
        }
        self.next_req_seq = flight.requests();
        self.next_new = flight.parts;
        if bytes > 0 {
            self.last_sent = Some(released(flight.parts - 1));
            self.first_request = Some(early.asked_at);
            self.controller.on_sent(early.asked_at, bytes, self.in_flight);
        }
    }

    /// How long after the offer an early flight's check comes: [`EARLY_CHECK`], or a quarter of
    /// the round trip if that is more.
    fn early_check_delay(&self) -> Duration {
        EARLY_CHECK.max(self.config.path_rtt.unwrap_or_default() / 4)
    }

    /// This flight's check, if still to come, comes no sooner than `until`: the session's
    /// early-flight socket still holds datagrams the runtime has not read, and some may be this
    /// flight's (see `ClientDriver::early_socket_read`). But no later than a round trip after
    /// it was due: a socket that never empties (a flood of datagrams from anywhere) must not put
    /// it off for ever.
    pub(crate) fn defer_early_check(&mut self, until: Instant) {
        if let (Some(at), Some(latest)) = (&mut self.early_check, self.early_check_latest) {
            *at = (*at).max(until.min(latest));
        }
    }

    /// An early flight of which nothing has arrived by its check is asked for again: every part
    /// of it still outstanding is queued as lost. The controller is not told: nothing was asked
    /// of the path that it dropped for congestion.
    pub(super) fn check_early_flight(&mut self, now: Instant) {
        if self.early_check.is_none_or(|at| now < at) {
            return;
        }
        self.early_check = None;
        self.early_arrived = Some(self.any_part_arrived);
        if self.any_part_arrived {
            return;
        }
        for i in 0..self.slots.len() {
            if self.slots[i].outstanding {
                self.give_up_slot(i);
            }
        }
        self.pop_settled();
    }

    /// When the request `req_seq` was sent, if it is recent enough to be remembered.
    pub(super) fn request_time(&self, req_seq: u32) -> Option<Instant> {
        let i = req_seq.wrapping_sub(self.req_times_base) as usize;
        self.req_times.get(i).copied()
    }

    /// The controller's pacing rate; none while the RTT is unknown (no sample, no hint from the
    /// chat connection), so the initial window goes out at once (RFC 9002 7.2) instead of being
    /// spread over a 333 ms guess of the RTT.
    fn pacing_rate(&self) -> Option<f64> {
        if self.rtt.is_known() { self.controller.pacing_rate(self.rtt.smoothed()) } else { None }
    }

    /// Bytes the next request should ask for, if one may be sent now apart from pacing.
    fn request_need(&mut self) -> Option<u64> {
        if self.state != ReceiverState::Running || self.map.is_complete() {
            return None;
        }
        let wanting = self.lost_bytes + self.unrequested_bytes;
        if wanting == 0 {
            return None;
        }
        let window = self.controller.window();
        let rate = self.pacing_rate();
        let part = u64::from(self.layout.part_size);
        let batch = Pacer::batch_bytes(rate, part, window).min(MAX_REQUEST_PAYLOAD);
        let need = batch.min(wanting);
        let room = window.saturating_sub(self.in_flight);
        if room < need {
            return None;
        }
        if wanting < batch && room >= batch {
            // Not enough left to fill the window: rate samples from now on understate the path.
            self.rate.set_app_limited(self.in_flight);
        }
        Some(need)
    }

    /// Side-effect free version of the `request_need` check, for `poll_timeout`.
    pub(super) fn wants_to_send(&self) -> bool {
        if self.map.is_complete() || self.lost_bytes + self.unrequested_bytes == 0 {
            return false;
        }
        let window = self.controller.window();
        let rate = self.pacing_rate();
        let batch = Pacer::batch_bytes(rate, u64::from(self.layout.part_size), window)
            .min(MAX_REQUEST_PAYLOAD);
        let need = batch.min(self.lost_bytes + self.unrequested_bytes);
        window.saturating_sub(self.in_flight) >= need
    }

    /// The next part to ask for: parts judged lost first (they hold up the in-order prefix and the
    /// hash), then parts never asked for.
    fn next_wanted(&mut self) -> Option<(u32, bool)> {
        while let Some(part) = self.lost_queue.pop_front() {
            if self.track.get(&part) == Some(&Track::Queued) {
                self.track.remove(&part);
                self.lost_bytes -= self.layout.part_len(part) as u64;
                return Some((part, true));
            }
        }
        let part = self.map.next_missing(self.next_new)?;
        self.next_new = part + 1;
        self.unrequested_bytes -= self.layout.part_len(part) as u64;
        Some((part, false))
    }

    /// Puts back a part [`Receiver::next_wanted`] handed out but the request had no room for.
    fn unwant(&mut self, part: u32, retransmit: bool) {
        let len = self.layout.part_len(part) as u64;
        if retransmit {
            self.track.insert(part, Track::Queued);
            self.lost_queue.push_front(part);
            self.lost_bytes += len;
        } else {
            self.next_new = part;
            self.unrequested_bytes += len;
        }
    }
}

#[cfg(test)]
#[path = "../../../tests/unit/receiver_requests.rs"]
mod tests;

/// Adds `part` to `ranges`: it extends the last range when it follows it, else starts one.
fn add_to_ranges(ranges: &mut Vec<(u32, u32)>, part: u32) {
    match ranges.last_mut() {
        Some((_, last)) if last.wrapping_add(1) == part => *last = part,
        _ => ranges.push((part, part)),
    }
}
