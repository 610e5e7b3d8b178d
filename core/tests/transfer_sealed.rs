//! The server and client sides of a sealed transfer (PROTOCOL 2.7), datagram by datagram: what a
//! sealed sender answers and refuses, and what a sealed receiver accepts. TEST-CATALOGUE U1-U3.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use natter_core::transfer::receiver::{Receiver, ReceiverConfig, ReceiverState, TRANSMIT_BUF_LEN};
use natter_core::transfer::sender::{Sender, SenderConfig, SenderEnd, SenderInput, SenderOutput};
use natter_core::wire::datagram::{self, AbortCode, Datagram};
use natter_core::wire::sealed::{self, SEALED_HEADER_LEN, SealKey};

const TOKEN: u64 = 0x5c1e_0f3a_9b2d_4e71;
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn client() -> SocketAddr {
    SocketAddr::new(CLIENT_IP, 40_000)
}

fn key(byte: u8) -> SealKey {
    SealKey::new(&[byte; 32])
}

fn sender(seal: SealKey, now: Instant) -> Sender {
    let config = SenderConfig {
        token: TOKEN,
        seal: Some(seal),
        peer_ip: CLIENT_IP,
        size: 10_000,
        part_size: 1000,
        idle_timeout: Duration::from_secs(10),
        early: None,
    };
    Sender::new(config, now)
}

fn request(key: &SealKey, req_seq: u32, ranges: &[(u32, u32)]) -> Vec<u8> {
    let mut buf = vec![0; sealed::request_len(ranges.len())];
    sealed::encode_request(key, req_seq, ranges, &mut buf);
    buf
}

/// The (req_seq, part) of every PART the sender orders now, and whether it ended.
fn answered(s: &mut Sender) -> (Vec<(u32, u32)>, Option<SenderEnd>) {
    let (mut parts, mut end) = (Vec::new(), None);
    while let Some(out) = s.poll_output() {
        match out {
            SenderOutput::SendPart { req_seq, part, .. } => parts.push((req_seq, part)),
            SenderOutput::Done(e) => end = Some(e),
            SenderOutput::SendDatagram { .. } => {}
        }
    }
    (parts, end)
}

fn feed(s: &mut Sender, now: Instant, bytes: &[u8]) {
    s.handle_input(now, SenderInput::Datagram { from: client(), bytes });
}

/// U2, U3 / PROTOCOL 2.7: a sealed sender answers only what its key sealed, answers a `req_seq`
/// once and never a smaller one (no wrap under one key), and refuses overlapping ranges, so it
/// never seals two PARTs under one nonce; forgeries are counted.
#[test]
fn a_sealed_sender_answers_only_its_key_and_never_repeats_a_nonce() {
    let t0 = Instant::now();
    let k = key(1);
    let mut s = sender(k.clone(), t0);
    // A plain REQUEST with the right token, and a sealed one under another key: nothing.
    let mut plain = vec![0; datagram::request_len(1)];
    datagram::encode_request(TOKEN, 1, &[(0, 0)], &mut plain);
    feed(&mut s, t0, &plain);
    feed(&mut s, t0, &request(&key(2), 1, &[(0, 0)]));
    assert_eq!(answered(&mut s), (vec![], None));
    assert_eq!((s.stats().dropped, s.stats().unauthentic), (2, 1));
    // The real one is answered; its replay is not; overlapping ranges are dropped.
    let first = request(&k, u32::MAX - 1, &[(0, 1)]);
    feed(&mut s, t0, &first);
    assert_eq!(answered(&mut s).0, vec![(u32::MAX - 1, 0), (u32::MAX - 1, 1)]);
    feed(&mut s, t0, &first);
    feed(&mut s, t0, &request(&k, u32::MAX, &[(2, 4), (4, 5)]));
    assert_eq!(answered(&mut s).0, vec![]);
    assert_eq!(s.stats().requests_ignored, 1);
    // The last req_seq there is, then a wrapped one: a plain sender would answer 0 (serial
    // order), a sealed one must not, or (0, part) nonces could come back after 2^32 requests.
    feed(&mut s, t0, &request(&k, u32::MAX, &[(2, 2)]));
    assert_eq!(answered(&mut s).0, vec![(u32::MAX, 2)]);
    feed(&mut s, t0, &request(&k, 0, &[(3, 3)]));
    assert_eq!(answered(&mut s).0, vec![]);
    assert_eq!(s.stats().requests_ignored, 2);
    // A sealed FINISHED ends it.
    let mut fin = [0u8; sealed::FINISHED_LEN];
    sealed::encode_finished(&k, &mut fin);
    feed(&mut s, t0, &fin);
    assert_eq!(answered(&mut s).1, Some(SenderEnd::Finished));
}

/// PROTOCOL 2.7, U8: a sealed sender's ABORT is sealed too (a client cannot be fooled by a forged
/// one), and the receiver believes it.
#[test]
fn a_sealed_abort_is_sealed_and_believed() {
    let t0 = Instant::now();
    let k = key(3);
    let mut s = sender(k.clone(), t0);
    feed(&mut s, t0, &request(&k, 0, &[(0, 0)]));
    let _ = answered(&mut s);
    s.handle_input(t0, SenderInput::FileChanged);
    let mut abort = None;
    while let Some(out) = s.poll_output() {
        if let SenderOutput::SendDatagram { bytes, .. } = out {
            abort = Some(bytes);
        }
    }
    let mut abort = abort.unwrap();
    assert_eq!(abort[2], sealed::SEALED_VERSION);
    assert!(datagram::parse(&abort).is_err(), "not readable without the key");
    match sealed::open(&k, TOKEN, &mut abort.clone()) {
        Ok(Datagram::Abort(a)) => assert_eq!(a.code, AbortCode::FileChanged),
        other => panic!("{other:?}"),
    }
    let mut r = Receiver::new(receiver_config(&k, 10_000), t0);
    assert_eq!(r.handle_datagram(t0, &mut abort), None);
    assert!(matches!(r.state(), ReceiverState::Failed(_)), "{:?}", r.state());
}

fn receiver_config(k: &SealKey, size: u64) -> ReceiverConfig {
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut config = ReceiverConfig::new(TOKEN, size, 1000, *blake3::hash(&content).as_bytes());
    config.seal = Some(k.clone());
    config
}

/// U1, U3 / PROTOCOL 2.7: a sealed receiver sends sealed REQUESTs and FINISHED, accepts a sealed
/// PART with its payload decrypted in place, and drops plain PARTs, forged ones (counted as
/// unauthentic) and replays (counted as duplicates).
#[test]
fn a_sealed_receiver_accepts_only_sealed_parts_once() {
    let t0 = Instant::now();
    let k = key(4);
    let mut r = Receiver::new(receiver_config(&k, 1000), t0);
    let mut buf = [0u8; TRANSMIT_BUF_LEN];
    let n = r.poll_transmit(t0, &mut buf).unwrap();
    match sealed::open(&k, TOKEN, &mut buf[..n]) {
        Ok(Datagram::Request(req)) => assert_eq!((req.req_seq, req.ranges), (0, vec![(0, 0)])),
        other => panic!("{other:?}"),
    }
    let payload: Vec<u8> = (0..1000u64).map(|i| (i % 251) as u8).collect();
    let mut plain = datagram::encode_part(TOKEN, 0, 0, &payload);
    assert_eq!(r.handle_datagram(t0, &mut plain), None);
    let mut part = vec![0u8; sealed::part_len(1000)];
    part[SEALED_HEADER_LEN..SEALED_HEADER_LEN + 1000].copy_from_slice(&payload);
    sealed::seal_part(&k, &mut part, 0, 0, 1000);
    let mut forged = part.clone();
    forged[100] ^= 1;
    assert_eq!(r.handle_datagram(t0, &mut forged), None);
    let mut replay = part.clone();
    let accept = r.handle_datagram(t0, &mut part).unwrap();
    assert_eq!(&part[accept.payload.clone()], &payload[..], "decrypted in place");
    assert_eq!(r.handle_datagram(t0, &mut replay), None);
    let progress = r.progress();
    assert_eq!((progress.dropped, progress.unauthentic, progress.duplicates), (2, 1, 1));
    while let Some((offset, len)) = r.next_to_hash() {
        r.hash(offset, &payload[offset as usize..offset as usize + len]);
    }
    assert_eq!(r.state(), ReceiverState::Complete);
    let n = r.poll_transmit(t0, &mut buf).unwrap();
    assert_eq!(n, sealed::FINISHED_LEN);
    assert_eq!(sealed::open(&k, TOKEN, &mut buf[..n]), Ok(Datagram::Finished { token: TOKEN }));
}

/// PROTOCOL 2.1, 2.7, issue 14 "logs never print the key or token": a connection marked secure
/// gets offers with a fresh key each time and 2 bytes less per part than asked; a plain one in the
/// same server gets the plain offer; no log line shows a token or a key.
#[test]
fn offers_to_a_secure_connection_carry_fresh_keys_and_logs_show_none() {
    use natter_core::chat::catalogue::{Catalogue, FileEntry};
    use natter_core::chat::server::ServerConfig;
    use natter_core::driver::server::{Input, Output, ServerDriver};
    use natter_core::wire::chat::{ServerLine, UdpOffer};

    let t0 = Instant::now();
    let catalogue = Catalogue::from_entries(vec![FileEntry {
        name: "a.bin".into(),
        size: 5000,
        blake3: [7; 32],
    }]);
    let mut d = ServerDriver::with_secret_seed(ServerConfig::default(), catalogue, [42; 32]);
    let peer = |port| SocketAddr::new(CLIENT_IP, port);
    d.handle_input(t0, Input::Accepted { conn: 1, peer: peer(1) });
    d.set_secure(1, true);
    d.handle_input(t0, Input::Accepted { conn: 2, peer: peer(2) });
    let lines = b"alice\ndownload_file a.bin 1446\ndownload_file a.bin\n";
    d.handle_input(t0, Input::Received { conn: 1, bytes: lines });
    d.handle_input(t0, Input::Received { conn: 2, bytes: b"bob\ndownload_file a.bin 1446\n" });
    let (mut logs, mut sent) = (Vec::new(), std::collections::BTreeMap::<u64, Vec<u8>>::new());
    while let Some(out) = d.poll_output() {
        match out {
            Output::Log(event) => logs.push(format!("{event} {event:?}")),
            Output::Write { conn } => {
                let bytes: Vec<u8> = d.unsent(conn).flat_map(|b| b.to_vec()).collect();
                d.handle_input(t0, Input::Written { conn, len: bytes.len() });
                sent.entry(conn).or_default().extend(bytes);
            }
            _ => {}
        }
    }
    let offers = |conn| -> Vec<UdpOffer> {
        String::from_utf8_lossy(&sent[&conn])
            .lines()
            .filter_map(|l| match ServerLine::parse(l) {
                Ok(ServerLine::Udp(o)) => Some(o),
                _ => None,
            })
            .collect()
    };
    let (secure, plain) = (offers(1), offers(2));
    assert_eq!(secure.len(), 2);
    assert_eq!(plain.len(), 1);
    assert_eq!((secure[0].part_size, secure[1].part_size), (1444, 1200 - 2));
    let (k0, k1) = (secure[0].key.unwrap(), secure[1].key.unwrap());
    assert_ne!(k0, k1, "a fresh key for every offer");
    assert_eq!((plain[0].key, plain[0].part_size), (None, 1446));
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let secrets: Vec<String> = [k0, k1]
        .iter()
        .map(|k| hex(k))
        .chain(secure.iter().chain(&plain).map(|o| format!("{:016x}", o.token)))
        .collect();
    assert!(logs.len() >= 3, "{logs:?}");
    for line in logs.iter().chain([&format!("{:?}", secure[0])]) {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "{line} shows a secret");
        }
    }
}

/// PROTOCOL 2.1, 2.7, S3: the key is an optional eighth field of exactly 64 lowercase hex digits;
/// an offer without it is the plain one, byte for byte.
#[test]
fn the_offer_line_carries_the_key_as_64_hex_digits() {
    use natter_core::wire::chat::ServerLine;

    let plain = "UDP 55000 0 a.bin 5000 1444 ".to_owned() + &"7d".repeat(32) + " 5c1e0f3a9b2d4e71";
    let Ok(ServerLine::Udp(o)) = ServerLine::parse(&plain) else { panic!("plain offer") };
    assert_eq!(o.key, None);
    assert_eq!(ServerLine::Udp(o.clone()).encode(), plain.clone() + "\n");
    let keyed = format!("{plain} {}", "0a".repeat(32));
    let Ok(ServerLine::Udp(k)) = ServerLine::parse(&keyed) else { panic!("keyed offer") };
    assert_eq!(k.key, Some([0x0a; 32]));
    assert_eq!(ServerLine::Udp(k.clone()).encode(), keyed.clone() + "\n");
    assert!(!format!("{k:?}").contains(&"0a".repeat(32)), "Debug hides the key");
    for bad in [
        format!("{plain} {}", "0A".repeat(32)),
        format!("{plain} {}", "0a".repeat(31)),
        format!("{plain} {}0", "0a".repeat(32)),
        format!("{plain} {} x", "0a".repeat(32)),
    ] {
        assert!(ServerLine::parse(&bad).is_err(), "{bad}");
    }
}
