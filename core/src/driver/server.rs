//! The server driver: a whole natter server as one sans-IO machine.
//!
//! [`ServerDriver`] owns the [`ChatServer`], the transfer [`Endpoint`] (every sender by port),
//! each connection's outbox, the close grace and the accept back-off. A runtime accepts, reads
//! and receives, feeds what it got as an [`Input`], performs every [`Output`], and arms one timer
//! at [`ServerDriver::poll_timeout`]. Everything a server decides is here, once, with one value
//! per policy: how much to read from one connection per turn ([`READ_CHUNK`]), how many datagrams
//! per port per turn ([`UDP_READS_PER_TURN`]), how long a closed connection may take to receive
//! what was queued before its close ([`CLOSE_GRACE`]), when to accept again after running out
//! of descriptors ([`ACCEPT_RETRY`]).
//!
//! Spec: `docs/PROTOCOL.md` [§4] (Behaviour a client can rely on: outboxes, the 2 s close grace,
//! replies in request order), [§1.5] (Limits and protection: 16 KiB per read, read pauses) and
//! [§2.6] (Timeouts and how a transfer ends: the port pool).
//!
//! [§4]: ../../../docs/PROTOCOL.md#4-behaviour-a-client-can-rely-on
//! [§1.5]: ../../../docs/PROTOCOL.md#15-limits-and-protection
//! [§2.6]: ../../../docs/PROTOCOL.md#26-timeouts-and-how-a-transfer-ends
//!
//! The call order: one turn of a runtime's loop (this compiles; the socket work is elided, and
//! `now` is the runtime's clock, read by the runtime, never by the core):
//!
//! ```
//! use core::net::SocketAddr;
//! use std::time::Instant;
//! use natter_core::driver::server::{Input, Output, ServerDriver};
//!
//! fn turn(driver: &mut ServerDriver, now: Instant, peer: SocketAddr, log: &mut Vec<String>) {
//! // 1. Feed what happened: a connection, its bytes, a datagram, a timer.
//! driver.handle_input(now, Input::Accepted { conn: 1, peer });
//! driver.handle_input(now, Input::Received { conn: 1, bytes: b"alice\n" });
//! if driver.poll_timeout().is_some_and(|at| at <= now) {
//!     driver.handle_timeout(now);
//! }
//! // 2. Perform what it asks, until it asks nothing more.
//! while let Some(output) = driver.poll_output() {
//!     match output {
//!         Output::Write { conn } => {
//!             // write driver.unsent(conn) to the socket, then report how much went out:
//!             let len: usize = driver.unsent(conn).map(<[u8]>::len).sum();
//!             driver.handle_input(now, Input::Written { conn, len });
//!         }
//!         Output::Close { .. } => { /* drop the socket */ }
//!         Output::PauseReading { .. } | Output::ResumeReading { .. } => {}
//!         Output::AcceptAgain => {}
//!         Output::ReleaseMemory => { /* malloc_trim(0), where there is one */ }
//!         Output::Serve { .. } | Output::CheckFile { .. } | Output::StopServing { .. } => {}
//!         Output::Transmit { port } => while let Some(_datagram) = driver.poll_transmit(now, port) {},
//!         Output::Cluster(_command) => { /* hand it to the broker thread */ }
//!         Output::Log(event) => log.push(event.to_string()),
//!     }
//! }
//! // 3. Sleep until a socket is ready or until driver.poll_timeout(), then go to 1.
//! }
//! ```

use core::net::SocketAddr;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::chat::catalogue::{Catalogue, FileKey};
use crate::chat::server::{
    ChatServer, ConnId, ConnMap, LogEvent, ServerConfig, ServerInput, ServerOutput,
    shrink_after_burst,
};
use crate::cluster::{ClusterCommand, ClusterEvent};
use crate::transfer::endpoint::{Endpoint, EndpointEvent, Transmit};
use crate::transfer::sender::SenderInput;

use super::outbox::{Feed, Outbox, SpareTails};
use super::tls::{Received, TlsConn};

/// The most bytes read from one connection before the others get their turn: a client that
/// floods is read no faster than its share (C6), and one read of a person's line is one call.
pub const READ_CHUNK: usize = 16 * 1024;

/// The most datagrams taken from one transfer port before the other ports and the chat get
/// their turn.
pub const UDP_READS_PER_TURN: usize = 64;

/// The most buffers handed to one vectored write.
pub const MAX_WRITE_BUFFERS: usize = 64;

/// The most bytes a turn queues for writing before the runtime writes them out and reads on
/// ([`ServerDriver::turn_is_full`]). Reading everyone before writing makes each connection's
/// lines one write, and a write's kernel cost hardly depends on its size, so big turns are what
/// make fan-out cheap (500 people each saying a line: 22 MB for the room). But a burst read
/// whole (hundreds of joins at once, each a line to everyone) would queue tens of megabytes that
/// are freed a moment later and stay in the process as free heap. 4 MiB is the balance measured
/// (issue 12): a 500-person room's turns carry ~90 lines per write, and a join storm of 1,000
/// leaves a few KiB per person behind (1 MiB: 60% more CPU per delivery at 500x16, a third less
/// memory left after the storm).
pub const TURN_QUEUE_BYTES: usize = 4 << 20;

/// The longest a busy server waits before it writes a turn whose writes would be thin (under
/// [`WRITE_WORTH`] bytes each), so that more lines arrive and each connection's write carries more
/// of them. Each write costs the kernel a few microseconds whatever its size (on loopback, the
/// reader's side of TCP too); in a busy room that cost, not the bytes, is most of the server's CPU
/// per delivery. Five milliseconds are far below what a person notices, and below the latency the
/// IRC servers add to small writes.
pub const TURN_GATHER: Duration = Duration::from_millis(5);

/// How much longer a busy server gathers for each connection its turns write to, past
/// [`TURN_GATHER`] and up to [`MAX_TURN_GATHER`] ([`gather_for`]). Why: a write costs the kernel
/// about 5 us whatever it carries, so a turn that writes to 500 readers costs 2.5 ms before its
/// first byte; gathering eight times that long keeps the writes' fixed cost to an eighth of the
/// server's time, where 5 ms let it take half. A room of 125 or fewer stays at [`TURN_GATHER`].
/// (Measured together with [`ServerDriver::write_coalesces`]: a quarter less server CPU per
/// delivery at 500x16 in direct rounds; `bench/chat/README.md`.)
pub const GATHER_PER_WRITE: Duration = Duration::from_micros(40);

/// The longest a busy server gathers, however many it writes to: a room of 500 waits this long,
/// far below the seconds its lines queue behind each other when everyone speaks at once.
pub const MAX_TURN_GATHER: Duration = Duration::from_millis(20);

/// The longest a runtime sleeps at a time while a turn gathers, before it reads what came
/// meanwhile ([`ServerDriver::turn_gather`], [`gather_sleeps`]). Why sleep rather than wait on the
/// sockets: during a gather every arriving line would wake the server, a wake-up and a read of a
/// line or two each, paid on both sides of the connection (on loopback the sender's system call
/// runs the wake-up). Asleep, the server is woken by no one and reads what came in one read per
/// connection. A slice of a millisecond keeps what a long gather watches for (its writes worth
/// making, [`WRITE_WORTH`]; a turn's worth of lines, [`TURN_QUEUE_BYTES`]) within a millisecond
/// of when it could be seen.
pub const GATHER_SLICE: Duration = Duration::from_millis(1);

/// Whether a turn that gathers for `gather` sleeps through it in slices of [`GATHER_SLICE`]
/// (yes for a busy server's gather of milliseconds), rather than waiting on its sockets and
/// reading each line as it comes (a saturated server's [`SATURATED_GATHER`]). Why the
/// difference: the short gather exists so that the next lines join the turn the moment they
/// come; asleep, it adds the timer's overshoot (50 us or more) to every turn, and the senders of
/// a flooding small room, who wait for their own lines, send less (10x40000 in direct rounds:
/// 35-45% less server CPU, but up to a tenth fewer deliveries a second on smol). A busy room's
/// gather is long enough that the overshoot is lost in it: at 100x400, 15-25% less server CPU
/// per delivery, more deliveries a second and a lower p99 (`bench/chat/README.md`).
pub fn gather_sleeps(gather: Duration) -> bool {
    gather >= GATHER_SLICE
}

/// How long from `earlier` to `later`, when both are known (none when `later` came first).
fn wait_between(earlier: Option<Instant>, later: Option<Instant>) -> Option<Duration> {
    earlier.zip(later).map(|(earlier, later)| later.saturating_duration_since(earlier))
}

/// How long a busy turn gathers when the last one wrote to `writes` connections.
fn gather_for(writes: usize) -> Duration {
    let scaled = GATHER_PER_WRITE.saturating_mul(u32::try_from(writes).unwrap_or(u32::MAX));
    scaled.clamp(TURN_GATHER, MAX_TURN_GATHER)
}

/// What a write should carry on average before a busy server stops gathering: a few kernel pages,
/// so that the write's fixed cost is a small share of it.
pub const WRITE_WORTH: usize = 8 << 10;

/// The server is busy when its last turn that queued anything wrote to at least this many
/// connections, ended less than [`BUSY_GAP`] before the next one starts
/// ([`ServerDriver::turn_gather`]), and either read at least [`BUSY_TURN_READS`] chunks at a
/// pace that would bring each reader [`BUSY_WRITE_BYTES`] in a [`TURN_GATHER`], or wrote at
/// [`BUSY_WRITE_RATE`] or more. Otherwise lines go out with no delay at all: a room where one
/// person speaks now and then never waits, however big it is, nor one where many speak at a pace
/// the server writes line by line with ease.
const BUSY_TURN_WRITES: usize = 32;
/// See [`BUSY_TURN_WRITES`]: by the pace of lines to each reader, a turn of one read is a line
/// that came alone, not a crowd (by the rate of writes it may still be one).
const BUSY_TURN_READS: usize = 2;
/// See [`BUSY_TURN_WRITES`]: lines that come fast enough that a gather would bring a dozen or more
/// to each reader are a crowd; fewer are not worth a wait (100 people at 5 lines a second each
/// bring each reader 2.5 lines in 5 ms). Measured by the pace, not by the turn's size, so that a
/// crowd stays one whether the last turn gathered or not.
const BUSY_WRITE_BYTES: usize = 1 << 10;
/// See [`BUSY_TURN_WRITES`]: writes at this rate or more (a turn's writes over the wait before
/// its first line, counted as a millisecond at least) take the server most of a core at a few
/// microseconds each, so a gather pays whatever the pace of lines to each reader: a lone line to
/// a room of 500 every 1.5 ms is 330,000 writes a second. A room of 100 is at most 100,000 and
/// never waits on this count.
const BUSY_WRITE_RATE: u128 = 200_000;
/// See [`BUSY_TURN_WRITES`]: turns that follow each other this closely are a crowd talking, even
/// when the server has time to spare between them.
const BUSY_GAP: Duration = Duration::from_millis(10);

/// How long a saturated server that is not busy gathers: a small room flooding a server that has
/// no time to spare between turns ([`SATURATED_GAP`], [`SATURATED_TURN_WRITES`]). Why: such a
/// server starts each turn the moment the last ends, with the few lines that came meanwhile,
/// and writes them to every reader; each write then carries a few lines and costs
/// the kernel a few microseconds on both sides of the connection, so the turns stay short and
/// many, and the lines queue behind them. Reading on for 200 us lets the next lines join the
/// turn. At 10x40000 (ten people, each with eight lines in flight), four direct rounds: p99
/// 2.6-3.4 ms before, 1.6-3.3 ms after on mio; 3.2-3.3 ms before, 1.9-2.2 ms after on smol;
/// deliveries per second about the same (1.2-1.7 M). Longer waits (500 us or more) leave the
/// senders waiting for their own lines and cost throughput.
pub const SATURATED_GATHER: Duration = Duration::from_micros(200);
/// See [`SATURATED_GATHER`]: a turn that starts within this of the moment the last one's writes
/// were done ([`ServerDriver::writes_done`]) had work waiting when they were. A server with time to spare waits longer than this for the next
/// line (at 500 lines a second, two milliseconds), and never gathers on this count.
const SATURATED_GAP: Duration = Duration::from_micros(50);
/// See [`SATURATED_GATHER`]: a turn that writes to fewer than this is a conversation, not a room.
/// A turn must also have read [`BUSY_TURN_READS`] chunks or more: one that read a single chunk
/// handled a line that came alone.
const SATURATED_TURN_WRITES: usize = 8;

/// How long spare outbox tails are kept after the last input: a busy room reuses them turn
/// after turn; a quiet server frees them, so an idle person costs no share of them.
pub const SPARE_TAILS_KEPT: Duration = Duration::from_secs(1);

/// How long the server must have had no input before it says that freed memory may go back to
/// the system ([`Output::ReleaseMemory`]): long enough that a busy room never pays for it, short
/// enough that a room gone idle shrinks at once.
pub const QUIET_BEFORE_RELEASE: Duration = Duration::from_millis(250);

/// How long a connection the server closed (a refusal, `{quit}`, a name timeout, a slow reader)
/// may take to receive what was queued for it before the close. What is still unsent then is
/// dropped with the connection: a client that stopped reading gets no more of our memory.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long to wait before accepting again after `accept` failed for want of resources (most
/// likely descriptors): the connections waiting meanwhile stay in the kernel's backlog.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Something that happened at the edge.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A TCP connection was accepted; the runtime numbers connections and never reuses a number.
    Accepted {
        /// The runtime's number for it.
        conn: ConnId,
        /// Who connected.
        peer: SocketAddr,
    },
    /// A TCP connection was accepted on the TLS listener: its bytes are TLS records, decrypted
    /// and encrypted by the driver (PROTOCOL 1.6). Needs [`ServerDriver::with_tls`].
    AcceptedTls {
        /// The runtime's number for it (shared with plain connections).
        conn: ConnId,
        /// Who connected.
        peer: SocketAddr,
    },
    /// `accept` failed for want of resources; the driver says when to try again
    /// ([`Output::AcceptAgain`]).
    AcceptFailed,
    /// Bytes arrived on a connection (at most [`READ_CHUNK`] per read).
    Received {
        /// The connection.
        conn: ConnId,
        /// What was read, as it came: a line may be split anywhere, even inside a character.
        bytes: &'a [u8],
    },
    /// `len` bytes of what [`ServerDriver::unsent`] gave for `conn` were written.
    Written {
        /// The connection.
        conn: ConnId,
        /// How many bytes the kernel took.
        len: usize,
    },
    /// The peer closed or reset the connection, or it failed; it leaves as with `{quit}` and the
    /// runtime gets [`Output::Close`] for it.
    PeerClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A datagram arrived on a transfer port.
    Datagram {
        /// The transfer port it arrived on.
        port: u16,
        /// Who sent it; only the offer's client IP (then its first REQUEST's address) is answered.
        from: SocketAddr,
        /// The whole datagram, header included; unparsed and untrusted.
        bytes: &'a [u8],
    },
    /// A port of the range cannot be bound (another program holds it): it is never offered.
    PortUnavailable {
        /// The port.
        port: u16,
    },
    /// The served folder was read again: the files on offer from now on, and the identity of
    /// each when its digest was taken.
    Folder {
        /// Names, sizes and digests.
        catalogue: &'a Catalogue,
        /// The identity of each file when it was hashed.
        identities: &'a HashMap<String, FileKey>,
    },
    /// The file served on `port` is not the one offered any more (it was replaced, changed, or
    /// read shorter than offered): the client gets ABORT 1 (U7).
    FileChanged {
        /// The port.
        port: u16,
    },
    /// The cluster's broker said something (PROTOCOL 8); ignored by a server alone.
    Cluster(&'a ClusterEvent),
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `conn`'s outbox went from empty to not empty: write [`ServerDriver::unsent`] and report
    /// [`Input::Written`]; when the socket is full, go on when it is writable, until the outbox
    /// is empty.
    Write {
        /// The connection.
        conn: ConnId,
    },
    /// Close the connection and forget it: everything owed was written, or the grace is over.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Stop reading this connection for now (C6, or it is being closed).
    PauseReading {
        /// The connection.
        conn: ConnId,
    },
    /// Read this connection again.
    ResumeReading {
        /// The connection.
        conn: ConnId,
    },
    /// Call `accept` again (after [`Input::AcceptFailed`]).
    AcceptAgain,
    /// The server has been quiet for [`QUIET_BEFORE_RELEASE`] after some activity: hand the heap
    /// memory that is free back to the system now, if the allocator can. Why: an allocator keeps
    /// what a burst freed (a join storm, a flood of lines, a long outbox written out) for reuse,
    /// and a chat server is mostly idle after its bursts; without this, an idle person's share
    /// of a past storm stays resident (issue 12). At most twice per quiet spell (after
    /// [`QUIET_BEFORE_RELEASE`], and when the spare outbox tails are freed after
    /// [`SPARE_TAILS_KEPT`]), so it costs nothing while the server is busy.
    ReleaseMemory,
    /// Open `file` of the served folder for the transfer on `port`; when it cannot be opened or
    /// its identity is not `identity` (the one its digest was taken from), report
    /// [`Input::FileChanged`].
    Serve {
        /// The port.
        port: u16,
        /// The name in the served folder.
        file: String,
        /// The identity it had when hashed; `None` when unknown (then it is refused).
        identity: Option<FileKey>,
        /// The part size of the offer: no datagram of this transfer is larger than it and its
        /// header.
        part_size: u16,
        /// The transfer's datagrams are sealed (PROTOCOL 2.7): a PART is
        /// [`crate::transfer::endpoint::part_datagram_len`] bytes with this flag.
        sealed: bool,
    },
    /// Look whether the file served on `port` is still the one offered; if not, report
    /// [`Input::FileChanged`].
    CheckFile {
        /// The port.
        port: u16,
    },
    /// `port` has datagrams to send: take them with [`ServerDriver::poll_transmit`] until `None`
    /// (when the socket is full, keep the ones taken and go on when it is writable).
    Transmit {
        /// The port.
        port: u16,
    },
    /// The transfer on `port` is over: close its file. Datagrams already taken are still sent.
    StopServing {
        /// The port.
        port: u16,
    },
    /// Something for the cluster's broker to do (PROTOCOL 8): hand it to the broker thread.
    Cluster(ClusterCommand),
    /// Something worth a log line.
    Log(LogEvent),
}

/// A whole server. See the module documentation.
#[derive(Debug)]
pub struct ServerDriver {
    chat: ChatServer,
    endpoint: Endpoint,
    /// Every open connection's outbox: one word while it owes nothing (see [`Outbox`]).
    outboxes: ConnMap<Outbox>,
    /// Drained outbox tails, for the next connection written to.
    spare: SpareTails,
    /// The lines to many since the last write, each held once for all its recipients.
    feed: Feed,
    /// When the spare tails are freed if no input comes before.
    spare_expiry: Option<Instant>,
    /// When [`Output::ReleaseMemory`] is due if no input comes before: set by every input.
    release_at: Option<Instant>,
    /// Connections the server closed, by the end of their grace.
    closing: BTreeSet<(Instant, ConnId)>,
    identities: HashMap<String, FileKey>,
    accept_retry: Option<Instant>,
    out: VecDeque<Output>,
    /// Bytes queued into outboxes since the outputs were last drained (this turn).
    queued_this_turn: usize,
    /// Connections asked to be written this turn.
    writes_this_turn: usize,
    /// Chunks read this turn.
    reads_this_turn: usize,
    /// The last turn that queued anything was a crowd's (see [`BUSY_TURN_WRITES`]).
    busy: bool,
    /// How many connections the last turn that queued anything wrote to: a busy turn's gather
    /// grows with it ([`gather_for`]).
    last_turn_writes: usize,
    /// The last turn that queued anything brought each reader lines at a crowd's pace (see
    /// [`ServerDriver::turn_coalesces`]).
    streaming: bool,
    /// When this turn's writes were done, if the runtime said ([`ServerDriver::writes_done`]).
    writes_done: Option<Instant>,
    /// When the last turn that queued anything had done its writes.
    last_writes_done: Option<Instant>,
    /// The last turn that queued anything started as soon as the one before it ended (see
    /// [`SATURATED_GATHER`]).
    saturated: bool,
    /// When the last turn that queued anything ended ([`ServerDriver::end_turn`]).
    last_turn_end: Option<Instant>,
    /// When this turn's first chunk was read.
    turn_start: Option<Instant>,
    /// The certificate and settings of the TLS listener, when there is one.
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// The TLS state of each connection accepted on the TLS listener; plain ones have none.
    tls: ConnMap<Box<TlsConn>>,
    /// Plaintext decrypted from a TLS read, on its way to the chat server.
    plain: Vec<u8>,
}

impl ServerDriver {
    /// A server offering `catalogue` (identities follow with the first [`Input::Folder`]),
    /// whose transfer tokens come from a generator seeded with `seed` (see [`ChatServer::new`]).
    pub fn new(config: ServerConfig, catalogue: Catalogue, seed: u64) -> Self {
        let endpoint = Endpoint::new(config.transfer_idle_timeout);
        Self::from_parts(ChatServer::new(config, catalogue, seed), endpoint)
    }

    /// A server like [`ServerDriver::new`] whose tokens and transfer keys come from 32 bytes of
    /// the OS random source (see [`ChatServer::with_secret_seed`]): what a runtime runs.
    pub fn with_secret_seed(config: ServerConfig, catalogue: Catalogue, seed: [u8; 32]) -> Self {
        let endpoint = Endpoint::new(config.transfer_idle_timeout);
        Self::from_parts(ChatServer::with_secret_seed(config, catalogue, seed), endpoint)
    }

    /// Marks connection `conn` as private (it is TLS) or not, right after
    /// [`Input::Accepted`]: offers made to it carry a key and their datagrams are sealed
    /// (PROTOCOL 2.7).
    pub fn set_secure(&mut self, conn: ConnId, secure: bool) {
        self.chat.set_secure(conn, secure);
    }

    /// A driver around a chat server built by the caller (a test's own token source, say).
    pub fn from_parts(chat: ChatServer, endpoint: Endpoint) -> Self {
        Self {
            chat,
            endpoint,
            outboxes: ConnMap::default(),
            spare: SpareTails::default(),
            feed: Feed::default(),
            spare_expiry: None,
            release_at: None,
            closing: BTreeSet::new(),
            identities: HashMap::new(),
            accept_retry: None,
            out: VecDeque::new(),
            queued_this_turn: 0,
            writes_this_turn: 0,
            reads_this_turn: 0,
            busy: false,
            last_turn_writes: 0,
            saturated: false,
            writes_done: None,
            last_writes_done: None,
            streaming: false,
            last_turn_end: None,
            turn_start: None,
            tls_config: None,
            tls: ConnMap::default(),
            plain: Vec::new(),
        }
    }

    /// Serves TLS with `config` on the connections the runtime reports as
    /// [`Input::AcceptedTls`] (PROTOCOL 1.6).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// The chat server, for counts and tests.
    pub fn chat(&self) -> &ChatServer {
        &self.chat
    }

    /// How many transfers are being served.
    pub fn transfers(&self) -> usize {
        self.endpoint.len()
    }

    /// Connections the runtime still holds a socket for (closing ones included).
    pub fn open_connections(&self) -> usize {
        self.outboxes.len()
    }

    /// Something happened; then drain [`ServerDriver::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.release_at = Some(now + QUIET_BEFORE_RELEASE);
        match input {
            Input::Accepted { conn, peer } => {
                self.outboxes.insert(conn, Outbox::default());
                self.chat.handle_input(now, ServerInput::Opened { conn, peer });
            }
            Input::AcceptedTls { conn, peer } => self.on_accepted_tls(now, conn, peer),
            Input::AcceptFailed => {
                self.accept_retry.get_or_insert(now + ACCEPT_RETRY);
            }
            Input::Received { conn, bytes } => {
                self.turn_start.get_or_insert(now);
                self.reads_this_turn += 1;
                if self.tls.is_empty() || !self.tls.contains_key(&conn) {
                    self.chat.handle_input(now, ServerInput::Received { conn, bytes });
                } else {
                    self.on_received_tls(now, conn, bytes);
                }
            }
            Input::Written { conn, len } => self.on_written(now, conn, len),
            Input::PeerClosed { conn } => self.on_peer_closed(now, conn),
            Input::Datagram { port, from, bytes } => {
                self.endpoint.handle_input(now, port, SenderInput::Datagram { from, bytes });
            }
            Input::PortUnavailable { port } => {
                self.chat.handle_input(now, ServerInput::PortUnavailable { port });
            }
            Input::Folder { catalogue, identities } => {
                self.identities.clone_from(identities);
                self.chat.handle_input(now, ServerInput::Catalogue(catalogue));
            }
            Input::FileChanged { port } => {
                self.endpoint.handle_input(now, port, SenderInput::FileChanged);
            }
            Input::Cluster(event) => self.chat.handle_input(now, ServerInput::Cluster(event)),
        }
        self.collect(now);
    }

    /// The next thing to do, or `None` when there is nothing (call until `None`).
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.out.pop_front();
        if output.is_none() {
            shrink_after_burst(&mut self.out);
        }
        output
    }

    /// The runtime has performed a turn's writes: what it read since the last turn went out.
    /// A turn is the runtime's loop: read what is ready (until [`ServerDriver::turn_is_full`]),
    /// then write every connection owed, each in one write. The driver sizes turns with it.
    pub fn end_turn(&mut self, now: Instant) {
        let turn_start = self.turn_start.take();
        let written = self.writes_done.take().unwrap_or(now);
        if self.queued_this_turn == 0 {
            // A turn that queued nothing (a socket had room again, a timer, half a line): no
            // news of the pace. Counted, it would end a crowd's gathering every other turn.
            self.reads_this_turn = 0;
            self.writes_this_turn = 0;
            return;
        }
        let span = self.last_turn_end.map(|at| now.saturating_duration_since(at));
        // The wait before this turn's first line: a gathered turn lasts TURN_GATHER by itself,
        // so its length says nothing of how often the lines come.
        let gap = wait_between(self.last_turn_end, turn_start).or(span);
        // The wait between the last turn's writes and this turn's first line: no wait at all
        // when lines were waiting as the server finished writing.
        let idle = wait_between(self.last_writes_done, turn_start);
        self.last_turn_end = Some(now);
        self.last_writes_done = Some(written);
        let queued = std::mem::take(&mut self.queued_this_turn);
        let writes = std::mem::take(&mut self.writes_this_turn);
        let reads = std::mem::take(&mut self.reads_this_turn);
        // Would a gather have paid: at the pace of this turn's lines, would TURN_GATHER have
        // brought each reader BUSY_WRITE_BYTES? (per write / span >= bytes / gather)
        // A turn sooner than TURN_GATHER after the last counts as that long: a crowd brings
        // each reader BUSY_WRITE_BYTES a turn at the least, whatever the pace.
        let pays = span.is_some_and(|span| {
            let per_write = (queued / writes.max(1)) as u128;
            let span = span.max(TURN_GATHER).as_micros();
            per_write * TURN_GATHER.as_micros() >= BUSY_WRITE_BYTES as u128 * span
        });
        // Or would it pay because the writes themselves, whatever each carries, come so often
        // that they take the server most of a core? (A turn's writes over the wait before it.)
        let costly = gap.is_some_and(|gap| {
            let gap = gap.max(Duration::from_millis(1)).as_micros();
            writes as u128 * 1_000_000 >= BUSY_WRITE_RATE * gap
        });
        self.streaming = reads >= BUSY_TURN_READS && pays;
        self.busy = writes >= BUSY_TURN_WRITES && (self.streaming || costly);
        self.saturated = writes >= SATURATED_TURN_WRITES
            && reads >= BUSY_TURN_READS
            && idle.is_some_and(|idle| idle < SATURATED_GAP);
        self.last_turn_writes = writes;
    }

    /// How long to wait at most, once the turn has read what was ready, so that it handles more
    /// lines before it writes: a busy server ([`BUSY_TURN_WRITES`], [`BUSY_GAP`]) whose writes
    /// would be thin ([`ServerDriver::turn_is_worth_writing`]) waits up to [`TURN_GATHER`] (more
    /// for a turn that writes to more than 125, [`GATHER_PER_WRITE`]), a saturated one
    /// [`SATURATED_GATHER`], reading what becomes readable meanwhile into the same turn;
    /// otherwise `None`, write now. A gather of [`GATHER_SLICE`] or more ([`gather_sleeps`]) the
    /// runtime sleeps through in slices of at most that, reading after each, rather than being
    /// woken by each line that comes; a shorter one waits on the sockets.
    pub fn turn_gather(&self, now: Instant) -> Option<Duration> {
        let crowd =
            self.last_turn_end.is_some_and(|at| now.saturating_duration_since(at) < BUSY_GAP);
        let read = self.reads_this_turn > 0;
        if !crowd || !read || self.turn_is_worth_writing() {
            return None;
        }
        if self.busy {
            Some(gather_for(self.last_turn_writes))
        } else {
            // Saturated then, and still: this turn, too, came as the last one's writes ended.
            let idle = wait_between(self.last_writes_done, self.turn_start);
            let still = idle.is_some_and(|idle| idle < SATURATED_GAP);
            (self.saturated && still).then_some(SATURATED_GATHER)
        }
    }

    /// The runtime has made this turn's writes, at `at` (its clock read after them), before it
    /// ends the turn: a saturated server is one whose next turn starts right after
    /// ([`SATURATED_GAP`]). A runtime that does not say it is taken to have written at the end.
    pub fn writes_done(&mut self, at: Instant) {
        self.writes_done = Some(at);
    }

    /// Whether a write of `bytes` now may wait in the kernel for the reader's acknowledgement of
    /// the last one, to leave with the next (TCP's Nagle rule): yes while the server is busy with
    /// a crowd (lines coming at a pace that brings each reader [`BUSY_WRITE_BYTES`] or more per
    /// [`TURN_GATHER`]), in a turn that started within [`BUSY_GAP`] of the last, and for a write
    /// of at least [`BUSY_WRITE_BYTES`]: a reader in the stream.
    ///
    /// Why: each segment costs the kernel a send (and, on loopback, the reader's receive) however
    /// little it carries. A crowd's room writes each reader every few milliseconds, and a reader
    /// that has not acknowledged the last write yet gets the next merged into it, so it takes one
    /// segment per acknowledgement instead of one per write. The price, a line waiting for the
    /// reader's acknowledgement (a round trip; a reader that gets little may delay its
    /// acknowledgements by 40 ms, some systems by 200), is paid only by readers who get lines in a
    /// stream, where lines already wait for the gather. Not by a small write in the same turn (a
    /// private line, a quiet room's, a welcome), nor on a server busy by the rate of its writes
    /// alone ([`BUSY_WRITE_RATE`]), where a reader gets a line now and then and acknowledges late,
    /// nor after a pause: at a few lines a turn, Nagle's rule on every connection gave a 40 ms p99
    /// instead of 2 ms. A connection keeps the setting of its last write; switching it off sends
    /// at once whatever the kernel holds.
    pub fn write_coalesces(&self, bytes: usize) -> bool {
        self.turn_coalesces() && bytes >= BUSY_WRITE_BYTES
    }

    /// Whether any write of this turn may wait ([`ServerDriver::write_coalesces`] says which):
    /// a runtime need not count what it owes a connection when none may.
    pub fn turn_coalesces(&self) -> bool {
        let crowd =
            wait_between(self.last_turn_end, self.turn_start).is_some_and(|wait| wait < BUSY_GAP);
        self.busy && self.streaming && crowd
    }

    /// Whether this turn's writes carry [`WRITE_WORTH`] each on average: a gathering turn ends
    /// there.
    pub fn turn_is_worth_writing(&self) -> bool {
        self.queued_this_turn >= self.writes_this_turn.max(1) * WRITE_WORTH
    }

    /// Whether this turn has queued [`TURN_QUEUE_BYTES`] for writing: the runtime should stop
    /// reading, write, end the turn ([`ServerDriver::end_turn`]) and read the rest in the next.
    pub fn turn_is_full(&self) -> bool {
        self.queued_this_turn >= TURN_QUEUE_BYTES
    }

    /// When [`ServerDriver::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let closing = self.closing.first().map(|&(at, _)| at);
        let timers = [self.chat.poll_timeout(), self.endpoint.poll_timeout(), closing];
        let own = [self.accept_retry, self.spare_expiry, self.release_at];
        timers.into_iter().chain(own).flatten().min()
    }

    /// The time has come: name timeouts, read pauses, idle transfers, close graces, accept.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.chat.poll_timeout().is_some_and(|at| at <= now) {
            self.chat.handle_timeout(now);
        }
        if self.endpoint.poll_timeout().is_some_and(|at| at <= now) {
            self.endpoint.handle_timeout(now);
        }
        while let Some(&(at, conn)) = self.closing.first() {
            if at > now {
                break;
            }
            self.closing.remove(&(at, conn));
            if self.forget(conn) {
                self.out.push_back(Output::Close { conn });
            }
        }
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            self.out.push_back(Output::AcceptAgain);
        }
        if self.spare_expiry.is_some_and(|at| at <= now) {
            self.spare_expiry = None;
            self.spare.clear();
            // The feed's buffer too: a quiet server keeps no turn's worth of lines. Runs still
            // owed (to a reader that stopped reading) keep their slices of it.
            self.freeze_feed();
            self.feed = Feed::default();
            // What the pool held (up to 1 MiB) is free heap now: worth handing back too.
            self.release_at = Some(now);
        }
        if self.release_at.is_some_and(|at| at <= now) {
            self.release_at = None;
            self.out.push_back(Output::ReleaseMemory);
        }
        self.collect(now);
    }

    /// What is owed to `conn`, oldest first, at most [`MAX_WRITE_BUFFERS`] buffers: write them
    /// (a vectored write) and report [`Input::Written`]. Call it only when about to write: an
    /// owed presence line is made now (PROTOCOL 1.1), from the room as it is.
    ///
    /// For a TLS connection it is one buffer of ciphertext: the next batch of the outbox's
    /// plaintext, encrypted now (see [`super::tls`]), or what the handshake owes.
    pub fn unsent(&mut self, conn: ConnId) -> impl Iterator<Item = &[u8]> + '_ {
        self.freeze_feed();
        let tls = if self.tls.is_empty() { None } else { self.tls.get_mut(&conn) };
        let ready_for_plain = tls.as_ref().is_none_or(|t| t.batch_done() && !t.is_handshaking());
        if ready_for_plain
            && let Some(outbox) = self.outboxes.get_mut(&conn)
            && outbox.close_by().is_none()
            && let Some(line) = self.chat.take_presence(conn)
        {
            outbox.push(&line, &mut self.spare);
        }
        let (plain, cipher) = match tls {
            None => (self.outboxes.get(&conn), None),
            Some(tls) => {
                if let Some(outbox) = self.outboxes.get(&conn) {
                    tls.encrypt(outbox.unsent(), outbox.close_by().is_some());
                }
                (None, Some(tls.ciphertext()).filter(|c| !c.is_empty()))
            }
        };
        plain.into_iter().flat_map(|o| o.unsent()).take(MAX_WRITE_BUFFERS).chain(cipher)
    }

    /// Whether `conn` has bytes owed (a presence line that would be made now included).
    pub fn has_unsent(&self, conn: ConnId) -> bool {
        let Some(o) = self.outboxes.get(&conn) else {
            return false;
        };
        let plain_owed =
            || !o.is_empty() || (o.close_by().is_none() && self.chat.presence_ready(conn));
        // A server without TLS connections does not even look (the plain path stays as it was).
        let tls = if self.tls.is_empty() { None } else { self.tls.get(&conn) };
        match tls {
            None => plain_owed(),
            Some(t) if t.has_ciphertext() => true,
            Some(t) if t.is_handshaking() => false,
            // A closing connection owes its close_notify after the last line.
            Some(t) => plain_owed() || (o.close_by().is_some() && !t.notified()),
        }
    }

    /// Whether anything is still owed to `conn` before it may be closed: its lines, and for a
    /// TLS connection their ciphertext and the `close_notify` after them.
    fn owes(&self, conn: ConnId) -> bool {
        let outbox = self.outboxes.get(&conn).is_some_and(|o| !o.is_empty());
        outbox
            || self
                .tls
                .get(&conn)
                .is_some_and(|t| t.has_ciphertext() || !(t.notified() || t.is_handshaking()))
    }

    /// Drops what the driver holds for `conn`; whether it was known.
    fn forget(&mut self, conn: ConnId) -> bool {
        self.tls.remove(&conn);
        match self.outboxes.remove(&conn) {
            Some(outbox) => {
                outbox.release(&mut self.spare);
                true
            }
            None => false,
        }
    }

    fn on_peer_closed(&mut self, now: Instant, conn: ConnId) {
        if self.forget(conn) {
            self.closing.retain(|&(_, c)| c != conn);
            self.chat.handle_input(now, ServerInput::Closed { conn });
            self.out.push_back(Output::Close { conn });
        }
    }

    /// A connection on the TLS listener: a handshake starts; the chat server knows it is secure.
    fn on_accepted_tls(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) {
        let Some(config) = self.tls_config.clone() else {
            // A runtime with a TLS listener but a driver without TLS: nothing can be said.
            self.out.push_back(Output::Close { conn });
            return;
        };
        match TlsConn::new(config) {
            Ok(tls) => {
                self.outboxes.insert(conn, Outbox::default());
                self.tls.insert(conn, Box::new(tls));
                self.chat.handle_input(now, ServerInput::Opened { conn, peer });
                self.chat.set_secure(conn, true);
            }
            Err(err) => {
                self.out
                    .push_back(Output::Log(LogEvent::TlsFailed { conn, error: err.to_string() }));
                self.out.push_back(Output::Close { conn });
            }
        }
    }

    /// Ciphertext from a TLS connection: its plaintext goes to the chat server; a failed
    /// handshake or a forged record closes the connection once the alert is out.
    fn on_received_tls(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Self { tls, chat, plain, .. } = self;
        let Some(tls) = tls.get_mut(&conn) else {
            return;
        };
        if plain.len() < READ_CHUNK {
            plain.resize(READ_CHUNK, 0);
        }
        let received = tls.receive(bytes, plain, |bytes| {
            chat.handle_input(now, ServerInput::Received { conn, bytes });
        });
        match received {
            Ok(Received::More) => {
                // The handshake may owe a flight, or be over with lines waiting for it.
                if self.has_unsent(conn) {
                    self.out.push_back(Output::Write { conn });
                }
            }
            Ok(Received::Closed) => self.on_peer_closed(now, conn),
            Err(err) => {
                let error = err.to_string();
                self.out.push_back(Output::Log(LogEvent::TlsFailed { conn, error }));
                self.chat.handle_input(now, ServerInput::Closed { conn });
                self.close_conn(now, conn);
            }
        }
    }

    /// The next datagram to send on `port` (after [`Output::Transmit`]), or `None`.
    pub fn poll_transmit(&mut self, now: Instant, port: u16) -> Option<Transmit> {
        let transmit = self.endpoint.poll_transmit(port);
        if transmit.is_none() {
            // The transfer may have ended just now: its end frees the port in the chat server.
            self.collect(now);
        }
        transmit
    }

    fn on_written(&mut self, now: Instant, conn: ConnId, written: usize) {
        // For a TLS connection, the plaintext is delivered once its whole batch is written.
        let tls = if self.tls.is_empty() { None } else { self.tls.get_mut(&conn) };
        let written = match tls {
            Some(tls) => tls.written(written),
            None => written,
        };
        let Some(outbox) = self.outboxes.get_mut(&conn) else {
            return;
        };
        outbox.written(written, &mut self.spare);
        if let Some(at) = outbox.close_by()
            && !self.owes(conn)
        {
            self.closing.remove(&(at, conn));
            self.forget(conn);
            self.out.push_back(Output::Close { conn });
            return;
        }
        if written > 0 {
            self.chat.handle_input(now, ServerInput::Sent { conn, len: written });
        }
    }

    /// Closes `conn` once what it is owed is written, or at the end of the grace
    /// ([`CLOSE_GRACE`]); reading it stops now.
    fn close_conn(&mut self, now: Instant, conn: ConnId) {
        let Some(outbox) = self.outboxes.get_mut(&conn) else {
            return;
        };
        if outbox.close_by().is_some() {
            return;
        }
        // A TLS connection still in its handshake is read on, or the line owed before the close
        // (a refusal at the door) could never be encrypted; the chat server has forgotten it, so
        // whatever plaintext comes is dropped.
        if !self.tls.get(&conn).is_some_and(|t| t.is_handshaking()) {
            self.out.push_back(Output::PauseReading { conn });
        }
        let at = now + CLOSE_GRACE;
        outbox.close(at);
        if !self.owes(conn) {
            self.forget(conn);
            self.out.push_back(Output::Close { conn });
        } else {
            self.closing.insert((at, conn));
            // A TLS connection may owe only its close_notify: no line asked for the write.
            if self.tls.contains_key(&conn) {
                self.out.push_back(Output::Write { conn });
            }
        }
    }

    /// Queues `line` for `conn`; the runtime is asked to write when there was nothing to do.
    fn queue_line(&mut self, conn: ConnId, line: &Bytes) {
        self.queue(conn, line.len(), |outbox, spare, _| outbox.push(line, spare));
    }

    /// Queues lines of the feed (see [`Feed`]) for `conn`.
    fn queue_run(&mut self, conn: ConnId, run: &Range<usize>) {
        self.queue(conn, run.len(), |outbox, _, feed| outbox.push_run(conn, run.clone(), feed));
    }

    /// Queues `len` bytes for `conn` with `push`, unless there are none or it is closing; the
    /// first bytes owed ask for a write.
    fn queue(
        &mut self,
        conn: ConnId,
        len: usize,
        push: impl FnOnce(&mut Outbox, &mut SpareTails, &mut Feed),
    ) {
        let Some(outbox) = self.outboxes.get_mut(&conn).filter(|_| len > 0) else {
            return; // nothing to queue (an empty line), so no write to ask for either
        };
        if outbox.close_by().is_some() {
            return;
        }
        let was_empty = outbox.is_empty();
        push(outbox, &mut self.spare, &mut self.feed);
        self.queued_this_turn += len;
        if was_empty {
            self.writes_this_turn += 1;
            self.out.push_back(Output::Write { conn });
        }
    }

    /// Turns the feed's runs into slices of one shared buffer, before anything is written; a
    /// feed that holds nothing is left as it is.
    fn freeze_feed(&mut self) {
        if !self.feed.is_held() {
            return;
        }
        let (lines, holders) = self.feed.freeze();
        for conn in holders {
            if let Some(outbox) = self.outboxes.get_mut(&conn) {
                outbox.resolve(&lines);
            }
        }
    }

    /// Moves what the chat server and the endpoint asked for into the driver's outputs.
    fn collect(&mut self, now: Instant) {
        loop {
            let chat = self.collect_chat(now);
            let endpoint = self.collect_endpoint(now);
            if !chat && !endpoint {
                break;
            }
        }
        let kept = !self.spare.is_empty() || self.feed.has_buffer();
        self.spare_expiry = kept.then(|| now + SPARE_TAILS_KEPT);
    }

    fn collect_chat(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(output) = self.chat.poll_output() {
            any = true;
            self.on_chat_output(now, output);
        }
        any
    }

    fn on_chat_output(&mut self, now: Instant, output: ServerOutput) {
        match output {
            ServerOutput::Send { conn, bytes } => self.queue_line(conn, &bytes),
            ServerOutput::SendToMany { conns, bytes } => {
                let run = self.feed.append(&bytes);
                for conn in conns {
                    self.queue_run(conn, &run);
                }
            }
            ServerOutput::Presence { conn } => {
                // The line is made when written (see `unsent`); only a write is asked for.
                if self.outboxes.get(&conn).is_some_and(|o| o.is_empty() && o.close_by().is_none())
                {
                    self.out.push_back(Output::Write { conn });
                }
            }
            ServerOutput::Close { conn } => self.close_conn(now, conn),
            ServerOutput::StartTransfer(offer) => {
                self.endpoint.start(now, &offer);
                self.out.push_back(Output::Log(LogEvent::TransferStarted {
                    port: offer.port,
                    transfer_id: offer.transfer_id,
                    file: offer.file.clone(),
                }));
                self.out.push_back(Output::Serve {
                    port: offer.port,
                    identity: self.identities.get(&offer.file).copied(),
                    part_size: offer.part_size,
                    sealed: offer.key.is_some(),
                    file: offer.offer.file,
                });
            }
            ServerOutput::EndTransfer { port } => self.endpoint.end(now, port),
            ServerOutput::PauseReading { conn } => {
                self.out.push_back(Output::PauseReading { conn });
            }
            ServerOutput::ResumeReading { conn } => {
                if self.outboxes.get(&conn).is_some_and(|o| o.close_by().is_none()) {
                    self.out.push_back(Output::ResumeReading { conn });
                }
            }
            ServerOutput::Cluster(command) => self.out.push_back(Output::Cluster(command)),
            ServerOutput::Log(event) => self.out.push_back(Output::Log(event)),
        }
    }

    fn collect_endpoint(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.endpoint.poll_event() {
            any = true;
            match event {
                EndpointEvent::Transmit { port } => self.out.push_back(Output::Transmit { port }),
                EndpointEvent::CheckFile { port } => {
                    self.out.push_back(Output::CheckFile { port });
                }
                EndpointEvent::Ended { port, end } => {
                    self.out.push_back(Output::StopServing { port });
                    self.out.push_back(Output::Log(LogEvent::TransferEnded { port, end }));
                    self.chat.handle_input(now, ServerInput::TransferEnded { port });
                }
            }
        }
        any
    }
}
