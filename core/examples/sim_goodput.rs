//! Prints the simulated goodput table: natter's transfer engine against the original
//! stop-and-wait design (one part per round trip), on 100 Mbit/s paths with 2 ms and 20 ms RTT and
//! 0..30% random loss each way. Deterministic: the same binary prints the same table.
//!
//!     cargo run --release -p natter-core --example sim_goodput

use std::time::{Duration, Instant};

use natter_core::sim::{self, FlowSpec, Outcome, Path, SimConfig};
use natter_core::transfer::congestion::ControllerKind;

const RATE_BPS: u64 = 100_000_000;

fn main() {
    let base = Instant::now();
    for rtt_ms in [2u64, 20] {
        for loss_pct in [0u32, 1, 5, 10, 20, 30] {
            for (design, kind, size, limit) in [
                ("natter", ControllerKind::Bbr, 50 << 20, 60),
                ("natter-newreno", ControllerKind::NewReno, 50 << 20, 20),
                ("stop-and-wait", ControllerKind::StopAndWait, 1 << 20, 20),
            ] {
                let rtt = Duration::from_millis(rtt_ms);
                let config = SimConfig {
                    path: Path::symmetric(RATE_BPS, rtt, f64::from(loss_pct) / 100.0),
                    seed: u64::from(loss_pct) * 1000 + rtt_ms,
                    time_limit: Duration::from_secs(limit),
                };
                let mut spec = FlowSpec::new(size, 1200);
                spec.controller = kind;
                let report = sim::run(base, &config, &[spec]);
                let flow = &report.flows[0];
                // A row measures a correct transfer or none: wrong bytes are a failure, not a
                // figure (a design may run out of time, which the row then shows).
                assert_eq!(flow.wrong_bytes_accepted, 0, "{design}: {flow:?}");
                assert!(
                    flow.bytes_exact || flow.outcome != Outcome::Complete,
                    "{design}: {flow:?}"
                );
                // Goodput = file bytes delivered (in order or not) over the time taken; a design
                // that cannot finish within the limit is measured on what it got.
                let secs = flow.elapsed.as_secs_f64().max(1e-9);
                let goodput = flow.progress.bytes_received as f64 * 8.0 / secs;
                println!(
                    "rate_mbps={} rtt_ms={rtt_ms} loss_pct={loss_pct} design={design} goodput_pct={:.1}",
                    RATE_BPS / 1_000_000,
                    goodput / RATE_BPS as f64 * 100.0
                );
            }
        }
    }
}
