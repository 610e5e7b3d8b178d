#![no_main]
// Invariants live in natter_core::fuzzing, where core/tests/fuzz_corpus.rs replays this
// target's corpus on stable Rust.
//
// NATTER_FUZZ_SKIP_KNOWN_BUGS=1 lets a campaign run past a bug already reported (see
// fuzz/known-bugs/); without it every broken invariant stops the run.

use std::sync::OnceLock;

use natter_core::fuzzing::{KnownBugs, extreme_offer};

fn known_bugs() -> KnownBugs {
    static MODE: OnceLock<KnownBugs> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var_os("NATTER_FUZZ_SKIP_KNOWN_BUGS") {
        Some(_) => KnownBugs::Skip,
        None => KnownBugs::Fail,
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| extreme_offer(data, std::time::Instant::now(), known_bugs()));
