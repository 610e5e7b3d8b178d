//! Invariant checks shared by the fuzz targets in `fuzz/` and by the test that replays their
//! corpora on stable Rust (`core/tests/fuzz_corpus.rs`), so CI exercises every saved input.
//!
//! Each function takes arbitrary bytes and panics only when an invariant of the protocol breaks:
//! a parser that does not round-trip, a framer whose result depends on how bytes were split, a
//! state machine whose queues outgrow their bounds or that accepts a wrong byte.
//!
//! Spec: `docs/PROTOCOL.md` [§7] (Test catalogue map), row P1: every parser and state machine under
//! a fuzzer (sections 0, 1.2, 1.3, 2.2 and 2.4).
//!
//! [§7]: ../../docs/PROTOCOL.md#7-test-catalogue-map

use std::time::{Duration, Instant};

mod chat_client;
mod client_driver;
mod cluster_entry;
mod extreme_offer;
mod file_bytes;
mod input;
mod resume_record;
mod sealed;

pub use chat_client::chat_client_session;
pub use client_driver::client_driver_session;
pub use cluster_entry::cluster_entry;
pub use extreme_offer::{
    KnownBugs, MAX_ACCEPTED_STATE, OFFERED_PART_SIZES, extreme_offer, resume_state_bytes,
};
pub use resume_record::resume_record_round_trip;
pub use sealed::sealed_datagrams;

use crate::wire::chat::{ClientLine, ServerLine};
use crate::wire::datagram::{self, Datagram};
use crate::wire::line::{Framed, LineFramer, MAX_LINE};

/// Every datagram that parses encodes back to bytes that parse to the same value.
pub fn datagram_round_trip(data: &[u8]) {
    let Ok(parsed) = datagram::parse(data) else {
        return;
    };
    let mut buf = vec![0u8; data.len().max(64) + 64];
    let encoded: Vec<u8> = match &parsed {
        Datagram::Request(r) => {
            let n = datagram::encode_request(r.token, r.req_seq, &r.ranges, &mut buf);
            buf[..n].to_vec()
        }
        Datagram::Part(p) => datagram::encode_part(p.token, p.req_seq, p.part, p.data),
        Datagram::Finished { token } => {
            let n = datagram::encode_finished(*token, &mut buf);
            buf[..n].to_vec()
        }
        Datagram::Abort(a) => {
            let n = datagram::encode_abort(a.token, a.code, a.reason, &mut buf);
            buf[..n].to_vec()
        }
    };
    let again = datagram::parse(&encoded);
    assert_eq!(again.as_ref(), Ok(&parsed), "datagram does not round-trip");
}

/// Every chat line that parses (either direction) encodes back to a line that parses the same.
pub fn chat_line_round_trip(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(line) = ClientLine::parse(text) {
        let encoded = line.encode();
        let body = encoded.strip_suffix('\n').unwrap_or(&encoded);
        assert_eq!(ClientLine::parse(body), Ok(line), "client line does not round-trip: {text:?}");
    }
    if let Ok(line) = ServerLine::parse(text) {
        let encoded = line.encode();
        let body = encoded.strip_suffix('\n').unwrap_or(&encoded);
        assert_eq!(ServerLine::parse(body), Ok(line), "server line does not round-trip: {text:?}");
    }
}

/// Framing gives the same lines whatever the chunking, and never buffers past one line.
/// The first byte picks the chunk sizes; the rest is the stream.
pub fn line_framer_split_invariance(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = frame_in_chunks(stream, stream.len().max(1));
    let chunk = usize::from(seed % 7) + 1;
    assert_eq!(frame_in_chunks(stream, chunk), whole, "framing depends on chunk size {chunk}");
    assert_eq!(frame_in_chunks(stream, 1), whole, "framing depends on byte-by-byte delivery");
}

fn frame_in_chunks(stream: &[u8], chunk: usize) -> Vec<Framed> {
    let mut framer = LineFramer::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        framer.push(piece);
        while let Some(framed) = framer.next() {
            out.push(framed);
        }
        assert!(framer.buffered_partial() <= MAX_LINE + 1, "framer holds more than one line");
    }
    out
}

/// Random connections, bytes, acknowledgements, closes and time, chosen by the fuzzer's bytes:
/// the server never panics, never queues past its bound, never sends a line over the limit, and
/// never holds more connections than allowed.
///
/// `start` is any instant (the core reads no clock; the caller does).
pub fn chat_server_session(data: &[u8], start: Instant) {
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};

    use crate::chat::catalogue::{Catalogue, FileEntry};
    use crate::chat::server::{ChatServer, ConnId, ServerConfig, ServerInput, ServerOutput};

    const MAX_QUEUED: usize = 8192;
    let config = ServerConfig {
        max_connections: 5,
        max_per_ip: 4,
        max_queued_bytes: MAX_QUEUED,
        presence_defer_bytes: 1024,
        udp_ports: 55000..=55002,
        ..Default::default()
    };
    let catalogue = Catalogue::from_entries(vec![FileEntry {
        name: "hello.c".into(),
        size: 1841,
        blake3: [7; 32],
    }]);
    let mut server = ChatServer::new(config, catalogue, 1);
    let mut now = start;
    let mut live: Vec<ConnId> = Vec::new();
    let mut next: ConnId = 0;
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        match op % 8 {
            0 => {
                let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, op >> 6)), 4000);
                server.handle_input(now, ServerInput::Opened { conn: next, peer });
                live.push(next);
                next += 1;
            }
            1 if !live.is_empty() => {
                let conn = live.swap_remove(usize::from(op >> 3) % live.len());
                server.handle_input(now, ServerInput::Closed { conn });
            }
            2 => {
                let port = 54999 + u16::from(op >> 5);
                server.handle_input(now, ServerInput::TransferEnded { port });
            }
            3 => {
                now += Duration::from_secs(u64::from(op >> 3));
                server.handle_timeout(now);
            }
            _ if !live.is_empty() => {
                // The next bytes (up to a length byte's worth) are what this connection sent.
                let conn = live[usize::from(op >> 3) % live.len()];
                let (&len, rest) = input.split_first().unwrap_or((&0, &[]));
                let take = usize::from(len).min(rest.len());
                let (bytes, rest) = rest.split_at(take);
                input = rest;
                server.handle_input(now, ServerInput::Received { conn, bytes });
            }
            _ => {}
        }
        let mut ack = op & 1 == 0;
        let mut owed = Vec::new();
        while let Some(out) = server.poll_output() {
            let (conns, bytes) = match out {
                ServerOutput::Send { conn, bytes } => (vec![conn], bytes),
                ServerOutput::SendToMany { conns, bytes } => (conns, bytes),
                // Made when written: after this turn's other lines, as a runtime does.
                ServerOutput::Presence { conn } => {
                    owed.push(conn);
                    continue;
                }
                _ => continue,
            };
            assert!(bytes.len() <= MAX_LINE + 1 && bytes.ends_with(b"\n"), "bad line sent");
            for conn in conns {
                if ack {
                    server.handle_input(now, ServerInput::Sent { conn, len: bytes.len() });
                }
                ack = !ack;
            }
        }
        for conn in owed {
            if let Some(bytes) = server.take_presence(conn) {
                assert!(bytes.starts_with(b"ALL") && bytes.ends_with(b"\n"), "bad presence");
                if ack {
                    server.handle_input(now, ServerInput::Sent { conn, len: bytes.len() });
                }
                ack = !ack;
            }
        }
        assert!(server.joined_count() <= server.connection_count());
        assert!(server.connection_count() <= 5);
        for conn in &live {
            assert!(server.queued_bytes(*conn) <= MAX_QUEUED, "queue past its bound");
        }
    }
}

/// Hostile datagrams at both ends of a transfer. The input is a series of length-prefixed chunks;
/// the first byte of each (`kind`) says what it becomes. `kind % 4`: 0 and 1, a well-formed PART
/// of the file (its true bytes, or flipped ones with a valid CRC, as a forger would); 2, a REQUEST
/// with small ranges; 3, by `(kind >> 2) % 4`: the raw chunk, or a datagram *with the transfer's
/// token* built from the chunk's bytes (a PART with any index and payload, an ABORT with any code
/// and reason, or any header with the token and the chunk as its body, resealed), so most hostile
/// datagrams get past the token check and reach the state machines. Bit 4 then flips one byte
/// (chosen by the chunk) and reseals, as an on-path forger would. Invariants: no panic; the sender only asks for reads inside the file and answers at
/// most one request's worth per REQUEST; the receiver accepts only parts that fit the offer, and
/// declares the file complete only when what it wrote is the file (the BLAKE3 check catches a
/// forged part that carried a valid CRC).
pub fn transfer_hostile_datagrams(data: &[u8], start: Instant) {
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};

    use crate::transfer::receiver::{Receiver, ReceiverConfig, ReceiverState};
    use crate::transfer::sender::{Sender, SenderConfig, SenderInput, SenderOutput};
    use crate::wire::datagram::{MAX_PARTS_PER_REQUEST, MAX_REQUEST_PAYLOAD};

    const TOKEN: u64 = 0x5c1e_0f3a_9b2d_4e71;
    const PART_SIZE: u16 = 512;
    let size: u64 = 3000;
    let file: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let digest = *blake3::hash(&file).as_bytes();
    let client_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut sender = Sender::new(
        SenderConfig {
            token: TOKEN,
            seal: None,
            peer_ip: client_ip,
            size,
            part_size: PART_SIZE,
            idle_timeout: Duration::from_secs(10),
            early: None,
        },
        start,
    );
    let mut receiver = Receiver::new(ReceiverConfig::new(TOKEN, size, PART_SIZE, digest), start);
    let mut written = vec![0u8; size as usize];
    let mut now = start;
    let mut input = data;
    let mut out = [0u8; 4096];
    while let Some((&len, rest)) = input.split_first() {
        let take = usize::from(len).min(rest.len());
        let (chunk, rest) = rest.split_at(take);
        input = rest;
        now += Duration::from_millis(u64::from(len % 16));
        let kind = chunk.first().copied().unwrap_or(0);
        let datagram: Vec<u8> = match kind % 4 {
            // A real part (true bytes, or forged ones with a valid CRC).
            0 | 1 => {
                let part = u32::from(chunk.get(1).copied().unwrap_or(0) % 7);
                let offset = (u64::from(part) * u64::from(PART_SIZE)).min(size) as usize;
                let end = (offset + usize::from(PART_SIZE)).min(size as usize);
                let mut payload = file[offset..end].to_vec();
                if kind % 4 == 1
                    && let Some(b) = payload.first_mut()
                {
                    *b ^= 0x55;
                }
                datagram::encode_part(TOKEN, u32::from(kind), part, &payload)
            }
            // A request with ranges taken from the chunk.
            2 => {
                let ranges: Vec<(u32, u32)> = chunk[1..]
                    .chunks(2)
                    .take(MAX_PARTS_PER_REQUEST)
                    .map(|p| {
                        let a = u32::from(p[0]) % 9;
                        let b = a + u32::from(p.get(1).copied().unwrap_or(0)) % 9;
                        (a, b)
                    })
                    .collect();
                let n = datagram::encode_request(TOKEN, u32::from(len), &ranges, &mut out);
                out[..n].to_vec()
            }
            _ => hostile_with_token(TOKEN, kind, chunk),
        };
        // At the sender, from the client's address or from a stranger.
        let port = if kind & 0x80 == 0 { 4000 } else { 4001 };
        let ip = if kind & 0x40 == 0 { client_ip } else { IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)) };
        sender.handle_input(
            now,
            SenderInput::Datagram { from: SocketAddr::new(ip, port), bytes: &datagram },
        );
        let mut parts_this_request = 0usize;
        let mut bytes_this_request = 0u64;
        while let Some(output) = sender.poll_output() {
            if let SenderOutput::SendPart { offset, len, .. } = output {
                assert!(offset + len as u64 <= size, "read past the end of the file");
                parts_this_request += 1;
                bytes_this_request += len as u64;
            }
        }
        assert!(parts_this_request <= MAX_PARTS_PER_REQUEST);
        assert!(bytes_this_request <= MAX_REQUEST_PAYLOAD);
        if sender.poll_timeout().is_some_and(|at| at <= now) {
            sender.handle_timeout(now);
        }

        // At the receiver, as the runtime would: write what is accepted, hash in order.
        let mut datagram = datagram;
        if let Some(accept) = receiver.handle_datagram(now, &mut datagram) {
            let payload = &datagram[accept.payload.clone()];
            let expected_len = (size - accept.offset).min(u64::from(PART_SIZE)) as usize;
            assert_eq!(accept.offset, u64::from(accept.part) * u64::from(PART_SIZE));
            assert_eq!(payload.len(), expected_len, "accepted a part of the wrong size");
            let at = accept.offset as usize;
            written[at..at + payload.len()].copy_from_slice(payload);
            while let Some((offset, len)) = receiver.next_to_hash() {
                let at = offset as usize;
                receiver.hash(offset, &written[at..at + len]);
            }
        }
        while receiver.poll_transmit(now, &mut out).is_some() {}
        if receiver.poll_timeout().is_some_and(|at| at <= now) {
            receiver.handle_timeout(now);
        }
        if receiver.state() == ReceiverState::Complete {
            assert_eq!(written, file, "declared complete with wrong bytes");
        }
    }
}

/// A datagram from the chunk's bytes that carries `token` (see [`transfer_hostile_datagrams`]).
fn hostile_with_token(token: u64, kind: u8, chunk: &[u8]) -> Vec<u8> {
    use crate::wire::datagram::{AbortCode, HEADER_LEN};

    let body = chunk.get(1..).unwrap_or(&[]);
    let word = |at: usize| {
        let mut b = [0u8; 4];
        for (i, out) in b.iter_mut().enumerate() {
            *out = body.get(at + i).copied().unwrap_or(0);
        }
        u32::from_be_bytes(b)
    };
    let mut dgram = match (kind >> 2) % 4 {
        0 => return chunk.to_vec(),
        // Any part index, req_seq and payload length, with a valid CRC.
        1 => datagram::encode_part(token, word(0), word(4), body.get(8..).unwrap_or(&[])),
        2 => {
            let reason = String::from_utf8_lossy(body.get(2..).unwrap_or(&[]));
            let mut out = vec![0u8; datagram::abort_len(&reason)];
            let code = AbortCode::from(word(0) as u16);
            datagram::encode_abort(token, code, &reason, &mut out);
            out
        }
        // The real header (magic, version, token) with the kind byte and the body from the chunk.
        _ => {
            let mut out = vec![0u8; datagram::FINISHED_LEN];
            datagram::encode_finished(token, &mut out);
            out.truncate(HEADER_LEN);
            out[3] = body.first().copied().unwrap_or(0) % 6;
            out.extend_from_slice(body.get(1..).unwrap_or(&[]));
            datagram::reseal(&mut out);
            out
        }
    };
    if kind & 0x10 != 0 && !dgram.is_empty() {
        let at = usize::from(body.first().copied().unwrap_or(0)) % dgram.len();
        dgram[at] ^= body.get(1).copied().unwrap_or(1) | 1;
        datagram::reseal(&mut dgram);
    }
    dgram
}
