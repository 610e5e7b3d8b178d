//! P1 for sealed datagrams (PROTOCOL 2.7): the codec and a sealed transfer under hostile input.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::transfer::receiver::{Receiver, ReceiverConfig, ReceiverState, TRANSMIT_BUF_LEN};
use crate::transfer::sender::{Sender, SenderConfig, SenderInput, SenderOutput};
use crate::wire::datagram::{AbortCode, Datagram, MAX_PARTS_PER_REQUEST};
use crate::wire::sealed::{self, SEALED_HEADER_LEN, SealKey};

const TOKEN: u64 = 0x5c1e_0f3a_9b2d_4e71;
const PART_SIZE: u16 = 512;
const SIZE: u64 = 3000;

/// Sealed datagrams at both ends of a transfer. The input is a series of length-prefixed chunks
/// whose first byte (`kind`) says what each becomes, `kind % 4`: 0, a true PART sealed with the
/// transfer's key (any `req_seq`, part `chunk[1] % 7`); 1, a REQUEST sealed with the key, ranges
/// from the chunk (overlapping ones too); 2, a datagram of any kind, fields and body from the
/// chunk, sealed with the key (PART excepted: only the server seals parts) or with another key;
/// 3, a replay of an earlier datagram. Bit 4 of `kind` then flips one byte of the datagram. Both
/// ends also talk to each other as they would. Invariants: no panic; anything that opens under
/// the key seals back to the same bytes, and no changed byte opens; the sender never orders one
/// (`req_seq`, part) twice (one nonce, one message) and reads inside the file; the receiver
/// accepts only the file's true bytes and is complete only with the whole file.
pub fn sealed_datagrams(data: &[u8], start: Instant) {
    let key = SealKey::new(&[0x4b; 32]);
    let stranger = SealKey::new(&[0x66; 32]);
    let file: Vec<u8> = (0..SIZE).map(|i| (i * 37 % 253) as u8).collect();
    let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
    let mut sender = Sender::new(
        SenderConfig {
            token: TOKEN,
            seal: Some(key.clone()),
            peer_ip: client.ip(),
            size: SIZE,
            part_size: PART_SIZE,
            idle_timeout: Duration::from_secs(10),
            early: None,
        },
        start,
    );
    let mut config = ReceiverConfig::new(TOKEN, SIZE, PART_SIZE, *blake3::hash(&file).as_bytes());
    config.seal = Some(key.clone());
    let mut receiver = Receiver::new(config, start);
    let mut written = vec![0u8; SIZE as usize];
    let mut nonces: HashSet<(u32, u32)> = HashSet::new();
    let mut history: Vec<Vec<u8>> = Vec::new();
    let mut now = start;
    let mut input = data;
    while let Some((&len, rest)) = input.split_first() {
        let take = usize::from(len).min(rest.len());
        let (chunk, rest) = rest.split_at(take);
        input = rest;
        now += Duration::from_millis(u64::from(len % 8));
        let kind = chunk.first().copied().unwrap_or(0);
        let byte = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let word = |i: usize| u32::from_be_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]);
        let mut datagram = match kind % 4 {
            0 => true_part(&key, &file, word(2), u32::from(byte(1) % 7)),
            1 => {
                let ranges: Vec<(u32, u32)> = chunk[1.min(chunk.len())..]
                    .chunks(2)
                    .take(MAX_PARTS_PER_REQUEST)
                    .map(|p| {
                        let a = u32::from(p[0]) % 9;
                        (a, a + u32::from(p.get(1).copied().unwrap_or(0)) % 9)
                    })
                    .collect();
                let mut buf = vec![0u8; sealed::request_len(ranges.len())];
                let n = sealed::encode_request(&key, u32::from(len), &ranges, &mut buf);
                buf.truncate(n);
                buf
            }
            2 => any_sealed(if byte(1) & 1 == 0 { &key } else { &stranger }, chunk),
            _ => match history.len() {
                0 => chunk.to_vec(),
                n => history[usize::from(byte(1)) % n].clone(),
            },
        };
        check_codec(&key, &datagram);
        if kind & 0x10 != 0 && !datagram.is_empty() {
            // One byte changed in a datagram that opened must not open. (Changing a replayed,
            // already changed datagram may change it back: that one opens, rightly.)
            let opened = sealed::open(&key, TOKEN, &mut datagram.clone()).is_ok();
            let at = usize::from(byte(1)) % datagram.len();
            datagram[at] ^= byte(2) | 1;
            let opens = sealed::open(&key, TOKEN, &mut datagram.clone()).is_ok();
            assert!(!(opened && opens), "a changed byte opened");
        }
        history.push(datagram.clone());
        if history.len() > 64 {
            history.remove(0);
        }
        sender.handle_input(now, SenderInput::Datagram { from: client, bytes: &datagram });
        let mut to_client = vec![datagram];
        drain_sender(&mut sender, &key, &file, &mut nonces, &mut to_client);
        for mut d in to_client {
            deliver(&mut receiver, now, &mut d, &file, &mut written);
        }
        // The real exchange: the receiver's requests reach the sender, its parts come back.
        let mut buf = [0u8; TRANSMIT_BUF_LEN];
        let mut to_server = Vec::new();
        while let Some(n) = receiver.poll_transmit(now, &mut buf) {
            to_server.push(buf[..n].to_vec());
            if to_server.len() > 16 {
                break;
            }
        }
        for d in to_server {
            check_codec(&key, &d);
            sender.handle_input(now, SenderInput::Datagram { from: client, bytes: &d });
        }
        let mut to_client = Vec::new();
        drain_sender(&mut sender, &key, &file, &mut nonces, &mut to_client);
        for mut d in to_client {
            deliver(&mut receiver, now, &mut d, &file, &mut written);
        }
        if receiver.poll_timeout().is_some_and(|at| at <= now) {
            receiver.handle_timeout(now);
        }
        if sender.poll_timeout().is_some_and(|at| at <= now) {
            sender.handle_timeout(now);
        }
    }
    if receiver.state() == ReceiverState::Complete {
        assert!(written == file, "complete with wrong bytes");
    }
}

/// A PART of the file's true bytes, sealed as the server seals it.
fn true_part(key: &SealKey, file: &[u8], req_seq: u32, part: u32) -> Vec<u8> {
    let offset = (part as usize * usize::from(PART_SIZE)).min(file.len());
    let end = (offset + usize::from(PART_SIZE)).min(file.len());
    let mut buf = vec![0u8; sealed::part_len(end - offset)];
    buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + end - offset].copy_from_slice(&file[offset..end]);
    sealed::seal_part(key, &mut buf, req_seq, part, end - offset);
    buf
}

/// Any kind but PART, fields and body from the chunk, sealed with `key`: bodies that break the
/// kind's rules (bad range counts, inverted or overlapping ranges, a FINISHED with a body, an ABORT
/// reason that is not UTF-8) reach the parser behind a valid tag.
fn any_sealed(key: &SealKey, chunk: &[u8]) -> Vec<u8> {
    let kind = [1u8, 3, 4][usize::from(chunk.get(2).copied().unwrap_or(0) % 3)];
    let body = chunk.get(3..).unwrap_or(&[]);
    let mut buf = vec![0u8; sealed::request_len(body.len().div_ceil(8))];
    let n = match kind {
        1 => {
            let ranges: Vec<(u32, u32)> = body
                .chunks(8)
                .take(MAX_PARTS_PER_REQUEST)
                .map(|p| {
                    let w = |i: usize| u32::from(p.get(i).copied().unwrap_or(0));
                    (w(0) << 8 | w(1), w(2) << 8 | w(3))
                })
                .filter(|(a, b)| a <= b)
                .collect();
            sealed::encode_request(key, u32::from(body.len() as u8), &ranges, &mut buf)
        }
        3 => sealed::encode_finished(key, &mut buf),
        _ => {
            let reason = String::from_utf8_lossy(body);
            let code = AbortCode::from(u16::from(chunk.get(1).copied().unwrap_or(0)));
            let mut abort = vec![0u8; sealed::abort_len(&reason)];
            let n = sealed::encode_abort(key, code, &reason, &mut abort);
            abort.truncate(n);
            return abort;
        }
    };
    buf.truncate(n);
    buf
}

/// Whatever opens under `key` seals back to exactly the same bytes (the AEAD is deterministic
/// for a nonce), so a datagram has one meaning.
fn check_codec(key: &SealKey, datagram: &[u8]) {
    let mut copy = datagram.to_vec();
    let Ok(opened) = sealed::open(key, TOKEN, &mut copy) else {
        return;
    };
    let mut again = vec![0u8; datagram.len()];
    let n = match opened {
        Datagram::Part(p) => {
            again[SEALED_HEADER_LEN..SEALED_HEADER_LEN + p.data.len()].copy_from_slice(p.data);
            sealed::seal_part(key, &mut again, p.req_seq, p.part, p.data.len())
        }
        Datagram::Request(r) => sealed::encode_request(key, r.req_seq, &r.ranges, &mut again),
        Datagram::Finished { .. } => sealed::encode_finished(key, &mut again),
        Datagram::Abort(a) => sealed::encode_abort(key, a.code, a.reason, &mut again),
    };
    assert_eq!(&again[..n], datagram, "a sealed datagram does not seal back to itself");
}

/// Takes the sender's orders, checking that no (req_seq, part) repeats, and seals what it asks.
fn drain_sender(
    sender: &mut Sender,
    key: &SealKey,
    file: &[u8],
    nonces: &mut HashSet<(u32, u32)>,
    out: &mut Vec<Vec<u8>>,
) {
    while let Some(output) = sender.poll_output() {
        match output {
            SenderOutput::SendPart { req_seq, part, offset, len, .. } => {
                assert!(offset + len as u64 <= SIZE, "read past the end of the file");
                assert!(nonces.insert((req_seq, part)), "part {part} sealed twice for {req_seq}");
                out.push(true_part(key, file, req_seq, part));
            }
            SenderOutput::SendDatagram { bytes, .. } => {
                assert!(bytes.get(2) == Some(&sealed::SEALED_VERSION), "a sealed sender's ABORT");
                out.push(bytes);
            }
            SenderOutput::Done(_) => {}
        }
    }
}

fn deliver(r: &mut Receiver, now: Instant, d: &mut [u8], file: &[u8], written: &mut [u8]) {
    let Some(accept) = r.handle_datagram(now, d) else {
        return;
    };
    let at = accept.offset as usize;
    let payload = &d[accept.payload];
    assert_eq!(payload, &file[at..at + payload.len()], "accepted bytes nobody sealed");
    written[at..at + payload.len()].copy_from_slice(payload);
    while let Some((offset, n)) = r.next_to_hash() {
        r.hash(offset, &written[offset as usize..offset as usize + n]);
    }
}
