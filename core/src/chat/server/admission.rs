//! Coming and going: opening a connection under the global and per-IP caps, taking its name
//! within the name timeout, and leaving (by `{quit}`, by the peer closing, or by being closed).
//!
//! Implements `docs/PROTOCOL.md` section 1.1 "Joining, names and presence" (the first line is a
//! name; the join and leave lines), the `{quit}` of section 1.2 "What a client sends", and the
//! connection caps (C8) and name timeout (C7) of section 1.5 "Limits and protection".

use core::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::chat::flood::InputBudget;
use crate::chat::names::{HeldName, fold};
use crate::wire::chat::ServerLine;
use crate::wire::line::LineFramer;

use super::{
    ChatServer, Conn, ConnId, DisconnectReason, Holder, LogEvent, RefuseReason, ServerOutput,
};

impl ChatServer {
    /// A new connection: refused with an `ERROR` past a cap (C8), else given its name deadline.
    pub(super) fn on_opened(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) {
        if self.conns.contains_key(&conn) {
            return; // the runtime reused a live id: ignore rather than corrupt state
        }
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        let refuse = if self.conns.len() >= self.config.max_connections {
            Some(RefuseReason::TooManyConnections { max: self.config.max_connections })
        } else if from_ip >= self.config.max_per_ip {
            Some(RefuseReason::TooManyFromIp { max: self.config.max_per_ip })
        } else {
            None
        };
        if let Some(reason) = refuse {
            let text = match reason {
                RefuseReason::TooManyConnections { .. } => {
                    "server full: too many connections, try later"
                }
                RefuseReason::TooManyFromIp { .. } => "too many connections from your address",
            };
            let line = ServerLine::Error(text.to_owned()).encode();
            self.push(ServerOutput::Log(LogEvent::Refused { conn, peer, reason }));
            self.push(ServerOutput::Send { conn, bytes: Bytes::from(line) });
            self.push(ServerOutput::Close { conn });
            return;
        }
        let deadline = now + self.config.name_timeout;
        self.conns.insert(
            conn,
            Box::new(Conn {
                peer,
                framer: LineFramer::new(),
                joined: None,
                deadline: Some(deadline),
                queued: 0,
                transfers: 0,
                presence_owed: false,
                secure: false,
                budget: InputBudget::new(now, self.config.max_input_rate, self.config.input_burst),
                admitted: false,
                claiming: None,
            }),
        );
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.name_deadlines.insert((deadline, conn));
        self.push(ServerOutput::Log(LogEvent::Connected { conn, peer }));
    }

    /// The first line: a name (1.1). In a cluster whose broker is reachable the name is held
    /// here and claimed in the broker; the join waits for the answer (8.3).
    pub(super) fn on_name(&mut self, conn: ConnId, name: &str) {
        if let Err(clash) = self.names.claim(name, Holder::Local(conn)) {
            let e = clash.into_error(|holder| self.holder_name(holder).unwrap_or_default());
            self.send_error(conn, &e.to_string());
            return;
        }
        if self.claim_in_cluster(conn, name) {
            return;
        }
        self.complete_join(conn, name);
    }

    /// The name is this connection's: it joins the room (1.1).
    pub(super) fn complete_join(&mut self, conn: ConnId, name: &str) {
        let seq = self.next_join_seq;
        self.next_join_seq += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.joined = Some((HeldName::new(name), seq));
        if let Some(deadline) = c.deadline.take() {
            self.name_deadlines.remove(&(deadline, conn));
        }
        self.room.join(seq, conn);
        self.push(ServerOutput::Log(LogEvent::Joined { conn, name: name.to_owned() }));
        self.broadcast(ServerLine::Joined(name.to_owned()).encode());
        if self.members() <= self.config.presence_room_limit {
            self.owe_presence_to_room(Some(conn));
        }
        self.cluster_joined(conn, name);
        // The newcomer's own line is made now, so that it comes before anything said after
        // the join: the room as the newcomer finds it.
        let line = self.presence_line(conn);
        self.send(conn, line);
    }

    /// Closes the connections whose name deadline is at or before `now` (C7).
    pub(super) fn expire_name_deadlines(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.name_deadlines.first() {
            if at > now {
                break;
            }
            self.name_deadlines.remove(&(at, conn));
            let secs = self.config.name_timeout.as_secs();
            self.send_error(conn, &format!("no name given within {secs} seconds"));
            self.leave(conn, DisconnectReason::NameTimeout, true);
        }
    }

    /// Removes a connection; announces the leave if it had joined. `close`: the server ends it.
    pub(super) fn leave(&mut self, conn: ConnId, reason: DisconnectReason, close: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if close {
            self.push(ServerOutput::Close { conn });
        }
        if let Some(count) = self.per_ip.get_mut(&c.peer.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&c.peer.ip());
            }
        }
        if let Some(deadline) = c.deadline {
            self.name_deadlines.remove(&(deadline, conn));
        }
        self.paused.retain(|&(_, paused)| paused != conn);
        self.held_downloads.remove(&conn);
        if let Some(name) = &c.claiming {
            self.names.release_if(name, Holder::Local(conn));
            self.cluster_forget_claim(name);
        }
        // A client's transfers end with it: one that leaves (or reconnects) must not keep ports
        // that others could use until the idle timeout (issue 10).
        for port in self.ports.held_by(conn) {
            self.push(ServerOutput::EndTransfer { port });
        }
        let name = c.joined.as_ref().map(|(n, _)| n.to_string());
        self.push(ServerOutput::Log(LogEvent::Disconnected {
            conn,
            peer: c.peer,
            name: name.clone(),
            reason,
        }));
        if let Some((name, seq)) = c.joined {
            self.names.release_if(name.as_str(), Holder::Local(conn));
            self.room.leave(seq);
            self.broadcast(ServerLine::Left(name.to_string()).encode());
            if self.members() <= self.config.presence_room_limit {
                self.owe_presence_to_room(None);
            }
            self.cluster_left(conn, name.to_string());
        }
    }

    /// The name `holder` has, as registered: a local person's, joined or being claimed in the
    /// cluster, or a person's of another node.
    pub(super) fn holder_name(&self, holder: Holder) -> Option<String> {
        match holder {
            Holder::Local(conn) => {
                let c = self.conns.get(&conn)?;
                let joined = c.joined.as_ref().map(|(n, _)| n.to_string());
                joined.or_else(|| c.claiming.as_deref().map(str::to_owned))
            }
            Holder::Remote(seq) => self.remote_room.get(&seq).cloned(),
        }
    }

    /// Who a private line to `to` goes to, and their name as registered: a joined local person
    /// or a person of another node whose name equals `to` ignoring case. The names are compared,
    /// not only their digests (`names.rs`), so a collision never delivers to someone else.
    pub(super) fn recipient(&self, to: &str) -> Option<(Holder, String)> {
        let folded = fold(to);
        let holder = self.names.lookup_folded(&folded)?;
        let name = match holder {
            Holder::Local(conn) => self.name_of(conn)?,
            Holder::Remote(_) => self.holder_name(holder)?,
        };
        (fold(&name) == folded).then_some((holder, name))
    }

    /// The name `conn` joined with, if it has joined.
    pub(super) fn name_of(&self, conn: ConnId) -> Option<String> {
        self.conns.get(&conn).and_then(|c| c.joined.as_ref()).map(|(n, _)| n.to_string())
    }
}

#[cfg(test)]
#[path = "../../../tests/unit/server_names.rs"]
mod tests;
