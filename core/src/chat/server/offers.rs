//! Download offers: `download_file` handling, the choice of a port, the caps on live transfers
//! per client and per address, and the generator of transfer tokens.
//!
//! Implements `docs/PROTOCOL.md` section 2.1 "The offer" (the `UDP ...` line and its fields, the
//! per-client transfer cap) on the chat side; the transfer itself is section 2.2 and lives in
//! [`crate::transfer`].

use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::RngCore;

use crate::chat::display::escape_truncated;
use crate::transfer::parts::Layout;
use crate::wire::chat::{EarlyFlight, ServerLine, UdpOffer};
use crate::wire::sealed;

use super::{ChatServer, ConnId, ECHO_CHARS, LogEvent, PART_SIZE_RANGE, ServerOutput};

/// Everything a runtime needs to serve one download: the offer as the client receives it, and
/// who it was made to. The offer's fields read through `Deref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOffer {
    /// The connection the offer was made to.
    pub conn: ConnId,
    /// Only datagrams from this address are answered (2.2, U2).
    pub peer_ip: IpAddr,
    /// The offer exactly as sent in the `UDP ...` line.
    pub offer: UdpOffer,
    /// The early flight to send with the offer, if the client asked for one (PROTOCOL 2.1).
    pub early: Option<EarlyStart>,
}

/// An early flight as the server sends it (PROTOCOL 2.1): already bounded, and addressed to the
/// chat connection's own address, which the TCP handshake proved. Only the port number is taken
/// over to UDP: a client that did not bind it, or sits behind a NAT, just loses these parts and
/// asks for them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyStart {
    /// The chat connection's peer address.
    pub to: SocketAddr,
    /// What to send and how fast, after [`EarlyFlight::bounded`].
    pub flight: EarlyFlight,
}

impl std::ops::Deref for TransferOffer {
    type Target = UdpOffer;

    fn deref(&self) -> &UdpOffer {
        &self.offer
    }
}

/// How long a `download_file` for a file on offer waits, when its client already holds its whole
/// transfer cap, for one of those transfers to end before it is refused (PROTOCOL 2.1).
///
/// Why wait at all: a client that starts its next download the moment one is verified sends the
/// line and the FINISHED together, the line over TCP and the FINISHED over UDP, and the line often
/// comes first. Refused, it was asked again 50 ms later, and the lines behind it waited with it:
/// 100 files of 100 KiB at 20 ms took twice as long as one file of 10 MiB, where without the race
/// they take half as long again (simulator, `sim_many_files`; issue 11). A quarter of a second
/// covers the race and a first FINISHED lost on the way, and costs a client that really holds its
/// cap no more than that before its refusal.
pub const CAP_WAIT: Duration = Duration::from_millis(250);

/// A `download_file` that came while its client held its whole transfer cap: answered when one of
/// its transfers ends, or at `until` with the refusal. The connection's next lines wait behind it.
#[derive(Debug)]
pub(super) struct HeldDownload {
    until: Instant,
    file: String,
    part_size: Option<u32>,
    early: Option<EarlyFlight>,
}

impl ChatServer {
    /// `download_file <file> [<part_size>]` (2.1): an offer on the first free port, or an error;
    /// held for up to [`CAP_WAIT`] when the client holds its whole transfer cap.
    pub(super) fn on_download(
        &mut self,
        now: Instant,
        conn: ConnId,
        file: &str,
        part_size: Option<u32>,
        early: Option<EarlyFlight>,
    ) {
        // With a cap of 0 nothing can end, so there is nothing to wait for.
        let could_end = self.conns.get(&conn).is_some_and(|c| c.transfers > 0);
        if self.at_transfer_cap(conn) && could_end && self.catalogue.get(file).is_some() {
            let held =
                HeldDownload { until: now + CAP_WAIT, file: file.to_owned(), part_size, early };
            self.held_downloads.insert(conn, held);
            // What it sends meanwhile waits in the kernel, not in its framer: a peer that keeps
            // sending while its line is held must not grow the server's buffers.
            if !self.is_paused(conn) {
                self.push(ServerOutput::PauseReading { conn });
            }
            return;
        }
        self.answer_download(conn, file, part_size, early);
    }

    /// When the first held download line is due to be refused.
    pub(super) fn next_held_deadline(&self) -> Option<Instant> {
        self.held_downloads.values().map(|held| held.until).min()
    }

    /// Refuses the held download lines whose wait is over.
    pub(super) fn expire_held_downloads(&mut self, now: Instant) {
        let due: Vec<ConnId> = (self.held_downloads.iter())
            .filter(|(_, held)| held.until <= now)
            .map(|(&conn, _)| conn)
            .collect();
        for conn in due {
            self.answer_held_download(now, conn);
        }
    }

    /// Answers `conn`'s held download line, if it has one, and goes on with the lines that
    /// waited behind it.
    fn answer_held_download(&mut self, now: Instant, conn: ConnId) {
        let Some(held) = self.held_downloads.remove(&conn) else {
            return;
        };
        self.answer_download(conn, &held.file, held.part_size, held.early);
        self.read_lines(now, conn);
        // Still there, with nothing held again and no pause of its own (C6): read it again.
        let waits = self.held_downloads.contains_key(&conn) || self.is_paused(conn);
        if self.conns.contains_key(&conn) && !waits {
            self.push(ServerOutput::ResumeReading { conn });
        }
    }

    /// Whether `conn` is not read for now because it sent more than its share (C6).
    fn is_paused(&self, conn: ConnId) -> bool {
        self.pause_of(conn).is_some()
    }

    /// Whether `conn` holds its whole transfer cap (2.1).
    fn at_transfer_cap(&self, conn: ConnId) -> bool {
        let cap = self.config.max_transfers_per_client;
        self.conns
            .get(&conn)
            .is_some_and(|c| usize::try_from(c.transfers).unwrap_or(usize::MAX) >= cap)
    }

    /// The answer to a download line: an offer, or the error that says why not.
    fn answer_download(
        &mut self,
        conn: ConnId,
        file: &str,
        part_size: Option<u32>,
        early: Option<EarlyFlight>,
    ) {
        // S1: the name is only ever a key into the catalogue.
        let Some(entry) = self.catalogue.get(file) else {
            return self.send_error(
                conn,
                &format!("no such file: {}", escape_truncated(file, ECHO_CHARS)),
            );
        };
        let (size, blake3) = (entry.size, entry.blake3);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (peer, secure) = (c.peer, c.secure);
        let peer_ip = peer.ip();
        if self.at_transfer_cap(conn) {
            let cap = self.config.max_transfers_per_client;
            return self.send_error(conn, &format!("too many transfers: at most {cap} at once"));
        }
        // Counted by address too: one host opening many connections must not hold every port.
        let ip_cap = self.config.max_transfers_per_ip;
        if self.ports.held_from(peer_ip) >= ip_cap {
            return self.send_error(
                conn,
                &format!("too many transfers from your address: at most {ip_cap} at once"),
            );
        }
        let Some(port) = self.ports.first_free() else {
            return self.send_error(conn, "server busy: no free transfer port, try again later");
        };
        let wanted = part_size.unwrap_or(u32::from(self.config.default_part_size));
        // A sealed PART is 2 bytes longer than a plain one of the same size: its part is 2 bytes
        // smaller, so a size the client chose to fit its path still fits, and no sealed datagram
        // is longer than the longest plain one (2.7).
        let shrink = if secure { sealed::PART_SIZE_SHRINK } else { 0 };
        let (min, max) = (*PART_SIZE_RANGE.start(), *PART_SIZE_RANGE.end());
        let part_size = u16::try_from(wanted).unwrap_or(u16::MAX).clamp(min, max);
        let part_size = part_size.saturating_sub(shrink).max(min);
        let transfer_id = self.next_transfer_id;
        self.next_transfer_id += 1;
        let token = self.rng.next_u64();
        // A fresh key for every offer to a private connection: its nonces start over (2.7).
        let key = secure.then(|| {
            let mut key = [0u8; sealed::KEY_LEN];
            self.rng.fill_bytes(&mut key);
            key
        });
        self.ports.take(port, conn, peer_ip);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.transfers += 1;
        }
        let offer = UdpOffer {
            port,
            transfer_id,
            file: file.to_owned(),
            size,
            part_size,
            blake3,
            token,
            key,
        };
        let n_parts = Layout::new(size, part_size).n_parts();
        let early = early
            .filter(|_| self.config.early_flights)
            .and_then(|asked| asked.bounded(n_parts, part_size))
            .map(|flight| EarlyStart { to: peer, flight });
        let line = Bytes::from(ServerLine::Udp(offer.clone()).encode());
        self.push(ServerOutput::StartTransfer(TransferOffer { conn, peer_ip, offer, early }));
        self.push(ServerOutput::Log(LogEvent::TransferOffered {
            conn,
            port,
            transfer_id,
            file: file.to_owned(),
            early_parts: early.map(|e| e.flight.parts),
        }));
        self.send(conn, line);
    }

    /// The transfer on `port` is over: the port is free and its client holds one transfer less,
    /// so a download line it has waiting is answered now.
    pub(super) fn on_transfer_ended(&mut self, now: Instant, port: u16) {
        let Some(owner) = self.ports.release(port) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&owner) {
            c.transfers = c.transfers.saturating_sub(1);
        }
        self.answer_held_download(now, owner);
    }
}

/// The default token source: BLAKE3 in keyed mode over a counter. Tokens must not be guessable
/// from one another (U2), which a plain seeded PRNG like SplitMix would not guarantee.
pub(super) struct SeededTokens {
    key: [u8; 32],
    counter: u64,
}

impl SeededTokens {
    /// A generator whose key is derived from `seed`: for tests and the simulator, which want
    /// the same tokens on every run (64 bits are too few for transfer keys).
    pub(super) fn new(seed: u64) -> Self {
        Self::from_key(*blake3::hash(&seed.to_le_bytes()).as_bytes())
    }

    /// A generator keyed with 32 random bytes: what a server runs with. Keyed BLAKE3 over a
    /// counter is a pseudorandom function, so its outputs (tokens, transfer keys) are as hard to
    /// guess as the key, and no output tells anything about another.
    pub(super) fn from_key(key: [u8; 32]) -> Self {
        Self { key, counter: 0 }
    }
}

impl RngCore for SeededTokens {
    fn next_u32(&mut self) -> u32 {
        // Truncation intended: the low half of a uniformly random u64.
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        self.fill_bytes(&mut out);
        u64::from_le_bytes(out)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&self.counter.to_le_bytes());
        self.counter += 1;
        hasher.finalize_xof().fill(dst);
    }
}
