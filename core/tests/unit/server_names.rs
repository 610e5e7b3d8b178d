//! Unit tests of `chat/server/admission.rs`, kept beside the other unit tests: they read the
//! clock for a starting instant, which the core itself never does.

use std::net::SocketAddr;

use super::*;
use crate::chat::catalogue::Catalogue;
use crate::chat::server::{ServerConfig, ServerInput};

/// The lines `server` queued for `conn` since the last call.
fn lines_to(server: &mut ChatServer, conn: ConnId) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(out) = server.poll_output() {
        match out {
            ServerOutput::Send { conn: to, bytes } if to == conn => {
                lines.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            ServerOutput::SendToMany { conns, bytes } if conns.contains(&conn) => {
                lines.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            _ => {}
        }
    }
    lines
}

/// The registry keeps digests of names (issue 12). A private line to a name whose digest equals
/// someone else's must not reach that someone: the server compares the names themselves.
#[test]
fn a_digest_collision_never_delivers_a_private_line_to_another_name() {
    let mut server =
        ChatServer::new(ServerConfig::default(), Catalogue::from_entries(Vec::new()), 1);
    let now = Instant::now();
    for (conn, name) in [(1, "alice\n"), (2, "mallory\n")] {
        let peer = SocketAddr::from(([127, 0, 0, 1], 4000 + conn as u16));
        server.handle_input(now, ServerInput::Opened { conn, peer });
        server.handle_input(now, ServerInput::Received { conn, bytes: name.as_bytes() });
    }
    server.names.collide("bob", "alice");
    lines_to(&mut server, 1);
    server.handle_input(now, ServerInput::Received { conn: 2, bytes: b"~bob hello\n" });
    let mut alice = Vec::new();
    let mut mallory = Vec::new();
    while let Some(out) = server.poll_output() {
        if let ServerOutput::Send { conn, bytes } = out {
            let line = String::from_utf8_lossy(&bytes).into_owned();
            if conn == 1 { alice.push(line) } else { mallory.push(line) }
        }
    }
    assert!(alice.is_empty(), "alice got {alice:?}");
    assert_eq!(mallory, ["ERROR no such user: bob\n"]);
    // The name itself still reaches its holder.
    server.handle_input(now, ServerInput::Received { conn: 2, bytes: b"~Alice hi\n" });
    assert!(lines_to(&mut server, 1).iter().any(|l| l.contains("hi")));
}
