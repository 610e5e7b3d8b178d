//! Getting lines out: the count of each connection's queued bytes, the kick of slow readers,
//! presence lines (owed, then made when about to be written), and the helpers that
//! send one line to one client, to the whole room, or as a private message.
//!
//! Implements `docs/PROTOCOL.md` section 1.1 "Joining, names and presence" (the presence rules),
//! the lines of section 1.3 "What the server sends", the delivery of messages of section 1.2
//! "What a client sends", and the slow-reader bound (C5) of section 1.5 "Limits and protection".

use bytes::Bytes;

use crate::chat::display::escape_truncated;
use crate::wire::chat::ServerLine;
use crate::wire::line::MAX_LINE;

use super::{ChatServer, ConnId, DisconnectReason, ECHO_CHARS, Holder, ServerOutput};

impl ChatServer {
    /// The runtime wrote `len` bytes for `conn`.
    pub(super) fn on_sent(&mut self, conn: ConnId, len: usize) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queued = c.queued.saturating_sub(len);
        }
    }

    /// The presence line owed to `conn`, made now from the room as it is (1.1), and charged to
    /// its queue; `None` when none is owed, or while more than `presence_defer_bytes` are unsent
    /// to it (then it stays owed: take it again after the next write). A runtime calls this when
    /// it is about to write to `conn`, after [`ServerOutput::Presence`].
    pub fn take_presence(&mut self, conn: ConnId) -> Option<Bytes> {
        if !self.presence_ready(conn) {
            return None;
        }
        let line = self.presence_line(conn);
        let c = self.conns.get_mut(&conn)?;
        c.presence_owed = false;
        self.account(conn, line.len()).then_some(line)
    }

    /// Whether [`Self::take_presence`] would give a line now.
    pub fn presence_ready(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.presence_owed && c.queued <= self.config.presence_defer_bytes)
    }

    /// Closes the connections whose queue passed the bound while handling the last input (C5).
    pub(super) fn kick_slow_readers(&mut self) {
        while let Some(conn) = self.to_kick.pop() {
            let queued = self.queued_bytes(conn);
            if self.conns.contains_key(&conn) {
                self.leave(conn, DisconnectReason::SlowReader { queued }, true);
            }
        }
    }

    /// A private message (1.2): the sender's copy and the recipient's, or an error.
    pub(super) fn on_private(&mut self, conn: ConnId, to: &str, text: String) {
        let Some(from) = self.name_of(conn) else {
            return;
        };
        let recipient = match self.recipient(to) {
            Some((Holder::Local(recipient), to_name)) => Some((recipient, to_name)),
            Some((Holder::Remote(seq), to_name)) => {
                return self.tell_remote(conn, from, seq, to_name, text);
            }
            None => None,
        };
        let Some((recipient, to_name)) = recipient else {
            return self
                .send_error(conn, &format!("no such user: {}", escape_truncated(to, ECHO_CHARS)));
        };
        let echo = ServerLine::PrivateEcho { to: to_name, text: text.clone() }.encode();
        let delivered = ServerLine::Private { from, text }.encode();
        if self.fits(conn, &echo) && self.fits(conn, &delivered) {
            self.send(conn, Bytes::from(echo));
            self.send(recipient, Bytes::from(delivered));
        }
    }

    /// A reply line must itself fit the line limit, or the client would refuse it. The sender's
    /// name makes the reply longer than the request, so a request near the limit can overflow.
    pub(super) fn fits(&mut self, conn: ConnId, line: &str) -> bool {
        if line.len() - 1 <= MAX_LINE {
            return true;
        }
        self.send_error(conn, "message too long once your name is added: shorten it");
        false
    }

    /// `ALL` and the other joined names in join order, written straight into the line. In a
    /// cluster the other nodes' people are listed too, in the order this node learnt of them.
    pub(super) fn presence_line(&self, conn: ConnId) -> Bytes {
        let local = self.room.iter().filter(|&(_, c)| c != conn).filter_map(|(seq, c)| {
            self.conns.get(&c).and_then(|c| c.joined.as_ref()).map(|(n, _)| (seq, n.as_str()))
        });
        if self.remote_room.is_empty() {
            return Bytes::from(ServerLine::encode_all(local.map(|(_, n)| n)));
        }
        let remote = self.remote_room.iter().map(|(&seq, n)| (seq, n.as_str()));
        let mut all: Vec<(u64, &str)> = local.chain(remote).collect();
        all.sort_unstable_by_key(|&(seq, _)| seq);
        Bytes::from(ServerLine::encode_all(all.into_iter().map(|(_, n)| n)))
    }

    /// Everyone in the room: this node's people and, in a cluster, the others'.
    pub(super) fn members(&self) -> usize {
        self.room.len() + self.remote_room.len()
    }

    /// Marks a presence line owed to every member of the room but `except`; each is made when
    /// taken ([`Self::take_presence`]).
    pub(super) fn owe_presence_to_room(&mut self, except: Option<ConnId>) {
        let Self { room, conns, out, .. } = self;
        for conn in room.conns().filter(|&c| Some(c) != except) {
            if let Some(c) = conns.get_mut(&conn).filter(|c| !c.presence_owed) {
                c.presence_owed = true;
                out.push_back(ServerOutput::Presence { conn });
            }
        }
    }

    /// Sends `line` to every member of the room, encoded once and handed over once; a member
    /// whose queue would pass its bound is left out (and kicked, C5).
    pub(super) fn broadcast(&mut self, line: String) {
        let bytes = Bytes::from(line);
        let mut conns: Vec<ConnId> = self.room.conns().collect();
        conns.retain(|&conn| self.account(conn, bytes.len()));
        if !conns.is_empty() {
            self.push(ServerOutput::SendToMany { conns, bytes });
        }
    }

    /// Sends `ERROR <reason>` to `conn`.
    pub(super) fn send_error(&mut self, conn: ConnId, reason: &str) {
        self.send(conn, Bytes::from(ServerLine::Error(reason.to_owned()).encode()));
    }

    /// Sends `bytes` to `conn`, unless that passes its queue bound.
    pub(super) fn send(&mut self, conn: ConnId, bytes: Bytes) {
        if self.account(conn, bytes.len()) {
            self.push(ServerOutput::Send { conn, bytes });
        }
    }

    /// Adds `len` to the connection's queue; false (and a kick scheduled) when over the bound or
    /// the connection is unknown or already being kicked.
    fn account(&mut self, conn: ConnId, len: usize) -> bool {
        let max = self.config.max_queued_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.queued > max {
            return false; // already over: kick pending
        }
        c.queued += len;
        if c.queued > max {
            self.to_kick.push(conn);
            return false;
        }
        true
    }

    /// Queues an output.
    pub(super) fn push(&mut self, output: ServerOutput) {
        self.out.push_back(output);
    }
}
