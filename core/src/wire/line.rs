//! Line framing for the chat protocol (PROTOCOL.md 0, "Conventions" and 1.2).
//!
//! TCP delivers a byte stream in arbitrary chunks; the chat protocol is made of `\n`-terminated
//! UTF-8 lines. [`LineFramer`] turns the one into the other and nothing more: it does not know
//! what a line means. It exists as its own piece because the framing rules are where a hostile
//! peer attacks memory and CPU (C3, C4):
//!
//! - a line may hold at most [`MAX_LINE`] bytes, not counting its terminator (`\n` or `\r\n`);
//! - an over-long line is *discarded up to its `\n` without being stored*: the framer keeps at most
//!   `MAX_LINE + 1` bytes of a partial line, so one megabyte without a newline costs nothing more
//!   than four kilobytes, and the peer gets one [`Framed::TooLong`] for the whole line;
//! - UTF-8 validity is checked once per complete line, so a multi-byte character split across two
//!   TCP segments is not an error, and the result is the same however the bytes were chunked.
//!
//! Usage: [`LineFramer::push`] a chunk, then call [`LineFramer::next`] until it returns `None`
//! (or use [`LineFramer::feed`] which does both). `push` only appends; the scanning happens in
//! `next`, so the memory a framer holds is bounded by `MAX_LINE + 1` plus the last chunk pushed,
//! provided the caller drains between pushes.
//!
//! Spec: `docs/PROTOCOL.md` [§0] (Conventions: what a line is) and [§1.5] (Limits and protection:
//! the 4096-byte limit).
//!
//! [§0]: ../../../docs/PROTOCOL.md#0-conventions
//! [§1.5]: ../../../docs/PROTOCOL.md#15-limits-and-protection

/// The longest line the protocol accepts, in bytes, not counting the `\n` / `\r\n` terminator.
pub const MAX_LINE: usize = 4096;

/// One framing result: a complete line, or the reason a complete line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A complete line, terminator (and one `\r` before it) removed, valid UTF-8.
    /// It may still contain control characters: whether that is allowed is the codec's decision.
    Line(String),
    /// A line longer than [`MAX_LINE`] bytes; it was discarded up to and including its `\n`.
    TooLong,
    /// A line of acceptable length that is not valid UTF-8; it was discarded.
    InvalidUtf8,
}

/// Bytes in, complete lines out. See the module documentation for the rules.
#[derive(Debug)]
pub struct LineFramer {
    /// The longest line accepted: [`MAX_LINE`] for what a client sends, more for what a server
    /// sends (an `ALL` line of a large room is longer).
    limit: usize,
    /// Bytes pushed but not yet scanned by `next`.
    input: Vec<u8>,
    /// How much of `input` has been scanned already.
    pos: usize,
    /// The start of the current line, when it began in an earlier chunk. Never longer than
    /// `MAX_LINE + 1` (the `+ 1` leaves room for a `\r` that may turn out to precede `\n`).
    partial: Vec<u8>,
    /// True while skipping the rest of an over-long line.
    discarding: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::with_limit(MAX_LINE)
    }
}

impl LineFramer {
    /// A framer with nothing buffered, for lines of at most [`MAX_LINE`] bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer for lines of at most `limit` bytes; the memory bound is `limit + 1` likewise.
    pub fn with_limit(limit: usize) -> Self {
        Self { limit, input: Vec::new(), pos: 0, partial: Vec::new(), discarding: false }
    }

    /// Appends a chunk of received bytes. Drain with [`LineFramer::next`] before the next push.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Pushes `bytes` and hands every complete result to `on_line`, in order.
    pub fn feed(&mut self, bytes: &[u8], mut on_line: impl FnMut(Framed)) {
        self.push(bytes);
        while let Some(framed) = self.next() {
            on_line(framed);
        }
    }

    /// The bytes of an unfinished line held right now (for tests of the memory bound).
    pub fn buffered_partial(&self) -> usize {
        self.partial.len()
    }

    /// The next complete line (or refusal), or `None` when the pushed bytes hold no more `\n`.
    #[allow(clippy::should_implement_trait)] // not an Iterator: `None` means "push more", not "done"
    pub fn next(&mut self) -> Option<Framed> {
        let rest = &self.input[self.pos..];
        if rest.is_empty() {
            self.release_input();
            return None;
        }
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // No terminator yet: keep what fits, drop the rest of an over-long line.
            if !self.discarding {
                let room = (self.limit + 1).saturating_sub(self.partial.len());
                if rest.len() > room {
                    self.partial.clear();
                    self.discarding = true;
                } else {
                    self.partial.extend_from_slice(rest);
                }
            }
            self.pos = self.input.len();
            self.release_input();
            return None;
        };
        let segment = &rest[..nl];
        self.pos += nl + 1;
        if std::mem::take(&mut self.discarding) {
            return Some(Framed::TooLong);
        }
        let result = if self.partial.is_empty() {
            frame_complete(segment, self.limit)
        } else {
            // Bounded: refuse before copying when the joined line is already too long.
            if self.partial.len() + segment.len() > self.limit + 1 {
                self.partial.clear();
                return Some(Framed::TooLong);
            }
            self.partial.extend_from_slice(segment);
            let line = std::mem::take(&mut self.partial);
            frame_complete(&line, self.limit)
        };
        Some(result)
    }

    /// Frees the scanned buffer. Not kept for the next push: a read is one allocation, but an
    /// idle connection holds none. Kept, the few bytes of a person's last line were a heap block
    /// per idle person, allocated in the middle of whatever burst that line came in, where it
    /// pinned a page the burst had freed (issue 12: idle memory).
    fn release_input(&mut self) {
        self.input = Vec::new();
        self.pos = 0;
    }
}

/// Applies the per-line rules to the bytes before a `\n`.
fn frame_complete(bytes: &[u8], limit: usize) -> Framed {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.len() > limit {
        return Framed::TooLong;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Framed::Line(text.to_owned()),
        Err(_) => Framed::InvalidUtf8,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on purpose
mod tests {
    use super::*;

    fn frame_all(chunks: &[&[u8]]) -> Vec<Framed> {
        let mut framer = LineFramer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            framer.feed(chunk, |f| out.push(f));
        }
        out
    }

    fn line(s: &str) -> Framed {
        Framed::Line(s.to_owned())
    }

    #[test]
    fn whole_lines_and_crlf() {
        // PROTOCOL conventions: one \r before \n is stripped, only one.
        let out = frame_all(&[b"alice\nhi there\r\n\r\n\nx\r\r\n"]);
        assert_eq!(out, vec![line("alice"), line("hi there"), line(""), line(""), line("x\r")]);
    }

    #[test]
    fn unterminated_tail_is_held() {
        let mut framer = LineFramer::new();
        framer.push(b"abc");
        assert_eq!(framer.next(), None);
        assert_eq!(framer.buffered_partial(), 3);
        framer.push(b"def\n");
        assert_eq!(framer.next(), Some(line("abcdef")));
        assert_eq!(framer.next(), None);
    }

    #[test]
    fn exact_limit_is_accepted_one_more_is_not() {
        // C4, PROTOCOL 1.2: 4096 bytes is fine, with either terminator; 4097 is too long.
        let ok = "a".repeat(MAX_LINE);
        let mut bytes = format!("{ok}\n{ok}\r\n").into_bytes();
        bytes.extend_from_slice(format!("{ok}b\nnext\n").as_bytes());
        assert_eq!(frame_all(&[&bytes]), vec![line(&ok), line(&ok), Framed::TooLong, line("next")]);
    }

    #[test]
    fn over_long_line_split_across_chunks() {
        // C4: the limit holds across chunk boundaries, the tail after the newline survives.
        let big = vec![b'x'; MAX_LINE];
        let out = frame_all(&[&big, b"yz", b"more\nok\n"]);
        assert_eq!(out, vec![Framed::TooLong, line("ok")]);
    }

    #[test]
    fn a_drained_framer_holds_no_buffer() {
        let mut framer = LineFramer::new();
        framer.push(b"alice\nhel");
        assert_eq!(framer.next(), Some(line("alice")));
        assert_eq!(framer.next(), None);
        assert_eq!(framer.input.capacity(), 0, "the scanned input is freed");
        framer.push(b"lo\n");
        assert_eq!(framer.next(), Some(line("hello")));
        assert_eq!(framer.next(), None);
        assert_eq!((framer.input.capacity(), framer.partial.capacity()), (0, 0));
    }

    #[test]
    fn one_megabyte_without_newline_stays_bounded() {
        // C4: one TooLong per over-long line, memory bounded, no busy loop.
        let mut framer = LineFramer::new();
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..16 {
            framer.push(&chunk);
            assert_eq!(framer.next(), None);
            assert!(framer.buffered_partial() <= MAX_LINE + 1);
            assert_eq!(framer.input.capacity(), 0);
        }
        framer.push(b"\nhello\n");
        assert_eq!(framer.next(), Some(Framed::TooLong));
        assert_eq!(framer.next(), Some(line("hello")));
        assert_eq!(framer.next(), None);
    }

    #[test]
    fn invalid_utf8_is_per_line() {
        // C4: an invalid line is refused, the next one is fine.
        let out = frame_all(&[b"ok\n\xff\xfe\nfine\n"]);
        assert_eq!(out, vec![line("ok"), Framed::InvalidUtf8, line("fine")]);
    }

    #[test]
    fn utf8_split_inside_a_character() {
        // C3: "é" is C3 A9; split between the two bytes.
        let out = frame_all(&[b"caf\xc3", b"\xa9\n"]);
        assert_eq!(out, vec![line("café")]);
    }

    #[test]
    fn cr_then_lf_in_separate_chunks_at_the_limit() {
        // A line of exactly MAX_LINE bytes whose \r arrives alone: the +1 of room keeps it.
        let ok = "q".repeat(MAX_LINE);
        let out = frame_all(&[ok.as_bytes(), b"\r", b"\n"]);
        assert_eq!(out, vec![line(&ok)]);
    }
}
