//! Unit tests of `chat/server/cluster.rs`, kept beside the other unit tests: they read the
//! clock for a starting instant, which the core itself never does.

use std::net::SocketAddr;

use super::*;
use crate::chat::catalogue::Catalogue;
use crate::chat::server::{ServerConfig, ServerInput};

/// A node whose link is up, and one connection that sent `name` and waits for its claim.
fn node_with_a_claim_out(name: &str) -> (ChatServer, Instant, String) {
    let config =
        ServerConfig { cluster: Some(ClusterConfig::new("here", 7)), ..ServerConfig::default() };
    let mut server = ChatServer::new(config, Catalogue::from_entries(Vec::new()), 1);
    let now = Instant::now();
    server.handle_input(now, ServerInput::Cluster(&ClusterEvent::Up));
    let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
    server.handle_input(now, ServerInput::Opened { conn: 1, peer });
    let line = format!("{name}\n");
    server.handle_input(now, ServerInput::Received { conn: 1, bytes: line.as_bytes() });
    let mut key = None;
    while let Some(out) = server.poll_output() {
        if let ServerOutput::Cluster(ClusterCommand::Claim(claims)) = out {
            key = claims.first().map(|c| c.key.clone());
        }
    }
    let key = key.unwrap_or_else(|| panic!("no claim was asked for {name}"));
    (server, now, key)
}

/// The lines connection 1 was sent.
fn lines_to_conn_1(server: &mut ChatServer) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(out) = server.poll_output() {
        match out {
            ServerOutput::Send { conn: 1, bytes } => {
                lines.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            ServerOutput::SendToMany { conns, bytes } if conns.contains(&1) => {
                lines.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            _ => {}
        }
    }
    lines
}

#[test]
fn a_claim_held_by_another_node_names_its_holder() {
    // PROTOCOL 8.3: the holder's name as registered, taken or confusable.
    for (holder, want) in [
        ("n1 3 Alice", "ERROR name already taken: Alice\n"),
        ("n1 3 \u{430}lice", "ERROR name looks too much like \u{430}lice, who is here\n"),
    ] {
        let (mut server, now, key) = node_with_a_claim_out("alice");
        let answer = ClusterEvent::Claimed { key, holder: Some(holder.to_owned()) };
        server.handle_input(now, ServerInput::Cluster(&answer));
        assert_eq!(lines_to_conn_1(&mut server), [want]);
    }
}

#[test]
fn a_claim_value_no_node_writes_becomes_no_line_of_its_own() {
    // Regression (fuzz target cluster_entry): a broker answered a claim with a value holding
    // control characters, and the node quoted it in the refused person's ERROR line; with a
    // line break in it, a hostile broker could have written any line to that person. A value
    // that is not `<node> <epoch> <name>` in the name rules now names nobody: the name is taken.
    for holder in ["n1 3 x\nALL forged", "3 1 \u{430}lice\u{5}\0\u{1}", "garbage", ""] {
        let (mut server, now, key) = node_with_a_claim_out("alice");
        let answer = ClusterEvent::Claimed { key, holder: Some(holder.to_owned()) };
        server.handle_input(now, ServerInput::Cluster(&answer));
        assert_eq!(
            lines_to_conn_1(&mut server),
            ["ERROR name already taken: alice\n"],
            "{holder:?}"
        );
    }
}
