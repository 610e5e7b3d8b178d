//! A cluster of servers sharing one room through a broker: what a node asks of the broker and
//! what the broker tells it, as plain data (PROTOCOL.md section 8).
//!
//! The core never talks to the broker. The chat server emits [`ClusterCommand`]s (append this
//! entry to the room's stream, claim or renew these names, release one, renew the node's
//! heartbeat, read the other nodes' heartbeats) and is fed [`ClusterEvent`]s (the link is up or
//! down, an entry of the stream, a claim's answer, the heartbeats read). A runtime's broker thread
//! performs the commands on Redis (`runtime-common/src/cluster.rs`); the simulator's broker model
//! performs them in memory (`sim::broker`), so the whole cluster runs seeded in a test.
//!
//! Why the key layout is decided here and not by the broker thread: which key a name is held
//! under (its confusable skeleton) is a name rule of 1.1, and the rule must be the same on every
//! node whatever runtime it runs.

pub mod entry;

use std::time::Duration;

use bytes::Bytes;

use crate::chat::names;

pub use self::entry::{Entry, EntryError, EntryKind};

/// The Redis stream every node appends to and reads from.
pub const ROOM_STREAM: &str = "natter:room";

/// How many entries the stream keeps (about: Redis trims by whole blocks). A node cut off from
/// the broker for longer than it takes the room to say this much misses the oldest (8.5).
pub const STREAM_KEEP: usize = 100_000;

/// The default lease of a name and of a node's heartbeat (8.3).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Who this node is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The node's name, unique in the cluster; follows the name rules (1.1) so it needs no
    /// quoting in an entry or a key.
    pub node: String,
    /// Drawn at random when the node starts: a restarted node is a new sender, and the others
    /// drop what the old one held (8.4).
    pub epoch: u64,
    /// How long a name claim and the node's heartbeat live unless renewed (8.3).
    pub lease: Duration,
}

impl ClusterConfig {
    /// A node named `node`, with a random `epoch` from the caller and the default lease.
    pub fn new(node: &str, epoch: u64) -> Self {
        Self { node: node.to_owned(), epoch, lease: DEFAULT_LEASE }
    }

    /// How often the node renews its claims and heartbeat and reads the others': a third of the
    /// lease, so two renewals may be lost before a claim runs out.
    pub fn tick(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(10))
    }

    /// The value this node stores under a name's key: node, epoch and the name as registered,
    /// so another node that finds the key held can say by whom (`name already taken: <name>`).
    pub fn claim_value(&self, name: &str) -> String {
        format!("{} {} {}", self.node, self.epoch, name)
    }

    /// This node's heartbeat key.
    pub fn heartbeat_key(&self) -> String {
        heartbeat_key(&self.node)
    }
}

/// Whether `node` may name a node: the name rules of 1.1 (letters, digits, `_ - .`, 1 to 32).
pub fn check_node_name(node: &str) -> Result<(), names::NameError> {
    names::check_syntax(node)
}

/// The key a name is claimed under: its UTS #39 skeleton after case folding, so that `alice`,
/// `ALICE` and `аlice` (Cyrillic а) are one claim across the cluster (1.1, 8.3).
pub fn name_key(name: &str) -> String {
    format!("natter:name:{}", names::skeleton_key(name))
}

/// A node's heartbeat key: it holds the node's epoch while the node lives (8.4).
pub fn heartbeat_key(node: &str) -> String {
    format!("natter:node:{node}")
}

/// One claim or renewal: hold `key` with `value` for `lease`, unless another value holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The name's key ([`name_key`]).
    pub key: String,
    /// [`ClusterConfig::claim_value`].
    pub value: String,
    /// How long the claim lives unless renewed.
    pub lease: Duration,
}

/// What the node asks of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCommand {
    /// Append this entry (one [`Entry`], encoded) to the room's stream.
    Publish(Bytes),
    /// Claim each key (set it if free or already ours, and renew its lease, atomically); each is
    /// answered with [`ClusterEvent::Claimed`].
    Claim(Vec<Claim>),
    /// Delete `key` if it still holds `value` (a claim of ours, not one taken over since).
    Release {
        /// The name's key.
        key: String,
        /// The value it holds if it is still ours.
        value: String,
    },
    /// Set the node's heartbeat key to its epoch for `lease`.
    Heartbeat {
        /// [`heartbeat_key`].
        key: String,
        /// The epoch, in decimal.
        value: String,
        /// How long it lives unless renewed.
        lease: Duration,
    },
    /// Read the heartbeat keys of these nodes; answered with [`ClusterEvent::Heartbeats`].
    ReadHeartbeats(Vec<String>),
}

/// What the broker (through its thread) tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The link to the broker works (again), and the stream is read from where it was left.
    Up,
    /// The link to the broker failed: commands given since are dropped, not retried.
    Down,
    /// One entry of the room's stream, in stream order, each once.
    Entry(Bytes),
    /// The answer to one [`Claim`]: `None` when the key is now ours, else the value that holds it.
    Claimed {
        /// The key claimed.
        key: String,
        /// The other holder's value ([`ClusterConfig::claim_value`] of another node), if any.
        holder: Option<String>,
    },
    /// The heartbeats read: each node asked about, with its epoch if its key is alive.
    Heartbeats(Vec<(String, Option<u64>)>),
}

/// The heartbeat key's value, decoded: an epoch, or `None` for a missing or foreign value.
pub fn parse_epoch(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.parse().ok()
}

/// The registered name in a claim value of another node (`node epoch name`), if the value is
/// one. The broker is a peer and what it holds becomes a line to a client (`name already taken:
/// <name>`), so a value whose node or name breaks the name rules of 1.1 (a line break, a control
/// character, a space), or whose epoch is not a number, gives `None`.
pub fn holder_name(value: &str) -> Option<&str> {
    let mut words = value.splitn(3, ' ');
    let (node, epoch, name) = (words.next()?, words.next()?, words.next()?);
    let valid = names::check_syntax(node).is_ok()
        && epoch.parse::<u64>().is_ok()
        && names::check_syntax(name).is_ok();
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_named_only_from_a_value_a_node_writes() {
        // PROTOCOL 8.3: the value is `<node> <epoch> <name>`, each word as a node writes it.
        let config = ClusterConfig::new("n-1", 42);
        assert_eq!(holder_name(&config.claim_value("straße")), Some("straße"));
        assert_eq!(holder_name("n1 0 \u{430}lice"), Some("\u{430}lice"));
        for bad in [
            "",
            "n1",
            "n1 7",
            "n1 7 ",
            "n1 x alice",
            "n1 -1 alice",
            "n\x01 7 alice",
            "n1 7 alice\nALL forged",
            "n1 7 a\u{5}b",
            "n1 7 two words",
            "n1 7 ALL",
        ] {
            assert_eq!(holder_name(bad), None, "{bad:?}");
        }
    }
}
