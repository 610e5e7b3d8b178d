//! Scripted sessions with the server side of a transfer. PROTOCOL 2.1-2.2; TEST-CATALOGUE U1-U3,
//! U7, U8. Transcripts are insta snapshots: one line per thing the sender asks the runtime to do.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::fmt::Write;
use std::time::{Duration, Instant};

mod hostile;

use hostile::{Mix, Offer};
use natter_core::chat::server::EarlyStart;
use natter_core::sim::rng::SplitMix64;
use natter_core::transfer::sender::{
    MAX_OWED_PARTS, Sender, SenderConfig, SenderEnd, SenderInput, SenderOutput,
};
use natter_core::wire::chat::EarlyFlight;
use natter_core::wire::datagram::{self, AbortCode, Datagram, Version};

const TOKEN: u64 = 0x5c1e_0f3a_9b2d_4e71;
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn client() -> SocketAddr {
    SocketAddr::new(CLIENT_IP, 40_000)
}

fn sender(size: u64, part_size: u16, now: Instant) -> Sender {
    Sender::new(config(size, part_size), now)
}

fn config(size: u64, part_size: u16) -> SenderConfig {
    SenderConfig {
        token: TOKEN,
        seal: None,
        peer_ip: CLIENT_IP,
        size,
        part_size,
        idle_timeout: Duration::from_secs(10),
        early: None,
    }
}

/// A sender whose offer came with an early flight of `parts` at `rate` bytes per second to the
/// chat connection's address `to` (PROTOCOL 2.1).
fn early_sender(size: u64, part_size: u16, parts: u32, rate: u32, to: SocketAddr) -> Sender {
    let early = EarlyFlight { parts, rate }
        .bounded(u32::try_from(size.div_ceil(u64::from(part_size))).unwrap_or(u32::MAX), part_size)
        .map(|flight| EarlyStart { to, flight });
    Sender::new(SenderConfig { early, ..config(size, part_size) }, T0.with(|t| *t))
}

thread_local! {
    static T0: Instant = Instant::now();
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

/// What the server must answer to one datagram, by the rules of PROTOCOL 2.2: the reference
/// the sender is checked against.
#[derive(Debug, Default)]
struct Model {
    n_parts: u32,
    part_size: u16,
    size: u64,
    peer: Option<SocketAddr>,
    last_req_seq: Option<u32>,
    ended: bool,
}

/// One reply, as the model predicts it (an ABORT by its code; its reason is for people).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Part { to: SocketAddr, req_seq: u32, part: u32, offset: u64, len: usize },
    Abort { to: SocketAddr, code: AbortCode },
    Done(SenderEnd),
}

impl Model {
    fn part_len(&self, i: u32) -> usize {
        let start = u64::from(i) * u64::from(self.part_size);
        (self.size - start).min(u64::from(self.part_size)) as usize
    }

    fn expect(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Reply> {
        if self.ended || from.ip() != CLIENT_IP || self.peer.is_some_and(|p| p != from) {
            return vec![];
        }
        let req = match datagram::parse(bytes) {
            Ok(d) if d.token() != TOKEN => return vec![],
            Ok(Datagram::Request(req)) => req,
            Ok(Datagram::Finished { .. }) => {
                self.ended = true;
                return vec![Reply::Done(SenderEnd::Finished)];
            }
            _ => return vec![],
        };
        // U3: a replay, not newer in serial-number order (RFC 1982).
        if self.last_req_seq.is_some_and(|last| {
            let ahead = req.req_seq.wrapping_sub(last);
            ahead == 0 || ahead >= 1 << 31
        }) {
            return vec![];
        }
        self.peer = Some(from);
        if req.ranges.iter().any(|&(_, last)| last >= self.n_parts) {
            self.ended = true;
            let code = AbortCode::PastEnd;
            return vec![Reply::Abort { to: from, code }, Reply::Done(SenderEnd::Aborted(code))];
        }
        self.last_req_seq = Some(req.req_seq);
        // The first parts, in order, up to 256 parts and 2 MiB of payload.
        let mut replies = Vec::new();
        let mut bytes_left = datagram::MAX_REQUEST_PAYLOAD;
        'ranges: for (first, last) in req.ranges {
            for part in first..=last {
                let len = self.part_len(part);
                if replies.len() == datagram::MAX_PARTS_PER_REQUEST || len as u64 > bytes_left {
                    break 'ranges;
                }
                bytes_left -= len as u64;
                let offset = u64::from(part) * u64::from(self.part_size);
                replies.push(Reply::Part { to: from, req_seq: req.req_seq, part, offset, len });
            }
        }
        replies
    }
}

/// What the sender answered, in the model's terms.
fn replies(s: &mut Sender) -> Vec<Reply> {
    let mut out = Vec::new();
    while let Some(o) = s.poll_output() {
        out.push(match o {
            SenderOutput::SendPart { to, req_seq, part, offset, len, .. } => {
                Reply::Part { to, req_seq, part, offset, len }
            }
            SenderOutput::SendDatagram { to, bytes } => match datagram::parse(&bytes) {
                Ok(Datagram::Abort(a)) if a.token == TOKEN => Reply::Abort { to, code: a.code },
                other => panic!("the sender sent {other:?}"),
            },
            SenderOutput::Done(end) => Reply::Done(end),
        });
    }
    out
}

/// How the hostile stream went, to show it reached every rule.
#[derive(Debug, Default)]
struct Reached {
    answered: u64,
    replayed: u64,
    past_end: u64,
    finished: u64,
    dropped: u64,
    parts: u64,
    /// Requests cut short by the 256-part or the 2 MiB bound.
    capped: u64,
}

/// 20,000 hostile datagrams (`hostile::datagram`: a real header most of the time, then a
/// well-formed or deliberately broken body) from the client, from its IP on another port, and
/// from a stranger; a new transfer whenever one ends. After each the sender answered exactly what
/// a reference model of PROTOCOL 2.2 says: the parts asked for, in order, capped at 256 parts and
/// 2 MiB; ABORT 2 for a range past the end; nothing for a replay, a stranger, a wrong token or
/// anything that does not parse; the end on FINISHED.
fn hostile_stream(seed: u64, size: u64, part_size: u16) -> Reached {
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let offer = Offer { token: TOKEN, content, part_size };
    let fresh = || Model { n_parts: offer.n_parts(), part_size, size, ..Model::default() };
    let mut rng = SplitMix64::new(seed);
    let mut now = Instant::now();
    let mut s = sender(size, part_size, now);
    let mut model = fresh();
    let mut reached = Reached::default();
    let other_port = SocketAddr::new(CLIENT_IP, 40_001);
    let stranger = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40_000);
    for i in 0..20_000 {
        let (mut bytes, _) = hostile::datagram_of(&mut rng, &offer, Mix::AT_SERVER);
        // Half the well-formed REQUESTs carry the next req_seq, as a live client's do: replays
        // are common enough without them, and a transfer should get far.
        if let Ok(Datagram::Request(req)) = datagram::parse(&bytes)
            && rng.below(2) == 0
        {
            let next = model.last_req_seq.map_or(0, |s| s.wrapping_add(1));
            let len = datagram::encode_request(req.token, next, &req.ranges, &mut bytes);
            bytes.truncate(len);
        }
        // Another port of the client's IP only once a REQUEST has locked the client's address
        // (before, it would lock that port instead, which is U2's own test).
        let from = match rng.below(20) {
            0 => stranger,
            1 if model.peer.is_some() => other_port,
            _ => client(),
        };
        now += Duration::from_millis(rng.below(3));
        let before = s.stats();
        let want = model.expect(from, &bytes);
        s.handle_input(now, SenderInput::Datagram { from, bytes: &bytes });
        let got = replies(&mut s);
        assert_eq!(got, want, "#{i} from {from}: {bytes:02x?}");
        let after = s.stats();
        reached.answered += after.requests_answered - before.requests_answered;
        reached.replayed += after.requests_ignored - before.requests_ignored;
        reached.dropped += after.dropped - before.dropped;
        let parts = got.iter().filter(|r| matches!(r, Reply::Part { .. })).count() as u64;
        reached.parts += parts;
        let full = (parts + 1) * u64::from(part_size) > datagram::MAX_REQUEST_PAYLOAD;
        reached.capped += u64::from(parts == datagram::MAX_PARTS_PER_REQUEST as u64 || full);
        match got.last() {
            Some(Reply::Done(end)) => {
                match end {
                    SenderEnd::Finished => reached.finished += 1,
                    _ => reached.past_end += 1,
                }
                s = sender(size, part_size, now);
                model = fresh();
            }
            _ => assert!(!s.is_done()),
        }
    }
    reached
}

// U1, U2, U3, P1 / PROTOCOL 2.2: see `hostile_stream`.
#[test]
fn u1_hostile_datagrams_get_exactly_the_replies_the_rules_allow() {
    // Small parts: the 256-part bound caps long requests. Large ones: the 2 MiB bound does.
    for (seed, size, part_size) in [(1, 10_000, 512), (2, 400_000, 9000)] {
        let r = hostile_stream(seed, size, part_size);
        eprintln!("{part_size}-byte parts: {r:?}");
        assert!(r.answered >= 1500 && r.parts >= 10_000, "{part_size}: {r:?}");
        assert!(r.replayed >= 500 && r.dropped >= 3000, "{part_size}: {r:?}");
        assert!(r.past_end >= 100 && r.finished >= 50 && r.capped >= 100, "{part_size}: {r:?}");
    }
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

/// Lets the pacing of an early flight run until `at` and logs what went out.
fn paced(s: &mut Sender, at: Instant, t0: Instant, log: &mut String) {
    s.handle_timeout(at);
    let mut parts = Vec::new();
    while let Some(out) = s.poll_output() {
        match out {
            SenderOutput::SendPart { part, req_seq, to, .. } => parts.push((part, req_seq, to)),
            other => writeln!(log, "  unexpected {other:?}").unwrap_or_default(),
        }
    }
    let ms = at.duration_since(t0).as_secs_f64() * 1000.0;
    if parts.is_empty() {
        writeln!(log, "at {ms:.3} ms: (nothing)").unwrap_or_default();
    }
    // One line per run of consecutive parts to one address: (first part, its req_seq, where),
    // (last part, its req_seq).
    type Run = ((u32, u32, SocketAddr), (u32, u32));
    let mut runs: Vec<Run> = Vec::new();
    for (part, req_seq, to) in parts {
        match runs.last_mut() {
            Some((first, last)) if last.0 + 1 == part && first.2 == to => *last = (part, req_seq),
            _ => runs.push(((part, req_seq, to), (part, req_seq))),
        }
    }
    for ((first, first_req, to), (last, last_req)) in runs {
        writeln!(log, "at {ms:.3} ms: parts {first}-{last} (req {first_req}-{last_req}) to {to}")
            .unwrap_or_default();
    }
}

/// PROTOCOL 2.1, the early flight: the first early request (16 parts) goes out with the offer,
/// the rest one part every `part_size / rate` (here 1000 bytes at 1 MB/s: one a millisecond) to
/// the chat connection's address, with `req_seq` counting early requests of 16 parts. The timer
/// asks for each part; a REQUEST from another port of the client's IP locks the peer there and
/// what is left of the flight follows it; the client's REQUESTs must come after the early ones,
/// and their parts wait until the flight is out.
#[test]
fn an_early_flight_is_paced_to_the_chat_address_until_a_request_moves_it() {
    let t0 = T0.with(|t| *t);
    let chat = SocketAddr::new(CLIENT_IP, 50_123);
    let mut s = early_sender(100_000, 1000, 40, 1_000_000, chat);
    let mut log = String::new();
    assert!(s.peer() == Some(chat));
    let ms = |n: u64| t0 + Duration::from_millis(n);
    paced(&mut s, t0, t0, &mut log);
    writeln!(log, "next timer at {:?}", s.poll_timeout().map(|at| at.duration_since(t0)))
        .unwrap_or_default();
    paced(&mut s, ms(1), t0, &mut log);
    paced(&mut s, ms(5), t0, &mut log);
    paced(&mut s, ms(5), t0, &mut log);
    step(
        &mut s,
        ms(6),
        client(),
        "REQUEST 2 [90-91] (an early req_seq)",
        &request(2, &[(90, 91)]),
        &mut log,
    );
    step(
        &mut s,
        ms(6),
        client(),
        "REQUEST 3 [90-91] (the first of the client's own)",
        &request(3, &[(90, 91)]),
        &mut log,
    );
    paced(&mut s, ms(30), t0, &mut log);
    step(&mut s, ms(30), client(), "REQUEST 4 [92-92]", &request(4, &[(92, 92)]), &mut log);
    assert_eq!(s.poll_timeout(), Some(ms(30) + Duration::from_secs(10)), "only the idle deadline");
    insta::assert_snapshot!(log);
}

/// What a server sends early is bounded whatever the client asks: the file's parts, 1024 parts,
/// 1 MiB, and at most 125 MB/s; FINISHED stops the flight.
#[test]
fn an_early_flight_is_bounded_and_ends_with_finished() {
    let t0 = T0.with(|t| *t);
    let chat = SocketAddr::new(CLIENT_IP, 50_123);
    let mut s = early_sender(5_000, 1000, u32::MAX, u32::MAX, chat);
    let mut log = String::new();
    paced(&mut s, t0 + Duration::from_secs(1), t0, &mut log);
    paced(&mut s, t0 + Duration::from_secs(2), t0, &mut log);
    let mut s = early_sender(100_000_000, 512, u32::MAX, u32::MAX, chat);
    paced(&mut s, t0 + Duration::from_secs(1), t0, &mut log);
    let mut s = early_sender(100_000_000, 1000, 500, 1_000_000, chat);
    paced(&mut s, t0, t0, &mut log);
    step(&mut s, t0, chat, "FINISHED", &finished(TOKEN), &mut log);
    paced(&mut s, t0 + Duration::from_secs(1), t0, &mut log);
    insta::assert_snapshot!(log);
}
