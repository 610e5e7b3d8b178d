//! PROTOCOL 2.1, U9: the transfer port of an offer is the first free one the runtime can use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use natter_core::chat::catalogue::{Catalogue, FileEntry};
use natter_core::chat::server::{ChatServer, ServerConfig, ServerInput, ServerOutput};

fn offered_ports(server: &mut ChatServer, now: Instant) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(out) = server.poll_output() {
        let sends = match out {
            ServerOutput::Send { conn, bytes } => vec![(conn, bytes)],
            ServerOutput::SendToMany { conns, bytes } => {
                conns.into_iter().map(|conn| (conn, bytes.clone())).collect()
            }
            ServerOutput::Presence { conn } => {
                server.take_presence(conn).map(|bytes| (conn, bytes)).into_iter().collect()
            }
            _ => vec![],
        };
        for (conn, bytes) in sends {
            lines.push(String::from_utf8_lossy(&bytes).trim_end().to_owned());
            server.handle_input(now, ServerInput::Sent { conn, len: bytes.len() });
        }
    }
    lines
        .into_iter()
        .filter_map(|l| {
            let mut words = l.split(' ');
            match (words.next(), words.next()) {
                (Some("UDP"), Some(port)) => Some(port.to_owned()),
                (Some("ERROR"), _) => Some(l.clone()),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn ports_the_runtime_cannot_bind_are_never_offered() {
    let config = ServerConfig { udp_ports: 55000..=55003, ..Default::default() };
    let files = vec![FileEntry { name: "a.txt".into(), size: 10, blake3: [1; 32] }];
    let mut server = ChatServer::new(config, Catalogue::from_entries(files), 3);
    let now = Instant::now();
    for port in [55000, 55002] {
        server.handle_input(now, ServerInput::PortUnavailable { port });
    }
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
    server.handle_input(now, ServerInput::Opened { conn: 1, peer });
    server.handle_input(now, ServerInput::Received { conn: 1, bytes: b"alice\n" });
    offered_ports(&mut server, now);
    let ask = b"download_file a.txt\n".repeat(3);
    server.handle_input(now, ServerInput::Received { conn: 1, bytes: &ask });
    let got = offered_ports(&mut server, now);
    assert_eq!(got[..2], ["55001", "55003"]);
    assert!(got[2].starts_with("ERROR server busy"), "{got:?}");
    // A freed port is offered again; an unavailable one never is.
    server.handle_input(now, ServerInput::TransferEnded { port: 55001 });
    server.handle_input(now, ServerInput::Received { conn: 1, bytes: b"download_file a.txt\n" });
    assert_eq!(offered_ports(&mut server, now), ["55001"]);
}
