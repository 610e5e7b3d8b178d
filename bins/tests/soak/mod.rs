//! Pieces of the long campaigns of `endurance.rs`: the real `natter server` as a child process
//! whose descriptors and memory are read from `/proc` ([`child`]), the figures and tables they
//! print ([`figures`]), and how big a campaign is ([`Scale`]).
//!
//! The default `cargo test` runs the counts the test catalogue names for C9 (10,000 cycles) and
//! U10 (1,000 downloads), which take a second each, and 300 idle clients for C5. The full
//! campaign (ten times the cycles and downloads, three waves of 1,000 idle clients, ten times
//! the latency samples) runs with
//!
//! ```text
//! NATTER_SOAK=full cargo test --release -p natter --test endurance -- --nocapture --test-threads 1
//! ```

#![allow(dead_code)]

pub mod child;
pub mod figures;

/// How many of each thing a campaign does.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Whether this is the full campaign (`NATTER_SOAK=full`).
    pub full: bool,
    /// Connect/disconnect cycles after the warm-up (C9).
    pub cycles: usize,
    /// Downloads in a row after the warm-up (U10).
    pub downloads: usize,
    /// Connections that never read, in each wave (C5).
    pub idle_clients: usize,
    /// Waves of them, one after the other.
    pub idle_waves: usize,
    /// `show` round trips timed, with and without a flooder (C6).
    pub latency_samples: usize,
}

/// The campaign asked for by `NATTER_SOAK`: `full`, or unset (or `short`) for the default run.
///
/// # Panics
/// On any other value, so that a typo does not run the short campaign in silence.
pub fn scale() -> Scale {
    match std::env::var("NATTER_SOAK").as_deref() {
        Ok("full") => Scale {
            full: true,
            cycles: 100_000,
            downloads: 10_000,
            idle_clients: 1_000,
            idle_waves: 3,
            latency_samples: 10_000,
        },
        Ok("short") | Err(std::env::VarError::NotPresent) => Scale {
            full: false,
            cycles: 10_000,
            downloads: 1_000,
            idle_clients: 300,
            idle_waves: 1,
            latency_samples: 1_000,
        },
        Ok(other) => panic!("NATTER_SOAK={other:?}: expected `full` or `short`"),
        Err(err) => panic!("NATTER_SOAK: {err}"),
    }
}
