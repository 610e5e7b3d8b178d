//! Every transfer a server serves, by port: what quinn-proto's `Endpoint` is to its connections.
//!
//! The endpoint routes what arrives on a port to that port's [`Sender`], says when a port has
//! datagrams to send ([`EndpointEvent::Transmit`]) and when its served file should be looked at
//! again ([`EndpointEvent::CheckFile`]), and reports each transfer's end once, after its last
//! datagram was handed out ([`EndpointEvent::Ended`]). The server driver connects these events
//! to the chat server, which owns the port pool.
//!
//! Spec: `docs/PROTOCOL.md` [§2.6] (Timeouts and how a transfer ends: when a port is free again,
//! the 100 ms file check) and [§2.2] (Datagrams).
//!
//! [§2.6]: ../../../docs/PROTOCOL.md#26-timeouts-and-how-a-transfer-ends
//! [§2.2]: ../../../docs/PROTOCOL.md#22-datagrams

use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::chat::server::TransferOffer;
use crate::transfer::sender::{Sender, SenderConfig, SenderEnd, SenderInput, SenderOutput};
use crate::wire::datagram::{self, PART_HEADER_LEN, Version};
use crate::wire::sealed::{self, SEALED_HEADER_LEN, SealKey};

/// How often the served file is looked at for a change while its parts are being asked for
/// (one `lstat` each time): a file edited during a transfer is noticed within this long (U7).
pub const CHANGE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// "Send part i": read `len` bytes at `offset` of the served file into `buf[order.payload()]`,
/// call [`PartOrder::seal`] and send the datagram it made to `to`. A read that comes up short
/// means the file changed: report [`SenderInput::FileChanged`]. The payload is read once,
/// straight into the datagram, and sealed (plain CRC or AEAD) where it lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOrder {
    /// The datagram version the client speaks (that of its REQUESTs), for a plain transfer.
    pub version: Version,
    /// The transfer's key when its datagrams are sealed (PROTOCOL 2.7).
    pub seal: Option<SealKey>,
    /// The client's address, locked by its first valid REQUEST.
    pub to: SocketAddr,
    /// The transfer's token, written into a plain PART header.
    pub token: u64,
    /// The `req_seq` of the REQUEST this part answers.
    pub req_seq: u32,
    /// The part index.
    pub part: u32,
    /// Where the part starts in the served file, in bytes.
    pub offset: u64,
    /// The payload length in bytes (`part_size`, or less for the last part).
    pub len: usize,
}

impl PartOrder {
    /// Where in the datagram buffer the payload must be read to.
    pub fn payload(&self) -> Range<usize> {
        let at = if self.seal.is_some() { SEALED_HEADER_LEN } else { PART_HEADER_LEN };
        at..at + self.len
    }

    /// Bytes the whole datagram takes: the largest buffer [`PartOrder::seal`] writes.
    pub fn datagram_len(&self) -> usize {
        match self.seal {
            Some(_) => sealed::part_len(self.len),
            None => PART_HEADER_LEN + self.len,
        }
    }

    /// Writes the header and the checksum (plain) or encrypts the payload in place and writes
    /// the header and tag (sealed) around the payload already in `buf[self.payload()]`; returns
    /// the datagram's length.
    ///
    /// # Panics
    /// If `buf` is shorter than [`PartOrder::datagram_len`]: the runtime sized it wrongly.
    pub fn seal(&self, buf: &mut [u8]) -> usize {
        match &self.seal {
            Some(key) => sealed::seal_part(key, buf, self.req_seq, self.part, self.len),
            None => datagram::seal_part_in(
                self.version,
                buf,
                self.token,
                self.req_seq,
                self.part,
                self.len,
            ),
        }
    }
}

/// The bytes of the largest PART datagram of a transfer of `part_size`-byte parts, sealed or
/// not: what a runtime's datagram buffers must hold, and the stride of its send batches.
pub fn part_datagram_len(part_size: u16, sealed: bool) -> usize {
    if sealed {
        sealed::part_len(usize::from(part_size))
    } else {
        PART_HEADER_LEN + usize::from(part_size)
    }
}

/// One datagram to send on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send part i (see [`PartOrder`]).
    Part(PartOrder),
    /// Send these bytes to `to` (an ABORT: rare, so an allocation is fine).
    Datagram {
        /// The client's address.
        to: SocketAddr,
        /// The encoded datagram.
        bytes: Vec<u8>,
    },
}

/// What the endpoint asks of the one who drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// `port` has datagrams to send: call [`Endpoint::poll_transmit`] until `None`.
    Transmit {
        /// The transfer's UDP port.
        port: u16,
    },
    /// Look whether the file served on `port` is still the one offered; if not, report
    /// [`SenderInput::FileChanged`].
    CheckFile {
        /// The transfer's UDP port.
        port: u16,
    },
    /// The transfer on `port` is over, its last datagram handed out; the port is free.
    Ended {
        /// The port that is now free for another offer.
        port: u16,
        /// How the transfer ended (FINISHED, an ABORT, or the idle timeout), for the log.
        end: SenderEnd,
    },
}

#[derive(Debug)]
struct Served {
    sender: Sender,
    token: u64,
    seal: Option<SealKey>,
    last_check: Instant,
    /// A `Transmit` event is out and `poll_transmit` has not yet come back empty.
    transmit_owed: bool,
}

/// Every [`Sender`] of a server, by port. See the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    served: BTreeMap<u16, Served>,
    events: VecDeque<EndpointEvent>,
    idle_timeout: Duration,
}

impl Endpoint {
    /// An endpoint whose transfers end after `idle_timeout` without a valid request (U8).
    pub fn new(idle_timeout: Duration) -> Self {
        Self { served: BTreeMap::new(), events: VecDeque::new(), idle_timeout }
    }

    /// How many transfers are being served.
    pub fn len(&self) -> usize {
        self.served.len()
    }

    /// Whether no transfer is being served.
    pub fn is_empty(&self) -> bool {
        self.served.is_empty()
    }

    /// Whether `port` serves a transfer now.
    pub fn is_serving(&self, port: u16) -> bool {
        self.served.contains_key(&port)
    }

    /// Starts serving `offer` on its port; its idle clock starts now.
    pub fn start(&mut self, now: Instant, offer: &TransferOffer) {
        let seal = offer.key.as_ref().map(SealKey::new);
        let config = SenderConfig {
            token: offer.token,
            seal: seal.clone(),
            peer_ip: offer.peer_ip,
            size: offer.size,
            part_size: offer.part_size,
            idle_timeout: self.idle_timeout,
            early: offer.early,
        };
        let mut served = Served {
            sender: Sender::new(config, now),
            token: offer.token,
            seal,
            last_check: now,
            transmit_owed: false,
        };
        // An early flight (PROTOCOL 2.1) has parts to send before any datagram arrives.
        Self::owe_transmit(&mut self.events, offer.port, &mut served);
        self.served.insert(offer.port, served);
    }

    /// Something happened on `port` (a datagram arrived, or its file changed).
    pub fn handle_input(&mut self, now: Instant, port: u16, input: SenderInput<'_>) {
        let Some(served) = self.served.get_mut(&port) else {
            return;
        };
        served.sender.handle_input(now, input);
        // A request was answered: the parts are about to be read, so the file is looked at first
        // (at most every CHANGE_CHECK_EVERY).
        if served.sender.has_output()
            && matches!(input, SenderInput::Datagram { .. })
            && now.saturating_duration_since(served.last_check) >= CHANGE_CHECK_EVERY
        {
            served.last_check = now;
            self.events.push_back(EndpointEvent::CheckFile { port });
        }
        Self::owe_transmit(&mut self.events, port, served);
    }

    fn owe_transmit(events: &mut VecDeque<EndpointEvent>, port: u16, served: &mut Served) {
        if !served.transmit_owed && served.sender.has_output() {
            served.transmit_owed = true;
            events.push_back(EndpointEvent::Transmit { port });
        }
    }

    /// Ends the transfer on `port` because its client left: ABORT 4 to the client's download
    /// socket when its address is known (the port is free once that is handed out), else at once.
    pub fn end(&mut self, now: Instant, port: u16) {
        if let Some(served) = self.served.get_mut(&port)
            && served.sender.peer().is_some()
        {
            served.sender.handle_input(now, SenderInput::ClientLeft);
            Self::owe_transmit(&mut self.events, port, served);
            return;
        }
        // Reported even for a port not served (any more): the chat server then frees it all
        // the same, and freeing a free port changes nothing.
        self.served.remove(&port);
        self.events.push_back(EndpointEvent::Ended { port, end: SenderEnd::ClientLeft });
    }

    /// The next datagram to send on `port`, or `None` when there is nothing more for now.
    pub fn poll_transmit(&mut self, port: u16) -> Option<Transmit> {
        let served = self.served.get_mut(&port)?;
        match served.sender.poll_output() {
            Some(SenderOutput::SendPart { version, to, req_seq, part, offset, len }) => {
                Some(Transmit::Part(PartOrder {
                    version,
                    seal: served.seal.clone(),
                    to,
                    token: served.token,
                    req_seq,
                    part,
                    offset,
                    len,
                }))
            }
            Some(SenderOutput::SendDatagram { to, bytes }) => {
                Some(Transmit::Datagram { to, bytes })
            }
            Some(SenderOutput::Done(end)) => {
                self.served.remove(&port);
                self.events.push_back(EndpointEvent::Ended { port, end });
                None
            }
            None => {
                served.transmit_owed = false;
                None
            }
        }
    }

    /// The next thing to do, or `None`.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// The earliest idle deadline of any transfer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.served.values().filter_map(|s| s.sender.poll_timeout()).min()
    }

    /// Ends the transfers whose client went silent for the idle timeout (U8).
    pub fn handle_timeout(&mut self, now: Instant) {
        for (&port, served) in &mut self.served {
            if served.sender.poll_timeout().is_some_and(|at| at <= now) {
                served.sender.handle_timeout(now);
                Self::owe_transmit(&mut self.events, port, served);
            }
        }
    }
}
