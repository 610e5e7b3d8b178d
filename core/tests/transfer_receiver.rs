//! Scripted sessions with the client side of a transfer. PROTOCOL 2.2-2.3; TEST-CATALOGUE U4, U6.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

mod hostile;

use hostile::{Mix, Offer};
use natter_core::chat::server::EarlyStart;
use natter_core::sim::rng::SplitMix64;
use natter_core::transfer::congestion::ControllerKind;
use natter_core::transfer::parts::ResumeError;
use natter_core::transfer::receiver::{
    Accept, EarlyAsked, Receiver, ReceiverConfig, ReceiverState, TransferError,
};
use natter_core::transfer::sender::{Sender, SenderConfig, SenderInput, SenderOutput};
use natter_core::wire::chat::EarlyFlight;
use natter_core::wire::datagram::{self, AbortCode, Datagram, MAX_REQUEST_LEN, Version};

const TOKEN: u64 = 0x0123_4567_89ab_cdef;
/// The client's UDP address, as the server sees it.
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 40_000);

fn file(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// One copy of each request, so the transcripts below show each request once; the copies have
/// their own test.
fn config(content: &[u8], part_size: u16) -> ReceiverConfig {
    let mut c = ReceiverConfig::new(
        TOKEN,
        content.len() as u64,
        part_size,
        *blake3::hash(content).as_bytes(),
    );
    c.request_copies = 1;
    c
}

fn part(content: &[u8], part_size: usize, req_seq: u32, i: u32) -> Vec<u8> {
    let start = i as usize * part_size;
    let end = (start + part_size).min(content.len());
    datagram::encode_part(TOKEN, req_seq, i, &content[start..end])
}

/// Sends whatever the receiver wants to send now; returns the parsed requests.
fn transmit(r: &mut Receiver, now: Instant) -> Vec<(u32, Vec<(u32, u32)>)> {
    let mut buf = [0u8; MAX_REQUEST_LEN];
    let mut out = Vec::new();
    while let Some(n) = r.poll_transmit(now, &mut buf) {
        match datagram::parse(&buf[..n]) {
            Ok(Datagram::Request(req)) => out.push((req.req_seq, req.ranges)),
            Ok(Datagram::Finished { .. }) => out.push((u32::MAX, Vec::new())),
            other => panic!("receiver sent {other:?}"),
        }
    }
    out
}

/// Feeds a part, writes and hashes it like a runtime would.
fn deliver(r: &mut Receiver, now: Instant, dgram: &[u8], written: &mut [u8]) -> Option<Accept> {
    let mut dgram = dgram.to_vec();
    let acc = r.handle_datagram(now, &mut dgram)?;
    let at = acc.offset as usize;
    written[at..at + acc.payload.len()].copy_from_slice(&dgram[acc.payload.clone()]);
    while let Some((offset, len)) = r.next_to_hash() {
        let at = offset as usize;
        r.hash(offset, &written[at..at + len]);
    }
    Some(acc)
}

fn parts_of(ranges: &[(u32, u32)]) -> Vec<u32> {
    ranges.iter().flat_map(|&(a, b)| a..=b).collect()
}

#[test]
fn happy_path_transcript() {
    // A 5-part file answered perfectly, 10 ms round trips.
    let content = file(4 * 1000 + 321);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), t0);
    let mut written = vec![0; content.len()];
    let mut log = String::new();
    let mut now = t0;
    for _ in 0..4 {
        let reqs = transmit(&mut r, now);
        now += Duration::from_millis(10);
        for (seq, ranges) in reqs {
            if seq == u32::MAX {
                writeln!(log, "send FINISHED").unwrap_or_default();
                continue;
            }
            writeln!(log, "send REQUEST {seq} {ranges:?}").unwrap_or_default();
            for i in parts_of(&ranges) {
                let acc = deliver(&mut r, now, &part(&content, 1000, seq, i), &mut written);
                writeln!(log, "  part {i} (req {seq}) -> {acc:?}").unwrap_or_default();
            }
        }
        writeln!(log, "state {:?}", r.state()).unwrap_or_default();
    }
    assert!(written == content);
    assert_eq!(r.state(), ReceiverState::Complete);
    insta::assert_snapshot!(log);
}

#[test]
fn duplicates_corrupt_and_impossible_parts_are_dropped() {
    let content = file(2500);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), t0);
    let mut written = vec![0; content.len()];
    assert_eq!(transmit(&mut r, t0), vec![(0, vec![(0, 2)])]);
    let good = part(&content, 1000, 0, 0);
    assert!(deliver(&mut r, t0, &good, &mut written).is_some());
    assert_eq!(deliver(&mut r, t0, &good, &mut written), None, "duplicate");
    let mut corrupt = part(&content, 1000, 0, 1);
    corrupt[30] ^= 4;
    assert_eq!(deliver(&mut r, t0, &corrupt, &mut written), None, "bad CRC");
    // Wrong size for the offer: part 1 must be 1000 bytes, the last part 500.
    let short = datagram::encode_part(TOKEN, 0, 1, &content[1000..1999]);
    assert_eq!(deliver(&mut r, t0, &short, &mut written), None, "short part");
    let long_last = datagram::encode_part(TOKEN, 0, 2, &content[1000..2000]);
    assert_eq!(deliver(&mut r, t0, &long_last, &mut written), None, "long last part");
    let past_end = datagram::encode_part(TOKEN, 0, 3, &content[..500]);
    assert_eq!(deliver(&mut r, t0, &past_end, &mut written), None, "index past end");
    let other_token = datagram::encode_part(TOKEN ^ 1, 0, 1, &content[1000..2000]);
    assert_eq!(deliver(&mut r, t0, &other_token, &mut written), None, "token");
    let p = r.progress();
    assert_eq!(p.duplicates, 1);
    assert_eq!(p.dropped, 5);
    assert_eq!(p.parts_received, 1);
    assert_eq!(r.state(), ReceiverState::Running);
}

/// PROTOCOL 2.6: a download that fails with wrong bytes sends FINISHED all the same, so the
/// server frees the port at once (before, it sent nothing and the port stayed held until the
/// server's idle timeout); an ABORTed one sends nothing, the server has ended it already.
#[test]
fn digest_mismatch_fails_and_frees_the_port_with_finished() {
    let content = file(3000);
    let mut cfg = config(&content, 1000);
    cfg.blake3[0] ^= 1;
    let t0 = Instant::now();
    let mut r = Receiver::new(cfg, t0);
    let mut written = vec![0; content.len()];
    transmit(&mut r, t0);
    for i in 0..3 {
        deliver(&mut r, t0, &part(&content, 1000, 0, i), &mut written);
    }
    assert_eq!(r.state(), ReceiverState::Failed(TransferError::DigestMismatch));
    assert_eq!(transmit(&mut r, t0), vec![(u32::MAX, Vec::new()); 3], "three FINISHED copies");
    assert!(!r.is_finishing());
}

#[test]
fn abort_from_server_fails_with_a_sanitised_reason() {
    let content = file(3000);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), t0);
    let mut buf = [0u8; 128];
    // S4: controls, the line separator and a bidi override are all shown as escapes. Before the
    // fix only controls were replaced, so U+2028 and U+202E reached the terminal.
    let reason = "gone\n\x1b[2Jfake\u{2028}next\u{202e}txt.exe";
    let n = datagram::encode_abort(TOKEN, AbortCode::FileChanged, reason, &mut buf);
    assert_eq!(r.handle_datagram(t0, &mut buf[..n]), None);
    assert_eq!(
        r.state(),
        ReceiverState::Failed(TransferError::Aborted {
            code: AbortCode::FileChanged,
            reason: "gone\\u{000a}\\u{001b}[2Jfake\\u{2028}next\\u{202e}txt.exe".into()
        })
    );
    assert_eq!(r.poll_timeout(), None);
    assert!(transmit(&mut r, t0).is_empty(), "the server ended it: no FINISHED");
}

#[test]
fn a_version_1_abort_is_not_believed() {
    // PROTOCOL 5: the client speaks version 2 and its server answers in it; a version-1 ABORT
    // has no checksum, so one that arrives is dropped like any other unchecked datagram.
    let content = file(3000);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), t0);
    let mut buf = [0u8; 128];
    let n = datagram::encode_abort_in(Version::V1, TOKEN, AbortCode::TimedOut, "x", &mut buf);
    assert_eq!(r.handle_datagram(t0, &mut buf[..n]), None);
    assert_eq!(r.state(), ReceiverState::Running);
}

#[test]
fn empty_file_completes_at_once_and_sends_finished() {
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&[], 1200), t0);
    assert_eq!(r.state(), ReceiverState::Complete);
    assert_eq!(transmit(&mut r, t0).len(), 3, "FINISHED three times");
}

#[test]
fn packet_threshold_declares_the_gap_lost_and_asks_again() {
    // 40 parts of 1000 bytes; the first request asks for the initial window (10 parts).
    let content = file(40_000);
    let t0 = Instant::now();
    let mut cfg = config(&content, 1000);
    cfg.controller = ControllerKind::NewReno;
    let mut r = Receiver::new(cfg, t0);
    let mut written = vec![0; content.len()];
    let first = transmit(&mut r, t0);
    assert_eq!(first, vec![(0, vec![(0, 9)])]);
    // Parts 0 and 2..=9 arrive; part 1 is missing, then 3 later parts are in.
    let t1 = t0 + Duration::from_millis(20);
    for i in [0, 2, 3, 4] {
        deliver(&mut r, t1, &part(&content, 1000, 0, i), &mut written);
    }
    assert_eq!(r.progress().parts_lost, 1);
    let mut asked = Vec::new();
    let mut now = t1;
    while asked.is_empty() && now < t1 + Duration::from_secs(1) {
        asked = transmit(&mut r, now);
        now = r.poll_timeout().unwrap_or(now).max(now);
    }
    // The lost part goes first, before new parts.
    assert_eq!(asked[0].1[0], (1, 1), "{asked:?}");
    assert_eq!(r.progress().parts_retransmitted, 1);
}

/// What a receiver asked for, and when.
type Asked = (Receiver, Instant, Vec<(u32, Vec<(u32, u32)>)>);

/// The first REQUEST's parts (the first ten, or the whole file) of `cfg.part_size`; those in
/// `lost` do not arrive, the others do. Returns what the receiver sends next, and when.
fn ask_all_and_lose(content: &[u8], cfg: ReceiverConfig, lost: &[u32]) -> Asked {
    let t0 = Instant::now();
    let part_size = cfg.part_size;
    let mut r = Receiver::new(cfg, t0);
    let mut written = vec![0; content.len()];
    let first = transmit(&mut r, t0);
    let [(0, ranges)] = &first[..] else { panic!("{first:?}") };
    let t1 = t0 + Duration::from_millis(20);
    for i in parts_of(ranges).into_iter().filter(|i| !lost.contains(i)) {
        deliver(&mut r, t1, &part(content, usize::from(part_size), 0, i), &mut written);
    }
    let asked = transmit(&mut r, t1);
    (r, t1, asked)
}

/// Parts of 1000 bytes: NewReno's initial window asks for the first ten.
fn ten_parts(content: &[u8]) -> ReceiverConfig {
    let mut cfg = config(content, 1000);
    cfg.controller = ControllerKind::NewReno;
    cfg
}

/// A hundred parts of 100 bytes: the first flight asks for all of them, the path's round trip
/// being known.
fn a_hundred_parts(content: &[u8]) -> ReceiverConfig {
    let mut cfg = config(content, 100);
    cfg.path_rtt = Some(Duration::from_millis(20));
    cfg
}

#[test]
fn a_lost_part_in_the_tail_is_asked_for_twice() {
    // Every part has been asked for, and one in ten is lost: its repair goes out under two
    // req_seqs, so that losing one of them costs no extra round trip.
    let content = file(10_000);
    let (mut r, t1, asked) = ask_all_and_lose(&content, ten_parts(&content), &[6]);
    assert_eq!(asked, vec![(1, vec![(6, 6)]), (2, vec![(6, 6)])]);
    assert_eq!(r.progress().parts_retransmitted, 1, "one part, asked again once");
    // The first answer is lost; the second settles the part, with nothing more to ask.
    let mut written = content.clone();
    let t2 = t1 + Duration::from_millis(20);
    assert!(deliver(&mut r, t2, &part(&content, 1000, 2, 6), &mut written).is_some());
    assert_eq!(r.state(), ReceiverState::Complete);
    assert_eq!(r.progress().parts_lost, 1);
}

#[test]
fn a_tail_that_lost_three_parts_in_ten_asks_for_them_twice() {
    // Three in ten lost, under a third (`TAIL_REPAIR_MAX_LOSS`): the repairs, 3/7 of what came,
    // cost less than half a round trip asked twice, so each goes out under two req_seqs. With a
    // tenth as the limit (before 3134fd5) they went out once.
    let content = file(10_000);
    let (mut r, mut now, mut asked) = ask_all_and_lose(&content, ten_parts(&content), &[0, 1, 2]);
    while r.progress().parts_retransmitted < 3 {
        now += Duration::from_millis(20);
        r.handle_timeout(now);
        asked.extend(transmit(&mut r, now));
        assert!(asked.len() < 100, "{asked:?}");
    }
    let mut repaired: Vec<u32> = asked.iter().flat_map(|(_, ranges)| parts_of(ranges)).collect();
    repaired.sort_unstable();
    assert_eq!(repaired, vec![0, 0, 1, 1, 2, 2], "each repair asked twice: {asked:?}");
    assert_eq!(r.progress().parts_retransmitted, 3, "three parts, each retransmitted once");
}

#[test]
fn a_tail_that_lost_many_parts_asks_for_them_once() {
    // Four parts in ten lost, past a third: asked twice, the repairs (4/6 of what came) would
    // cost more of the link than the round trip a repair lost again costs.
    let content = file(10_000);
    let (mut r, mut now, mut asked) =
        ask_all_and_lose(&content, ten_parts(&content), &[0, 1, 2, 3]);
    // The window, halved by the loss, lets the repairs out over a few round trips.
    while r.progress().parts_retransmitted < 4 {
        now += Duration::from_millis(20);
        r.handle_timeout(now);
        asked.extend(transmit(&mut r, now));
        assert!(asked.len() < 100, "{asked:?}");
    }
    let repaired: Vec<u32> = asked.iter().flat_map(|(_, ranges)| parts_of(ranges)).collect();
    assert_eq!(repaired, vec![0, 1, 2, 3], "{asked:?}");
}

#[test]
fn a_repair_before_the_tail_is_asked_for_once() {
    // Parts never asked for remain: a repair lost now is revealed by the parts after it.
    let content = file(40_000);
    let (_, _, asked) = ask_all_and_lose(&content, ten_parts(&content), &[6]);
    assert_eq!(asked[0].1[0], (6, 6), "{asked:?}");
    assert!(asked.iter().skip(1).all(|(_, ranges)| !parts_of(ranges).contains(&6)), "{asked:?}");
}

#[test]
fn a_first_answer_lost_in_the_tail_is_neither_a_loss_nor_asked_a_third_time() {
    // Ten of a hundred lost: each repair is asked for twice, and the parts move to the second
    // asking. The first answer of part 10 is lost too, while nine parts after it arrive: that
    // is no loss yet (its second answer comes after them), and nothing is asked again.
    let content = file(10_000);
    let lost: Vec<u32> = (1..=10).map(|i| i * 9).collect();
    let (mut r, t1, asked) = ask_all_and_lose(&content, a_hundred_parts(&content), &lost);
    let mut written = content.clone();
    let repaired: Vec<u32> = asked.iter().flat_map(|(_, ranges)| parts_of(ranges)).collect();
    assert_eq!(repaired, [lost.clone(), lost.clone()].concat(), "{asked:?}");
    let (first, second) = (asked[0].0, asked[1].0);
    assert_eq!(second, first + 1);
    let lost_before = r.progress().parts_lost;
    let t2 = t1 + Duration::from_millis(20);
    for &i in lost.iter().skip(1) {
        assert!(deliver(&mut r, t2, &part(&content, 100, first, i), &mut written).is_some());
    }
    assert_eq!(transmit(&mut r, t2), vec![], "no third asking");
    assert_eq!(r.progress().parts_lost, lost_before, "a late part, not a lost one");
    // The second asking's answers: part 9 settles it, the others are duplicates.
    assert!(deliver(&mut r, t2, &part(&content, 100, second, 9), &mut written).is_some());
    for &i in lost.iter().skip(1) {
        assert_eq!(deliver(&mut r, t2, &part(&content, 100, second, i), &mut written), None);
    }
    assert_eq!(r.state(), ReceiverState::Complete);
}

#[test]
fn the_last_part_after_a_probe_timeout_is_asked_for_twice() {
    // The last part of a hundred is lost: nothing after it can reveal that, so the probe
    // timeout asks for it again, and a repair lost again would cost a probe timeout twice as
    // long. One part asked twice costs one datagram (`PROBED_TAIL_MAX_PARTS`). Before, it was
    // asked once.
    let content = file(10_000);
    let (mut r, t1, asked) = ask_all_and_lose(&content, a_hundred_parts(&content), &[99]);
    assert_eq!(asked, vec![]);
    let pto = r.poll_timeout().unwrap_or(t1);
    r.handle_timeout(pto);
    assert_eq!(r.progress().probe_timeouts, 1);
    let asked = transmit(&mut r, pto);
    assert_eq!(asked, vec![(1, vec![(99, 99)]), (2, vec![(99, 99)])]);
    // Its first answer is lost, the second comes: the file is whole, and nothing more is asked.
    let t2 = pto + Duration::from_millis(20);
    let mut written = content.clone();
    written[9900..].fill(0);
    assert!(deliver(&mut r, t2, &part(&content, 100, 2, 99), &mut written).is_some());
    assert_eq!(r.state(), ReceiverState::Complete);
}

#[test]
fn a_large_tail_after_a_probe_timeout_is_asked_for_once() {
    // Twenty parts lost at the end: more than `PROBED_TAIL_MAX_PARTS`, so the path more
    // likely went quiet than lost them one by one; asked twice, the probes would only double.
    let content = file(10_000);
    let lost: Vec<u32> = (80..100).collect();
    let (mut r, t1, asked) = ask_all_and_lose(&content, a_hundred_parts(&content), &lost);
    assert_eq!(asked, vec![]);
    let pto = r.poll_timeout().unwrap_or(t1);
    r.handle_timeout(pto);
    let asked = transmit(&mut r, pto);
    assert_eq!(asked, vec![(1, vec![(80, 99)])]);
}

#[test]
fn both_askings_of_a_tail_repair_go_out_twice_by_default() {
    let content = file(10_000);
    let t0 = Instant::now();
    let mut cfg = config(&content, 1000);
    cfg.request_copies = 2;
    cfg.controller = ControllerKind::NewReno;
    let mut r = Receiver::new(cfg, t0);
    let mut written = vec![0; content.len()];
    assert_eq!(transmit(&mut r, t0), vec![(0, vec![(0, 9)]), (0, vec![(0, 9)])]);
    let t1 = t0 + Duration::from_millis(20);
    for i in (0..10).filter(|&i| i != 6) {
        deliver(&mut r, t1, &part(&content, 1000, 0, i), &mut written);
    }
    let asked = transmit(&mut r, t1);
    let again = vec![(6, 6)];
    assert_eq!(asked, vec![(1, again.clone()), (1, again.clone()), (2, again.clone()), (2, again)]);
}

#[test]
fn probe_timeout_asks_again_for_everything_outstanding() {
    let content = file(5000);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), t0);
    assert_eq!(transmit(&mut r, t0), vec![(0, vec![(0, 4)])]);
    // Nothing comes back. Before any RTT sample the PTO is 333 ms + 4 * 166.5 ms.
    let pto = r.poll_timeout().unwrap_or(t0);
    assert_eq!(pto - t0, Duration::from_millis(999));
    r.handle_timeout(pto);
    assert_eq!(transmit(&mut r, pto), vec![(1, vec![(0, 4)])]);
    assert_eq!(r.progress().probe_timeouts, 1);
    // Backed off: the second probe waits twice as long.
    let pto2 = r.poll_timeout().unwrap_or(pto);
    assert_eq!(pto2 - pto, Duration::from_millis(1998));
    // A late answer to the first request is still good data.
    let mut written = vec![0; content.len()];
    assert!(deliver(&mut r, pto2, &part(&content, 1000, 0, 3), &mut written).is_some());
}

#[test]
fn gives_up_after_no_progress() {
    let content = file(5000);
    let t0 = Instant::now();
    let mut cfg = config(&content, 1000);
    cfg.give_up_after = Duration::from_secs(3);
    let mut r = Receiver::new(cfg, t0);
    let mut now = t0;
    while r.state() == ReceiverState::Running {
        transmit(&mut r, now);
        now = r.poll_timeout().unwrap_or(now);
        r.handle_timeout(now);
    }
    assert_eq!(now - t0, Duration::from_secs(3));
    assert_eq!(r.state(), ReceiverState::Failed(TransferError::NoProgress(Duration::from_secs(3))));
}

#[test]
fn u6_resume_asks_only_for_missing_parts() {
    let content = file(10_000);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), t0);
    let mut written = vec![0; content.len()];
    transmit(&mut r, t0);
    for i in [0, 1, 2, 5, 7] {
        deliver(&mut r, t0, &part(&content, 1000, 0, i), &mut written);
    }
    let saved = r.save_state();
    drop(r);
    // A new process: only the .part file and the record survive.
    let mut r =
        Receiver::resume(config(&content, 1000), t0, &saved).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.progress().bytes_received, 5000);
    // The arrived prefix is hashed again from the file.
    assert_eq!(r.next_to_hash(), Some((0, 3000)));
    r.hash(0, &written[..3000]);
    let asked = transmit(&mut r, t0);
    let asked: Vec<u32> = asked.iter().flat_map(|(_, rs)| parts_of(rs)).collect();
    assert_eq!(asked, vec![3, 4, 6, 8, 9]);
    for i in asked {
        deliver(&mut r, t0, &part(&content, 1000, 1, i), &mut written);
    }
    assert!(written == content);
    assert_eq!(r.state(), ReceiverState::Complete);
}

#[test]
fn u6_resume_refuses_a_record_from_another_offer() {
    let content = file(10_000);
    let t0 = Instant::now();
    let r = Receiver::new(config(&content, 1000), t0);
    let saved = r.save_state();
    let mut changed = content.clone();
    changed[0] ^= 1;
    assert_eq!(
        Receiver::resume(config(&changed, 1000), t0, &saved).map(|_| ()),
        Err(ResumeError::DifferentOffer)
    );
    assert_eq!(
        Receiver::resume(config(&content, 1001), t0, &saved).map(|_| ()),
        Err(ResumeError::DifferentOffer)
    );
    assert!(Receiver::resume(config(&content, 1000), t0, &saved[..10]).is_err());
}

#[test]
fn hash_ignores_bytes_outside_the_arrived_prefix() {
    let content = file(3000);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), t0);
    transmit(&mut r, t0);
    assert!(r.handle_datagram(t0, &mut part(&content, 1000, 0, 1)).is_some());
    // Part 0 has not arrived: nothing to hash, and bytes offered anyway are ignored.
    assert_eq!(r.next_to_hash(), None);
    r.hash(0, &content);
    assert!(r.handle_datagram(t0, &mut part(&content, 1000, 0, 0)).is_some());
    // Now 0..2000 is the prefix; a misaligned offset is ignored, and so are bytes past it.
    assert_eq!(r.next_to_hash(), Some((0, 2000)));
    r.hash(5, &content[5..2000]);
    assert_eq!(r.next_to_hash(), Some((0, 2000)));
    r.hash(0, &content[..1500]);
    assert_eq!(r.next_to_hash(), Some((1500, 500)));
    r.hash(1500, &content[1500..]);
    assert_eq!(r.next_to_hash(), None);
    assert_eq!(r.state(), ReceiverState::Running);
    assert!(r.handle_datagram(t0, &mut part(&content, 1000, 0, 2)).is_some());
    assert_eq!(r.next_to_hash(), Some((2000, 1000)));
    r.hash(2000, &content[2000..]);
    assert_eq!(r.state(), ReceiverState::Complete);
}

#[test]
fn requests_are_paced_not_burst() {
    // After the first RTT sample, requests of a big window go out spread over time.
    let content = file(4 << 20);
    let t0 = Instant::now();
    let mut r = Receiver::new(config(&content, 1200), t0);
    let mut written = vec![0; content.len()];
    let first = transmit(&mut r, t0);
    let t1 = t0 + Duration::from_millis(20);
    for (seq, ranges) in first {
        for i in parts_of(&ranges) {
            deliver(&mut r, t1, &part(&content, 1200, seq, i), &mut written);
        }
    }
    // At t1 one paced request goes out, the next only at the pacing timer.
    let now_reqs = transmit(&mut r, t1);
    assert_eq!(now_reqs.len(), 1, "{now_reqs:?}");
    let next = r.poll_timeout().unwrap_or(t1);
    assert!(next > t1 && next < t1 + Duration::from_millis(20), "{:?}", next - t1);
    assert_eq!(transmit(&mut r, next).len(), 1);
}

/// U5: parts larger than the path carries. With large parts and nothing back for
/// `LARGE_PART_PATIENCE`, the receiver says so (the runtime then asks again with small parts);
/// with small parts, or once any part arrived, it never does.
#[test]
fn large_parts_that_never_arrive_are_reported() {
    use natter_core::transfer::receiver::{LARGE_PART_PATIENCE, SAFE_PART_SIZE};
    let content = file(200_000);
    let t0 = Instant::now();
    let mut large = Receiver::new(config(&content, 65000), t0);
    assert!(!large.parts_too_large(t0), "nothing asked yet");
    assert!(!transmit(&mut large, t0).is_empty());
    assert!(!large.parts_too_large(t0 + LARGE_PART_PATIENCE / 2));
    assert!(large.parts_too_large(t0 + LARGE_PART_PATIENCE));

    let mut small = Receiver::new(config(&content, SAFE_PART_SIZE), t0);
    transmit(&mut small, t0);
    assert!(!small.parts_too_large(t0 + LARGE_PART_PATIENCE * 3));

    let mut arrived = Receiver::new(config(&content, 65000), t0);
    let requests = transmit(&mut arrived, t0);
    let mut written = vec![0u8; content.len()];
    let first = parts_of(&requests[0].1)[0];
    let dgram = part(&content, 65000, requests[0].0, first);
    assert!(deliver(&mut arrived, t0 + Duration::from_millis(5), &dgram, &mut written).is_some());
    assert!(!arrived.parts_too_large(t0 + LARGE_PART_PATIENCE * 3));
}

/// What a real server sends back for one datagram from the client: its PARTs, sealed from
/// `content` as a runtime seals them.
fn served(s: &mut Sender, now: Instant, content: &[u8], dgram: &[u8]) -> Vec<Vec<u8>> {
    s.handle_input(now, SenderInput::Datagram { from: CLIENT, bytes: dgram });
    let mut parts = Vec::new();
    while let Some(out) = s.poll_output() {
        match out {
            SenderOutput::SendPart { req_seq, part, offset, len, .. } => {
                let at = offset as usize;
                parts.push(datagram::encode_part(TOKEN, req_seq, part, &content[at..at + len]));
            }
            other => panic!("the server answered a good request with {other:?}"),
        }
    }
    parts
}

// U3, U4 / PROTOCOL 2.2: the server answers a req_seq once, so a copy of a REQUEST is answered
// only when the first copy was lost; the receiver sends two by default so one lost REQUEST loses
// no parts. Against a real sender: with the first copy lost the second is answered in full and
// the download completes with nothing lost; with both delivered the copy costs no part.
#[test]
fn each_request_goes_out_twice_by_default_and_a_lost_copy_costs_nothing() {
    let content = file(5000);
    let t0 = Instant::now();
    let mut cfg = config(&content, 1000);
    cfg.request_copies = ReceiverConfig::new(0, 0, 1000, [0; 32]).request_copies;
    assert_eq!(cfg.request_copies, 2);
    let mut r = Receiver::new(cfg, t0);
    let mut buf = [0u8; MAX_REQUEST_LEN];
    let mut copies = Vec::new();
    while let Some(n) = r.poll_transmit(t0, &mut buf) {
        copies.push(buf[..n].to_vec());
    }
    assert_eq!(copies.len(), 2, "two copies of the first request");
    assert_eq!(copies[0], copies[1]);
    assert!(
        matches!(datagram::parse(&copies[0]), Ok(Datagram::Request(q)) if q.ranges == [(0, 4)])
    );
    assert_eq!(r.progress().requests_sent, 1);

    // The first copy is lost on the way: the server sees only the second, and answers it.
    let mut server = sender_for(&content, 1000, t0);
    let now = t0 + Duration::from_millis(10);
    let parts = served(&mut server, now, &content, &copies[1]);
    assert_eq!(parts.len(), 5);
    let mut written = vec![0; content.len()];
    let now = t0 + Duration::from_millis(20);
    for p in &parts {
        assert!(deliver(&mut r, now, p, &mut written).is_some());
    }
    assert_eq!(r.progress().parts_lost, 0);
    assert_eq!(r.progress().probe_timeouts, 0);
    assert_eq!(written, content);
    assert_eq!(r.state(), ReceiverState::Complete);

    // Both copies arrive: the second is a replay of an answered req_seq and brings no part.
    let mut server = sender_for(&content, 1000, t0);
    assert_eq!(served(&mut server, now, &content, &copies[0]).len(), 5);
    assert!(served(&mut server, now, &content, &copies[1]).is_empty());
    let stats = server.stats();
    assert_eq!((stats.requests_answered, stats.requests_ignored, stats.parts_sent), (1, 1, 5));
}

fn sender_for(content: &[u8], part_size: u16, now: Instant) -> Sender {
    Sender::new(sender_config(content, part_size), now)
}

/// PROTOCOL 2.1, the early flight, end to end against a real sender, 10 ms round trips: the
/// client asks for 60 parts at 10 MB/s with its `download_file` line at t0; the server starts the
/// flight with the offer 5 ms later, paced; part 30 is lost on the way. The receiver counts the
/// flight as asked for (no REQUEST for those parts), finds part 30 lost when later parts arrive,
/// asks for it again and for the rest of the file with `req_seq` from 4 on (after the four early
/// requests), and completes.
#[test]
fn an_early_flight_counts_as_asked_for_and_its_losses_are_asked_again() {
    let content = file(100 * 1000);
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (cfg, flight) = early_config(&content, 60, ms(10), t0);
    let early = Some(EarlyStart { to: CLIENT, flight });
    let mut server =
        Sender::new(SenderConfig { early, ..sender_config(&content, 1000) }, t0 + ms(5));
    // The offer arrives after a round trip; the receiver starts then.
    let mut r = Receiver::new(cfg, t0 + ms(10));
    let mut written = vec![0; content.len()];
    // Datagrams on their way, with when they arrive: down (PARTs) and up (REQUESTs).
    let mut down: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut up: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut requests = Vec::new();
    let mut now = t0 + ms(5);
    while now < t0 + ms(200) && r.state() == ReceiverState::Running {
        // The server: what arrived, then the flight's pacing.
        for (_, dgram) in take_due(&mut up, now) {
            server.handle_input(now, SenderInput::Datagram { from: CLIENT, bytes: &dgram });
        }
        server.handle_timeout(now);
        while let Some(out) = server.poll_output() {
            if let SenderOutput::SendPart { req_seq, part, offset, len, .. } = out {
                let lost = part == 30 && req_seq < flight.requests();
                let at = offset as usize;
                let dgram = datagram::encode_part(TOKEN, req_seq, part, &content[at..at + len]);
                if !lost {
                    down.push((now + ms(5), dgram));
                }
            }
        }
        // The client, from the offer on.
        if now >= t0 + ms(10) {
            for (_, dgram) in take_due(&mut down, now) {
                deliver(&mut r, now, &dgram, &mut written);
            }
            r.handle_timeout(now);
            for (seq, ranges) in transmit(&mut r, now) {
                if seq != u32::MAX {
                    let mut buf = vec![0; datagram::request_len(ranges.len())];
                    datagram::encode_request(TOKEN, seq, &ranges, &mut buf);
                    up.push((now + ms(5), buf));
                }
                requests.push((seq, ranges));
            }
        }
        now += ms(1);
    }
    assert_eq!(r.state(), ReceiverState::Complete, "{:?}", r.progress());
    assert_eq!(written, content);
    let (first_seq, first_ranges) = &requests[0];
    assert_eq!(*first_seq, 4, "the receiver's own REQUESTs follow the four early ones");
    assert!(parts_of(first_ranges).iter().all(|&p| p >= 60 || p == 30), "{first_ranges:?}");
    let asked: Vec<u32> = requests.iter().flat_map(|(_, r)| parts_of(r)).collect();
    assert!(asked.contains(&30), "the lost part is asked for again: {asked:?}");
    assert!(!asked.iter().any(|&p| p < 60 && p != 30), "no other part of the flight: {asked:?}");
    assert_eq!(r.progress().parts_lost, 1);
}

/// An offer that comes half a second after the line (a lost TCP segment): the early flight was
/// sent with it and waits in the socket. The receiver dates the flight from one round trip before
/// the offer, so a timer handled before the socket is read finds nothing overdue, and nothing of
/// the flight is asked for again. Before, every timer was overdue at once: the whole flight was
/// declared lost and asked for again (a probe timeout), then arrived as duplicates.
#[test]
fn a_late_offer_does_not_make_its_early_flight_overdue() {
    let content = file(20 * 1000);
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (cfg, _) = early_config(&content, 20, ms(10), t0);
    let offer_at = t0 + ms(500);
    let mut r = Receiver::new(cfg, offer_at);
    // A runtime may handle a due timer before it reads the socket.
    r.handle_timeout(offer_at);
    assert!(transmit(&mut r, offer_at).is_empty(), "nothing is asked for again");
    let mut written = vec![0; content.len()];
    for i in 0..20 {
        let early_req = i / EarlyFlight::PARTS_PER_REQUEST;
        deliver(&mut r, offer_at + ms(1), &part(&content, 1000, early_req, i), &mut written);
    }
    assert_eq!(r.state(), ReceiverState::Complete);
    let progress = r.progress();
    assert_eq!((progress.probe_timeouts, progress.parts_lost, progress.duplicates), (0, 0, 0));
    // Parts that waited in the socket say nothing of the round trip.
    assert_eq!(progress.min_rtt, None);
}

/// A flight of which nothing arrives (a firewall that drops datagrams nobody asked for, a NAT):
/// a few milliseconds after the offer, or a quarter of the round trip, the receiver asks for it
/// again, from `req_seq` 4 on, without waiting for a probe timeout, and without a loss for the
/// controller.
#[test]
fn a_blocked_early_flight_is_asked_for_again_soon_after_the_offer() {
    let content = file(60 * 1000);
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (cfg, _) = early_config(&content, 60, ms(20), t0);
    let offer_at = t0 + ms(20);
    let mut r = Receiver::new(cfg, offer_at);
    assert_eq!(r.poll_timeout(), Some(offer_at + ms(5)), "a quarter of the round trip");
    r.handle_timeout(offer_at + ms(4));
    assert!(transmit(&mut r, offer_at + ms(4)).is_empty(), "not yet");
    r.handle_timeout(offer_at + ms(5));
    let asked = transmit(&mut r, offer_at + ms(5));
    assert_eq!(asked.first().map(|(seq, _)| *seq), Some(4), "{asked:?}");
    let again: Vec<u32> = asked.iter().flat_map(|(_, ranges)| parts_of(ranges)).collect();
    assert!(again.contains(&0), "the flight is asked for again: {again:?}");
    assert_eq!(r.progress().probe_timeouts, 0);
}

/// A receiver's config, in parts of 1000 bytes, whose line asked at `asked_at` for an early
/// flight of `parts` at 10 MB/s over a path of round trip `rtt`; and the flight as bounded.
fn early_config(
    content: &[u8],
    parts: u32,
    rtt: Duration,
    asked_at: Instant,
) -> (ReceiverConfig, EarlyFlight) {
    let n_parts = u32::try_from(content.len().div_ceil(1000)).expect("a small file");
    let flight = EarlyFlight { parts, rate: 10_000_000 }.bounded(n_parts, 1000).expect("parts");
    let mut cfg = config(content, 1000);
    cfg.path_rtt = Some(rtt);
    cfg.early = Some(EarlyAsked { flight, asked_at });
    (cfg, flight)
}

/// Takes the datagrams of `on_the_way` that have arrived by `now`.
fn take_due(on_the_way: &mut Vec<(Instant, Vec<u8>)>, now: Instant) -> Vec<(Instant, Vec<u8>)> {
    let (due, later) = on_the_way.drain(..).partition(|(at, _)| *at <= now);
    *on_the_way = later;
    due
}

fn sender_config(content: &[u8], part_size: u16) -> SenderConfig {
    SenderConfig {
        seal: None,
        token: TOKEN,
        peer_ip: CLIENT.ip(),
        size: content.len() as u64,
        part_size,
        idle_timeout: Duration::from_secs(10),
        early: None,
    }
}

/// How a hostile stream went at the receivers, to show it reached every rule.
#[derive(Debug, Default)]
struct Reached {
    accepted: u64,
    duplicates: u64,
    refused: u64,
    aborted: u64,
    complete: u64,
    digest_mismatch: u64,
    gave_up: u64,
}

/// U1, U4, P1 / PROTOCOL 2.2-2.3: 20,000 hostile datagrams (`hostile::datagram_of`: a real header
/// most of the time; true, forged, wrongly sized, out-of-range, damaged or truncated PARTs, and
/// every other kind) at a receiver that also runs its own requests and timers; a new receiver
/// whenever one ends. A PART is accepted exactly when it parses, carries the token, fits the
/// offer (index and exact length) and is new; an ABORT with the token ends the download with
/// that code; a receiver with every part declares the file complete exactly when the written
/// bytes are the file's, and a digest mismatch otherwise; what it sends always parses.
#[test]
fn hostile_datagrams_are_accepted_exactly_when_they_fit_the_offer() {
    let content = file(7500);
    let offer = Offer { token: TOKEN, content: content.clone(), part_size: 1000 };
    let n = offer.n_parts();
    let mut rng = SplitMix64::new(3);
    let mut now = Instant::now();
    let mut r = Receiver::new(config(&content, 1000), now);
    let mut written = vec![0u8; content.len()];
    let mut have = vec![false; n as usize];
    let mut reached = Reached::default();
    let mut buf = [0u8; MAX_REQUEST_LEN];
    for i in 0..20_000 {
        let (bytes, _) = hostile::datagram_of(&mut rng, &offer, Mix::AT_CLIENT);
        now += Duration::from_millis(rng.below(4));
        let parsed = datagram::parse(&bytes);
        let fits = match &parsed {
            Ok(Datagram::Part(p)) if p.token == TOKEN && p.part < n => {
                p.data.len() == offer.part(p.part).len()
            }
            _ => false,
        };
        let want = match &parsed {
            Ok(Datagram::Part(p)) if fits && !have[p.part as usize] => Some(p.part),
            _ => None,
        };
        let abort = match &parsed {
            Ok(Datagram::Abort(a)) if a.token == TOKEN => Some(a.code),
            _ => None,
        };
        let got = deliver(&mut r, now, &bytes, &mut written);
        assert_eq!(got.as_ref().map(|a| a.part), want, "#{i}: {bytes:02x?}");
        if let Some(acc) = got {
            assert_eq!(acc.offset, u64::from(acc.part) * 1000);
            have[acc.part as usize] = true;
            reached.accepted += 1;
        } else if fits {
            reached.duplicates += 1;
        } else {
            reached.refused += 1;
        }
        while let Some(len) = r.poll_transmit(now, &mut buf) {
            match datagram::parse(&buf[..len]) {
                Ok(Datagram::Request(q)) => assert!(q.ranges.iter().all(|&(_, last)| last < n)),
                Ok(Datagram::Finished { token }) => assert_eq!(token, TOKEN),
                other => panic!("#{i}: the receiver sent {other:?}"),
            }
        }
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
        let ended = match r.state() {
            ReceiverState::Running => {
                assert!(abort.is_none(), "#{i}: an ABORT with the token did not end it");
                assert!(have.contains(&false), "#{i}: every part in, still running");
                false
            }
            ReceiverState::Complete => {
                assert!(written == content, "#{i}: complete with wrong bytes");
                reached.complete += 1;
                true
            }
            ReceiverState::Failed(TransferError::DigestMismatch) => {
                assert!(written != content, "#{i}: a digest mismatch over the true bytes");
                assert!(!have.contains(&false));
                reached.digest_mismatch += 1;
                true
            }
            ReceiverState::Failed(TransferError::Aborted { code, .. }) => {
                assert_eq!(Some(code), abort, "#{i}");
                reached.aborted += 1;
                true
            }
            ReceiverState::Failed(TransferError::NoProgress(_)) => {
                reached.gave_up += 1;
                true
            }
            ReceiverState::Failed(TransferError::Abandoned) => {
                panic!("#{i}: abandoned, which only its owner may ask for")
            }
            ReceiverState::Failed(TransferError::RequestsExhausted) => {
                panic!("#{i}: a plain transfer's req_seq may wrap")
            }
        };
        if ended {
            r = Receiver::new(config(&content, 1000), now);
            written.fill(0);
            have.fill(false);
        }
    }
    eprintln!("{reached:?}");
    assert!(reached.accepted >= 1000 && reached.duplicates >= 1000, "{reached:?}");
    assert!(reached.refused >= 5000 && reached.aborted >= 20, "{reached:?}");
    assert!(reached.complete >= 20 && reached.digest_mismatch >= 20, "{reached:?}");
}
