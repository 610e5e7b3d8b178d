//! What a run tells: per client its transcript, connections and downloads; the server's log; the
//! timeline.

use std::time::Duration;

use std::collections::BTreeSet;

use super::folder::DownloadFolder;
use crate::chat::server::{ConnId, LogEvent};
use crate::driver::client::DownloadFailure;

/// How a download ended, client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// Verified and kept under its final name ([`DownloadReport::kept_as`]).
    Complete,
    /// Ended without a file, for the client driver's reason: an ABORT, a stall, a wrong digest,
    /// the session ending while it ran ([`DownloadFailure::Interrupted`]).
    Failed(DownloadFailure),
    /// Released without an end: no part got through in time with parts this large, and the
    /// client driver asked for the file again in parts every path carries (U5).
    TooLarge,
    /// The client was killed during it; its `.part` file and last resume record stay in the
    /// folder (U6).
    Killed,
    /// Still running when the run ended.
    Unfinished,
}

/// One download (one offer taken) as the client saw it.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    /// The file offered.
    pub file: String,
    /// The port of the offer.
    pub port: u16,
    /// The part size of the offer.
    pub part_size: u16,
    /// How it ended.
    pub outcome: DownloadOutcome,
    /// The BLAKE3 digest of the bytes the client holds at the end (the kept file, else the
    /// `.part` file), computed afresh (not the receiver's running hash).
    pub written_digest: [u8; 32],
    /// The name it was kept under, when it was.
    pub kept_as: Option<String>,
    /// Every part index this download asked for, in any REQUEST.
    pub requested_parts: BTreeSet<u32>,
    /// Every part index accepted (new) in this download.
    pub received_parts: BTreeSet<u32>,
    /// Parts already on disk, listed by the resume record, when it started (a resume, U6).
    pub resumed_parts: u32,
    /// The parts the last resume record saved for it lists (what a later attempt may skip).
    pub saved_parts: BTreeSet<u32>,
    /// When the offer was taken, after the start of the simulation.
    pub offered_at: Duration,
    /// When it ended (completed, failed, killed, gave up on large parts).
    pub ended_at: Option<Duration>,
}

/// How one session of a client program ended ([`Output::Finish`]): `None` for a chat session,
/// the download's result for `natter get` ([`Mode::Get`]).
///
/// [`Output::Finish`]: crate::driver::client::Output::Finish
/// [`Mode::Get`]: crate::driver::client::Mode::Get
pub type SessionEnd = Option<Result<crate::driver::client::DownloadReport, DownloadFailure>>;

/// One chat connection as the report tells it.
#[derive(Debug, Clone, Default)]
pub struct ConnReport {
    /// The server's number for it.
    pub conn: ConnId,
    /// When the client opened it.
    pub opened_at: Duration,
    /// The most bytes the server held for it at once: queued in the chat server and its outbox,
    /// not counting the [`TcpConfig::window`](super::TcpConfig::window) bytes already written to the socket.
    pub peak_queued: usize,
    /// How many times the server paused reading it (C6, or a download line held at the
    /// transfer cap, PROTOCOL 2.1).
    pub pauses: u32,
    /// Every read the server made of it: when, and how many bytes. What a flooder's token
    /// bucket allows is checked against this (C6: it is read less, not the others).
    pub server_reads: Vec<(Duration, usize)>,
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
    /// Its downloads, in the order they were offered.
    pub downloads: Vec<DownloadReport>,
    /// Every session of its program that ended, with when.
    pub finished: Vec<(Duration, SessionEnd)>,
    /// Its download folder at the end.
    pub folder: DownloadFolder,
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
    /// unless [`SystemConfig::timeline`](super::SystemConfig::timeline).
    pub timeline: Vec<(Duration, String)>,
    /// Every UDP datagram as it left its sender, both ways, in order; empty unless
    /// [`SystemConfig::capture_udp`](super::SystemConfig::capture_udp).
    pub udp_capture: Vec<Vec<u8>>,
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
