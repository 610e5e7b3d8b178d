//! The chat client as a sans-IO state machine: server bytes in, typed events out; text a person
//! typed in, wire lines out (PROTOCOL.md 1.2, 1.3, 2.1).
//!
//! The client trusts the server no more than the server trusts it (S3): an offer whose file name
//! could escape `Downloads/` (`../../.bashrc`, a `/`, a leading `.`, whitespace, control
//! characters) or whose fields are impossible is turned into a [`ClientEvent::Rejected`] and
//! never into an [`Offer`], so a runtime that only acts on `Offer`s cannot be tricked into
//! writing outside its folder.
//!
//! What the client *does* with events (downloads, which reply answers which request, when to
//! leave) is the client driver's business: [`crate::driver::client`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::chat::catalogue::is_offerable_name;
use crate::chat::display::{escape_for_display, escape_truncated, is_display_unsafe};
use crate::wire::chat::{ClientLine, LineError, PART_SIZE_RANGE, ServerLine, UdpOffer};
use crate::wire::line::{Framed, LineFramer, MAX_LINE};

/// The longest server line the client reads. The 4096-byte limit of PROTOCOL 1.2 bounds what
/// clients send; the server's `ALL` and `CHOOSE_FILE` lines grow with the room and the folder (a
/// thousand people of 32-character names make a 33 KB `ALL` line), so the client allows far more
/// while still bounding what a hostile server can make it hold.
pub const MAX_SERVER_LINE: usize = 1 << 20;

/// The longest file name the client accepts, in bytes: the common file system limit (NAME_MAX,
/// 255) less the 16 bytes of `.part.resume.tmp`, so every name the client makes beside a download
/// fits too, and so does any numbered final name (`name (12).ext`).
pub const MAX_FILE_NAME_BYTES: usize = 255 - ".part.resume.tmp".len();

/// The most parts an offer may have. The client keeps one bit per part in memory and in its
/// resume record, so this bounds both at 32 MiB whatever a server claims: 320 GB in 1200-byte
/// parts, 17 TB in 65000-byte parts.
pub const MAX_PARTS: u64 = 1 << 28;

/// A download offer that passed the client's checks (S3): its file name is safe to use in
/// `Downloads/` and its numbers are possible. The only way to get one is [`Offer::checked`], so a
/// runtime holding an `Offer` never has to check again. Its fields are the wire offer's, read
/// through `Deref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer(UdpOffer);

impl std::ops::Deref for Offer {
    type Target = UdpOffer;

    fn deref(&self) -> &UdpOffer {
        &self.0
    }
}

impl Offer {
    /// S3: refuses offers whose name could escape `Downloads/` or clash with the client's own
    /// files, or whose numbers are impossible or would make the client allocate without bound: a
    /// part size outside 512..=65000 (the only sizes a server grants, PROTOCOL 2.1) or more than
    /// [`MAX_PARTS`] parts. Nothing has been allocated for the offer when it is refused. The
    /// error is escaped and safe to print.
    pub fn checked(o: UdpOffer) -> Result<Offer, String> {
        if !is_safe_file_name(&o.file) {
            return Err(format!(
                "refused an offer with an unsafe file name: {}",
                escape_truncated(&o.file, 80)
            ));
        }
        if !PART_SIZE_RANGE.contains(&o.part_size) {
            return Err(format!(
                "refused an offer of {} in {}-byte parts: servers grant 512 to 65000",
                o.file, o.part_size
            ));
        }
        let parts = o.size.div_ceil(u64::from(o.part_size));
        if parts > MAX_PARTS {
            return Err(format!(
                "refused an offer of {} ({} bytes) in {} parts: more than {MAX_PARTS}",
                o.file, o.size, parts
            ));
        }
        if o.port == 0 {
            return Err(format!("refused an offer on port 0 for {}", o.file));
        }
        Ok(Offer(o))
    }
}

/// What the server told us, one event per line. Every string in it is safe to print (S4): the
/// characters that move a terminal's cursor or reorder what a reader sees (the Unicode line
/// separators, bidirectional overrides) are written as visible `\u{..}` escapes, so a message
/// cannot pass for another line or another sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// `<name> has joined the chat!` (our own join included; see [`ChatClient::is_joined`]).
    Joined(String),
    /// `<name> left the chat...`
    Left(String),
    /// `ALL ...`: the other people here, in join order.
    Presence(Vec<String>),
    /// `<from>: <text>`: a message to everyone.
    Public {
        /// Who sent it.
        from: String,
        /// What they wrote.
        text: String,
    },
    /// `<from>: (PRIVATE) <text>`: a message to us alone.
    Private {
        /// Who sent it.
        from: String,
        /// What they wrote.
        text: String,
    },
    /// The server's copy of a private message we sent.
    PrivateSent {
        /// Whom we wrote to.
        to: String,
        /// What we wrote.
        text: String,
    },
    /// `CHOOSE_FILE ...`, with any unsafe name left out (and reported as `Rejected`).
    Files(Vec<String>),
    /// A checked download offer.
    Offer(Offer),
    /// `ERROR <reason>` from the server.
    Error(String),
    /// `ERROR <reason>` before we joined: the name was refused (1.1). The connection stays open;
    /// the next line typed is taken as another name.
    NameRefused(String),
    /// A download offer the client refused (S3): a name that could escape `Downloads/` or
    /// impossible numbers. Nothing is downloaded.
    OfferRefused(String),
    /// A server line the client could not read (malformed, or not UTF-8), or unsafe names left
    /// out of a file list.
    Rejected(String),
}

/// Why typed text cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Longer than a line may be (PROTOCOL 1.2).
    #[error("too long: at most {MAX_LINE} bytes per line")]
    TooLong,
    /// Not a command the server would accept.
    #[error("{0}")]
    Line(#[from] LineError),
}

/// How long the client waits for the server to close the connection after `{quit}` (PROTOCOL
/// 1.2: the server answers everything sent before it, then closes). Long enough for the answers
/// of a piped script to arrive; short enough that a server that never closes does not hold the
/// person.
pub const QUIT_GRACE: Duration = Duration::from_secs(2);

/// What happened to the chat connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatInput<'a> {
    /// Bytes read from the server.
    Received(&'a [u8]),
    /// A line a person typed (without its line terminator).
    Typed(&'a str),
    /// The server closed the connection (or reading it failed).
    Closed,
}

/// What a sent line is to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A name: the first line, or the next try after a refusal (1.1).
    Name(String),
    /// A command (1.2). `maybe_name`: sent before the join was answered, so the server reads it as
    /// the next name if every earlier name is refused.
    Line {
        /// The command.
        line: ClientLine,
        /// Sent before our name was accepted.
        maybe_name: bool,
    },
}

/// What the client asks of its runtime, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOutput {
    /// Write these bytes to the server; `sent` says what they are.
    Send {
        /// The line, with its terminator.
        bytes: Vec<u8>,
        /// What it is, for matching the server's answer to it.
        sent: Sent,
    },
    /// A line from the server, parsed and safe to print.
    Event(ClientEvent),
    /// Typed text that cannot be sent, and why (for the person).
    Invalid(InputError),
    /// The conversation is over: close the connection. `quit`: we said `{quit}` (the server
    /// closed, or [`QUIT_GRACE`] ran out); otherwise the server closed on its own.
    Over {
        /// We said `{quit}`.
        quit: bool,
    },
}

/// The client side of one chat connection. Sans-IO: the four verbs of every state machine in
/// this crate (`handle_input`, `poll_output`, `poll_timeout`, `handle_timeout`); its one timer is
/// the `{quit}` grace. The name line is the first output of a new client.
#[derive(Debug)]
pub struct ChatClient {
    name: String,
    joined: bool,
    /// Names sent and not yet answered, oldest first: the server reads every line before the join
    /// as a name, so a line typed while the first name is pending is also the next try.
    attempts: VecDeque<String>,
    /// Every name sent was refused: the next line typed is a name (1.1).
    name_refused: bool,
    framer: LineFramer,
    outputs: VecDeque<ChatOutput>,
    /// `{quit}` was sent at this time; the connection is closed by [`QUIT_GRACE`] after it.
    quit_at: Option<Instant>,
    over: bool,
}

impl ChatClient {
    /// A client that will introduce itself as `name`; its first output sends the name.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let mut me = Self {
            name: String::new(),
            joined: false,
            attempts: VecDeque::new(),
            name_refused: false,
            framer: LineFramer::with_limit(MAX_SERVER_LINE),
            outputs: VecDeque::new(),
            quit_at: None,
            over: false,
        };
        me.send_name(name);
        me
    }

    /// The name this client asked for last (or joined with).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Has the server announced our own join?
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Every name sent was refused and none is on its way: the next line typed is a name.
    pub fn wants_name(&self) -> bool {
        self.name_refused && !self.joined
    }

    /// Has `{quit}` been sent?
    pub fn is_quitting(&self) -> bool {
        self.quit_at.is_some()
    }

    /// Is the conversation over (see [`ChatOutput::Over`])?
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Something happened on the connection or at the keyboard; then drain
    /// [`ChatClient::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: ChatInput<'_>) {
        if self.over {
            return;
        }
        match input {
            ChatInput::Received(bytes) => self.on_bytes(bytes),
            ChatInput::Typed(typed) => self.on_typed(now, typed),
            ChatInput::Closed => {
                self.over = true;
                let quit = self.quit_at.is_some();
                self.outputs.push_back(ChatOutput::Over { quit });
            }
        }
    }

    /// The next thing to do, or `None` (call until `None`).
    pub fn poll_output(&mut self) -> Option<ChatOutput> {
        self.outputs.pop_front()
    }

    /// The end of the `{quit}` grace, while it runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.quit_at.filter(|_| !self.over).map(|at| at + QUIT_GRACE)
    }

    /// The `{quit}` grace ran out: the conversation is over even if the server never closed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.poll_timeout()
            && now >= at
        {
            self.over = true;
            self.outputs.push_back(ChatOutput::Over { quit: true });
        }
    }

    fn send_name(&mut self, name: String) {
        self.name.clone_from(&name);
        self.attempts.push_back(name.clone());
        let bytes = format!("{name}\n").into_bytes();
        self.outputs.push_back(ChatOutput::Send { bytes, sent: Sent::Name(name) });
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
        while let Some(framed) = self.framer.next() {
            let event = match framed {
                Framed::TooLong => {
                    ClientEvent::Rejected("the server sent an over-long line".into())
                }
                Framed::InvalidUtf8 => {
                    ClientEvent::Rejected("the server sent a line that is not UTF-8".into())
                }
                Framed::Line(line) => self.on_line(&line),
            };
            self.outputs.push_back(ChatOutput::Event(event));
        }
    }

    /// What a person typed becomes a wire line. Commands are checked here so the person learns
    /// of a typo at once; whatever passes is re-encoded in canonical form. After the server refused
    /// every name sent, what is typed is the next name to try (1.1 keeps the connection open for
    /// it), so a person whose name was taken just types another.
    fn on_typed(&mut self, now: Instant, typed: &str) {
        if self.quit_at.is_some() {
            return; // the server reads nothing after {quit}
        }
        if typed.len() > MAX_LINE {
            self.outputs.push_back(ChatOutput::Invalid(InputError::TooLong));
            return;
        }
        if self.name_refused && !self.joined {
            self.name_refused = false;
            self.send_name(typed.to_owned());
            return;
        }
        let line = match ClientLine::parse(typed) {
            Ok(line) => line,
            Err(err) => {
                self.outputs.push_back(ChatOutput::Invalid(err.into()));
                return;
            }
        };
        let maybe_name = !self.joined;
        if maybe_name {
            self.attempts.push_back(typed.to_owned());
        }
        if line == ClientLine::Quit {
            self.quit_at = Some(now);
        }
        self.outputs.push_back(ChatOutput::Send {
            bytes: line.encode().into_bytes(),
            sent: Sent::Line { line, maybe_name },
        });
    }

    fn on_line(&mut self, line: &str) -> ClientEvent {
        let parsed = match ServerLine::parse(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                return ClientEvent::Rejected(format!("{e}: {}", escape_truncated(line, 80)));
            }
        };
        match parsed {
            ServerLine::Joined(name) => {
                // The server answers names in order: our join is the one of the oldest name
                // still waiting for its answer.
                if !self.joined && self.attempts.front() == Some(&name) {
                    self.joined = true;
                    self.attempts.clear();
                    self.name.clone_from(&name);
                }
                ClientEvent::Joined(safe(name))
            }
            ServerLine::Left(name) => ClientEvent::Left(safe(name)),
            ServerLine::All(names) => ClientEvent::Presence(names.into_iter().map(safe).collect()),
            ServerLine::Public { from, text } => {
                ClientEvent::Public { from: safe(from), text: safe(text) }
            }
            ServerLine::Private { from, text } => {
                ClientEvent::Private { from: safe(from), text: safe(text) }
            }
            ServerLine::PrivateEcho { to, text } => {
                ClientEvent::PrivateSent { to: safe(to), text: safe(text) }
            }
            ServerLine::Error(reason) if !self.joined => {
                self.attempts.pop_front();
                // Only when no other line is on its way as the next name does the person type one.
                self.name_refused = self.attempts.is_empty();
                ClientEvent::NameRefused(safe(reason))
            }
            ServerLine::Error(reason) => ClientEvent::Error(safe(reason)),
            ServerLine::ChooseFile(files) => {
                let (safe, unsafe_): (Vec<String>, Vec<String>) =
                    files.into_iter().partition(|f| is_safe_file_name(f));
                if let Some(first) = unsafe_.first() {
                    self.outputs.push_back(ChatOutput::Event(ClientEvent::Rejected(format!(
                        "the server listed {} unsafe file name(s), e.g. {}",
                        unsafe_.len(),
                        escape_truncated(first, 80)
                    ))));
                }
                ClientEvent::Files(safe)
            }
            ServerLine::Udp(offer) => match Offer::checked(offer) {
                Ok(offer) => ClientEvent::Offer(offer),
                Err(reason) => ClientEvent::OfferRefused(reason),
            },
        }
    }
}

/// Text from the server, made safe to print (S4).
fn safe(text: String) -> String {
    match escape_for_display(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// A name the client may create in `Downloads/`: offerable (1.4), short enough for a file system,
/// free of characters that would disguise it on screen (S4), and not one of the names the client keeps beside a download (`<file>.part`, its resume record
/// `<file>.part.resume` and that record's temporary `.tmp`), which another download would clobber.
pub fn is_safe_file_name(name: &str) -> bool {
    const OWN_SUFFIXES: [&str; 3] = [".part", ".part.resume", ".part.resume.tmp"];
    is_offerable_name(name)
        && name.len() <= MAX_FILE_NAME_BYTES
        && !name.chars().any(is_display_unsafe)
        && !OWN_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}
