//! The chat server as a sans-IO state machine: all of PROTOCOL.md section 1, plus the bookkeeping
//! of download offers (2.1) that the chat connection hands out.
//!
//! A runtime feeds [`ServerInput`]s to [`ChatServer::handle_input`], then drains
//! [`ChatServer::poll_output`] until `None`, and arms a timer for [`ChatServer::poll_timeout`].
//! The server never blocks, reads a clock or touches a socket.
//!
//! Three decisions shape this module:
//! - **Fan-out is shared.** A public line is encoded once into [`Bytes`]; every recipient gets a
//!   clone of the same buffer, so one line to a room of n costs one allocation, not n.
//! - **Every connection's outgoing bytes are counted.** `queued` grows when the server emits a
//!   `Send` and shrinks when the runtime reports `Sent`. Past `max_queued_bytes` the connection is
//!   closed (C5): a client that does not read cannot make the server hold unbounded memory.
//! - **Presence lines are snapshots, made when they are written.** A join or leave does not make
//!   anyone's `ALL ...` line (1.1); it marks one as owed ([`ServerOutput::Presence`]), and the line
//!   is made by [`ChatServer::take_presence`] when the runtime is about to write to that client. So
//!   a burst of joins before a write costs each client one line showing the room as it is, never
//!   a queue of stale ones, and a client whose socket is backed up (more than
//!   `presence_defer_bytes` unsent) gets its line once its backlog drains.
//!
//! The server's jobs live in one file each. This one holds the types a runtime sees, the read
//! pauses of flood protection (C6), and the dispatch of inputs, outputs, timeouts and of each
//! client line to its command (`docs/PROTOCOL.md` section 1.2 "What a client sends"):
//! - `admission`: opening connections under the caps, names and the name timeout, leaving;
//! - `outbox`: queued-bytes accounting, slow-reader kicks, presence lines, send helpers;
//! - `offers`: `download_file`, transfer counts, the token generator;
//! - `ports`: the UDP port pool;
//! - `log`: [`LogEvent`] and its `Display` forms;
//! - `cluster`: the room shared with other nodes through a broker (section 8).
//!
//! The rules themselves are specified in `docs/PROTOCOL.md`, sections 1.1 to 1.5 and 2.1.

mod admission;
mod cluster;
mod conn_map;
mod log;
mod offers;
mod outbox;
mod password;
mod ports;
mod room;

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::RngCore;

use crate::chat::catalogue::Catalogue;
use crate::chat::flood::InputBudget;
use crate::chat::names::{HeldName, NameRegistry};
use crate::chat::password::Password;
use crate::cluster::{ClusterCommand, ClusterConfig, ClusterEvent};
use crate::wire::chat::{ClientLine, ServerLine};
use crate::wire::line::{Framed, LineFramer, MAX_LINE};

pub use self::conn_map::{ConnHasher, ConnMap, ConnSet};
pub use self::log::{ClusterNote, DisconnectReason, LogEvent, RefuseReason};
pub use self::offers::{CAP_WAIT, EarlyStart, TransferOffer};
pub use self::password::{FIRST_WAIT, FREE_TRIES, MAX_WAIT};

use self::cluster::ClusterState;
use self::offers::{HeldDownload, SeededTokens};
use self::password::{Door, Guesses};
use self::ports::PortPool;
use self::room::Room;

/// A connection, numbered by the runtime. Never reused while the server knows it.
pub type ConnId = u64;

pub use crate::wire::chat::PART_SIZE_RANGE;

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
    /// Live transfers per client (2.1, U9).
    pub max_transfers_per_client: usize,
    /// Live transfers per IP address, whichever of its connections asked (2.1, U9), so one host
    /// with many connections cannot hold every port.
    pub max_transfers_per_ip: usize,
    /// A transfer whose client sent no valid request for this long is aborted (2.1, U8).
    pub transfer_idle_timeout: Duration,
    /// Send the early flights clients ask for (2.1, version 4). Off, a line that asks for one
    /// gets its offer alone, and the client asks for the parts as before.
    pub early_flights: bool,
    /// The part size when the client names none (2.1).
    pub default_part_size: u16,
    /// Bytes per second one connection may send, sustained; 0 for no limit (C6, see
    /// [`crate::chat::flood`]).
    pub max_input_rate: u32,
    /// Bytes one connection may send at once above the rate.
    pub input_burst: u32,
    /// The room password (PROTOCOL 1.6): when set, a connection must come over TLS and send
    /// `PASS <password>` before its name.
    pub password: Option<Password>,
    /// `Some` when this server is one node of a cluster sharing the room through a broker
    /// (section 8); `None`, the default, for a server alone.
    pub cluster: Option<ClusterConfig>,
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
            // Half the default 16 ports: one host can never lock out the others.
            max_transfers_per_ip: 8,
            transfer_idle_timeout: crate::transfer::sender::DEFAULT_IDLE_TIMEOUT,
            early_flights: true,
            default_part_size: 1200,
            // A person types a few bytes a second and pastes a few kilobytes; a script relaying
            // a log may send more. 256 KiB/s per connection is far above both and still keeps
            // one flooder from burying a room of a hundred (25 MB/s of fan-out).
            max_input_rate: 256 * 1024,
            input_burst: 1024 * 1024,
            password: None,
            cluster: None,
        }
    }
}

/// Something that happened at the edge.
#[derive(Debug, Clone, Copy)]
pub enum ServerInput<'a> {
    /// A TCP connection was accepted.
    Opened {
        /// The id the runtime gave it.
        conn: ConnId,
        /// Its remote address.
        peer: SocketAddr,
    },
    /// Bytes arrived on a connection.
    Received {
        /// The connection they arrived on.
        conn: ConnId,
        /// The bytes, as read (any chunking).
        bytes: &'a [u8],
    },
    /// The runtime wrote `len` bytes of what it was given for `conn` to the kernel.
    Sent {
        /// The connection written to.
        conn: ConnId,
        /// How many bytes were written.
        len: usize,
    },
    /// The peer closed, reset or errored. Leaves exactly like `{quit}` (1.2).
    Closed {
        /// The connection that ended.
        conn: ConnId,
    },
    /// The UDP transfer on `port` is over (FINISHED, ABORT, idle timeout, bind failure).
    TransferEnded {
        /// The port the transfer was served on.
        port: u16,
    },
    /// The runtime cannot use this UDP port (another program holds it): it is never offered.
    PortUnavailable {
        /// The port that could not be bound.
        port: u16,
    },
    /// The served folder was read again: these are the files on offer from now on. Live
    /// transfers are not affected; they hold their own copy of what was offered.
    Catalogue(&'a Catalogue),
    /// The cluster's broker said something (section 8); ignored by a server alone.
    Cluster(&'a ClusterEvent),
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Write these bytes to the connection.
    Send {
        /// The connection to write to.
        conn: ConnId,
        /// The bytes: one or more whole lines.
        bytes: Bytes,
    },
    /// Write these bytes to each of these connections: a line to the room, encoded once and
    /// handed over once, whatever the room's size. Each connection's queue is already charged.
    SendToMany {
        /// The recipients, in room order.
        conns: Vec<ConnId>,
        /// The bytes: one whole line.
        bytes: Bytes,
    },
    /// A presence line is owed to `conn` (1.1): when about to write to it, take the line with
    /// [`ChatServer::take_presence`], which makes it from the room as it is then. Emitted when the
    /// debt starts; further changes before the line is taken add nothing.
    Presence {
        /// The connection owed a presence line.
        conn: ConnId,
    },
    /// Close the connection after writing everything queued for it before this. The server has
    /// already forgotten it: later inputs for this id are ignored.
    Close {
        /// The connection to close.
        conn: ConnId,
    },
    /// Bind `offer.port` and serve the transfer. Emitted before the `UDP ...` line's `Send`.
    StartTransfer(TransferOffer),
    /// End the transfer on `port` now: the client it was offered to has left (PROTOCOL 4), so
    /// its port is not held until the idle timeout. Answered, like any end, with
    /// [`ServerInput::TransferEnded`].
    EndTransfer {
        /// The port.
        port: u16,
    },
    /// Stop reading this connection: it sent more than its share (C6), or one of its lines waits
    /// for an answer (a download at the transfer cap, 2.1) and the lines behind it must wait
    /// too. Its bytes wait in the kernel meanwhile, so its own TCP window closes and nobody else
    /// notices.
    PauseReading {
        /// The connection not to read.
        conn: ConnId,
    },
    /// Read this connection again (its pause is over).
    ResumeReading {
        /// The connection to read again.
        conn: ConnId,
    },
    /// Something for the cluster's broker to do (section 8).
    Cluster(ClusterCommand),
    /// Something worth a log line.
    Log(LogEvent),
}

/// Who holds a name: one of this server's connections, or a person on another node, by the
/// join sequence number they were given here (section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Local(ConnId),
    Remote(u64),
}

/// One TCP connection's state.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    framer: LineFramer,
    /// `Some` once joined: the name as registered (the registry keeps only its digests) and the
    /// join sequence number (room order).
    joined: Option<(HeldName, u64)>,
    /// The name deadline, while no name has been accepted.
    deadline: Option<Instant>,
    /// Bytes emitted as `Send` (or waiting in the output queue) and not yet reported `Sent`.
    queued: usize,
    /// Live transfers offered on this connection.
    transfers: u32,
    /// A presence line is owed, to be made when it is taken (1.1).
    presence_owed: bool,
    /// It came in over TLS (PROTOCOL 1.6), so it may give the room password, and its offers
    /// carry a key and their datagrams are sealed (PROTOCOL 2.7). Set by the server driver with
    /// [`ChatServer::set_secure`].
    secure: bool,
    /// What this connection may still send before its socket is read less (C6).
    budget: InputBudget,
    /// It gave the room password (or the room has none to give).
    admitted: bool,
    /// The name it asked for, while the cluster's broker is asked whether it is free (8.3):
    /// its next lines wait in the framer until the answer.
    claiming: Option<Box<str>>,
}

/// The chat server. See the module documentation.
pub struct ChatServer {
    config: ServerConfig,
    catalogue: Catalogue,
    rng: Box<dyn RngCore + Send>,
    /// Boxed: a table's buckets are up to twice its entries, and a box is 8 bytes where a
    /// connection's state is over 200 (issue 12: memory per idle person).
    conns: ConnMap<Box<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
    names: NameRegistry<Holder>,
    /// Joined clients by join sequence: iteration is join order (1.3).
    room: Room,
    next_join_seq: u64,
    name_deadlines: BTreeSet<(Instant, ConnId)>,
    /// Connections not read until then, because they sent more than their share (C6).
    paused: BTreeSet<(Instant, ConnId)>,
    /// UDP ports in use (and by whom) and the ones the runtime could not bind.
    ports: PortPool,
    next_transfer_id: u64,
    out: VecDeque<ServerOutput>,
    /// Connections whose queue passed the bound, closed once the current input is handled.
    to_kick: Vec<ConnId>,
    /// Wrong passwords by address (PROTOCOL 1.6).
    guesses: Guesses,
    /// The other nodes' people and the link to the broker, when this is a node of a cluster.
    cluster: Option<Box<ClusterState>>,
    /// The other nodes' people by join sequence (shared with `room`): listed in `ALL` lines.
    remote_room: BTreeMap<u64, String>,
    /// Download lines waiting for their client to hold fewer transfers than the cap (2.1).
    held_downloads: BTreeMap<ConnId, HeldDownload>,
}

impl fmt::Debug for ChatServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatServer")
            .field("connections", &self.conns.len())
            .field("joined", &self.room.len())
            .field("ports_in_use", &self.ports.in_use())
            .field("pending_outputs", &self.out.len())
            .finish_non_exhaustive()
    }
}

/// Frees an empty queue that a burst (a join in a big room owes everyone a line) made large, so
/// that an idle server does not keep the burst's high-water mark.
pub(crate) fn shrink_after_burst<T>(queue: &mut VecDeque<T>) {
    const KEEP: usize = 256;
    if queue.is_empty() && queue.capacity() > KEEP {
        *queue = VecDeque::with_capacity(KEEP);
    }
}

impl ChatServer {
    /// A server whose tokens come from a BLAKE3-based generator seeded with `seed`. The runtime
    /// should pass a seed from the OS random source; tests pass a constant to get fixed tokens.
    pub fn new(config: ServerConfig, catalogue: Catalogue, seed: u64) -> Self {
        Self::with_rng(config, catalogue, Box::new(SeededTokens::new(seed)))
    }

    /// A server whose tokens and transfer keys come from the BLAKE3-based generator keyed with
    /// `seed`: 32 bytes from the OS random source in a runtime, so that the keys of sealed
    /// transfers (PROTOCOL 2.7) are as hard to guess as the seed. [`ChatServer::new`]'s 64-bit
    /// seed is for tests and the simulator, which want the same keys on every run.
    pub fn with_secret_seed(config: ServerConfig, catalogue: Catalogue, seed: [u8; 32]) -> Self {
        Self::with_rng(config, catalogue, Box::new(SeededTokens::from_key(seed)))
    }

    /// Marks `conn` as private (its bytes travel over TLS) or not: the offers made to a private
    /// connection carry a fresh key and their datagrams are sealed (PROTOCOL 2.7). Call it right
    /// after the connection opened, before its first line is read.
    pub fn set_secure(&mut self, conn: ConnId, secure: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.secure = secure;
        }
    }

    /// A server drawing tokens from the caller's generator.
    pub fn with_rng(
        config: ServerConfig,
        catalogue: Catalogue,
        rng: Box<dyn RngCore + Send>,
    ) -> Self {
        let ports = PortPool::new(config.udp_ports.clone());
        let cluster = config.cluster.clone().map(|c| Box::new(ClusterState::new(c)));
        Self {
            config,
            catalogue,
            rng,
            conns: ConnMap::default(),
            per_ip: HashMap::new(),
            names: NameRegistry::new(),
            room: Room::default(),
            next_join_seq: 0,
            name_deadlines: BTreeSet::new(),
            paused: BTreeSet::new(),
            ports,
            next_transfer_id: 0,
            out: VecDeque::new(),
            to_kick: Vec::new(),
            guesses: Guesses::default(),
            cluster,
            remote_room: BTreeMap::new(),
            held_downloads: BTreeMap::new(),
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

    /// Handles one input; then drain [`ChatServer::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: ServerInput<'_>) {
        match input {
            ServerInput::Opened { conn, peer } => self.on_opened(now, conn, peer),
            ServerInput::Received { conn, bytes } => self.on_received(now, conn, bytes),
            ServerInput::Sent { conn, len } => self.on_sent(conn, len),
            ServerInput::Closed { conn } => self.leave(conn, DisconnectReason::PeerClosed, false),
            ServerInput::TransferEnded { port } => self.on_transfer_ended(now, port),
            ServerInput::PortUnavailable { port } => self.ports.mark_unavailable(port),
            ServerInput::Catalogue(catalogue) => self.catalogue = catalogue.clone(),
            ServerInput::Cluster(event) => self.on_cluster_event(now, event),
        }
        self.kick_slow_readers();
    }

    /// The next thing to do, or `None` when there is nothing (call until `None`).
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        let output = self.out.pop_front();
        if output.is_none() {
            shrink_after_burst(&mut self.out);
        }
        output
    }

    /// When [`ChatServer::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let names = self.name_deadlines.first().map(|(at, _)| *at);
        let pauses = self.paused.first().map(|(at, _)| *at);
        let cluster = self.cluster.as_ref().and_then(|c| c.next_tick());
        let held = self.next_held_deadline();
        names.into_iter().chain(pauses).chain(cluster).chain(held).min()
    }

    /// Closes connections that did not give a name in time (C7), resumes reading the ones
    /// whose pause is over (C6), and refuses the download lines held at the transfer cap whose
    /// wait is over (2.1).
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
                // A held download line resumes reading itself when it is answered.
                None if self.held_downloads.contains_key(&conn) => {}
                None => self.push(ServerOutput::ResumeReading { conn }),
            }
        }
        self.expire_name_deadlines(now);
        self.expire_held_downloads(now);
        self.cluster_tick(now);
        self.kick_slow_readers();
    }

    /// Bytes from a connection: charged to its input budget (C6), then handled line by line.
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
            let was_paused = self.pause_of(conn);
            match was_paused {
                Some(entry) => {
                    self.paused.remove(&entry);
                }
                None => self.push(ServerOutput::PauseReading { conn }),
            }
            self.paused.insert((until, conn));
        }
        self.read_lines(now, conn);
    }

    /// `conn`'s entry in the read pauses (C6), if it has one.
    fn pause_of(&self, conn: ConnId) -> Option<(Instant, ConnId)> {
        self.paused.iter().find(|&&(_, p)| p == conn).copied()
    }

    /// Handles the complete lines `conn` sent, until none is left, or a name claim waits for
    /// the broker's answer (8.3), or a download line waits for a transfer to end (2.1).
    fn read_lines(&mut self, now: Instant, conn: ConnId) {
        loop {
            if self.held_downloads.contains_key(&conn) {
                return;
            }
            // Re-fetch every time: handling a line may close this very connection.
            let Some(c) = self.conns.get_mut(&conn).filter(|c| c.claiming.is_none()) else {
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
                        self.on_command(now, conn, &line);
                    } else if self.door(now, conn, &line) == Door::Open {
                        self.on_name(conn, &line);
                    }
                }
            }
        }
    }

    /// Any line after the name (1.2).
    fn on_command(&mut self, now: Instant, conn: ConnId, line: &str) {
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
                let public = ServerLine::Public { from, text };
                let line = public.encode();
                if self.fits(conn, &line) {
                    self.broadcast(line);
                    if let ServerLine::Public { from, text } = public {
                        self.publish_say(from, text);
                    }
                }
            }
            ClientLine::Private { to, text } => self.on_private(conn, &to, text),
            ClientLine::Download { file, part_size, early } => {
                self.on_download(now, conn, &file, part_size, early);
            }
        }
    }
}
