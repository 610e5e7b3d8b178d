//! C6: a client that floods is read less, the others are not. PROTOCOL 1.2 (public messages).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::Catalogue;
use natter_core::chat::server::{ChatServer, ServerConfig, ServerInput, ServerOutput};

#[test]
fn a_flooder_is_paused_and_resumes_at_the_rate() {
    let config =
        ServerConfig { max_input_rate: 100_000, input_burst: 200_000, ..Default::default() };
    let mut server = ChatServer::new(config, Catalogue::default(), 7);
    let t0 = Instant::now();
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
    for (conn, name) in [(1, "flood"), (2, "calm")] {
        server.handle_input(t0, ServerInput::Opened { conn, peer });
        server.handle_input(
            t0,
            ServerInput::Received { conn, bytes: format!("{name}\n").as_bytes() },
        );
    }
    let line = format!("{}\n", "f".repeat(999));
    // 300 lines of 1000 bytes at once: 100 kB past the burst.
    for _ in 0..300 {
        server.handle_input(t0, ServerInput::Received { conn: 1, bytes: line.as_bytes() });
    }
    // The flooder's reads pause (C6) for as long as its debt takes to pay back; nobody else's.
    let mut outputs = Vec::new();
    while let Some(out) = server.poll_output() {
        outputs.push(out);
    }
    let paused: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::PauseReading { conn } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(paused, vec![1], "only the flooder is paused, once");
    let resume = server.poll_timeout().expect("a timer for the pause");
    let pause = resume - t0;
    assert!(
        pause >= Duration::from_millis(1000) && pause < Duration::from_millis(1020),
        "{pause:?}"
    );
    server.handle_timeout(resume);
    let mut resumed = Vec::new();
    while let Some(out) = server.poll_output() {
        if let ServerOutput::ResumeReading { conn } = out {
            resumed.push(conn);
        }
    }
    assert_eq!(resumed, vec![1], "after the pause, reading goes on");
    // Every line that was read is still relayed: slowing a sender loses nothing.
    let mut relayed = 0;
    for out in outputs {
        let bytes = match out {
            ServerOutput::Send { conn: 2, bytes } => bytes,
            ServerOutput::SendToMany { conns, bytes } if conns.contains(&2) => bytes,
            _ => continue,
        };
        relayed += usize::from(bytes.starts_with(b"flood: "));
        server.handle_input(t0, ServerInput::Sent { conn: 2, len: bytes.len() });
    }
    assert_eq!(relayed, 300);
}
