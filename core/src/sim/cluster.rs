//! A cluster of server drivers around a broker model, in simulated time (PROTOCOL.md section 8).
//!
//! [`ClusterSim`] runs several real [`ServerDriver`]s, each a node configured with a
//! [`ClusterConfig`], and performs their [`ClusterCommand`]s against [`BrokerModel`]: keys with
//! an expiry (the name claims and the heartbeats, with the claim script's semantics) and one
//! append-only stream. Each node's link to the broker has a one-way delay and can be cut and
//! restored; the broker itself can stop and come back empty, as a Redis without persistence does.
//! People are raw connections whose every received line is recorded with its simulated time.
//!
//! What the model keeps of the real link (`runtime-common/src/cluster.rs`): commands reach the
//! broker in the order the node gave them and are answered in that order; a command given while
//! the link is down is dropped; the link reports [`ClusterEvent::Down`] when it fails and
//! [`ClusterEvent::Up`] when it is back; each node reads the stream from where it stopped, each
//! entry once. Nothing reads a clock; every random draw comes from the seed.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::chat::catalogue::Catalogue;
use crate::chat::server::{ConnId, ServerConfig};
use crate::cluster::{ClusterCommand, ClusterConfig, ClusterEvent, heartbeat_key};
use crate::driver::server::{Input, Output, ServerDriver};
use crate::sim::rng::SplitMix64;

/// The broker's state: keys with their expiry, and the room's stream.
#[derive(Debug, Default)]
pub struct BrokerModel {
    keys: HashMap<String, (String, Duration)>,
    stream: Vec<Bytes>,
    /// Whether the broker runs.
    pub up: bool,
}

impl BrokerModel {
    fn get(&self, key: &str, now: Duration) -> Option<&str> {
        self.keys.get(key).filter(|(_, until)| *until > now).map(|(v, _)| v.as_str())
    }

    /// Performs one command at `now`; the answer the node waits for, if any.
    fn perform(&mut self, now: Duration, command: &ClusterCommand) -> Vec<ClusterEvent> {
        match command {
            ClusterCommand::Publish(entry) => {
                self.stream.push(entry.clone());
                Vec::new()
            }
            ClusterCommand::Claim(claims) => claims
                .iter()
                .map(|claim| {
                    let holder = match self.get(&claim.key, now) {
                        Some(v) if v != claim.value => Some(v.to_owned()),
                        _ => {
                            let until = now + claim.lease;
                            self.keys.insert(claim.key.clone(), (claim.value.clone(), until));
                            None
                        }
                    };
                    ClusterEvent::Claimed { key: claim.key.clone(), holder }
                })
                .collect(),
            ClusterCommand::Release { key, value } => {
                if self.get(key, now) == Some(value) {
                    self.keys.remove(key);
                }
                Vec::new()
            }
            ClusterCommand::Heartbeat { key, value, lease } => {
                self.keys.insert(key.clone(), (value.clone(), now + *lease));
                Vec::new()
            }
            ClusterCommand::ReadHeartbeats(nodes) => {
                let read = nodes
                    .iter()
                    .map(|node| {
                        let value = self.get(&heartbeat_key(node), now);
                        (node.clone(), value.and_then(|v| v.parse().ok()))
                    })
                    .collect();
                vec![ClusterEvent::Heartbeats(read)]
            }
        }
    }
}

/// One node: its driver, its link, where it is in the stream, its people.
#[derive(Debug)]
struct SimNode {
    driver: ServerDriver,
    /// The node runs (a killed node does nothing more, and says nothing).
    alive: bool,
    /// Its link to the broker works (and the broker runs).
    linked: bool,
    /// The next stream entry it reads.
    read_at: usize,
    /// Stream entries on their way to it (up to this index).
    sent_to: usize,
    /// Counts the link's failures: what was on its way over an earlier link is lost.
    link: u64,
    /// One-way delay to and from the broker.
    delay: Duration,
}

/// A line a person read, with when and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Simulated time since the start.
    pub at: Duration,
    /// The line, without its `\n`.
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A command reaches the broker.
    Command { node: usize, link: u64, command: usize },
    /// An answer or an entry reaches a node.
    Answer { node: usize, link: u64, event: usize },
}

/// Several nodes and a broker, in simulated time. See the module documentation.
#[derive(Debug)]
pub struct ClusterSim {
    base: Instant,
    now: Duration,
    /// The broker.
    pub broker: BrokerModel,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    order: u64,
    commands: Vec<Option<ClusterCommand>>,
    events: Vec<Option<ClusterEvent>>,
    /// Every line each person read: by (node, conn).
    pub heard: BTreeMap<(usize, ConnId), Vec<Heard>>,
    next_conn: ConnId,
}

impl ClusterSim {
    /// `nodes` nodes named `n0`, `n1`... with `lease`, all linked to a running broker; their
    /// epochs and the jitter come from `seed`.
    pub fn new(base: Instant, seed: u64, nodes: usize, lease: Duration) -> Self {
        let mut rng = SplitMix64::new(seed);
        let nodes = (0..nodes)
            .map(|i| {
                let mut cluster = ClusterConfig::new(&format!("n{i}"), rng.next_u64());
                cluster.lease = lease;
                let config = ServerConfig { cluster: Some(cluster), ..ServerConfig::default() };
                SimNode {
                    driver: ServerDriver::new(config, Catalogue::default(), rng.next_u64()),
                    alive: true,
                    linked: false,
                    read_at: 0,
                    sent_to: 0,
                    link: 0,
                    // 100 to 500 µs each way, drawn per node: the nodes hear the broker at
                    // different times, as on a real network.
                    delay: Duration::from_micros(100 + rng.below(400)),
                }
            })
            .collect();
        let mut sim = Self {
            base,
            now: Duration::ZERO,
            broker: BrokerModel { up: true, ..BrokerModel::default() },
            nodes,
            queue: BinaryHeap::new(),
            order: 0,
            commands: Vec::new(),
            events: Vec::new(),
            heard: BTreeMap::new(),
            next_conn: 0,
        };
        for node in 0..sim.nodes.len() {
            sim.link_up(node);
        }
        sim
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Each node's delay is fixed and ties go in the order scheduled, so each direction of a
    /// link is FIFO, like the TCP connection it stands for.
    fn schedule(&mut self, after: Duration, event: Event) {
        self.order += 1;
        self.queue.push(Reverse((self.now + after, self.order, event)));
    }

    /// Node `node`'s link to the broker comes up (or the broker came back).
    pub fn link_up(&mut self, node: usize) {
        if !self.broker.up || !self.nodes[node].alive || self.nodes[node].linked {
            return;
        }
        self.nodes[node].linked = true;
        self.answer(node, ClusterEvent::Up);
        self.pump(node);
    }

    /// Node `node`'s link fails: it learns at once; what was on its way is lost.
    pub fn link_down(&mut self, node: usize) {
        if !self.nodes[node].linked {
            return;
        }
        self.nodes[node].linked = false;
        self.nodes[node].link += 1;
        self.nodes[node].sent_to = self.nodes[node].read_at;
        self.feed(node, &ClusterEvent::Down);
    }

    /// The broker stops: every link fails, and it comes back (with [`Self::broker_start`]) empty.
    pub fn broker_stop(&mut self) {
        self.broker.up = false;
        for node in 0..self.nodes.len() {
            self.link_down(node);
        }
    }

    /// The broker starts again, empty (no persistence); every live node reconnects.
    pub fn broker_start(&mut self) {
        let stream_len = self.broker.stream.len();
        self.broker = BrokerModel { up: true, ..BrokerModel::default() };
        // A fresh stream: the nodes read it from its start (its ids are newer than any before).
        for node in &mut self.nodes {
            node.read_at = node.read_at.saturating_sub(stream_len);
            node.sent_to = node.read_at;
        }
        for node in 0..self.nodes.len() {
            self.link_up(node);
        }
    }

    /// Kills node `node` as SIGKILL would: no goodbye, no more commands.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].alive = false;
        self.nodes[node].linked = false;
    }

    /// Sends the stream entries `node` has not been sent yet, in order.
    fn pump(&mut self, node: usize) {
        while self.nodes[node].linked && self.nodes[node].sent_to < self.broker.stream.len() {
            let entry = self.broker.stream[self.nodes[node].sent_to].clone();
            self.nodes[node].sent_to += 1;
            self.answer(node, ClusterEvent::Entry(entry));
        }
    }

    fn answer(&mut self, node: usize, event: ClusterEvent) {
        self.events.push(Some(event));
        let event = self.events.len() - 1;
        let (delay, link) = (self.nodes[node].delay, self.nodes[node].link);
        self.schedule(delay, Event::Answer { node, link, event });
    }

    /// A person connects to `node` and sends `name`; returns its connection.
    pub fn join(&mut self, node: usize, name: &str) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000 + conn as u16);
        let now = self.instant();
        self.nodes[node].driver.handle_input(now, Input::Accepted { conn, peer });
        self.heard.insert((node, conn), Vec::new());
        self.say(node, conn, name);
        conn
    }

    /// Person `conn` on `node` sends `line`.
    pub fn say(&mut self, node: usize, conn: ConnId, line: &str) {
        let now = self.instant();
        let bytes = format!("{line}\n");
        self.nodes[node]
            .driver
            .handle_input(now, Input::Received { conn, bytes: bytes.as_bytes() });
        self.perform(node);
    }

    fn feed(&mut self, node: usize, event: &ClusterEvent) {
        if !self.nodes[node].alive {
            return;
        }
        let now = self.instant();
        self.nodes[node].driver.handle_input(now, Input::Cluster(event));
        self.perform(node);
    }

    /// Performs node `node`'s outputs: lines to its people, commands to the broker.
    fn perform(&mut self, node: usize) {
        let now = self.instant();
        while let Some(output) = self.nodes[node].driver.poll_output() {
            match output {
                Output::Write { conn } => {
                    let driver = &mut self.nodes[node].driver;
                    let mut bytes = Vec::new();
                    while driver.has_unsent(conn) {
                        let before = bytes.len();
                        bytes.extend(driver.unsent(conn).flatten().copied());
                        let len = bytes.len() - before;
                        driver.handle_input(now, Input::Written { conn, len });
                    }
                    let heard = self.heard.entry((node, conn)).or_default();
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        heard.push(Heard { at: self.now, line: line.to_owned() });
                    }
                }
                // A command given while the link is down is lost (8.5).
                Output::Cluster(command) if self.nodes[node].linked => {
                    self.commands.push(Some(command));
                    let command = self.commands.len() - 1;
                    let (delay, link) = (self.nodes[node].delay, self.nodes[node].link);
                    self.schedule(delay, Event::Command { node, link, command });
                }
                _ => {}
            }
        }
    }

    /// Runs until simulated time `until` (since the start).
    pub fn run_until(&mut self, until: Duration) {
        loop {
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.alive)
                .filter_map(|(i, n)| n.driver.poll_timeout().map(|at| (at, i)))
                .min();
            let next_event = self.queue.peek().map(|Reverse((at, _, _))| self.base + *at);
            match (timer, next_event) {
                (Some((at, node)), next)
                    if next.is_none_or(|n| at <= n) && at <= self.base + until =>
                {
                    self.now = self.now.max(at.saturating_duration_since(self.base));
                    let now = at.max(self.instant());
                    self.nodes[node].driver.handle_timeout(now);
                    self.perform(node);
                }
                (_, Some(at)) if at <= self.base + until => {
                    let Some(Reverse((at_offset, _, event))) = self.queue.pop() else { break };
                    self.now = self.now.max(at_offset);
                    self.happen(event);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn happen(&mut self, event: Event) {
        match event {
            Event::Command { node, link, command } => {
                let Some(command) = self.commands[command].take() else { return };
                if !self.nodes[node].linked || self.nodes[node].link != link || !self.broker.up {
                    return; // lost with the link
                }
                let answers = self.broker.perform(self.now, &command);
                for answer in answers {
                    self.answer(node, answer);
                }
                if matches!(command, ClusterCommand::Publish(_)) {
                    for other in 0..self.nodes.len() {
                        self.pump(other);
                    }
                }
            }
            Event::Answer { node, link, event } => {
                let Some(event) = self.events[event].take() else { return };
                if !self.nodes[node].linked || self.nodes[node].link != link {
                    return; // lost with the link it was sent over
                }
                if matches!(event, ClusterEvent::Entry(_)) {
                    self.nodes[node].read_at += 1;
                }
                self.feed(node, &event);
            }
        }
    }

    /// The lines person `conn` of `node` read.
    pub fn lines(&self, node: usize, conn: ConnId) -> Vec<String> {
        self.heard
            .get(&(node, conn))
            .map(|h| h.iter().map(|h| h.line.clone()).collect())
            .unwrap_or_default()
    }
}
