//! Sealed and plain downloads over real loopback UDP sockets through the code both runtimes run
//! (`tests/loopback`), in 65000-byte parts (GSO/GRO batches of large datagrams) and in 1444-byte
//! parts (many datagrams per batch). U4 / PROTOCOL 2.7, issue 14.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

mod loopback;

use std::time::Duration;

use natter_core::wire::sealed::SEALED_VERSION;

fn served(len: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.path().join("f.bin"), bytes).unwrap();
    dir
}

#[test]
fn sealed_downloads_are_byte_exact_on_real_sockets() {
    let files = served(6 << 20);
    for part_size in [None, Some(1446)] {
        let out = tempfile::tempdir().unwrap();
        let run = loopback::download(
            files.path(),
            "f.bin",
            out.path(),
            true,
            part_size,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(run.exact, "{part_size:?}: the file differs");
        // The offer carried a key (eight fields) and 2 bytes less per part than asked.
        let fields: Vec<&str> = run.offer.split(' ').collect();
        assert_eq!(fields.len(), 9, "{}", run.offer);
        let asked = part_size.unwrap_or(65000);
        assert_eq!(fields[5], (asked - 2).to_string());
        assert!(!run.request_versions.is_empty());
        assert!(run.request_versions.iter().all(|&v| v == SEALED_VERSION), "a plain request");
    }
}

#[test]
fn plain_downloads_are_unchanged_on_real_sockets() {
    let files = served(1 << 20);
    let out = tempfile::tempdir().unwrap();
    let run =
        loopback::download(files.path(), "f.bin", out.path(), false, None, Duration::from_secs(60))
            .unwrap();
    assert!(run.exact);
    assert_eq!(run.offer.split(' ').count(), 8, "{}", run.offer);
    assert!(run.request_versions.iter().all(|&v| v == 2));
}
