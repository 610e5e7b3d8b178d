//! The whole system under bad networks, seed after seed: the real `ServerDriver` and `natter get`
//! clients (real `ClientDriver`s) over simulated TCP and damaged UDP paths
//! (`natter_core::sim::system`). U4, U5, U8 / PROTOCOL 2.1-2.6.
//!
//! Each seed serves a small, a medium and a large file (up to 4 MiB) to one to three `natter get`
//! clients, each on its own path drawn from the seed (`campaign::paths`: loss, bursts, jitter,
//! duplication, outages, and damage of every kind on both directions, forged datagrams included).
//! For every client it asserts what a person relies on: the program ends; it reports success only
//! with the file byte-exact under its final name; a failure is an error the path explains; no
//! wrong file is ever kept and a file refused by its digest leaves nothing to resume from; and
//! the server frees every port it offered.
//!
//! Long campaign (README.md, "Long campaigns"): 1,000 seeds by default (CI), any number with
//!
//! ```text
//! NATTER_SIM_SEEDS=10000 cargo test -p natter-core --test sim_system_sweep -- --nocapture
//! ```
//!
//! and one seed replays alone, printing its transcript, with
//! `NATTER_SIM_SEED=<seed> cargo test -p natter-core --test sim_system_sweep -- --nocapture`.

mod campaign;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use campaign::paths;
use natter_core::chat::server::LogEvent;
use natter_core::driver::client::DownloadFailure;
use natter_core::sim::Path;
use natter_core::sim::rng::SplitMix64;
use natter_core::sim::system::driven::DrivenClient;
use natter_core::sim::system::{
    self, ClientReport, ClientSpec, DownloadOutcome, SimFile, SystemConfig, SystemReport,
};
use natter_core::transfer::receiver::{SAFE_PART_SIZE, TransferError};

/// One `natter get` of a seed: who, which file, over which path, in which part size.
#[derive(Debug)]
struct Getter {
    label: String,
    file: String,
    path: Path,
    part_size: u16,
}

fn content(seed: u64, len: u64) -> Vec<u8> {
    let mut bytes = vec![0; len as usize];
    SplitMix64::new(seed).fill(&mut bytes);
    bytes
}

/// Draws one seed's folder and clients.
fn scenario(seed: u64) -> (SystemConfig, Vec<Getter>) {
    let mut rng = SplitMix64::new(seed);
    let mut config = SystemConfig::new(seed);
    config.timeline = campaign::replaying();
    config.time_limit = Duration::from_secs(300);
    let getters: Vec<Getter> = (0..1 + rng.below(3))
        .map(|i| {
            // The large file on one getter in five, so that large files meet every impairment
            // while the campaign stays short.
            let file = match rng.below(10) {
                0 | 1 => "large.bin",
                2..=5 => "medium.bin",
                _ => "small.bin",
            };
            let path = paths::draw(&mut rng, file == "large.bin");
            // Mostly the safe size; sometimes larger parts (the U5 fallback may then take over).
            let part_size = match rng.below(4) {
                0 => 512 + rng.below(8500) as u16,
                _ => SAFE_PART_SIZE,
            };
            Getter { label: format!("g{i}"), file: file.to_owned(), path, part_size }
        })
        .collect();
    let sizes = [
        ("small.bin", rng.below(64 << 10)),
        ("medium.bin", (64 << 10) + rng.below(960 << 10)),
        ("large.bin", (1 << 20) + rng.below(3 << 20)),
    ];
    // Only the files somebody asks for are made (and hashed): the sweep's time goes to the
    // transfers, not to content nobody downloads.
    config.files = sizes
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| getters.iter().any(|g| g.file == *name))
        .map(|(i, &(name, len))| SimFile {
            name: name.to_owned(),
            content: content(seed << 2 | i as u64, len),
        })
        .collect();
    (config, getters)
}

fn run_seed(seed: u64, base: Instant) -> Result<Tally, String> {
    let (config, getters) = scenario(seed);
    let files: BTreeMap<String, Vec<u8>> =
        config.files.iter().map(|f| (f.name.clone(), f.content.clone())).collect();
    let mut rng = SplitMix64::new(!seed);
    let clients = getters
        .iter()
        .map(|g| {
            let start = Duration::from_millis(rng.below(500));
            let client = DrivenClient::get(&g.label, &g.file, start).with_part_size(g.part_size);
            ClientSpec::new(g.label.clone(), client).with_path(g.path.clone())
        })
        .collect();
    let report = system::run(base, config, clients);
    if campaign::replaying() {
        eprintln!("{getters:#?}\n{}", report.transcript());
    }
    let mut tally = check_ports(&report)?;
    for g in &getters {
        let c = report.client(&g.label);
        check_getter(g, c, &files).map_err(|e| {
            format!(
                "{} getting {} over {:?} in {}-byte parts: {e}",
                g.label, g.file, g.path, g.part_size
            )
        })?;
        tally.getters += 1;
        match &c.finished[0].1 {
            Some(Ok(_)) => tally.complete += 1,
            Some(Err(DownloadFailure::Transfer(TransferError::DigestMismatch))) => {
                tally.digest_mismatch += 1;
            }
            Some(Err(DownloadFailure::Transfer(TransferError::NoProgress(_)))) => {
                tally.no_progress += 1;
            }
            Some(Err(DownloadFailure::Transfer(TransferError::Aborted { code, .. }))) => {
                *tally.aborted.entry(u16::from(*code)).or_default() += 1;
            }
            other => return Err(format!("ended with {other:?}")),
        }
        tally.large_complete +=
            u64::from(g.file == "large.bin" && matches!(c.finished[0].1, Some(Ok(_))));
        tally.fallbacks +=
            c.downloads.iter().filter(|d| d.outcome == DownloadOutcome::TooLarge).count() as u64;
    }
    Ok(tally)
}

/// Every transfer the server offered ended, and so freed its port.
fn check_ports(report: &SystemReport) -> Result<Tally, String> {
    let offered =
        report.log.iter().filter(|(_, e)| matches!(e, LogEvent::TransferOffered { .. })).count();
    let ended =
        report.log.iter().filter(|(_, e)| matches!(e, LogEvent::TransferEnded { .. })).count();
    if offered != ended {
        return Err(format!("{offered} transfers offered, {ended} ended: ports stay taken"));
    }
    Ok(Tally { offered: offered as u64, ..Tally::default() })
}

/// The promises of `natter get` to a person, over this getter's path.
fn check_getter(
    g: &Getter,
    c: &ClientReport,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), String> {
    let truth = &files[&g.file];
    let digest = *blake3::hash(truth).as_bytes();
    // No file is kept unless it is byte-exact, under any name.
    for (name, bytes) in &c.folder.files {
        if bytes != truth {
            return Err(format!("kept {name} with wrong bytes"));
        }
    }
    let [(_, end)] = &c.finished[..] else {
        return Err(format!("the program did not end exactly once: {:?}", c.finished));
    };
    let Some(last) = c.downloads.last() else {
        return Err(format!("no download began; the program ended with {end:?}"));
    };
    for (i, d) in c.downloads.iter().enumerate() {
        let is_last = i + 1 == c.downloads.len();
        match &d.outcome {
            DownloadOutcome::Complete if d.written_digest == digest => {}
            DownloadOutcome::Complete => {
                return Err(format!("download {i} complete but not exact"));
            }
            // U5: nothing arrived in time with large parts; the driver asked again in safe ones.
            DownloadOutcome::TooLarge if !is_last && d.part_size > SAFE_PART_SIZE => {}
            DownloadOutcome::Failed(DownloadFailure::Transfer(e)) if is_last => {
                if !paths::explains(&g.path, e, None) {
                    return Err(format!(
                        "download {i} failed with \"{e}\", unexplained by the path"
                    ));
                }
            }
            other => return Err(format!("download {i} ended as {other:?}")),
        }
    }
    match (end, &last.outcome) {
        (Some(Ok(done)), DownloadOutcome::Complete) => {
            if c.folder.files.get(&done.path) != Some(truth) {
                return Err(format!("reported {} but the folder does not hold it", done.path));
            }
            if !c.folder.parts.is_empty() || !c.folder.records.is_empty() {
                return Err(format!("a complete download left {:?}", c.folder.parts.keys()));
            }
        }
        (Some(Err(failure)), DownloadOutcome::Failed(f)) if failure == f => {
            // A file refused by its digest is thrown away: nothing wrong to resume from.
            let refused = *f == DownloadFailure::Transfer(TransferError::DigestMismatch);
            if refused && (!c.folder.parts.is_empty() || !c.folder.records.is_empty()) {
                return Err("a download refused by its digest left its .part file".into());
            }
            if !refused && !c.folder.parts.contains_key(&g.file) {
                return Err("a failed download left no .part file to resume".into());
            }
        }
        (end, outcome) => {
            return Err(format!("the program ended with {end:?} after a download {outcome:?}"));
        }
    }
    Ok(())
}

/// What one seed did, summed over the sweep.
#[derive(Debug, Default, Clone)]
struct Tally {
    getters: u64,
    complete: u64,
    large_complete: u64,
    digest_mismatch: u64,
    no_progress: u64,
    /// Transfers aborted by the server (or by a damaged PART), by ABORT code.
    aborted: BTreeMap<u16, u64>,
    fallbacks: u64,
    offered: u64,
}

/// U4 (with U5 and U8 where a seed meets them) through the whole system, PROTOCOL 2.1-2.6: see
/// the module documentation.
#[test]
fn seed_sweep() {
    let seeds = campaign::seeds(campaign::DEFAULT_SEEDS);
    let base = Instant::now();
    let results =
        campaign::sweep("sim_system_sweep", "seed_sweep", &seeds, |seed| run_seed(seed, base));
    let mut total = Tally::default();
    for (_, t) in &results {
        total.getters += t.getters;
        total.complete += t.complete;
        total.large_complete += t.large_complete;
        total.digest_mismatch += t.digest_mismatch;
        total.no_progress += t.no_progress;
        for (code, n) in &t.aborted {
            *total.aborted.entry(*code).or_default() += n;
        }
        total.fallbacks += t.fallbacks;
        total.offered += t.offered;
    }
    eprintln!("{} seeds: {total:?}", seeds.len());
    if seeds.len() < 500 {
        return; // a replay or a short run checks its seeds only
    }
    // The damage was real: forged parts reached clients and were refused by the digest.
    assert!(total.digest_mismatch >= 20, "{total:?}");
    assert!(total.large_complete >= 50, "{total:?}");
    // A floor, not the promise (that is per client, above): in protocol version 1 a damaged
    // REQUEST ends its download, and the paths damage up to 10% of them.
    assert!(total.complete * 2 >= total.getters, "{total:?}");
}
