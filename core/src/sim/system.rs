//! The whole system in simulated time: one [`ServerDriver`] and many clients, chat and downloads
//! together, over simulated TCP connections and simulated UDP paths, from one seed.
//!
//! Where [`crate::sim::run`] puts receivers against senders, this puts the *server driver* (the
//! very value a real runtime drives: chat server, transfer endpoint, outboxes, read pauses, close
//! grace, accept back-off) against simulated clients, and performs its outputs the way the real
//! adapters do (`runtime-mio/src/server.rs`, `runtime-common/src/serve.rs`): it writes outboxes
//! into a bounded socket, pauses and resumes reading, closes, accepts again, opens files of an
//! in-memory folder, checks them for changes and seals parts from them. Nothing reads a clock;
//! every instant is `base + offset`, and one `u64` seed fixes every random draw, so a failing run
//! is reproduced by its seed.
//!
//! # The simulated network
//!
//! - **TCP**, per connection: a byte stream each way with a one-way delay
//!   ([`TcpConfig::delay`]). Server to client, at most [`TcpConfig::window`] bytes may be
//!   written and not yet read by the client (the kernel's send buffer plus the client's receive
//!   window): the sim takes from [`ServerDriver::unsent`] only what fits and reports
//!   [`Input::Written`] for exactly that, so a client that does not read makes the server's
//!   writes stop and its outbox grow (C5). Client to server, at most
//!   [`TcpConfig::upload_window`] bytes may be in flight or unread by the server; the rest waits
//!   in the client, so a paused connection (C6) slows its sender and nobody else. The server
//!   reads one [`READ_CHUNK`] per readable connection per round, round-robin, as the mio adapter
//!   does. A client may close (FIN), reset (RST) or vanish (half-open: nothing is ever sent again,
//!   not even a FIN, and it never reads again). The server learns of a FIN or a reset by reading
//!   after the bytes that came before it (Linux delivers queued bytes before `ECONNRESET`), and of
//!   a reset also by its next write failing.
//! - **Accept**: a connection waits in the listener's backlog until accepted; the first
//!   [`SystemConfig::failing_accepts`] attempts fail (out of descriptors), and the sim accepts
//!   again only on [`Output::AcceptAgain`].
//! - **UDP**: each client has a [`Path`] ([`Link`] each way: loss, delay, rate, jitter, ...)
//!   shared by its downloads, and optionally a largest datagram the path carries
//!   ([`ClientSpec::max_datagram`], U5). Parts are sealed with [`seal_part`] from the served
//!   file's content at the moment of sending; a file changed mid-transfer ([`FileChange`]) is
//!   noticed by [`Output::CheckFile`] or by a short read, as on a real server (U7).
//!
//! # Clients
//!
//! A client is anything implementing [`SimClient`]: its inputs are the bytes it read and the end
//! of its connection, plus the datagrams of its downloads; its outputs are [`ClientAction`]s
//! (connect, send, stop reading, reset, open a download's socket, ...) and datagrams. The
//! scripted client of [`script`] follows a timed script and downloads with
//! [`crate::transfer::Receiver`]s; a client driver can be plugged in the same way.
//!
//! # The report
//!
//! [`SystemReport`]: every line each client read and wrote with its simulated time (the
//! transcript), the server's log events, per connection the peak bytes queued for it and its read
//! pauses, every download's outcome and digest, and the simulated time the run took.

pub mod script;

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::chat::catalogue::{Catalogue, FileEntry, FileKey};
use crate::chat::client::MAX_SERVER_LINE;
use crate::chat::server::{ConnId, LogEvent, ServerConfig};
use crate::driver::server::{Input, Output, READ_CHUNK, ServerDriver};
use crate::sim::Path;
use crate::sim::link::Link;
use crate::sim::rng::SplitMix64;
use crate::transfer::endpoint::Transmit;
use crate::transfer::receiver::TransferError;
use crate::wire::datagram::{MAX_DATAGRAM, PART_HEADER_LEN, seal_part};
use crate::wire::line::{Framed, LineFramer};

/// The simulated TCP connections.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// One-way delay, each way (data and acknowledgements alike). Must not be zero.
    pub delay: Duration,
    /// Server to client: bytes written and not yet read by the client, at most (the kernel's
    /// send buffer plus the client's receive window).
    pub window: usize,
    /// Client to server: bytes sent and not yet read by the server, at most.
    pub upload_window: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self { delay: Duration::from_millis(5), window: 64 << 10, upload_window: 64 << 10 }
    }
}

/// A file of the simulated served folder.
#[derive(Debug, Clone)]
pub struct SimFile {
    /// Its name (a key of the catalogue).
    pub name: String,
    /// Its bytes.
    pub content: Vec<u8>,
}

/// A file of the folder edited in place during the run (U7): from `at` on, it reads `content`, its
/// identity changes, and the folder is scanned again.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// When, after the start.
    pub at: Duration,
    /// Which file.
    pub name: String,
    /// Its new bytes.
    pub content: Vec<u8>,
}

/// One simulated run of the whole system.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// Every random draw (losses, jitter, the server's tokens) comes from this.
    pub seed: u64,
    /// The server's limits.
    pub server: ServerConfig,
    /// The chat connections.
    pub tcp: TcpConfig,
    /// The served folder.
    pub files: Vec<SimFile>,
    /// Files changed during the run.
    pub file_changes: Vec<FileChange>,
    /// This many of the first `accept` calls fail for want of descriptors.
    pub failing_accepts: u32,
    /// The run stops at this simulated time at the latest.
    pub time_limit: Duration,
    /// Whether to keep the chronological [`SystemReport::timeline`] (large runs may not want it).
    pub timeline: bool,
}

impl SystemConfig {
    /// A run with the default server and TCP settings, no files, a 60 s limit.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            server: ServerConfig::default(),
            tcp: TcpConfig::default(),
            files: Vec::new(),
            file_changes: Vec::new(),
            failing_accepts: 0,
            time_limit: Duration::from_secs(60),
            timeline: true,
        }
    }
}

/// What the simulated network tells a client about its chat connection.
#[derive(Debug, Clone, Copy)]
pub enum ClientInput<'a> {
    /// Bytes the client read from its connection.
    Received(&'a [u8]),
    /// The server closed the connection; everything it sent before was read already.
    ConnectionEnded,
}

/// What a client asks of the simulated network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Open a chat connection (a client has one at a time; this replaces any earlier one, which
    /// should have been reset or closed first).
    Connect,
    /// Write these bytes to the connection.
    Send(Vec<u8>),
    /// Stop reading the connection: what arrives waits, and the server's window closes (C5).
    StopReading,
    /// Read the connection again.
    ResumeReading,
    /// Reset the connection (RST): unsent bytes are lost, nothing more is read.
    Reset,
    /// Close the connection (FIN) once what was written has gone out.
    Close,
    /// Vanish without a word (half-open TCP): no FIN, no RST, no reading, ever again.
    Vanish,
    /// Open a UDP socket for download `id`, talking to the server's `port`.
    OpenDownload {
        /// The client's number for the download.
        id: u64,
        /// The server's transfer port.
        port: u16,
    },
    /// Close download `id`'s socket: what arrives for it from now on is dropped.
    CloseDownload {
        /// The client's number for the download.
        id: u64,
    },
}

/// How a download ended, client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// Every part arrived and the digest matched.
    Complete,
    /// The receiver failed (ABORT, no progress, digest mismatch).
    Failed(TransferError),
    /// The server answered the request with this `ERROR` instead of an offer.
    Refused(String),
    /// No part arrived in time with parts this large: the client asked again with small ones (U5).
    TooLarge,
    /// The client was killed during it; its state was saved for a resume (U6).
    Killed,
    /// Still running when the run ended.
    Unfinished,
}

/// One download as the client saw it.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    /// The file asked for.
    pub file: String,
    /// The port of the offer, if there was one.
    pub port: Option<u16>,
    /// The part size of the offer (0 when refused).
    pub part_size: u16,
    /// How it ended.
    pub outcome: DownloadOutcome,
    /// The BLAKE3 digest of the bytes the client holds at the end, computed afresh (not the
    /// receiver's running hash).
    pub written_digest: [u8; 32],
    /// Every part index this run of the download asked for, in any REQUEST.
    pub requested_parts: std::collections::BTreeSet<u32>,
    /// Every part index accepted (new) in this run.
    pub received_parts: std::collections::BTreeSet<u32>,
    /// Parts already on disk when this run started (a resume, U6).
    pub resumed_parts: u32,
    /// When the offer arrived and when the download ended, after the start of the simulation.
    pub offered_at: Option<Duration>,
    /// When it ended (completed, failed, killed, gave up on large parts).
    pub ended_at: Option<Duration>,
}

/// A simulated client. The simulator calls these the way a client runtime would call its driver.
pub trait SimClient: fmt::Debug {
    /// The simulation starts at `now`.
    fn start(&mut self, now: Instant);
    /// Something happened on the chat connection.
    fn handle_input(&mut self, now: Instant, input: ClientInput<'_>);
    /// The next thing to do, or `None` (called until `None`).
    fn poll_action(&mut self) -> Option<ClientAction>;
    /// When [`SimClient::handle_timeout`] must be called next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The time has come.
    fn handle_timeout(&mut self, now: Instant);
    /// A datagram arrived on download `id`'s socket.
    fn handle_datagram(&mut self, now: Instant, id: u64, buf: &[u8]);
    /// The next datagram to send, written into `buf`: the download it belongs to and its length.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(u64, usize)>;
    /// Every download so far, in the order they were asked for.
    fn downloads(&self) -> Vec<DownloadReport>;
}

/// One client of a run.
#[derive(Debug)]
pub struct ClientSpec {
    /// Its name in the report and the transcript.
    pub label: String,
    /// Its UDP path to the server.
    pub path: Path,
    /// The largest datagram its path carries either way; larger ones are dropped (U5).
    pub max_datagram: Option<usize>,
    /// The client itself.
    pub client: Box<dyn SimClient>,
}

impl ClientSpec {
    /// A client on a clean 100 Mbit/s UDP path with a 10 ms round trip.
    pub fn new(label: impl Into<String>, client: impl SimClient + 'static) -> Self {
        Self {
            label: label.into(),
            path: Path::symmetric(100_000_000, Duration::from_millis(10), 0.0),
            max_datagram: None,
            client: Box::new(client),
        }
    }

    /// The same client on another UDP path.
    pub fn with_path(mut self, path: Path) -> Self {
        self.path = path;
        self
    }

    /// The same client on a path that drops datagrams larger than `bytes`.
    pub fn with_max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = Some(bytes);
        self
    }
}

/// One chat connection as the report tells it.
#[derive(Debug, Clone, Default)]
pub struct ConnReport {
    /// The server's number for it.
    pub conn: ConnId,
    /// When the client opened it.
    pub opened_at: Duration,
    /// The most bytes the server held for it at once: queued in the chat server and its outbox,
    /// not counting the [`TcpConfig::window`] bytes already written to the socket.
    pub peak_queued: usize,
    /// How many times the server paused reading it (C6).
    pub pauses: u32,
    /// When the server closed it (its `Close` output), if it did.
    pub closed_by_server: Option<Duration>,
    /// When the client read the end of it, if it did.
    pub end_read: Option<Duration>,
}

/// What one client saw and did.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Its label.
    pub label: String,
    /// Every line it read, with when.
    pub received: Vec<(Duration, String)>,
    /// Every line it wrote, with when its program wrote it (not when it left the socket).
    pub sent: Vec<(Duration, String)>,
    /// Its connections, oldest first.
    pub conns: Vec<ConnReport>,
    /// Its downloads, in the order asked for.
    pub downloads: Vec<DownloadReport>,
    /// Datagrams to or from it dropped for being larger than its path carries.
    pub dropped_too_large: u64,
}

impl ClientReport {
    /// The lines it read, without times.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.received.iter().map(|(_, l)| l.as_str())
    }
}

/// What happened in one run.
#[derive(Debug, Clone, Default)]
pub struct SystemReport {
    /// The seed the run came from: rerun it to get the same run.
    pub seed: u64,
    /// The simulated time the run took.
    pub elapsed: Duration,
    /// Every client, in the order given.
    pub clients: Vec<ClientReport>,
    /// The server's log events with their times.
    pub log: Vec<(Duration, LogEvent)>,
    /// The most bytes the server held for all connections together at once (see
    /// [`ConnReport::peak_queued`]).
    pub peak_total_queued: usize,
    /// Everything in order: what each client read (`label <- line`) and wrote (`label -> line`),
    /// what it did to its connection (`label [reset]`), the server's log (`[log] ...`). Empty
    /// unless [`SystemConfig::timeline`].
    pub timeline: Vec<(Duration, String)>,
}

impl SystemReport {
    /// The client labelled `label`.
    ///
    /// # Panics
    /// When there is none: a test asked for a client it did not create.
    pub fn client(&self, label: &str) -> &ClientReport {
        self.clients
            .iter()
            .find(|c| c.label == label)
            .unwrap_or_else(|| panic!("no client {label} in the report (seed {})", self.seed))
    }

    /// The timeline as text, one event a line, `seconds.millis  event`: a transcript for
    /// snapshots.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for (at, line) in &self.timeline {
            out.push_str(&format!("{:>3}.{:03} {line}\n", at.as_secs(), at.subsec_millis()));
        }
        out
    }
}

/// How the client end of a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientSide {
    Open,
    /// A FIN follows once the pending bytes are out.
    Closing,
    Closed,
    Reset,
    Vanished,
}

/// How the client ended a connection, as the server's kernel learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerEnd {
    Fin,
    Reset,
}

#[derive(Debug)]
struct Conn {
    client: usize,
    /// Index into the client's `conns` report.
    report: usize,
    peer: SocketAddr,
    // Client side.
    side: ClientSide,
    /// Bytes the client program wrote that do not fit the upload window yet.
    c_pending: VecDeque<u8>,
    /// Bytes sent and not yet read by the server.
    c_unacked: usize,
    reading: bool,
    /// Bytes arrived at the client and not read.
    c_rx: VecDeque<u8>,
    /// The server's FIN arrived (after every byte before it).
    c_fin: bool,
    // Server side.
    accepted: bool,
    s_rx: VecDeque<u8>,
    s_end: Option<PeerEnd>,
    paused: bool,
    /// The driver forgot it (it closed it, or was told the peer closed).
    gone: bool,
    /// Bytes written and not yet read by the client.
    s_unacked: usize,
}

#[derive(Debug)]
struct ClientState {
    label: String,
    client: Box<dyn SimClient>,
    ip: IpAddr,
    up: Link,
    down: Link,
    max_datagram: Option<usize>,
    conn: Option<ConnId>,
    /// Server port of each open download.
    downloads: BTreeMap<u64, u16>,
    framer: LineFramer,
    sent_partial: Vec<u8>,
    report: ClientReport,
    /// Something was delivered: poll its actions and datagrams.
    dirty: bool,
}

#[derive(Debug)]
enum Ev {
    Syn { conn: ConnId },
    ToServer { conn: ConnId, bytes: Vec<u8> },
    EndToServer { conn: ConnId, end: PeerEnd },
    AckToClient { conn: ConnId, n: usize },
    ToClient { conn: ConnId, bytes: Vec<u8> },
    FinToClient { conn: ConnId },
    AckToServer { conn: ConnId, n: usize },
    DatagramToServer { port: u16, from: SocketAddr, bytes: Vec<u8> },
    DatagramToClient { client: usize, id: u64, bytes: Vec<u8> },
    FileChange { index: usize },
}

#[derive(Debug)]
struct Queued {
    at_ns: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ns, self.seq) == (other.at_ns, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ns, self.seq).cmp(&(other.at_ns, other.seq))
    }
}

/// A file of the folder: its bytes and its identity (which changes with every edit).
#[derive(Debug)]
struct FolderFile {
    content: Vec<u8>,
    key: FileKey,
}

/// What a port serves: the file and its identity when opened.
#[derive(Debug)]
struct Serving {
    file: String,
    key: FileKey,
}

struct World {
    base: Instant,
    now_ns: u64,
    tcp: TcpConfig,
    driver: ServerDriver,
    rng: SplitMix64,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    backlog: VecDeque<ConnId>,
    accepting: bool,
    failing_accepts: u32,
    clients: Vec<ClientState>,
    folder: BTreeMap<String, FolderFile>,
    changes: Vec<FileChange>,
    serving: BTreeMap<u16, Serving>,
    routes: HashMap<SocketAddr, (usize, u64)>,
    log: Vec<(Duration, LogEvent)>,
    timeline: Option<Vec<(Duration, String)>>,
    peak_total_queued: usize,
    buf: Vec<u8>,
}

/// The UDP port of a client's socket for download `id`.
fn udp_addr(ip: IpAddr, id: u64) -> SocketAddr {
    SocketAddr::new(ip, 40_000u16.wrapping_add(id as u16))
}

fn catalogue_of(folder: &BTreeMap<String, FolderFile>) -> (Catalogue, HashMap<String, FileKey>) {
    let entries = folder
        .iter()
        .map(|(name, f)| FileEntry {
            name: name.clone(),
            size: f.content.len() as u64,
            blake3: *blake3::hash(&f.content).as_bytes(),
        })
        .collect();
    let identities = folder.iter().map(|(n, f)| (n.clone(), f.key)).collect();
    (Catalogue::from_entries(entries), identities)
}

/// Runs the system until nothing is left to happen or the time limit passes. `base` is the
/// simulated time zero (read the clock once for it, or pass any `Instant`).
pub fn run(base: Instant, config: SystemConfig, clients: Vec<ClientSpec>) -> SystemReport {
    let folder: BTreeMap<String, FolderFile> = config
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let key = FileKey {
                size: f.content.len() as u64,
                mtime_secs: 0,
                mtime_nanos: 0,
                inode: i as u64 + 1,
            };
            let file = FolderFile { content: f.content.clone(), key };
            (f.name.clone(), file)
        })
        .collect();
    let (catalogue, identities) = catalogue_of(&folder);
    let mut driver = ServerDriver::new(config.server.clone(), catalogue.clone(), config.seed);
    driver.handle_input(base, Input::Folder { catalogue: &catalogue, identities: &identities });
    let clients = clients
        .into_iter()
        .enumerate()
        .map(|(i, spec)| ClientState {
            report: ClientReport { label: spec.label.clone(), ..ClientReport::default() },
            label: spec.label,
            client: spec.client,
            ip: IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)),
            up: Link::new(spec.path.up),
            down: Link::new(spec.path.down),
            max_datagram: spec.max_datagram,
            conn: None,
            downloads: BTreeMap::new(),
            framer: LineFramer::with_limit(MAX_SERVER_LINE),
            sent_partial: Vec::new(),
            dirty: true,
        })
        .collect();
    let mut world = World {
        base,
        now_ns: 0,
        tcp: config.tcp.clone(),
        driver,
        rng: SplitMix64::new(config.seed),
        queue: BinaryHeap::new(),
        seq: 0,
        conns: BTreeMap::new(),
        next_conn: 1,
        backlog: VecDeque::new(),
        accepting: true,
        failing_accepts: config.failing_accepts,
        clients,
        folder,
        changes: config.file_changes.clone(),
        serving: BTreeMap::new(),
        routes: HashMap::new(),
        log: Vec::new(),
        timeline: config.timeline.then(Vec::new),
        peak_total_queued: 0,
        buf: vec![0; MAX_DATAGRAM],
    };
    for i in 0..world.changes.len() {
        let at = world.changes[i].at.as_nanos() as u64;
        world.schedule_at(at, Ev::FileChange { index: i });
    }
    for c in &mut world.clients {
        c.client.start(base);
    }
    world.perform();
    world.run_until(config.time_limit.as_nanos() as u64);
    world.report(config.seed)
}

impl World {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.now_ns)
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_ns)
    }

    fn to_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        let at = self.elapsed();
        if let Some(t) = self.timeline.as_mut() {
            t.push((at, line()));
        }
    }

    fn schedule_at(&mut self, at_ns: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued { at_ns, seq: self.seq, ev }));
    }

    fn schedule_tcp(&mut self, ev: Ev) {
        let at = self.now_ns + (self.tcp.delay.as_nanos() as u64).max(1);
        self.schedule_at(at, ev);
    }

    fn run_until(&mut self, limit_ns: u64) {
        let mut stuck = 0u32;
        loop {
            while self.queue.peek().is_some_and(|Reverse(q)| q.at_ns <= self.now_ns) {
                let Some(Reverse(q)) = self.queue.pop() else {
                    break;
                };
                self.handle_event(q.ev);
            }
            let now = self.now();
            if self.driver.poll_timeout().is_some_and(|at| at <= now) {
                self.driver.handle_timeout(now);
                self.perform();
            }
            self.read_rounds();
            self.run_clients();
            self.measure();
            let mut next = self.queue.peek().map(|Reverse(q)| q.at_ns);
            let timeouts = self
                .clients
                .iter()
                .filter_map(|c| c.client.poll_timeout())
                .chain(self.driver.poll_timeout());
            for t in timeouts {
                let t = self.to_ns(t);
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            let Some(next) = next else { break };
            if next > limit_ns {
                self.now_ns = self.now_ns.max(limit_ns);
                break;
            }
            if next <= self.now_ns {
                stuck += 1;
                assert!(stuck < 100_000, "system simulation stuck at {:?}", self.now());
            } else {
                stuck = 0;
                self.now_ns = next;
            }
        }
    }

    fn handle_event(&mut self, ev: Ev) {
        match ev {
            Ev::Syn { conn } => {
                self.backlog.push_back(conn);
                self.accept_all();
            }
            Ev::ToServer { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.gone) {
                    c.s_rx.extend(bytes);
                }
            }
            Ev::EndToServer { conn, end } => {
                if let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.gone) {
                    c.s_end = Some(end);
                }
            }
            Ev::AckToClient { conn, n } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.c_unacked = c.c_unacked.saturating_sub(n);
                }
                self.pump(conn);
            }
            Ev::ToClient { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn)
                    && matches!(c.side, ClientSide::Open | ClientSide::Closing)
                {
                    c.c_rx.extend(bytes);
                }
                self.deliver(conn);
            }
            Ev::FinToClient { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.c_fin = true;
                }
                self.deliver(conn);
            }
            Ev::AckToServer { conn, n } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.s_unacked = c.s_unacked.saturating_sub(n);
                }
                self.flush(conn);
                self.perform();
            }
            Ev::DatagramToServer { port, from, bytes } => {
                let now = self.now();
                let input = Input::Datagram { port, from, bytes: &bytes };
                self.driver.handle_input(now, input);
                self.perform();
            }
            Ev::DatagramToClient { client, id, bytes } => {
                let now = self.now();
                let c = &mut self.clients[client];
                if c.downloads.contains_key(&id) {
                    c.client.handle_datagram(now, id, &bytes);
                    c.dirty = true;
                }
            }
            Ev::FileChange { index } => self.change_file(index),
        }
    }

    fn change_file(&mut self, index: usize) {
        let Some(change) = self.changes.get(index).cloned() else {
            return;
        };
        let Some(file) = self.folder.get_mut(&change.name) else {
            return;
        };
        file.key.size = change.content.len() as u64;
        file.key.mtime_secs += 1;
        file.content = change.content;
        let name = change.name;
        self.note(|| format!("[folder] {name} changed"));
        let (catalogue, identities) = catalogue_of(&self.folder);
        let now = self.now();
        self.driver
            .handle_input(now, Input::Folder { catalogue: &catalogue, identities: &identities });
        self.perform();
    }

    fn accept_all(&mut self) {
        while self.accepting && !self.backlog.is_empty() {
            let now = self.now();
            if self.failing_accepts > 0 {
                self.failing_accepts -= 1;
                self.accepting = false;
                self.note(|| "[accept failed]".to_owned());
                self.driver.handle_input(now, Input::AcceptFailed);
                self.perform();
                return;
            }
            let Some(conn) = self.backlog.pop_front() else {
                return;
            };
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.accepted = true;
            let peer = c.peer;
            self.driver.handle_input(now, Input::Accepted { conn, peer });
            self.perform();
        }
    }

    /// One chunk from every readable connection per round, until none is readable (the mio
    /// adapter's `read_round`, run to quiescence: the simulated server has all the CPU it wants).
    fn read_rounds(&mut self) {
        loop {
            let readable: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.accepted && !c.gone && !c.paused && (!c.s_rx.is_empty() || c.s_end.is_some())
                })
                .map(|(&id, _)| id)
                .collect();
            if readable.is_empty() {
                return;
            }
            for conn in readable {
                self.read_one(conn);
            }
        }
    }

    fn read_one(&mut self, conn: ConnId) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.gone || c.paused {
            return;
        }
        if c.s_rx.is_empty() {
            if c.s_end.is_some() {
                c.gone = true;
                self.driver.handle_input(now, Input::PeerClosed { conn });
                self.perform();
            }
            return;
        }
        let n = c.s_rx.len().min(READ_CHUNK);
        let bytes: Vec<u8> = c.s_rx.drain(..n).collect();
        self.schedule_tcp(Ev::AckToClient { conn, n });
        self.driver.handle_input(now, Input::Received { conn, bytes: &bytes });
        self.perform();
    }

    /// Writes what `conn` is owed into its socket, as far as the window allows.
    fn flush(&mut self, conn: ConnId) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.gone {
            return;
        }
        if c.s_end == Some(PeerEnd::Reset) {
            // The write fails: the connection was reset.
            c.gone = true;
            self.driver.handle_input(now, Input::PeerClosed { conn });
            return;
        }
        let window = self.tcp.window;
        while self.driver.has_unsent(conn) {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let room = window.saturating_sub(c.s_unacked);
            if room == 0 {
                return;
            }
            let mut bytes = Vec::new();
            for b in self.driver.unsent(conn) {
                let take = b.len().min(room - bytes.len());
                bytes.extend_from_slice(&b[..take]);
                if bytes.len() == room {
                    break;
                }
            }
            if bytes.is_empty() {
                return;
            }
            c.s_unacked += bytes.len();
            let len = bytes.len();
            self.schedule_tcp(Ev::ToClient { conn, bytes });
            self.driver.handle_input(now, Input::Written { conn, len });
        }
    }

    /// Performs the driver's outputs until it asks nothing more.
    fn perform(&mut self) {
        while let Some(output) = self.driver.poll_output() {
            let now = self.now();
            match output {
                Output::Write { conn } => self.flush(conn),
                Output::Close { conn } => {
                    let at = self.elapsed();
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.gone = true;
                        c.paused = false;
                        let (client, report) = (c.client, c.report);
                        if let Some(r) = self.clients[client].report.conns.get_mut(report) {
                            r.closed_by_server.get_or_insert(at);
                        }
                        self.schedule_tcp(Ev::FinToClient { conn });
                    }
                }
                Output::PauseReading { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if !c.paused {
                            let (client, report) = (c.client, c.report);
                            if let Some(r) = self.clients[client].report.conns.get_mut(report) {
                                r.pauses += 1;
                            }
                        }
                        c.paused = true;
                    }
                }
                Output::ResumeReading { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.paused = false;
                    }
                }
                Output::AcceptAgain => {
                    self.accepting = true;
                    self.accept_all();
                }
                Output::Serve { port, file, identity, .. } => {
                    let key = self.folder.get(&file).map(|f| f.key);
                    match key.filter(|k| Some(*k) == identity) {
                        Some(key) => {
                            self.serving.insert(port, Serving { file, key });
                        }
                        None => {
                            self.serving.remove(&port);
                            self.driver.handle_input(now, Input::FileChanged { port });
                        }
                    }
                }
                Output::CheckFile { port } => {
                    let same = self
                        .serving
                        .get(&port)
                        .is_some_and(|s| self.folder.get(&s.file).is_some_and(|f| f.key == s.key));
                    if !same {
                        self.serving.remove(&port);
                        self.driver.handle_input(now, Input::FileChanged { port });
                    }
                }
                Output::StopServing { port } => {
                    self.serving.remove(&port);
                }
                Output::Transmit { port } => self.transmit(port),
                Output::Log(event) => {
                    let at = self.elapsed();
                    self.note(|| format!("[log] {event}"));
                    self.log.push((at, event));
                }
            }
        }
    }

    /// Sends every datagram due on `port`, reading parts from the folder as they are now.
    fn transmit(&mut self, port: u16) {
        let now = self.now();
        while let Some(transmit) = self.driver.poll_transmit(now, port) {
            match transmit {
                Transmit::Part { to, token, req_seq, part, offset, len } => {
                    let content = self
                        .serving
                        .get(&port)
                        .and_then(|s| self.folder.get(&s.file))
                        .map(|f| &f.content);
                    let at = usize::try_from(offset).unwrap_or(usize::MAX);
                    let Some(payload) = content.and_then(|c| c.get(at..at.saturating_add(len)))
                    else {
                        // Shorter than offered, or not open: it changed under us (U7).
                        self.serving.remove(&port);
                        self.driver.handle_input(now, Input::FileChanged { port });
                        continue;
                    };
                    let mut buf = std::mem::take(&mut self.buf);
                    buf[PART_HEADER_LEN..PART_HEADER_LEN + len].copy_from_slice(payload);
                    let n = seal_part(&mut buf, token, req_seq, part, len);
                    self.send_down(to, &buf[..n]);
                    self.buf = buf;
                }
                Transmit::Datagram { to, bytes } => self.send_down(to, &bytes),
            }
        }
    }

    fn send_down(&mut self, to: SocketAddr, bytes: &[u8]) {
        let Some(&(client, id)) = self.routes.get(&to) else {
            return;
        };
        let c = &mut self.clients[client];
        if c.max_datagram.is_some_and(|max| bytes.len() > max) {
            c.report.dropped_too_large += 1;
            return;
        }
        let mut copies = Vec::new();
        c.down.transmit(self.now_ns, bytes.len(), &mut self.rng, &mut copies);
        for (at_ns, corrupt) in copies {
            let mut bytes = bytes.to_vec();
            if corrupt {
                flip_bit(&mut bytes, &mut self.rng);
            }
            self.schedule_at(at_ns, Ev::DatagramToClient { client, id, bytes });
        }
    }

    /// Lets every client act: its timers, what it asks, what it sends.
    fn run_clients(&mut self) {
        let now = self.now();
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.client.poll_timeout().is_some_and(|t| t <= now) {
                c.client.handle_timeout(now);
                c.dirty = true;
            }
            if !std::mem::take(&mut self.clients[i].dirty) {
                continue;
            }
            while let Some(action) = self.clients[i].client.poll_action() {
                self.client_action(i, action);
            }
            let mut buf = std::mem::take(&mut self.buf);
            while let Some((id, n)) = self.clients[i].client.poll_transmit(now, &mut buf) {
                self.send_up(i, id, &buf[..n]);
            }
            self.buf = buf;
        }
    }

    fn send_up(&mut self, client: usize, id: u64, bytes: &[u8]) {
        let c = &mut self.clients[client];
        let Some(&port) = c.downloads.get(&id) else {
            return;
        };
        if c.max_datagram.is_some_and(|max| bytes.len() > max) {
            c.report.dropped_too_large += 1;
            return;
        }
        let from = udp_addr(c.ip, id);
        let mut copies = Vec::new();
        c.up.transmit(self.now_ns, bytes.len(), &mut self.rng, &mut copies);
        for (at_ns, corrupt) in copies {
            let mut bytes = bytes.to_vec();
            if corrupt {
                flip_bit(&mut bytes, &mut self.rng);
            }
            self.schedule_at(at_ns, Ev::DatagramToServer { port, from, bytes });
        }
    }

    fn client_action(&mut self, client: usize, action: ClientAction) {
        let label = self.clients[client].label.clone();
        if matches!(
            action,
            ClientAction::Reset
                | ClientAction::Close
                | ClientAction::Vanish
                | ClientAction::Connect
        ) && !self.clients[client].sent_partial.is_empty()
        {
            let partial = std::mem::take(&mut self.clients[client].sent_partial);
            let text = String::from_utf8_lossy(&partial).into_owned();
            self.note(|| format!("{label} -> {text} [no newline]"));
        }
        let conn = self.clients[client].conn;
        match action {
            ClientAction::Connect => {
                let id = self.next_conn;
                self.next_conn += 1;
                let c = &mut self.clients[client];
                let peer = SocketAddr::new(c.ip, 50_000u16.wrapping_add(id as u16));
                c.report.conns.push(ConnReport {
                    conn: id,
                    opened_at: Duration::from_nanos(self.now_ns),
                    ..ConnReport::default()
                });
                let report = c.report.conns.len() - 1;
                c.conn = Some(id);
                c.framer = LineFramer::with_limit(MAX_SERVER_LINE);
                c.sent_partial.clear();
                self.conns.insert(
                    id,
                    Conn {
                        client,
                        report,
                        peer,
                        side: ClientSide::Open,
                        c_pending: VecDeque::new(),
                        c_unacked: 0,
                        reading: true,
                        c_rx: VecDeque::new(),
                        c_fin: false,
                        accepted: false,
                        s_rx: VecDeque::new(),
                        s_end: None,
                        paused: false,
                        gone: false,
                        s_unacked: 0,
                    },
                );
                self.note(|| format!("{label} [connect]"));
                self.schedule_tcp(Ev::Syn { conn: id });
            }
            ClientAction::Send(bytes) => {
                self.record_sent(client, &bytes);
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn)
                    && c.side == ClientSide::Open
                {
                    c.c_pending.extend(bytes);
                }
                self.pump(conn);
            }
            ClientAction::StopReading => {
                if let Some(c) = conn.and_then(|id| self.conns.get_mut(&id)) {
                    c.reading = false;
                }
                self.note(|| format!("{label} [stops reading]"));
            }
            ClientAction::ResumeReading => {
                if let Some(c) = conn.and_then(|id| self.conns.get_mut(&id)) {
                    c.reading = true;
                }
                self.note(|| format!("{label} [reads again]"));
                if let Some(conn) = conn {
                    self.deliver(conn);
                }
            }
            ClientAction::Reset => {
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.side = ClientSide::Reset;
                    c.c_pending.clear();
                    c.reading = false;
                }
                self.clients[client].conn = None;
                self.note(|| format!("{label} [reset]"));
                self.schedule_tcp(Ev::EndToServer { conn, end: PeerEnd::Reset });
            }
            ClientAction::Close => {
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.side = ClientSide::Closing;
                }
                self.clients[client].conn = None;
                self.note(|| format!("{label} [close]"));
                self.pump(conn);
            }
            ClientAction::Vanish => {
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.side = ClientSide::Vanished;
                    c.c_pending.clear();
                    c.reading = false;
                }
                self.clients[client].conn = None;
                self.note(|| format!("{label} [vanishes: half-open]"));
            }
            ClientAction::OpenDownload { id, port } => {
                let c = &mut self.clients[client];
                c.downloads.insert(id, port);
                let addr = udp_addr(c.ip, id);
                self.routes.insert(addr, (client, id));
            }
            ClientAction::CloseDownload { id } => {
                let c = &mut self.clients[client];
                c.downloads.remove(&id);
                let addr = udp_addr(c.ip, id);
                self.routes.remove(&addr);
            }
        }
    }

    fn record_sent(&mut self, client: usize, bytes: &[u8]) {
        let at = self.elapsed();
        let c = &mut self.clients[client];
        c.sent_partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(nl) = c.sent_partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = c.sent_partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..nl]).into_owned();
            c.report.sent.push((at, text.clone()));
            lines.push(text);
        }
        if self.timeline.is_some() {
            let label = c.label.clone();
            for line in lines {
                self.note(|| format!("{label} -> {line}"));
            }
        }
    }

    /// Moves the client's pending bytes into the network as far as the upload window allows.
    fn pump(&mut self, conn: ConnId) {
        let window = self.tcp.upload_window;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !matches!(c.side, ClientSide::Open | ClientSide::Closing) {
            return;
        }
        let n = window.saturating_sub(c.c_unacked).min(c.c_pending.len());
        let bytes: Vec<u8> = c.c_pending.drain(..n).collect();
        c.c_unacked += n;
        let fin = c.side == ClientSide::Closing && c.c_pending.is_empty();
        if fin {
            c.side = ClientSide::Closed;
            c.reading = false;
        }
        if n > 0 {
            self.schedule_tcp(Ev::ToServer { conn, bytes });
        }
        if fin {
            self.schedule_tcp(Ev::EndToServer { conn, end: PeerEnd::Fin });
        }
    }

    /// The client reads what arrived, if it reads.
    fn deliver(&mut self, conn: ConnId) {
        let now = self.now();
        let at = self.elapsed();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.reading || !matches!(c.side, ClientSide::Open | ClientSide::Closing) {
            return;
        }
        let client = c.client;
        let report = c.report;
        if !c.c_rx.is_empty() {
            let bytes: Vec<u8> = c.c_rx.drain(..).collect();
            let n = bytes.len();
            self.schedule_tcp(Ev::AckToServer { conn, n });
            let cs = &mut self.clients[client];
            cs.client.handle_input(now, ClientInput::Received(&bytes));
            cs.dirty = true;
            cs.framer.push(&bytes);
            let mut lines = Vec::new();
            while let Some(framed) = cs.framer.next() {
                let line = match framed {
                    Framed::Line(l) => l,
                    Framed::TooLong => "<line too long>".to_owned(),
                    Framed::InvalidUtf8 => "<invalid UTF-8>".to_owned(),
                };
                cs.report.received.push((at, line.clone()));
                lines.push(line);
            }
            if self.timeline.is_some() {
                let label = self.clients[client].label.clone();
                for line in lines {
                    self.note(|| format!("{label} <- {line}"));
                }
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.c_fin && c.c_rx.is_empty() {
            c.c_fin = false;
            c.side = ClientSide::Closed;
            let cs = &mut self.clients[client];
            if let Some(r) = cs.report.conns.get_mut(report) {
                r.end_read = Some(at);
            }
            if cs.conn == Some(conn) {
                cs.conn = None;
            }
            cs.client.handle_input(now, ClientInput::ConnectionEnded);
            cs.dirty = true;
            let label = cs.label.clone();
            self.note(|| format!("{label} [connection closed by the server]"));
        }
    }

    /// Samples what the server holds per connection and in all.
    fn measure(&mut self) {
        let mut total = 0;
        for (&id, c) in &self.conns {
            if !c.accepted || (c.gone && !self.driver.has_unsent(id)) {
                continue;
            }
            let outbox: usize = self.driver.unsent(id).map(|b| b.len()).sum();
            let queued = self.driver.chat().queued_bytes(id).max(outbox);
            total += queued;
            if let Some(r) = self.clients[c.client].report.conns.get_mut(c.report) {
                r.peak_queued = r.peak_queued.max(queued);
            }
        }
        self.peak_total_queued = self.peak_total_queued.max(total);
    }

    fn report(mut self, seed: u64) -> SystemReport {
        let elapsed = self.elapsed();
        let clients = self
            .clients
            .iter_mut()
            .map(|c| {
                let mut report = std::mem::take(&mut c.report);
                report.downloads = c.client.downloads();
                report
            })
            .collect();
        SystemReport {
            seed,
            elapsed,
            clients,
            log: self.log,
            peak_total_queued: self.peak_total_queued,
            timeline: self.timeline.unwrap_or_default(),
        }
    }
}

fn flip_bit(bytes: &mut [u8], rng: &mut SplitMix64) {
    if bytes.is_empty() {
        return;
    }
    let bit = rng.below(bytes.len() as u64 * 8);
    bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
}
