//! The cluster's broker as a hostile peer (PROTOCOL.md 8.2): whatever a node reads from the
//! stream and from its claim and heartbeat answers, the node stays sound.
//!
//! The input is a stream of choices ([`Choices`]). Each step is one of: a raw entry (any bytes,
//! as a broker could hand over), an entry built from well-formed words (so most steps get past
//! the codec's checks and reach the node's state: joins, leaves, says, tells to us or to a
//! restarted us, hellos, restarts of a node with a new epoch, replays of old sequence numbers,
//! our own node's name), a claim's answer (ours, someone else's, garbage), heartbeats read,
//! the link going down or up, time passing, and this node's own people joining, talking,
//! whispering, asking `show` and leaving.
//!
//! What must hold:
//! - the codec: an entry that decodes encodes to bytes that decode to the same entry, and every
//!   name in it passes the name rules and every text is one line a client could have sent;
//! - every line the node sends its people is one line, within 4096 bytes, with no control
//!   character but TAB: nothing from the broker becomes a forged or broken line;
//! - every entry the node appends decodes, carries this node's name and epoch, and numbers
//!   1, 2, 3... with no gap or repeat (8.4);
//! - the node never counts more people joined than it has connections.

use std::time::{Duration, Instant};

use super::input::Choices;
use crate::chat::catalogue::Catalogue;
use crate::chat::names;
use crate::chat::server::{ChatServer, ConnId, ServerConfig, ServerInput, ServerOutput};
use crate::cluster::{ClusterCommand, ClusterConfig, ClusterEvent, Entry, EntryKind, name_key};
use crate::wire::line::MAX_LINE;

/// This node.
const HERE: &str = "here";
const EPOCH: u64 = 7;
/// Node names the built entries use: others, a case variant, and this node itself.
const NODES: [&str; 5] = ["n1", "n2", "N1", HERE, "n-3.x"];
/// Names the built entries and this node's people use: plain, case variants, confusables
/// (Cyrillic а), reserved words and names no node may send.
const NAMES: [&str; 10] =
    ["alice", "bob", "Alice", "\u{430}lice", "carol", "ALL", "x", "a b", "", "straße"];

/// Checks the codec on `bytes` and returns the entry if it decodes.
fn check_codec(bytes: &[u8]) -> Option<Entry> {
    let entry = Entry::decode(bytes).ok()?;
    let again = Entry::decode(&entry.encode());
    assert_eq!(again.as_ref(), Ok(&entry), "entry does not round-trip: {bytes:?}");
    let names: Vec<&str> = match &entry.kind {
        EntryKind::Join(n) | EntryKind::Leave(n) => vec![n],
        EntryKind::Say { from, .. } => vec![from],
        EntryKind::Tell { from, to_node, to, .. } => vec![from, to_node, to],
        EntryKind::Hello(roster) => roster.iter().map(String::as_str).collect(),
    };
    for name in names.into_iter().chain([entry.node.as_str()]) {
        assert!(names::check_syntax(name).is_ok(), "entry let an invalid name through: {name:?}");
    }
    if let EntryKind::Say { text, .. } | EntryKind::Tell { text, .. } = &entry.kind {
        assert!(text.len() <= MAX_LINE, "entry let a long text through");
        assert!(!text.chars().any(|c| c.is_control() && c != '\t'), "control in {text:?}");
    }
    Some(entry)
}

/// An entry from well-formed words picked by the input (it may still break a rule: the names
/// list holds invalid ones, the text may hold anything).
fn built_entry(choices: &mut Choices<'_>) -> Vec<u8> {
    let node = choices.pick(&NODES).to_owned();
    let epoch = u64::from(choices.byte() % 4);
    let seq = u64::from(choices.byte() % 8);
    let name = |choices: &mut Choices<'_>| choices.pick(&NAMES).to_owned();
    let kind = match choices.byte() % 5 {
        0 => EntryKind::Join(name(choices)),
        1 => EntryKind::Leave(name(choices)),
        2 => EntryKind::Say { from: name(choices), text: choices.text() },
        3 => {
            let (from, to) = (name(choices), name(choices));
            let to_node = choices.pick(&NODES).to_owned();
            let to_epoch = choices.pick(&[EPOCH, 1]);
            EntryKind::Tell { from, to_node, to_epoch, to, text: choices.text() }
        }
        _ => {
            let n = usize::from(choices.byte() % 4);
            EntryKind::Hello((0..n).map(|_| name(choices)).collect())
        }
    };
    Entry { node, epoch, seq, kind }.encode().to_vec()
}

/// See the module documentation. `start` is any instant (the core reads no clock).
pub fn cluster_entry(data: &[u8], start: Instant) {
    let mut cluster = ClusterConfig::new(HERE, EPOCH);
    cluster.lease = Duration::from_secs(3);
    let config = ServerConfig {
        max_connections: 4,
        max_per_ip: 4,
        udp_ports: 55000..=55001,
        cluster: Some(cluster.clone()),
        ..Default::default()
    };
    let mut server = ChatServer::new(config, Catalogue::from_entries(Vec::new()), 1);
    let mut now = start;
    let mut choices = Choices::new(data);
    let mut live: Vec<ConnId> = Vec::new();
    let mut next: ConnId = 0;
    let mut seq = 0u64;
    let peer = core::net::SocketAddr::from(([127, 0, 0, 1], 4000));
    server.handle_input(now, ServerInput::Cluster(&ClusterEvent::Up));
    while !choices.is_empty() {
        let op = choices.byte();
        let event = match op % 12 {
            0 | 1 => {
                let raw = choices.chunk().to_vec();
                check_codec(&raw);
                Some(ClusterEvent::Entry(raw.into()))
            }
            2..=4 => {
                let built = built_entry(&mut choices);
                check_codec(&built);
                Some(ClusterEvent::Entry(built.into()))
            }
            5 => {
                let name = choices.pick(&NAMES);
                let holder = match choices.byte() % 4 {
                    0 => None,
                    1 => Some(cluster.claim_value(name)),
                    2 => Some(ClusterConfig::new("n1", 1).claim_value(choices.pick(&NAMES))),
                    _ => Some(choices.text()),
                };
                Some(ClusterEvent::Claimed { key: name_key(name), holder })
            }
            6 => {
                let read = (0..choices.byte() % 3)
                    .map(|_| {
                        let node = choices.pick(&NODES).to_owned();
                        (node, choices.pick(&[None, Some(0), Some(1), Some(EPOCH)]))
                    })
                    .collect();
                Some(ClusterEvent::Heartbeats(read))
            }
            7 => Some(if op & 0x10 == 0 { ClusterEvent::Down } else { ClusterEvent::Up }),
            8 => {
                now += Duration::from_millis(u64::from(choices.u16()));
                server.handle_timeout(now);
                None
            }
            9 if live.len() < 4 => {
                server.handle_input(now, ServerInput::Opened { conn: next, peer });
                let line = format!("{}\n", choices.pick(&NAMES));
                server.handle_input(
                    now,
                    ServerInput::Received { conn: next, bytes: line.as_bytes() },
                );
                live.push(next);
                next += 1;
                None
            }
            10 if !live.is_empty() => {
                let conn = live[usize::from(op >> 4) % live.len()];
                let line = match choices.byte() % 4 {
                    0 => format!("~{} {}\n", choices.pick(&NAMES), choices.text()),
                    1 => "show\n".to_owned(),
                    _ => format!("{}\n", choices.text()),
                };
                server.handle_input(now, ServerInput::Received { conn, bytes: line.as_bytes() });
                None
            }
            11 if !live.is_empty() => {
                let conn = live.swap_remove(usize::from(op >> 4) % live.len());
                server.handle_input(now, ServerInput::Closed { conn });
                None
            }
            _ => None,
        };
        if let Some(event) = &event {
            server.handle_input(now, ServerInput::Cluster(event));
        }
        drain(&mut server, now, &mut seq);
        assert!(server.joined_count() <= server.connection_count());
    }
}

/// Takes every output of a turn, acknowledging every write, and checks it.
fn drain(server: &mut ChatServer, now: Instant, seq: &mut u64) {
    let mut owed = Vec::new();
    while let Some(out) = server.poll_output() {
        let (conns, bytes) = match out {
            ServerOutput::Send { conn, bytes } => (vec![conn], bytes),
            ServerOutput::SendToMany { conns, bytes } => (conns, bytes),
            ServerOutput::Presence { conn } => {
                owed.push(conn);
                continue;
            }
            ServerOutput::Cluster(ClusterCommand::Publish(entry)) => {
                let entry = Entry::decode(&entry);
                let entry = entry.unwrap_or_else(|e| panic!("the node appended a bad entry: {e}"));
                assert_eq!((entry.node.as_str(), entry.epoch), (HERE, EPOCH), "not ours");
                *seq += 1;
                assert_eq!(entry.seq, *seq, "entries out of sequence");
                continue;
            }
            _ => continue,
        };
        check_line(&bytes);
        for conn in conns {
            server.handle_input(now, ServerInput::Sent { conn, len: bytes.len() });
        }
    }
    for conn in owed {
        if let Some(bytes) = server.take_presence(conn) {
            check_line(&bytes);
            server.handle_input(now, ServerInput::Sent { conn, len: bytes.len() });
        }
    }
}

/// One line, within the limit, no control character but TAB before its `\n`.
fn check_line(bytes: &[u8]) {
    let body = bytes.strip_suffix(b"\n").unwrap_or_else(|| panic!("unterminated: {bytes:?}"));
    assert!(body.len() <= MAX_LINE, "line over the limit");
    let text = String::from_utf8_lossy(body);
    assert!(!text.chars().any(|c| c.is_control() && c != '\t'), "control in a line: {text:?}");
}
