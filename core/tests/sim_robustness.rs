//! Seeded transfers through bad simulated networks (`natter_core::sim::run`: real receivers against
//! real senders). U4 / PROTOCOL 2.2, 2.3, 2.6.
//!
//! The sweep draws, per seed, a path (rate, round trip, random and burst loss, jitter, duplication,
//! a blackhole, damage on *both* directions: one bit, many bits, bursts, truncation, and forged
//! datagrams whose checksum was recomputed) and one to four transfers sharing it (files from empty
//! to several MiB, part sizes over the whole allowed range, both controllers, clients that stall).
//! For every transfer it asserts: it ends (no time limit reached), the server frees its port, and
//! it is byte-exact or fails with an error the scenario explains -- never "complete" with a wrong
//! byte (the written bytes are compared with the file, not trusted from the receiver).
//!
//! Long campaign (README.md, "Long campaigns"): 1,000 seeds by default (CI), any number with
//!
//! ```text
//! NATTER_SIM_SEEDS=10000 cargo test -p natter-core --test sim_robustness -- --nocapture
//! ```
//!
//! and a failing seed replays alone, printing its scenario and report, with
//! `NATTER_SIM_SEED=<seed> cargo test -p natter-core --test sim_robustness seed_sweep -- --nocapture`.

mod campaign;

use campaign::paths;

use std::time::{Duration, Instant};

use natter_core::sim::damage::DamageMix;
use natter_core::sim::rng::SplitMix64;
use natter_core::sim::{self, FlowReport, FlowSpec, Outcome, Path, SimConfig, SimReport, Stalls};
use natter_core::transfer::congestion::ControllerKind;
use natter_core::transfer::receiver::TransferError;
use natter_core::transfer::sender::SenderEnd;

/// A transfer gives up after this long without a new part.
const GIVE_UP: Duration = Duration::from_secs(20);

/// One seed's world: the path and the transfers sharing it.
#[derive(Debug)]
struct Scenario {
    config: SimConfig,
    flows: Vec<FlowSpec>,
}

/// A file size: mostly small, some medium, a few of several MiB, a few empty or nearly.
fn size(rng: &mut SplitMix64) -> u64 {
    match rng.below(100) {
        0..=5 => (1 << 20) + rng.below(7 << 20),
        6..=19 => rng.below(512 << 10),
        20..=24 => rng.below(3),
        _ => rng.below(64 << 10),
    }
}

/// Draws one scenario from the seed.
fn scenario(seed: u64) -> Scenario {
    let mut rng = SplitMix64::new(seed);
    let n_flows = 1 + rng.below(4) as usize;
    let mut sizes: Vec<u64> = (0..n_flows).map(|_| size(&mut rng)).collect();
    // Every 25th seed carries an 8 MiB file next to the others: large files must meet every
    // impairment, not only the lucky draws.
    if seed.is_multiple_of(25) {
        sizes[0] = 8 << 20;
    }
    let big = sizes.iter().any(|&s| s > (512 << 10));
    let path = paths::draw(&mut rng, big);
    // NewReno on the milder paths only: a loss-based controller crawls at two parts in flight
    // under 20-30% loss with bursts (correct, but minutes of simulated time).
    let mild = !paths::can_silence(&path) && path.down.loss <= 0.1;
    let flows = sizes
        .into_iter()
        .enumerate()
        .map(|(i, size)| {
            // Odd part sizes over the whole allowed range, biased towards the small end.
            let part_size = match rng.below(4) {
                0 => 512 + rng.below(64_489) as u16,
                _ => 512 + rng.below(2000) as u16,
            };
            let mut spec = FlowSpec::new(size, part_size);
            spec.content_seed = seed << 3 | i as u64;
            spec.start = Duration::from_millis(rng.below(500));
            spec.give_up_after = GIVE_UP;
            if rng.below(10) == 0 && mild {
                spec.controller = ControllerKind::NewReno;
            }
            if rng.below(10) == 0 {
                let length = Duration::from_millis(1 + rng.below(10));
                spec.client_stalls = Some(Stalls { every: Duration::from_millis(20), length });
            }
            spec
        })
        .collect();
    let config = SimConfig { path, seed, time_limit: Duration::from_secs(300) };
    Scenario { config, flows }
}

/// Why a flow may end the way it did, or the broken promise if it may not.
fn check_flow(s: &Scenario, flow: &FlowReport) -> Result<(), String> {
    let path = &s.config.path;
    if flow.sender_end.is_none() {
        return Err("the server never ended the transfer (its port stays taken)".into());
    }
    if flow.wrong_bytes_accepted > 0 && !paths::down_forges(path) {
        return Err(format!(
            "{} wrong bytes passed the CRC32C check with no forged damage on the path",
            flow.wrong_bytes_accepted
        ));
    }
    match &flow.outcome {
        Outcome::Complete if flow.bytes_exact => Ok(()),
        Outcome::Complete => Err("reported complete with wrong bytes".into()),
        Outcome::TimeLimit => Err("neither finished nor failed in time".into()),
        Outcome::Failed(e) if paths::explains(path, e, Some(flow.bytes_exact)) => Ok(()),
        Outcome::Failed(e) => Err(format!("failed with \"{e}\", which this path does not explain")),
    }
}

/// What one seed did, summed over the sweep.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    flows: u64,
    complete: u64,
    /// Completed flows of at least 1 MiB.
    complete_large: u64,
    largest: u64,
    /// Flows that accepted forged bytes (none of them completed: `check_flow`).
    forged_caught: u64,
    digest_mismatch: u64,
    aborted: u64,
    no_progress: u64,
    down_damaged: u64,
    up_damaged: u64,
    lost: u64,
    duplicated: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.flows += o.flows;
        self.complete += o.complete;
        self.complete_large += o.complete_large;
        self.largest = self.largest.max(o.largest);
        self.forged_caught += o.forged_caught;
        self.digest_mismatch += o.digest_mismatch;
        self.aborted += o.aborted;
        self.no_progress += o.no_progress;
        self.down_damaged += o.down_damaged;
        self.up_damaged += o.up_damaged;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
    }
}

fn run_seed(seed: u64, base: Instant) -> Result<Tally, String> {
    let s = scenario(seed);
    let report = sim::run(base, &s.config, &s.flows);
    if campaign::replaying() {
        eprintln!("{s:#?}\n{report:#?}");
    }
    tally(&s, &report)
}

fn tally(s: &Scenario, report: &SimReport) -> Result<Tally, String> {
    let mut t = Tally {
        down_damaged: report.down.corrupted,
        up_damaged: report.up.corrupted,
        lost: report.down.lost + report.up.lost + report.down.queue_drops + report.up.queue_drops,
        duplicated: report.down.duplicated + report.up.duplicated,
        ..Tally::default()
    };
    for (i, (flow, spec)) in report.flows.iter().zip(&s.flows).enumerate() {
        check_flow(s, flow).map_err(|e| {
            format!(
                "flow {i} ({} bytes in {}-byte parts, {:?}): {e}; {:?}",
                spec.size, spec.part_size, spec.controller, flow
            )
        })?;
        t.flows += 1;
        t.largest = t.largest.max(spec.size);
        match &flow.outcome {
            Outcome::Complete => {
                t.complete += 1;
                t.complete_large += u64::from(spec.size >= 1 << 20);
            }
            Outcome::Failed(TransferError::DigestMismatch) => t.digest_mismatch += 1,
            Outcome::Failed(TransferError::NoProgress(_)) => t.no_progress += 1,
            Outcome::Failed(
                TransferError::Aborted { .. }
                | TransferError::Abandoned
                | TransferError::RequestsExhausted,
            ) => t.aborted += 1,
            Outcome::TimeLimit => {}
        }
        t.forged_caught += u64::from(flow.wrong_bytes_accepted > 0);
    }
    Ok(t)
}

/// U4: every transfer of every seed is byte-exact or fails with an error its path explains, and
/// the damage really happened: forged parts got past the CRC and were caught by the digest,
/// requests were damaged, large files completed. See the module documentation for the command
/// that runs 10,000 seeds.
#[test]
fn seed_sweep() {
    let seeds = campaign::seeds(campaign::DEFAULT_SEEDS);
    let base = Instant::now();
    let results =
        campaign::sweep("sim_robustness", "seed_sweep", &seeds, |seed| run_seed(seed, base));
    let mut total = Tally::default();
    for (_, t) in &results {
        total.add(t);
    }
    eprintln!("{} seeds: {total:?}", seeds.len());
    // The aggregate promises need a campaign's worth of seeds; a replay checks its seed only.
    if seeds.len() < 500 {
        return;
    }
    // Forged parts were accepted (they pass the CRC by construction) and every such transfer
    // ended in a digest mismatch, not in a wrong file (check_flow, per flow).
    assert!(total.forged_caught >= 20, "forged parts rarely reached a receiver: {total:?}");
    assert!(total.down_damaged >= 10_000 && total.up_damaged >= 1000, "{total:?}");
    assert!(total.lost >= 100_000 && total.duplicated >= 10_000, "{total:?}");
    assert_eq!(total.largest, 8 << 20);
    assert!(total.complete_large >= 20, "few large files completed: {total:?}");
    // Most transfers complete: the failures are the damaged requests and forged parts only.
    assert!(total.complete * 4 >= total.flows * 3, "{total:?}");
}

/// U4, PROTOCOL 2.2-2.3: a path that forges parts (CRC recomputed) and does nothing else. The
/// forged bytes pass every check a datagram has, land in the file, and the transfer fails with a
/// digest mismatch; a path that damages the same datagrams without forging (many bits, bursts,
/// truncation) is caught part by part by the CRC32C, and the transfer completes byte-exact.
#[test]
fn forged_parts_are_caught_by_the_digest_and_other_damage_by_the_crc() {
    let run = |mix: DamageMix| {
        let path = Path::symmetric(100_000_000, Duration::from_millis(10), 0.0).with(|l| {
            l.corrupt = 0.02;
            l.damage = mix;
        });
        let config = SimConfig { path, seed: 17, time_limit: Duration::from_secs(60) };
        let report = sim::run(Instant::now(), &config, &[FlowSpec::new(1 << 20, 1200)]);
        report.flows[0].clone()
    };
    let forged = run(DamageMix { forged: 1, bit_flip: 0, ..DamageMix::ONE_BIT });
    assert!(forged.wrong_bytes_accepted > 0, "{forged:?}");
    assert!(!forged.bytes_exact);
    assert_eq!(forged.outcome, Outcome::Failed(TransferError::DigestMismatch), "{forged:?}");
    let unforged = run(DamageMix { forged: 0, ..DamageMix::ALL });
    assert_eq!(unforged.outcome, Outcome::Complete, "{unforged:?}");
    assert!(unforged.bytes_exact);
    assert_eq!(unforged.wrong_bytes_accepted, 0);
    assert!(unforged.progress.dropped > 0, "no damaged part reached the receiver");
}

/// U4, PROTOCOL 2.2, 2.6: damage of every kind on the requests only (client to server). A changed
/// REQUEST may end a transfer (ABORT 2, or no progress once a raised req_seq made the server ignore
/// the rest), but every transfer ends, byte-exact or with that clear error.
#[test]
fn damaged_requests_end_clearly() {
    let mut total = Tally::default();
    for seed in 0..100 {
        let mut s = scenario(seed);
        s.config.path.down.corrupt = 0.0;
        s.config.path.up.corrupt = 0.05;
        s.config.path.up.damage = DamageMix::ALL;
        let report = sim::run(Instant::now(), &s.config, &s.flows);
        let t = tally(&s, &report).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(t.forged_caught, 0, "seed {seed}: damaged requests brought wrong bytes");
        total.add(&t);
    }
    assert!(total.up_damaged >= 500, "{total:?}");
    // Most transfers still complete: two copies of each request, and most damage misses the
    // fields that matter or is refused by the parser.
    assert!(total.complete * 10 >= total.flows * 8, "{total:?}");
}

/// U4: the path drops everything for 5 s in the middle of a download; the probe timer backs off
/// (capped at 2 s, well under the server's 10 s idle timeout) and the download completes.
#[test]
fn a_five_second_blackhole_is_survived() {
    let config = SimConfig {
        path: Path::symmetric(100_000_000, Duration::from_millis(20), 0.0).with(|l| {
            l.blackhole = Some((Duration::from_millis(500), Duration::from_millis(5500)))
        }),
        seed: 3,
        time_limit: Duration::from_secs(60),
    };
    let spec = FlowSpec::new(16 << 20, 1200);
    let report = sim::run(Instant::now(), &config, std::slice::from_ref(&spec));
    let flow = &report.flows[0];
    assert_eq!(flow.outcome, Outcome::Complete, "{flow:?}");
    assert!(flow.bytes_exact);
    assert!(flow.progress.probe_timeouts >= 3, "{:?}", flow.progress);
    // Resumed within one capped PTO (2 s) of the path coming back.
    assert!(flow.elapsed < Duration::from_secs(9), "{:?}", flow.elapsed);
}

/// U4, U8: a path that never delivers anything ends with a clear NoProgress error, not a hang.
#[test]
fn a_permanent_blackhole_fails_clearly() {
    let config = SimConfig {
        path: Path::symmetric(100_000_000, Duration::from_millis(20), 0.0)
            .with(|l| l.blackhole = Some((Duration::ZERO, Duration::from_secs(1000)))),
        seed: 3,
        time_limit: Duration::from_secs(60),
    };
    let mut spec = FlowSpec::new(1 << 20, 1200);
    spec.give_up_after = Duration::from_secs(5);
    let report = sim::run(Instant::now(), &config, std::slice::from_ref(&spec));
    let flow = &report.flows[0];
    assert!(matches!(flow.outcome, Outcome::Failed(TransferError::NoProgress(_))), "{flow:?}");
    assert_eq!(flow.progress.bytes_received, 0);
    // The server freed the port by itself too.
    assert_eq!(flow.sender_end, Some(SenderEnd::TimedOut));
    // Backed-off probing: a handful of requests, not a flood.
    assert!(report.up.sent < 60, "{:?}", report.up);
}
