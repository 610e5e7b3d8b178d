//! The chat client as a sans-IO state machine: server bytes in, typed events out; text a person
//! typed in, wire lines out (PROTOCOL.md 1.2, 1.3, 2.1).
//!
//! The client trusts the server no more than the server trusts it (S3): an offer whose file name
//! could escape `Downloads/` (`../../.bashrc`, a `/`, a leading `.`, whitespace, control
//! characters) or whose fields are impossible is turned into a [`ClientEvent::Rejected`] and
//! never into an [`Offer`], so a runtime that only acts on `Offer`s cannot be tricked into
//! writing outside its folder.

use std::collections::VecDeque;

use crate::chat::catalogue::is_offerable_name;
use crate::chat::display::{escape_for_display, escape_truncated, is_display_unsafe};
use crate::wire::chat::{ClientLine, LineError, ServerLine, UdpOffer};
use crate::wire::line::{Framed, LineFramer, MAX_LINE};

/// The longest server line the client reads. The 4096-byte limit of PROTOCOL 1.2 bounds what
/// clients send; the server's `ALL` and `CHOOSE_FILE` lines grow with the room and the folder (a
/// thousand people of 32-character names make a 33 KB `ALL` line), so the client allows far more
/// while still bounding what a hostile server can make it hold.
pub const MAX_SERVER_LINE: usize = 1 << 20;

/// The longest file name the client will create (common file system limit, in bytes).
pub const MAX_FILE_NAME_BYTES: usize = 255;

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
    /// files, or whose numbers are impossible. The error is escaped and safe to print.
    pub fn checked(o: UdpOffer) -> Result<Offer, String> {
        if !is_safe_file_name(&o.file) {
            return Err(format!(
                "refused an offer with an unsafe file name: {}",
                escape_truncated(&o.file, 80)
            ));
        }
        if o.part_size == 0 {
            return Err(format!("refused an offer with part size 0 for {}", o.file));
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
    Public {
        from: String,
        text: String,
    },
    Private {
        from: String,
        text: String,
    },
    /// The server's copy of a private message we sent.
    PrivateSent {
        to: String,
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
    #[error("too long: at most {MAX_LINE} bytes per line")]
    TooLong,
    #[error("{0}")]
    Line(#[from] LineError),
}

/// The client side of one chat connection.
#[derive(Debug)]
pub struct ChatClient {
    name: String,
    joined: bool,
    /// The server refused our name and waits for another (1.1).
    name_refused: bool,
    framer: LineFramer,
    events: VecDeque<ClientEvent>,
}

impl ChatClient {
    /// A client that will introduce itself as `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            joined: false,
            name_refused: false,
            framer: LineFramer::with_limit(MAX_SERVER_LINE),
            events: VecDeque::new(),
        }
    }

    /// The name this client asked for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Has the server announced our own join?
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// The first line to send: the name.
    pub fn hello(&self) -> Vec<u8> {
        format!("{}\n", self.name).into_bytes()
    }

    /// Tries another name after the server refused one (1.1: the connection stays open).
    pub fn retry_name(&mut self, name: impl Into<String>) -> Vec<u8> {
        self.name = name.into();
        self.hello()
    }

    /// Feeds bytes read from the server; drain events with [`ChatClient::poll_event`].
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
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
            self.events.push_back(event);
        }
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// What a person typed, as a wire line with its `\n`. Commands are checked here so the
    /// person learns of a typo at once; whatever passes is re-encoded in canonical form.
    ///
    /// After the server refused our name, what is typed is the next name to try (1.1 keeps the
    /// connection open for it), so a person whose name was taken just types another.
    pub fn line_for(&mut self, typed: &str) -> Result<Vec<u8>, InputError> {
        if self.name_refused && !self.joined {
            if typed.len() > MAX_LINE {
                return Err(InputError::TooLong);
            }
            self.name_refused = false;
            return Ok(self.retry_name(typed));
        }
        if typed.len() > MAX_LINE {
            return Err(InputError::TooLong);
        }
        let line = ClientLine::parse(typed)?;
        Ok(line.encode().into_bytes())
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
                if name == self.name {
                    self.joined = true;
                }
                ClientEvent::Joined(safe(name))
            }
            ServerLine::Left(name) => ClientEvent::Left(safe(name)),
            ServerLine::All(names) => ClientEvent::Presence(names.into_iter().map(safe).collect()),
            ServerLine::Public { from, text } => ClientEvent::Public {
                from: safe(from),
                text: safe(text),
            },
            ServerLine::Private { from, text } => ClientEvent::Private {
                from: safe(from),
                text: safe(text),
            },
            ServerLine::PrivateEcho { to, text } => ClientEvent::PrivateSent {
                to: safe(to),
                text: safe(text),
            },
            ServerLine::Error(reason) if !self.joined => {
                self.name_refused = true;
                ClientEvent::NameRefused(safe(reason))
            }
            ServerLine::Error(reason) => ClientEvent::Error(safe(reason)),
            ServerLine::ChooseFile(files) => {
                let (safe, unsafe_): (Vec<String>, Vec<String>) =
                    files.into_iter().partition(|f| is_safe_file_name(f));
                if let Some(first) = unsafe_.first() {
                    self.events.push_back(ClientEvent::Rejected(format!(
                        "the server listed {} unsafe file name(s), e.g. {}",
                        unsafe_.len(),
                        escape_truncated(first, 80)
                    )));
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
