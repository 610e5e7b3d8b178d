//! The conversation as a UI shows it: timestamped lines of a few kinds, bounded in number, and
//! the rule that makes a line a mention of the person.
//!
//! Every text here came from the server already made safe to print (S4, see
//! [`crate::chat::display`]) or was written by this client; a UI shows it as text, never as
//! markup.

use std::collections::VecDeque;

/// Lines kept for scrolling back; older ones are dropped (bounded memory).
pub const SCROLLBACK: usize = 5000;

/// A wall-clock time of day, handed in by the UI (the core reads no clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct TimeOfDay {
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
    /// 0 to 59.
    pub second: u8,
}

impl TimeOfDay {
    /// The time of day `secs` seconds after a midnight (e.g. Unix time plus the UTC offset).
    pub fn from_seconds(secs: u64) -> Self {
        let in_day = secs % 86_400;
        Self {
            hour: (in_day / 3600) as u8,
            minute: (in_day / 60 % 60) as u8,
            second: (in_day % 60) as u8,
        }
    }
}

impl std::fmt::Display for TimeOfDay {
    /// `HH:MM`, as irssi shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// What a line is, so each UI can give each kind its own style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// A message to everyone, ours included.
    Public {
        /// Who said it.
        from: String,
        /// We said it.
        own: bool,
    },
    /// A private message, to us or from us: the conversation is with `with`.
    Private {
        /// The other person.
        with: String,
        /// They wrote to us (`false`: we wrote to them).
        incoming: bool,
    },
    /// Someone joined or left.
    Presence,
    /// This client speaking: help, lists, download reports, connection news.
    System,
    /// Something went wrong: the server's `ERROR`, a refused offer, a typing mistake.
    Error,
}

/// One line of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    /// Numbered from 1 in arrival order, never reused: a UI keeps "read up to" as a number.
    pub seq: u64,
    /// When it arrived.
    pub time: TimeOfDay,
    /// What it is.
    pub kind: LineKind,
    /// What it says (for messages, the message alone, without the sender).
    pub text: String,
    /// It mentions us, or is a private message to us: highlighted, and it rings the bell.
    pub mention: bool,
}

/// The lines, oldest first, at most [`SCROLLBACK`].
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    lines: VecDeque<ChatLine>,
    next_seq: u64,
}

impl Conversation {
    /// Adds a line; returns its number.
    pub fn push(&mut self, time: TimeOfDay, kind: LineKind, text: String, mention: bool) -> u64 {
        if self.lines.len() == SCROLLBACK {
            self.lines.pop_front();
        }
        self.next_seq += 1;
        self.lines.push_back(ChatLine { seq: self.next_seq, time, kind, text, mention });
        self.next_seq
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> &VecDeque<ChatLine> {
        &self.lines
    }

    /// The number of the newest line (0 when there is none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Forgets every line (`/clear`); numbers go on.
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

/// Does `text` mention `name` as a whole word, ignoring case? `bob` is mentioned in
/// `hi Bob!` and `@bob:` but not in `bobby`.
pub fn mentions(text: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    let name = name.to_lowercase();
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(&name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 13 (mentions)
    #[test]
    fn mentions_are_whole_words_in_any_case() {
        assert!(mentions("hi Bob!", "bob"));
        assert!(mentions("@bob: look", "bob"));
        assert!(mentions("BOB", "bob"));
        assert!(!mentions("bobby is here", "bob"));
        assert!(!mentions("ask jim-bob", "bob"));
        assert!(!mentions("anything", ""));
        assert!(mentions("bobby and bob", "bob"), "a later whole word counts");
    }

    // Issue 13 (scrollback, bounded memory)
    #[test]
    fn scrollback_is_bounded_and_numbered() {
        let mut c = Conversation::default();
        for i in 0..SCROLLBACK + 3 {
            c.push(TimeOfDay::default(), LineKind::System, i.to_string(), false);
        }
        assert_eq!(c.lines().len(), SCROLLBACK);
        assert_eq!(c.last_seq(), (SCROLLBACK + 3) as u64);
        assert_eq!(c.lines().front().map(|l| l.seq), Some(4));
    }

    // Issue 13 (timestamps)
    #[test]
    fn time_of_day_from_seconds() {
        let t = TimeOfDay::from_seconds(86_400 * 3 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!(t, TimeOfDay { hour: 13, minute: 5, second: 9 });
        assert_eq!(t.to_string(), "13:05");
    }
}
