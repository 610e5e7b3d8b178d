//! The conversations a window shows apart: the room, and one per person written to in private,
//! with what is unread in each and where the unread part begins. `natter gui` draws them as
//! tabs; the rules (which line belongs where, what counts as unread, what Enter does in a
//! private conversation) are here, tested without a screen.
//!
//! A line belongs to one conversation: a private line to the one with its person, every other
//! line to the room. The room's view shows every line (the private ones too, marked), so nothing
//! is ever only in a tab; a private view shows its own lines and the errors, which may be about
//! it. Unread counts only what others said: public messages and private ones to us.

use super::{ChatLine, ClientModel, Clock, Connection, Conversation, LineKind};

/// One conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Everyone.
    Room,
    /// With one person, named as first seen (names compare without case).
    Private(String),
}

impl Channel {
    /// The conversation a line belongs to.
    pub fn of(line: &ChatLine) -> Channel {
        match &line.kind {
            LineKind::Private { with, .. } => Channel::Private(with.clone()),
            _ => Channel::Room,
        }
    }

    /// Is this the same conversation (names without case)?
    pub fn is(&self, other: &Channel) -> bool {
        match (self, other) {
            (Channel::Room, Channel::Room) => true,
            (Channel::Private(a), Channel::Private(b)) => a.to_lowercase() == b.to_lowercase(),
            _ => false,
        }
    }

    /// Does this conversation's view show `line`?
    pub fn shows(&self, line: &ChatLine) -> bool {
        match self {
            Channel::Room => true,
            Channel::Private(_) => line.kind == LineKind::Error || self.is(&Channel::of(line)),
        }
    }
}

/// Does `line` count as unread until seen: something someone else said.
fn counts(line: &ChatLine) -> bool {
    matches!(
        line.kind,
        LineKind::Public { own: false, .. } | LineKind::Private { incoming: true, .. }
    )
}

/// The open conversations, the one shown, and how far each was read.
#[derive(Debug, Clone)]
pub struct Channels {
    /// Room first, then the private ones in the order they began.
    open: Vec<Channel>,
    /// The newest line read in each open conversation, by index in `open`.
    read: Vec<u64>,
    current: usize,
    /// The newest line already looked at for new private conversations.
    seen: u64,
    /// In the current conversation, lines after this one were unread when it was shown.
    marker: Option<u64>,
    /// The person was looking at the window at the last update.
    attending: bool,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            open: vec![Channel::Room],
            read: vec![0],
            current: 0,
            seen: 0,
            marker: None,
            attending: true,
        }
    }
}

impl Channels {
    /// Follows the conversation: a private line from or to someone new opens their
    /// conversation, and what the current one shows is read while the person is `attending`
    /// (the window has the focus). Coming back to the window marks where the unread lines begin.
    pub fn update(&mut self, conversation: &Conversation, attending: bool) {
        let seen = self.seen;
        for line in conversation.lines().iter().filter(|l| l.seq > seen) {
            if let channel @ Channel::Private(_) = Channel::of(line) {
                self.index_or_open(&channel);
            }
        }
        self.seen = conversation.last_seq();
        if attending && !self.attending {
            self.set_marker(conversation);
        }
        self.attending = attending;
        if attending {
            self.read[self.current] = conversation.last_seq();
        }
    }

    /// The open conversations: the room first.
    pub fn list(&self) -> &[Channel] {
        &self.open
    }

    /// The one shown.
    pub fn current(&self) -> &Channel {
        &self.open[self.current]
    }

    /// Shows `channel` (opening it if needed); its unread lines are marked, then read.
    pub fn select(&mut self, channel: &Channel, conversation: &Conversation) {
        self.current = self.index_or_open(channel);
        self.set_marker(conversation);
        self.read[self.current] = conversation.last_seq();
    }

    /// Closes a private conversation (its lines stay in the room's view); the room is shown if
    /// it was the one shown. The room itself does not close.
    pub fn close(&mut self, channel: &Channel) {
        let Some(at) = self.open.iter().position(|c| c.is(channel)) else { return };
        if at == 0 {
            return;
        }
        self.open.remove(at);
        self.read.remove(at);
        if self.current == at {
            self.current = 0;
            self.marker = None;
        } else if self.current > at {
            self.current -= 1;
        }
    }

    /// Lines that others said in `channel` and the person has not seen.
    pub fn unread(&self, channel: &Channel, conversation: &Conversation) -> usize {
        self.unread_lines(channel, conversation).count()
    }

    /// Does an unread line of `channel` mention the person (or is it a private message)?
    pub fn unread_mention(&self, channel: &Channel, conversation: &Conversation) -> bool {
        self.unread_lines(channel, conversation).any(|l| l.mention)
    }

    /// In the view shown: the line after which the unread ones began when it was shown, if
    /// any were.
    pub fn marker(&self) -> Option<u64> {
        self.marker
    }

    fn unread_lines<'a>(
        &self,
        channel: &Channel,
        conversation: &'a Conversation,
    ) -> impl Iterator<Item = &'a ChatLine> {
        let read = self.open.iter().position(|c| c.is(channel)).map_or(0, |at| self.read[at]);
        let channel = channel.clone();
        conversation
            .lines()
            .iter()
            .filter(move |l| l.seq > read && counts(l) && channel.is(&Channel::of(l)))
    }

    fn set_marker(&mut self, conversation: &Conversation) {
        let read = self.read[self.current];
        let current = self.current().clone();
        let unread = self.unread(&current, conversation) > 0;
        self.marker = unread.then_some(read);
    }

    fn index_or_open(&mut self, channel: &Channel) -> usize {
        match self.open.iter().position(|c| c.is(channel)) {
            Some(at) => at,
            None => {
                self.open.push(channel.clone());
                self.read.push(0);
                self.open.len() - 1
            }
        }
    }
}

impl ClientModel {
    /// Enter in a conversation's view: in a private one, a line that is not a command (`/...`,
    /// `~name ...`) goes to its person; otherwise as [`ClientModel::submit_input`].
    pub fn submit_input_in(&mut self, clock: Clock, channel: &Channel) {
        let to = match channel {
            Channel::Private(to) => to,
            Channel::Room => return self.submit_input(clock),
        };
        let refused = matches!(self.connection, Connection::NameRefused { .. });
        let trimmed = self.input.trim_start();
        if refused || trimmed.is_empty() || trimmed.starts_with(['/', '~']) {
            return self.submit_input(clock);
        }
        let input = std::mem::take(&mut self.input);
        self.history.push(&input);
        for line in input.lines().filter(|l| !l.trim().is_empty()) {
            self.message(clock, to, line);
        }
    }

    /// A line from the UI itself about something that failed (a folder that would not open).
    pub fn ui_error(&mut self, clock: Clock, text: String) {
        self.error(clock, text);
    }
}

#[cfg(test)]
#[path = "../../tests/unit/client_model_channels.rs"]
mod tests;
