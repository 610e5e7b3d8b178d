//! The room shared with other nodes through a broker (PROTOCOL.md section 8): names claimed in
//! the broker before a join completes, this node's joins, leaves and messages published as
//! stream entries, the other nodes' entries turned into lines for this node's people, the
//! heartbeat that tells a dead node from a live one, and what a split does.
//!
//! Every decision of the cluster is here; a broker thread (or the simulator's broker model) only
//! performs the [`ClusterCommand`]s and reports the [`ClusterEvent`]s.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use crate::chat::names::{NameError, fold};
use crate::cluster::{
    Claim, ClusterCommand, ClusterConfig, ClusterEvent, Entry, EntryKind, holder_name, name_key,
};
use crate::wire::chat::ServerLine;
use crate::wire::line::MAX_LINE;

use super::{ChatServer, ClusterNote, ConnId, DisconnectReason, Holder, LogEvent, ServerOutput};

/// What this node's people are told when the link to the broker fails (8.5).
const SPLIT: &str =
    "the room is split: people on other nodes cannot hear you until the link to the broker is back";

/// A node's standing in the cluster.
#[derive(Debug)]
pub(super) struct ClusterState {
    config: ClusterConfig,
    /// The link to the broker works.
    up: bool,
    /// When it last came up: a node's heartbeat is judged only a lease after that (8.4).
    up_since: Option<Instant>,
    /// When the claims and heartbeat are renewed next (only while up).
    tick_at: Option<Instant>,
    /// The last entry sequence number this node used.
    seq: u64,
    /// Names asked of the broker, by key, with the connection that waits for the answer.
    claims: HashMap<String, ConnId>,
    /// Names this node's people hold, by key: renewed every tick.
    owned: HashMap<String, (ConnId, String)>,
    /// The other nodes this node has heard of.
    nodes: HashMap<String, RemoteNode>,
}

/// Another node, as its entries told us.
#[derive(Debug)]
struct RemoteNode {
    epoch: u64,
    /// The last sequence number taken from it: anything not above is a duplicate (8.4).
    last_seq: u64,
    /// Its people, by name as registered, with the join sequence they were given here.
    members: HashMap<String, u64>,
}

impl ClusterState {
    pub(super) fn new(config: ClusterConfig) -> Self {
        Self {
            config,
            up: false,
            up_since: None,
            tick_at: None,
            seq: 0,
            claims: HashMap::new(),
            owned: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    pub(super) fn next_tick(&self) -> Option<Instant> {
        self.tick_at
    }
}

impl ChatServer {
    /// Asks the broker for `name` when this is a node whose link is up; `false` when the join
    /// is decided here (no cluster, or a split: 8.3).
    pub(super) fn claim_in_cluster(&mut self, conn: ConnId, name: &str) -> bool {
        let Some(cluster) = self.cluster.as_mut().filter(|c| c.up) else {
            return false;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.claiming = Some(name.into());
        let key = name_key(name);
        let claim = Claim {
            key: key.clone(),
            value: cluster.config.claim_value(name),
            lease: cluster.config.lease,
        };
        cluster.claims.insert(key, conn);
        self.push(ServerOutput::Cluster(ClusterCommand::Claim(vec![claim])));
        true
    }

    /// A connection that was waiting for a claim's answer is gone.
    pub(super) fn cluster_forget_claim(&mut self, name: &str) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.claims.remove(&name_key(name));
        }
    }

    /// One of this node's people joined: its name is renewed from now on, and the others learn.
    pub(super) fn cluster_joined(&mut self, conn: ConnId, name: &str) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        cluster.owned.insert(name_key(name), (conn, name.to_owned()));
        self.publish(EntryKind::Join(name.to_owned()));
    }

    /// One of this node's people left: its claim is released and the others learn.
    pub(super) fn cluster_left(&mut self, conn: ConnId, name: String) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let key = name_key(&name);
        if cluster.owned.get(&key).is_none_or(|&(holder, _)| holder != conn) {
            return;
        }
        cluster.owned.remove(&key);
        if cluster.up {
            let value = cluster.config.claim_value(&name);
            self.push(ServerOutput::Cluster(ClusterCommand::Release { key, value }));
        }
        self.publish(EntryKind::Leave(name));
    }

    /// A public message of this node's: the other nodes' people get it through the stream.
    pub(super) fn publish_say(&mut self, from: String, text: String) {
        if self.cluster.is_some() {
            self.publish(EntryKind::Say { from, text });
        }
    }

    /// A private message to a person on another node (joined here as `seq`).
    pub(super) fn tell_remote(
        &mut self,
        conn: ConnId,
        from: String,
        seq: u64,
        to: String,
        text: String,
    ) {
        let Some(cluster) = self.cluster.as_ref() else {
            return;
        };
        let node = cluster.nodes.iter().find(|(_, n)| n.members.get(&to) == Some(&seq));
        let Some((to_node, to_epoch)) = node.map(|(name, n)| (name.clone(), n.epoch)) else {
            return self.send_error(conn, &format!("no such user: {to}"));
        };
        if !cluster.up {
            let why = format!("the room is split: {to} is on another node, out of reach for now");
            return self.send_error(conn, &why);
        }
        let echo = ServerLine::PrivateEcho { to: to.clone(), text: text.clone() }.encode();
        let delivered = ServerLine::Private { from: from.clone(), text: text.clone() }.encode();
        if self.fits(conn, &echo) && self.fits(conn, &delivered) {
            self.send(conn, Bytes::from(echo));
            self.publish(EntryKind::Tell { from, to_node, to_epoch, to, text });
        }
    }

    /// Appends an entry of this node's to the stream, when the link is up. While it is down
    /// nothing is kept for later: what this node's people say then stays on this node (8.5).
    fn publish(&mut self, kind: EntryKind) {
        let Some(cluster) = self.cluster.as_mut().filter(|c| c.up) else {
            return;
        };
        cluster.seq += 1;
        let entry = Entry {
            node: cluster.config.node.clone(),
            epoch: cluster.config.epoch,
            seq: cluster.seq,
            kind,
        };
        self.push(ServerOutput::Cluster(ClusterCommand::Publish(entry.encode())));
    }

    /// Renews the heartbeat and the claims, and reads the other nodes' heartbeats (8.3, 8.4).
    pub(super) fn cluster_tick(&mut self, now: Instant) {
        let Some(cluster) = self.cluster.as_mut().filter(|c| c.up) else {
            return;
        };
        if cluster.tick_at.is_some_and(|at| at > now) {
            return;
        }
        let config = &cluster.config;
        cluster.tick_at = Some(now + config.tick());
        let heartbeat = ClusterCommand::Heartbeat {
            key: config.heartbeat_key(),
            value: config.epoch.to_string(),
            lease: config.lease,
        };
        let claims: Vec<Claim> = cluster
            .owned
            .iter()
            .map(|(key, (_, name))| Claim {
                key: key.clone(),
                value: config.claim_value(name),
                lease: config.lease,
            })
            .collect();
        let mut nodes: Vec<String> = cluster.nodes.keys().cloned().collect();
        nodes.sort_unstable();
        self.push(ServerOutput::Cluster(heartbeat));
        if !claims.is_empty() {
            self.push(ServerOutput::Cluster(ClusterCommand::Claim(claims)));
        }
        if !nodes.is_empty() {
            self.push(ServerOutput::Cluster(ClusterCommand::ReadHeartbeats(nodes)));
        }
    }

    /// What the broker's side said.
    pub(super) fn on_cluster_event(&mut self, now: Instant, event: &ClusterEvent) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        match event {
            ClusterEvent::Up => {
                cluster.up = true;
                cluster.up_since = Some(now);
                cluster.tick_at = None;
                self.push(ServerOutput::Log(LogEvent::Cluster(ClusterNote::Up)));
                self.cluster_tick(now);
                let roster = self.roster();
                self.publish(EntryKind::Hello(roster));
            }
            ClusterEvent::Down => {
                if !cluster.up && cluster.up_since.is_some() {
                    return;
                }
                cluster.up = false;
                cluster.up_since = Some(now);
                cluster.tick_at = None;
                let waiting: Vec<ConnId> = cluster.claims.drain().map(|(_, conn)| conn).collect();
                self.push(ServerOutput::Log(LogEvent::Cluster(ClusterNote::Down)));
                // A name asked of a broker that is gone is decided here, as in a split (8.3).
                for conn in waiting {
                    self.answer_claim(now, conn, None);
                }
                self.broadcast(ServerLine::Error(SPLIT.to_owned()).encode());
            }
            ClusterEvent::Entry(bytes) => self.on_entry(bytes),
            ClusterEvent::Claimed { key, holder } => self.on_claimed(now, key, holder.as_deref()),
            ClusterEvent::Heartbeats(nodes) => self.on_heartbeats(now, nodes),
        }
    }

    /// This node's people, in join order: the roster of a `hello`.
    fn roster(&self) -> Vec<String> {
        self.room
            .conns()
            .filter_map(|c| self.conns.get(&c).and_then(|c| c.joined.as_ref()))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// A claim's answer: a join completes or is refused; a renewal that finds the name held by
    /// another node closes the person who held it here (8.3).
    fn on_claimed(&mut self, now: Instant, key: &str, holder: Option<&str>) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if let Some(conn) = cluster.claims.remove(key) {
            return self.answer_claim(now, conn, holder);
        }
        let Some(value) = holder else {
            return;
        };
        let Some(&(conn, ref name)) = cluster.owned.get(key) else {
            return;
        };
        if cluster.config.claim_value(name) == value {
            return;
        }
        cluster.owned.remove(key);
        let why = "your name was claimed on another node while the room was split: join again";
        self.send_error(conn, why);
        self.leave(conn, DisconnectReason::NameLost, true);
    }

    /// The broker answered the claim `conn` waits for (`None`: the name is its own).
    fn answer_claim(&mut self, now: Instant, conn: ConnId, holder: Option<&str>) {
        let Some(name) = self.conns.get_mut(&conn).and_then(|c| c.claiming.take()) else {
            return;
        };
        match holder {
            None => self.complete_join(conn, &name),
            Some(value) => {
                self.names.release_if(&name, Holder::Local(conn));
                // A value no node writes (a hostile or damaged broker) names nobody: the
                // name is simply taken.
                let other = holder_name(value).unwrap_or(&name).to_owned();
                let refusal = if fold(&other) == fold(&name) {
                    NameError::Taken(other)
                } else {
                    NameError::Confusable(other)
                };
                self.send_error(conn, &refusal.to_string());
            }
        }
        // Lines that came while the claim was out are handled now, in order.
        self.read_lines(now, conn);
    }

    /// The heartbeats read: a node whose key is gone, or holds another epoch, has died or
    /// restarted, and its people leave (8.4). Judged only once the link has been up a lease,
    /// so that a broker that restarted empty is not taken for a cluster of dead nodes.
    fn on_heartbeats(&mut self, now: Instant, read: &[(String, Option<u64>)]) {
        let Some(cluster) = self.cluster.as_ref().filter(|c| c.up) else {
            return;
        };
        if cluster.up_since.is_none_or(|at| now < at + cluster.config.lease) {
            return;
        }
        let gone: Vec<String> = read
            .iter()
            .filter(|(node, epoch)| {
                cluster.nodes.get(node).is_some_and(|n| Some(n.epoch) != *epoch)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            self.node_gone(&node);
        }
    }

    /// Announces every person of `node` as left and forgets the node.
    fn node_gone(&mut self, node: &str) {
        let Some(gone) = self.cluster.as_mut().and_then(|c| c.nodes.remove(node)) else {
            return;
        };
        let mut people: Vec<(u64, String)> =
            gone.members.into_iter().map(|(n, s)| (s, n)).collect();
        people.sort_unstable();
        let count = people.len();
        for (seq, name) in people {
            self.remote_left(seq, name);
        }
        let note = ClusterNote::NodeGone { node: node.to_owned(), people: count };
        self.push(ServerOutput::Log(LogEvent::Cluster(note)));
    }

    /// One entry of the stream: checked, deduplicated by its sender's sequence, applied.
    fn on_entry(&mut self, bytes: &[u8]) {
        let entry = match Entry::decode(bytes) {
            Ok(entry) => entry,
            Err(e) => {
                let note = ClusterNote::BadEntry(e.to_string());
                return self.push(ServerOutput::Log(LogEvent::Cluster(note)));
            }
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if entry.node == cluster.config.node {
            return; // our own (this node's people had it at once), or an earlier run of ours
        }
        let known = cluster.nodes.get(&entry.node).map(|n| (n.epoch, n.last_seq));
        let new_sender = match known {
            Some((epoch, last)) if epoch == entry.epoch => {
                if entry.seq <= last {
                    return; // already taken: nothing is delivered twice (8.4)
                }
                false
            }
            Some(_) => {
                self.node_gone(&entry.node); // it restarted: the old run's people are gone
                true
            }
            None => true,
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let node = cluster.nodes.entry(entry.node.clone()).or_insert_with(|| RemoteNode {
            epoch: entry.epoch,
            last_seq: 0,
            members: HashMap::new(),
        });
        node.last_seq = entry.seq;
        match entry.kind {
            EntryKind::Join(name) => self.remote_joined(&entry.node, name),
            EntryKind::Leave(name) => {
                let seq = self.node_members(&entry.node).and_then(|m| m.remove(&name));
                if let Some(seq) = seq {
                    self.remote_left(seq, name);
                }
            }
            EntryKind::Say { from, text } => {
                let line = ServerLine::Public { from, text }.encode();
                if line.len() - 1 <= MAX_LINE {
                    self.broadcast(line);
                }
            }
            EntryKind::Tell { from, to_node, to_epoch, to, text } => {
                let me = self.cluster.as_ref().map(|c| (&c.config.node, c.config.epoch));
                if me != Some((&to_node, to_epoch)) {
                    return;
                }
                if let Some((Holder::Local(conn), _)) = self.recipient(&to) {
                    self.send(conn, Bytes::from(ServerLine::Private { from, text }.encode()));
                }
            }
            EntryKind::Hello(roster) => self.remote_roster(&entry.node, roster),
        }
        if new_sender {
            // A node we did not know is new to the room: it learns who is here from our roster.
            let roster = self.roster();
            self.publish(EntryKind::Hello(roster));
        }
    }

    fn node_members(&mut self, node: &str) -> Option<&mut HashMap<String, u64>> {
        self.cluster.as_mut()?.nodes.get_mut(node).map(|n| &mut n.members)
    }

    /// A node's whole roster: who is not on it left, who is new joined.
    fn remote_roster(&mut self, node: &str, roster: Vec<String>) {
        let Some(members) = self.node_members(node) else {
            return;
        };
        let mut gone: Vec<(u64, String)> = members
            .iter()
            .filter(|(name, _)| !roster.contains(name))
            .map(|(name, &seq)| (seq, name.clone()))
            .collect();
        gone.sort_unstable();
        for (_, name) in &gone {
            members.remove(name);
        }
        for (seq, name) in gone {
            self.remote_left(seq, name);
        }
        for name in roster {
            self.remote_joined(node, name);
        }
    }

    /// A person of another node joined (or is listed in its roster).
    fn remote_joined(&mut self, node: &str, name: String) {
        let seq = self.next_join_seq;
        let Some(members) = self.node_members(node) else {
            return;
        };
        if members.contains_key(&name) {
            return;
        }
        members.insert(name.clone(), seq);
        self.next_join_seq += 1;
        // Refused when one of ours holds the name after a split (the broker's claim settles it
        // at the next renewal, 8.3; meanwhile `~name` reaches ours), when it is confusable with
        // one of ours, or on a digest collision (`names.rs`); the person is listed all the same.
        let _ = self.names.claim(&name, Holder::Remote(seq));
        self.remote_room.insert(seq, name.clone());
        self.broadcast(ServerLine::Joined(name).encode());
        if self.members() <= self.config.presence_room_limit {
            self.owe_presence_to_room(None);
        }
    }

    /// A person of another node left (already removed from its node's members).
    fn remote_left(&mut self, seq: u64, name: String) {
        if self.remote_room.remove(&seq).is_none() {
            return;
        }
        self.names.release_if(&name, Holder::Remote(seq));
        self.broadcast(ServerLine::Left(name).encode());
        if self.members() <= self.config.presence_room_limit {
            self.owe_presence_to_room(None);
        }
    }
}

#[cfg(test)]
#[path = "../../../tests/unit/server_cluster.rs"]
mod tests;
