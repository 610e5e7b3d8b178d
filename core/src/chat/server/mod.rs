//! The chat server as a sans-IO state machine: all of PROTOCOL.md section 1, plus the bookkeeping
//! of download offers (2.1) that the chat connection hands out.
//!
//! A runtime feeds [`ServerInput`]s to [`ChatServer::handle_input`], then drains
//! [`ChatServer::poll_output`] until `None`, and arms a timer for [`ChatServer::poll_timeout`].
//! The server never blocks, reads a clock or touches a socket.
//!
//! Three decisions shape this file:
//! - **Fan-out is shared.** A public line is encoded once into [`Bytes`]; every recipient gets a
//!   clone of the same buffer, so one line to a room of n costs one allocation, not n.
//! - **Every connection's outgoing bytes are counted.** `queued` grows when the server emits a
//!   `Send` and shrinks when the runtime reports `Sent`. Past `max_queued_bytes` the connection is
//!   closed (C5): a client that does not read cannot make the server hold unbounded memory.
//! - **Presence lines are snapshots, not history.** A presence line (`ALL ...`) that has not gone
//!   out yet is replaced by a newer one (1.1): in the output queue a stale one is dropped, and for a
//!   client whose socket is backed up (more than `presence_defer_bytes` unsent) the line is not
//!   produced at all until its queue drains, and then reflects the room as it is at that moment.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::RngCore;

use crate::chat::catalogue::Catalogue;
use crate::chat::display::{escape_for_display, escape_truncated};
use crate::chat::flood::InputBudget;
use crate::chat::names::NameRegistry;
use crate::transfer::sender::SenderEnd;
use crate::wire::chat::{ClientLine, ServerLine, UdpOffer};
use crate::wire::line::{Framed, LineFramer, MAX_LINE};

/// A connection, numbered by the runtime. Never reused while the server knows it.
pub type ConnId = u64;

/// The smallest and largest part size the server grants (PROTOCOL 2.1).
pub const PART_SIZE_RANGE: RangeInclusive<u16> = 512..=65000;

/// How many characters of an unknown user or file name an `ERROR` echoes back: enough to
/// recognise it, short enough that the error line always fits the 4096-byte limit (S1).
const ECHO_CHARS: usize = 64;

/// Limits and defaults. Every number here is a policy a deployment may want to change.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections at once, named or not (C8).
    pub max_connections: usize,
    /// Connections at once from one IP address (C8).
    pub max_per_ip: usize,
    /// Above this many people, joins and leaves no longer send everyone a presence line (1.1).
    pub presence_room_limit: usize,
    /// Bytes handed to the runtime and not yet reported `Sent`, past which a connection is closed (C5).
    pub max_queued_bytes: usize,
    /// A client with more unsent bytes than this gets its presence line later, coalesced (1.1).
    /// Below it the line goes out at once, right after the join or leave it follows; above it the
    /// core keeps it until the client's queue drains (reported `Sent`), replacing it with every
    /// newer one. The default, one line's worth (4096 bytes), means a client that reads keeps
    /// that order, and one that lags holds at most one stale `ALL` line in a runtime's queue.
    /// 0 is the strictest reading of 1.1 (no stale line queued at all, ever) at the cost of an
    /// `ALL` line arriving after messages that were sent while it waited.
    pub presence_defer_bytes: usize,
    /// How long a new connection may take to send an acceptable name (C7).
    pub name_timeout: Duration,
    /// The UDP ports offers may use; the first free one is taken (2.1).
    pub udp_ports: RangeInclusive<u16>,
    /// Live transfers per client (2.2, U9).
    pub max_transfers_per_client: usize,
    /// A transfer whose client sent no valid request for this long is aborted (2.1, U8).
    pub transfer_idle_timeout: Duration,
    /// The part size when the client names none (2.1).
    pub default_part_size: u16,
    /// Bytes per second one connection may send, sustained; 0 for no limit (C6, see
    /// [`crate::chat::flood`]).
    pub max_input_rate: u32,
    /// Bytes one connection may send at once above the rate.
    pub input_burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            max_per_ip: 200,
            presence_room_limit: 100,
            max_queued_bytes: 1 << 20,
            presence_defer_bytes: crate::wire::line::MAX_LINE,
            name_timeout: Duration::from_secs(30),
            udp_ports: 55000..=55015,
            max_transfers_per_client: 4,
            transfer_idle_timeout: crate::transfer::sender::DEFAULT_IDLE_TIMEOUT,
            default_part_size: 1200,
            // A person types a few bytes a second and pastes a few kilobytes; a script relaying
            // a log may send more. 256 KiB/s per connection is far above both and still keeps
            // one flooder from burying a room of a hundred (25 MB/s of fan-out).
            max_input_rate: 256 * 1024,
            input_burst: 1024 * 1024,
        }
    }
}

/// Something that happened at the edge.
#[derive(Debug, Clone, Copy)]
pub enum ServerInput<'a> {
    /// A TCP connection was accepted.
    Opened { conn: ConnId, peer: SocketAddr },
    /// Bytes arrived on a connection.
    Received { conn: ConnId, bytes: &'a [u8] },
    /// The runtime wrote `len` bytes of what it was given for `conn` to the kernel.
    Sent { conn: ConnId, len: usize },
    /// The peer closed, reset or errored. Leaves exactly like `{quit}` (1.2).
    Closed { conn: ConnId },
    /// The UDP transfer on `port` is over (FINISHED, ABORT, idle timeout, bind failure).
    TransferEnded { port: u16 },
    /// The runtime cannot use this UDP port (another program holds it): it is never offered.
    PortUnavailable { port: u16 },
    /// The served folder was read again: these are the files on offer from now on. Live
    /// transfers are not affected; they hold their own copy of what was offered.
    Catalogue(&'a Catalogue),
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Write these bytes to the connection (buffer shared between recipients).
    Send { conn: ConnId, bytes: Bytes },
    /// Close the connection after writing everything queued for it before this. The server has
    /// already forgotten it: later inputs for this id are ignored.
    Close { conn: ConnId },
    /// Bind `offer.port` and serve the transfer. Emitted before the `UDP ...` line's `Send`.
    StartTransfer(TransferOffer),
    /// Stop reading this connection: it sent more than its share (C6). Its bytes wait in the
    /// kernel meanwhile, so its own TCP window closes and nobody else notices.
    PauseReading { conn: ConnId },
    /// Read this connection again (its pause is over).
    ResumeReading { conn: ConnId },
    /// Something worth a log line.
    Log(LogEvent),
}

/// Everything a runtime needs to serve one download: the offer as the client receives it, and
/// who it was made to. The offer's fields read through `Deref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOffer {
    pub conn: ConnId,
    /// Only datagrams from this address are answered (2.2, U2).
    pub peer_ip: IpAddr,
    pub offer: UdpOffer,
}

impl std::ops::Deref for TransferOffer {
    type Target = UdpOffer;

    fn deref(&self) -> &UdpOffer {
        &self.offer
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent `{quit}`.
    Quit,
    /// The peer closed or reset the socket.
    PeerClosed,
    /// Its unsent bytes passed the bound (C5).
    SlowReader { queued: usize },
    /// No acceptable name within the timeout (C7).
    NameTimeout,
}

/// Why a new connection was refused (C8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    TooManyConnections { max: usize },
    TooManyFromIp { max: usize },
}

/// A log line. `Display` gives the forms of the original system where they exist; names are
/// plain by construction, file names and peers are escaped so nothing can forge a line (S4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// `[CONNECTION] ('127.0.0.1', 52418) connected to the server` (the runtime appends ` at <time>`).
    Connected {
        conn: ConnId,
        peer: SocketAddr,
    },
    Joined {
        conn: ConnId,
        name: String,
    },
    /// `[DISCONNECTED] <name> disconnected`, or the peer when no name was given.
    Disconnected {
        conn: ConnId,
        peer: SocketAddr,
        name: Option<String>,
        reason: DisconnectReason,
    },
    Refused {
        conn: ConnId,
        peer: SocketAddr,
        reason: RefuseReason,
    },
    TransferOffered {
        conn: ConnId,
        port: u16,
        transfer_id: u64,
        file: String,
    },
    /// `[UDP STARTED] Waiting for connections... port <port>`: the port serves the transfer.
    TransferStarted {
        port: u16,
        transfer_id: u64,
        file: String,
    },
    /// The transfer on `port` is over and the port is free again.
    TransferEnded {
        port: u16,
        end: SenderEnd,
    },
}

struct Peer(SocketAddr);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "('{}', {})", self.0.ip(), self.0.port())
    }
}

impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogEvent::Connected { peer, .. } => {
                write!(f, "[CONNECTION] {} connected to the server", Peer(*peer))
            }
            LogEvent::Joined { name, .. } => {
                write!(f, "[JOINED] {} joined the chat", escape_for_display(name))
            }
            LogEvent::Disconnected {
                peer, name, reason, ..
            } => {
                match name {
                    Some(name) => write!(
                        f,
                        "[DISCONNECTED] {} disconnected",
                        escape_for_display(name)
                    )?,
                    None => write!(
                        f,
                        "[DISCONNECTED] {} disconnected before joining",
                        Peer(*peer)
                    )?,
                }
                match reason {
                    DisconnectReason::Quit | DisconnectReason::PeerClosed => Ok(()),
                    DisconnectReason::SlowReader { queued } => {
                        write!(f, " (closed: reads too slowly, {queued} bytes unsent)")
                    }
                    DisconnectReason::NameTimeout => write!(f, " (closed: no name given in time)"),
                }
            }
            LogEvent::Refused { peer, reason, .. } => match reason {
                RefuseReason::TooManyConnections { max } => {
                    write!(
                        f,
                        "[REFUSED] {} refused: already {max} connections",
                        Peer(*peer)
                    )
                }
                RefuseReason::TooManyFromIp { max } => {
                    write!(
                        f,
                        "[REFUSED] {} refused: already {max} connections from this address",
                        Peer(*peer)
                    )
                }
            },
            LogEvent::TransferOffered {
                conn,
                port,
                transfer_id,
                file,
            } => write!(
                f,
                "[TRANSFER] #{transfer_id} {} to connection {conn} on UDP port {port}",
                escape_for_display(file)
            ),
            LogEvent::TransferStarted {
                port,
                transfer_id,
                file,
            } => write!(
                f,
                "[UDP STARTED] Waiting for connections... port {port}, transfer {transfer_id}, file {}",
                escape_for_display(file)
            ),
            LogEvent::TransferEnded { port, end } => {
                write!(f, "[UDP ENDED] port {port}: {end}")
            }
        }
    }
}

/// One TCP connection's state.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    framer: LineFramer,
    /// `Some` once joined: the name as registered and the join sequence number (room order).
    joined: Option<(String, u64)>,
    /// The name deadline, while no name has been accepted.
    deadline: Option<Instant>,
    /// Bytes emitted as `Send` (or waiting in the output queue) and not yet reported `Sent`.
    queued: usize,
    /// Live transfers offered on this connection.
    transfers: usize,
    /// Generation of the newest presence line queued for this client; older ones are stale.
    presence_gen: u64,
    /// A presence line is owed but held back until this client's queue drains.
    presence_deferred: bool,
    /// What this connection may still send before its socket is read less (C6).
    budget: InputBudget,
}

/// An output waiting in the server's queue.
#[derive(Debug)]
enum Pending {
    Ready(ServerOutput),
    /// A presence line, dropped at poll time if a newer one was queued for the same client.
    Presence {
        conn: ConnId,
        generation: u64,
        bytes: Bytes,
    },
}

/// The chat server. See the module documentation.
pub struct ChatServer {
    config: ServerConfig,
    catalogue: Catalogue,
    rng: Box<dyn RngCore + Send>,
    conns: HashMap<ConnId, Conn>,
    per_ip: HashMap<IpAddr, usize>,
    names: NameRegistry<ConnId>,
    /// Joined clients by join sequence: iteration is join order (1.3).
    room: BTreeMap<u64, ConnId>,
    next_join_seq: u64,
    name_deadlines: BTreeSet<(Instant, ConnId)>,
    /// Connections not read until then, because they sent more than their share (C6).
    paused: BTreeSet<(Instant, ConnId)>,
    /// UDP ports in use and the connection whose offer holds each.
    ports: BTreeMap<u16, ConnId>,
    /// Ports of the range the runtime could not bind; skipped when choosing.
    unavailable: BTreeSet<u16>,
    next_transfer_id: u64,
    out: VecDeque<Pending>,
    /// Connections whose queue passed the bound, closed once the current input is handled.
    to_kick: Vec<ConnId>,
}

impl fmt::Debug for ChatServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatServer")
            .field("connections", &self.conns.len())
            .field("joined", &self.room.len())
            .field("ports_in_use", &self.ports.len())
            .field("pending_outputs", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl ChatServer {
    /// A server whose tokens come from a BLAKE3-based generator seeded with `seed`. The runtime
    /// should pass a seed from the OS random source; tests pass a constant to get fixed tokens.
    pub fn new(config: ServerConfig, catalogue: Catalogue, seed: u64) -> Self {
        Self::with_rng(config, catalogue, Box::new(SeededTokens::new(seed)))
    }

    /// A server drawing tokens from the caller's generator.
    pub fn with_rng(
        config: ServerConfig,
        catalogue: Catalogue,
        rng: Box<dyn RngCore + Send>,
    ) -> Self {
        Self {
            config,
            catalogue,
            rng,
            conns: HashMap::new(),
            per_ip: HashMap::new(),
            names: NameRegistry::new(),
            room: BTreeMap::new(),
            next_join_seq: 0,
            name_deadlines: BTreeSet::new(),
            paused: BTreeSet::new(),
            ports: BTreeMap::new(),
            unavailable: BTreeSet::new(),
            next_transfer_id: 0,
            out: VecDeque::new(),
            to_kick: Vec::new(),
        }
    }

    /// How many connections the server knows (named or not).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// How many clients have joined.
    pub fn joined_count(&self) -> usize {
        self.room.len()
    }

    /// Bytes emitted for `conn` and not yet reported `Sent` (0 for unknown connections).
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queued)
    }

    pub fn handle_input(&mut self, now: Instant, input: ServerInput<'_>) {
        match input {
            ServerInput::Opened { conn, peer } => self.on_opened(now, conn, peer),
            ServerInput::Received { conn, bytes } => self.on_received(now, conn, bytes),
            ServerInput::Sent { conn, len } => self.on_sent(conn, len),
            ServerInput::Closed { conn } => self.leave(conn, DisconnectReason::PeerClosed, false),
            ServerInput::TransferEnded { port } => {
                let owner = self.ports.remove(&port);
                if let Some(c) = owner.and_then(|owner| self.conns.get_mut(&owner)) {
                    c.transfers = c.transfers.saturating_sub(1);
                }
            }
            ServerInput::PortUnavailable { port } => {
                self.unavailable.insert(port);
            }
            ServerInput::Catalogue(catalogue) => self.catalogue = catalogue.clone(),
        }
        self.kick_slow_readers();
    }

    /// The next thing to do, or `None` when there is nothing (call until `None`).
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        while let Some(pending) = self.out.pop_front() {
            match pending {
                Pending::Ready(output) => return Some(output),
                Pending::Presence {
                    conn,
                    generation,
                    bytes,
                } => match self.conns.get_mut(&conn) {
                    Some(c) if c.presence_gen == generation => {
                        return Some(ServerOutput::Send { conn, bytes });
                    }
                    Some(c) => c.queued = c.queued.saturating_sub(bytes.len()),
                    None => {}
                },
            }
        }
        None
    }

    /// When [`ChatServer::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let names = self.name_deadlines.first().map(|(at, _)| *at);
        let pauses = self.paused.first().map(|(at, _)| *at);
        names.into_iter().chain(pauses).min()
    }

    /// Closes connections that did not give a name in time (C7) and resumes reading the ones
    /// whose pause is over (C6).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.paused.first() {
            if at > now {
                break;
            }
            self.paused.remove(&(at, conn));
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            match c.budget.paused_until(now) {
                Some(until) => {
                    self.paused.insert((until, conn));
                }
                None => self.push(ServerOutput::ResumeReading { conn }),
            }
        }
        while let Some(&(at, conn)) = self.name_deadlines.first() {
            if at > now {
                break;
            }
            self.name_deadlines.remove(&(at, conn));
            let secs = self.config.name_timeout.as_secs();
            self.send_error(conn, &format!("no name given within {secs} seconds"));
            self.leave(conn, DisconnectReason::NameTimeout, true);
        }
        self.kick_slow_readers();
    }

    fn on_opened(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) {
        if self.conns.contains_key(&conn) {
            return; // the runtime reused a live id: ignore rather than corrupt state
        }
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        let refuse = if self.conns.len() >= self.config.max_connections {
            Some(RefuseReason::TooManyConnections {
                max: self.config.max_connections,
            })
        } else if from_ip >= self.config.max_per_ip {
            Some(RefuseReason::TooManyFromIp {
                max: self.config.max_per_ip,
            })
        } else {
            None
        };
        if let Some(reason) = refuse {
            let text = match reason {
                RefuseReason::TooManyConnections { .. } => {
                    "server full: too many connections, try later"
                }
                RefuseReason::TooManyFromIp { .. } => "too many connections from your address",
            };
            let line = ServerLine::Error(text.to_owned()).encode();
            self.push(ServerOutput::Log(LogEvent::Refused { conn, peer, reason }));
            self.push(ServerOutput::Send {
                conn,
                bytes: Bytes::from(line),
            });
            self.push(ServerOutput::Close { conn });
            return;
        }
        let deadline = now + self.config.name_timeout;
        self.conns.insert(
            conn,
            Conn {
                peer,
                framer: LineFramer::new(),
                joined: None,
                deadline: Some(deadline),
                queued: 0,
                transfers: 0,
                presence_gen: 0,
                presence_deferred: false,
                budget: InputBudget::new(now, self.config.max_input_rate, self.config.input_burst),
            },
        );
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.name_deadlines.insert((deadline, conn));
        self.push(ServerOutput::Log(LogEvent::Connected { conn, peer }));
    }

    fn on_received(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.budget.spend(now, bytes.len());
        let pause = c.budget.paused_until(now);
        c.framer.push(bytes);
        if let Some(until) = pause {
            // It sent more than its share (C6): what it sent is still handled, the next read
            // waits until the whole debt is paid back (a read that arrived while paused, already
            // in flight, makes the pause longer).
            let was_paused = self.paused.iter().find(|&&(_, p)| p == conn).copied();
            match was_paused {
                Some(entry) => {
                    self.paused.remove(&entry);
                }
                None => self.push(ServerOutput::PauseReading { conn }),
            }
            self.paused.insert((until, conn));
        }
        loop {
            // Re-fetch every time: handling a line may close this very connection.
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(framed) = c.framer.next() else {
                return;
            };
            match framed {
                Framed::TooLong => {
                    self.send_error(conn, &format!("line too long: at most {MAX_LINE} bytes"));
                }
                Framed::InvalidUtf8 => self.send_error(conn, "line is not valid UTF-8"),
                Framed::Line(line) => {
                    if c.joined.is_some() {
                        self.on_command(conn, &line);
                    } else {
                        self.on_name(conn, &line);
                    }
                }
            }
        }
    }

    fn on_sent(&mut self, conn: ConnId, len: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.queued = c.queued.saturating_sub(len);
        if c.presence_deferred && c.queued <= self.config.presence_defer_bytes {
            c.presence_deferred = false;
            self.queue_presence(conn);
        }
    }

    /// The first line: a name (1.1).
    fn on_name(&mut self, conn: ConnId, name: &str) {
        if let Err(e) = self.names.claim(name, conn) {
            self.send_error(conn, &e.to_string());
            return;
        }
        let seq = self.next_join_seq;
        self.next_join_seq += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.joined = Some((name.to_owned(), seq));
        if let Some(deadline) = c.deadline.take() {
            self.name_deadlines.remove(&(deadline, conn));
        }
        self.room.insert(seq, conn);
        self.push(ServerOutput::Log(LogEvent::Joined {
            conn,
            name: name.to_owned(),
        }));
        self.broadcast(ServerLine::Joined(name.to_owned()).encode());
        if self.room.len() <= self.config.presence_room_limit {
            self.presence_to_everyone();
        } else {
            self.queue_presence(conn);
        }
    }

    /// Any line after the name (1.2).
    fn on_command(&mut self, conn: ConnId, line: &str) {
        let command = match ClientLine::parse(line) {
            Ok(command) => command,
            Err(e) => return self.send_error(conn, &e.to_string()),
        };
        match command {
            ClientLine::Empty => {}
            ClientLine::Show => {
                let line = self.presence_line(conn);
                self.send(conn, line);
            }
            ClientLine::GetListFile => {
                let files = self.catalogue.names().map(str::to_owned).collect();
                self.send(conn, Bytes::from(ServerLine::ChooseFile(files).encode()));
            }
            ClientLine::Quit => self.leave(conn, DisconnectReason::Quit, true),
            ClientLine::Public(text) => {
                let Some(from) = self.name_of(conn) else {
                    return;
                };
                let line = ServerLine::Public { from, text }.encode();
                if self.fits(conn, &line) {
                    self.broadcast(line);
                }
            }
            ClientLine::Private { to, text } => self.on_private(conn, &to, text),
            ClientLine::Download { file, part_size } => self.on_download(conn, &file, part_size),
        }
    }

    fn on_private(&mut self, conn: ConnId, to: &str, text: String) {
        let Some(from) = self.name_of(conn) else {
            return;
        };
        let Some((recipient, to_name)) = self.names.lookup(to) else {
            return self.send_error(
                conn,
                &format!("no such user: {}", escape_truncated(to, ECHO_CHARS)),
            );
        };
        let echo = ServerLine::PrivateEcho {
            to: to_name.to_owned(),
            text: text.clone(),
        }
        .encode();
        let delivered = ServerLine::Private { from, text }.encode();
        if self.fits(conn, &echo) && self.fits(conn, &delivered) {
            self.send(conn, Bytes::from(echo));
            self.send(recipient, Bytes::from(delivered));
        }
    }

    fn on_download(&mut self, conn: ConnId, file: &str, part_size: Option<u32>) {
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
        let peer_ip = c.peer.ip();
        let cap = self.config.max_transfers_per_client;
        if c.transfers >= cap {
            return self.send_error(conn, &format!("too many transfers: at most {cap} at once"));
        }
        let Some(port) = self
            .config
            .udp_ports
            .clone()
            .find(|p| !self.ports.contains_key(p) && !self.unavailable.contains(p))
        else {
            return self.send_error(conn, "server busy: no free transfer port, try again later");
        };
        let wanted = part_size.unwrap_or(u32::from(self.config.default_part_size));
        let part_size = u16::try_from(wanted)
            .unwrap_or(u16::MAX)
            .clamp(*PART_SIZE_RANGE.start(), *PART_SIZE_RANGE.end());
        let transfer_id = self.next_transfer_id;
        self.next_transfer_id += 1;
        let token = self.rng.next_u64();
        self.ports.insert(port, conn);
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
        };
        let line = Bytes::from(ServerLine::Udp(offer.clone()).encode());
        self.push(ServerOutput::StartTransfer(TransferOffer {
            conn,
            peer_ip,
            offer,
        }));
        self.push(ServerOutput::Log(LogEvent::TransferOffered {
            conn,
            port,
            transfer_id,
            file: file.to_owned(),
        }));
        self.send(conn, line);
    }

    /// Removes a connection; announces the leave if it had joined. `close`: the server ends it.
    fn leave(&mut self, conn: ConnId, reason: DisconnectReason, close: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if close {
            self.push(ServerOutput::Close { conn });
        }
        if let Some(count) = self.per_ip.get_mut(&c.peer.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&c.peer.ip());
            }
        }
        if let Some(deadline) = c.deadline {
            self.name_deadlines.remove(&(deadline, conn));
        }
        self.paused.retain(|&(_, paused)| paused != conn);
        let name = c.joined.as_ref().map(|(n, _)| n.clone());
        self.push(ServerOutput::Log(LogEvent::Disconnected {
            conn,
            peer: c.peer,
            name: name.clone(),
            reason,
        }));
        if let Some((name, seq)) = c.joined {
            self.names.release(&name);
            self.room.remove(&seq);
            self.broadcast(ServerLine::Left(name).encode());
            if self.room.len() <= self.config.presence_room_limit {
                self.presence_to_everyone();
            }
        }
    }

    fn kick_slow_readers(&mut self) {
        while let Some(conn) = self.to_kick.pop() {
            let queued = self.queued_bytes(conn);
            if self.conns.contains_key(&conn) {
                self.leave(conn, DisconnectReason::SlowReader { queued }, true);
            }
        }
    }

    fn name_of(&self, conn: ConnId) -> Option<String> {
        self.conns
            .get(&conn)
            .and_then(|c| c.joined.as_ref())
            .map(|(n, _)| n.clone())
    }

    /// A reply line must itself fit the line limit, or the client would refuse it. The sender's
    /// name makes the reply longer than the request, so a request near the limit can overflow.
    fn fits(&mut self, conn: ConnId, line: &str) -> bool {
        if line.len() - 1 <= MAX_LINE {
            return true;
        }
        self.send_error(conn, "message too long once your name is added: shorten it");
        false
    }

    /// `ALL` and the other joined names in join order.
    fn presence_line(&self, conn: ConnId) -> Bytes {
        let others = self.room.values().filter(|&&c| c != conn).filter_map(|c| {
            self.conns
                .get(c)
                .and_then(|c| c.joined.as_ref())
                .map(|(n, _)| n.clone())
        });
        Bytes::from(ServerLine::All(others.collect()).encode())
    }

    fn presence_to_everyone(&mut self) {
        let members: Vec<ConnId> = self.room.values().copied().collect();
        for conn in members {
            self.queue_presence(conn);
        }
    }

    /// Queues a presence line for `conn`, superseding one not yet polled; defers it while the
    /// client's socket is backed up.
    fn queue_presence(&mut self, conn: ConnId) {
        let line = self.presence_line(conn);
        let defer_above = self.config.presence_defer_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.queued > defer_above {
            c.presence_deferred = true;
            return;
        }
        c.presence_gen += 1;
        let generation = c.presence_gen;
        if self.account(conn, line.len()) {
            self.out.push_back(Pending::Presence {
                conn,
                generation,
                bytes: line,
            });
        }
    }

    fn broadcast(&mut self, line: String) {
        let bytes = Bytes::from(line);
        let members: Vec<ConnId> = self.room.values().copied().collect();
        for conn in members {
            self.send(conn, bytes.clone());
        }
    }

    fn send_error(&mut self, conn: ConnId, reason: &str) {
        self.send(
            conn,
            Bytes::from(ServerLine::Error(reason.to_owned()).encode()),
        );
    }

    fn send(&mut self, conn: ConnId, bytes: Bytes) {
        if self.account(conn, bytes.len()) {
            self.push(ServerOutput::Send { conn, bytes });
        }
    }

    /// Adds `len` to the connection's queue; false (and a kick scheduled) when over the bound or
    /// the connection is unknown or already being kicked.
    fn account(&mut self, conn: ConnId, len: usize) -> bool {
        let max = self.config.max_queued_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.queued > max {
            return false; // already over: kick pending
        }
        c.queued += len;
        if c.queued > max {
            self.to_kick.push(conn);
            return false;
        }
        true
    }

    fn push(&mut self, output: ServerOutput) {
        self.out.push_back(Pending::Ready(output));
    }
}

/// The default token source: BLAKE3 in keyed mode over a counter. Tokens must not be guessable
/// from one another (U2), which a plain seeded PRNG like SplitMix would not guarantee.
struct SeededTokens {
    key: [u8; 32],
    counter: u64,
}

impl SeededTokens {
    fn new(seed: u64) -> Self {
        Self {
            key: *blake3::hash(&seed.to_le_bytes()).as_bytes(),
            counter: 0,
        }
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
