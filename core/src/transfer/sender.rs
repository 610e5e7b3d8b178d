//! One transfer, server side: validate REQUESTs and answer them with "send part i" orders.
//!
//! The sender never decides what to send; it only answers (PROTOCOL.md 2.2/2.3). Its job is to
//! answer *safely*: only datagrams with the transfer's token, from the IP address of the TCP client
//! that got the offer, and after the first valid REQUEST only from that exact source address, so the
//! port cannot be hijacked or used to reflect traffic at a third party (TEST-CATALOGUE U2). A REQUEST
//! whose `req_seq` is not newer than the last one answered is ignored, so duplicated or replayed
//! requests never multiply traffic (U3); `req_seq` is compared as a serial number, so it may wrap.
//! One REQUEST is answered with at most 256 parts / 2 MiB. What REQUESTs asked for and was not sent
//! yet is bounded by [`MAX_OWED_PARTS`]: past it, a newer REQUEST's parts replace the oldest owed
//! ones (the client has moved on from those, and its loss detection asks again if it must).
//!
//! The client's REQUESTs decide the datagram version (PROTOCOL.md 5): its PARTs and ABORT go out in
//! the version of the last REQUEST answered, so a version-1 client is served as before.
//!
//! An offer may come with an early flight (PROTOCOL.md 2.1, version 4): the client asked in its
//! `download_file` line for the first parts before any REQUEST. They are answered as early
//! requests of [`EarlyFlight::PARTS_PER_REQUEST`] parts with `req_seq` 0, 1, 2, ..., paced at the
//! asked rate (a burst of one early request, then one part at a time), to the chat connection's
//! own address. That address is provisional: the first valid REQUEST locks the peer as always,
//! and what is left of the flight goes there. Parts the client's REQUESTs ask for wait until the
//! flight is out, so parts still leave in the order they were asked for.
//!
//! The sender does not read the file: [`SenderOutput::SendPart`] says which bytes to send and the
//! runtime `pread`s them straight into its datagram buffer and seals them there
//! ([`crate::transfer::endpoint::PartOrder::seal`]), so the payload is copied once, kernel to
//! buffer.
//!
//! A sealed transfer (PROTOCOL 2.7, [`SenderConfig::seal`]) answers only datagrams sealed with its
//! key, answers only a `req_seq` above the last one answered (never wrapping), and drops a REQUEST
//! whose ranges overlap: so no (`req_seq`, part) is ever sealed twice under its key.
//!
//! Spec: `docs/PROTOCOL.md` [§2.2] (Datagrams: tokens and addresses, `req_seq`, per-request limits)
//! and [§2.6] (Timeouts and how a transfer ends).
//!
//! [§2.2]: ../../../docs/PROTOCOL.md#22-datagrams
//! [§2.6]: ../../../docs/PROTOCOL.md#26-timeouts-and-how-a-transfer-ends

use core::net::{IpAddr, SocketAddr};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::chat::server::EarlyStart;
use crate::transfer::parts::Layout;
use crate::wire::chat::EarlyFlight;
use crate::wire::datagram::{
    self, AbortCode, Datagram, DatagramError, MAX_PARTS_PER_REQUEST, MAX_REQUEST_PAYLOAD, Version,
};
use crate::wire::sealed::{self, SealKey};

/// The default idle timeout (PROTOCOL.md 2.6): the port is freed when no valid request arrived
/// for this long, counted from the offer.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most parts a transfer owes at once: four REQUESTs' worth. Why not one: a server reads
/// several datagrams per turn before it sends, so a client's back-to-back REQUESTs often arrive
/// together, and dropping all but the last would turn every such turn into losses.
pub const MAX_OWED_PARTS: u64 = 4 * MAX_PARTS_PER_REQUEST as u64;

/// What the sender needs to know about the offer.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The transfer's token from the offer; a datagram carrying any other is dropped (U2).
    pub token: u64,
    /// The offer's key, when it carried one (an offer made over TLS): then every datagram of the
    /// transfer is sealed (PROTOCOL 2.7), and anything not sealed with this key is dropped.
    pub seal: Option<SealKey>,
    /// The IP address of the TCP connection that received the offer.
    pub peer_ip: IpAddr,
    /// The served file's length in bytes, as offered; a range past its last part gets ABORT 2.
    pub size: u64,
    /// Payload bytes per part, as offered (already clamped to 512..=65000 by the chat server).
    pub part_size: u16,
    /// How long the transfer lives without a valid REQUEST before it ends with ABORT 3
    /// ([`DEFAULT_IDLE_TIMEOUT`] unless configured).
    pub idle_timeout: Duration,
    /// The early flight to send from the offer on, if the client asked for one.
    pub early: Option<EarlyStart>,
}

/// An early flight being sent: see the module documentation.
#[derive(Debug)]
struct Early {
    flight: EarlyFlight,
    /// When the flight started (the offer).
    start: Instant,
    /// The next part to send; the flight is out when it reaches `flight.parts`.
    next: u32,
    /// How many parts the pacing lets out by now.
    released: u32,
}

impl Early {
    /// Lets out the parts due by `now`: one early request at once, then one part every
    /// `part_size / rate` seconds.
    fn release(&mut self, now: Instant, part_size: u16) {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let paced = elapsed * f64::from(self.flight.rate) / f64::from(part_size.max(1));
        let due = u64::from(EarlyFlight::PARTS_PER_REQUEST) + paced as u64;
        self.released = u32::try_from(due).unwrap_or(u32::MAX).min(self.flight.parts);
    }

    /// When the next part is let out, while the pacing holds one back.
    fn next_release(&self, part_size: u16) -> Option<Instant> {
        if self.next < self.released || self.released >= self.flight.parts {
            return None;
        }
        let paced = self.released + 1 - EarlyFlight::PARTS_PER_REQUEST.min(self.released + 1);
        let secs = f64::from(paced) * f64::from(part_size) / f64::from(self.flight.rate.max(1));
        // A microsecond late, so that the part is surely due when the timer fires.
        Some(self.start + Duration::from_secs_f64(secs) + Duration::from_micros(1))
    }

    fn is_out(&self) -> bool {
        self.next >= self.flight.parts
    }
}

/// How a transfer ended, server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderEnd {
    /// The client sent FINISHED.
    Finished,
    /// We sent ABORT with this code (file changed, part past the end).
    Aborted(AbortCode),
    /// No valid request for the idle timeout (ABORT 3 was sent if a client address was known).
    TimedOut,
    /// The client left the chat: its transfers end with it (ABORT 4 if its address was known).
    ClientLeft,
}

/// Something that happened to one transfer, server side.
#[derive(Debug, Clone, Copy)]
pub enum SenderInput<'a> {
    /// A datagram arrived on the transfer's port from `from`.
    Datagram {
        /// The datagram's source address, checked against the offer's IP and the locked peer.
        from: SocketAddr,
        /// The whole datagram as received, header included; unparsed and untrusted.
        bytes: &'a [u8],
    },
    /// The served file is no longer the one offered (edited, replaced, removed, or shorter than
    /// offered when read): tell the client (ABORT 1) and end (U7).
    FileChanged,
    /// The client's chat connection ended: tell its download socket (ABORT 4), if one is known,
    /// and end, so the port is free at once.
    ClientLeft,
}

impl std::fmt::Display for SenderEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SenderEnd::Finished => write!(f, "the client finished"),
            SenderEnd::Aborted(code) => write!(f, "aborted ({code})"),
            SenderEnd::TimedOut => write!(f, "no valid request within the idle timeout"),
            SenderEnd::ClientLeft => write!(f, "the client left the chat"),
        }
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderOutput {
    /// Read `len` bytes at `offset` into the datagram buffer, seal the PART around them (in
    /// `version`, or sealed under the offer's key) and send the result to `to`; the endpoint
    /// turns this into a [`crate::transfer::endpoint::PartOrder`] that knows how.
    SendPart {
        /// The datagram version the client speaks.
        version: Version,
        /// The client's address, locked by the first valid REQUEST.
        to: SocketAddr,
        /// The `req_seq` of the REQUEST this part answers, echoed in the PART.
        req_seq: u32,
        /// The part index.
        part: u32,
        /// Where the part starts in the served file, in bytes (`part * part_size`).
        offset: u64,
        /// The payload length in bytes: `part_size`, or less for the last part.
        len: usize,
    },
    /// Send these bytes (ABORT; rare, so an allocation is fine).
    SendDatagram {
        /// The client's address, locked by the first valid REQUEST.
        to: SocketAddr,
        /// The encoded datagram, ready to send.
        bytes: Vec<u8>,
    },
    /// The transfer is over; free the port. Emitted exactly once, last.
    Done(SenderEnd),
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// REQUESTs accepted: fresh `req_seq`, every range inside the file.
    pub requests_answered: u64,
    /// REQUESTs ignored because their `req_seq` was not newer than the last answered (U3).
    pub requests_ignored: u64,
    /// Owed parts dropped unsent because newer REQUESTs pushed the owed total past
    /// [`MAX_OWED_PARTS`].
    pub parts_replaced: u64,
    /// [`SenderOutput::SendPart`] orders handed out.
    pub parts_sent: u64,
    /// Datagrams dropped without a reply: wrong source address, unparsable, wrong token, or a
    /// kind a client never sends (PART, ABORT). Counts the `unauthentic` ones too.
    pub dropped: u64,
    /// Of `dropped`, the datagrams of a sealed transfer whose tag did not verify: forged, altered
    /// on the way, or sealed with another transfer's key (PROTOCOL 2.7).
    pub unauthentic: u64,
}

/// One transfer, server side. See the module documentation.
#[derive(Debug)]
pub struct Sender {
    config: SenderConfig,
    layout: Layout,
    /// The only address answered, fixed by the first valid REQUEST.
    peer: Option<SocketAddr>,
    last_req_seq: Option<u32>,
    /// The version of the last REQUEST answered: PARTs and ABORT go out in it.
    version: Version,
    /// Parts still to announce: (req_seq, first, last) inclusive, already clamped to the bounds;
    /// at most [`MAX_OWED_PARTS`] in all, counted in `owed`.
    pending: VecDeque<(u32, u32, u32)>,
    owed: u64,
    deadline: Instant,
    end: Option<SenderEnd>,
    done_emitted: bool,
    abort: Option<(SocketAddr, Vec<u8>)>,
    stats: SenderStats,
    /// Where a sealed datagram is copied to be opened in place: the runtime's buffer is not ours
    /// to write, and what a client sends is at most one REQUEST (2 KiB). Kept, so no allocation
    /// per datagram.
    scratch: Vec<u8>,
    /// The early flight, while it is being sent.
    early: Option<Early>,
    /// Where an early flight went: the address answered (an ABORT) until a REQUEST locks one.
    provisional_peer: Option<SocketAddr>,
}

/// What a client's datagram asks, once checked, owned so that the buffer it came in is free.
enum Asked {
    Request(Version, datagram::Request),
    Finished,
    /// A kind a client never sends (PART, ABORT).
    Nothing,
}

impl Sender {
    /// A sender for an offer made at `now` (the idle clock starts at the offer).
    pub fn new(config: SenderConfig, now: Instant) -> Self {
        let mut early =
            config.early.map(|e| Early { flight: e.flight, start: now, next: 0, released: 0 });
        if let Some(early) = &mut early {
            early.release(now, config.part_size);
        }
        Sender {
            layout: Layout::new(config.size, config.part_size),
            deadline: now + config.idle_timeout,
            // The client's own REQUESTs go on after the early ones.
            last_req_seq: early.as_ref().and_then(|e| e.flight.requests().checked_sub(1)),
            provisional_peer: config.early.map(|e| e.to),
            early,
            config,
            peer: None,
            version: Version::CURRENT,
            pending: VecDeque::new(),
            owed: 0,
            end: None,
            done_emitted: false,
            abort: None,
            stats: SenderStats::default(),
            scratch: Vec::new(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// Where this transfer's datagrams go: the client address it is locked to, or until a
    /// REQUEST locks one, the address its early flight goes to.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer.or(self.provisional_peer)
    }

    /// Something happened: a datagram arrived, or the file changed.
    pub fn handle_input(&mut self, now: Instant, input: SenderInput<'_>) {
        self.release_early(now);
        match input {
            SenderInput::Datagram { from, bytes } => self.on_datagram(now, from, bytes),
            SenderInput::FileChanged => {
                if self.end.is_none() {
                    self.abort_with(AbortCode::FileChanged, "the file changed on the server");
                }
            }
            SenderInput::ClientLeft => {
                if self.end.is_none() {
                    self.abort_with(AbortCode::ClientLeft, "your chat connection ended");
                }
            }
        }
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) {
        if self.end.is_some() {
            return;
        }
        // Address checks first: an unauthorised source gets nothing, not even parsing effort
        // beyond the header, and never a reply.
        if from.ip() != self.config.peer_ip || self.peer.is_some_and(|p| p != from) {
            self.stats.dropped += 1;
            return;
        }
        let asked = match self.config.seal.as_ref() {
            None => Self::parse_plain(self.config.token, buf),
            Some(key) => Self::open_sealed(key, self.config.token, buf, &mut self.scratch),
        };
        match asked {
            Ok(Asked::Request(version, req)) => self.on_request(now, from, version, req),
            // FINISHED may come before any REQUEST (an empty file has nothing to ask for).
            Ok(Asked::Finished) => {
                self.pending.clear();
                self.owed = 0;
                self.early = None;
                self.end = Some(SenderEnd::Finished);
            }
            Ok(Asked::Nothing) => self.stats.dropped += 1,
            Err(DatagramError::Unauthentic) => {
                self.stats.dropped += 1;
                self.stats.unauthentic += 1;
            }
            Err(_) => self.stats.dropped += 1,
        }
    }

    /// A plain datagram (version 1 or 2) with the transfer's token.
    fn parse_plain(token: u64, buf: &[u8]) -> Result<Asked, DatagramError> {
        let (version, dgram) = datagram::parse_versioned(buf)?;
        if dgram.token() != token {
            return Ok(Asked::Nothing);
        }
        Ok(Self::asked(version, dgram))
    }

    /// A sealed datagram (version 3), opened in `scratch`. Nothing a client sends is longer
    /// than the largest sealed REQUEST, so anything longer is dropped before it is copied.
    fn open_sealed(
        key: &SealKey,
        token: u64,
        buf: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<Asked, DatagramError> {
        if buf.len() > sealed::MAX_REQUEST_LEN {
            return Ok(Asked::Nothing);
        }
        scratch.clear();
        scratch.extend_from_slice(buf);
        let dgram = sealed::open(key, token, scratch)?;
        // The version is only used for plain PARTs and ABORTs; a sealed sender seals them.
        Ok(Self::asked(Version::CURRENT, dgram))
    }

    fn asked(version: Version, dgram: Datagram<'_>) -> Asked {
        match dgram {
            Datagram::Request(req) => Asked::Request(version, req),
            Datagram::Finished { .. } => Asked::Finished,
            Datagram::Part(_) | Datagram::Abort(_) => Asked::Nothing,
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        version: Version,
        req: datagram::Request,
    ) {
        // Sealed: a `req_seq` must be above the last one answered, never wrapping, so that no
        // (req_seq, part) nonce is used twice under the transfer's key (2.7).
        let sealed = self.config.seal.is_some();
        let newer = |last| if sealed { req.req_seq > last } else { is_newer(req.req_seq, last) };
        if self.last_req_seq.is_some_and(|last| !newer(last)) {
            self.stats.requests_ignored += 1;
            return;
        }
        self.peer = Some(from);
        self.version = version;
        let n = self.layout.n_parts();
        if let Some(&(_, last)) = req.ranges.iter().find(|&&(_, last)| last >= n) {
            let reason = format!("part {last} is past the end ({n} parts)");
            self.abort_with(AbortCode::PastEnd, &reason);
            return;
        }
        self.last_req_seq = Some(req.req_seq);
        self.deadline = now + self.config.idle_timeout;
        self.stats.requests_answered += 1;
        // Answer the first parts up to 256 parts / 2 MiB.
        let mut parts_left = MAX_PARTS_PER_REQUEST as u64;
        let mut bytes_left = MAX_REQUEST_PAYLOAD;
        for (first, last) in req.ranges {
            // u64 so a range ending at u32::MAX cannot overflow the walk.
            let mut next = u64::from(first);
            while next <= u64::from(last) && parts_left > 0 {
                // `next` <= last <= u32::MAX here.
                let len = self.layout.part_len(next as u32) as u64;
                if len > bytes_left {
                    parts_left = 0;
                    break;
                }
                bytes_left -= len;
                parts_left -= 1;
                next += 1;
            }
            if next > u64::from(first) {
                self.pending.push_back((req.req_seq, first, (next - 1) as u32));
                self.owed += next - u64::from(first);
            }
            if parts_left == 0 {
                break;
            }
        }
        self.bound_owed();
    }

    /// Drops the oldest owed parts until at most [`MAX_OWED_PARTS`] are left.
    fn bound_owed(&mut self) {
        while self.owed > MAX_OWED_PARTS {
            let Some((_, first, last)) = self.pending.front_mut() else {
                break;
            };
            let over = self.owed - MAX_OWED_PARTS;
            let in_range = u64::from(*last - *first) + 1;
            if in_range <= over {
                self.pending.pop_front();
                self.owed -= in_range;
                self.stats.parts_replaced += in_range;
            } else {
                // `over` < in_range <= u32::MAX + 1 here, so it fits the part index.
                *first += over as u32;
                self.owed -= over;
                self.stats.parts_replaced += over;
            }
        }
    }

    fn abort_with(&mut self, code: AbortCode, reason: &str) {
        self.pending.clear();
        self.owed = 0;
        let to = self.peer();
        self.early = None;
        if let Some(to) = to {
            let bytes = match &self.config.seal {
                // At most one ABORT per transfer: its nonce is never used again (2.7).
                Some(key) => {
                    let mut bytes = vec![0; sealed::abort_len(reason)];
                    let n = sealed::encode_abort(key, code, reason, &mut bytes);
                    bytes.truncate(n);
                    bytes
                }
                None => {
                    let mut bytes = vec![0; datagram::abort_len(reason)];
                    let n = datagram::encode_abort_in(
                        self.version,
                        self.config.token,
                        code,
                        reason,
                        &mut bytes,
                    );
                    bytes.truncate(n);
                    bytes
                }
            };
            self.abort = Some((to, bytes));
        }
        self.end = Some(match code {
            AbortCode::TimedOut => SenderEnd::TimedOut,
            AbortCode::ClientLeft => SenderEnd::ClientLeft,
            other => SenderEnd::Aborted(other),
        });
    }

    /// The next thing to do; call until `None`.
    pub fn poll_output(&mut self) -> Option<SenderOutput> {
        if let Some((to, bytes)) = self.abort.take() {
            return Some(SenderOutput::SendDatagram { to, bytes });
        }
        if let Some(end) = self.end {
            if self.done_emitted {
                return None;
            }
            self.done_emitted = true;
            return Some(SenderOutput::Done(end));
        }
        let to = self.peer();
        if let Some(early) = &mut self.early {
            if early.next >= early.released {
                return None;
            }
            let to = to?;
            let part = early.next;
            early.next += 1;
            if early.is_out() {
                self.early = None;
            }
            self.stats.parts_sent += 1;
            return Some(SenderOutput::SendPart {
                version: self.version,
                to,
                req_seq: part / EarlyFlight::PARTS_PER_REQUEST,
                part,
                offset: self.layout.offset(part),
                len: self.layout.part_len(part),
            });
        }
        let to = self.peer?;
        let (req_seq, first, last) = self.pending.front_mut()?;
        let (req_seq, part) = (*req_seq, *first);
        if *first == *last {
            self.pending.pop_front();
        } else {
            *first += 1;
        }
        self.owed -= 1;
        self.stats.parts_sent += 1;
        Some(SenderOutput::SendPart {
            version: self.version,
            to,
            req_seq,
            part,
            offset: self.layout.offset(part),
            len: self.layout.part_len(part),
        })
    }

    /// When [`Sender::handle_timeout`] must be called: the idle deadline, or sooner the next
    /// part of an early flight that the pacing holds back.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.end.is_some() {
            return None;
        }
        let paced = self.early.as_ref().and_then(|e| e.next_release(self.config.part_size));
        Some(paced.map_or(self.deadline, |at| at.min(self.deadline)))
    }

    /// Lets out the early flight's parts due by `now`, and ends the transfer with ABORT 3 (sent
    /// only if a client address is known) when the idle deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release_early(now);
        if self.end.is_none() && now >= self.deadline {
            self.abort_with(AbortCode::TimedOut, "no valid request within the idle timeout");
        }
    }

    /// Whether [`Sender::poll_output`] has something now.
    pub fn has_output(&self) -> bool {
        if self.abort.is_some() {
            return true;
        }
        if self.end.is_some() {
            return !self.done_emitted;
        }
        if let Some(early) = &self.early {
            return early.next < early.released;
        }
        self.peer.is_some() && !self.pending.is_empty()
    }

    fn release_early(&mut self, now: Instant) {
        if let Some(early) = &mut self.early {
            early.release(now, self.config.part_size);
        }
    }

    /// True once [`SenderOutput::Done`] has been emitted.
    pub fn is_done(&self) -> bool {
        self.done_emitted
    }
}

/// Whether `req_seq` comes after `last` in serial-number order (RFC 1982 with 32 bits): up to 2^31
/// ahead counts as newer, so the client's counter may wrap after 2^32 requests.
fn is_newer(req_seq: u32, last: u32) -> bool {
    let ahead = req_seq.wrapping_sub(last);
    ahead != 0 && ahead < 1 << 31
}
