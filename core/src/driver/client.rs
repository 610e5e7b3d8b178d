//! The client driver: one chat connection with its downloads, as a sans-IO state machine.
//!
//! [`ClientDriver`] owns everything a client decides: the [`ChatClient`], every download's
//! [`Receiver`] (keyed by a [`DownloadId`]), which server line answers which request, the `{quit}`
//! grace, the small-part fallback (U5), resume checkpoints, what becomes of a download's files when
//! it ends, and `natter get`'s auto-quit ([`Mode::Get`]). A runtime waits, reads, feeds, performs
//! the [`Output`]s and arms the timer; it decides nothing.
//!
//! The call order: one turn of a runtime's loop (this compiles; the socket and file work is
//! elided, and `now` is the runtime's clock, read by the runtime, never by the core):
//!
//! ```
//! use std::time::Instant;
//! use natter_core::driver::client::{ClientDriver, Input, Output};
//!
//! fn turn(driver: &mut ClientDriver, now: Instant, request: &mut [u8]) {
//! // 1. Feed what happened: chat bytes, a typed line, a datagram (each stamped with its own
//! //    `now`: the congestion controller divides by the time between arrivals), a timer.
//! driver.handle_input(now, Input::Received(b"alice has joined the chat!\nALL\n"));
//! driver.handle_input(now, Input::Typed("hello"));
//! let (id, mut datagram) = (0, [0u8; 0]);
//! if let Some(accept) = driver.handle_datagram(now, id, &mut datagram) {
//!     // write datagram[accept.payload] at accept.offset in the .part file, then feed the hash:
//!     while let Some((_offset, _len)) = driver.next_to_hash(id) { /* driver.hash(id, ..) */ }
//! }
//! if driver.poll_timeout().is_some_and(|at| at <= now) {
//!     driver.handle_timeout(now);
//! }
//! // 2. Perform its outputs, then send its requests; again until nothing more is sent (a
//! //    finished download is released only after its last datagrams are out).
//! loop {
//!     while let Some(output) = driver.poll_output() {
//!         match output {
//!             Output::Send(bytes) => { /* queue `bytes` for the chat connection */ }
//!             Output::Open { id, .. } => driver.handle_input(now, Input::Opened { id, resume: None }),
//!             Output::Finish(_) => { /* close the chat connection: the session is over */ }
//!             _ => { /* show, save a record, keep, discard or release a download */ }
//!         }
//!     }
//!     let mut sent = false;
//!     while let Some((_id, _len)) = driver.poll_transmit(now, request) {
//!         sent = true; // send request[.._len] on download _id's socket
//!     }
//!     if !sent {
//!         break;
//!     }
//! }
//! // 3. Sleep until a socket is ready, a line is typed or driver.poll_timeout(); go to 1.
//! }
//! ```
//!
//! Outputs that ask for file work ([`Output::Open`], [`Output::Keep`]) are answered with an input
//! ([`Input::Opened`], [`Input::Saved`] or [`Input::IoFailed`]) as soon as the work is done.
//!
//! Why transmissions are drained before outputs are polled again: a finished download's socket is
//! released ([`Output::Release`]) only once its FINISHED datagrams have gone out.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::chat::client::{ChatClient, ChatInput, ChatOutput, ClientEvent, Offer, Sent};
use crate::chat::password::Password;
use crate::transfer::congestion::FirstFlight;
use crate::transfer::endpoint::part_datagram_len;
use crate::transfer::parts::Layout;
use crate::transfer::receiver::{
    Accept, DEFAULT_GIVE_UP_AFTER, EarlyAsked, Progress, Receiver, ReceiverConfig, ReceiverEvent,
    SAFE_PART_SIZE, TransferError,
};
use crate::transfer::rtt::GRANULARITY;
use crate::wire::chat::{ClientLine, EarlyFlight};
use crate::wire::sealed::SealKey;

pub use super::client_tls::ClientTls;
use super::client_tls::{Received, TlsSession};

/// A download, numbered by the driver in the order offers arrive. Never reused.
pub type DownloadId = u64;

/// The most bytes read from the chat connection at once.
pub const CHAT_READ_CHUNK: usize = 64 << 10;
/// Datagram reads (a `recvmmsg` batch or GRO bundle counts as many) before a runtime sends what
/// they allowed. Why a bound: at 1 Gbit/s the socket may never run dry while the machine is busy,
/// and a loop that reads until it does sends no request meanwhile, so the pipe empties behind it.
pub const DATAGRAM_READS_PER_TURN: usize = 64;
/// How long connecting to the chat server may take before the client gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a running download's progress is shown: smooth for a bar, cheap for a terminal.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How often, while parts arrive, the resume record is saved: a process killed in between asks
/// for at most this much of the download again.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// A TCP connect that took this long lost its SYN or SYN-ACK and waited for the retransmission
/// (TCP's initial RTO, RFC 6298 2.1): its duration is not a round trip of the path. Taken for
/// one, it once paced an early flight at 1 MB/s on a path of a tenth of a millisecond.
pub const CONNECT_RETRANSMITTED: Duration = Duration::from_secs(1);

/// What the client is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A person chats; what they type is sent. When their input ends, the client leaves once no
    /// download runs and no offer is awaited.
    Interactive,
    /// `natter get`: join, ask for `files`, download them, leave. The name and the first
    /// requests go out together, without waiting for the join (PROTOCOL 4, rule 6); at most
    /// [`ClientConfig::max_transfers`] downloads run at once, the rest wait their turn. Each file
    /// ends with an [`Output::FileDone`]; the session's result is the first failure, or the last
    /// file's report when every file is verified.
    Get {
        /// The files' names on the server, in the order they are asked for (a name given twice
        /// is fetched once).
        files: Vec<String>,
    },
}

impl Mode {
    /// `natter get` of one file.
    pub fn get(file: impl Into<String>) -> Self {
        Mode::Get { files: vec![file.into()] }
    }
}

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name to join with.
    pub name: String,
    /// A person's chat, or `natter get`.
    pub mode: Mode,
    /// The chat server's address: download sockets are connected to this IP and the offer's port.
    pub server_ip: IpAddr,
    /// The part size asked for when a `download_file` names none (and in [`Mode::Get`]).
    pub part_size: u16,
    /// A download fails when no new part arrived for this long; in [`Mode::Get`], the session
    /// also fails when the server does not answer the download request within it.
    pub give_up_after: Duration,
    /// Offers of larger files are refused before anything is opened or allocated
    /// ([`DEFAULT_MAX_DOWNLOAD_SIZE`] unless configured). The runtime also refuses a file larger
    /// than the free space of the download folder when it opens it.
    pub max_download_size: u64,
    /// The most downloads at once (running, or asked for and not yet answered); further
    /// `download_file` requests wait in a queue until one ends. The server refuses more than its
    /// own cap (PROTOCOL 2.1: 4 by default, [`DEFAULT_MAX_TRANSFERS`]).
    pub max_transfers: usize,
    /// Speak TLS on the chat connection (PROTOCOL 1.6): the runtime's bytes are TLS records.
    pub tls: Option<ClientTls>,
    /// The runtime reports [`Input::Connected`], with or without an early-flight socket: the
    /// first `download_file` lines of [`Mode::Get`] then wait for it, so that they can ask for
    /// an early flight (PROTOCOL 2.1). Without it they go out at once, right behind the name.
    pub awaits_connected: bool,
    /// The room password, sent as `PASS <password>` before the name (PROTOCOL 1.6); only ever
    /// sent over TLS.
    pub password: Option<Password>,
}

/// What comes to the early-flight socket before its download is open waits in the driver: at
/// most this many bytes, the largest flight (1 MiB) eight times over, and for at most
/// [`EARLY_HELD_FOR`]. A flight that comes first is the common case (the offer is a TCP line,
/// the flight datagrams, sent together); what does not fit is lost, and asked for again as any
/// lost part.
pub const EARLY_HELD_BYTES: usize = 8 << 20;
/// How long a datagram waits for its download to open: past that, the offer was refused (or
/// lost with its connection), and the port may serve another transfer.
pub const EARLY_HELD_FOR: Duration = Duration::from_secs(1);

/// How long a `download_file` refused by the server's transfer cap waits before it is sent again,
/// when the client holds fewer downloads than the server counts (the server has not yet seen a
/// FINISHED).
pub const CAP_RETRY_AFTER: Duration = Duration::from_millis(50);
/// How many such retries in a row (with no offer between them) are made at most: a server that
/// keeps refusing is believed.
pub const MAX_CAP_RETRIES: u32 = 100;

/// How long a queued `download_file` line, whose transfer was freed while other downloads still
/// run, waits for the lines that their ends free, so that they go out in one TCP segment: at most
/// this, or an eighth of the round trip if that is less. With the round trip unknown, no wait.
///
/// Why: every segment of the chat connection that is lost holds up everything behind it until
/// TCP sends it again, one to two round trips later, and while a line waits so does a transfer.
/// `natter get` of 100 files of 100 KiB sent a segment for nearly every line; on a path that
/// loses 5% each way those stalls were most of what it took more than with no loss on the chat
/// connection (0.40 s against 0.28-0.34 s; issue 11). Fewer segments, fewer stalls, and the
/// server's offers for lines that came together go out together too.
pub const LINE_GATHER: Duration = Duration::from_millis(2);

/// The most downloads a client runs at once unless configured otherwise: the server's default
/// cap per connection (PROTOCOL 2.1).
pub const DEFAULT_MAX_TRANSFERS: usize = 4;

/// The largest file a client downloads unless configured otherwise: 1 TiB.
pub const DEFAULT_MAX_DOWNLOAD_SIZE: u64 = 1 << 40;

impl ClientConfig {
    /// A config with the default give-up time ([`DEFAULT_GIVE_UP_AFTER`]) and size cap
    /// ([`DEFAULT_MAX_DOWNLOAD_SIZE`]).
    pub fn new(name: impl Into<String>, mode: Mode, server_ip: IpAddr, part_size: u16) -> Self {
        Self {
            name: name.into(),
            mode,
            server_ip,
            part_size,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            max_download_size: DEFAULT_MAX_DOWNLOAD_SIZE,
            max_transfers: DEFAULT_MAX_TRANSFERS,
            tls: None,
            password: None,
            awaits_connected: false,
        }
    }
}

/// Something happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// The chat connection is established; `handshake` is how long the TCP connect took (a
    /// round trip of the path, measured by the runtime: the core reads no clock). It sizes the
    /// first flight of each download (see [`ReceiverConfig::path_rtt`]). Optional: without it,
    /// the first exchange of lines gives the round trip.
    Connected {
        /// The TCP connect's duration.
        handshake: Duration,
        /// Where the runtime bound a UDP socket for early flights (PROTOCOL 2.1): the chat
        /// connection's own local address, the same IP and port number. `None` when it could
        /// not: then no early flight is asked for.
        early_socket: Option<SocketAddr>,
    },
    /// Bytes read from the chat connection.
    Received(&'a [u8]),
    /// The server closed the chat connection (or reading it failed).
    ServerClosed,
    /// A line the person typed, without its terminator.
    Typed(&'a str),
    /// The person's input ended (a script's pipe closed).
    InputEnded,
    /// [`Output::Open`] done: the `.part` file is open, and `resume` is the resume record found
    /// beside it, if any.
    Opened {
        /// The download.
        id: DownloadId,
        /// The resume record found beside the `.part` file.
        resume: Option<Vec<u8>>,
    },
    /// [`Output::Keep`] done: the verified file is at `path`.
    Saved {
        /// The download.
        id: DownloadId,
        /// Where the verified file is now.
        path: String,
    },
    /// The I/O of download `id` failed (opening, writing, saving, renaming, its socket).
    IoFailed {
        /// The download.
        id: DownloadId,
        /// What failed, for the person.
        error: String,
    },
}

/// Something to do or to show, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write these bytes to the chat connection.
    Send(Vec<u8>),
    /// Show a line from the server.
    Event(ClientEvent),
    /// Show something the client did or refused on its own.
    Notice(String),
    /// Show how a download is going (every [`PROGRESS_EVERY`] while it runs).
    Progress {
        /// The download.
        id: DownloadId,
        /// Its file's name.
        file: String,
        /// Counters and estimates.
        progress: Progress,
    },
    /// The server closed the connection while the person was not leaving.
    Disconnected(String),
    /// Open download `id`: `<file>.part` of `size` bytes (creating it if need be) with the resume
    /// record beside it, and a UDP socket of its own connected to `peer` that receives datagrams
    /// of up to `max_datagram` bytes; with `early`, its flight comes to the early-flight socket of
    /// [`Input::Connected`] from `peer`, and goes to this download too. Answer with
    /// [`Input::Opened`] or [`Input::IoFailed`].
    Open {
        /// The download.
        id: DownloadId,
        /// The file's name (checked safe for the download folder).
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The server's transfer port.
        peer: SocketAddr,
        /// The largest datagram the server will send (a part and its header).
        max_datagram: usize,
        /// This download's line asked for an early flight (PROTOCOL 2.1): its first parts come to
        /// the session's early-flight socket from `peer`, and belong to this download. Open a
        /// socket of its own all the same: its requests, and the rest, go there.
        early: bool,
    },
    /// Save this resume record beside download `id`'s `.part` file (atomically: the old record
    /// stays whole until the new one is complete).
    SaveRecord {
        /// The download.
        id: DownloadId,
        /// The record (see [`crate::transfer::parts`]).
        record: Vec<u8>,
    },
    /// Download `id` is verified: rename its `.part` file to the first free `name (n).ext` and
    /// remove its record. Answer with [`Input::Saved`] or [`Input::IoFailed`].
    Keep {
        /// The download.
        id: DownloadId,
    },
    /// Download `id`'s bytes are wrong: delete its `.part` file and its record.
    Discard {
        /// The download.
        id: DownloadId,
    },
    /// Download `id` is done with: close its socket and its file, leaving what is on disk.
    Release {
        /// The download.
        id: DownloadId,
    },
    /// Download `id` ended (shown to the person).
    Ended {
        /// The download.
        id: DownloadId,
        /// Its file's name.
        file: String,
        /// The report, or why there is no file.
        result: Result<DownloadReport, DownloadFailure>,
    },
    /// [`Mode::Get`]: one of the files asked for is done with, verified or not; given once for
    /// every file, whether or not it was ever offered.
    FileDone {
        /// The file's name, as asked for.
        file: String,
        /// Its report, or why there is no file.
        result: Result<DownloadReport, DownloadFailure>,
    },
    /// Close the chat connection (after writing what [`Output::Send`] gave, without waiting for
    /// an answer); the session is over. In [`Mode::Get`], the session's result: the first failure,
    /// or the last file's report when every file is verified.
    Finish(Option<Result<DownloadReport, DownloadFailure>>),
}

/// The outcome of a finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    /// Where the verified file is.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes that were already on disk from an interrupted attempt.
    pub resumed: u64,
    /// From the offer to the verified file.
    pub elapsed: Duration,
    /// Parts asked for more than once.
    pub parts_retransmitted: u64,
}

impl DownloadReport {
    /// Goodput in bytes per second: the bytes this run fetched over its wall time.
    pub fn goodput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        (self.size - self.resumed) as f64 / secs
    }
}

impl std::fmt::Display for DownloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "saved {} ({} bytes) in {:.3} s, {:.2} MB/s, blake3 verified",
            self.path,
            self.size,
            self.elapsed.as_secs_f64(),
            self.goodput() / 1e6
        )?;
        if self.resumed > 0 {
            write!(f, ", resumed with {} bytes already on disk", self.resumed)?;
        }
        Ok(())
    }
}

/// Why a download ended without a file (or a session without its download).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadFailure {
    /// The server answered the request with an `ERROR`, or refused our name.
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server did not answer the request in time.
    #[error("no answer from the server within {0:?}")]
    NoAnswer(Duration),
    /// The transfer failed (see [`TransferError`]).
    #[error("download failed: {0}")]
    Transfer(TransferError),
    /// The download's file or socket could not be used.
    #[error("{0}")]
    Io(String),
    /// The chat connection ended before the download did.
    #[error("the server closed the connection")]
    Disconnected,
    /// The TLS session failed: the server's certificate was refused, or a record was forged.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The session ended on our side (the person quit) while the download ran.
    #[error("interrupted: the chat session ended; the next download of the file resumes")]
    Interrupted,
}

/// What a line sent to the server waits for (PROTOCOL 1.2). The server answers lines in order, so
/// each answer belongs to the oldest line that waits for its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// A name: our join, or an ERROR (1.1).
    Name,
    /// `show`: an ALL line.
    Show,
    /// `get_list_file`: CHOOSE_FILE.
    List,
    /// A public message: our own line back, or an ERROR.
    Public,
    /// A private message: the PRIVATE echo, or an ERROR.
    Private,
    /// `download_file`: a UDP offer (ours to check), or an ERROR; `line` is the line that was
    /// sent (to send again if the server's transfer cap refused it; without an early flight),
    /// `at` when, and the early flight it asked for.
    Download { file: String, line: String, at: Instant, early: Option<EarlyFlight> },
    /// An empty line: nothing (kept only while it may be read as a name).
    Nothing,
}

#[derive(Debug)]
struct Pending {
    expect: Expect,
    /// Sent before the join was answered: the server reads it as a name if the ones before fail.
    maybe_name: bool,
}

#[derive(Debug)]
struct Download {
    offer: Offer,
    /// The early flight its line asked for, as the server bounds it for this offer.
    early: Option<EarlyAsked>,
    /// `None` until the files are open.
    receiver: Option<Receiver>,
    started: Instant,
    resumed: u64,
    /// Verified, waiting for [`Input::Saved`].
    keeping: bool,
    /// [`Output::Ended`] was given; released once its last datagrams are out.
    ended: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ClientDriver {
    config: ClientConfig,
    chat: ClientChat,
    pending: VecDeque<Pending>,
    downloads: BTreeMap<DownloadId, Download>,
    next_id: DownloadId,
    outputs: VecDeque<Output>,
    /// The latest time handed in; for what is decided while outputs are polled.
    now: Instant,
    input_ended: bool,
    next_progress: Option<Instant>,
    /// [`Mode::Get`]: the download request must be answered by then.
    answer_deadline: Option<Instant>,
    /// [`Mode::Get`]: why the session as a whole failed, once known (a refused name, a lost
    /// connection, no answer): every file without a result of its own gets this one.
    result: Option<Result<DownloadReport, DownloadFailure>>,
    /// [`Mode::Get`]: the files asked for, and each one's result once known.
    wanted: Vec<(String, Option<Result<DownloadReport, DownloadFailure>>)>,
    /// `download_file` lines waiting for a free transfer ([`ClientConfig::max_transfers`]).
    queued: VecDeque<String>,
    /// The transfer cap the server showed us (it refused a download while we held this many).
    server_cap: Option<usize>,
    /// A refused `download_file` is asked again at this time (see [`CAP_RETRY_AFTER`]).
    retry_at: Option<Instant>,
    /// Queued lines whose transfers are free go out at this time, with any others freed by
    /// then (see [`LINE_GATHER`]).
    gather_until: Option<Instant>,
    /// How often that happened since the last offer.
    cap_retries: u32,
    /// The shortest round trip seen on the chat connection (the connect, the first exchange, a
    /// `download_file` and its offer): the first flight of each download is sized with it.
    path_rtt: Option<Duration>,
    /// When our first lines went out, until the first bytes come back.
    exchange_from: Option<Instant>,
    /// Where the early-flight socket is bound (PROTOCOL 2.1), set by [`Input::Connected`]: the
    /// flights of every download line that asks for one come there, each from its transfer's
    /// port, and the runtime hands each to its download.
    early_socket: Option<SocketAddr>,
    /// [`ClientConfig::awaits_connected`], until [`Input::Connected`] came: no queued line
    /// goes out before.
    awaiting_connect: bool,
    /// The server answered an early flight with a usage error: it predates them (version 3 or
    /// older), or a flight went nowhere before any came (a firewall, a NAT): no line of this
    /// session asks for one again.
    early_refused: bool,
    /// A flight of this session came: one that goes nowhere later was lost on the path (a full
    /// queue), not blocked, and later lines still ask.
    early_came: bool,
    /// Early-flight datagrams whose download is not open yet: when they came, from where.
    early_held: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    /// Their bytes.
    early_held_bytes: usize,
    /// The runtime's last read of the early-flight socket stopped before the socket was empty
    /// ([`ClientDriver::early_socket_read`]): no flight's check may conclude yet that nothing
    /// came.
    early_unread: bool,
    /// [`Mode::Get`]: `{quit}` is sent; the session ends once the last FINISHED copies are out,
    /// without waiting for the server to close.
    exit_when_idle: bool,
    finished: bool,
    /// The session ended while verified files were being kept: it finishes once each has its
    /// [`Input::Saved`] or [`Input::IoFailed`], so that none is reported interrupted while it
    /// is, in fact, saved.
    finish_when_kept: bool,
    /// The TLS session of the chat connection, when it speaks TLS.
    tls: Option<TlsSession>,
}

/// The chat client and whether the driver has seen our join.
#[derive(Debug)]
struct ClientChat {
    client: ChatClient,
    joined: bool,
}

impl ClientDriver {
    /// A client that introduces itself at once (its name line is the first output).
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let client = ChatClient::new(config.name.clone());
        // `natter get` must not wait forever for a server that accepts and says nothing.
        let answer_deadline =
            (config.mode != Mode::Interactive).then_some(now + config.give_up_after);
        let mut wanted: Vec<(String, Option<_>)> = Vec::new();
        if let Mode::Get { files } = &config.mode {
            for file in files {
                if !wanted.iter().any(|(f, _)| f == file) {
                    wanted.push((file.clone(), None));
                }
            }
        }
        let queued =
            wanted.iter().map(|(f, _)| format!("download_file {f} {}", config.part_size)).collect();
        let awaiting_connect = config.awaits_connected;
        let mut driver = Self {
            config,
            chat: ClientChat { client, joined: false },
            pending: VecDeque::new(),
            downloads: BTreeMap::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            now,
            input_ended: false,
            next_progress: None,
            answer_deadline,
            result: None,
            wanted,
            queued,
            server_cap: None,
            retry_at: None,
            gather_until: None,
            cap_retries: 0,
            path_rtt: None,
            exchange_from: Some(now),
            early_socket: None,
            awaiting_connect,
            early_refused: false,
            early_came: false,
            early_held: VecDeque::new(),
            early_held_bytes: 0,
            early_unread: false,
            exit_when_idle: false,
            finished: false,
            finish_when_kept: false,
            tls: None,
        };
        if let Some(tls) = &driver.config.tls {
            match TlsSession::new(tls) {
                Ok(session) => driver.tls = Some(session),
                Err(err) => {
                    driver.tls_failed(&err);
                    return driver;
                }
            }
            // The password goes before the name (PROTOCOL 1.6), and never without TLS.
            if let Some(password) = &driver.config.password {
                let line = format!("PASS {}\n", password.expose());
                driver.outputs.push_back(Output::Send(line.into_bytes()));
            }
        }
        // `natter get` sends its first requests right behind its name: the server reads lines
        // in order, so they are answered as soon as the name is accepted (one round trip saved).
        // A runtime that reports the connect holds them until then: they may ask for early
        // flights, which need the connection's address and round trip.
        if driver.pumps_queue() {
            driver.pump_queue();
        }
        if driver.config.mode != Mode::Interactive && driver.wanted.is_empty() {
            driver.end_session(Err(DownloadFailure::Refused("no file to get".into())));
        }
        driver
    }

    /// Something happened; then drain [`ClientDriver::poll_output`] and
    /// [`ClientDriver::poll_transmit`].
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.now = now;
        if self.finished {
            if let Input::Opened { id, .. } = input {
                self.outputs.push_back(Output::Release { id });
            }
            return;
        }
        match input {
            Input::Connected { handshake, early_socket } => {
                if handshake < CONNECT_RETRANSMITTED {
                    self.rtt_sample(handshake);
                }
                self.exchange_from = Some(now);
                self.early_socket = early_socket
                    .filter(|local| !likely_behind_nat(local.ip(), self.config.server_ip));
                self.awaiting_connect = false;
                if self.pumps_queue() {
                    self.pump_queue();
                }
            }
            Input::Received(bytes) => {
                if let Some(from) = self.exchange_from.take() {
                    self.rtt_sample(now.saturating_duration_since(from));
                }
                match &mut self.tls {
                    None => self.chat_input(ChatInput::Received(bytes)),
                    Some(tls) => {
                        let mut plain = Vec::new();
                        let received = tls.receive(bytes, &mut plain);
                        if !plain.is_empty() {
                            self.chat_input(ChatInput::Received(&plain));
                        }
                        match received {
                            Ok(Received::More) => {}
                            Ok(Received::Closed) => self.chat_input(ChatInput::Closed),
                            Err(err) => self.tls_failed(&err),
                        }
                    }
                }
            }
            Input::ServerClosed => self.chat_input(ChatInput::Closed),
            Input::Typed(typed) => {
                if self.config.mode == Mode::Interactive {
                    let line = with_part_size(typed, self.config.part_size).into_owned();
                    let cap = self.cap();
                    // Behind what already waits, and after a download of the same file (its
                    // offer would not be taken while that one runs).
                    let why = if self.fetching(&line) {
                        Some("that file is being downloaded; it starts when that ends".to_owned())
                    } else if self.transfers() >= cap || !self.queued.is_empty() {
                        Some(format!("{cap} downloads run at once; it starts when one ends"))
                    } else {
                        None
                    };
                    if let Some(why) = why.filter(|_| is_download_line(&line)) {
                        self.outputs.push_back(Output::Notice(format!("queued: {line} ({why})")));
                        self.queued.push_back(line);
                    } else {
                        // A download line may ask for an early flight, as a queued one does.
                        self.ask(&line);
                    }
                }
            }
            Input::InputEnded => self.input_ended = true,
            Input::Opened { id, resume } => self.on_opened(now, id, resume.as_deref()),
            Input::Saved { id, path } => self.on_saved(now, id, path),
            Input::IoFailed { id, error } => self.on_io_failed(id, error),
        }
    }

    /// The next thing to do or show; call until `None` after every input, timeout and batch of
    /// datagrams (see the module documentation for the order).
    ///
    /// Over TLS, every [`Output::Send`] carries ciphertext: the lines encrypted, the handshake,
    /// and the `close_notify` before [`Output::Finish`].
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            let output = self.next_output();
            let Some(tls) = &mut self.tls else {
                return output;
            };
            match output {
                Some(Output::Send(plain)) => {
                    let cipher = tls.encrypt(&plain);
                    if !cipher.is_empty() {
                        return Some(Output::Send(cipher));
                    }
                }
                Some(Output::Finish(result)) => {
                    let cipher = tls.close();
                    if cipher.is_empty() {
                        return Some(Output::Finish(result));
                    }
                    self.outputs.push_front(Output::Finish(result));
                    return Some(Output::Send(cipher));
                }
                None => {
                    let cipher = tls.drain();
                    return (!cipher.is_empty()).then_some(Output::Send(cipher));
                }
                other => return other,
            }
        }
    }

    /// The next output, plaintext lines as they are.
    fn next_output(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.outputs.pop_front() {
                return Some(output);
            }
            if !self.step() {
                return None;
            }
        }
    }

    /// The TLS session failed: the person is told why, and the session ends (its alert still
    /// goes out).
    fn tls_failed(&mut self, err: &rustls::Error) {
        // rustls shows a verifier's own refusal in its Debug form; ours is written for people.
        let text = match err {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                format!("the server's certificate is refused: {}", other.0)
            }
            other => other.to_string(),
        };
        let failure = DownloadFailure::Tls(text);
        if self.config.mode == Mode::Interactive {
            self.outputs.push_back(Output::Disconnected(failure.to_string()));
        }
        self.result.get_or_insert(Err(failure));
        self.finish();
    }

    /// When [`ClientDriver::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let receivers = self
            .downloads
            .values()
            .filter(|d| !d.ended)
            .filter_map(|d| d.receiver.as_ref()?.poll_timeout());
        receivers
            .chain(self.chat.client.poll_timeout())
            .chain(self.answer_deadline)
            .chain(self.retry_at.filter(|_| self.pumps_queue() && !self.queued.is_empty()))
            .chain(self.gather_until.filter(|_| self.pumps_queue()))
            .chain(self.next_progress)
            .min()
    }

    /// The time has come: the quit grace, progress, checkpoints, a download's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.finished {
            return;
        }
        self.chat.client.handle_timeout(now);
        for d in self.downloads.values_mut().filter(|d| !d.ended) {
            if let Some(rx) = &mut d.receiver {
                if self.early_unread {
                    // Looked at again in a millisecond, by when the runtime has read more.
                    rx.defer_early_check(now + GRANULARITY);
                }
                if rx.poll_timeout().is_some_and(|at| at <= now) {
                    rx.handle_timeout(now);
                }
            }
        }
        if self.answer_deadline.is_some_and(|at| at <= now) {
            self.answer_deadline = None;
            self.end_session(Err(DownloadFailure::NoAnswer(self.config.give_up_after)));
        }
        if self.next_progress.is_some_and(|at| at <= now) {
            self.show_progress();
            let running = self.downloads.values().any(|d| d.receiver.is_some() && !d.ended);
            self.next_progress = running.then_some(now + PROGRESS_EVERY);
        }
    }

    /// A datagram arrived on download `id`'s socket. `now` must be read for each datagram, not
    /// once per batch: the congestion controller divides delivered bytes by the time between
    /// arrivals, and a batch stamped with one instant reads as an absurd bandwidth. On an accepted
    /// part, write `buf[payload]` at `offset`, then feed the hash ([`ClientDriver::next_to_hash`]).
    /// `buf` is decrypted in place when the download is sealed (PROTOCOL 2.7).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        id: DownloadId,
        buf: &mut [u8],
    ) -> Option<Accept> {
        self.now = now;
        let d = self.downloads.get_mut(&id)?;
        if d.ended {
            return None;
        }
        d.receiver.as_mut()?.handle_datagram(now, buf)
    }

    /// A datagram came to the early-flight socket (PROTOCOL 2.1) from `from`: the open download
    /// whose flight it is, to hand it to as [`ClientDriver::handle_datagram`]; or `None`, and
    /// the driver keeps a copy (within [`EARLY_HELD_BYTES`] and [`EARLY_HELD_FOR`]) for
    /// [`ClientDriver::take_early_held`], when it comes from the server.
    pub fn early_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<DownloadId> {
        if from.ip() != self.config.server_ip {
            return None;
        }
        // Each transfer sends from the port its offer names.
        let open = self.downloads.iter().find(|(_, d)| {
            d.early.is_some() && !d.ended && d.receiver.is_some() && d.offer.port == from.port()
        });
        if let Some((&id, _)) = open {
            return Some(id);
        }
        self.drop_early_held(|_, at| now.saturating_duration_since(at) > EARLY_HELD_FOR);
        if self.early_held_bytes + datagram.len() <= EARLY_HELD_BYTES {
            self.early_held_bytes += datagram.len();
            self.early_held.push_back((now, from, datagram.to_vec()));
        }
        None
    }

    /// The runtime read the early-flight socket in this turn, and `drained` says whether it is
    /// empty now (or it stopped at its batch's bound). Call it after each turn's reading; a
    /// runtime that reads every datagram as it comes (the simulator) need not.
    ///
    /// Why: the flights of the downloads asked for together all wait in that one socket, and a
    /// runtime reads it a batch at a time. With 32 downloads opened at once, the checks of those
    /// whose flights were still unread behind the others' came first; finding nothing, each asked
    /// for its whole flight again while it sat in the socket (a capture of 100 files of 100 KiB:
    /// most of the 2,655-3,054 parts that came on the downloads' own sockets were such whole
    /// flights; issue 11). While the socket holds more, the checks wait.
    pub fn early_socket_read(&mut self, drained: bool) {
        self.early_unread = !drained;
    }

    /// What came to the early-flight socket for download `id` before it was open: hand each to
    /// [`ClientDriver::handle_datagram`] once [`Output::Open`] is done.
    pub fn take_early_held(&mut self, id: DownloadId) -> Vec<Vec<u8>> {
        let Some(port) = self.downloads.get(&id).map(|d| d.offer.port) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let bytes = &mut self.early_held_bytes;
        self.early_held.retain_mut(|(_, from, datagram)| {
            if from.port() != port {
                return true;
            }
            *bytes -= datagram.len();
            taken.push(std::mem::take(datagram));
            false
        });
        taken
    }

    /// Forgets the held early-flight datagrams that `drop` picks (by sender and arrival).
    fn drop_early_held(&mut self, drop: impl Fn(SocketAddr, Instant) -> bool) {
        let bytes = &mut self.early_held_bytes;
        self.early_held.retain(|&(at, from, ref datagram)| {
            let keep = !drop(from, at);
            if !keep {
                *bytes -= datagram.len();
            }
            keep
        });
    }

    /// The range of download `id` to hash next: feed it with [`ClientDriver::hash`].
    pub fn next_to_hash(&self, id: DownloadId) -> Option<(u64, usize)> {
        self.downloads.get(&id)?.receiver.as_ref()?.next_to_hash()
    }

    /// `bytes` are download `id`'s file at `offset` (see [`Receiver::hash`]).
    pub fn hash(&mut self, id: DownloadId, offset: u64, bytes: &[u8]) {
        if let Some(rx) = self.downloads.get_mut(&id).and_then(|d| d.receiver.as_mut()) {
            rx.hash(offset, bytes);
        }
    }

    /// The next datagram to send, written into `buf`: which download's socket, and its length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(DownloadId, usize)> {
        self.now = now;
        self.downloads.iter_mut().find_map(|(&id, d)| {
            let rx = d.receiver.as_mut()?;
            // An ended download only sends its FINISHED copies.
            if d.ended && !rx.is_finishing() {
                return None;
            }
            rx.poll_transmit(now, buf).map(|n| (id, n))
        })
    }

    /// Whether the session is over ([`Output::Finish`] was given).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Moves every state machine on as far as it goes without new input; says whether anything
    /// happened.
    fn step(&mut self) -> bool {
        let before = self.outputs.len();
        while let Some(output) = self.chat.client.poll_output() {
            self.on_chat(output);
        }
        while let Some((id, event)) = self.downloads.iter_mut().find_map(|(&id, d)| {
            let event = d.receiver.as_mut()?.poll_event()?;
            (!d.ended).then_some((id, event))
        }) {
            self.on_receiver_event(id, event);
        }
        for flight in
            self.downloads.values().filter_map(|d| d.receiver.as_ref()?.early_flight_came())
        {
            self.early_came |= flight;
            // Blocked (nothing of any flight ever came): each later line would wait for its
            // flight's check before asking, and the server would send a flight for nothing.
            self.early_refused |= !flight && !self.early_came;
        }
        let done = self
            .downloads
            .iter()
            .find(|(_, d)| d.ended && !d.receiver.as_ref().is_some_and(Receiver::is_finishing))
            .map(|(&id, _)| id);
        if let Some(id) = done {
            if let Some(d) = self.downloads.remove(&id) {
                // Late copies of its flight hold nothing for the next transfer on that port.
                let port = d.offer.port;
                self.drop_early_held(|from, _| from.port() == port);
            }
            self.outputs.push_back(Output::Release { id });
        }
        if self.finish_when_kept && !self.keeping_any() {
            self.finish();
        }
        if self.pumps_queue() {
            self.pump_queue();
        }
        if self.exit_when_idle && self.downloads.is_empty() && !self.finished {
            // The `{quit}` (typed while downloads ended, above) goes out before the finish.
            while let Some(output) = self.chat.client.poll_output() {
                self.on_chat(output);
            }
            self.finish();
        }
        self.maybe_leave();
        self.outputs.len() > before || done.is_some()
    }

    /// Downloads that count against the server's cap: running, finishing (the server frees a
    /// transfer when FINISHED arrives) or asked for and not yet answered.
    fn transfers(&self) -> usize {
        let asked =
            self.pending.iter().filter(|p| matches!(p.expect, Expect::Download { .. })).count();
        // A verified file being kept sends its FINISHED copies in this turn, before the runtime
        // writes any line: the server frees its transfer when they come, however long the disk
        // takes to keep the file.
        let counted = self.downloads.values().filter(|d| !d.keeping || d.ended).count();
        counted + asked
    }

    /// Whether queued lines still go out: not once the session is leaving. A pending retry is
    /// a timer only while this holds, or a client that quit would wake for it forever.
    fn pumps_queue(&self) -> bool {
        !self.exit_when_idle
            && !self.chat.client.is_quitting()
            && !self.awaiting_connect
            && !self.finish_when_kept
    }

    /// How many downloads may run at once: ours, or the server's when it showed a lower one;
    /// never 0, or nothing would ever be asked.
    fn cap(&self) -> usize {
        self.server_cap.unwrap_or(usize::MAX).min(self.config.max_transfers).max(1)
    }

    /// `line` with an early flight (PROTOCOL 2.1), when one may be asked for: the early-flight
    /// socket is bound, the server has not refused one, the round trip is known (it sizes the flight as
    /// [`FirstFlight`] sizes a first window), and the line names a part size and no flight.
    fn with_early_flight(&self, line: &str) -> Option<String> {
        if self.early_socket.is_none() || self.early_refused {
            return None;
        }
        let rtt = self.path_rtt?;
        let Ok(ClientLine::Download { file, part_size: Some(size), early: None }) =
            ClientLine::parse(line)
        else {
            return None;
        };
        let part_size = u16::try_from(size).ok()?.max(1);
        let first = FirstFlight::for_path(part_size, rtt);
        let parts = u32::try_from(first.window.div_ceil(u64::from(part_size))).ok()?;
        let early = EarlyFlight { parts, rate: first.rate as u32 };
        let line = ClientLine::Download { file, part_size: Some(size), early: Some(early) };
        Some(line.encode().trim_end().to_owned())
    }

    /// Sends queued `download_file` lines while a transfer is free.
    fn pump_queue(&mut self) {
        if self.retry_at.is_some_and(|at| at > self.now) {
            // The retry's timer brings the lines out; a gather's would only fire for nothing.
            self.gather_until = None;
            return;
        }
        self.retry_at = None;
        let cap = self.cap();
        let free = self.transfers() < cap && self.queued.iter().any(|line| !self.fetching(line));
        if !free {
            self.gather_until = None;
            return;
        }
        if let Some(gather) = self.line_gather() {
            let until = *self.gather_until.get_or_insert(self.now + gather);
            if until > self.now {
                return;
            }
        }
        self.gather_until = None;
        while self.transfers() < cap {
            // A file being fetched now is asked for again only once that download ends: its
            // offer would not be taken (one `.part` file per name).
            let Some(at) = self.queued.iter().position(|line| !self.fetching(line)) else {
                return;
            };
            if let Some(line) = self.queued.remove(at) {
                self.ask(&line);
            }
        }
    }

    /// How long lines freed now wait for others ([`LINE_GATHER`]): only while other downloads
    /// run, whose ends may come by then, and the round trip is known.
    fn line_gather(&self) -> Option<Duration> {
        let others_run = self.downloads.values().any(|d| !d.ended && !d.keeping);
        others_run.then_some(LINE_GATHER.min(self.path_rtt? / 8))
    }

    /// Whether `line` asks for a file that is being downloaded or asked for right now.
    fn fetching(&self, line: &str) -> bool {
        let Ok(ClientLine::Download { file, .. }) = ClientLine::parse(line) else {
            return false;
        };
        self.downloads.values().any(|d| !d.ended && d.offer.file == file)
            || self
                .pending
                .iter()
                .any(|p| matches!(&p.expect, Expect::Download { file: f, .. } if *f == file))
    }

    /// A round trip of the chat connection was measured.
    fn rtt_sample(&mut self, rtt: Duration) {
        self.path_rtt = Some(self.path_rtt.map_or(rtt, |known| known.min(rtt)));
    }

    fn chat_input(&mut self, input: ChatInput<'_>) {
        self.chat.client.handle_input(self.now, input);
    }

    fn typed(&mut self, line: &str) {
        self.chat.client.handle_input(self.now, ChatInput::Typed(line));
        // What the line waits for is recorded now, so that the transfer count is right for the
        // next line typed or taken from the queue in the same turn.
        while let Some(output) = self.chat.client.poll_output() {
            self.on_chat(output);
        }
    }

    fn on_chat(&mut self, output: ChatOutput) {
        match output {
            ChatOutput::Send { bytes, sent } => {
                self.expect(sent);
                self.outputs.push_back(Output::Send(bytes));
            }
            ChatOutput::Event(event) => self.on_event(event),
            ChatOutput::Invalid(err) => self.outputs.push_back(Output::Notice(err.to_string())),
            ChatOutput::Over { quit } => {
                if !quit && self.config.mode == Mode::Interactive {
                    self.outputs
                        .push_back(Output::Disconnected("the server closed the connection".into()));
                }
                self.result.get_or_insert(Err(DownloadFailure::Disconnected));
                self.finish();
            }
        }
    }

    /// Records what a line sent waits for.
    fn expect(&mut self, sent: Sent) {
        let (expect, maybe_name) = match sent {
            Sent::Name(_) => (Expect::Name, true),
            Sent::Line { line, maybe_name } => {
                let expect = match line {
                    ClientLine::Show => Expect::Show,
                    ClientLine::GetListFile => Expect::List,
                    ClientLine::Public(_) => Expect::Public,
                    ClientLine::Private { .. } => Expect::Private,
                    ClientLine::Download { ref file, part_size, early } => Expect::Download {
                        file: file.clone(),
                        line: ClientLine::Download { file: file.clone(), part_size, early: None }
                            .encode()
                            .trim_end()
                            .to_owned(),
                        at: self.now,
                        early,
                    },
                    // The server answers `{quit}` by closing, and an empty line not at all.
                    ClientLine::Quit | ClientLine::Empty => Expect::Nothing,
                };
                (expect, maybe_name)
            }
        };
        if expect != Expect::Nothing || maybe_name {
            self.pending.push_back(Pending { expect, maybe_name });
        }
    }

    /// Takes the oldest pending request that `answers` accepts.
    fn answer(&mut self, answers: impl Fn(&Expect) -> bool) -> Option<Expect> {
        let i = self.pending.iter().position(|p| answers(&p.expect))?;
        self.pending.remove(i).map(|p| p.expect)
    }

    fn on_event(&mut self, event: ClientEvent) {
        self.outputs.push_back(Output::Event(event.clone()));
        match event {
            ClientEvent::NameRefused(reason) => {
                // The oldest name sent is refused; a line typed before the refusal was read by the
                // server as the next name, and whatever it asked for is answered with this too.
                if self.pending.front().is_some_and(|p| p.maybe_name) {
                    self.pending.pop_front();
                }
                if self.config.mode != Mode::Interactive {
                    self.end_session(Err(DownloadFailure::Refused(reason)));
                }
            }
            ClientEvent::Joined(_) if !self.chat.joined && self.chat.client.is_joined() => {
                self.chat.joined = true;
                self.pending.pop_front();
                // Every line sent after the accepted name is a command after all.
                self.pending.retain(|p| p.expect != Expect::Nothing);
                for p in &mut self.pending {
                    p.maybe_name = false;
                }
            }
            ClientEvent::Presence(_) => {
                // An unasked presence line (someone joined or left) is taken for the answer to a
                // `show` only when one waits, and an ALL never answers anything else.
                self.answer(|e| *e == Expect::Show);
            }
            ClientEvent::Files(_) => {
                self.answer(|e| *e == Expect::List);
            }
            ClientEvent::PrivateSent { .. } => {
                self.answer(|e| *e == Expect::Private);
            }
            ClientEvent::Public { from, .. } if from == self.chat.client.name() => {
                self.answer(|e| *e == Expect::Public);
            }
            ClientEvent::Error(reason) => {
                let answered = self.answer(|e| {
                    matches!(e, Expect::Public | Expect::Private | Expect::Download { .. })
                });
                if let Some(Expect::Download { file, line, early, .. }) = answered {
                    if early.is_some() && reason.starts_with("usage: download_file") {
                        // A server from before early flights: ask as it understands. The
                        // person is not shown the refusal of a line they did not write.
                        if matches!(self.outputs.back(), Some(Output::Event(ClientEvent::Error(r))) if *r == reason)
                        {
                            self.outputs.pop_back();
                        }
                        self.early_refused = true;
                        self.queued.push_front(line);
                        return self.pump_queue();
                    }
                    self.download_refused(file, line, reason);
                }
            }
            ClientEvent::OfferRefused(reason) => {
                let asked = self.answer(|e| matches!(e, Expect::Download { .. }));
                if let Some(Expect::Download { file, .. }) = asked {
                    // Not worth asking again: the offer itself is unacceptable. The flight's
                    // parts, if any come, find no download and are dropped.
                    self.download_refused(file, String::new(), reason);
                }
            }
            ClientEvent::Offer(offer) => {
                let asked = self
                    .answer(|e| matches!(e, Expect::Download { file, .. } if *file == offer.file));
                if let Some(Expect::Download { at, early, .. }) = asked {
                    // A `download_file` and its offer: a round trip, plus the server's turn.
                    self.rtt_sample(self.now.saturating_duration_since(at));
                    self.cap_retries = 0;
                    let early = early.map(|flight| (flight, at));
                    self.start(offer, early);
                } else {
                    self.outputs.push_back(Output::Notice(format!(
                        "ignored an offer of {} that this client did not ask for",
                        offer.file
                    )));
                }
            }
            _ => {}
        }
    }

    /// Sends a line: a download request asks for an early flight when it may
    /// ([`ClientDriver::with_early_flight`]); in [`Mode::Get`] the answer is then due within the
    /// stall time.
    fn ask(&mut self, line: &str) {
        match self.with_early_flight(line) {
            Some(early_line) => self.typed(&early_line),
            None => self.typed(line),
        }
        if self.config.mode != Mode::Interactive {
            self.answer_deadline = Some(self.now + self.config.give_up_after);
        }
    }

    /// The server refused `line` (asking for `file`). A refusal by the transfer cap while our
    /// own downloads run is not final: the line waits in the queue for one of them to end (the
    /// server may count a transfer whose FINISHED has not reached it yet).
    fn download_refused(&mut self, file: String, line: String, reason: String) {
        self.disarm_answer_deadline();
        if !reason.starts_with("too many transfers") || line.is_empty() {
            return self.file_done(&file, Err(DownloadFailure::Refused(reason)));
        }
        let ours = self.transfers();
        // The per-connection refusal states its cap (PROTOCOL 2.1): "at most N at once". The
        // per-address one does not count ours alone, so its number says nothing about us.
        let stated =
            if reason.starts_with("too many transfers from") { None } else { stated_cap(&reason) };
        if ours == 0 || stated.is_some_and(|cap| ours < cap) {
            // We hold fewer than the server counts: a FINISHED of ours has not reached it yet
            // (lost, or overtaken by this line). Ask again shortly, keeping the cap we know.
            if let Some(cap) = stated {
                self.server_cap = Some(cap);
            }
            if self.cap_retries < MAX_CAP_RETRIES {
                self.cap_retries += 1;
                self.queued.push_front(line);
                self.retry_at = Some(self.now + CAP_RETRY_AFTER);
                return;
            }
            // The server kept counting more than we hold for half a minute (each refusal comes
            // after the server's `CAP_WAIT`): transfers it holds for us past their idle timeout
            // (an offer we did not take, FINISHED copies all lost). Holding none, this file fails; holding some, it waits for one to end.
            self.cap_retries = 0;
            if ours == 0 {
                return self.file_done(&file, Err(DownloadFailure::Refused(reason)));
            }
            self.server_cap = Some(ours);
            self.outputs.push_back(Output::Notice(format!(
                "queued again: {line} (the server counts more of our downloads than run; it \
                 starts when one of ours ends)"
            )));
            self.queued.push_front(line);
            return;
        }
        // The server's cap is lower than ours: run no more than it says (or, when it does not
        // say, than we hold now), and ask again when one of ours ends.
        let cap = stated.unwrap_or(ours);
        self.server_cap = Some(cap);
        self.outputs.push_back(Output::Notice(format!(
            "queued again: {line} (the server allows {cap} downloads at once)"
        )));
        self.queued.push_front(line);
    }

    /// The answer deadline stands only while a download request waits for its answer.
    fn disarm_answer_deadline(&mut self) {
        if !self.pending.iter().any(|p| matches!(p.expect, Expect::Download { .. })) {
            self.answer_deadline = None;
        }
    }

    /// [`Mode::Get`]: `file` has its result; once every file has one, leave.
    fn file_done(&mut self, file: &str, result: Result<DownloadReport, DownloadFailure>) {
        if self.finished {
            return; // the session's end gave every file its result
        }
        let Some(slot) = self.wanted.iter_mut().find(|(f, r)| f == file && r.is_none()) else {
            return;
        };
        slot.1 = Some(result.clone());
        self.outputs.push_back(Output::FileDone { file: file.to_owned(), result });
        if self.wanted.iter().all(|(_, r)| r.is_some()) {
            self.leave();
        }
    }

    fn start(&mut self, offer: Offer, early: Option<(EarlyFlight, Instant)>) {
        self.disarm_answer_deadline();
        let cap = self.config.max_download_size;
        if offer.size > cap {
            let reason = format!(
                "refused {}: {} bytes is more than this client's limit of {cap} bytes",
                offer.file, offer.size
            );
            self.outputs.push_back(Output::Notice(reason.clone()));
            let file = offer.file.clone();
            self.download_refused(file, String::new(), reason);
            return;
        }
        // Two downloads into one `.part` file would write over each other.
        if self.downloads.values().any(|d| !d.ended && d.offer.file == offer.file) {
            self.outputs.push_back(Output::Notice(format!(
                "already downloading {}: this offer is not taken",
                offer.file
            )));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        // The flight as the server bounds it for this offer.
        let n_parts = Layout::new(offer.size, offer.part_size).n_parts();
        let early = early.and_then(|(flight, asked_at)| {
            let flight = flight.bounded(n_parts, offer.part_size)?;
            Some(EarlyAsked { flight, asked_at })
        });
        // A flight asked for without the socket (typed by hand) goes nowhere the receiver
        // reads: its check finds nothing arrived and asks again.
        let early_socket = early.is_some() && self.early_socket.is_some();
        self.outputs.push_back(Output::Open {
            id,
            file: offer.file.clone(),
            size: offer.size,
            peer: SocketAddr::new(self.config.server_ip, offer.port),
            max_datagram: part_datagram_len(offer.part_size, offer.key.is_some()),
            early: early_socket,
        });
        self.downloads.insert(
            id,
            Download {
                offer,
                early,
                receiver: None,
                started: self.now,
                resumed: 0,
                keeping: false,
                ended: false,
            },
        );
    }

    fn on_opened(&mut self, now: Instant, id: DownloadId, resume: Option<&[u8]>) {
        let Some(d) = self.downloads.get_mut(&id) else {
            self.outputs.push_back(Output::Release { id });
            return;
        };
        if d.receiver.is_some() || d.ended {
            return;
        }
        let o = &d.offer;
        let mut config = ReceiverConfig::new(o.token, o.size, o.part_size, o.blake3);
        // An offer with a key: every datagram of this download is sealed (PROTOCOL 2.7).
        config.seal = o.key.as_ref().map(SealKey::new);
        config.give_up_after = self.config.give_up_after;
        config.checkpoint_every = Some(CHECKPOINT_EVERY);
        config.path_rtt = self.path_rtt;
        config.early = d.early;
        // A record of another version of the file, or a damaged one: start afresh.
        let receiver = resume
            .and_then(|saved| Receiver::resume(config.clone(), now, saved).ok())
            .unwrap_or_else(|| Receiver::new(config, now));
        d.resumed = receiver.progress().bytes_received;
        d.started = now;
        self.outputs.push_back(Output::Progress {
            id,
            file: d.offer.file.clone(),
            progress: receiver.progress(),
        });
        d.receiver = Some(receiver);
        self.next_progress.get_or_insert(now + PROGRESS_EVERY);
    }

    fn on_receiver_event(&mut self, id: DownloadId, event: ReceiverEvent) {
        let Some(d) = self.downloads.get_mut(&id) else {
            return;
        };
        let Some(rx) = &d.receiver else {
            return;
        };
        match event {
            ReceiverEvent::Checkpoint => {
                let record = rx.save_state();
                self.outputs.push_back(Output::SaveRecord { id, record });
            }
            ReceiverEvent::PartsTooLarge => {
                // U5: the path drops datagrams this large. What arrived (nothing, or a resumed
                // prefix) is kept, and the file is asked for again in parts every path carries.
                let record = rx.save_state();
                let (file, part_size) = (d.offer.file.clone(), d.offer.part_size);
                self.downloads.remove(&id);
                self.outputs.push_back(Output::SaveRecord { id, record });
                self.outputs.push_back(Output::Release { id });
                self.outputs.push_back(Output::Notice(format!(
                    "no part of {file} got through in {part_size}-byte parts: the path drops \
                     large datagrams; asking again with {SAFE_PART_SIZE}-byte parts"
                )));
                self.ask(&format!("download_file {file} {SAFE_PART_SIZE}"));
            }
            ReceiverEvent::Complete => {
                d.keeping = true;
                self.outputs.push_back(Output::Keep { id });
            }
            ReceiverEvent::Failed(err) => {
                // Wrong bytes must not be resumed from; anything else (an abort, a path gone
                // quiet) leaves a `.part` file and a record that the next attempt continues.
                if err == TransferError::DigestMismatch {
                    self.outputs.push_back(Output::Discard { id });
                } else {
                    let record = rx.save_state();
                    self.outputs.push_back(Output::SaveRecord { id, record });
                }
                self.end(id, Err(DownloadFailure::Transfer(err)));
            }
        }
    }

    fn on_saved(&mut self, now: Instant, id: DownloadId, path: String) {
        let Some(d) = self.downloads.get(&id) else {
            return;
        };
        let Some(rx) = d.receiver.as_ref().filter(|_| d.keeping && !d.ended) else {
            return;
        };
        let report = DownloadReport {
            path,
            size: d.offer.size,
            resumed: d.resumed,
            elapsed: now.saturating_duration_since(d.started),
            parts_retransmitted: rx.progress().parts_retransmitted,
        };
        self.end(id, Ok(report));
    }

    fn on_io_failed(&mut self, id: DownloadId, error: String) {
        let Some(d) = self.downloads.get(&id) else {
            return;
        };
        if d.ended {
            return; // the files of a download that is over: nothing more to decide
        }
        // No new record: the failed write's parts are counted as arrived but may not be on disk.
        // The last checkpoint's record stays, and it only lists parts written before it was
        // saved, so the next download of the file resumes from there. FINISHED copies tell the
        // server to free the port now (a full disk will not empty itself within its timeout).
        if let Some(d) = self.downloads.get_mut(&id)
            && let Some(rx) = d.receiver.as_mut()
        {
            rx.abandon();
        }
        self.end(id, Err(DownloadFailure::Io(error)));
    }

    /// Download `id` is over: show it, and in [`Mode::Get`] end the session with it. The socket
    /// is released in [`ClientDriver::step`] once its FINISHED copies are out.
    fn end(&mut self, id: DownloadId, result: Result<DownloadReport, DownloadFailure>) {
        let Some(d) = self.downloads.get_mut(&id) else {
            return;
        };
        d.ended = true;
        if let Some(rx) = &d.receiver {
            self.outputs.push_back(Output::Progress {
                id,
                file: d.offer.file.clone(),
                progress: rx.progress(),
            });
        }
        let file = d.offer.file.clone();
        self.outputs.push_back(Output::Ended { id, file: file.clone(), result: result.clone() });
        if self.config.mode != Mode::Interactive {
            self.file_done(&file, result);
        }
    }

    /// [`Mode::Get`]: the session as a whole failed (every file still without a result gets
    /// this one); leave.
    fn end_session(&mut self, result: Result<DownloadReport, DownloadFailure>) {
        if self.result.is_some() {
            return;
        }
        self.result = Some(result);
        self.leave();
    }

    /// Says `{quit}` and waits for the server to close (so that our name is free again when the
    /// session is over: a script running `natter get` in a loop with one name would otherwise
    /// race its own last run). A client the server has not joined has nothing to wait for.
    ///
    /// [`Mode::Get`] does not wait: nothing the server could still say matters to it, so it ends
    /// once its last FINISHED copies are out, and the runtime closes the connection behind the
    /// `{quit}` (PROTOCOL 4, rule 6). The server reads the `{quit}` before the close and frees the
    /// name at once, a round trip before a next run's name can arrive.
    fn leave(&mut self) {
        if self.finished || self.chat.client.is_quitting() || self.exit_when_idle {
            return;
        }
        self.queued.clear();
        if self.chat.client.is_joined() || !self.chat.client.wants_name() {
            self.typed("{quit}");
            if self.config.mode != Mode::Interactive {
                self.exit_when_idle = true;
            }
        } else {
            self.finish();
        }
    }

    /// Whether a verified file is being kept (its [`Output::Keep`] is out, its answer is not in).
    fn keeping_any(&self) -> bool {
        self.downloads.values().any(|d| d.keeping && !d.ended)
    }

    /// Interactive: the person's input ended; leave once nothing is awaited.
    fn maybe_leave(&mut self) {
        if self.config.mode == Mode::Interactive
            && self.input_ended
            && !self.finished
            && !self.chat.client.is_quitting()
            && self.downloads.is_empty()
            && self.queued.is_empty()
            && !self.pending.iter().any(|p| matches!(p.expect, Expect::Download { .. }))
        {
            self.leave();
        }
    }

    /// The session is over: every download still running keeps its files to resume from.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        if self.keeping_any() {
            self.finish_when_kept = true;
            return;
        }
        let downloads = std::mem::take(&mut self.downloads);
        for (id, d) in downloads {
            if !d.ended {
                if let Some(rx) = &d.receiver {
                    let record = rx.save_state();
                    self.outputs.push_back(Output::SaveRecord { id, record });
                }
                self.outputs.push_back(Output::Ended {
                    id,
                    file: d.offer.file.clone(),
                    result: Err(DownloadFailure::Interrupted),
                });
            }
            self.outputs.push_back(Output::Release { id });
        }
        self.finished = true;
        let result = match self.config.mode {
            Mode::Interactive => None,
            Mode::Get { .. } => Some(self.get_result()),
        };
        self.outputs.push_back(Output::Finish(result));
    }

    /// [`Mode::Get`] at the end: every file without a result gets the session's failure (or
    /// [`DownloadFailure::Interrupted`]); the session's result is the first failure, or the last
    /// report when every file is verified.
    fn get_result(&mut self) -> Result<DownloadReport, DownloadFailure> {
        let session = self.result.take();
        let failure = match &session {
            Some(Err(failure)) => failure.clone(),
            _ => DownloadFailure::Interrupted,
        };
        let mut last = None;
        let mut first_failure = None;
        for (file, result) in &mut self.wanted {
            let result = result.get_or_insert_with(|| {
                self.outputs.push_back(Output::FileDone {
                    file: file.clone(),
                    result: Err(failure.clone()),
                });
                Err(failure.clone())
            });
            match result {
                Ok(report) => last = Some(report.clone()),
                Err(e) => {
                    first_failure.get_or_insert_with(|| e.clone());
                }
            }
        }
        match (first_failure, last) {
            (Some(e), _) => Err(e),
            (None, Some(report)) => Ok(report),
            (None, None) => Err(failure),
        }
    }

    fn show_progress(&mut self) {
        for (&id, d) in &self.downloads {
            if let Some(rx) = d.receiver.as_ref().filter(|_| !d.ended) {
                self.outputs.push_back(Output::Progress {
                    id,
                    file: d.offer.file.clone(),
                    progress: rx.progress(),
                });
            }
        }
    }
}

/// The cap a "too many transfers: at most N at once" refusal states (PROTOCOL 2.1).
fn stated_cap(reason: &str) -> Option<usize> {
    let (_, rest) = reason.split_once("at most ")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok().filter(|&cap| cap > 0)
}

/// Whether a typed line asks for a download (it then waits for a free transfer).
fn is_download_line(line: &str) -> bool {
    matches!(ClientLine::parse(line), Ok(ClientLine::Download { .. }))
}

/// Adds the configured part size to a typed `download_file <file>` that names none, so a person
/// on loopback gets large parts without knowing about them.
pub fn with_part_size(typed: &str, part_size: u16) -> std::borrow::Cow<'_, str> {
    // A space left after the file name (a completion, a habit) is not an extra word.
    let mut words = typed.trim_end_matches(' ').split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("download_file"), Some(file), None) if !file.is_empty() => {
            format!("download_file {file} {part_size}").into()
        }
        _ => typed.into(),
    }
}

/// Whether a client at `local` most likely reaches `server` through a NAT: it has a private or
/// shared address (RFC 1918, RFC 6598, link-local, unique local) and the server a global one.
/// Then the port it binds is not the port the server sees, and an early flight would be lost on
/// the way (PROTOCOL 2.1): it is not asked for.
pub fn likely_behind_nat(local: IpAddr, server: IpAddr) -> bool {
    let private = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    };
    let global = |ip: IpAddr| !private(ip) && !ip.is_loopback() && !ip.is_unspecified();
    // An IPv4 address written as IPv6 (`::ffff:192.168.1.20`) is that IPv4 address.
    private(local.to_canonical()) && global(server.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::with_part_size;

    #[test]
    fn adds_a_part_size_only_where_none_is_given() {
        assert_eq!(with_part_size("download_file a.c", 65000), "download_file a.c 65000");
        assert_eq!(with_part_size("download_file a.c 600", 65000), "download_file a.c 600");
        assert_eq!(with_part_size("download_file", 65000), "download_file");
        assert_eq!(with_part_size("hello there", 65000), "hello there");
    }
}
