//! One entry of the room's stream (PROTOCOL.md 8.2): a single line of space-separated words,
//! the text last, made and read only by nodes.
//!
//! Why a node re-checks every entry it reads: the entry becomes lines to its people, so a name
//! that breaks the name rules or a text with a control character or a line break must never get
//! through, whatever wrote it. A client cannot write an entry at all: its node makes one from the
//! parsed command (`say` from a public message, `tell` from a private one), never from its bytes.

use bytes::Bytes;

use crate::chat::names;
use crate::wire::line::MAX_LINE;

/// Who sent an entry, and its place in that sender's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The node that appended it.
    pub node: String,
    /// The node's epoch (a new one each time the node starts).
    pub epoch: u64,
    /// 1, 2, 3... per node and epoch: a reader drops any entry not above the last it took.
    pub seq: u64,
    /// What it says.
    pub kind: EntryKind,
}

/// What an entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// `join <name>`: one of the node's people joined.
    Join(String),
    /// `leave <name>`: one of the node's people left.
    Leave(String),
    /// `say <name> <text>`: a public message.
    Say {
        /// The speaker.
        from: String,
        /// The text as the speaker typed it.
        text: String,
    },
    /// `tell <from> <node> <epoch> <to> <text>`: a private message for one person of one node.
    Tell {
        /// The sender.
        from: String,
        /// The recipient's node.
        to_node: String,
        /// The recipient node's epoch, so a message for a node that restarted reaches nobody.
        to_epoch: u64,
        /// The recipient's name, as registered.
        to: String,
        /// The text.
        text: String,
    },
    /// `hello <name>*`: the node's whole roster, in join order. Sent when the node's link comes
    /// up; answered by a node that did not know this node and epoch with its own.
    Hello(Vec<String>),
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not UTF-8.
    #[error("entry is not UTF-8")]
    NotUtf8,
    /// A word is missing or is not what its place requires.
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
    /// A name (or node name) that breaks the name rules of 1.1.
    #[error("entry carries an invalid name")]
    BadName,
    /// A text with a control character or longer than a line may be.
    #[error("entry carries a text no client may send")]
    BadText,
}

impl Entry {
    /// The entry's bytes on the stream.
    pub fn encode(&self) -> Bytes {
        let Self { node, epoch, seq, kind } = self;
        let head = |word: &str| format!("{word} {node} {epoch} {seq}");
        let line = match kind {
            EntryKind::Join(name) => format!("{} {name}", head("join")),
            EntryKind::Leave(name) => format!("{} {name}", head("leave")),
            EntryKind::Say { from, text } => format!("{} {from} {text}", head("say")),
            EntryKind::Tell { from, to_node, to_epoch, to, text } => {
                format!("{} {from} {to_node} {to_epoch} {to} {text}", head("tell"))
            }
            EntryKind::Hello(names) => {
                let mut line = head("hello");
                for name in names {
                    line.push(' ');
                    line.push_str(name);
                }
                line
            }
        };
        Bytes::from(line)
    }

    /// Reads an entry, checking every name and text as a client line would be checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let line = std::str::from_utf8(bytes).map_err(|_| EntryError::NotUtf8)?;
        let mut words = line.splitn(5, ' ');
        let mut word = |what| words.next().ok_or(EntryError::Malformed(what));
        let kind = word("kind")?;
        let node = name(word("node")?)?;
        let epoch = number(word("epoch")?)?;
        let seq = number(word("seq")?)?;
        let rest = words.next().unwrap_or("");
        let kind = match kind {
            "join" => EntryKind::Join(name(rest)?),
            "leave" => EntryKind::Leave(name(rest)?),
            "say" => {
                let (from, text) = rest.split_once(' ').ok_or(EntryError::Malformed("say"))?;
                EntryKind::Say { from: name(from)?, text: text_of(text)? }
            }
            "tell" => {
                let mut parts = rest.splitn(5, ' ');
                let mut part = || parts.next().ok_or(EntryError::Malformed("tell"));
                let from = name(part()?)?;
                let to_node = name(part()?)?;
                let to_epoch = number(part()?)?;
                let to = name(part()?)?;
                let text = text_of(part()?)?;
                EntryKind::Tell { from, to_node, to_epoch, to, text }
            }
            "hello" => EntryKind::Hello(
                rest.split(' ').filter(|w| !w.is_empty()).map(name).collect::<Result<_, _>>()?,
            ),
            _ => return Err(EntryError::Malformed("unknown kind")),
        };
        Ok(Self { node, epoch, seq, kind })
    }
}

fn name(word: &str) -> Result<String, EntryError> {
    names::check_syntax(word).map_err(|_| EntryError::BadName)?;
    Ok(word.to_owned())
}

fn number(word: &str) -> Result<u64, EntryError> {
    word.parse().map_err(|_| EntryError::Malformed("not a number"))
}

/// A text as a client could have sent it (1.2): no control character but TAB, within a line.
fn text_of(text: &str) -> Result<String, EntryError> {
    if text.len() > MAX_LINE || text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(EntryError::BadText);
    }
    Ok(text.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on purpose
mod tests {
    use super::*;

    fn entry(kind: EntryKind) -> Entry {
        Entry { node: "n1".into(), epoch: 7, seq: 3, kind }
    }

    #[test]
    fn round_trips() {
        // PROTOCOL 8.2
        let kinds = [
            EntryKind::Join("alice".into()),
            EntryKind::Leave("straße".into()),
            EntryKind::Say { from: "bob".into(), text: "hi  there: (x) ".into() },
            EntryKind::Tell {
                from: "bob".into(),
                to_node: "n2".into(),
                to_epoch: 9,
                to: "alice".into(),
                text: "psst ~x y".into(),
            },
            EntryKind::Hello(vec![]),
            EntryKind::Hello(vec!["a".into(), "b".into()]),
        ];
        for kind in kinds {
            let e = entry(kind);
            assert_eq!(Entry::decode(&e.encode()), Ok(e.clone()), "{e:?}");
        }
        assert_eq!(&entry(EntryKind::Join("a".into())).encode()[..], b"join n1 7 3 a");
    }

    #[test]
    fn refuses_what_no_client_could_send() {
        // PROTOCOL 8.2, 8.6: a line break or control character never becomes a line.
        for bad in [
            &b"say n1 7 3 bob hi\nALL forged"[..],
            b"say n1 7 3 bob a\x1bb",
            b"join n1 7 3 ALL",
            b"join n1 7 3 a b",
            b"join n1 x 3 a",
            b"shout n1 7 3 a",
            b"say n1 7 3 bob",
            b"join n 1 7 3 a",
            b"\xff",
            b"",
        ] {
            assert!(Entry::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trips_at_the_limits() {
        // PROTOCOL 8.2: the largest numbers, a text of exactly 4096 bytes, TAB, an empty text.
        let longest = "é".repeat(MAX_LINE / 2);
        let kinds = [
            EntryKind::Say { from: "bob".into(), text: longest.clone() },
            EntryKind::Say { from: "bob".into(), text: "a\tb".into() },
            EntryKind::Say { from: "bob".into(), text: String::new() },
            EntryKind::Tell {
                from: "b".into(),
                to_node: "n-2.x".into(),
                to_epoch: u64::MAX,
                to: "a".into(),
                text: String::new(),
            },
            EntryKind::Hello(vec!["x".repeat(32)]),
        ];
        for kind in kinds {
            let e = Entry { node: "n_1".into(), epoch: u64::MAX, seq: u64::MAX, kind };
            assert_eq!(Entry::decode(&e.encode()), Ok(e.clone()), "{e:?}");
        }
        assert_eq!(longest.len(), MAX_LINE);
    }

    #[test]
    fn says_why_an_entry_is_refused() {
        // PROTOCOL 8.2: each way an entry can be wrong, with the error it gets.
        let too_long = format!("say n1 7 3 bob {}", "a".repeat(MAX_LINE + 1));
        let cases: [(&[u8], EntryError); 16] = [
            (b"", EntryError::Malformed("node")),
            (b"join", EntryError::Malformed("node")),
            (b"join n1", EntryError::Malformed("epoch")),
            (b"join n1 7", EntryError::Malformed("seq")),
            (b"join n1 7 3", EntryError::BadName),
            (b"join n1 18446744073709551616 3 a", EntryError::Malformed("not a number")),
            (b"join n1 7 -1 a", EntryError::Malformed("not a number")),
            (b"join  n1 7 3 a", EntryError::BadName),
            (b"leave n1 7 3 a\r", EntryError::BadName),
            (b"tell n1 7 3 bob n2 9 alice", EntryError::Malformed("tell")),
            (b"tell n1 7 3 bob n2 x alice hi", EntryError::Malformed("not a number")),
            (b"tell n1 7 3 bob n2 9 alice hi\x00", EntryError::BadText),
            (too_long.as_bytes(), EntryError::BadText),
            (b"hello n1 7 3 a ALL", EntryError::BadName),
            (b"hello n1 7 3 a \xd0", EntryError::NotUtf8),
            (b"JOIN n1 7 3 a", EntryError::Malformed("unknown kind")),
        ];
        for (bad, why) in cases {
            assert_eq!(Entry::decode(bad), Err(why), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
