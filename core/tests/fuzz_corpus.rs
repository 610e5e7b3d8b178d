//! P1: replays every saved fuzz input (`fuzz/corpus/<target>/*`) through the same invariant checks
//! the fuzz targets run, so the ordinary test run exercises them on stable Rust.

use std::path::Path;
use std::time::Instant;

use natter_core::fuzzing;

fn replay(target: &str, check: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("no corpus at {}: {err}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "the {target} corpus is empty");
    for path in entries {
        let data = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        // A failing input names itself: the panic message comes from inside `check`.
        eprintln!("replaying {}", path.display());
        check(&data);
    }
}

#[test]
fn datagram_corpus() {
    replay("datagram", fuzzing::datagram_round_trip);
}

#[test]
fn chat_line_corpus() {
    replay("chat_line", fuzzing::chat_line_round_trip);
}

#[test]
fn line_framer_corpus() {
    replay("line_framer", fuzzing::line_framer_split_invariance);
}

#[test]
fn chat_server_corpus() {
    let start = Instant::now();
    replay("chat_server", |data| fuzzing::chat_server_session(data, start));
}

#[test]
fn transfer_corpus() {
    let start = Instant::now();
    replay("transfer", |data| fuzzing::transfer_hostile_datagrams(data, start));
}
