//! TLS inside the drivers, with no socket at all (issue 14, PROTOCOL 1.6): a `ServerDriver` and
//! `ClientDriver`s pass ciphertext to each other in memory, in simulated time, with writes that
//! the "kernel" takes a few hundred bytes at a time. The certificate is a real chain (a test CA
//! and a leaf for `localhost`), checked by rustls's own verifier.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use natter_core::chat::catalogue::Catalogue;
use natter_core::chat::client::ClientEvent;
use natter_core::chat::password::Password;
use natter_core::chat::server::{ConnId, LogEvent, ServerConfig};
use natter_core::driver::client::{self, ClientConfig, ClientDriver, ClientTls, Mode};
use natter_core::driver::server::{Input, Output, ServerDriver};
use rustls::pki_types::{PrivateKeyDer, ServerName};

/// How much of what a connection owes the "kernel" takes per write: TLS records get split.
const WRITE_SIZE: usize = 333;

/// A server certificate signed by a test CA, and client settings that trust that CA.
fn pki() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// One client: its driver, what it was shown, whether the server closed it.
struct Peer {
    driver: ClientDriver,
    shown: Vec<String>,
    closed: bool,
}

/// A server driver and its clients, wired together in memory.
struct Net {
    server: ServerDriver,
    client_tls: Arc<rustls::ClientConfig>,
    peers: BTreeMap<ConnId, Peer>,
    now: Instant,
    log: Vec<String>,
}

impl Net {
    fn new(config: ServerConfig) -> Self {
        let (server_tls, client_tls) = pki();
        let server = ServerDriver::new(config, Catalogue::default(), 1).with_tls(server_tls);
        Self { server, client_tls, peers: BTreeMap::new(), now: Instant::now(), log: Vec::new() }
    }

    /// A client named `name` on the TLS port (or the plain one), with `password` if any.
    fn join(&mut self, name: &str, tls: bool, password: Option<&str>) -> ConnId {
        let conn = self.peers.len() as ConnId + 1;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut config = ClientConfig::new(name, Mode::Interactive, ip, 1200);
        if tls {
            config.tls = Some(ClientTls {
                config: self.client_tls.clone(),
                server_name: ServerName::try_from("localhost").unwrap(),
            });
        }
        config.password = password.map(Password::new);
        let driver = ClientDriver::new(config, self.now);
        let peer = SocketAddr::new(ip, 40000 + conn as u16);
        let input =
            if tls { Input::AcceptedTls { conn, peer } } else { Input::Accepted { conn, peer } };
        self.server.handle_input(self.now, input);
        self.peers.insert(conn, Peer { driver, shown: Vec::new(), closed: false });
        self.settle();
        conn
    }

    fn say(&mut self, conn: ConnId, line: &str) {
        let peer = self.peers.get_mut(&conn).unwrap();
        peer.driver.handle_input(self.now, client::Input::Typed(line));
        self.settle();
    }

    /// Moves bytes both ways until nobody has anything more to say.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            // Clients to the server.
            for (&conn, peer) in &mut self.peers {
                while let Some(output) = peer.driver.poll_output() {
                    match output {
                        client::Output::Send(bytes) if !peer.closed => {
                            moved = true;
                            let input = Input::Received { conn, bytes: &bytes };
                            self.server.handle_input(self.now, input);
                        }
                        client::Output::Event(event) => peer.shown.push(show(&event)),
                        client::Output::Disconnected(why) => {
                            peer.shown.push(format!("disconnected: {why}"));
                        }
                        _ => {}
                    }
                }
            }
            // The server's outputs, and every write it owes, a few hundred bytes at a time.
            let mut owed = Vec::new();
            while let Some(output) = self.server.poll_output() {
                match output {
                    Output::Write { conn } => owed.push(conn),
                    Output::Close { conn } => {
                        if let Some(peer) = self.peers.get_mut(&conn).filter(|p| !p.closed) {
                            peer.closed = true;
                            peer.driver.handle_input(self.now, client::Input::ServerClosed);
                            moved = true;
                        }
                    }
                    Output::Log(event) => self.log.push(log(&event)),
                    _ => {}
                }
            }
            for conn in owed {
                while self.server.has_unsent(conn) {
                    let bytes: Vec<u8> = self.server.unsent(conn).flatten().copied().collect();
                    let len = bytes.len().min(WRITE_SIZE);
                    assert!(len > 0, "has_unsent without anything unsent for {conn}");
                    self.server.handle_input(self.now, Input::Written { conn, len });
                    if let Some(peer) = self.peers.get_mut(&conn).filter(|p| !p.closed) {
                        peer.driver.handle_input(self.now, client::Input::Received(&bytes[..len]));
                    }
                    moved = true;
                }
            }
            self.server.end_turn(self.now);
            if !moved {
                return;
            }
        }
        panic!("the drivers never settle");
    }

    fn shown(&self, conn: ConnId) -> &[String] {
        &self.peers[&conn].shown
    }
}

fn show(event: &ClientEvent) -> String {
    match event {
        ClientEvent::Joined(name) => format!("{name} joined"),
        ClientEvent::Public { from, text } => format!("{from}: {text}"),
        ClientEvent::Private { from, text } => format!("{from}: (PRIVATE) {text}"),
        ClientEvent::Error(text) | ClientEvent::NameRefused(text) => format!("ERROR {text}"),
        other => format!("{other:?}"),
    }
}

fn log(event: &LogEvent) -> String {
    event.to_string()
}

/// PROTOCOL 1.6: TLS and plain clients in one room; every line crosses the TLS connections in
/// records cut into 333-byte writes; a `{quit}` over TLS ends with `close_notify` and the close.
#[test]
fn tls_and_plain_clients_share_a_room() {
    let mut net = Net::new(ServerConfig::default());
    let alice = net.join("alice", true, None);
    let bob = net.join("bob", false, None);
    let carol = net.join("carol", true, None);
    let long = "x".repeat(3000);
    net.say(alice, "hello over tls");
    net.say(bob, "hello in the clear");
    net.say(carol, &long);
    net.say(bob, "~carol psst");
    for conn in [alice, bob, carol] {
        let shown = net.shown(conn);
        for line in ["alice: hello over tls", "bob: hello in the clear", &format!("carol: {long}")]
        {
            assert!(shown.iter().any(|l| l == line), "{conn} did not get {line:?}: {shown:?}");
        }
    }
    assert!(net.shown(carol).iter().any(|l| l == "bob: (PRIVATE) psst"), "{:?}", net.shown(carol));
    net.say(alice, "{quit}");
    assert!(net.peers[&alice].closed, "alice's connection is closed");
    assert!(net.peers[&alice].driver.is_finished());
    assert!(net.shown(bob).iter().any(|l| l.contains("Left(\"alice\")")), "{:?}", net.shown(bob));
    assert_eq!(net.server.open_connections(), 2);
}

/// PROTOCOL 1.6: the room password goes first, over TLS; a wrong one is an ERROR and the close;
/// a plain client is refused at its first line; the log never holds the password.
#[test]
fn the_room_password_is_asked_over_tls_only() {
    let config =
        ServerConfig { password: Some(Password::new("s3cret-pw")), ..ServerConfig::default() };
    let mut net = Net::new(config);
    let alice = net.join("alice", true, Some("s3cret-pw"));
    assert!(net.shown(alice).iter().any(|l| l == "alice joined"), "{:?}", net.shown(alice));
    let eve = net.join("eve", true, Some("guess"));
    assert!(net.shown(eve).iter().any(|l| l == "ERROR wrong password"), "{:?}", net.shown(eve));
    assert!(net.peers[&eve].closed);
    let plain = net.join("plain", false, None);
    let refused = net.shown(plain).join("\n");
    assert!(refused.contains("accepted only over TLS"), "{refused}");
    assert!(net.peers[&plain].closed);
    assert!(!net.shown(alice).iter().any(|l| l.contains("eve") || l.contains("plain")));
    let log = net.log.join("\n");
    assert!(log.contains("[PASSWORD]"), "{log}");
    assert!(!log.contains("s3cret") && !log.contains("guess"), "{log}");
}

/// PROTOCOL 1.6: plaintext on the TLS port (a netcat) is not a handshake: the connection is
/// closed after rustls's alert, logged, and nobody hears of it.
#[test]
fn plaintext_on_the_tls_port_is_closed() {
    let mut net = Net::new(ServerConfig::default());
    let alice = net.join("alice", true, None);
    let conn = 99;
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);
    net.server.handle_input(net.now, Input::AcceptedTls { conn, peer });
    net.server.handle_input(net.now, Input::Received { conn, bytes: b"mallory\nhello\n" });
    let mut closed = false;
    let mut alert = Vec::new();
    while let Some(output) = net.server.poll_output() {
        match output {
            Output::Write { conn: 99 } => {
                alert = net.server.unsent(conn).flatten().copied().collect();
                let len = alert.len();
                net.server.handle_input(net.now, Input::Written { conn, len });
            }
            Output::Close { conn: 99 } => closed = true,
            Output::Log(event) => net.log.push(log(&event)),
            _ => {}
        }
    }
    assert!(closed, "closed once the alert is out");
    assert_eq!(alert.first(), Some(&21), "a TLS alert record: {alert:?}");
    assert!(net.log.iter().any(|l| l.starts_with("[TLS] connection 99 closed")), "{:?}", net.log);
    net.settle();
    assert!(!net.shown(alice).iter().any(|l| l.contains("mallory")), "{:?}", net.shown(alice));
}
