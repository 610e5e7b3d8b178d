//! One transfer, client side: what to ask for, when, and when a part is lost.
//!
//! The receiver is the active end (PROTOCOL.md 2.3). It keeps a window of requested-but-unanswered
//! parts sized by a congestion [`Controller`], asks for them in paced batches ([`Pacer`]), and
//! detects loss as RFC 9002 section 6 does for packets:
//!
//! - every part it asks for gets a *position*, in the order the server will send it (the server
//!   answers requests in order and ranges in order), like a QUIC packet number;
//! - a part is lost when a part 3 positions later has arrived (packet threshold), or when a later
//!   one has arrived and it was asked for more than 9/8 x max(srtt, latest RTT) ago (time
//!   threshold);
//! - when nothing arrives at all (a lost tail, a blackhole) the probe timeout fires after
//!   srtt + 4 rttvar, doubling each time; everything outstanding is then asked for again.
//!
//! Each REQUEST goes out twice by default ([`ReceiverConfig::request_copies`]): the server answers
//! a `req_seq` once, so the copy costs nothing but a small datagram and saves a lost request's
//! whole batch.
//!
//! Only parts judged lost are asked for again; duplicates and corrupt parts are dropped. Every part
//! is checked against the offer (token, CRC, index, exact size) before its bytes are accepted, and
//! the whole file against the BLAKE3 digest of the offer, hashed in order as the prefix grows so no
//! second pass over the file is needed at the end.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::transfer::congestion::{
    Controller, ControllerKind, Delivery, RateSample, new_controller,
};
use crate::transfer::pacing::Pacer;
use crate::transfer::parts::{Layout, PartMap, ResumeError};
use crate::transfer::rtt::RttEstimator;
use crate::wire::datagram::{
    self, AbortCode, Datagram, MAX_PARTS_PER_REQUEST, MAX_REQUEST_PAYLOAD, PART_HEADER_LEN,
    RANGE_LEN, REQUEST_HEADER_LEN,
};

/// RFC 9002 kPacketThreshold.
const PACKET_THRESHOLD: u64 = 3;
/// How many copies of FINISHED are sent: one lost FINISHED would hold the server's port for the
/// idle timeout, and three independent copies make that unlikely without any timer.
const FINISHED_COPIES: u8 = 3;
/// How many recent request send times are kept for RTT samples of late answers.
const REQUEST_TIMES_KEPT: usize = 4096;
/// The probe timeout backs off exponentially (RFC 9002 6.2) but not beyond this (unless one PTO is
/// already longer): the server frees a transfer after 10 s without a valid request, so the gaps
/// between our probes must stay well under that, and a path that comes back after a long outage
/// (TEST-CATALOGUE U4: a 5 s blackhole) is noticed within 2 s, not 16. One window of requests
/// every 2 s is no flood, all the more as the controllers collapse their window on persistent loss.
const MAX_PTO: Duration = Duration::from_secs(2);
/// Default for [`ReceiverConfig::request_copies`].
pub const DEFAULT_REQUEST_COPIES: u8 = 2;
/// Default for [`ReceiverConfig::give_up_after`].
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// The largest chunk [`Receiver::next_to_hash`] asks for, so a runtime reading back its `.part`
/// file needs a bounded buffer.
pub const HASH_CHUNK: usize = 1 << 20;
/// Longest ABORT reason kept from the server (it is shown to a person).
const MAX_REASON_CHARS: usize = 200;

/// What the receiver knows from the offer, and how to behave.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub token: u64,
    pub size: u64,
    pub part_size: u16,
    pub blake3: [u8; 32],
    pub controller: ControllerKind,
    /// Fail with [`TransferError::NoProgress`] when no new part arrived for this long.
    pub give_up_after: Duration,
    /// How many identical copies of each REQUEST are sent, back to back (1 or more).
    ///
    /// Why more than one: a lost REQUEST loses its whole batch (up to a millisecond of the rate,
    /// ~100 parts at 1 Gbit/s), so on a path with 5% loss each way a third to a half of all
    /// lost parts were lost *requests*, each costing a loss-detection delay and a retransmission
    /// round. The server answers a `req_seq` once and ignores anything not newer (PROTOCOL 2.2),
    /// so a second copy can never multiply traffic: it is answered only when the first was lost.
    /// Two copies turn a 5% request loss into 0.25% for ~30 upstream bytes per request.
    pub request_copies: u8,
    /// How often, while new parts arrive, a [`ReceiverEvent::Checkpoint`] says that a resume
    /// record is due; `None`: never (a caller with nowhere to keep one).
    pub checkpoint_every: Option<Duration>,
}

impl ReceiverConfig {
    /// A config with the default controller and give-up time.
    pub fn new(token: u64, size: u64, part_size: u16, blake3: [u8; 32]) -> Self {
        ReceiverConfig {
            token,
            size,
            part_size,
            blake3,
            controller: ControllerKind::default(),
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            request_copies: DEFAULT_REQUEST_COPIES,
            checkpoint_every: None,
        }
    }
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransferError {
    #[error("the downloaded file does not match the offered BLAKE3 digest")]
    DigestMismatch,
    #[error("the server aborted the transfer: {code}: {reason}")]
    Aborted { code: AbortCode, reason: String },
    #[error("no progress for {0:?}: the server or the path is gone")]
    NoProgress(Duration),
}

/// Where a download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverState {
    Running,
    /// Every part arrived and the digest matched; FINISHED is being sent.
    Complete,
    Failed(TransferError),
}

/// What happened to a download that its owner must act on; drained with
/// [`Receiver::poll_event`] after every input and timeout. Each is reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// Every part arrived and the digest matched; FINISHED goes out through `poll_transmit`.
    Complete,
    /// The download failed; nothing more is sent.
    Failed(TransferError),
    /// U5: not one part arrived in [`LARGE_PART_PATIENCE`] with parts larger than
    /// [`SAFE_PART_SIZE`] (see [`Receiver::parts_too_large`]). The receiver keeps running; its
    /// owner decides whether to ask for the file again with small parts.
    PartsTooLarge,
    /// New parts arrived since the last checkpoint and [`ReceiverConfig::checkpoint_every`] has
    /// passed: save [`Receiver::save_state`] beside the `.part` file.
    Checkpoint,
}

/// A new part was accepted: write `buf[payload]` at `offset` in the `.part` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    pub part: u32,
    pub offset: u64,
    pub payload: Range<usize>,
}

/// Counters and estimates, for progress bars, logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub bytes_received: u64,
    pub size: u64,
    pub parts_received: u32,
    pub n_parts: u32,
    /// Parts declared lost (each re-request counts once).
    pub parts_lost: u64,
    /// Parts asked for again.
    pub parts_retransmitted: u64,
    /// Parts that arrived a second time.
    pub duplicates: u64,
    /// Datagrams dropped: unparsable, corrupt, wrong token or impossible for the offer.
    pub dropped: u64,
    pub requests_sent: u64,
    pub probe_timeouts: u64,
    pub srtt: Option<Duration>,
    pub min_rtt: Option<Duration>,
    pub window: u64,
    pub in_flight: u64,
    /// The controller's bottleneck bandwidth estimate, bytes per second.
    pub bandwidth: Option<f64>,
}

/// One requested part, at its position.
#[derive(Debug, Clone)]
struct Slot {
    part: u32,
    req_seq: u32,
    sent: Instant,
    len: u32,
    outstanding: bool,
    // Delivery-rate state at the time of the request (draft-cheng-iccrg-delivery-rate-estimation).
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    /// Outstanding at this position.
    InFlight(u64),
    /// Declared lost, waiting in `lost_queue` to be asked for again.
    Queued,
}

/// A part size every path carries: 1200 bytes of payload and 74 of headers fit IPv6's minimum
/// MTU of 1280 (QUIC's reasoning).
pub const SAFE_PART_SIZE: u16 = 1200;

/// How long a download of large parts waits for its first part before concluding that the path
/// drops datagrams that large (U5). Dozens of round trips on any real path, and short enough that
/// the person waiting notices little.
pub const LARGE_PART_PATIENCE: Duration = Duration::from_secs(2);

/// One download, client side. See the module documentation.
#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    layout: Layout,
    map: PartMap,
    hasher: blake3::Hasher,
    hashed: u64,
    state: ReceiverState,
    controller: Box<dyn Controller>,
    rtt: RttEstimator,
    pacer: Pacer,
    next_req_seq: u32,
    /// Send times of recent requests; index 0 is `req_times_base`.
    req_times: VecDeque<Instant>,
    req_times_base: u32,
    slots: VecDeque<Slot>,
    /// Position of `slots[0]`.
    base_pos: u64,
    largest_arrived: Option<u64>,
    track: HashMap<u32, Track>,
    lost_queue: VecDeque<u32>,
    lost_bytes: u64,
    /// Every part below this has been requested at least once (or had arrived at resume).
    next_new: u32,
    unrequested_bytes: u64,
    in_flight: u64,
    loss_time: Option<Instant>,
    pto_count: u32,
    last_sent: Option<Instant>,
    // Delivery-rate estimation.
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    next_round_delivered: u64,
    app_limited_until: u64,
    last_progress: Instant,
    finished_left: u8,
    progress: Progress,
    /// When the first REQUEST of this run went out, and whether any part has arrived since:
    /// together they tell a path that drops large datagrams (U5).
    first_request: Option<Instant>,
    any_part_arrived: bool,
    /// The last REQUEST sent and how many more copies of it are due (see
    /// [`ReceiverConfig::request_copies`]).
    repeat: Vec<u8>,
    repeats_left: u8,
    events: VecDeque<ReceiverEvent>,
    too_large_reported: bool,
    /// Parts arrived since the last checkpoint, and when that was.
    dirty: bool,
    last_checkpoint: Instant,
}

impl Receiver {
    /// A fresh download.
    pub fn new(config: ReceiverConfig, now: Instant) -> Self {
        let layout = Layout::new(config.size, config.part_size);
        Self::with_map(config, now, PartMap::new(layout))
    }

    /// A download that continues from a record written by [`Receiver::save_state`]; refused when
    /// the record belongs to another offer (digest, size or part size differ).
    pub fn resume(config: ReceiverConfig, now: Instant, saved: &[u8]) -> Result<Self, ResumeError> {
        let layout = Layout::new(config.size, config.part_size);
        let map = PartMap::load(layout, &config.blake3, saved)?;
        Ok(Self::with_map(config, now, map))
    }

    fn with_map(config: ReceiverConfig, now: Instant, map: PartMap) -> Self {
        let layout = map.layout();
        let controller = new_controller(config.controller, layout.part_size);
        let mut r = Receiver {
            unrequested_bytes: layout.size - map.bytes(),
            layout,
            map,
            hasher: blake3::Hasher::new(),
            hashed: 0,
            state: ReceiverState::Running,
            controller,
            rtt: RttEstimator::default(),
            pacer: Pacer::default(),
            next_req_seq: 0,
            req_times: VecDeque::new(),
            req_times_base: 0,
            slots: VecDeque::new(),
            base_pos: 0,
            largest_arrived: None,
            track: HashMap::new(),
            lost_queue: VecDeque::new(),
            lost_bytes: 0,
            next_new: 0,
            in_flight: 0,
            loss_time: None,
            pto_count: 0,
            last_sent: None,
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            next_round_delivered: 0,
            app_limited_until: 0,
            last_progress: now,
            finished_left: 0,
            progress: Progress::default(),
            first_request: None,
            any_part_arrived: false,
            repeat: Vec::new(),
            repeats_left: 0,
            events: VecDeque::new(),
            too_large_reported: false,
            dirty: false,
            last_checkpoint: now,
            config,
        };
        r.check_complete();
        r
    }

    /// U5: whether this download asks for parts larger than [`SAFE_PART_SIZE`] and not one has
    /// arrived in [`LARGE_PART_PATIENCE`] since the first request. Then the path drops datagrams
    /// that large (a smaller MTU past the first hop, or a firewall that drops fragments), and the
    /// runtime should ask for a new offer with [`SAFE_PART_SIZE`] instead of waiting to give up.
    /// A path that drops everything also says yes; the retry with small parts then fails on its own.
    pub fn parts_too_large(&self, now: Instant) -> bool {
        self.config.part_size > SAFE_PART_SIZE
            && !self.any_part_arrived
            && self.state == ReceiverState::Running
            && self
                .first_request
                .is_some_and(|at| now.saturating_duration_since(at) >= LARGE_PART_PATIENCE)
    }

    /// The resume record for the `.part` file's side-car (see [`PartMap::save`]).
    pub fn save_state(&self) -> Vec<u8> {
        self.map.save(&self.config.blake3)
    }

    /// Complete, with FINISHED copies still to send: the socket must stay open until they are out.
    pub fn is_finishing(&self) -> bool {
        self.state == ReceiverState::Complete && self.finished_left > 0
    }

    pub fn state(&self) -> ReceiverState {
        self.state.clone()
    }

    pub fn progress(&self) -> Progress {
        Progress {
            bytes_received: self.map.bytes(),
            size: self.layout.size,
            parts_received: self.map.count(),
            n_parts: self.layout.n_parts(),
            srtt: self.rtt.has_sample().then(|| self.rtt.smoothed()),
            min_rtt: self.rtt.has_sample().then(|| self.rtt.min()),
            window: self.controller.window(),
            in_flight: self.in_flight,
            bandwidth: self.controller.bandwidth(),
            ..self.progress.clone()
        }
    }

    /// A datagram arrived from the server. On an acceptable new PART, returns where its payload
    /// goes; the runtime writes `buf[payload]` at `offset`, then feeds the hash (see
    /// [`Receiver::next_to_hash`]) and calls [`Receiver::poll_transmit`].
    pub fn handle_datagram(&mut self, now: Instant, buf: &[u8]) -> Option<Accept> {
        if self.state != ReceiverState::Running {
            return None;
        }
        let dgram = match datagram::parse(buf) {
            Ok(d) if d.token() == self.config.token => d,
            _ => {
                self.progress.dropped += 1;
                return None;
            }
        };
        match dgram {
            Datagram::Part(p) => self.on_part(now, p.req_seq, p.part, p.data.len()),
            Datagram::Abort(a) => {
                let reason: String = a
                    .reason
                    .chars()
                    .take(MAX_REASON_CHARS)
                    .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                    .collect();
                self.fail(TransferError::Aborted { code: a.code, reason });
                None
            }
            Datagram::Request(_) | Datagram::Finished { .. } => {
                self.progress.dropped += 1;
                None
            }
        }
    }

    fn on_part(&mut self, now: Instant, req_seq: u32, part: u32, len: usize) -> Option<Accept> {
        self.any_part_arrived = true;
        // Impossible for the offer: dropped as if lost (PROTOCOL.md 2.2).
        if part >= self.layout.n_parts() || len != self.layout.part_len(part) {
            self.progress.dropped += 1;
            return None;
        }
        if !self.map.insert(part) {
            self.progress.duplicates += 1;
            return None;
        }
        self.last_progress = now;
        self.pto_count = 0;
        let req_sent = self.request_time(req_seq);
        let rtt = req_sent.map(|sent| now.saturating_duration_since(sent));
        if let Some(rtt) = rtt {
            self.rtt.on_sample(rtt);
        }
        match self.track.remove(&part) {
            Some(Track::InFlight(pos)) => self.on_slot_arrived(now, pos, req_seq, rtt),
            Some(Track::Queued) => self.lost_bytes -= len as u64,
            // Never asked for (or asked in an earlier life before a resume): the bytes are
            // checked all the same and the digest guards the whole file.
            None => {
                if part >= self.next_new {
                    self.unrequested_bytes -= len as u64;
                }
            }
        }
        self.detect_lost(now);
        self.dirty = true;
        self.maybe_checkpoint(now);
        Some(Accept {
            part,
            offset: self.layout.offset(part),
            payload: PART_HEADER_LEN..PART_HEADER_LEN + len,
        })
    }

    fn on_slot_arrived(&mut self, now: Instant, pos: u64, req_seq: u32, rtt: Option<Duration>) {
        let Some(slot) =
            pos.checked_sub(self.base_pos).and_then(|i| self.slots.get_mut(i as usize))
        else {
            return;
        };
        slot.outstanding = false;
        let slot = slot.clone();
        self.in_flight -= u64::from(slot.len);
        if slot.req_seq != req_seq {
            // The answer to an earlier request for this part, judged lost too early: the data is
            // good, but it says nothing about this position's timing.
            return;
        }
        self.largest_arrived = Some(self.largest_arrived.map_or(pos, |l| l.max(pos)));
        self.delivered += u64::from(slot.len);
        self.delivered_time = now;
        let send_elapsed = slot.sent.saturating_duration_since(slot.first_sent_time);
        let ack_elapsed = now.saturating_duration_since(slot.delivered_time);
        self.first_sent_time = slot.sent;
        let interval = send_elapsed.max(ack_elapsed);
        let rate = (self.rtt.has_sample() && interval >= self.rtt.min() && !interval.is_zero())
            .then_some(RateSample {
                delivered: self.delivered - slot.delivered,
                interval,
                app_limited: slot.app_limited,
            });
        let round_start = slot.delivered >= self.next_round_delivered;
        if round_start {
            self.next_round_delivered = self.delivered;
        }
        self.controller.on_delivered(&Delivery {
            now,
            bytes: u64::from(slot.len),
            sent: slot.sent,
            rtt,
            rate,
            round_start,
            in_flight: self.in_flight,
            srtt: self.rtt.smoothed(),
        });
    }

    fn request_time(&self, req_seq: u32) -> Option<Instant> {
        let i = req_seq.wrapping_sub(self.req_times_base) as usize;
        self.req_times.get(i).copied()
    }

    /// RFC 9002 6.1: declare lost what the packet or time threshold says is lost, and arm the
    /// loss timer for the earliest part that may become lost by time.
    fn detect_lost(&mut self, now: Instant) {
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
        let slot = &mut self.slots[i];
        slot.outstanding = false;
        let (part, len, sent) = (slot.part, u64::from(slot.len), slot.sent);
        self.in_flight -= len;
        self.progress.parts_lost += 1;
        self.controller.on_lost(now, len, sent, persistent);
        if !self.map.has(part) {
            self.track.insert(part, Track::Queued);
            self.lost_queue.push_back(part);
            self.lost_bytes += len;
        }
    }

    fn pop_settled(&mut self) {
        while self.slots.front().is_some_and(|s| !s.outstanding) {
            self.slots.pop_front();
            self.base_pos += 1;
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

    /// The controller's pacing rate; none before the first RTT sample, so the initial window
    /// goes out at once (RFC 9002 7.2) instead of being spread over a 333 ms guess of the RTT.
    fn pacing_rate(&self) -> Option<f64> {
        if self.rtt.has_sample() { self.controller.pacing_rate(self.rtt.smoothed()) } else { None }
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
            self.app_limited_until = self.delivered + self.in_flight;
        }
        Some(need)
    }

    /// The next REQUEST (or FINISHED) to send now, written into `buf`; returns its length. Call
    /// after every input and timeout until `None`. `buf` should hold
    /// [`datagram::MAX_REQUEST_LEN`] bytes (a smaller one limits the ranges per request).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.state == ReceiverState::Complete {
            if self.finished_left > 0 && buf.len() >= datagram::HEADER_LEN {
                self.finished_left -= 1;
                return Some(datagram::encode_finished(self.config.token, buf));
            }
            return None;
        }
        if self.repeats_left > 0 && self.state == ReceiverState::Running {
            self.repeats_left -= 1;
            let n = self.repeat.len();
            if buf.len() >= n {
                buf[..n].copy_from_slice(&self.repeat);
                return Some(n);
            }
        }
        if !self.pacer.can_send(now) {
            return None;
        }
        let need = self.request_need()?;
        let max_ranges =
            (buf.len().saturating_sub(REQUEST_HEADER_LEN) / RANGE_LEN).min(MAX_PARTS_PER_REQUEST);
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
            match ranges.last_mut() {
                Some((_, last)) if extends => *last = part,
                _ => ranges.push((part, part)),
            }
            parts.push((part, retransmit));
            bytes += len;
        }
        if parts.is_empty() {
            return None;
        }
        let req_seq = self.next_req_seq;
        self.next_req_seq = self.next_req_seq.wrapping_add(1);
        if self.req_times.len() == REQUEST_TIMES_KEPT {
            self.req_times.pop_front();
            self.req_times_base = self.req_times_base.wrapping_add(1);
        }
        self.req_times.push_back(now);
        if self.in_flight == 0 {
            // Draft-cheng 3.2: a flight that starts from idle starts a fresh rate interval.
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        let app_limited = self.app_limited_until > self.delivered;
        for (part, retransmit) in parts {
            let pos = self.base_pos + self.slots.len() as u64;
            let len = self.layout.part_len(part) as u32;
            self.slots.push_back(Slot {
                part,
                req_seq,
                sent: now,
                len,
                outstanding: true,
                delivered: self.delivered,
                delivered_time: self.delivered_time,
                first_sent_time: self.first_sent_time,
                app_limited,
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
        let n = datagram::encode_request(self.config.token, req_seq, &ranges, buf);
        self.repeats_left = self.config.request_copies.saturating_sub(1);
        if self.repeats_left > 0 {
            self.repeat.clear();
            self.repeat.extend_from_slice(&buf[..n]);
        }
        Some(n)
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

    /// When [`Receiver::handle_timeout`] must be called: the pacing slot (when a request is
    /// waiting for it), the loss or probe timer, or the give-up deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != ReceiverState::Running {
            return None;
        }
        let mut t = self.last_progress + self.config.give_up_after;
        if let Some(lt) = self.loss_time.or_else(|| self.pto_deadline()) {
            t = t.min(lt);
        }
        if let Some(p) = self.pacer.next_send()
            && self.wants_to_send()
        {
            t = t.min(p);
        }
        if let Some(e) = self.event_deadline() {
            t = t.min(e);
        }
        Some(t)
    }

    /// Side-effect free version of the `request_need` check, for `poll_timeout`.
    fn wants_to_send(&self) -> bool {
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

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != ReceiverState::Running {
            return;
        }
        if now >= self.last_progress + self.config.give_up_after {
            self.fail(TransferError::NoProgress(self.config.give_up_after));
            return;
        }
        if !self.too_large_reported && self.parts_too_large(now) {
            self.too_large_reported = true;
            self.events.push_back(ReceiverEvent::PartsTooLarge);
        }
        self.maybe_checkpoint(now);
        if let Some(lt) = self.loss_time {
            if now >= lt {
                self.detect_lost(now);
            }
        } else if self.pto_deadline().is_some_and(|t| now >= t) {
            self.on_pto(now);
        }
    }

    /// The file range `[offset, offset + len)` that has arrived but is not hashed yet, starting at
    /// the hash cursor. Feed it with [`Receiver::hash`]: from the buffer when it is the payload just
    /// written, else by reading the `.part` file back (after a resume, or when a gap just closed).
    pub fn next_to_hash(&self) -> Option<(u64, usize)> {
        let prefix = self.map.prefix_bytes();
        (self.hashed < prefix && self.state == ReceiverState::Running).then(|| {
            let len = (prefix - self.hashed).min(HASH_CHUNK as u64) as usize;
            (self.hashed, len)
        })
    }

    /// Hashes `bytes`, which are the file's bytes at `offset`. Only the part at the hash cursor and
    /// within the arrived prefix is used; anything else is ignored, so a confused caller cannot
    /// make the digest cover bytes that never arrived.
    pub fn hash(&mut self, offset: u64, bytes: &[u8]) {
        if offset != self.hashed || self.state != ReceiverState::Running {
            return;
        }
        let n = (self.map.prefix_bytes() - self.hashed).min(bytes.len() as u64) as usize;
        self.hasher.update(&bytes[..n]);
        self.hashed += n as u64;
        self.check_complete();
    }

    fn check_complete(&mut self) {
        if self.state != ReceiverState::Running
            || !self.map.is_complete()
            || self.hashed != self.layout.size
        {
            return;
        }
        if *self.hasher.finalize().as_bytes() == self.config.blake3 {
            self.state = ReceiverState::Complete;
            self.finished_left = FINISHED_COPIES;
            self.events.push_back(ReceiverEvent::Complete);
        } else {
            self.fail(TransferError::DigestMismatch);
        }
    }

    fn fail(&mut self, error: TransferError) {
        self.state = ReceiverState::Failed(error.clone());
        self.events.push_back(ReceiverEvent::Failed(error));
    }

    /// The next thing its owner must act on (see [`ReceiverEvent`]).
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// Reports a checkpoint when one is due: new parts since the last one, and the interval
    /// passed. Why not one per part: a record is a file write; one every half second bounds what
    /// a killed process fetches again to half a second of download.
    fn maybe_checkpoint(&mut self, now: Instant) {
        if let Some(every) = self.config.checkpoint_every
            && self.dirty
            && self.state == ReceiverState::Running
            && now.saturating_duration_since(self.last_checkpoint) >= every
        {
            self.dirty = false;
            self.last_checkpoint = now;
            self.events.push_back(ReceiverEvent::Checkpoint);
        }
    }

    /// When a checkpoint or the U5 verdict falls due, if one may.
    fn event_deadline(&self) -> Option<Instant> {
        let checkpoint = self
            .config
            .checkpoint_every
            .filter(|_| self.dirty)
            .map(|every| self.last_checkpoint + every);
        let too_large = (self.config.part_size > SAFE_PART_SIZE
            && !self.any_part_arrived
            && !self.too_large_reported)
            .then_some(self.first_request)
            .flatten()
            .map(|at| at + LARGE_PART_PATIENCE);
        match (checkpoint, too_large) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
