//! What a busy client does to goodput: the simulated 1 Gbit/s, 20 ms, 5%-loss path with a client
//! whose event loop stalls (see `sim::Stalls`), with one and two copies of each REQUEST.
//! Deterministic.
//!
//!     cargo run --release -p natter-core --example sim_stalls

use std::time::{Duration, Instant};

use natter_core::sim::{self, FlowSpec, Outcome, Path, SimConfig, Stalls};

const RATE_BPS: u64 = 1_000_000_000;

fn main() {
    let base = Instant::now();
    for (every_ms, length_ms) in [(0u64, 0u64), (10, 2), (10, 4), (20, 8)] {
        for copies in [1u8, 2] {
            let config = SimConfig {
                path: Path::symmetric(RATE_BPS, Duration::from_millis(20), 0.05),
                seed: 7,
                time_limit: Duration::from_secs(60),
            };
            let mut spec = FlowSpec::new(256 << 20, 1448);
            spec.request_copies = copies;
            spec.client_stalls = (every_ms > 0).then(|| Stalls {
                every: Duration::from_millis(every_ms),
                length: Duration::from_millis(length_ms),
            });
            let report = sim::run(base, &config, &[spec]);
            let flow = &report.flows[0];
            // A stall may cost speed, never correctness: wrong bytes are a failure, not a row.
            assert_eq!(flow.wrong_bytes_accepted, 0, "{flow:?}");
            assert!(flow.bytes_exact || flow.outcome != Outcome::Complete, "{flow:?}");
            println!(
                "stall_ms={length_ms}/{every_ms} request_copies={copies} outcome={:?} goodput_pct={:.1} parts_lost_pct={:.1}",
                flow.outcome,
                flow.goodput_bps / RATE_BPS as f64 * 100.0,
                flow.progress.parts_lost as f64 / f64::from(flow.progress.n_parts.max(1)) * 100.0
            );
        }
    }
}
