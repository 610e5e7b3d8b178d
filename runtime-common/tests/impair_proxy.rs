//! The proxy's plumbing against a stand-in server made of plain sockets: the chat is relayed byte
//! for byte, the server sees the chat and the datagrams come from one IP (U2), each client gets a
//! flow of its own and its replies, idle flows expire, and connections past the cap are closed.
//! PROTOCOL 2.2 (who may send a transfer's datagrams); the downloads are in
//! `bins/tests/impair.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use natter_core::impair::ImpairConfig;
use natter_core::impair::flows::FlowLimits;
use natter_core::sim::LinkConfig;
use natter_runtime_common::impair::{self, ImpairOptions};

const WAIT: Duration = Duration::from_secs(10);

fn clean() -> ImpairConfig {
    let clean = LinkConfig::clean(0, Duration::ZERO, 0);
    ImpairConfig::new(clean.clone(), clean)
}

/// A stand-in server: a chat listener and one transfer port, on 127.0.0.1.
struct FakeServer {
    chat: TcpListener,
    udp: UdpSocket,
}

impl FakeServer {
    fn new() -> Self {
        let chat = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(WAIT)).unwrap();
        FakeServer { chat, udp }
    }

    fn port(&self) -> u16 {
        self.udp.local_addr().unwrap().port()
    }

    fn options(&self, flows: FlowLimits, max_connections: usize) -> ImpairOptions {
        ImpairOptions {
            listen: "127.0.0.2:0".parse().unwrap(),
            server: self.chat.local_addr().unwrap(),
            ports: self.port()..=self.port(),
            upstream_ip: None,
            impair: clean(),
            seed: 1,
            flows,
            max_connections,
        }
    }
}

const UPSTREAM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

#[test]
fn chat_and_datagrams_reach_the_server_from_one_ip_and_replies_come_back() {
    let server = FakeServer::new();
    let proxy = impair::start(server.options(FlowLimits::default(), 8), Instant::now()).unwrap();
    let proxy_udp = SocketAddr::new(proxy.local_addr().ip(), server.port());

    // The chat, both ways, byte for byte, from the upstream IP.
    let mut client = TcpStream::connect(proxy.local_addr()).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let (mut upstream, peer) = server.chat.accept().unwrap();
    upstream.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(peer.ip(), UPSTREAM);
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    client.write_all(&all_bytes).unwrap();
    let mut got = vec![0; all_bytes.len()];
    upstream.read_exact(&mut got).unwrap();
    assert_eq!(got, all_bytes);
    upstream.write_all(b"alice has joined the chat!\n").unwrap();
    let mut line = [0u8; 27];
    client.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"alice has joined the chat!\n");

    // Two clients on the same port: two flows, each from the upstream IP, each answered.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut from = Vec::new();
    for (client, text) in [(&a, b"from a"), (&b, b"from b")] {
        client.set_read_timeout(Some(WAIT)).unwrap();
        client.connect(proxy_udp).unwrap();
        client.send(text).unwrap();
        let mut buf = [0u8; 64];
        let (n, source) = server.udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], text);
        assert_eq!(source.ip(), UPSTREAM);
        from.push(source);
    }
    assert_ne!(from[0], from[1], "one upstream socket per client");
    for (source, client, text) in [(from[1], &b, b"to b"), (from[0], &a, b"to a")] {
        server.udp.send_to(text, source).unwrap();
        let mut buf = [0u8; 64];
        // The client's socket is connected to the proxy's port: the reply came from there.
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], text);
    }

    // The client ends the chat: the server sees the end, and the proxy lets the connection go.
    drop(client);
    let mut rest = Vec::new();
    assert_eq!(upstream.read_to_end(&mut rest).unwrap(), 0);
    drop(upstream);
    let c = proxy.stop();
    assert_eq!((c.to_server.received, c.to_server.delivered), (2, 2));
    assert_eq!((c.to_client.received, c.to_client.delivered), (2, 2));
    assert_eq!((c.flows.opened, c.chat.accepted), (2, 1));
    assert_eq!(c.send_errors, 0);
}

#[test]
fn idle_flows_expire_and_connections_past_the_cap_are_closed() {
    let server = FakeServer::new();
    let limits = FlowLimits { max_flows: 4, idle_timeout: Duration::from_millis(200) };
    let proxy = impair::start(server.options(limits, 1), Instant::now()).unwrap();
    let proxy_udp = SocketAddr::new(proxy.local_addr().ip(), server.port());

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"one", proxy_udp).unwrap();
    let mut buf = [0u8; 16];
    let (_, first) = server.udp.recv_from(&mut buf).unwrap();
    let deadline = Instant::now() + WAIT;
    while proxy.counters().flows.expired == 0 {
        assert!(Instant::now() < deadline, "the idle flow never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same client after its flow expired: a new flow, so a new upstream socket.
    client.send_to(b"two", proxy_udp).unwrap();
    let (_, second) = server.udp.recv_from(&mut buf).unwrap();
    assert_ne!(first, second);

    let kept = TcpStream::connect(proxy.local_addr()).unwrap();
    let (_held, _) = server.chat.accept().unwrap();
    let mut refused = TcpStream::connect(proxy.local_addr()).unwrap();
    refused.set_read_timeout(Some(WAIT)).unwrap();
    // Closed at once, without reaching the server: end of stream (or a reset).
    assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)));
    drop(kept);
    let c = proxy.stop();
    assert_eq!((c.chat.accepted, c.chat.refused), (1, 1));
    assert_eq!((c.flows.opened, c.flows.expired), (2, 1));
}
