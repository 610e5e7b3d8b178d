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

/// A capture of one transfer port with tcpdump (installed by `.ci/run`), running while `run`
/// downloads over it; returns the capture file's bytes. The capture is stopped by its PID.
fn captured(run: impl FnOnce(std::net::UdpSocket) -> loopback::Run) -> (loopback::Run, Vec<u8>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let udp = loopback::server_socket().unwrap();
    let port = udp.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("udp.pcap");
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "-n", "-U", "-s", "0", "-B", "16384", "-w"])
        .arg(&pcap)
        .arg(format!("udp port {port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump is needed for this test (.ci/run installs it)");
    // It says "listening on lo" once the capture runs.
    let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("listening on") {
        line.clear();
    }
    assert!(line.contains("listening on"), "tcpdump did not start: {line}");
    let result = run(udp);
    // Let the last datagrams reach the capture, then stop it (by its own PID) and wait for it.
    std::thread::sleep(Duration::from_millis(300));
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    (result, std::fs::read(&pcap).unwrap())
}

/// Issue 14 "a capture on loopback (tcpdump) of ... a sealed download holds none of the file's
/// bytes, and no token", PROTOCOL 2.7, on real sockets: tcpdump on the transfer port during a
/// sealed download finds no 16-byte piece of the file and not the token's 8 bytes; during a
/// plain download (the control) it finds both, so the search can fail.
#[test]
fn a_tcpdump_capture_of_a_sealed_download_holds_no_file_bytes_and_no_token() {
    let files = served(1 << 20);
    let file = std::fs::read(files.path().join("f.bin")).unwrap();
    let holds = |capture: &[u8], needle: &[u8]| capture.windows(needle.len()).any(|w| w == needle);
    let token = |offer: &str| u64::from_str_radix(offer.split(' ').nth(7).unwrap(), 16).unwrap();
    for secure in [true, false] {
        let out = tempfile::tempdir().unwrap();
        let (run, capture) = captured(|udp| {
            let limit = Duration::from_secs(60);
            loopback::download_on(udp, files.path(), "f.bin", out.path(), secure, Some(1446), limit)
                .unwrap()
        });
        assert!(run.exact);
        // Most of the transfer (a loaded machine's capture may drop some packets).
        assert!(
            capture.len() > file.len() / 2,
            "the capture missed the transfer: {}",
            capture.len()
        );
        let pieces =
            (0..file.len() - 16).step_by(4099).filter(|&at| holds(&capture, &file[at..at + 16]));
        let token_seen = holds(&capture, &token(&run.offer).to_be_bytes());
        if secure {
            assert_eq!(pieces.count(), 0, "file bytes in the capture of a sealed download");
            assert!(!token_seen, "the token is in the capture of a sealed download");
        } else {
            assert!(pieces.count() > 25, "the control: a plain download is readable");
            assert!(token_seen, "the control: a plain datagram carries the token");
        }
    }
}
