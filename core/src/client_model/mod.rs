//! The client model: everything a chat UI shows and decides, as plain state, shared by
//! `natter tui` and `natter gui` and tested without a screen.
//!
//! A UI owns one [`ClientModel`] and does four things with it:
//! - hands it what the person does: [`ClientModel::submit_input`] (a typed line, slash commands
//!   included), [`ClientModel::download`] and [`ClientModel::message`] (a click), history and
//!   completion ([`ClientModel::history_older`], [`ClientModel::complete_input`]);
//! - hands it what the session reports ([`SessionEvent`], from `natter_runtime_common::session`);
//! - performs what it asks for, [`ClientModel::poll_action`] until `None`: start a session
//!   ([`Action::Connect`]) or send a line to the running one ([`Action::Send`]);
//! - calls [`ClientModel::handle_timeout`] at [`ClientModel::poll_timeout`] (reconnect back-off,
//!   the file list's refresh), then draws it.
//!
//! Like the rest of the core it reads no clock: each call gets a [`Clock`], the `Instant` for
//! the back-off and rates and the wall-clock time of day for timestamps. It is `Send` (no `Rc`),
//! so an egui app can keep it behind a mutex shared with its repaint thread.
//!
//! The lines it asks to send are protocol lines (PROTOCOL 1.2) for the session's
//! [`crate::driver::client::ClientDriver`] (as `Input::Typed`): the person never types one.

pub mod channels;
pub mod command;
pub mod completion;
pub mod connection;
pub mod conversation;
pub mod downloads;
pub mod history;
mod session_events;

#[cfg(test)]
#[path = "../../tests/unit/client_model.rs"]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::chat::client::ClientEvent;
use crate::driver::client::DownloadReport;
use crate::transfer::receiver::Progress;

pub use channels::{Channel, Channels};
pub use command::{COMMANDS, Command, CommandError, CommandHelp};
pub use completion::Completer;
pub use connection::{Connection, backoff};
pub use conversation::{ChatLine, Conversation, LineKind, TimeOfDay, mentions};
pub use downloads::{Download, DownloadState, human_bytes, human_duration};
pub use history::InputHistory;

/// How often the file list is fetched again while in the chat: the server rescans its folder
/// every 2 s but tells no one, so a client asks now and then (one short line).
pub const FILES_REFRESH: Duration = Duration::from_secs(30);

/// Lines typed while not in the chat are kept to send once in, up to this many.
pub const MAX_HELD: usize = 50;

/// The time, as the UI read it: the core reads no clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// For back-off and rates.
    pub now: Instant,
    /// For timestamps.
    pub time: TimeOfDay,
}

/// What a running session reports (the events of `natter_runtime_common::ClientUi`, owned, so
/// they can cross a channel from the session's thread).
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A line from the server, parsed and safe to print.
    Server(ClientEvent),
    /// A download moved on.
    Progress {
        /// The file.
        file: String,
        /// Its counters.
        progress: Progress,
    },
    /// A download ended: the verified file, or why there is none.
    DownloadDone {
        /// The file.
        file: String,
        /// The report, or the reason.
        result: Result<DownloadReport, String>,
    },
    /// Something the client did on its own.
    Notice(String),
    /// The server closed the connection while we were not leaving.
    Disconnected(String),
    /// The session is over (its thread ended); `error` when it could not run (e.g. the server
    /// could not be reached).
    Ended {
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// What the model asks its runner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a session that joins as `name` (the first, or a reconnect once the previous
    /// session has [`SessionEvent::Ended`]).
    Connect {
        /// The name to join with.
        name: String,
    },
    /// Send this protocol line (no terminator) on the running session.
    Send(String),
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct ClientModel {
    /// The name we join with (the last one tried, or the one we joined with).
    name: String,
    connection: Connection,
    conversation: Conversation,
    /// The other people here, in the server's order.
    others: Vec<String>,
    files: Vec<String>,
    downloads: Vec<Download>,
    input: String,
    history: InputHistory,
    completer: Completer,
    actions: VecDeque<Action>,
    /// Our `get_list_file` requests not yet answered, oldest first: `true` when the person asked
    /// (the answer is shown), `false` for a silent refresh. Answers come in request order (4.5).
    list_requests: VecDeque<bool>,
    /// Lines typed while not in the chat, sent once in.
    held: Vec<String>,
    /// Why the server closed the connection, until the session ends.
    lost_reason: Option<String>,
    /// Failed tries since we were last in.
    attempt: u32,
    next_files_refresh: Option<Instant>,
    /// A mention or a private message arrived since the UI last rang the bell.
    bell: bool,
    /// The UI's own lines for `/help` (its keys and clicks).
    ui_help: Vec<String>,
}

impl ClientModel {
    /// A model that will join `server` as `name`: its first action is [`Action::Connect`].
    pub fn new(name: &str, server: &str, clock: Clock) -> Self {
        let mut model = Self {
            name: name.trim().to_owned(),
            connection: Connection::Connecting { attempt: 1 },
            conversation: Conversation::default(),
            others: Vec::new(),
            files: Vec::new(),
            downloads: Vec::new(),
            input: String::new(),
            history: InputHistory::default(),
            completer: Completer::default(),
            actions: VecDeque::new(),
            list_requests: VecDeque::new(),
            held: Vec::new(),
            lost_reason: None,
            attempt: 0,
            next_files_refresh: None,
            bell: false,
            ui_help: Vec::new(),
        };
        model.system(
            clock,
            format!("connecting to {server} as {}; /help lists the commands", model.name),
        );
        model.actions.push_back(Action::Connect { name: model.name.clone() });
        model
    }

    // ----- what a UI reads -----

    /// Our name: the one we joined with, or the last one tried.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the connection stands.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The person left and the session is over: the UI closes.
    pub fn is_closed(&self) -> bool {
        self.connection == Connection::Closed
    }

    /// The conversation, oldest line first.
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// The other people here, in the server's order.
    pub fn others(&self) -> &[String] {
        &self.others
    }

    /// Everyone here: us first (once joined), then the others.
    pub fn people(&self) -> Vec<&str> {
        let me = (self.connection == Connection::Joined).then_some(self.name.as_str());
        me.into_iter().chain(self.others.iter().map(String::as_str)).collect()
    }

    /// Is `name` us?
    pub fn is_me(&self, name: &str) -> bool {
        name.to_lowercase() == self.name.to_lowercase()
    }

    /// The files on offer, as the server last listed them.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Every download of this run, oldest first.
    pub fn downloads(&self) -> &[Download] {
        &self.downloads
    }

    /// The line being typed.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The line being typed, for a UI's text field to edit in place.
    pub fn input_mut(&mut self) -> &mut String {
        &mut self.input
    }

    /// Did a mention or a private message arrive since the last call? (Ring the bell.)
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.bell)
    }

    /// Lines `/help` adds after the commands: what the UI's own keys and clicks do.
    pub fn set_ui_help(&mut self, lines: &[&str]) {
        self.ui_help = lines.iter().map(|l| (*l).to_owned()).collect();
    }

    // ----- what the runner does -----

    /// The next thing to do; call until `None` after every call that changes the model.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`ClientModel::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match self.connection {
            Connection::Lost { retry_at, .. } => Some(retry_at),
            _ => None,
        };
        retry.into_iter().chain(self.next_files_refresh).min()
    }

    /// Time passed: reconnects when the back-off ran out, refreshes the file list when due.
    pub fn handle_timeout(&mut self, clock: Clock) {
        if let Connection::Lost { retry_at, .. } = self.connection
            && clock.now >= retry_at
        {
            self.reconnect(clock);
        }
        if self.next_files_refresh.is_some_and(|at| clock.now >= at) {
            self.request_files(clock, false);
        }
    }

    // ----- what the person does -----

    /// Sends the line being typed (remembered in the history) and empties it.
    pub fn submit_input(&mut self, clock: Clock) {
        let input = std::mem::take(&mut self.input);
        self.history.push(&input);
        self.submit(clock, &input);
    }

    /// Runs what the person typed: a command, or text for everyone. Several lines (a paste the
    /// person confirmed) are run one by one.
    pub fn submit(&mut self, clock: Clock, typed: &str) {
        for line in typed.lines() {
            self.submit_line(clock, line);
        }
    }

    fn submit_line(&mut self, clock: Clock, line: &str) {
        if let Connection::NameRefused { .. } = self.connection {
            // PROTOCOL 1.1: after a refusal the next line is the next name to try.
            let name = line.trim();
            if name.is_empty() {
                return;
            }
            name.clone_into(&mut self.name);
            self.connection = Connection::Connecting { attempt: self.attempt.max(1) };
            self.system(clock, format!("trying the name {name}"));
            self.actions.push_back(Action::Send(name.to_owned()));
            return;
        }
        match Command::parse(line) {
            Ok(command) => self.run(clock, command),
            Err(err) => self.error(clock, err.to_string()),
        }
    }

    /// Runs one command.
    pub fn run(&mut self, clock: Clock, command: Command) {
        match command {
            Command::Nothing => {}
            Command::Say(text) => self.send(clock, text),
            Command::Msg { to, text } => self.message(clock, &to, &text),
            Command::Who => self.who(clock),
            Command::Files => self.request_files(clock, true),
            Command::Get(file) => self.download(clock, &file),
            Command::Quit => self.quit(clock),
            Command::Help(topic) => self.help(clock, topic.as_deref()),
            Command::Reconnect => match self.connection {
                Connection::Lost { .. } => self.reconnect(clock),
                _ => self.system(clock, format!("already {}", self.connection.label())),
            },
            Command::Clear => self.conversation.clear(),
        }
    }

    /// A private message to `to` (a click on a name, or `/msg`).
    pub fn message(&mut self, clock: Clock, to: &str, text: &str) {
        let (to, text) = (to.trim(), text.trim());
        if to.is_empty() || text.is_empty() || to.contains(' ') {
            self.error(clock, "usage: /msg NAME text".into());
            return;
        }
        self.send(clock, format!("~{to} {text}"));
    }

    /// Downloads `file` (a click in the file list, or `/get`).
    pub fn download(&mut self, clock: Clock, file: &str) {
        let file = file.trim();
        if file.is_empty() || file.contains(' ') {
            self.error(clock, "usage: /get FILE".into());
            return;
        }
        if self.downloads.iter().any(|d| d.file == file && d.is_active()) {
            self.error(clock, format!("{file} is already downloading"));
            return;
        }
        self.downloads.push(Download::requested(file));
        self.send(clock, format!("download_file {file}"));
    }

    /// Leaves: says `{quit}` to the server, or closes at once when there is no connection.
    pub fn quit(&mut self, clock: Clock) {
        match self.connection {
            Connection::Joined => {
                self.connection = Connection::Quitting;
                self.system(clock, "leaving...".into());
                self.actions.push_back(Action::Send("{quit}".into()));
            }
            // Not in yet: a `{quit}` would be read as the next name (1.1). The UI closes, and
            // the session ends with its input.
            Connection::Connecting { .. }
            | Connection::NameRefused { .. }
            | Connection::Lost { .. } => self.connection = Connection::Closed,
            Connection::Quitting | Connection::Closed => {}
        }
    }

    /// Up: the line sent before the one shown.
    pub fn history_older(&mut self) {
        if let Some(line) = self.history.older(&self.input) {
            self.input = line;
        }
    }

    /// Down: the line sent after the one shown, then what was being typed.
    pub fn history_newer(&mut self) {
        if let Some(line) = self.history.newer() {
            self.input = line;
        }
    }

    /// Tab: completes the word being typed (a command, a file, a name); again, the next match.
    /// Returns whether anything matched.
    pub fn complete_input(&mut self) -> bool {
        let names: Vec<String> = self.others.clone();
        match self.completer.complete(&self.input, &names, &self.files) {
            Some(completed) => {
                self.input = completed;
                true
            }
            None => false,
        }
    }

    /// Forgets the downloads that ended.
    pub fn clear_finished_downloads(&mut self) {
        self.downloads.retain(Download::is_active);
    }

    // ----- helpers -----

    /// Sends a protocol line when in the chat; holds it until then otherwise.
    fn send(&mut self, clock: Clock, line: String) {
        match self.connection {
            Connection::Joined => self.actions.push_back(Action::Send(line)),
            Connection::Quitting | Connection::Closed => {
                self.error(clock, "leaving: nothing more is sent".into());
            }
            _ if self.held.len() >= MAX_HELD => {
                self.error(clock, "not connected, and too much is waiting already".into());
            }
            _ => {
                self.held.push(line);
                self.system(clock, "not in the chat yet: sent once connected".into());
            }
        }
    }

    fn who(&mut self, clock: Clock) {
        if self.connection == Connection::Joined {
            // Refreshes the list quietly; the answer updates the people pane.
            self.actions.push_back(Action::Send("show".into()));
        }
        let mut names: Vec<String> = Vec::new();
        if self.connection == Connection::Joined {
            names.push(format!("{} (you)", self.name));
        }
        names.extend(self.others.iter().cloned());
        let text = match names.len() {
            0 => "nobody here that we know of (not connected)".to_owned(),
            1 => format!("only you are here: {}", names.join(", ")),
            n => format!("{n} here: {}", names.join(", ")),
        };
        self.system(clock, text);
    }

    /// Asks for the file list; `shown` when the person asked (the answer is printed).
    fn request_files(&mut self, clock: Clock, shown: bool) {
        if self.connection != Connection::Joined {
            if shown {
                self.show_files(clock);
            }
            return;
        }
        self.list_requests.push_back(shown);
        self.actions.push_back(Action::Send("get_list_file".into()));
        self.next_files_refresh = Some(clock.now + FILES_REFRESH);
    }

    fn show_files(&mut self, clock: Clock) {
        let text = match self.files.len() {
            0 => "no files on offer".to_owned(),
            n => format!("{n} files on offer: {} (/get FILE downloads one)", self.files.join(", ")),
        };
        self.system(clock, text);
    }

    fn help(&mut self, clock: Clock, topic: Option<&str>) {
        match topic {
            None => {
                self.system(
                    clock,
                    "Type a line and press Enter to talk to everyone. Commands:".into(),
                );
                for c in COMMANDS {
                    self.system(clock, format!("{}  {}", c.usage, c.about));
                }
                self.system(
                    clock,
                    "Tab completes names, files and commands; Up/Down recall what you sent.".into(),
                );
                for line in self.ui_help.clone() {
                    self.system(clock, line);
                }
            }
            Some(topic) => match command::find_command(topic) {
                Some(c) => {
                    let aliases = if c.aliases.is_empty() {
                        String::new()
                    } else {
                        format!(" (also /{})", c.aliases.join(", /"))
                    };
                    self.system(clock, format!("{}: {}{aliases}", c.usage, c.about));
                }
                None => self.error(clock, format!("no command /{topic}: /help lists them")),
            },
        }
    }

    /// The download of `file` still going, made if the person did not ask for it here (an offer
    /// for a line typed in another way).
    fn active_download(&mut self, file: &str) -> &mut Download {
        let at = match self.downloads.iter().position(|d| d.file == file && d.is_active()) {
            Some(at) => at,
            None => {
                self.downloads.push(Download::requested(file));
                self.downloads.len() - 1
            }
        };
        &mut self.downloads[at]
    }

    fn fail_requested(&mut self, file: &str, reason: &str) {
        if let Some(d) = self
            .downloads
            .iter_mut()
            .find(|d| d.file == file && d.state == DownloadState::Requested)
        {
            d.failed(reason.to_owned());
        }
    }

    fn push(&mut self, clock: Clock, kind: LineKind, text: String, mention: bool) {
        self.bell |= mention;
        self.conversation.push(clock.time, kind, text, mention);
    }

    fn system(&mut self, clock: Clock, text: String) {
        self.push(clock, LineKind::System, text, false);
    }

    fn error(&mut self, clock: Clock, text: String) {
        self.push(clock, LineKind::Error, text, false);
    }
}
