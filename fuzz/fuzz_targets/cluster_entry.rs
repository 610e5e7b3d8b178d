#![no_main]
// Invariants live in natter_core::fuzzing, where core/tests/fuzz_corpus.rs replays this
// target's corpus on stable Rust.
libfuzzer_sys::fuzz_target!(|data: &[u8]| natter_core::fuzzing::cluster_entry(data, std::time::Instant::now()));
