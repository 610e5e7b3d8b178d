//! The chat lines of PROTOCOL.md 1.2 (client to server) and 1.3 (server to client) as typed values.
//!
//! Parsing works on one complete line as produced by [`crate::wire::line::LineFramer`] (terminator
//! already removed). Encoding produces the line *with* its `\n`, ready to write. Every parser
//! returns a [`LineError`] that says, in words a person understands, what was wrong: the server
//! sends that text back as `ERROR <reason>`, so the messages double as usage hints.
//!
//! Spec: `docs/PROTOCOL.md` [§1.2] (What a client sends), [§1.3] (What the server sends) and [§2.1]
//! (The offer: the `UDP` line).
//!
//! [§1.2]: ../../../docs/PROTOCOL.md#12-what-a-client-sends
//! [§1.3]: ../../../docs/PROTOCOL.md#13-what-the-server-sends
//! [§2.1]: ../../../docs/PROTOCOL.md#21-the-offer
//!
//! The name line (the first line a client sends) is not a [`ClientLine`]: what it means depends on
//! the connection's state, so the server validates it with [`crate::chat::names`] instead.

use std::ops::RangeInclusive;

use nom::{
    AsChar, IResult, Parser,
    bytes::complete::{take_while_m_n, take_while1},
    character::complete::{char, digit1},
    combinator::{all_consuming, map_res, opt},
    sequence::preceded,
};

/// The smallest and largest part size a server grants and a client accepts (PROTOCOL 2.1).
pub const PART_SIZE_RANGE: RangeInclusive<u16> = 512..=65000;

/// Errors found in a single line. The `Display` text is what follows `ERROR ` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// C0 (other than TAB), DEL or C1 inside a line: it could forge lines on a terminal.
    #[error("control character U+{code:04X} at byte {at} is not allowed in a line")]
    ControlChar {
        /// The offending character's Unicode scalar value, shown as `U+XXXX`.
        code: u32,
        /// Its byte offset in the line (terminator excluded), so the sender can find it.
        at: usize,
    },
    /// `download_file` without a usable file name or with a bad part size or early flight.
    #[error("usage: download_file <file> [<part_size> [<first_parts> <first_rate>]] ({problem})")]
    DownloadUsage {
        /// What was wrong: `no file name`, `too many words`, `part size is not a number`,
        /// `an early flight needs both its part count and its rate` or `the early flight's part
        /// count or rate is not a number`.
        problem: &'static str,
    },
    /// `~` without a name, or without text after the name.
    #[error("usage: ~<name> <text> ({problem})")]
    PrivateUsage {
        /// What was wrong: `no name` or `no text after the name`.
        problem: &'static str,
    },
    /// A server line whose first word names no known kind, or that does not fit its kind.
    #[error("unrecognised server line ({problem})")]
    UnknownServerLine {
        /// Which rule of PROTOCOL 1.3 the line broke, for the client's report.
        problem: &'static str,
    },
    /// A `UDP` offer line whose fields do not parse.
    #[error("malformed UDP offer ({problem})")]
    BadOffer {
        /// The expected field layout, or which field failed to parse.
        problem: &'static str,
    },
}

/// Is `c` one of the characters PROTOCOL 1.2 forbids inside a line (C0 but TAB, DEL, C1)?
pub fn is_forbidden_control(c: char) -> bool {
    (c.is_control() && c != '\t') || c == '\u{7f}'
}

/// Checks a whole line for forbidden control characters, reporting the first.
pub fn check_controls(line: &str) -> Result<(), LineError> {
    match line.char_indices().find(|&(_, c)| is_forbidden_control(c)) {
        Some((at, c)) => Err(LineError::ControlChar { code: u32::from(c), at }),
        None => Ok(()),
    }
}

/// A line a joined client sends (PROTOCOL 1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLine {
    /// `show`: who is here?
    Show,
    /// `get_list_file` or `get list file`.
    GetListFile,
    /// `download_file <file> [<part_size> [<first_parts> <first_rate>]]`. The part size is the
    /// client's wish, before clamping; numbers too large for a `u32` saturate (they are clamped
    /// later anyway).
    Download {
        /// The requested file name, one word; only a key into the catalogue, never a path (S1).
        file: String,
        /// The wished part size in payload bytes, `None` for the default (1200).
        part_size: Option<u32>,
        /// The early flight asked for (PROTOCOL 2.1, version 4), if any; only with a part size.
        early: Option<EarlyFlight>,
    },
    /// `~<name> <text>`.
    Private {
        /// The recipient's name as typed; the server looks it up ignoring case.
        to: String,
        /// The message: everything after the first space, never empty.
        text: String,
    },
    /// `{quit}`.
    Quit,
    /// An empty line: does nothing.
    Empty,
    /// Anything else: a public message.
    Public(String),
}

impl ClientLine {
    /// Parses one line (without terminator) sent after the name was accepted.
    pub fn parse(line: &str) -> Result<Self, LineError> {
        check_controls(line)?;
        Ok(match line {
            "" => ClientLine::Empty,
            "show" => ClientLine::Show,
            "get_list_file" | "get list file" => ClientLine::GetListFile,
            "{quit}" => ClientLine::Quit,
            _ if line == "download_file" || line.starts_with("download_file ") => {
                parse_download(&line["download_file".len()..])?
            }
            _ if line.starts_with('~') => parse_private(&line[1..])?,
            _ => ClientLine::Public(line.to_owned()),
        })
    }

    /// The line on the wire, with its `\n`.
    pub fn encode(&self) -> String {
        match self {
            ClientLine::Show => "show\n".to_owned(),
            ClientLine::GetListFile => "get_list_file\n".to_owned(),
            ClientLine::Download { file, part_size: None, .. } => {
                format!("download_file {file}\n")
            }
            ClientLine::Download { file, part_size: Some(p), early: None } => {
                format!("download_file {file} {p}\n")
            }
            ClientLine::Download { file, part_size: Some(p), early: Some(e) } => {
                format!("download_file {file} {p} {} {}\n", e.parts, e.rate)
            }
            ClientLine::Private { to, text } => format!("~{to} {text}\n"),
            ClientLine::Quit => "{quit}\n".to_owned(),
            ClientLine::Empty => "\n".to_owned(),
            ClientLine::Public(text) => format!("{text}\n"),
        }
    }
}

/// `rest` is what follows the `download_file` keyword: empty, or a space and the arguments.
fn parse_download(rest: &str) -> Result<ClientLine, LineError> {
    let Some(args) = rest.strip_prefix(' ') else {
        return Err(LineError::DownloadUsage { problem: "no file name" });
    };
    let mut words = args.split(' ');
    let file = match words.next() {
        Some(f) if !f.is_empty() => f,
        _ => {
            return Err(LineError::DownloadUsage { problem: "no file name" });
        }
    };
    let size_word = words.next();
    let early_words = (words.next(), words.next());
    if words.next().is_some() {
        return Err(LineError::DownloadUsage { problem: "too many words" });
    }
    let part_size = match size_word {
        None => None,
        Some(p) => Some(
            parse_decimal_saturating(p)
                .ok_or(LineError::DownloadUsage { problem: "part size is not a number" })?,
        ),
    };
    let early = match early_words {
        (None, _) => None,
        (Some(_), None) => {
            return Err(LineError::DownloadUsage {
                problem: "an early flight needs both its part count and its rate",
            });
        }
        (Some(parts), Some(rate)) => {
            let number = |w| {
                parse_decimal_saturating(w).ok_or(LineError::DownloadUsage {
                    problem: "the early flight's part count or rate is not a number",
                })
            };
            Some(EarlyFlight { parts: number(parts)?, rate: number(rate)? })
        }
    };
    Ok(ClientLine::Download { file: file.to_owned(), part_size, early })
}

/// What a client asks the server to send with the offer, before any REQUEST (PROTOCOL 2.1,
/// "The early flight"): the first `parts` parts, paced at `rate` bytes per second, to the UDP
/// port of the chat connection's own address. The server bounds both ([`EarlyFlight::bounded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyFlight {
    /// How many parts, from part 0.
    pub parts: u32,
    /// Bytes of payload per second to pace them at.
    pub rate: u32,
}

impl EarlyFlight {
    /// The most parts an early flight holds: four REQUESTs' worth, what a transfer may owe.
    pub const MAX_PARTS: u32 = 1024;
    /// The most payload an early flight holds, whatever the part size: 1 MiB.
    pub const MAX_BYTES: u64 = 1 << 20;
    /// The pacing rates a server accepts, bytes per second: 125 kB/s (1 Mbit/s) to 125 MB/s
    /// (1 Gbit/s).
    pub const RATES: std::ops::RangeInclusive<u32> = 125_000..=125_000_000;
    /// Parts per early request: the early flight is answered as requests of this many parts each,
    /// with `req_seq` 0, 1, 2, ... (the client's own REQUESTs go on from there).
    pub const PARTS_PER_REQUEST: u32 = 16;

    /// What the server sends for this ask, for a file of `n_parts` parts of `part_size` bytes:
    /// the part count bounded by the file, [`Self::MAX_PARTS`] and [`Self::MAX_BYTES`], the rate
    /// clamped to [`Self::RATES`]. `None` when nothing is left to send. Both ends compute it, so
    /// the client knows which parts are coming and which `req_seq` its own REQUESTs start at.
    pub fn bounded(self, n_parts: u32, part_size: u16) -> Option<EarlyFlight> {
        let by_bytes = u32::try_from(Self::MAX_BYTES / u64::from(part_size.max(1))).unwrap_or(1);
        let parts = self.parts.min(n_parts).min(Self::MAX_PARTS).min(by_bytes.max(1));
        let rate = self.rate.clamp(*Self::RATES.start(), *Self::RATES.end());
        (parts > 0).then_some(EarlyFlight { parts, rate })
    }

    /// How many early requests (`req_seq` 0 up to one less than this) answer the flight.
    pub fn requests(self) -> u32 {
        self.parts.div_ceil(Self::PARTS_PER_REQUEST)
    }
}

/// Digits only (no sign, no spaces), saturating at `u32::MAX`.
fn parse_decimal_saturating(s: &str) -> Option<u32> {
    let digits: IResult<&str, &str> = all_consuming(digit1).parse(s);
    let (_, digits) = digits.ok()?;
    Some(
        digits
            .bytes()
            .fold(0u32, |acc, d| acc.saturating_mul(10).saturating_add(u32::from(d - b'0'))),
    )
}

/// `rest` is what follows the `~`.
fn parse_private(rest: &str) -> Result<ClientLine, LineError> {
    let (to, text) = match rest.split_once(' ') {
        Some(pair) => pair,
        None if rest.is_empty() => return Err(LineError::PrivateUsage { problem: "no name" }),
        None => {
            return Err(LineError::PrivateUsage { problem: "no text after the name" });
        }
    };
    if to.is_empty() {
        return Err(LineError::PrivateUsage { problem: "no name" });
    }
    if text.is_empty() {
        return Err(LineError::PrivateUsage { problem: "no text after the name" });
    }
    Ok(ClientLine::Private { to: to.to_owned(), text: text.to_owned() })
}

/// A download offer, the fields of `UDP ...` (PROTOCOL 2.1). Parsed syntactically only: whether the
/// file name is safe to write is the client's decision ([`crate::chat::client`]). Its `Debug` form
/// hides the token and the key (issue 14: no log or error shows them).
#[derive(Clone, PartialEq, Eq)]
pub struct UdpOffer {
    /// The UDP port that serves this transfer (from the server's pool, 55000..=55015 by default);
    /// a client refuses 0 (S3).
    pub port: u16,
    /// How many offers the server made before this one, counting from 0.
    pub transfer_id: u64,
    /// The file name exactly as on offer; unchecked here (S3 is the client's job).
    pub file: String,
    /// The file's length in bytes.
    pub size: u64,
    /// Payload bytes of every part but the last; a server clamps it to 512..=65000, a client
    /// refuses 0 (S3).
    pub part_size: u16,
    /// BLAKE3 digest of the whole file; on the wire as 64 lowercase hex digits.
    pub blake3: [u8; 32],
    /// The transfer's secret, in every datagram header; 16 lowercase hex digits on the wire.
    pub token: u64,
    /// The transfer's AES-256-GCM key, 64 lowercase hex digits after the token: present only in
    /// an offer made over TLS, and then every datagram of the transfer is sealed (PROTOCOL 2.7).
    pub key: Option<[u8; 32]>,
}

impl std::fmt::Debug for UdpOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpOffer")
            .field("port", &self.port)
            .field("transfer_id", &self.transfer_id)
            .field("file", &self.file)
            .field("size", &self.size)
            .field("part_size", &self.part_size)
            .field("blake3", &hex32(&self.blake3))
            .field("token", &"<secret>")
            .field("key", &self.key.map(|_| "<secret>"))
            .finish()
    }
}

/// A line the server sends (PROTOCOL 1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// `ALL[ <name>]*`: the other connected clients in join order.
    All(Vec<String>),
    /// `CHOOSE_FILE[ <file>]*`: the files on offer, sorted by bytes.
    ChooseFile(Vec<String>),
    /// `UDP ...`: a download offer.
    Udp(UdpOffer),
    /// `<name> has joined the chat!`
    Joined(String),
    /// `<name> left the chat...`
    Left(String),
    /// `<name>: <text>`
    Public {
        /// The sender's name.
        from: String,
        /// The message as the sender typed it.
        text: String,
    },
    /// `<name>: (PRIVATE) <text>`
    Private {
        /// The sender's name.
        from: String,
        /// The message, without the `(PRIVATE) ` mark.
        text: String,
    },
    /// `from you to <name>: (PRIVATE) <text>`
    PrivateEcho {
        /// The recipient's name as its holder registered it (not as the sender typed it).
        to: String,
        /// The message, without the `(PRIVATE) ` mark.
        text: String,
    },
    /// `ERROR <reason>`
    Error(String),
}

const JOINED_SUFFIX: &str = " has joined the chat!";
const LEFT_SUFFIX: &str = " left the chat...";
const PRIVATE_MARK: &str = "(PRIVATE) ";

impl ServerLine {
    /// The line on the wire, with its `\n`.
    pub fn encode(&self) -> String {
        match self {
            ServerLine::All(names) => list_line("ALL", names.iter().map(String::as_str)),
            ServerLine::ChooseFile(files) => {
                list_line("CHOOSE_FILE", files.iter().map(String::as_str))
            }
            ServerLine::Udp(o) => format!(
                "UDP {} {} {} {} {} {} {:016x}{}\n",
                o.port,
                o.transfer_id,
                o.file,
                o.size,
                o.part_size,
                hex32(&o.blake3),
                o.token,
                o.key.map(|key| format!(" {}", hex32(&key))).unwrap_or_default()
            ),
            ServerLine::Joined(name) => format!("{name}{JOINED_SUFFIX}\n"),
            ServerLine::Left(name) => format!("{name}{LEFT_SUFFIX}\n"),
            ServerLine::Public { from, text } => format!("{from}: {text}\n"),
            ServerLine::Private { from, text } => format!("{from}: {PRIVATE_MARK}{text}\n"),
            ServerLine::PrivateEcho { to, text } => {
                format!("from you to {to}: {PRIVATE_MARK}{text}\n")
            }
            ServerLine::Error(reason) => format!("ERROR {reason}\n"),
        }
    }

    /// The `ALL` line of these names, as [`ServerLine::All`] encodes it, without owning them: the
    /// server writes a presence line straight from its room.
    pub fn encode_all<'n>(names: impl Iterator<Item = &'n str> + Clone) -> String {
        list_line("ALL", names)
    }

    /// Parses one line (without terminator) received from a server. The first word decides the
    /// kind (PROTOCOL 1.3). Note one ambiguity of the protocol itself: a public message whose text
    /// starts with `(PRIVATE) ` reads exactly like a private message; it is parsed as private.
    pub fn parse(line: &str) -> Result<Self, LineError> {
        check_controls(line)?;
        let (first, after) = match line.split_once(' ') {
            Some((f, a)) => (f, Some(a)),
            None => (line, None),
        };
        match first {
            "ALL" => Ok(ServerLine::All(parse_list(after)?)),
            "CHOOSE_FILE" => Ok(ServerLine::ChooseFile(parse_list(after)?)),
            "UDP" => parse_udp(after.unwrap_or("")).map(ServerLine::Udp),
            "ERROR" => Ok(ServerLine::Error(after.unwrap_or("").to_owned())),
            "from" => {
                let body = after.and_then(|a| a.strip_prefix("you to ")).ok_or(
                    LineError::UnknownServerLine { problem: "`from` not followed by `you to`" },
                )?;
                let (to, text) = split_message(body)?;
                let text = text.strip_prefix(PRIVATE_MARK).ok_or(LineError::UnknownServerLine {
                    problem: "private echo without (PRIVATE)",
                })?;
                Ok(ServerLine::PrivateEcho { to: to.to_owned(), text: text.to_owned() })
            }
            _ if first.ends_with(':') => {
                let (from, text) = split_message(line)?;
                Ok(match text.strip_prefix(PRIVATE_MARK) {
                    Some(text) => {
                        ServerLine::Private { from: from.to_owned(), text: text.to_owned() }
                    }
                    None => ServerLine::Public { from: from.to_owned(), text: text.to_owned() },
                })
            }
            _ if !first.is_empty() && after == Some(&JOINED_SUFFIX[1..]) => {
                Ok(ServerLine::Joined(first.to_owned()))
            }
            _ if !first.is_empty() && after == Some(&LEFT_SUFFIX[1..]) => {
                Ok(ServerLine::Left(first.to_owned()))
            }
            _ => Err(LineError::UnknownServerLine { problem: "first word names no line kind" }),
        }
    }
}

/// `<name>: <text>` split at the first `: ` (a name never contains `:` or a space).
fn split_message(s: &str) -> Result<(&str, &str), LineError> {
    let (name, text) = s
        .split_once(": ")
        .ok_or(LineError::UnknownServerLine { problem: "message without `: `" })?;
    if name.is_empty() || name.contains(' ') {
        return Err(LineError::UnknownServerLine { problem: "message sender is not a name" });
    }
    Ok((name, text))
}

fn list_line<'i>(keyword: &str, items: impl Iterator<Item = &'i str> + Clone) -> String {
    let len = keyword.len() + 1 + items.clone().map(|i| i.len() + 1).sum::<usize>();
    let mut s = String::with_capacity(len);
    s.push_str(keyword);
    for item in items {
        s.push(' ');
        s.push_str(item);
    }
    s.push('\n');
    s
}

/// The words after `ALL` / `CHOOSE_FILE`: single-space separated, none empty.
fn parse_list(after: Option<&str>) -> Result<Vec<String>, LineError> {
    let Some(after) = after else {
        return Ok(Vec::new());
    };
    let words: Vec<String> = after.split(' ').map(str::to_owned).collect();
    if words.iter().any(String::is_empty) {
        return Err(LineError::UnknownServerLine { problem: "empty word in a list" });
    }
    Ok(words)
}

/// Lowercase hex of a 32-byte digest, as `b3sum` prints it.
pub fn hex32(digest: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

fn is_lower_hex(c: char) -> bool {
    c.is_dec_digit() || ('a'..='f').contains(&c)
}

fn lower_hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// Exactly `n` lowercase hex digits.
fn lower_hex(n: usize) -> impl FnMut(&str) -> IResult<&str, &str> {
    move |i| take_while_m_n(n, n, is_lower_hex)(i)
}

fn number<T: std::str::FromStr>(i: &str) -> IResult<&str, T> {
    map_res(digit1, str::parse::<T>).parse(i)
}

fn sp_number<T: std::str::FromStr>(i: &str) -> IResult<&str, T> {
    preceded(char(' '), number::<T>).parse(i)
}

/// `<port> <id> <file> <size> <part_size> <blake3> <token> [<key>]` (after `UDP `).
fn parse_udp(s: &str) -> Result<UdpOffer, LineError> {
    let word = |i| take_while1(|c: char| c != ' ')(i);
    let mut offer = all_consuming((
        number::<u16>,
        sp_number::<u64>,
        preceded(char(' '), word),
        sp_number::<u64>,
        sp_number::<u16>,
        preceded(char(' '), lower_hex(64)),
        preceded(char(' '), lower_hex(16)),
        opt(preceded(char(' '), lower_hex(64))),
    ));
    let parsed: IResult<&str, _> = offer.parse(s);
    let (_, (port, transfer_id, file, size, part_size, digest, token, key)) =
        parsed.map_err(|_| LineError::BadOffer {
            problem: "expected UDP <port> <id> <file> <size> <part_size> <64 hex> <16 hex> [<64 hex>]",
        })?;
    let token = u64::from_str_radix(token, 16)
        .map_err(|_| LineError::BadOffer { problem: "token is not 16 hex digits" })?;
    let (blake3, key) = (bytes32(digest), key.map(bytes32));
    Ok(UdpOffer { port, transfer_id, file: file.to_owned(), size, part_size, blake3, token, key })
}

/// The 32 bytes written as 64 lowercase hex digits (already checked by [`lower_hex`]).
fn bytes32(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = lower_hex_value(pair[0]) << 4 | lower_hex_value(pair[1]);
    }
    out
}
