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
//!   ([`ClientSpec::max_datagram`], U5). Parts are sealed with [`seal_part`] (or AES-GCM for a
//!   [`ClientSpec::secure`] client, PROTOCOL 2.7) from the served
//!   file's content at the moment of sending; a file changed mid-transfer ([`FileChange`]) is
//!   noticed by [`Output::CheckFile`] or by a short read, as on a real server (U7). Each chat
//!   connection also has a UDP socket bound on its own address, as `natter get` binds one for
//!   early flights (PROTOCOL 2.1): what arrives there is handed to the client with where it came
//!   from, and the client driver tells the flights apart.
//!
//! # Clients
//!
//! A client is anything implementing [`SimClient`]: its inputs are the bytes it read and the end
//! of its connection, plus the datagrams of its downloads; its outputs are [`ClientAction`]s
//! (connect, send, stop reading, reset, open a download's socket, ...) and datagrams. Two kinds:
//!
//! - [`driven::DrivenClient`]: the real [`ClientDriver`], the very value `natter` and `natter
//!   get` run, its outputs performed against an in-memory download folder; a timed script types
//!   its lines, ends its input, kills it and starts it again on the same folder (U6).
//! - [`script::ScriptedClient`]: raw bytes on the chat connection, for what a well-behaved client
//!   never does (half lines, floods, resets, half-open connections, never reading).
//!
//! [`ClientDriver`]: crate::driver::client::ClientDriver
//!
//! # The report
//!
//! [`SystemReport`]: every line each client read and wrote with its simulated time (the
//! transcript), the server's log events, per connection the peak bytes queued for it and its read
//! pauses, every download's outcome and digest, each client's download folder and how its
//! sessions ended, and the simulated time the run took.
//!
//! [`READ_CHUNK`]: crate::driver::server::READ_CHUNK
//! [`Output::AcceptAgain`]: crate::driver::server::Output::AcceptAgain
//! [`Output::CheckFile`]: crate::driver::server::Output::CheckFile
//! [`Path`]: crate::sim::Path
//! [`seal_part`]: crate::wire::datagram::seal_part

mod client;
pub mod driven;
mod folder;
mod report;
pub mod script;
mod server_io;
mod tcp;
mod udp;

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use client::{ClientAction, ClientInput, ClientSpec, SimClient};
pub use folder::{DownloadFolder, SavedRecord};
use folder::{FolderFile, catalogue_of, folder_of};
pub use report::{
    ClientReport, ConnReport, DownloadOutcome, DownloadReport, SessionEnd, SystemReport,
};
use server_io::Serving;
use tcp::{ClientSide, Conn, PeerEnd};

use crate::chat::client::MAX_SERVER_LINE;
use crate::chat::server::{ConnId, LogEvent, ServerConfig};
use crate::driver::server::{Input, ServerDriver};
use crate::sim::link::Link;
use crate::sim::rng::SplitMix64;
use crate::wire::datagram::MAX_DATAGRAM;
use crate::wire::line::LineFramer;

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
    /// Whether to keep every UDP datagram as it left its sender ([`SystemReport::udp_capture`]):
    /// what a capture on the path would hold (issue 14's privacy tests).
    pub capture_udp: bool,
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
            capture_udp: false,
        }
    }
}

#[derive(Debug)]
struct ClientState {
    label: String,
    client: Box<dyn SimClient>,
    ip: IpAddr,
    up: Link,
    down: Link,
    max_datagram: Option<usize>,
    /// Its chat connections are marked secure when accepted ([`ClientSpec::secure`]).
    secure: bool,
    conn: Option<ConnId>,
    /// Server port of each open download.
    downloads: BTreeMap<u64, u16>,
    /// The id of the early-flight socket of its chat connection.
    early: Option<u64>,
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
    DatagramToClient { client: usize, id: u64, from_port: u16, bytes: Vec<u8> },
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
    /// Every datagram sent, when [`SystemConfig::capture_udp`].
    capture: Option<Vec<Vec<u8>>>,
}

/// Runs the system until nothing is left to happen or the time limit passes. `base` is the
/// simulated time zero (read the clock once for it, or pass any `Instant`).
pub fn run(base: Instant, config: SystemConfig, clients: Vec<ClientSpec>) -> SystemReport {
    let folder = folder_of(&config.files);
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
            secure: spec.secure,
            conn: None,
            downloads: BTreeMap::new(),
            early: None,
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
        capture: config.capture_udp.then(Vec::new),
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
            Ev::DatagramToClient { client, id, from_port, mut bytes } => {
                let now = self.now();
                let c = &mut self.clients[client];
                if c.early == Some(id) || c.downloads.contains_key(&id) {
                    let from = SocketAddr::new(driven::SERVER_IP, from_port);
                    c.client.handle_datagram(now, id, from, &mut bytes);
                    c.dirty = true;
                }
            }
            Ev::FileChange { index } => self.change_file(index),
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
            // As a client runtime does: every action, then every datagram, again until nothing
            // is sent (a download's socket is closed only once its last datagrams are out).
            loop {
                while let Some(action) = self.clients[i].client.poll_action() {
                    self.client_action(i, action);
                }
                let mut buf = std::mem::take(&mut self.buf);
                let mut sent = false;
                while let Some((id, n)) = self.clients[i].client.poll_transmit(now, &mut buf) {
                    sent = true;
                    self.send_up(i, id, &buf[..n]);
                }
                self.buf = buf;
                if !sent {
                    break;
                }
            }
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
                report.finished = c.client.finished();
                report.folder = c.client.folder();
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
            udp_capture: self.capture.unwrap_or_default(),
        }
    }
}
