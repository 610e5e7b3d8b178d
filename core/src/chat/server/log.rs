//! What the server reports for a log line: [`LogEvent`] and the reasons it carries, and the
//! `Display` forms a runtime prints.
//!
//! Log lines are not part of the wire protocol, but they name the rules of `docs/PROTOCOL.md`
//! that closed or refused a connection: section 1.5 "Limits and protection" (slow readers C5,
//! the name timeout C7, connection caps C8) and section 2.1 "The offer" for transfers.

use core::net::SocketAddr;
use std::fmt;

use crate::chat::display::escape_for_display;
use crate::transfer::sender::SenderEnd;

use super::ConnId;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent `{quit}`.
    Quit,
    /// The peer closed or reset the socket.
    PeerClosed,
    /// Its unsent bytes passed the bound (C5).
    SlowReader {
        /// Bytes handed to the runtime and not reported `Sent` when it was closed.
        queued: usize,
    },
    /// No acceptable name within the timeout (C7).
    NameTimeout,
    /// A wrong or missing room password, or one that could not be accepted (PROTOCOL 1.6).
    WrongPassword,
    /// Its name was found held by another node when the cluster's broker came back (8.3).
    NameLost,
}

/// What happened to this node's place in a cluster (section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterNote {
    /// The link to the broker works: presence is synced again.
    Up,
    /// The link to the broker failed: the room is split, this node serves its own people.
    Down,
    /// A node's heartbeat ran out (or it restarted): its people left.
    NodeGone {
        /// The node.
        node: String,
        /// How many of its people were announced as left.
        people: usize,
    },
    /// An entry of the stream could not be read and was dropped.
    BadEntry(String),
}

/// Why a new connection was refused (C8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The server already holds as many connections as it allows.
    TooManyConnections {
        /// The limit, [`super::ServerConfig::max_connections`].
        max: usize,
    },
    /// The peer's IP address already holds as many connections as one address may.
    TooManyFromIp {
        /// The limit, [`super::ServerConfig::max_per_ip`].
        max: usize,
    },
}

/// A log line. `Display` gives the forms of the original system where they exist; names are
/// plain by construction, file names and peers are escaped so nothing can forge a line (S4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// `[CONNECTION] ('127.0.0.1', 52418) connected to the server` (the runtime appends ` at <time>`).
    Connected {
        /// The new connection.
        conn: ConnId,
        /// Its remote address.
        peer: SocketAddr,
    },
    /// `[JOINED] <name> joined the chat`: a name was accepted (1.1).
    Joined {
        /// The connection that joined.
        conn: ConnId,
        /// The name it holds from now on.
        name: String,
    },
    /// `[DISCONNECTED] <name> disconnected`, or the peer when no name was given.
    Disconnected {
        /// The connection that ended.
        conn: ConnId,
        /// Its remote address.
        peer: SocketAddr,
        /// Its name, if it had joined.
        name: Option<String>,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// `[REFUSED] <peer> refused: ...`: a new connection was turned away (C8).
    Refused {
        /// The refused connection (the server does not remember it).
        conn: ConnId,
        /// Its remote address.
        peer: SocketAddr,
        /// Which limit it hit.
        reason: RefuseReason,
    },
    /// `[TRANSFER] #<id> <file> to connection <conn> on UDP port <port>`: an offer was made (2.1).
    TransferOffered {
        /// The connection the offer went to.
        conn: ConnId,
        /// The UDP port serving it.
        port: u16,
        /// The offer's transfer id.
        transfer_id: u64,
        /// The file on offer.
        file: String,
        /// How many parts go out with the offer, before any REQUEST (PROTOCOL 2.1, the early
        /// flight), if the client asked for that.
        early_parts: Option<u32>,
    },
    /// `[UDP STARTED] Waiting for connections... port <port>`: the port serves the transfer.
    TransferStarted {
        /// The UDP port now bound.
        port: u16,
        /// The transfer it serves.
        transfer_id: u64,
        /// The file it serves.
        file: String,
    },
    /// `[CLUSTER] ...`: the link to the broker, or another node, changed (section 8).
    Cluster(ClusterNote),
    /// The transfer on `port` is over and the port is free again.
    TransferEnded {
        /// The UDP port now free.
        port: u16,
        /// How the transfer ended.
        end: SenderEnd,
    },
    /// `[PASSWORD] <peer> gave a wrong password` (PROTOCOL 1.6). The password itself is never
    /// part of any event.
    WrongPassword {
        /// The connection that gave it (closed).
        conn: ConnId,
        /// Its remote address.
        peer: SocketAddr,
    },
    /// `[TLS] connection <conn> closed: <error>`: a failed handshake or a bad record
    /// (PROTOCOL 1.6).
    TlsFailed {
        /// The connection.
        conn: ConnId,
        /// What rustls said.
        error: String,
    },
}

/// A peer address in the original system's form, `('127.0.0.1', 52418)`.
struct Peer(SocketAddr);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "('{}', {})", self.0.ip(), self.0.port())
    }
}

impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogEvent::Connected { peer, .. } => {
                write!(f, "[CONNECTION] {} connected to the server", Peer(*peer))
            }
            LogEvent::Joined { name, .. } => {
                write!(f, "[JOINED] {} joined the chat", escape_for_display(name))
            }
            LogEvent::Disconnected { peer, name, reason, .. } => {
                match name {
                    Some(name) => {
                        write!(f, "[DISCONNECTED] {} disconnected", escape_for_display(name))?
                    }
                    None => {
                        write!(f, "[DISCONNECTED] {} disconnected before joining", Peer(*peer))?
                    }
                }
                match reason {
                    DisconnectReason::Quit | DisconnectReason::PeerClosed => Ok(()),
                    DisconnectReason::SlowReader { queued } => {
                        write!(f, " (closed: reads too slowly, {queued} bytes unsent)")
                    }
                    DisconnectReason::NameTimeout => write!(f, " (closed: no name given in time)"),
                    DisconnectReason::WrongPassword => {
                        write!(f, " (closed: no right password over TLS)")
                    }
                    DisconnectReason::NameLost => {
                        write!(f, " (closed: the name is held on another node)")
                    }
                }
            }
            LogEvent::Refused { peer, reason, .. } => match reason {
                RefuseReason::TooManyConnections { max } => {
                    write!(f, "[REFUSED] {} refused: already {max} connections", Peer(*peer))
                }
                RefuseReason::TooManyFromIp { max } => {
                    write!(
                        f,
                        "[REFUSED] {} refused: already {max} connections from this address",
                        Peer(*peer)
                    )
                }
            },
            LogEvent::TransferOffered { conn, port, transfer_id, file, early_parts } => {
                write!(
                    f,
                    "[TRANSFER] #{transfer_id} {} to connection {conn} on UDP port {port}",
                    escape_for_display(file)
                )?;
                match early_parts {
                    Some(n) => write!(f, ", an early flight of {n} parts"),
                    None => Ok(()),
                }
            }
            LogEvent::TransferStarted { port, transfer_id, file } => write!(
                f,
                "[UDP STARTED] Waiting for connections... port {port}, transfer {transfer_id}, file {}",
                escape_for_display(file)
            ),
            LogEvent::Cluster(note) => match note {
                ClusterNote::Up => write!(f, "[CLUSTER] broker reachable: the room is whole"),
                ClusterNote::Down => {
                    write!(f, "[CLUSTER] broker unreachable: the room is split, reconnecting")
                }
                ClusterNote::NodeGone { node, people } => {
                    write!(f, "[CLUSTER] node {node} is gone: {people} people left")
                }
                ClusterNote::BadEntry(why) => write!(f, "[CLUSTER] entry dropped: {why}"),
            },
            LogEvent::TransferEnded { port, end } => {
                write!(f, "[UDP ENDED] port {port}: {end}")
            }
            LogEvent::WrongPassword { peer, .. } => {
                write!(f, "[PASSWORD] {} gave a wrong password", Peer(*peer))
            }
            LogEvent::TlsFailed { conn, error } => {
                write!(f, "[TLS] connection {conn} closed: {}", escape_for_display(error))
            }
        }
    }
}
