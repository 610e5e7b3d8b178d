//! What TLS costs the server driver in a busy room (issue 14, PROTOCOL 1.6): one person says
//! `LINES` lines to a room of `ROOM`, and the driver's work (handling each line, queueing it for
//! everyone, and making every write: plaintext for plain connections, encrypted batches for TLS
//! ones) is timed, once with every connection plain and once with every connection TLS. The
//! "kernel" takes each write whole and drops it; no client decrypts anything here.
//!
//!     cargo run --release -p natter-core --example tls_fanout
//!
//! Wall-clock figures on a shared machine: read them as a ratio, not as a promise.

#![allow(clippy::unwrap_used)] // an example that fails should say where

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::Catalogue;
use natter_core::chat::server::ServerConfig;
use natter_core::driver::server::{Input, Output, ServerDriver};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const ROOM: u64 = 200;
const LINES: usize = 2000;

fn main() {
    let (server_tls, client_tls) = pki();
    for tls in [false, true] {
        let (elapsed, bytes, idle) = run(tls, &server_tls, &client_tls);
        let delivered = ROOM as f64 * LINES as f64;
        println!(
            "{:5}: {ROOM} people, {:6.0} heap bytes each once joined; {LINES} lines: {:7.1} ms, \
             {:6.2} M deliveries/s, {:7.1} MB/s written",
            if tls { "TLS" } else { "plain" },
            idle,
            elapsed.as_secs_f64() * 1e3,
            delivered / elapsed.as_secs_f64() / 1e6,
            bytes as f64 / elapsed.as_secs_f64() / 1e6,
        );
    }
}

fn run(
    tls: bool,
    server_tls: &Arc<rustls::ServerConfig>,
    client_tls: &Arc<rustls::ClientConfig>,
) -> (Duration, usize, f64) {
    let config = ServerConfig { max_input_rate: 0, presence_room_limit: 0, ..Default::default() };
    let mut server =
        ServerDriver::new(config, Catalogue::default(), 1).with_tls(server_tls.clone());
    let now = Instant::now();
    let region = Region::new(GLOBAL);
    let mut clients = Vec::new();
    for conn in 0..ROOM {
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1000 + conn as u16);
        if tls {
            server.handle_input(now, Input::AcceptedTls { conn, peer });
            let name = ServerName::try_from("localhost").unwrap();
            let mut client = rustls::ClientConnection::new(client_tls.clone(), name).unwrap();
            client.writer().write_all(format!("p{conn}\n").as_bytes()).unwrap();
            clients.push(Some(client));
        } else {
            server.handle_input(now, Input::Accepted { conn, peer });
            server.handle_input(
                now,
                Input::Received { conn, bytes: format!("p{conn}\n").as_bytes() },
            );
            clients.push(None);
        }
    }
    // Handshakes (and joins) until nothing moves; not timed.
    for _ in 0..20 {
        for (conn, client) in clients.iter_mut().enumerate() {
            if let Some(client) = client {
                let mut out = Vec::new();
                while client.wants_write() {
                    client.write_tls(&mut out).unwrap();
                }
                if !out.is_empty() {
                    server.handle_input(now, Input::Received { conn: conn as u64, bytes: &out });
                }
            }
        }
        drain(&mut server, now, &mut clients);
    }
    assert_eq!(server.chat().joined_count(), ROOM as usize, "everyone joined");
    // The server's heap per person: every client but the talker is dropped first (the talker's
    // own session is 1/ROOM of the figure).
    clients.truncate(1);
    let change = region.change();
    let idle = (change.bytes_allocated as f64 - change.bytes_deallocated as f64) / ROOM as f64;
    let line = format!("{}\n", "a line of chat of a typical length, say eighty characters or so..");
    let started = Instant::now();
    let mut written = 0;
    for _ in 0..LINES {
        let bytes = line.as_bytes();
        match &mut clients[0] {
            Some(client) => {
                client.writer().write_all(bytes).unwrap();
                let mut out = Vec::new();
                client.write_tls(&mut out).unwrap();
                server.handle_input(now, Input::Received { conn: 0, bytes: &out });
            }
            None => server.handle_input(now, Input::Received { conn: 0, bytes }),
        }
        written += write_all(&mut server, now);
        server.end_turn(now);
    }
    (started.elapsed(), written, idle)
}

/// Performs every write owed, whole; gives the bytes written.
fn write_all(server: &mut ServerDriver, now: Instant) -> usize {
    let mut owed = Vec::new();
    while let Some(output) = server.poll_output() {
        if let Output::Write { conn } = output {
            owed.push(conn);
        }
    }
    let mut total = 0;
    for conn in owed {
        while server.has_unsent(conn) {
            let len: usize = server.unsent(conn).map(<[u8]>::len).sum();
            total += len;
            server.handle_input(now, Input::Written { conn, len });
        }
    }
    total
}

/// Delivers the server's writes to the TLS clients (during the handshakes).
fn drain(
    server: &mut ServerDriver,
    now: Instant,
    clients: &mut [Option<rustls::ClientConnection>],
) {
    let mut owed = Vec::new();
    while let Some(output) = server.poll_output() {
        if let Output::Write { conn } = output {
            owed.push(conn);
        }
    }
    for conn in owed {
        while server.has_unsent(conn) {
            let bytes: Vec<u8> = server.unsent(conn).flatten().copied().collect();
            server.handle_input(now, Input::Written { conn, len: bytes.len() });
            if let Some(client) = &mut clients[conn as usize] {
                client.read_tls(&mut &bytes[..]).unwrap();
                client.process_new_packets().unwrap();
                let mut sink = Vec::new();
                let _ = client.reader().read_to_end(&mut sink);
            }
        }
    }
}

/// A server certificate signed by a throwaway CA, and client settings that trust it.
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
