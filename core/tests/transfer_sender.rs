//! Scripted sessions with the server side of a transfer. PROTOCOL 2.1-2.2; TEST-CATALOGUE U1-U3,
//! U7, U8. Transcripts are insta snapshots: one line per thing the sender asks the runtime to do.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::fmt::Write;
use std::time::{Duration, Instant};

use natter_core::transfer::sender::{
    MAX_OWED_PARTS, Sender, SenderConfig, SenderEnd, SenderInput, SenderOutput,
};
use natter_core::wire::datagram::{self, AbortCode, Datagram, Version};

const TOKEN: u64 = 0x5c1e_0f3a_9b2d_4e71;
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn client() -> SocketAddr {
    SocketAddr::new(CLIENT_IP, 40_000)
}

fn sender(size: u64, part_size: u16, now: Instant) -> Sender {
    Sender::new(
        SenderConfig {
            token: TOKEN,
            peer_ip: CLIENT_IP,
            size,
            part_size,
            idle_timeout: Duration::from_secs(10),
        },
        now,
    )
}

fn request(req_seq: u32, ranges: &[(u32, u32)]) -> Vec<u8> {
    let mut buf = vec![0; datagram::request_len(ranges.len())];
    datagram::encode_request(TOKEN, req_seq, ranges, &mut buf);
    buf
}

fn request_v1(req_seq: u32, ranges: &[(u32, u32)]) -> Vec<u8> {
    let mut buf = vec![0; datagram::request_len(ranges.len())];
    let n = datagram::encode_request_in(Version::V1, TOKEN, req_seq, ranges, &mut buf);
    buf.truncate(n);
    buf
}

fn finished(token: u64) -> Vec<u8> {
    let mut buf = vec![0; datagram::FINISHED_LEN];
    datagram::encode_finished(token, &mut buf);
    buf
}

/// Drains the sender's outputs into transcript lines.
fn drain(s: &mut Sender, log: &mut String) -> usize {
    let mut n = 0;
    while let Some(out) = s.poll_output() {
        n += 1;
        match out {
            SenderOutput::SendPart { version, to, req_seq, part, offset, len } => writeln!(
                log,
                "  send part {part} (req {req_seq}, offset {offset}, len {len}, {version:?}) to {to}"
            ),
            SenderOutput::SendDatagram { to, bytes } => match datagram::parse_versioned(&bytes) {
                Ok((version, Datagram::Abort(a))) => writeln!(
                    log,
                    "  send ABORT {} \"{}\" ({version:?}) to {to}",
                    u16::from(a.code),
                    a.reason
                ),
                other => writeln!(log, "  send unexpected {other:?}"),
            },
            SenderOutput::Done(end) => writeln!(log, "  done: {end:?}"),
        }
        .unwrap_or_default();
    }
    n
}

fn step(
    s: &mut Sender,
    now: Instant,
    from: SocketAddr,
    what: &str,
    bytes: &[u8],
    log: &mut String,
) {
    writeln!(log, "{what} from {from}").unwrap_or_default();
    s.handle_input(now, SenderInput::Datagram { from, bytes });
    if drain(s, log) == 0 {
        writeln!(log, "  (nothing)").unwrap_or_default();
    }
}

#[test]
fn answers_requests_and_finishes() {
    // PROTOCOL 3 example: a 1841-byte file in 1200-byte parts.
    let t0 = Instant::now();
    let mut s = sender(1841, 1200, t0);
    let mut log = String::new();
    step(&mut s, t0, client(), "REQUEST 0 [0-1]", &request(0, &[(0, 1)]), &mut log);
    step(&mut s, t0, client(), "FINISHED", &finished(TOKEN), &mut log);
    step(&mut s, t0, client(), "REQUEST 1 [0-0] after the end", &request(1, &[(0, 0)]), &mut log);
    assert!(s.is_done());
    assert_eq!(s.poll_timeout(), None);
    insta::assert_snapshot!(log);
}

#[test]
fn u2_answers_only_the_right_token_ip_and_first_address() {
    let t0 = Instant::now();
    let mut s = sender(10_000, 1000, t0);
    let mut log = String::new();
    let mut wrong_token = request(0, &[(0, 0)]);
    wrong_token[11] ^= 1;
    datagram::reseal(&mut wrong_token); // a well-formed datagram with another token
    step(&mut s, t0, client(), "REQUEST with a wrong token", &wrong_token, &mut log);
    let stranger = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40_000);
    step(&mut s, t0, stranger, "REQUEST 0 from another IP", &request(0, &[(0, 0)]), &mut log);
    step(&mut s, t0, client(), "REQUEST 0 [3-4]", &request(0, &[(3, 4)]), &mut log);
    let other_port = SocketAddr::new(CLIENT_IP, 40_001);
    step(
        &mut s,
        t0,
        other_port,
        "REQUEST 1 from the client's IP, another port",
        &request(1, &[(5, 5)]),
        &mut log,
    );
    step(&mut s, t0, other_port, "FINISHED from another port", &finished(TOKEN), &mut log);
    step(&mut s, t0, client(), "REQUEST 2 [5-5]", &request(2, &[(5, 5)]), &mut log);
    insta::assert_snapshot!(log);
}

#[test]
fn u3_duplicated_and_replayed_requests_send_nothing_more() {
    let t0 = Instant::now();
    let mut s = sender(10_000, 1000, t0);
    let req = request(4, &[(0, 1)]);
    s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &req });
    let mut log = String::new();
    assert_eq!(drain(&mut s, &mut log), 2);
    for _ in 0..10 {
        s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &req });
        assert_eq!(s.poll_output(), None);
    }
    // An older req_seq is a replay too.
    s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &request(3, &[(2, 2)]) });
    assert_eq!(s.poll_output(), None);
    assert_eq!(s.stats().requests_ignored, 11);
    assert_eq!(s.stats().parts_sent, 2);
}

#[test]
fn u3_req_seq_wraps_around_after_2_pow_32_requests() {
    // PROTOCOL 2.2: req_seq is a serial number. Before the fix the server compared it with `<=`
    // and ignored the client for the rest of the transfer once its counter wrapped to 0.
    let t0 = Instant::now();
    let mut s = sender(10_000, 1000, t0);
    let mut log = String::new();
    step(
        &mut s,
        t0,
        client(),
        "REQUEST 4294967294 [0-0]",
        &request(u32::MAX - 1, &[(0, 0)]),
        &mut log,
    );
    step(&mut s, t0, client(), "REQUEST 4294967295 [1-1]", &request(u32::MAX, &[(1, 1)]), &mut log);
    step(&mut s, t0, client(), "REQUEST 0 [2-2] (wrapped)", &request(0, &[(2, 2)]), &mut log);
    step(&mut s, t0, client(), "REQUEST 1 [3-3]", &request(1, &[(3, 3)]), &mut log);
    step(
        &mut s,
        t0,
        client(),
        "REQUEST 4294967295 replayed",
        &request(u32::MAX, &[(1, 1)]),
        &mut log,
    );
    assert_eq!(s.stats().requests_answered, 4);
    assert_eq!(s.stats().requests_ignored, 1);
    insta::assert_snapshot!(log);
}

#[test]
fn owed_parts_are_bounded_and_newer_requests_replace_the_oldest() {
    // Issue 10: the parts owed per transfer are bounded. Before the fix every REQUEST appended to
    // the queue, so requests arriving faster than parts left grew it without end.
    let t0 = Instant::now();
    let mut s = sender(1_000_000_000, 1000, t0);
    for req_seq in 0..1000u32 {
        let first = req_seq * 200;
        let req = request(req_seq, &[(first, first + 199)]);
        s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &req });
        // Only one part leaves between two requests, as when the socket is full.
        assert!(matches!(s.poll_output(), Some(SenderOutput::SendPart { .. })));
    }
    let mut rest = Vec::new();
    while let Some(SenderOutput::SendPart { req_seq, part, .. }) = s.poll_output() {
        rest.push((req_seq, part));
    }
    // What is left is the newest MAX_OWED_PARTS parts asked for (one of them was just sent), in
    // order, and nothing older.
    assert_eq!(rest.len() as u64, MAX_OWED_PARTS - 1);
    assert_eq!(rest.last(), Some(&(999, 999 * 200 + 199)));
    assert!(rest.windows(2).all(|w| w[0].1 < w[1].1));
    assert_eq!(s.stats().parts_replaced, 1000 * 200 - 1000 - (MAX_OWED_PARTS - 1));
}

#[test]
fn requests_that_arrive_together_are_all_answered() {
    // Back-to-back REQUESTs read in one server turn, before anything is sent: all answered.
    let t0 = Instant::now();
    let mut s = sender(10_000_000, 1000, t0);
    for req_seq in 0..4u32 {
        let req = request(req_seq, &[(req_seq * 10, req_seq * 10 + 9)]);
        s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &req });
    }
    let mut parts = Vec::new();
    while let Some(SenderOutput::SendPart { part, .. }) = s.poll_output() {
        parts.push(part);
    }
    assert_eq!(parts, (0..40).collect::<Vec<u32>>());
    assert_eq!(s.stats().parts_replaced, 0);
}

#[test]
fn a_version_1_client_is_served_in_version_1() {
    // PROTOCOL 5: a version-2 server still serves a version-1 client, answering in its version.
    let t0 = Instant::now();
    let mut s = sender(2500, 1000, t0);
    let mut log = String::new();
    step(&mut s, t0, client(), "REQUEST 0 [0-1] in version 1", &request_v1(0, &[(0, 1)]), &mut log);
    step(&mut s, t0, client(), "REQUEST 1 [9-9] in version 1", &request_v1(1, &[(9, 9)]), &mut log);
    insta::assert_snapshot!(log);
}

#[test]
fn u1_a_corrupted_request_gets_no_reply() {
    // Issue 10: REQUESTs carry a CRC32C (version 2). Before, a bit flipped in a range was
    // answered with parts nobody asked for, or with ABORT 2 that ended a healthy transfer.
    let t0 = Instant::now();
    let mut s = sender(100_000, 1000, t0);
    let good = request(0, &[(10, 20)]);
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &bad });
        assert_eq!(s.poll_output(), None, "bit {bit}");
    }
    assert_eq!(s.stats().requests_answered, 0);
    s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &good });
    assert!(matches!(s.poll_output(), Some(SenderOutput::SendPart { part: 10, .. })));
}

#[test]
fn answers_at_most_256_parts_per_request() {
    let t0 = Instant::now();
    let mut s = sender(1_000_000, 512, t0);
    s.handle_input(
        t0,
        SenderInput::Datagram { from: client(), bytes: &request(0, &[(0, 99), (200, 499)]) },
    );
    let mut parts = Vec::new();
    while let Some(SenderOutput::SendPart { part, .. }) = s.poll_output() {
        parts.push(part);
    }
    assert_eq!(parts.len(), 256);
    assert_eq!(parts[99], 99);
    assert_eq!(parts[100], 200);
    assert_eq!(parts.last(), Some(&355));
}

#[test]
fn answers_at_most_2_mib_per_request() {
    let t0 = Instant::now();
    let mut s = sender(10_000_000, 65_000, t0);
    s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &request(0, &[(0, 100)]) });
    let mut total = 0;
    let mut count = 0;
    while let Some(SenderOutput::SendPart { len, .. }) = s.poll_output() {
        total += len as u64;
        count += 1;
    }
    // 2 MiB / 65000 = 32.26: the first 32 parts.
    assert_eq!(count, 32);
    assert!(total <= 2 << 20);
}

#[test]
fn u1_part_past_the_end_is_answered_with_abort_2() {
    let t0 = Instant::now();
    let mut s = sender(2500, 1000, t0);
    let mut log = String::new();
    step(
        &mut s,
        t0,
        client(),
        "REQUEST 0 [0-0] [2-3] (3 parts exist)",
        &request(0, &[(0, 0), (2, 3)]),
        &mut log,
    );
    insta::assert_snapshot!(log);
}

#[test]
fn u1_garbage_never_panics_and_gets_no_reply() {
    let t0 = Instant::now();
    let mut s = sender(2500, 1000, t0);
    let mut x: u32 = 12345;
    for len in 0..2000usize {
        let bytes: Vec<u8> = (0..len % 64)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &bytes });
        assert_eq!(s.poll_output(), None);
    }
    // A PART or an ABORT sent to the server is dropped too.
    s.handle_input(
        t0,
        SenderInput::Datagram { from: client(), bytes: &datagram::encode_part(TOKEN, 0, 0, b"x") },
    );
    assert_eq!(s.poll_output(), None);
    assert_eq!(s.stats().dropped, 2001);
}

#[test]
fn u7_file_changed_sends_abort_1() {
    let t0 = Instant::now();
    let mut s = sender(2500, 1000, t0);
    let mut log = String::new();
    step(&mut s, t0, client(), "REQUEST 0 [0-0]", &request(0, &[(0, 0)]), &mut log);
    writeln!(log, "runtime: file changed").unwrap_or_default();
    s.handle_input(t0, SenderInput::FileChanged);
    drain(&mut s, &mut log);
    insta::assert_snapshot!(log);
}

#[test]
fn u8_idle_timeout_counts_from_offer_and_last_valid_request() {
    let t0 = Instant::now();
    let mut s = sender(2500, 1000, t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    let t1 = t0 + Duration::from_secs(4);
    s.handle_input(t1, SenderInput::Datagram { from: client(), bytes: &request(0, &[(0, 0)]) });
    drain(&mut s, &mut String::new());
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(10)));
    // A replayed request does not keep the port alive.
    s.handle_input(
        t1 + Duration::from_secs(5),
        SenderInput::Datagram { from: client(), bytes: &request(0, &[(0, 0)]) },
    );
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(10)));
    s.handle_timeout(t1 + Duration::from_secs(9));
    assert_eq!(s.poll_output(), None);
    s.handle_timeout(t1 + Duration::from_secs(10));
    let mut log = String::new();
    drain(&mut s, &mut log);
    assert!(s.is_done());
    insta::assert_snapshot!(log);
}

#[test]
fn idle_timeout_without_any_client_ends_silently() {
    let t0 = Instant::now();
    let mut s = sender(2500, 1000, t0);
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(s.poll_output(), Some(SenderOutput::Done(SenderEnd::TimedOut)));
    assert_eq!(s.poll_output(), None);
}

#[test]
fn empty_file_finishes_without_any_request() {
    let t0 = Instant::now();
    let mut s = sender(0, 1200, t0);
    s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &finished(TOKEN) });
    assert_eq!(s.poll_output(), Some(SenderOutput::Done(SenderEnd::Finished)));
    // Any request for an empty file is past its end.
    let mut s = sender(0, 1200, t0);
    s.handle_input(t0, SenderInput::Datagram { from: client(), bytes: &request(0, &[(0, 0)]) });
    assert!(matches!(s.poll_output(), Some(SenderOutput::SendDatagram { .. })));
    assert_eq!(s.poll_output(), Some(SenderOutput::Done(SenderEnd::Aborted(AbortCode::PastEnd))));
}
