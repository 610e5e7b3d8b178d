//! Seed campaigns shared by the simulator sweeps (`sim_robustness.rs`, `sim_system.rs`).
//!
//! - `NATTER_SIM_SEEDS=N` runs seeds `0..N` (default 1,000: the CI run); `NATTER_SIM_SEEDS=10000`
//!   is the long campaign README.md documents.
//! - `NATTER_SIM_SEED=S` runs seed `S` alone and prints its scenario and report: the replay of a
//!   failure.
//!
//! Every seed runs to the end even when an earlier one failed, on every core, and the sweep then
//! fails once, naming every failing seed with its message: a campaign reports all it found, not
//! just the first.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

pub mod paths;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Seeds a sweep runs when `NATTER_SIM_SEEDS` is not set: the CI run.
pub const DEFAULT_SEEDS: u64 = 1000;

/// The seeds to run: `NATTER_SIM_SEED` alone, else `0..NATTER_SIM_SEEDS`, else `0..default`.
///
/// # Panics
/// When a variable is set but is not a number: a typo must not silently run the default.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(seed) = number("NATTER_SIM_SEED") {
        return vec![seed];
    }
    (0..number("NATTER_SIM_SEEDS").unwrap_or(default)).collect()
}

/// Whether a single seed is being replayed (print its details then).
pub fn replaying() -> bool {
    number("NATTER_SIM_SEED").is_some()
}

fn number(var: &str) -> Option<u64> {
    let text = std::env::var(var).ok()?;
    Some(text.trim().parse().unwrap_or_else(|_| panic!("{var}={text:?} is not a number")))
}

/// Runs `check` for every seed on every core and returns what each seed gave, in seed order.
/// A seed fails when `check` returns `Err` or panics (a simulator assertion, a panic in the core);
/// after all seeds ran, the sweep panics with every failure and the command that replays it.
pub fn sweep<T: Send>(
    file: &str,
    test: &str,
    seeds: &[u64],
    check: impl Fn(u64) -> Result<T, String> + Sync,
) -> Vec<(u64, T)> {
    let next = AtomicU64::new(0);
    let results = Mutex::new(Vec::with_capacity(seeds.len()));
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(seeds.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { break };
                    let outcome = catch_unwind(AssertUnwindSafe(|| check(seed)))
                        .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
                    match outcome {
                        Ok(value) => lock(&results).push((seed, value)),
                        Err(message) => lock(&failures).push((seed, message)),
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|(seed, _)| *seed);
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .take(20)
            .map(|(seed, message)| format!("seed {seed}: {message}"))
            .collect();
        panic!(
            "{} of {} seeds failed{}:\n{}\nreplay one with: NATTER_SIM_SEED=<seed> cargo test -p \
             natter-core --test {file} {test} -- --nocapture",
            failures.len(),
            seeds.len(),
            if failures.len() > 20 { " (the first 20)" } else { "" },
            list.join("\n"),
        );
    }
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(seed, _)| *seed);
    results
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}
