//! Real downloads on loopback through `natter impair` (U4, PROTOCOL 2.3; U1 and U2 on the way):
//! loss, bursts, duplication, reordering, delay, rate limits and every kind of damage, on both
//! runtimes. The one rule checked after every download: the file is byte-exact, or the download
//! ended with a clear error and nothing stands under the final name (only the `.part` working
//! files may remain, for a resume).
//!
//! The campaign draws each download's file, part size, runtimes and impairment from a seed. The
//! default run does 20 downloads; the long one is
//!
//! ```text
//! NATTER_IMPAIR_DOWNLOADS=1000 nice -n 10 cargo test --release -p natter --test impair -- --nocapture campaign
//! ```
//!
//! (`NATTER_IMPAIR_SEED=N` starts from another seed; a failing download prints its seed and
//! conditions). It prints downloads, byte-exact, clean errors by kind, wrong files (must be 0) and
//! the wall time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use natter_core::impair::flows::FlowLimits;
use natter_core::impair::{ImpairConfig, WayCounters};
use natter_core::sim::damage::DamageMix;
use natter_core::sim::rng::SplitMix64;
use natter_core::sim::{GilbertElliott, LinkConfig};
use natter_core::transfer::receiver::TransferError;
use natter_runtime_common::impair::{self, ImpairOptions, ProxyCounters, ProxyHandle};
use natter_runtime_common::{DownloadError, DownloadFailure, DownloadOptions};
use support::*;

/// The files every test server offers: empty, tiny, a few KiB, hundreds of KiB, a few MiB, with
/// sizes on and off part boundaries.
const FILES: &[(&str, usize)] = &[
    ("empty", 0),
    ("one", 1),
    ("two", 2),
    ("k1", 1000),
    ("k4", 4096),
    ("k5", 5003),
    ("k64", 65_000),
    ("k64b", 65_001),
    ("k100", 100 << 10),
    ("k300", 300_007),
    ("k512", 512 << 10),
    ("m1", 1 << 20),
    ("m2", 2_000_003),
    ("m4", (4 << 20) + 1),
];

fn content(name: &str) -> Vec<u8> {
    let (i, &(_, size)) = FILES.iter().enumerate().find(|(_, (n, _))| *n == name).unwrap();
    pattern(size, 1000 + i as u64)
}

/// A server of runtime `rt` offering [`FILES`], and its transfer ports.
fn serve(rt: Rt) -> (TestServer, RangeInclusive<u16>) {
    let files: Vec<(&str, Vec<u8>)> = FILES.iter().map(|&(n, _)| (n, content(n))).collect();
    let mut ports = None;
    let server = start(rt, folder_with(&files), |o| ports = Some(o.chat.udp_ports.clone()));
    (server, ports.unwrap())
}

/// A proxy in front of `server` on 127.0.0.2, impairing with `impair` from `seed`.
fn proxy(
    server: &TestServer,
    ports: &RangeInclusive<u16>,
    impair: ImpairConfig,
    seed: u64,
) -> ProxyHandle {
    let options = ImpairOptions {
        listen: "127.0.0.2:0".parse().unwrap(),
        server: server.addr,
        ports: ports.clone(),
        upstream_ip: None,
        impair,
        seed,
        flows: FlowLimits::default(),
        max_connections: 64,
    };
    impair::start(options, Instant::now()).unwrap()
}

/// How a download ended, judged by the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// Saved under its final name, byte for byte the server's file.
    Exact,
    /// Failed with this kind of error, and nothing under a final name.
    CleanError(String),
    /// The rule broken: what was wrong.
    Wrong(String),
}

/// A short name for each kind of error, for the tallies.
fn kind(err: &DownloadError) -> String {
    match err {
        DownloadError::Client(e) => format!("session: {e}"),
        DownloadError::Failed(DownloadFailure::Transfer(t)) => match t {
            TransferError::DigestMismatch => "digest mismatch".into(),
            TransferError::Aborted { code, .. } => format!("ABORT {code}"),
            TransferError::NoProgress(_) => "no progress".into(),
            TransferError::Abandoned => "abandoned".into(),
            TransferError::RequestsExhausted => "requests exhausted".into(),
        },
        DownloadError::Failed(DownloadFailure::Refused(why)) => format!("refused: {why}"),
        DownloadError::Failed(DownloadFailure::NoAnswer(_)) => "no answer".into(),
        DownloadError::Failed(DownloadFailure::Io(e)) => format!("io: {e}"),
        DownloadError::Failed(DownloadFailure::Disconnected) => "disconnected".into(),
        DownloadError::Failed(DownloadFailure::Interrupted) => "interrupted".into(),
        DownloadError::Failed(DownloadFailure::Tls(e)) => format!("tls: {e}"),
    }
}

/// Downloads `file` through `addr` with `client` into `out` and judges the result: the saved file
/// must be the server's byte for byte; on an error, `out` may hold only the working files.
fn fetch(
    client: Rt,
    addr: SocketAddr,
    file: &str,
    out: &Path,
    part: Option<u16>,
    stall: Duration,
) -> Ending {
    let session = natter_runtime_common::ClientOptions {
        addr,
        name: "impaired".into(),
        out_dir: out.to_owned(),
        part_size: part,
        stall_timeout: stall,
        max_size: natter_core::driver::client::DEFAULT_MAX_DOWNLOAD_SIZE,
        max_transfers: natter_core::driver::client::DEFAULT_MAX_TRANSFERS,
        tls: None,
    };
    let options = DownloadOptions::new(vec![file.into()], session);
    let result = download(client, &options);
    let expected = content(file);
    let finals: Vec<String> = std::fs::read_dir(out)
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    ![".part", ".part.resume", ".part.resume.tmp"].iter().any(|s| n.ends_with(s))
                })
                .collect()
        })
        .unwrap_or_default();
    match result {
        Ok(report) => {
            let saved = std::fs::read(&report.path).unwrap_or_default();
            if Path::new(&report.path) != out.join(file) {
                Ending::Wrong(format!("saved as {} instead of {file}", report.path))
            } else if saved != expected {
                Ending::Wrong(format!(
                    "{file}: {} bytes saved differ from the server's",
                    saved.len()
                ))
            } else if finals != [file] {
                Ending::Wrong(format!("other files beside {file}: {finals:?}"))
            } else {
                Ending::Exact
            }
        }
        Err(err) if finals.is_empty() => Ending::CleanError(kind(&err)),
        Err(err) => Ending::Wrong(format!("failed ({err}) but left {finals:?} under final names")),
    }
}

/// Sums of both ways' counters over many proxies.
#[derive(Debug, Default)]
struct Totals {
    up: WayCounters,
    down: WayCounters,
}

impl Totals {
    fn add(&mut self, c: &ProxyCounters) {
        self.up.add(&c.to_server);
        self.down.add(&c.to_client);
    }
}

fn link(f: impl FnOnce(&mut LinkConfig)) -> LinkConfig {
    let mut link = LinkConfig::clean(0, Duration::ZERO, 0);
    f(&mut link);
    link
}

/// Downloads each of `files` through its own proxy with `impair` (seeded by its index) on runtime
/// `rt`; returns each ending and the proxies' totals.
fn run_each(
    rt: Rt,
    impair: &ImpairConfig,
    files: &[(&str, Option<u16>)],
    stall: Duration,
) -> (Vec<Ending>, Totals) {
    let (server, ports) = serve(rt);
    let mut totals = Totals::default();
    let endings = files
        .iter()
        .enumerate()
        .map(|(i, &(file, part))| {
            let proxy = proxy(&server, &ports, impair.clone(), i as u64);
            let out = tempfile::tempdir().unwrap();
            let ending = fetch(rt, proxy.local_addr(), file, out.path(), part, stall);
            totals.add(&proxy.stop());
            ending
        })
        .collect::<Vec<_>>();
    eprintln!(
        "{rt:?}: {endings:?}\n  client->server: {}\n  server->client: {}",
        totals.up, totals.down
    );
    (endings, totals)
}

/// Small and large files, in small parts (many datagrams to impair) and loopback's default ones.
const MIXED: &[(&str, Option<u16>)] =
    &[("empty", None), ("one", Some(600)), ("k5", Some(1200)), ("k300", Some(1200)), ("m1", None)];

/// U4, PROTOCOL 2.2-2.3: 10% loss each way, and 5% of the datagrams each way damaged in every way
/// the CRC32C catches (bits, bursts, truncation): a damaged datagram is dropped (U1; REQUESTs carry
/// a CRC32C too since version 2), so every download is byte-exact.
fn ten_percent_loss_and_damage_the_crc_catches(rt: Rt) {
    let caught = DamageMix { bit_flip: 1, many_bits: 1, burst: 1, truncate: 1, forged: 0 };
    let up = link(|l| {
        l.loss = 0.1;
        l.corrupt = 0.05;
        l.damage = caught;
    });
    let down = link(|l| {
        l.loss = 0.1;
        l.corrupt = 0.05;
        l.damage = caught;
    });
    let (endings, t) = run_each(rt, &ImpairConfig::new(up, down), MIXED, Duration::from_secs(10));
    assert!(endings.iter().all(|e| *e == Ending::Exact), "{endings:?}");
    let d = t.down.damaged;
    assert!(d.bit_flip > 0 && d.many_bits > 0 && d.burst > 0 && d.truncate > 0, "{}", t.down);
    assert!(t.up.damaged.total() > 0 && t.up.lost > 0 && t.down.lost > 0, "{}", t.up);
}

/// U4, PROTOCOL 2.3: 30% loss each way and 5% of the server's datagrams damaged in every way,
/// forged PARTs (CRC recomputed) included: only the BLAKE3 digest stands between those and a wrong
/// file. Each download is byte-exact or fails with a digest mismatch, and never leaves a file
/// under the final name.
fn thirty_percent_loss_and_forged_parts(rt: Rt) {
    let up = link(|l| l.loss = 0.3);
    let down = link(|l| {
        l.loss = 0.3;
        l.corrupt = 0.05;
        l.damage = DamageMix::ALL;
    });
    let (endings, t) = run_each(rt, &ImpairConfig::new(up, down), MIXED, Duration::from_secs(10));
    for ending in &endings {
        assert!(
            *ending == Ending::Exact || *ending == Ending::CleanError("digest mismatch".into()),
            "{endings:?}"
        );
    }
    assert!(endings.contains(&Ending::Exact), "{endings:?}");
    let d = t.down.damaged;
    assert!(d.forged > 0 && d.truncate > 0 && d.bit_flip > 0, "{}", t.down);
    let lost = t.down.lost as f64 / t.down.received as f64;
    assert!((0.2..0.4).contains(&lost), "{lost}: {}", t.down);
}

/// U4, PROTOCOL 2.3: a fifth of the datagrams each way delivered twice, every copy 1 to 6 ms late
/// (so they are reordered), and burst losses: every download is byte-exact.
fn duplication_reordering_and_bursts(rt: Rt) {
    let way = link(|l| {
        l.duplicate = 0.2;
        l.delay = Duration::from_millis(1);
        l.jitter = Duration::from_millis(5);
        l.burst = Some(GilbertElliott { p_enter_bad: 0.02, p_leave_bad: 0.3, loss_bad: 0.8 });
    });
    let (endings, t) =
        run_each(rt, &ImpairConfig::new(way.clone(), way), MIXED, Duration::from_secs(10));
    assert!(endings.iter().all(|e| *e == Ending::Exact), "{endings:?}");
    assert!(t.up.duplicated > 0 && t.down.duplicated > 0, "{}\n{}", t.up, t.down);
    assert!(t.down.lost > 0, "{}", t.down);
}

mod mio {
    #[test]
    fn ten_percent_loss_and_damage_the_crc_catches() {
        super::ten_percent_loss_and_damage_the_crc_catches(super::Rt::Mio)
    }
    #[test]
    fn thirty_percent_loss_and_forged_parts() {
        super::thirty_percent_loss_and_forged_parts(super::Rt::Mio)
    }
    #[test]
    fn duplication_reordering_and_bursts() {
        super::duplication_reordering_and_bursts(super::Rt::Mio)
    }
}

mod smol {
    #[test]
    fn ten_percent_loss_and_damage_the_crc_catches() {
        super::ten_percent_loss_and_damage_the_crc_catches(super::Rt::Smol)
    }
    #[test]
    fn thirty_percent_loss_and_forged_parts() {
        super::thirty_percent_loss_and_forged_parts(super::Rt::Smol)
    }
    #[test]
    fn duplication_reordering_and_bursts() {
        super::duplication_reordering_and_bursts(super::Rt::Smol)
    }
}

// ---------------------------------------------------------------- the campaign

/// One download of the campaign, drawn from its seed.
#[derive(Debug, Clone)]
struct Scenario {
    file: &'static str,
    part: Option<u16>,
    server: Rt,
    client: Rt,
    impair: ImpairConfig,
    stall: Duration,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = SplitMix64::new(seed ^ 0x1a9a_17ed);
    let pick = |rng: &mut SplitMix64, names: &[&'static str]| {
        names[rng.below(names.len() as u64) as usize]
    };
    // 15% tiny, 35% a few KiB, 35% hundreds of KiB, 15% MiB.
    let file = match rng.below(100) {
        0..15 => pick(&mut rng, &["empty", "one", "two"]),
        15..50 => pick(&mut rng, &["k1", "k4", "k5", "k64", "k64b"]),
        50..85 => pick(&mut rng, &["k100", "k300", "k512"]),
        _ => pick(&mut rng, &["m1", "m2", "m4"]),
    };
    // Loopback's 65000-byte parts, or small odd ones (many datagrams), or anything allowed.
    let part = match rng.below(10) {
        0..3 => None,
        3..8 => Some(512 + rng.below(2000) as u16),
        _ => Some(512 + rng.below(64_489) as u16),
    };
    let rts = [Rt::Mio, Rt::Smol];
    let (server, client) = (rts[rng.below(2) as usize], rts[rng.below(2) as usize]);
    let big = matches!(file, "m1" | "m2" | "m4");
    let loss = [0.0, 0.02, 0.1, 0.3][rng.below(4) as usize];
    let burst = (rng.below(4) == 0).then_some(GilbertElliott {
        p_enter_bad: 0.01,
        p_leave_bad: 0.3,
        loss_bad: 0.8,
    });
    let way = |rng: &mut SplitMix64| {
        let mut l = LinkConfig::clean(0, Duration::from_micros(rng.below(2000)), 0);
        l.loss = loss;
        l.burst = burst;
        l.jitter = Duration::from_micros(rng.below(3000));
        l.duplicate = rng.unit() * 0.05;
        if rng.below(5) == 0 {
            // A rate limit with its drop-tail queue; fast enough for the big files to finish.
            l.rate_bps = if big { 100_000_000 } else { 20_000_000 + rng.below(180_000_000) };
            l.queue_bytes = 256 << 10;
        }
        l
    };
    let mut up = way(&mut rng);
    let mut down = way(&mut rng);
    down.corrupt = rng.unit() * 0.03;
    down.damage = if rng.below(2) == 0 { DamageMix::ALL } else { DamageMix::ONE_BIT };
    // One in five scenarios damages the client's datagrams too, forgeries included: a forged
    // REQUEST (CRC recomputed) may end the transfer, with ABORT 2 for a range past the end, or
    // with the client giving up when a `req_seq` far ahead makes the server ignore the requests
    // that follow. Clear errors both.
    if rng.below(5) == 0 {
        up.corrupt = rng.unit() * 0.02;
        up.damage = DamageMix::ALL;
    }
    // One in fifty: a 3-second outage each way shortly after the proxy starts.
    let mut stall = Duration::from_secs(5);
    if rng.below(50) == 0 {
        let start = Duration::from_millis(rng.below(300));
        up.blackhole = Some((start, start + Duration::from_secs(3)));
        down.blackhole = up.blackhole;
        stall = Duration::from_secs(10);
    }
    Scenario { file, part, server, client, impair: ImpairConfig::new(up, down), stall }
}

/// What in a scenario accounts for a clean error of this kind, if anything does.
///
/// Every datagram carries a CRC32C, which catches every kind of damage but forgery (except with
/// probability 2^-32). So a digest mismatch needs a forged PART; an ABORT needs a forged REQUEST
/// (a range past the end) or a forged ABORT; a stall needs a forged REQUEST (a `req_seq` far ahead
/// makes the server ignore the requests that follow), an outage, or heavy loss.
fn explanation(s: &Scenario, kind: &str) -> Option<&'static str> {
    let (up, down) = (&s.impair.to_server, &s.impair.to_client);
    let forged = |l: &LinkConfig| l.corrupt > 0.0 && l.damage.forges();
    match kind {
        "digest mismatch" if forged(down) => Some("forged parts"),
        "digest mismatch" => None,
        _ if forged(up) => Some("forged requests"),
        abort if abort.starts_with("ABORT") && forged(down) => Some("a forged ABORT"),
        _ if up.blackhole.is_some() => Some("an outage"),
        "no progress" if up.loss >= 0.3 || up.burst.is_some() => Some("heavy loss"),
        _ => None,
    }
}

/// The gist of one way's conditions, for a line about a download.
fn conditions(l: &LinkConfig) -> String {
    format!(
        "loss {:.0}%{}, delay {:?} + {:?} jitter, dup {:.1}%, corrupt {:.2}% {:?}, rate {}, hole {:?}",
        l.loss * 100.0,
        if l.burst.is_some() { " + bursts" } else { "" },
        l.delay,
        l.jitter,
        l.duplicate * 100.0,
        l.corrupt * 100.0,
        l.damage,
        l.rate_bps,
        l.blackhole
    )
}

/// What the campaign counted.
#[derive(Debug, Default)]
struct Tally {
    downloads: u64,
    exact: u64,
    errors: BTreeMap<String, u64>,
    wrong: Vec<String>,
    /// Clean errors the scenario's conditions do not account for.
    unexplained: Vec<String>,
    resumed: u64,
    resumed_exact: u64,
    bytes: u64,
    totals: Totals,
}

/// NATTER_IMPAIR_DOWNLOADS downloads (20 by default) of mixed sizes through the proxy, each with
/// its own impairment, on both runtimes and across them; a download that failed with its `.part`
/// kept is resumed once through the same proxy. U4, PROTOCOL 2.3-2.4.
#[test]
fn campaign() {
    let n: u64 =
        std::env::var("NATTER_IMPAIR_DOWNLOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let first: u64 =
        std::env::var("NATTER_IMPAIR_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let servers = [serve(Rt::Mio), serve(Rt::Smol)];
    let started = Instant::now();
    let mut tally = Tally::default();
    for seed in first..first + n {
        let s = scenario(seed);
        let (server, ports) = &servers[usize::from(s.server == Rt::Smol)];
        let proxy = proxy(server, ports, s.impair.clone(), seed);
        let out = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let mut ending = fetch(s.client, proxy.local_addr(), s.file, out.path(), s.part, s.stall);
        let took = t.elapsed();
        tally.downloads += 1;
        tally.bytes += content(s.file).len() as u64;
        let kept_part = std::fs::read_dir(out.path()).unwrap().next().is_some();
        if matches!(ending, Ending::CleanError(_)) && kept_part {
            // The next download of the file picks up its `.part`: it too must be exact or clean.
            tally.resumed += 1;
            let again = fetch(s.client, proxy.local_addr(), s.file, out.path(), s.part, s.stall);
            match again {
                Ending::Exact => tally.resumed_exact += 1,
                Ending::Wrong(_) => ending = again,
                Ending::CleanError(_) => {}
            }
        }
        let counters = proxy.stop();
        tally.totals.add(&counters);
        match &ending {
            Ending::Exact => tally.exact += 1,
            Ending::CleanError(kind) => {
                *tally.errors.entry(kind.clone()).or_default() += 1;
                let why = explanation(&s, kind);
                eprintln!(
                    "seed {seed}: {} ({} B), part {:?}, {:?} server, {:?} client, clean error after \
                     {took:.1?}: {kind} ({})\n  up: {}\n  down: {}",
                    s.file,
                    content(s.file).len(),
                    s.part,
                    s.server,
                    s.client,
                    why.unwrap_or("UNEXPLAINED"),
                    conditions(&s.impair.to_server),
                    conditions(&s.impair.to_client),
                );
                if why.is_none() {
                    tally.unexplained.push(format!("seed {seed}: {kind}"));
                }
            }
            Ending::Wrong(what) => {
                let line = format!("seed {seed}: WRONG FILE: {what}\n  {s:?}\n{counters}");
                eprintln!("{line}");
                tally.wrong.push(line);
            }
        }
    }
    let wall = started.elapsed();
    let clean: u64 = tally.errors.values().sum();
    eprintln!(
        "impair campaign: {} downloads ({} MB) from seed {first} in {:.1} s: {} byte-exact, {clean} \
         clean errors {:?} ({} unexplained), {} wrong files; {} resumed after an error, {} of them \
         byte-exact",
        tally.downloads,
        tally.bytes / 1_000_000,
        wall.as_secs_f64(),
        tally.exact,
        tally.errors,
        tally.unexplained.len(),
        tally.wrong.len(),
        tally.resumed,
        tally.resumed_exact,
    );
    eprintln!("  client->server: {}\n  server->client: {}", tally.totals.up, tally.totals.down);
    assert!(tally.wrong.is_empty(), "wrong files:\n{}", tally.wrong.join("\n"));
    // A clean error nothing in its conditions accounts for is a bug (a digest mismatch without a
    // forged part would mean wrong bytes got past the CRC into the file).
    assert!(tally.unexplained.is_empty(), "unexplained errors:\n{}", tally.unexplained.join("\n"));
    assert_eq!(tally.exact + clean, n);
    // The impairment was real, and most downloads still got through.
    assert!(
        tally.totals.down.lost > 0 && tally.totals.down.damaged.total() > 0,
        "{}",
        tally.totals.down
    );
    assert!(tally.exact * 2 > n, "only {} of {n} byte-exact", tally.exact);
}

// ---------------------------------------------------------------- the command

/// A child process that is killed if the test fails before it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `natter impair` as a person runs it: it says where it listens and with which seed, a download
/// goes through it, and Ctrl-C stops it with the final counters of both ways.
#[test]
fn the_command_relays_and_reports_its_counters_on_ctrl_c() {
    let (server, ports) = serve(Rt::Mio);
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["impair", "--listen", "127.0.0.2:0", "--server", &server.addr.to_string()])
        .args(["--ports", &format!("{}-{}", ports.start(), ports.end())])
        .args(["--loss", "10%", "--duplicate", "0/5%", "--corrupt", "0/2%", "--seed", "42"])
        .args(["--damage", "bit,many-bits,burst,truncate"])
        .args(["--report-every", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(proxy.stdout.take().unwrap());
    let mut proxy = KillOnDrop(proxy);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // "natter impair: chat 127.0.0.2:PORT -> ..., seed 42 ..."
    assert!(first.contains("seed 42"), "{first}");
    let addr: SocketAddr = first.split_whitespace().nth(3).unwrap().parse().unwrap();
    let out = tempfile::tempdir().unwrap();
    assert_eq!(
        fetch(Rt::Mio, addr, "k300", out.path(), Some(1200), Duration::from_secs(10)),
        Ending::Exact
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&proxy.0),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = proxy.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = stdout.lines().map(Result::unwrap).collect();
    let text = rest.join("\n");
    assert!(text.contains("natter impair: stopped after"), "{text}");
    let line = |way: &str| rest.iter().find(|l| l.trim_start().starts_with(way)).cloned().unwrap();
    let received = |line: &str| -> u64 { line.split_whitespace().nth(1).unwrap().parse().unwrap() };
    // Both ways carried datagrams; the server's were the ones duplicated and damaged.
    assert!(received(&line("client->server:")) > 0, "{text}");
    assert!(received(&line("server->client:")) > 200, "{text}");
    assert!(line("client->server:").contains("duplicated 0,"), "{text}");
    assert!(!line("server->client:").contains("duplicated 0,"), "{text}");
    assert!(text.contains("chat: 0 open, 1 accepted"), "{text}");
}
