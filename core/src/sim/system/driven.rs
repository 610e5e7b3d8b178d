//! The real client: a [`ClientDriver`] in the simulator, its outputs performed the way a client
//! runtime performs them (`runtime-common/src/client.rs` and `download.rs`), against an in-memory
//! [`DownloadFolder`].
//!
//! What the person does comes from a small timed script of [`Cue`]s: start a session (connect and
//! run a new driver), type a line, end the input, go silent on UDP, be killed. The client decides
//! nothing itself; every policy (which reply answers which request, the small-part fallback,
//! resume, keep or discard, `natter get`'s auto-quit) is the driver's. What it performs:
//!
//! | output | performed as |
//! | --- | --- |
//! | `Send` | written to the chat connection |
//! | `Open` | the `.part` file made `size` bytes long (kept bytes stay), the resume record beside it handed back in [`Input::Opened`], the resumed prefix fed to the hash, a UDP socket opened |
//! | `SaveRecord` | the record saved beside the `.part` file |
//! | `Keep` | the `.part` file renamed to the first free final name ([`free_final_name`]), its record removed, [`Input::Saved`] |
//! | `Discard` | the `.part` file and its record removed |
//! | `Release` | the socket closed |
//! | `Ended`, `Finish` | recorded in the report; after `Finish` the connection is closed and the driver dropped |
//!
//! An accepted part's payload is written into the `.part` file at its offset and the driver's hash
//! is fed from the file, as `DownloadFiles::on_datagram` does. A kill ([`Cue::Kill`]) drops the
//! driver and resets the connection, and leaves the folder as it is: the `.part` files with the
//! records last saved. A later session ([`Cue::Start`]) runs a new driver on that folder (U6).

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{
    ClientAction, ClientInput, DownloadFolder, DownloadOutcome, DownloadReport, SavedRecord,
    SessionEnd, SimClient,
};
use crate::chat::catalogue::free_final_name;
use crate::driver::client::{ClientConfig, ClientDriver, DownloadId, Input, Mode, Output};
use crate::transfer::receiver::SAFE_PART_SIZE;
use crate::wire::datagram::{self, Datagram, PART_HEADER_LEN};

/// The server's address as a driven client is configured with it (the simulator routes by port).
pub const SERVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

/// Something the person (or the machine) does, at a time of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cue {
    /// Start the program: connect and run a new [`ClientDriver`] on the client's folder (one still
    /// running is killed first).
    Start,
    /// Type a line (without its terminator).
    Type(String),
    /// The person's input ends (a script's pipe closed).
    EndInput,
    /// From now on no datagram of this client reaches the network, in this session and the next:
    /// its downloads go on asking into the void, and still receive (U8).
    SilenceUdp,
    /// The program is killed: the driver is dropped, the connection reset, the sockets closed; the
    /// folder stays as it is (U6).
    Kill,
}

/// One download as this client tracks it for the report.
#[derive(Debug)]
struct Download {
    /// The simulator's socket number: unique across sessions, so that a datagram still in flight
    /// to a killed program's socket never reaches the next program's download of the same number.
    socket: u64,
    file: String,
    port: u16,
    part_size: u16,
    outcome: Option<DownloadOutcome>,
    kept_as: Option<String>,
    requested: BTreeSet<u32>,
    received: BTreeSet<u32>,
    /// The parts of the resume record it was opened with.
    resumed_from: BTreeSet<u32>,
    /// Set from the first progress the driver shows, which comes right after the open.
    resumed_parts: Option<u32>,
    saved_parts: BTreeSet<u32>,
    offered_at: Duration,
    ended_at: Option<Duration>,
    released: bool,
}

/// A running program: the driver and which of its downloads is which.
#[derive(Debug)]
struct Session {
    driver: ClientDriver,
    /// The driver's download ids, to indices into [`DrivenClient::downloads`].
    ids: BTreeMap<DownloadId, usize>,
    /// The early-flight socket of its chat connection.
    early_socket: Option<u64>,
}

/// A simulated client running the real [`ClientDriver`]. See the module documentation.
#[derive(Debug)]
pub struct DrivenClient {
    config: ClientConfig,
    cues: VecDeque<(Duration, Cue)>,
    base: Option<Instant>,
    now: Option<Instant>,
    session: Option<Session>,
    folder: DownloadFolder,
    actions: VecDeque<ClientAction>,
    downloads: Vec<Download>,
    finished: Vec<(Duration, SessionEnd)>,
    next_socket: u64,
    silent: bool,
    /// Early-flight datagrams the driver held until their download opened, to hand it now.
    held_flights: Vec<(DownloadId, Vec<u8>)>,
}

impl DrivenClient {
    /// A client with this configuration and an empty script (nothing starts it yet).
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            cues: VecDeque::new(),
            base: None,
            now: None,
            session: None,
            folder: DownloadFolder::default(),
            actions: VecDeque::new(),
            downloads: Vec::new(),
            finished: Vec::new(),
            next_socket: 1,
            silent: false,
            held_flights: Vec::new(),
        }
    }

    /// A person chatting as `name` from `at` on, asking for [`SAFE_PART_SIZE`] parts.
    pub fn interactive(name: &str, at: Duration) -> Self {
        let config = ClientConfig::new(name, Mode::Interactive, SERVER_IP, SAFE_PART_SIZE);
        Self::new(config).start(at)
    }

    /// `natter get file` as `name`, started at `at`, in [`SAFE_PART_SIZE`] parts.
    pub fn get(name: &str, file: &str, at: Duration) -> Self {
        let mode = Mode::get(file);
        Self::new(ClientConfig::new(name, mode, SERVER_IP, SAFE_PART_SIZE)).start(at)
    }

    /// The same client, waiting for its connect to be reported as `natter get` does, so that
    /// its downloads ask for early flights (PROTOCOL 2.1) into the socket the simulator binds
    /// on the chat connection's address.
    pub fn with_early_flights(mut self) -> Self {
        self.config.awaits_connected = true;
        self
    }

    /// The same client asking for parts of `part_size` when a request names none.
    pub fn with_part_size(mut self, part_size: u16) -> Self {
        self.config.part_size = part_size;
        self
    }

    /// The same client with a folder that already holds files (a resume from an earlier run).
    pub fn with_folder(mut self, folder: DownloadFolder) -> Self {
        self.folder = folder;
        self
    }

    /// Adds `cue` at `at` after the start (cues at the same time run in the order added).
    pub fn at(mut self, at: Duration, cue: Cue) -> Self {
        let i = self.cues.partition_point(|(t, _)| *t <= at);
        self.cues.insert(i, (at, cue));
        self
    }

    /// Starts a session at `at` ([`Cue::Start`]).
    pub fn start(self, at: Duration) -> Self {
        self.at(at, Cue::Start)
    }

    /// Types `line` at `at` ([`Cue::Type`]).
    pub fn typed(self, at: Duration, line: impl Into<String>) -> Self {
        self.at(at, Cue::Type(line.into()))
    }

    /// Ends the input at `at` ([`Cue::EndInput`]).
    pub fn input_ends(self, at: Duration) -> Self {
        self.at(at, Cue::EndInput)
    }

    /// Kills the program at `at` ([`Cue::Kill`]).
    pub fn kill(self, at: Duration) -> Self {
        self.at(at, Cue::Kill)
    }

    fn elapsed(&self) -> Duration {
        match (self.now, self.base) {
            (Some(now), Some(base)) => now.saturating_duration_since(base),
            _ => Duration::ZERO,
        }
    }

    fn cue(&mut self, now: Instant, cue: Cue) {
        match cue {
            Cue::Start => {
                if self.session.is_some() {
                    self.die();
                }
                let driver = ClientDriver::new(self.config.clone(), now);
                self.session = Some(Session { driver, ids: BTreeMap::new(), early_socket: None });
                self.actions.push_back(ClientAction::Connect);
            }
            Cue::Type(line) => {
                if let Some(s) = &mut self.session {
                    s.driver.handle_input(now, Input::Typed(&line));
                }
            }
            Cue::EndInput => {
                if let Some(s) = &mut self.session {
                    s.driver.handle_input(now, Input::InputEnded);
                }
            }
            Cue::SilenceUdp => self.silent = true,
            Cue::Kill => self.die(),
        }
    }

    /// Drops the driver: what is on the folder stays.
    fn die(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let at = self.elapsed();
        for &i in session.ids.values() {
            let d = &mut self.downloads[i];
            if d.outcome.is_none() {
                d.outcome = Some(DownloadOutcome::Killed);
                d.ended_at = Some(at);
            }
            if !d.released {
                d.released = true;
                self.actions.push_back(ClientAction::CloseDownload { id: d.socket });
            }
        }
        self.actions.push_back(ClientAction::Note("killed".to_owned()));
        self.actions.push_back(ClientAction::Reset);
    }

    /// Performs one output of the driver, as a runtime does.
    fn perform(&mut self, output: Output) {
        let Some(now) = self.now else {
            return;
        };
        let at = self.elapsed();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let driver = &mut session.driver;
        match output {
            Output::Send(bytes) => self.actions.push_back(ClientAction::Send(bytes)),
            Output::Notice(text) => self.actions.push_back(ClientAction::Note(text)),
            Output::Event(_) | Output::Disconnected(_) => {}
            Output::FileDone { file, result } => {
                let text = match &result {
                    Ok(r) => format!("{file}: saved as {}", r.path),
                    Err(e) => format!("{file}: {e}"),
                };
                self.actions.push_back(ClientAction::Note(text));
            }
            Output::Progress { id, progress, .. } => {
                if let Some(d) = session.ids.get(&id).map(|&i| &mut self.downloads[i]) {
                    d.resumed_parts.get_or_insert(progress.parts_received);
                }
            }
            // A flight it asked for comes to the early-flight socket; the download has a socket
            // of its own all the same.
            Output::Open { id, file, size, peer, max_datagram, early } => {
                let socket = self.next_socket;
                self.next_socket += 1;
                let part = self.folder.parts.entry(file.clone()).or_default();
                part.resize(usize::try_from(size).unwrap_or(0), 0);
                let record = self.folder.records.get(&file).cloned();
                session.ids.insert(id, self.downloads.len());
                self.downloads.push(Download {
                    socket,
                    file: file.clone(),
                    port: peer.port(),
                    part_size: u16::try_from(max_datagram.saturating_sub(PART_HEADER_LEN))
                        .unwrap_or(0),
                    outcome: None,
                    kept_as: None,
                    requested: BTreeSet::new(),
                    received: BTreeSet::new(),
                    resumed_from: record.as_ref().map(|r| r.parts.clone()).unwrap_or_default(),
                    resumed_parts: None,
                    saved_parts: BTreeSet::new(),
                    offered_at: at,
                    ended_at: None,
                    released: false,
                });
                self.actions
                    .push_back(ClientAction::OpenDownload { id: socket, port: peer.port() });
                let found = if record.is_some() { ", record found" } else { "" };
                let text = format!("open #{id}: {file}.part{found}, udp to port {}", peer.port());
                self.actions.push_back(ClientAction::Note(text));
                let resume = record.map(|r| r.bytes);
                driver.handle_input(now, Input::Opened { id, resume });
                // A resumed prefix is hashed from the file before new parts arrive.
                feed_hash(driver, id, part);
                if early {
                    // What came for it on the early-flight socket before it was open.
                    let held = driver.take_early_held(id);
                    self.held_flights.extend(held.into_iter().map(|datagram| (id, datagram)));
                }
            }
            Output::SaveRecord { id, record } => {
                let Some(d) = session.ids.get(&id).map(|&i| &mut self.downloads[i]) else {
                    return;
                };
                // A record the driver resumed from is carried on in the ones it saves after.
                let resumed = if d.resumed_parts.unwrap_or(0) > 0 {
                    d.resumed_from.clone()
                } else {
                    BTreeSet::new()
                };
                let parts: BTreeSet<u32> = resumed.union(&d.received).copied().collect();
                d.saved_parts.clone_from(&parts);
                self.folder.records.insert(d.file.clone(), SavedRecord { bytes: record, parts });
            }
            Output::Keep { id } => {
                let Some(d) = session.ids.get(&id).map(|&i| &mut self.downloads[i]) else {
                    return;
                };
                let files = &mut self.folder.files;
                let name = free_final_name(&d.file, |c| files.contains_key(c));
                let bytes = self.folder.parts.remove(&d.file).unwrap_or_default();
                self.folder.records.remove(&d.file);
                files.insert(name.clone(), bytes);
                d.kept_as = Some(name.clone());
                self.actions.push_back(ClientAction::Note(format!("keep #{id} as {name}")));
                driver.handle_input(now, Input::Saved { id, path: name.clone() });
            }
            Output::Discard { id } => {
                self.actions.push_back(ClientAction::Note(format!("discard #{id}")));
                if let Some(d) = session.ids.get(&id).map(|&i| &self.downloads[i]) {
                    self.folder.parts.remove(&d.file);
                    self.folder.records.remove(&d.file);
                }
            }
            Output::Release { id } => {
                let Some(d) = session.ids.get(&id).map(|&i| &mut self.downloads[i]) else {
                    return;
                };
                if d.outcome.is_none() {
                    // Released without an end: the driver gave it up to ask again (U5).
                    d.outcome = Some(DownloadOutcome::TooLarge);
                    d.ended_at = Some(at);
                }
                if !d.released {
                    d.released = true;
                    self.actions.push_back(ClientAction::CloseDownload { id: d.socket });
                }
            }
            Output::Ended { id, result, .. } => {
                let text = match &result {
                    Ok(r) => format!("#{id} saved {} bytes, {} resumed", r.size, r.resumed),
                    Err(e) => format!("#{id} failed: {e}"),
                };
                self.actions.push_back(ClientAction::Note(text));
                if let Some(d) = session.ids.get(&id).map(|&i| &mut self.downloads[i]) {
                    d.outcome = Some(match result {
                        Ok(_) => DownloadOutcome::Complete,
                        Err(failure) => DownloadOutcome::Failed(failure),
                    });
                    d.ended_at = Some(at);
                }
            }
            Output::Finish(result) => {
                let text = match &result {
                    None => "finish".to_owned(),
                    Some(Ok(r)) => format!("finish: got {}", r.path),
                    Some(Err(e)) => format!("finish: {e}"),
                };
                self.actions.push_back(ClientAction::Note(text));
                self.finished.push((at, result));
                self.session = None;
                self.actions.push_back(ClientAction::Close);
            }
        }
    }
}

impl DrivenClient {
    /// Download `id`'s datagram, as a runtime hands it to the driver and the file.
    fn deliver(&mut self, now: Instant, id: DownloadId, buf: &mut [u8]) {
        let Some(s) = &mut self.session else {
            return;
        };
        let Some(&i) = s.ids.get(&id) else {
            return;
        };
        let Some(accept) = s.driver.handle_datagram(now, id, buf) else {
            return;
        };
        let d = &mut self.downloads[i];
        let Some(part) = self.folder.parts.get_mut(&d.file) else {
            return;
        };
        let at = usize::try_from(accept.offset).unwrap_or(usize::MAX);
        let len = accept.payload.len();
        if let (Some(payload), Some(dst)) =
            (buf.get(accept.payload), part.get_mut(at..at.saturating_add(len)))
        {
            dst.copy_from_slice(payload);
            d.received.insert(accept.part);
        }
        feed_hash(&mut s.driver, id, part);
    }
}

/// Feeds download `id`'s in-order hash from its `.part` file, as far as the driver asks.
fn feed_hash(driver: &mut ClientDriver, id: DownloadId, part: &[u8]) {
    while let Some((offset, len)) = driver.next_to_hash(id) {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        match part.get(at..at.saturating_add(len)) {
            Some(bytes) => driver.hash(id, offset, bytes),
            None => return,
        }
    }
}

impl SimClient for DrivenClient {
    fn start(&mut self, now: Instant) {
        self.base = Some(now);
        self.now = Some(now);
    }

    fn handle_input(&mut self, now: Instant, input: ClientInput<'_>) {
        self.now = Some(now);
        let Some(s) = &mut self.session else {
            return;
        };
        match input {
            ClientInput::Received(bytes) => s.driver.handle_input(now, Input::Received(bytes)),
            ClientInput::ConnectionEnded => s.driver.handle_input(now, Input::ServerClosed),
            // Only a client that waits for the connect hears of it (`with_early_flights`): the
            // others ask for no early flight, as against a server from before them.
            ClientInput::Connected { early_socket, local, handshake } => {
                if self.config.awaits_connected {
                    s.early_socket = Some(early_socket);
                    let early_socket = Some(local);
                    s.driver.handle_input(now, Input::Connected { handshake, early_socket });
                }
            }
        }
    }

    fn poll_action(&mut self) -> Option<ClientAction> {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Some(action);
            }
            let output = self.session.as_mut()?.driver.poll_output()?;
            self.perform(output);
            if let Some(now) = self.now {
                for (id, mut datagram) in std::mem::take(&mut self.held_flights) {
                    self.deliver(now, id, &mut datagram);
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let cue = self.base.zip(self.cues.front()).map(|(base, (at, _))| base + *at);
        let driver = self.session.as_ref().and_then(|s| s.driver.poll_timeout());
        cue.into_iter().chain(driver).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        while let Some(base) = self.base {
            match self.cues.front() {
                Some((at, _)) if base + *at <= now => {}
                _ => break,
            }
            if let Some((_, cue)) = self.cues.pop_front() {
                self.cue(now, cue);
            }
        }
        if let Some(s) = &mut self.session
            && s.driver.poll_timeout().is_some_and(|t| t <= now)
        {
            s.driver.handle_timeout(now);
        }
    }

    fn handle_datagram(&mut self, now: Instant, socket: u64, from: SocketAddr, buf: &mut [u8]) {
        self.now = Some(now);
        let Some(s) = &mut self.session else {
            return;
        };
        // The early-flight socket's datagrams go where the driver says, or wait in it.
        let id = if s.early_socket == Some(socket) {
            s.driver.early_datagram(now, from, buf)
        } else {
            s.ids.iter().find(|(_, i)| self.downloads[**i].socket == socket).map(|(&id, _)| id)
        };
        if let Some(id) = id {
            self.deliver(now, id, buf);
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(u64, usize)> {
        self.now = Some(now);
        let s = self.session.as_mut()?;
        loop {
            let (id, n) = s.driver.poll_transmit(now, buf)?;
            if self.silent {
                continue; // into the void
            }
            let &i = s.ids.get(&id)?;
            let d = &mut self.downloads[i];
            if let Ok(Datagram::Request(req)) = datagram::parse(&buf[..n]) {
                for (first, last) in req.ranges {
                    d.requested.extend(first..=last);
                }
            }
            return Some((d.socket, n));
        }
    }

    fn downloads(&self) -> Vec<DownloadReport> {
        self.downloads
            .iter()
            .map(|d| {
                let held = match &d.kept_as {
                    Some(name) => self.folder.files.get(name),
                    None => self.folder.parts.get(&d.file),
                };
                DownloadReport {
                    file: d.file.clone(),
                    port: d.port,
                    part_size: d.part_size,
                    outcome: d.outcome.clone().unwrap_or(DownloadOutcome::Unfinished),
                    written_digest: *blake3::hash(held.map_or(&[][..], Vec::as_slice)).as_bytes(),
                    kept_as: d.kept_as.clone(),
                    requested_parts: d.requested.clone(),
                    received_parts: d.received.clone(),
                    resumed_parts: d.resumed_parts.unwrap_or(0),
                    saved_parts: d.saved_parts.clone(),
                    offered_at: d.offered_at,
                    ended_at: d.ended_at,
                }
            })
            .collect()
    }

    fn finished(&self) -> Vec<(Duration, SessionEnd)> {
        self.finished.clone()
    }

    fn folder(&self) -> DownloadFolder {
        self.folder.clone()
    }
}
