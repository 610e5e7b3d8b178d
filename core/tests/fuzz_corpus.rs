//! P1: replays every saved fuzz input (`fuzz/corpus/<target>/*`) through the same invariant checks
//! the fuzz targets run, so the ordinary test run exercises them on stable Rust. Inputs that break
//! an invariant whose fix is under way wait in `fuzz/known-bugs/<target>/`: they are replayed too,
//! and must still fail until the fix lands (then they move into the corpus).

use std::path::Path;
use std::time::Instant;

use natter_core::fuzzing::{self, KnownBugs};

fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, data) in inputs("corpus", target) {
        // A failing input names itself: the panic message comes from inside `check`.
        eprintln!("replaying {}", path.display());
        check(&data);
    }
}

/// Every file of `fuzz/<dir>/<target>/`, sorted by name.
fn inputs(dir: &str, target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(dir).join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("no corpus at {}: {err}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "{} is empty", dir.display());
    entries
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path);
            let data = data.unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            (path, data)
        })
        .collect()
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

#[test]
fn sealed_corpus() {
    // P1, U1-U3 / PROTOCOL 2.7
    let start = Instant::now();
    replay("sealed", |data| fuzzing::sealed_datagrams(data, start));
}

#[test]
fn chat_client_corpus() {
    // P1, S3, S4 / PROTOCOL 1.2, 1.3, 2.1
    let start = Instant::now();
    replay("chat_client", |data| fuzzing::chat_client_session(data, start));
}

#[test]
fn client_driver_corpus() {
    // P1, S3, U1-U6 / PROTOCOL 1.2, 2.1-2.4
    let start = Instant::now();
    replay("client_driver", |data| fuzzing::client_driver_session(data, start));
}

#[test]
fn resume_record_corpus() {
    // P1, U6 / PROTOCOL 2.4
    let start = Instant::now();
    replay("resume_record", |data| fuzzing::resume_record_round_trip(data, start));
}

#[test]
fn extreme_offer_corpus() {
    // P1, S3 / PROTOCOL 2.1, 2.4
    let start = Instant::now();
    replay("extreme_offer", |data| fuzzing::extreme_offer(data, start, KnownBugs::Fail));
}

#[test]
fn cluster_entry_corpus() {
    // P1 / PROTOCOL 8.2: what a hostile broker hands a node
    let start = Instant::now();
    replay("cluster_entry", |data| fuzzing::cluster_entry(data, start));
}
