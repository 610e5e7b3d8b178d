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
//! is checked against the offer (token, CRC, index, exact size; for a sealed transfer, PROTOCOL
//! 2.7, its AES-GCM tag under the offer's key instead of token and CRC) before its bytes are
//! accepted, and
//! the whole file against the BLAKE3 digest of the offer, hashed in order as the prefix grows so no
//! second pass over the file is needed at the end.
//!
//! The receiver's jobs live in one file each. This one holds what a caller sees (the config, the
//! state, the events, [`Receiver`] and its four verbs `handle_datagram`, `poll_transmit`,
//! `poll_timeout`, `handle_timeout`), the acceptance of parts, and the U5 and checkpoint events:
//! - `loss`: RFC 9002 loss detection: the slots at their positions, the packet and time
//!   thresholds, the loss timer and the probe timeout;
//! - `rate`: delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation) for the
//!   controller;
//! - `requests`: building REQUESTs: window, pacing, lost parts first, request copies, FINISHED
//!   copies;
//! - `verify`: in-order BLAKE3 hashing ([`Receiver::next_to_hash`], [`Receiver::hash`]) and the
//!   digest check.
//!
//! Spec: `docs/PROTOCOL.md` [§2.2] (Datagrams: what the client drops, ABORT reasons), [§2.3] (The
//! client's side of a download), [§2.4] (Resume) and [§2.5] (The small-part fallback).
//!
//! [§2.2]: ../../../../docs/PROTOCOL.md#22-datagrams
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download
//! [§2.4]: ../../../../docs/PROTOCOL.md#24-resume
//! [§2.5]: ../../../../docs/PROTOCOL.md#25-the-small-part-fallback

mod loss;
mod rate;
mod requests;
mod verify;

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::chat::display::escape_truncated;
use crate::transfer::congestion::{Controller, ControllerKind, FirstFlight, new_controller};
use crate::transfer::pacing::Pacer;
use crate::transfer::parts::{Layout, PartMap, ResumeError};
use crate::transfer::rtt::RttEstimator;
use crate::wire::chat::EarlyFlight;
use crate::wire::datagram::{self, AbortCode, Datagram, DatagramError, PART_HEADER_LEN, Version};
use crate::wire::sealed::{self, SEALED_HEADER_LEN, SealKey};

pub use self::verify::HASH_CHUNK;

use self::loss::{Slot, Track};
use self::rate::RateSampler;

/// Default for [`ReceiverConfig::request_copies`].
pub const DEFAULT_REQUEST_COPIES: u8 = 2;
/// Default for [`ReceiverConfig::give_up_after`].
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// Longest ABORT reason kept from the server (it is shown to a person).
const MAX_REASON_CHARS: usize = 200;
/// The buffer [`Receiver::poll_transmit`] should get: it holds the largest REQUEST, plain or
/// sealed.
pub const TRANSMIT_BUF_LEN: usize = sealed::MAX_REQUEST_LEN;

/// What the receiver knows from the offer, and how to behave.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The transfer's token from the offer; datagrams carrying another are dropped.
    pub token: u64,
    /// The offer's key, when it carried one: every datagram of the transfer is then sealed
    /// (PROTOCOL 2.7), and anything not sealed with this key is dropped.
    pub seal: Option<SealKey>,
    /// The file's size in bytes, from the offer.
    pub size: u64,
    /// The payload size of every part but the last, from the offer.
    pub part_size: u16,
    /// The BLAKE3 digest of the whole file, from the offer; checked once every byte is hashed.
    pub blake3: [u8; 32],
    /// Which congestion controller sizes the window.
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
    /// The path's round trip as the client measured it before the first request (its chat
    /// connection: the TCP connect, the first exchange of lines), if it did. It stands in for
    /// the RTT until the first sample, and sizes the first flight ([`FirstFlight`]): a small file
    /// is then asked for in one or two round trips instead of growing from ten parts.
    pub path_rtt: Option<Duration>,
    /// The early flight this download's `download_file` line asked for, if it did (PROTOCOL
    /// 2.1): those parts count as asked for from the start, and the receiver's own REQUESTs go
    /// on after them.
    pub early: Option<EarlyAsked>,
}

/// An early flight as the client asked for it (PROTOCOL 2.1): the flight as the server bounds
/// it for this offer ([`EarlyFlight::bounded`]), and when the `download_file` line went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyAsked {
    /// The parts and their rate.
    pub flight: EarlyFlight,
    /// When the line asking for it was written.
    pub asked_at: Instant,
}

impl ReceiverConfig {
    /// A config with the default controller and give-up time.
    pub fn new(token: u64, size: u64, part_size: u16, blake3: [u8; 32]) -> Self {
        ReceiverConfig {
            token,
            seal: None,
            size,
            part_size,
            blake3,
            controller: ControllerKind::default(),
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            request_copies: DEFAULT_REQUEST_COPIES,
            checkpoint_every: None,
            path_rtt: None,
            early: None,
        }
    }
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransferError {
    /// Every part arrived, but the file's BLAKE3 digest is not the offer's (PROTOCOL.md 2.3).
    #[error("the downloaded file does not match the offered BLAKE3 digest")]
    DigestMismatch,
    /// The server sent ABORT (PROTOCOL.md 2.2, 2.6).
    #[error("the server aborted the transfer: {code}: {reason}")]
    Aborted {
        /// The ABORT's code, kept even when unknown.
        code: AbortCode,
        /// The ABORT's reason for a person: at most 200 characters, control characters replaced.
        reason: String,
    },
    /// No new part arrived for [`ReceiverConfig::give_up_after`], which it carries.
    #[error("no progress for {0:?}: the server or the path is gone")]
    NoProgress(Duration),
    /// The client stopped the download itself ([`Receiver::abandon`]): its disk is full, a file
    /// could not be written.
    #[error("stopped by this client")]
    Abandoned,
    /// A sealed transfer used up its 2^32 request numbers, which may not wrap under one key
    /// (PROTOCOL 2.7); asking for the file again gets a new key and resumes.
    #[error("this sealed transfer used up its 2^32 requests: ask for the file again to resume")]
    RequestsExhausted,
}

/// Where a download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverState {
    /// Parts are being asked for and received.
    Running,
    /// Every part arrived and the digest matched; FINISHED is being sent.
    Complete,
    /// The download failed. Unless the server ended it (ABORT), FINISHED copies go out so the
    /// server frees the port at once instead of after its idle timeout.
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
    /// The part's index.
    pub part: u32,
    /// Where the part's bytes go in the file: `part * part_size`.
    pub offset: u64,
    /// Where the part's bytes are in the datagram that was handed in.
    pub payload: Range<usize>,
}

/// Counters and estimates, for progress bars, logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Bytes of the file that have arrived (after a resume, including those already on disk).
    pub bytes_received: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// Parts that have arrived (after a resume, including those already on disk).
    pub parts_received: u32,
    /// How many parts the file has.
    pub n_parts: u32,
    /// Parts declared lost (each re-request counts once).
    pub parts_lost: u64,
    /// Parts asked for again.
    pub parts_retransmitted: u64,
    /// Parts that arrived a second time.
    pub duplicates: u64,
    /// Datagrams dropped: unparsable, corrupt, wrong token or impossible for the offer.
    pub dropped: u64,
    /// Of `dropped`, the datagrams of a sealed transfer whose tag did not verify: forged,
    /// altered on the way, or sealed with another key (PROTOCOL 2.7).
    pub unauthentic: u64,
    /// REQUESTs built (each counts once, however many copies of it were sent).
    pub requests_sent: u64,
    /// How often the probe timeout fired.
    pub probe_timeouts: u64,
    /// The smoothed RTT; `None` before the first sample.
    pub srtt: Option<Duration>,
    /// The smallest RTT seen; `None` before the first sample.
    pub min_rtt: Option<Duration>,
    /// The controller's window, bytes.
    pub window: u64,
    /// Bytes requested and neither arrived nor declared lost.
    pub in_flight: u64,
    /// The controller's bottleneck bandwidth estimate, bytes per second.
    pub bandwidth: Option<f64>,
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
    state: ReceiverState,
    controller: Box<dyn Controller>,
    rtt: RttEstimator,
    pacer: Pacer,
    /// Bytes requested and neither arrived nor declared lost.
    in_flight: u64,
    // In-order hashing (verify.rs).
    hasher: blake3::Hasher,
    hashed: u64,
    // Requests (requests.rs).
    next_req_seq: u32,
    /// Send times of recent requests; index 0 is `req_times_base`.
    req_times: VecDeque<Instant>,
    req_times_base: u32,
    lost_queue: VecDeque<u32>,
    lost_bytes: u64,
    /// Every part below this has been requested at least once (or had arrived at resume).
    next_new: u32,
    unrequested_bytes: u64,
    /// The last REQUEST sent and how many more copies of it are due (see
    /// [`ReceiverConfig::request_copies`]).
    repeat: Vec<u8>,
    repeats_left: u8,
    /// The ranges of the last REQUEST, when it asked only for lost parts in the tail: they are
    /// asked for once more under the next `req_seq` (see `requests.rs`).
    tail_repair: Vec<(u32, u32)>,
    /// Parts that were on disk when this run started (a resume).
    resumed_parts: u32,
    finished_left: u8,
    // Loss detection (loss.rs).
    slots: VecDeque<Slot>,
    /// Position of `slots[0]`.
    base_pos: u64,
    largest_arrived: Option<u64>,
    track: HashMap<u32, Track>,
    loss_time: Option<Instant>,
    pto_count: u32,
    last_sent: Option<Instant>,
    // Delivery-rate estimation (rate.rs).
    rate: RateSampler,
    // Progress, events and the owner's deadlines.
    last_progress: Instant,
    progress: Progress,
    /// An early flight's check: if not one part has arrived by then, the flight is taken for
    /// blocked (a firewall that drops unasked datagrams) and asked for again at once.
    early_check: Option<Instant>,
    /// The latest the check may be put off to ([`Receiver::defer_early_check`]): a round trip
    /// after it was first due.
    early_check_latest: Option<Instant>,
    /// Early requests below this number give no RTT sample: the offer came late, and their
    /// parts may have waited in the socket.
    unsampled_requests: u32,
    /// When the first REQUEST of this run went out, and whether any part has arrived since:
    /// together they tell a path that drops large datagrams (U5).
    first_request: Option<Instant>,
    any_part_arrived: bool,
    /// Whether any part had arrived when the early flight's check came (`None` before it, or
    /// without a flight).
    early_arrived: Option<bool>,
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
        let first = config.path_rtt.map(|rtt| FirstFlight::for_path(layout.part_size, rtt));
        let controller = new_controller(config.controller, layout.part_size, first);
        let rtt = config.path_rtt.map_or_else(RttEstimator::default, RttEstimator::with_hint);
        let resumed_parts = map.count();
        let mut r = Receiver {
            unrequested_bytes: layout.size - map.bytes(),
            layout,
            map,
            state: ReceiverState::Running,
            controller,
            rtt,
            pacer: Pacer::default(),
            in_flight: 0,
            hasher: blake3::Hasher::new(),
            hashed: 0,
            next_req_seq: 0,
            req_times: VecDeque::new(),
            req_times_base: 0,
            lost_queue: VecDeque::new(),
            lost_bytes: 0,
            next_new: 0,
            repeat: Vec::new(),
            repeats_left: 0,
            tail_repair: Vec::new(),
            resumed_parts,
            finished_left: 0,
            slots: VecDeque::new(),
            base_pos: 0,
            largest_arrived: None,
            track: HashMap::new(),
            loss_time: None,
            pto_count: 0,
            last_sent: None,
            rate: RateSampler::new(now),
            last_progress: now,
            progress: Progress::default(),
            early_check: None,
            early_check_latest: None,
            unsampled_requests: 0,
            first_request: None,
            any_part_arrived: false,
            early_arrived: None,
            events: VecDeque::new(),
            too_large_reported: false,
            dirty: false,
            last_checkpoint: now,
            config,
        };
        if let Some(early) = r.config.early {
            r.expect_early(early, now);
        }
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

    /// Over (complete or failed), with FINISHED copies still to send: the socket must stay open
    /// until they are out.
    pub fn is_finishing(&self) -> bool {
        self.state != ReceiverState::Running && self.finished_left > 0
    }

    /// The client stops this download for a reason of its own (its disk is full, a file could
    /// not be written): no more REQUESTs, and FINISHED copies tell the server to free the port
    /// (PROTOCOL 2.6). No event is reported: the owner knows why. Does nothing once over.
    pub fn abandon(&mut self) {
        if self.state == ReceiverState::Running {
            self.state = ReceiverState::Failed(TransferError::Abandoned);
            self.finished_left = requests::FINISHED_COPIES;
        }
    }

    /// Whether its early flight came (any part of the download had arrived by the flight's
    /// check), once the check has been made; `None` before, or without a flight.
    pub fn early_flight_came(&self) -> Option<bool> {
        self.early_arrived
    }

    /// Where the download stands.
    pub fn state(&self) -> ReceiverState {
        self.state.clone()
    }

    /// The counters and estimates as of now.
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
    /// [`Receiver::next_to_hash`]) and calls [`Receiver::poll_transmit`]. `buf` is mutable because
    /// a sealed datagram (PROTOCOL 2.7) is decrypted where it lies: the payload is then plain
    /// text in `buf`, and nothing was copied.
    pub fn handle_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<Accept> {
        if self.state != ReceiverState::Running {
            return None;
        }
        let (parsed, payload_at) = match &self.config.seal {
            Some(key) => (sealed::open(key, self.config.token, buf), SEALED_HEADER_LEN),
            // Only the version this client speaks: a server answers in the version of the
            // REQUEST, and a version-1 ABORT would have no checksum.
            None => match datagram::parse_versioned(buf) {
                Ok((Version::CURRENT, d)) => (Ok(d), PART_HEADER_LEN),
                Ok((other, _)) => (Err(DatagramError::WrongVersion(other.byte())), 0),
                Err(err) => (Err(err), 0),
            },
        };
        let dgram = match parsed {
            Ok(d) if d.token() == self.config.token => d,
            Err(DatagramError::Unauthentic) => {
                self.progress.dropped += 1;
                self.progress.unauthentic += 1;
                return None;
            }
            _ => {
                self.progress.dropped += 1;
                return None;
            }
        };
        match dgram {
            Datagram::Part(p) => {
                let (req_seq, part, len) = (p.req_seq, p.part, p.data.len());
                self.on_part(now, req_seq, part, payload_at..payload_at + len)
            }
            Datagram::Abort(a) => {
                let reason = escape_truncated(a.reason, MAX_REASON_CHARS);
                self.fail(TransferError::Aborted { code: a.code, reason });
                None
            }
            Datagram::Request(_) | Datagram::Finished { .. } => {
                self.progress.dropped += 1;
                None
            }
        }
    }

    fn on_part(
        &mut self,
        now: Instant,
        req_seq: u32,
        part: u32,
        payload: Range<usize>,
    ) -> Option<Accept> {
        let len = payload.len();
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
        let sampled = req_seq >= self.unsampled_requests;
        let req_sent = self.request_time(req_seq).filter(|_| sampled);
        let rtt = req_sent.map(|sent| now.saturating_duration_since(sent));
        if let Some(rtt) = rtt {
            self.rtt.on_sample(rtt);
        }
        match self.track.remove(&part) {
            Some(Track::InFlight(pos)) => {
                if let Some(slot) = self.on_slot_arrived(pos, req_seq) {
                    self.on_delivered(now, &slot, rtt);
                }
            }
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
        Some(Accept { part, offset: self.layout.offset(part), payload })
    }

    /// The next REQUEST (or FINISHED) to send now, written into `buf`; returns its length. Call
    /// after every input and timeout until `None`. `buf` should hold [`TRANSMIT_BUF_LEN`] bytes
    /// (a smaller one limits the ranges per request).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        match self.state {
            ReceiverState::Complete | ReceiverState::Failed(_) => self.finished_copy(buf),
            ReceiverState::Running => self
                .request_copy(buf)
                .or_else(|| self.tail_repair_again(now, buf))
                .or_else(|| self.new_request(now, buf)),
        }
    }

    /// When [`Receiver::handle_timeout`] must be called: the pacing slot (when a request is
    /// waiting for it), the loss or probe timer, or the give-up deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != ReceiverState::Running {
            return None;
        }
        let mut t = self.last_progress + self.config.give_up_after;
        if let Some(lt) = self.loss_deadline() {
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
        if let Some(c) = self.early_check {
            t = t.min(c);
        }
        Some(t)
    }

    /// A timer set from [`Receiver::poll_timeout`] fired (early or late calls are harmless): give
    /// up, report U5 or a checkpoint, or run the loss or probe timer, whichever is due.
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
        self.check_early_flight(now);
        self.on_loss_timeout(now);
    }

    fn fail(&mut self, error: TransferError) {
        // A server that aborted has ended the transfer already; otherwise it is told to stop.
        if !matches!(error, TransferError::Aborted { .. }) {
            self.finished_left = requests::FINISHED_COPIES;
        }
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
