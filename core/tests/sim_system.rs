//! The whole system simulated: one `ServerDriver` and many clients, chat and downloads together,
//! in simulated time (`natter_core::sim::system`). Clients that download run the real
//! `ClientDriver` (`DrivenClient`); scripted clients send raw bytes, reset, vanish. Each test is a row of
//! TEST-CATALOGUE.md (C5, C6, C7, U5, U6, U8, U9) and asserts the row's property, not just
//! "no panic". The real-socket tests (bins/tests) remain, to check the adapters.
//!
//! Every run comes from one seed; a failing run prints it (`seed N`), and running the scenario
//! with that seed reproduces it bit for bit.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use natter_core::chat::server::{DisconnectReason, LogEvent};
use natter_core::driver::client::DownloadFailure;
use natter_core::driver::server::{ACCEPT_RETRY, READ_CHUNK};
use natter_core::sim::Path;
use natter_core::sim::rng::SplitMix64;
use natter_core::sim::system::driven::{Cue, DrivenClient};
use natter_core::sim::system::script::{ScriptedClient, Step};
use natter_core::sim::system::{
    self, ClientReport, ClientSpec, DownloadOutcome, FileChange, SimFile, SystemConfig,
    SystemReport,
};
use natter_core::transfer::receiver::{LARGE_PART_PATIENCE, SAFE_PART_SIZE, TransferError};
use natter_core::transfer::sender::SenderEnd;
use natter_core::wire::datagram::AbortCode;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    SplitMix64::new(seed).fill(&mut bytes);
    bytes
}

fn file(name: &str, len: usize) -> SimFile {
    SimFile { name: name.to_owned(), content: content(len as u64 ^ name.len() as u64, len) }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

fn run(config: SystemConfig, clients: Vec<ClientSpec>) -> SystemReport {
    system::run(Instant::now(), config, clients)
}

/// Runs `check` and, when it fails, says which seed to rerun.
fn with_seed(seed: u64, check: impl FnOnce(u64)) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(seed)));
    if let Err(panic) = result {
        eprintln!("failing seed: {seed}");
        std::panic::resume_unwind(panic);
    }
}

/// Every `from: text` line `to` read, in order.
fn messages_from<'a>(to: &'a ClientReport, from: &str) -> Vec<&'a str> {
    let prefix = format!("{from}: ");
    to.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

/// The lines `from` sent after its name, as others see them relayed.
fn chat_sent(from: &ClientReport) -> Vec<&str> {
    from.sent.iter().skip(1).map(|(_, l)| l.as_str()).collect()
}

fn left_count(to: &ClientReport, name: &str) -> usize {
    let left = format!("{name} left the chat...");
    to.lines().filter(|l| *l == left).count()
}

/// The worst delay between a line being written by its sender and read by `to`.
fn worst_latency(to: &ClientReport, senders: &[&ClientReport]) -> Duration {
    let mut sent_at = BTreeMap::new();
    for s in senders {
        for (at, text) in s.sent.iter().skip(1) {
            sent_at.insert(format!("{}: {text}", s.label), *at);
        }
    }
    to.received
        .iter()
        .filter_map(|(at, line)| sent_at.get(line).map(|s| *at - *s))
        .max()
        .unwrap_or_default()
}

fn slow_reader_closed(report: &SystemReport, name: &str) -> usize {
    report
        .log
        .iter()
        .filter(|(_, e)| {
            matches!(e, LogEvent::Disconnected {
                name: Some(n),
                reason: DisconnectReason::SlowReader { .. },
                ..
            } if n == name)
        })
        .count()
}

/// C5 (PROTOCOL 1.2, 3): one client never reads while 20 others chat. It is closed once its
/// queue passes `max_queued_bytes`; the others get every line with no extra delay; what the server
/// holds stays bounded.
#[test]
fn c5_a_client_that_never_reads_is_closed_and_the_others_see_no_delay() {
    with_seed(5, |seed| {
        let mut config = SystemConfig::new(seed);
        config.server.max_queued_bytes = 32 << 10;
        config.tcp.window = 16 << 10;
        let delay = config.tcp.delay;
        let mut clients = vec![ClientSpec::new(
            "sink",
            ScriptedClient::joining(ms(0), "sink").at(ms(50), Step::StopReading),
        )];
        for i in 0..20u64 {
            let name = format!("c{i:02}");
            let mut script = ScriptedClient::joining(ms(i), &name);
            for k in 0..150u64 {
                let text = format!("line {k:04} from {name}, padded to look like chat");
                script = script.line(ms(200 + k * 20 + i), text);
            }
            clients.push(ClientSpec::new(name, script));
        }
        let report = run(config.clone(), clients);
        let sink = report.client("sink");
        assert_eq!(slow_reader_closed(&report, "sink"), 1, "sink closed once as slow");
        assert!(sink.conns[0].closed_by_server.is_some());
        let bound = config.server.max_queued_bytes + 4096;
        assert!(
            sink.conns[0].peak_queued <= bound,
            "sink's queue {} passed {bound}",
            sink.conns[0].peak_queued
        );
        let chatters: Vec<&ClientReport> = report.clients[1..].iter().collect();
        for to in &chatters {
            for from in &chatters {
                assert_eq!(messages_from(to, &from.label), chat_sent(from));
            }
            assert_eq!(left_count(to, "sink"), 1, "{} sees sink leave once", to.label);
            let worst = worst_latency(to, &chatters);
            assert!(worst <= 2 * delay + ms(1), "{} waited {worst:?} for a line", to.label);
            assert!(to.conns[0].peak_queued < 4096, "{} queued", to.label);
        }
        // Bounded memory: the slow reader's bound plus a few lines for each of the others.
        assert!(report.peak_total_queued <= bound + 20 * 4096);
    });
}

/// How many lines the C6 flooder sends at once.
const FLOOD_LINES: usize = 5000;

/// The C6 scenario: at 200 ms `flooder` writes [`FLOOD_LINES`] lines at once (about 145 KB),
/// while ten people chat and ask `show` every 250 ms for as long as the flood lasts at the
/// configured rate. The server-to-client window is small (16 KiB, so 1.6 MB/s each at this delay)
/// and the upload window is not (64 KiB): a flood read at full speed would arrive faster than the
/// others can take it, and their own lines would wait behind it.
fn flood_scenario(seed: u64, max_input_rate: u32) -> (SystemConfig, SystemReport, usize) {
    let mut config = SystemConfig::new(seed);
    config.timeline = false;
    config.server.max_input_rate = max_input_rate;
    config.server.input_burst = 8 << 10;
    config.tcp.window = 16 << 10;
    let flood: String =
        (0..FLOOD_LINES).map(|k| format!("flood {k:04} ................\n")).collect();
    let flood_bytes = flood.len();
    let mut clients = vec![ClientSpec::new(
        "flooder",
        ScriptedClient::joining(ms(0), "flooder").at(ms(200), Step::Raw(flood.into_bytes())),
    )];
    for i in 0..10u64 {
        let name = format!("p{i}");
        let mut script = ScriptedClient::joining(ms(i), &name);
        for k in 0..80u64 {
            script = script
                .line(ms(205 + k * 250 + i * 3), "show")
                .line(ms(210 + k * 250 + i * 7), format!("{name} says {k}"));
        }
        clients.push(ClientSpec::new(name, script));
    }
    let report = run(config.clone(), clients);
    (config, report, flood_bytes)
}

/// How long each `show` of `p` waited for its `ALL` reply. Replies come in request order
/// (PROTOCOL 4, rule 5) and nobody joins or leaves once the first `show` is sent, so the first
/// `ALL` read at or after a `show` is its reply.
fn show_latencies(p: &ClientReport) -> Vec<Duration> {
    let asked: Vec<Duration> =
        p.sent.iter().filter(|(_, l)| l == "show").map(|(at, _)| *at).collect();
    let first = asked.first().copied().unwrap_or_default();
    let replies: Vec<Duration> = p
        .received
        .iter()
        .filter(|(at, l)| *at >= first && (l == "ALL" || l.starts_with("ALL ")))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(replies.len(), asked.len(), "{}: one ALL per show", p.label);
    asked.iter().zip(&replies).map(|(a, r)| *r - *a).collect()
}

/// The first stretch of `reads` (from one read to a later one, both included) in which the server
/// read more than a token bucket of `rate` bytes/s and `burst` bytes allows: the bucket holds at
/// most `burst` at the first read, refills at `rate`, and one read may run it into debt by up to
/// [`READ_CHUNK`] (PROTOCOL 1.5).
fn over_budget(
    reads: &[(Duration, usize)],
    rate: u32,
    burst: u32,
) -> Option<(Duration, Duration, usize)> {
    for (a, &(from, _)) in reads.iter().enumerate() {
        let mut read = 0;
        for &(to, n) in &reads[a..] {
            read += n;
            let allowed =
                f64::from(burst) + f64::from(rate) * (to - from).as_secs_f64() + READ_CHUNK as f64;
            if read as f64 > allowed {
                return Some((from, to, read));
            }
        }
    }
    None
}

/// The most a flooder may delay another client's line or reply, from the configuration: one
/// network delay each way, plus the round trips the flooder's allowance at once (its burst and
/// one read of debt, relayed to everyone at once) takes to pass the others' window, plus 1 ms.
/// Past the allowance the flooder is relayed at its rate, far below what a window carries.
fn flood_delay_bound(config: &SystemConfig) -> Duration {
    let allowance = config.server.input_burst as usize + READ_CHUNK;
    let round_trips = allowance.div_ceil(config.tcp.window) as u32;
    2 * config.tcp.delay + round_trips * 2 * config.tcp.delay + ms(1)
}

/// C6 (PROTOCOL 1.5): one client floods 5,000 lines at once while ten others chat.
/// - It is read less: over any stretch of time, the server read no more of it than its token
///   bucket allows (8 KiB/s, 8 KiB burst, one 16 KiB read of debt), its reads were paused, and
///   the whole flood took at least as long to relay as that rate allows.
/// - The others are not: never paused, and every line between them and every reply to their
///   `show` arrived within [`flood_delay_bound`] (31 ms here: 11 ms for the network, 20 ms for
///   the flooder's 24 KiB allowance through a 16 KiB window).
/// - Nothing is lost: every flood line reaches everyone, in order; nobody is disconnected.
#[test]
fn c6_a_flooder_is_slowed_and_the_others_are_not() {
    with_seed(6, |seed| {
        let (config, report, flood_bytes) = flood_scenario(seed, 8 << 10);
        let (rate, burst) = (config.server.max_input_rate, config.server.input_burst);
        let bound = flood_delay_bound(&config);
        let flooder = report.client("flooder");
        assert!(flooder.conns[0].pauses >= 1, "the flooder was never paused");
        let reads = &flooder.conns[0].server_reads;
        assert_eq!(reads.iter().map(|r| r.1).sum::<usize>(), flood_bytes + "flooder\n".len());
        assert_eq!(over_budget(reads, rate, burst), None, "the flooder was read too fast");
        let sent = chat_sent(flooder);
        assert_eq!(sent.len(), FLOOD_LINES);
        let people: Vec<&ClientReport> = report.clients[1..].iter().collect();
        // The whole flood cannot be relayed before its bytes less the burst and one read, at the
        // rate.
        let min_relay = Duration::from_secs_f64(
            (flood_bytes - burst as usize - READ_CHUNK) as f64 / f64::from(rate),
        );
        let (mut worst_reply, mut worst_line) = (Duration::ZERO, Duration::ZERO);
        for to in &people {
            assert_eq!(to.conns[0].pauses, 0, "{} paused", to.label);
            assert_eq!(messages_from(to, "flooder"), sent, "{} missed flood", to.label);
            let last_flood = to
                .received
                .iter()
                .rev()
                .find(|(_, l)| l.starts_with("flooder: "))
                .map(|(at, _)| *at)
                .unwrap();
            assert!(
                last_flood >= ms(200) + min_relay,
                "flood relayed by {last_flood:?}, faster than the rate allows"
            );
            // The people talked for the whole flood, not only before or after it.
            assert!(
                to.sent.last().unwrap().0 > last_flood,
                "{} stopped before the flood",
                to.label
            );
            for from in &people {
                let said: Vec<&str> =
                    chat_sent(from).into_iter().filter(|l| *l != "show").collect();
                assert_eq!(messages_from(to, &from.label), said);
            }
            let worst = worst_latency(to, &people);
            assert!(worst <= bound, "{} waited {worst:?} for a line", to.label);
            worst_line = worst_line.max(worst);
            let replies = show_latencies(to);
            assert_eq!(replies.len(), 80);
            let slowest = replies.iter().max().copied().unwrap_or_default();
            assert!(slowest <= bound, "{} waited {slowest:?} for an ALL", to.label);
            worst_reply = worst_reply.max(slowest);
        }
        assert_eq!(
            report.log.iter().filter(|(_, e)| matches!(e, LogEvent::Disconnected { .. })).count(),
            0
        );
        println!(
            "C6 sim: flood {flood_bytes} bytes in {} reads over {:?}; worst reply {worst_reply:?}, \
             worst line {worst_line:?} (bound {bound:?})",
            reads.len(),
            reads.last().unwrap().0 - reads[1].0,
        );
    });
}

/// C6, the other way round: the same flood with the rate limit off (`max_input_rate` 0). The
/// flooder is read as fast as it sends, past any bucket, and the others' lines and replies wait
/// behind its lines in their queues, past twice the bound `c6_a_flooder_is_slowed...` asserts.
/// This is what makes that bound mean something: the scenario is one that would break it.
#[test]
fn c6_without_the_rate_limit_the_flood_delays_the_others() {
    with_seed(6, |seed| {
        let (config, report, _) = flood_scenario(seed, 0);
        let bound = flood_delay_bound(&config);
        let flooder = report.client("flooder");
        assert_eq!(flooder.conns[0].pauses, 0);
        assert!(over_budget(&flooder.conns[0].server_reads, 8 << 10, 8 << 10).is_some());
        let people: Vec<&ClientReport> = report.clients[1..].iter().collect();
        let worst_reply = people.iter().flat_map(|p| show_latencies(p)).max().unwrap_or_default();
        let worst_line =
            people.iter().map(|to| worst_latency(to, &people)).max().unwrap_or_default();
        assert!(worst_reply > 2 * bound, "replies waited only {worst_reply:?}");
        assert!(worst_line > 2 * bound, "lines waited only {worst_line:?}");
        println!("C6 sim, no rate limit: worst reply {worst_reply:?}, worst line {worst_line:?}");
    });
}

/// C7 (PROTOCOL 1.1): a connection that never sends a name gets the `ERROR` and then the close,
/// after `name_timeout`.
#[test]
fn c7_no_name_is_closed_after_the_timeout_with_the_error_first() {
    with_seed(7, |seed| {
        let mut config = SystemConfig::new(seed);
        config.server.name_timeout = Duration::from_secs(3);
        let clients = vec![
            ClientSpec::new("alice", ScriptedClient::joining(ms(0), "alice")),
            ClientSpec::new("silent", ScriptedClient::new().at(ms(100), Step::Connect)),
        ];
        let report = run(config, clients);
        let silent = report.client("silent");
        let lines: Vec<&str> = silent.lines().collect();
        assert_eq!(lines, ["ERROR no name given within 3 seconds"]);
        let conn = &silent.conns[0];
        let closed = conn.closed_by_server.unwrap();
        assert!(closed >= ms(100) + ms(5) + Duration::from_secs(3) && closed < ms(3200));
        assert!(conn.end_read.unwrap() > silent.received[0].0 - ms(1));
        // Nobody else heard of it.
        assert_eq!(report.client("alice").lines().count(), 2);
        insta::assert_snapshot!(report.transcript());
    });
}

/// C7: a client reset in the middle of a line. Its "left" is announced exactly once and its half
/// line is never relayed.
#[test]
fn c7_reset_mid_line_leaves_once_and_the_half_line_is_dropped() {
    with_seed(7, |seed| {
        let config = SystemConfig::new(seed);
        let clients = vec![
            ClientSpec::new("alice", ScriptedClient::joining(ms(0), "alice")),
            ClientSpec::new(
                "bob",
                ScriptedClient::joining(ms(100), "bob")
                    .line(ms(200), "a whole line")
                    .at(ms(300), Step::Raw(b"half a li".to_vec()))
                    .at(ms(301), Step::Reset),
            ),
        ];
        let report = run(config, clients);
        let alice = report.client("alice");
        assert_eq!(left_count(alice, "bob"), 1);
        assert_eq!(messages_from(alice, "bob"), ["a whole line"]);
        assert!(!alice.lines().any(|l| l.contains("half a li")));
        let disconnects = report
            .log
            .iter()
            .filter(
                |(_, e)| matches!(e, LogEvent::Disconnected { name: Some(n), .. } if n == "bob"),
            )
            .count();
        assert_eq!(disconnects, 1);
        insta::assert_snapshot!(report.transcript());
    });
}

/// C7: half-open TCP. A client that vanishes (no FIN, no RST) is *not* noticed by the core while
/// nothing is sent to it: the connection stays, and the name stays taken, for as long as the room
/// is quiet (the runtime's TCP keepalive is what ends it on a real socket; it is not simulated).
/// Once the room talks, its unsent bytes pass `max_queued_bytes` and it is closed as a slow reader
/// (C5), its "left" announced exactly once.
#[test]
fn c7_half_open_is_closed_as_a_slow_reader_once_the_room_talks() {
    with_seed(7, |seed| {
        let mut config = SystemConfig::new(seed);
        config.server.max_queued_bytes = 4 << 10;
        config.tcp.window = 4 << 10;
        let mut alice = ScriptedClient::joining(ms(0), "alice");
        for k in 0..200u64 {
            alice = alice.line(
                Duration::from_secs(20) + ms(k),
                format!("talking {k:03} ........................"),
            );
        }
        let clients = vec![
            ClientSpec::new("alice", alice),
            ClientSpec::new(
                "carol",
                ScriptedClient::joining(ms(100), "carol").at(ms(500), Step::Vanish),
            ),
        ];
        let report = run(config, clients);
        let carol_left: Vec<Duration> = report
            .log
            .iter()
            .filter(
                |(_, e)| matches!(e, LogEvent::Disconnected { name: Some(n), .. } if n == "carol"),
            )
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(carol_left.len(), 1);
        assert!(carol_left[0] >= Duration::from_secs(20), "noticed at {:?}", carol_left[0]);
        assert_eq!(slow_reader_closed(&report, "carol"), 1);
        let alice = report.client("alice");
        assert_eq!(left_count(alice, "carol"), 1);
        assert_eq!(messages_from(alice, "alice").len(), 200);
    });
}

/// What `label`'s folder holds at the end: kept files, `.part` files, resume records (names).
fn folder_holds(report: &SystemReport, label: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let f = &report.client(label).folder;
    (
        f.files.keys().cloned().collect(),
        f.parts.keys().cloned().collect(),
        f.records.keys().cloned().collect(),
    )
}

/// U8 (PROTOCOL 2.1): a client that goes silent on UDP in the middle of a download gets ABORT 3
/// after the idle timeout, and the port is free again: the next download gets the same port.
/// Both clients are real client drivers.
#[test]
fn u8_a_silent_client_gets_abort_3_and_the_port_is_freed() {
    with_seed(8, |seed| {
        let mut config = SystemConfig::new(seed);
        config.files = vec![file("big.bin", 2 << 20)];
        let truth = digest(&config.files[0].content);
        let idle = config.server.transfer_idle_timeout;
        let slow = Path::symmetric(8_000_000, ms(10), 0.0);
        let clients = vec![
            ClientSpec::new(
                "quiet",
                DrivenClient::interactive("quiet", ms(0))
                    .typed(ms(100), "download_file big.bin")
                    .at(ms(600), Cue::SilenceUdp),
            )
            .with_path(slow.clone()),
            ClientSpec::new(
                "next",
                DrivenClient::interactive("next", ms(0))
                    .typed(idle + Duration::from_secs(2), "download_file big.bin"),
            ),
        ];
        let report = run(config, clients);
        let quiet = &report.client("quiet").downloads[0];
        assert!(
            matches!(
                &quiet.outcome,
                DownloadOutcome::Failed(DownloadFailure::Transfer(TransferError::Aborted {
                    code: AbortCode::TimedOut,
                    ..
                }))
            ),
            "{:?}",
            quiet.outcome
        );
        let ended: Vec<(Duration, u16)> = report
            .log
            .iter()
            .filter_map(|(at, e)| match e {
                LogEvent::TransferEnded { port, end: SenderEnd::TimedOut } => Some((*at, *port)),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 1);
        let (at, port) = ended[0];
        // The last request went out just before 600 ms; the abort follows one idle timeout later.
        assert!(at >= ms(500) + idle && at <= ms(620) + idle, "ended at {at:?}");
        assert!(quiet.ended_at.unwrap() >= at);
        // An aborted download keeps its `.part` file and a record to resume from.
        assert_eq!(
            folder_holds(&report, "quiet"),
            (vec![], vec!["big.bin".into()], vec!["big.bin".into()])
        );
        let next = &report.client("next").downloads[0];
        assert_eq!(next.port, port, "the freed port is offered again");
        assert_eq!(next.outcome, DownloadOutcome::Complete);
        assert_eq!(next.written_digest, truth);
    });
}

/// U9 (PROTOCOL 2.2): one client asks for more transfers than `max_transfers_per_client`
/// (`ERROR`), then every port is busy (`natter get` fails with `server busy`); the others are
/// still served, chat goes on, and the refused `natter get` gets its file once ports are free.
#[test]
fn u9_transfer_cap_and_busy_ports_are_errors_and_others_are_served() {
    with_seed(9, |seed| {
        let mut config = SystemConfig::new(seed);
        config.server.max_transfers_per_client = 2;
        config.server.udp_ports = 55000..=55003;
        config.files =
            vec![file("a.bin", 300 << 10), file("b.bin", 200 << 10), file("c.bin", 100 << 10)];
        let truth: BTreeMap<String, [u8; 32]> =
            config.files.iter().map(|f| (f.name.clone(), digest(&f.content))).collect();
        let slow = Path::symmetric(2_000_000, ms(10), 0.0);
        let clients = vec![
            ClientSpec::new(
                "ann",
                DrivenClient::interactive("ann", ms(0))
                    .typed(ms(100), "download_file a.bin")
                    .typed(ms(100), "download_file b.bin")
                    .typed(ms(100), "download_file c.bin")
                    .typed(ms(400), "still here?"),
            )
            .with_path(slow.clone()),
            ClientSpec::new(
                "ben",
                DrivenClient::interactive("ben", ms(10))
                    .typed(ms(200), "download_file a.bin")
                    .typed(ms(200), "download_file b.bin"),
            )
            .with_path(slow.clone()),
            ClientSpec::new(
                "cat",
                DrivenClient::get("cat", "b.bin", ms(300)).start(Duration::from_secs(8)),
            ),
            ClientSpec::new(
                "dan",
                DrivenClient::interactive("dan", ms(30)).typed(ms(350), "hello"),
            ),
        ];
        let report = run(config, clients);
        let ann = report.client("ann");
        // The server holds ann's third download line for `CAP_WAIT`, then refuses it, since
        // neither of her transfers ended; her client queues it and asks again when one of hers
        // ends. That line overtakes the FINISHED and waits for it: it is not refused again
        // (before the wait, it was, and asked a third time 50 ms later).
        let refusals: Vec<&str> = ann.lines().filter(|l| l.starts_with("ERROR")).collect();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals.iter().all(|r| *r == "ERROR too many transfers: at most 2 at once"));
        let cat = report.client("cat");
        assert_eq!(cat.finished.len(), 2, "{:?}", cat.finished);
        assert!(
            matches!(&cat.finished[0].1, Some(Err(DownloadFailure::Refused(r))) if r.starts_with("server busy")),
            "{:?}",
            cat.finished[0]
        );
        assert!(matches!(&cat.finished[1].1, Some(Ok(r)) if r.size == 200 << 10));
        for c in [ann, report.client("ben"), cat] {
            let expected = match c.label.as_str() {
                "cat" => 1,
                "ann" => 3,
                _ => 2,
            };
            assert_eq!(c.downloads.len(), expected, "{}", c.label);
            for d in &c.downloads {
                assert_eq!(d.outcome, DownloadOutcome::Complete, "{} {}", c.label, d.file);
                assert_eq!(d.written_digest, truth[&d.file], "{} {}", c.label, d.file);
            }
        }
        let dan = report.client("dan");
        assert_eq!(messages_from(dan, "ann"), ["still here?"]);
        assert_eq!(messages_from(dan, "dan"), ["hello"]);
        assert!(worst_latency(dan, &[ann, dan]) <= ms(11));
        insta::assert_snapshot!(report.transcript());
    });
}

/// U5 (PROTOCOL 2.1): the path drops datagrams larger than 1500 bytes and the client asks for
/// 9000-byte parts. Nothing gets through; after `LARGE_PART_PATIENCE` the client driver itself
/// asks again with 1200-byte parts, and that download completes byte-exact.
#[test]
fn u5_parts_too_large_for_the_path_fall_back_to_safe_parts() {
    with_seed(55, |seed| {
        let mut config = SystemConfig::new(seed);
        config.files = vec![file("video.bin", 500 << 10)];
        let truth = digest(&config.files[0].content);
        let clients = vec![
            ClientSpec::new(
                "mtu",
                DrivenClient::interactive("mtu", ms(0))
                    .with_part_size(9000)
                    .typed(ms(100), "download_file video.bin"),
            )
            .with_max_datagram(1500),
        ];
        let report = run(config, clients);
        let mtu = report.client("mtu");
        assert_eq!(mtu.downloads.len(), 2);
        let (big, small) = (&mtu.downloads[0], &mtu.downloads[1]);
        assert_eq!(big.part_size, 9000);
        assert_eq!(big.outcome, DownloadOutcome::TooLarge);
        assert!(big.received_parts.is_empty());
        let given_up = big.ended_at.unwrap();
        let waited = given_up - big.offered_at;
        assert!(
            waited >= LARGE_PART_PATIENCE && waited < LARGE_PART_PATIENCE + ms(100),
            "{waited:?}"
        );
        assert!(mtu.dropped_too_large > 0);
        // The driver asked again, on its own, when it gave up: nobody typed this line.
        let asked: Vec<(Duration, &str)> = mtu
            .sent
            .iter()
            .filter(|(_, l)| l.starts_with("download_file"))
            .map(|(at, l)| (*at, l.as_str()))
            .collect();
        assert_eq!(
            asked,
            [(ms(100), "download_file video.bin 9000"), (given_up, "download_file video.bin 1200")]
        );
        assert_eq!(small.part_size, SAFE_PART_SIZE);
        assert_eq!(small.outcome, DownloadOutcome::Complete);
        assert_eq!(small.written_digest, truth);
        assert_eq!(folder_holds(&report, "mtu"), (vec!["video.bin".into()], vec![], vec![]));
    });
}

/// U6 (PROTOCOL 2.3): the client is killed in the middle of a download; a new client driver starts
/// on the same folder (`.part` file and last resume record), asks only for the parts the record
/// does not list, and the file ends byte-exact.
#[test]
fn u6_a_killed_client_resumes_and_asks_only_for_missing_parts() {
    with_seed(66, |seed| {
        let mut config = SystemConfig::new(seed);
        config.files = vec![file("big.bin", 2 << 20)];
        let truth = digest(&config.files[0].content);
        let n_parts = (2u32 << 20).div_ceil(u32::from(SAFE_PART_SIZE));
        let clients = vec![
            ClientSpec::new(
                "kim",
                DrivenClient::interactive("kim", ms(0))
                    .typed(ms(100), "download_file big.bin")
                    .kill(ms(1200))
                    .start(ms(1500))
                    .typed(ms(1600), "download_file big.bin"),
            )
            .with_path(Path::symmetric(8_000_000, ms(10), 0.02)),
        ];
        let report = run(config, clients);
        let kim = report.client("kim");
        assert_eq!(kim.downloads.len(), 2);
        let (first, second) = (&kim.downloads[0], &kim.downloads[1]);
        assert_eq!(first.outcome, DownloadOutcome::Killed);
        let saved = &first.saved_parts;
        assert!(!saved.is_empty() && (saved.len() as u32) < n_parts, "{} parts saved", saved.len());
        // Parts that arrived after the last checkpoint were in the file but not in the record.
        assert!(saved.is_subset(&first.received_parts));
        assert_eq!(second.resumed_parts as usize, saved.len());
        let again: Vec<&u32> = second.requested_parts.intersection(saved).collect();
        assert!(again.is_empty(), "asked again for {} saved parts", again.len());
        let all: BTreeSet<u32> = saved.union(&second.received_parts).copied().collect();
        assert_eq!(all.len() as u32, n_parts);
        assert_eq!(second.outcome, DownloadOutcome::Complete);
        assert_eq!(second.written_digest, truth);
        assert_eq!(second.kept_as.as_deref(), Some("big.bin"));
        assert_eq!(folder_holds(&report, "kim"), (vec!["big.bin".into()], vec![], vec![]));
        // The killed connection was reset; the new one joined under the same name.
        assert_eq!(kim.conns.len(), 2);
        assert_eq!(kim.lines().filter(|l| *l == "kim has joined the chat!").count(), 2);
    });
}

/// U6 at any moment: `natter get` killed at a random time (before or after its download is
/// done) over a lossy, reordering, duplicating path, started again on the same folder. A killed
/// download resumes from its last record, asks for none of the parts it lists, and ends
/// byte-exact; one done before the kill is simply fetched again under a free name.
#[test]
fn u6_killed_at_any_moment_resumes_byte_exact() {
    for seed in 0..20 {
        with_seed(seed, |seed| {
            let mut rng = SplitMix64::new(seed);
            let mut config = SystemConfig::new(seed);
            config.timeline = false;
            config.files = vec![file("big.bin", 1 << 20)];
            let truth = digest(&config.files[0].content);
            let kill = ms(100 + rng.below(1400));
            let restart = kill + ms(rng.below(500));
            let loss = rng.below(10) as f64 / 100.0;
            let mut path = Path::symmetric(8_000_000, ms(10 + rng.below(40)), loss).with(|l| {
                l.duplicate = 0.01;
                l.jitter = ms(3);
            });
            // Corrupted parts are caught by their CRC32C; REQUESTs rely on the UDP checksum.
            path.down.corrupt = 0.01;
            let client = DrivenClient::get("kim", "big.bin", ms(0)).kill(kill).start(restart);
            let report = run(config, vec![ClientSpec::new("kim", client).with_path(path)]);
            let kim = report.client("kim");
            let (first, last) = (&kim.downloads[0], kim.downloads.last().unwrap());
            assert_eq!(kim.downloads.len(), 2);
            assert_eq!(last.outcome, DownloadOutcome::Complete);
            assert_eq!(last.written_digest, truth);
            assert!(matches!(kim.finished.last(), Some((_, Some(Ok(_))))), "{:?}", kim.finished);
            if first.outcome == DownloadOutcome::Killed {
                assert_eq!(kim.finished.len(), 1);
                assert_eq!(last.resumed_parts as usize, first.saved_parts.len());
                assert_eq!(last.requested_parts.intersection(&first.saved_parts).count(), 0);
                assert_eq!(last.kept_as.as_deref(), Some("big.bin"));
            } else {
                assert_eq!(first.outcome, DownloadOutcome::Complete);
                assert_eq!(last.kept_as.as_deref(), Some("big (1).bin"));
            }
        });
    }
}

/// `natter get` (`Mode::Get`) in the whole system: it joins and asks at once, downloads over a
/// lossy path, says `{quit}`, and its session ends with the verified file without waiting for the
/// server to close (PROTOCOL 4, rule 6); the server still takes it for a `{quit}`.
#[test]
fn get_mode_downloads_and_quits() {
    with_seed(4, |seed| {
        let mut config = SystemConfig::new(seed);
        config.files = vec![file("report.pdf", 64 << 10)];
        let truth = digest(&config.files[0].content);
        let clients = vec![
            ClientSpec::new("amy", DrivenClient::interactive("amy", ms(0))),
            ClientSpec::new("getter", DrivenClient::get("getter", "report.pdf", ms(50)))
                .with_path(Path::symmetric(20_000_000, ms(20), 0.05)),
        ];
        let report = run(config, clients);
        let getter = report.client("getter");
        assert_eq!(getter.finished.len(), 1);
        let (at, end) = &getter.finished[0];
        let Some(Ok(done)) = end else { panic!("{end:?}") };
        assert_eq!((done.path.as_str(), done.size, done.resumed), ("report.pdf", 64 << 10, 0));
        assert_eq!(digest(&getter.folder.files["report.pdf"]), truth);
        assert_eq!(getter.downloads[0].outcome, DownloadOutcome::Complete);
        // Its name and request went out together; it left with `{quit}` and finished at once.
        assert_eq!(getter.sent[0].0, getter.sent[1].0);
        assert!(getter.sent[1].1.starts_with("download_file report.pdf"));
        let (quit_at, quit) = getter.sent.last().unwrap();
        assert_eq!((quit_at, quit.as_str()), (at, "{quit}"));
        assert!(report.log.iter().any(|(_, e)| matches!(
            e,
            LogEvent::Disconnected { name: Some(n), reason: DisconnectReason::Quit, .. } if n == "getter"
        )));
        assert_eq!(left_count(report.client("amy"), "getter"), 1);
        insta::assert_snapshot!(report.transcript());
    });
}

/// Many clients at once: 30 people chatting through real client drivers, while 6 `natter get`
/// download over a path with 2% loss. Every line reaches everyone in its sender's order, every
/// download is byte-exact, nobody is disconnected but by their own `{quit}`. Over several seeds.
#[test]
fn many_clients_chat_and_download_together() {
    for seed in [1, 2, 3] {
        with_seed(seed, many_clients);
    }
}

fn many_clients(seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut config = SystemConfig::new(seed);
    config.timeline = false;
    config.server.udp_ports = 55000..=55009;
    config.files = (0..4).map(|i| file(&format!("f{i}.bin"), (96 + 32 * i) << 10)).collect();
    let truth: BTreeMap<String, [u8; 32]> =
        config.files.iter().map(|f| (f.name.clone(), digest(&f.content))).collect();
    let lossy = Path::symmetric(20_000_000, ms(20), 0.02);
    let mut clients = Vec::new();
    for i in 0..30u64 {
        let name = format!("u{i:02}");
        let mut client = DrivenClient::interactive(&name, ms(rng.below(300)));
        for k in 0..10 {
            let at = ms(500 + rng.below(2500));
            client = client.typed(at, format!("{name} #{k} {}", rng.below(1_000_000)));
        }
        clients.push(ClientSpec::new(name, client.input_ends(ms(3500))));
    }
    for i in 0..6u64 {
        let name = format!("g{i}");
        let f = format!("f{}.bin", i % 4);
        let client = DrivenClient::get(&name, &f, ms(400 + rng.below(1000)));
        clients.push(ClientSpec::new(name, client).with_path(lossy.clone()));
    }
    let report = run(config, clients);
    let quit_only = report.log.iter().all(|(_, e)| {
        !matches!(e, LogEvent::Disconnected { reason, .. } if *reason != DisconnectReason::Quit)
    });
    assert!(quit_only, "someone was disconnected");
    let people = &report.clients[..30];
    for to in people {
        for from in people {
            // Lines a sender typed at the same instant keep their script order too.
            let mut sent = from.sent.clone();
            sent.retain(|(_, l)| *l != from.label && l != "{quit}");
            sent.sort_by_key(|(at, _)| *at);
            let sent: Vec<&str> = sent.iter().map(|(_, l)| l.as_str()).collect();
            assert_eq!(messages_from(to, &from.label), sent, "{} from {}", to.label, from.label);
        }
        // Its input ended and nothing was awaited: it left, and its session ended.
        assert_eq!(to.finished.len(), 1, "{}", to.label);
    }
    for c in &report.clients[30..] {
        let d = &c.downloads[0];
        assert_eq!(d.outcome, DownloadOutcome::Complete, "{} {}", c.label, d.file);
        assert_eq!(d.written_digest, truth[&d.file], "{} {}", c.label, d.file);
        assert!(matches!(&c.finished[..], [(_, Some(Ok(_)))]), "{} {:?}", c.label, c.finished);
    }
}

/// The same seed gives the same run, bit for bit; another seed gives another.
#[test]
fn runs_are_reproducible_from_their_seed() {
    let scenario = |seed| {
        let mut config = SystemConfig::new(seed);
        config.files = vec![file("a.bin", 64 << 10)];
        let clients = (0..5)
            .map(|i| {
                let name = format!("r{i}");
                let client = DrivenClient::interactive(&name, ms(i * 3))
                    .typed(ms(100 + i), "hi")
                    .typed(ms(120), "download_file a.bin");
                ClientSpec::new(name, client).with_path(Path::symmetric(10_000_000, ms(10), 0.05))
            })
            .collect();
        run(config, clients)
    };
    let (a, b, c) = (scenario(11), scenario(11), scenario(12));
    assert_eq!(a.transcript(), b.transcript());
    assert_eq!(a.elapsed, b.elapsed);
    assert_ne!(a.transcript(), c.transcript());
}

/// Accept back-off: when `accept` fails (out of descriptors), the waiting connections are accepted
/// after `ACCEPT_RETRY`, none lost.
#[test]
fn failed_accepts_are_retried_and_nobody_is_lost() {
    with_seed(1, |seed| {
        let mut config = SystemConfig::new(seed);
        config.failing_accepts = 2;
        let clients = (0..3)
            .map(|i| {
                let name = format!("a{i}");
                ClientSpec::new(name.clone(), ScriptedClient::joining(ms(0), &name))
            })
            .collect();
        let report = run(config, clients);
        let joins: Vec<Duration> = report
            .log
            .iter()
            .filter(|(_, e)| matches!(e, LogEvent::Joined { .. }))
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(joins.len(), 3);
        assert!(joins.iter().all(|&at| at >= ms(5) + 2 * ACCEPT_RETRY));
    });
}

/// U7 (PROTOCOL 2.2): the file is edited in place during a download: the client gets ABORT 1 (or
/// notices the digest), never a wrong file.
#[test]
fn u7_a_file_changed_mid_transfer_aborts_it() {
    with_seed(77, |seed| {
        let mut config = SystemConfig::new(seed);
        config.files = vec![file("doc.bin", 1 << 20)];
        config.file_changes =
            vec![FileChange { at: ms(400), name: "doc.bin".into(), content: content(99, 1 << 20) }];
        let clients = vec![
            ClientSpec::new(
                "eve",
                DrivenClient::interactive("eve", ms(0)).typed(ms(100), "download_file doc.bin"),
            )
            .with_path(Path::symmetric(8_000_000, ms(10), 0.0)),
        ];
        let report = run(config, clients);
        let d = &report.client("eve").downloads[0];
        assert!(
            matches!(
                &d.outcome,
                DownloadOutcome::Failed(DownloadFailure::Transfer(
                    TransferError::Aborted { code: AbortCode::FileChanged, .. }
                        | TransferError::DigestMismatch
                ))
            ),
            "{:?}",
            d.outcome
        );
        assert!(report.client("eve").folder.files.is_empty(), "a wrong file was kept");
        assert!(report.log.iter().any(|(_, e)| matches!(
            e,
            LogEvent::TransferEnded { end: SenderEnd::Aborted(AbortCode::FileChanged), .. }
        )));
    });
}
