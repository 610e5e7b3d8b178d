//! A scripted client for the system simulator: timed steps (connect, send a line, stop reading,
//! reset, vanish, download, go silent on UDP, be killed) and, for downloads, real
//! [`Receiver`]s writing into in-memory files.
//!
//! It carries the little client policy the scenarios need until the client driver can be
//! plugged in: an offer answers the oldest request for its file, an `ERROR` that refuses a
//! download answers the oldest request, a download of parts larger than [`SAFE_PART_SIZE`] that
//! gets none in [`LARGE_PART_PATIENCE`] is asked for again with [`SAFE_PART_SIZE`] (U5), and a
//! download whose file was saved by [`Step::Kill`] resumes from the saved record (U6).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{ClientAction, ClientInput, DownloadOutcome, DownloadReport, SimClient};
use crate::chat::client::MAX_SERVER_LINE;
use crate::transfer::receiver::{
    LARGE_PART_PATIENCE, Receiver, ReceiverConfig, ReceiverState, SAFE_PART_SIZE,
};
use crate::wire::chat::{ServerLine, UdpOffer};
use crate::wire::datagram::{self, Datagram};
use crate::wire::line::{Framed, LineFramer};

/// How often a download of large parts is looked at for the U5 fallback.
const U5_CHECK_EVERY: Duration = Duration::from_millis(10);

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Open a chat connection.
    Connect,
    /// Send this text as one line (the `\n` is added).
    Line(String),
    /// Send these bytes as they are (half a line, many lines at once).
    Raw(Vec<u8>),
    /// Stop reading the connection.
    StopReading,
    /// Read it again.
    ResumeReading,
    /// Reset the connection.
    Reset,
    /// Close it (FIN).
    Close,
    /// Vanish: half-open TCP.
    Vanish,
    /// `download_file <file> [<part_size>]`, and download what is offered.
    Download {
        /// The file.
        file: String,
        /// The part size asked for, if any.
        part_size: Option<u32>,
    },
    /// From now on no datagram of this client reaches the network (its downloads go on asking, into
    /// the void, and still receive): the client went silent (U8).
    SilenceUdp,
    /// The client is killed: every running download's state and bytes are saved to its "disk",
    /// its downloads are dropped and its connection is reset. A later download of the same file
    /// resumes from what was saved (U6).
    Kill,
}

/// What a killed download left on disk: the `.part` bytes and the resume record.
#[derive(Debug, Clone)]
struct Saved {
    bytes: Vec<u8>,
    record: Vec<u8>,
}

#[derive(Debug)]
struct Download {
    id: u64,
    file: String,
    offer: Option<UdpOffer>,
    receiver: Option<Receiver>,
    written: Vec<u8>,
    requested: BTreeSet<u32>,
    received: BTreeSet<u32>,
    resumed_parts: u32,
    outcome: Option<DownloadOutcome>,
    offered_at: Option<Instant>,
    ended_at: Option<Instant>,
    /// When to look at the U5 fallback next.
    u5_check: Option<Instant>,
}

/// A client following a timed script. See the module documentation.
#[derive(Debug)]
pub struct ScriptedClient {
    script: VecDeque<(Duration, Step)>,
    base: Option<Instant>,
    actions: VecDeque<ClientAction>,
    framer: LineFramer,
    /// Requests sent and not yet answered, oldest first: (file, download index).
    asked: VecDeque<usize>,
    downloads: Vec<Download>,
    disk: BTreeMap<String, Saved>,
    silent: bool,
    fallback: bool,
    next_id: u64,
}

impl Default for ScriptedClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedClient {
    /// An empty script, with the U5 fallback on.
    pub fn new() -> Self {
        Self {
            script: VecDeque::new(),
            base: None,
            actions: VecDeque::new(),
            framer: LineFramer::with_limit(MAX_SERVER_LINE),
            asked: VecDeque::new(),
            downloads: Vec::new(),
            disk: BTreeMap::new(),
            silent: false,
            fallback: true,
            next_id: 1,
        }
    }

    /// A client that connects at `at` and sends `name` as its first line.
    pub fn joining(at: Duration, name: &str) -> Self {
        Self::new().at(at, Step::Connect).at(at, Step::Line(name.to_owned()))
    }

    /// Adds `step` at `at` after the start (steps at the same time run in the order added).
    pub fn at(mut self, at: Duration, step: Step) -> Self {
        let i = self.script.partition_point(|(t, _)| *t <= at);
        self.script.insert(i, (at, step));
        self
    }

    /// Adds a line `text` at `at`.
    pub fn line(self, at: Duration, text: impl Into<String>) -> Self {
        self.at(at, Step::Line(text.into()))
    }

    /// Turns the U5 fallback off: a download of too-large parts just waits (and gives up).
    pub fn without_fallback(mut self) -> Self {
        self.fallback = false;
        self
    }

    fn base(&self) -> Option<Instant> {
        self.base
    }

    fn step(&mut self, now: Instant, step: Step) {
        match step {
            Step::Connect => {
                self.framer = LineFramer::with_limit(MAX_SERVER_LINE);
                self.actions.push_back(ClientAction::Connect);
            }
            Step::Line(text) => {
                let mut bytes = text.into_bytes();
                bytes.push(b'\n');
                self.actions.push_back(ClientAction::Send(bytes));
            }
            Step::Raw(bytes) => self.actions.push_back(ClientAction::Send(bytes)),
            Step::StopReading => self.actions.push_back(ClientAction::StopReading),
            Step::ResumeReading => self.actions.push_back(ClientAction::ResumeReading),
            Step::Reset => self.reset(),
            Step::Close => self.actions.push_back(ClientAction::Close),
            Step::Vanish => self.actions.push_back(ClientAction::Vanish),
            Step::Download { file, part_size } => self.ask(file, part_size),
            Step::SilenceUdp => self.silent = true,
            Step::Kill => {
                for d in &mut self.downloads {
                    let Some(rx) = d.receiver.take() else {
                        continue;
                    };
                    if d.outcome.is_none() {
                        let saved = Saved { bytes: d.written.clone(), record: rx.save_state() };
                        self.disk.insert(d.file.clone(), saved);
                        d.outcome = Some(DownloadOutcome::Killed);
                        d.ended_at = Some(now);
                    }
                    self.actions.push_back(ClientAction::CloseDownload { id: d.id });
                }
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        self.actions.push_back(ClientAction::Reset);
        // Requests not answered yet will never be.
        for i in self.asked.drain(..) {
            if let Some(d) = self.downloads.get_mut(i)
                && d.outcome.is_none()
            {
                d.outcome = Some(DownloadOutcome::Refused("connection reset".to_owned()));
            }
        }
    }

    fn ask(&mut self, file: String, part_size: Option<u32>) {
        let line = match part_size {
            Some(p) => format!("download_file {file} {p}\n"),
            None => format!("download_file {file}\n"),
        };
        self.actions.push_back(ClientAction::Send(line.into_bytes()));
        self.asked.push_back(self.downloads.len());
        self.downloads.push(Download {
            id: 0,
            file,
            offer: None,
            receiver: None,
            written: Vec::new(),
            requested: BTreeSet::new(),
            received: BTreeSet::new(),
            resumed_parts: 0,
            outcome: None,
            offered_at: None,
            ended_at: None,
            u5_check: None,
        });
    }

    fn on_line(&mut self, now: Instant, line: &str) {
        match ServerLine::parse(line) {
            Ok(ServerLine::Udp(offer)) => {
                let pos = self
                    .asked
                    .iter()
                    .position(|&i| self.downloads.get(i).is_some_and(|d| d.file == offer.file));
                if let Some(i) = pos.and_then(|p| self.asked.remove(p)) {
                    self.start_download(now, i, offer);
                }
            }
            Ok(ServerLine::Error(reason))
                if ["too many transfers", "server busy", "no such file"]
                    .iter()
                    .any(|p| reason.starts_with(p)) =>
            {
                if let Some(d) = self.asked.pop_front().and_then(|i| self.downloads.get_mut(i)) {
                    d.outcome = Some(DownloadOutcome::Refused(reason));
                    d.ended_at = Some(now);
                }
            }
            _ => {}
        }
    }

    fn start_download(&mut self, now: Instant, i: usize, offer: UdpOffer) {
        let id = self.next_id;
        self.next_id += 1;
        let Some(d) = self.downloads.get_mut(i) else {
            return;
        };
        let config = ReceiverConfig::new(offer.token, offer.size, offer.part_size, offer.blake3);
        let size = usize::try_from(offer.size).unwrap_or(0);
        let saved = self.disk.remove(&offer.file);
        let resumed = saved.and_then(|s| {
            Receiver::resume(config.clone(), now, &s.record).ok().map(|rx| (rx, s.bytes))
        });
        let (rx, written) = match resumed {
            Some((rx, mut bytes)) => {
                bytes.resize(size, 0);
                (rx, bytes)
            }
            None => (Receiver::new(config, now), vec![0; size]),
        };
        d.id = id;
        d.resumed_parts = rx.progress().parts_received;
        d.receiver = Some(rx);
        d.written = written;
        d.offered_at = Some(now);
        d.u5_check = (self.fallback && offer.part_size > SAFE_PART_SIZE)
            .then_some(now + LARGE_PART_PATIENCE);
        self.actions.push_back(ClientAction::OpenDownload { id, port: offer.port });
        d.offer = Some(offer);
        Self::settle(now, d);
    }

    /// Hashes what can be hashed and notes the end of the download.
    fn settle(now: Instant, d: &mut Download) {
        let Some(rx) = d.receiver.as_mut() else {
            return;
        };
        while let Some((offset, len)) = rx.next_to_hash() {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            match d.written.get(at..at.saturating_add(len)) {
                Some(bytes) => rx.hash(offset, bytes),
                None => break,
            }
        }
        if d.outcome.is_none() {
            match rx.state() {
                ReceiverState::Running => {}
                ReceiverState::Complete => {
                    d.outcome = Some(DownloadOutcome::Complete);
                    d.ended_at = Some(now);
                }
                ReceiverState::Failed(e) => {
                    d.outcome = Some(DownloadOutcome::Failed(e));
                    d.ended_at = Some(now);
                }
            }
        }
    }

    fn check_u5(&mut self, now: Instant) {
        let mut again = Vec::new();
        for d in &mut self.downloads {
            let Some(at) = d.u5_check.filter(|&at| at <= now) else {
                continue;
            };
            let Some(rx) = d.receiver.as_ref() else {
                d.u5_check = None;
                continue;
            };
            if rx.parts_too_large(now) {
                d.receiver = None;
                d.u5_check = None;
                d.outcome = Some(DownloadOutcome::TooLarge);
                d.ended_at = Some(now);
                self.actions.push_back(ClientAction::CloseDownload { id: d.id });
                again.push(d.file.clone());
            } else if rx.progress().parts_received > 0 || rx.state() != ReceiverState::Running {
                d.u5_check = None;
            } else {
                d.u5_check = Some(at.max(now) + U5_CHECK_EVERY);
            }
        }
        for file in again {
            self.ask(file, Some(u32::from(SAFE_PART_SIZE)));
        }
    }
}

impl SimClient for ScriptedClient {
    fn start(&mut self, now: Instant) {
        self.base = Some(now);
    }

    fn handle_input(&mut self, now: Instant, input: ClientInput<'_>) {
        match input {
            ClientInput::Received(bytes) => {
                self.framer.push(bytes);
                while let Some(framed) = self.framer.next() {
                    if let Framed::Line(line) = framed {
                        self.on_line(now, &line);
                    }
                }
            }
            ClientInput::ConnectionEnded => {
                for i in self.asked.drain(..) {
                    if let Some(d) = self.downloads.get_mut(i) {
                        d.outcome = Some(DownloadOutcome::Refused("connection closed".to_owned()));
                    }
                }
            }
        }
    }

    fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let script = self.base().zip(self.script.front()).map(|(base, (at, _))| base + *at);
        let downloads = self.downloads.iter().flat_map(|d| {
            let rx = d.receiver.as_ref().and_then(Receiver::poll_timeout);
            rx.into_iter().chain(d.u5_check)
        });
        script.into_iter().chain(downloads).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(base) = self.base() {
            match self.script.front() {
                Some((at, _)) if base + *at <= now => {}
                _ => break,
            }
            if let Some((_, step)) = self.script.pop_front() {
                self.step(now, step);
            }
        }
        for d in &mut self.downloads {
            if let Some(rx) = d.receiver.as_mut()
                && rx.poll_timeout().is_some_and(|t| t <= now)
            {
                rx.handle_timeout(now);
                Self::settle(now, d);
            }
        }
        self.check_u5(now);
    }

    fn handle_datagram(&mut self, now: Instant, id: u64, buf: &[u8]) {
        let Some(d) = self.downloads.iter_mut().find(|d| d.id == id) else {
            return;
        };
        let Some(rx) = d.receiver.as_mut() else {
            return;
        };
        if let Some(accept) = rx.handle_datagram(now, buf) {
            let at = usize::try_from(accept.offset).unwrap_or(usize::MAX);
            if let (Some(payload), Some(dst)) = (
                buf.get(accept.payload.clone()),
                d.written.get_mut(at..at.saturating_add(accept.payload.len())),
            ) {
                dst.copy_from_slice(payload);
                d.received.insert(accept.part);
            }
        }
        Self::settle(now, d);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(u64, usize)> {
        for d in &mut self.downloads {
            let Some(rx) = d.receiver.as_mut() else {
                continue;
            };
            while let Some(n) = rx.poll_transmit(now, buf) {
                if self.silent {
                    // Sent into the void: the receiver goes on as if they had left.
                    continue;
                }
                if let Ok(Datagram::Request(req)) = datagram::parse(&buf[..n]) {
                    for (first, last) in req.ranges {
                        d.requested.extend(first..=last);
                    }
                }
                return Some((d.id, n));
            }
        }
        None
    }

    fn downloads(&self) -> Vec<DownloadReport> {
        let since = |t: Option<Instant>| t.zip(self.base).map(|(t, b)| t - b);
        self.downloads
            .iter()
            .map(|d| DownloadReport {
                file: d.file.clone(),
                port: d.offer.as_ref().map(|o| o.port),
                part_size: d.offer.as_ref().map_or(0, |o| o.part_size),
                outcome: d.outcome.clone().unwrap_or(DownloadOutcome::Unfinished),
                written_digest: *blake3::hash(&d.written).as_bytes(),
                requested_parts: d.requested.clone(),
                received_parts: d.received.clone(),
                resumed_parts: d.resumed_parts,
                offered_at: since(d.offered_at),
                ended_at: since(d.ended_at),
            })
            .collect()
    }
}
