//! Many small files in one `natter get` against one big file (issue 11, must-have 3), through
//! the real client and server drivers on the shared harness's path: 1 Gbit/s, 20 ms, 5% loss each
//! way, a 10 ms drop-tail queue. `bench/transfer/many-files.sh` measures the same on real sockets.
//!
//! PROTOCOL 2.1 (the transfer cap and the wait at it) and 4, rule 7 (the client's queue).

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use std::time::{Duration, Instant};

use natter_core::driver::client::{ClientConfig, Mode};
use natter_core::sim::Path;
use natter_core::sim::rng::SplitMix64;
use natter_core::sim::system::driven::{DrivenClient, SERVER_IP};
use natter_core::sim::system::{self, ClientSpec, SimFile, SystemConfig};

const RTT: Duration = Duration::from_millis(20);
/// The part size `natter get` asks for on Ethernet over IPv4 (PROTOCOL 2.1).
const ETHERNET_PART: u16 = 1446;
/// Downloads at once, on both sides, as `bench/transfer/many-files.sh` is run.
const AT_ONCE: usize = 32;

/// The simulated time `natter get` of `files` takes, every file verified.
fn get(seed: u64, files: Vec<SimFile>) -> Duration {
    let mut config = SystemConfig::new(seed);
    config.tcp.delay = RTT / 2;
    config.server.max_transfers_per_client = AT_ONCE;
    config.server.max_transfers_per_ip = AT_ONCE;
    config.server.udp_ports = 55000..=55127;
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let truth: Vec<[u8; 32]> = files.iter().map(|f| *blake3::hash(&f.content).as_bytes()).collect();
    config.files = files;
    let mut client =
        ClientConfig::new("getter", Mode::Get { files: names.clone() }, SERVER_IP, ETHERNET_PART);
    client.max_transfers = AT_ONCE;
    let client = DrivenClient::new(client).start(Duration::ZERO).with_early_flights();
    let path = Path::symmetric(1_000_000_000, RTT, 0.05).with(|l| l.queue_bytes = 1_250_000);
    let report = system::run(
        Instant::now(),
        config,
        vec![ClientSpec::new("getter", client).with_path(path)],
    );
    let getter = report.client("getter");
    let (at, end) = getter.finished.last().unwrap();
    assert!(matches!(end, Some(Ok(_))), "{end:?}");
    for (name, truth) in names.iter().zip(truth) {
        assert_eq!(*blake3::hash(&getter.folder.files[name]).as_bytes(), truth, "{name}");
    }
    // Every download line asked for an early flight, and the flights came: the downloads asked
    // in REQUESTs mostly for what a flight lost (a flight of 1 MiB holds a whole file here; the
    // first 32 flights, sent at once, overflow the path's queue, and some are lost whole).
    let asked = getter.sent.iter().map(|(_, l)| l).filter(|l| l.starts_with("download_file"));
    let early_lines = asked.filter(|l| l.split(' ').count() == 5).count();
    assert_eq!(early_lines, names.len(), "every download_file line asked for a flight");
    if names.len() > 1 {
        let (mut requested, mut parts) = (0, 0);
        for d in &getter.downloads {
            (requested, parts) =
                (requested + d.requested_parts.len(), parts + d.received_parts.len());
        }
        eprintln!("parts asked for in REQUESTs: {requested} of {parts}");
        assert!(requested * 2 < parts, "{requested} of {parts} parts asked for again");
    }
    *at
}

fn random_file(name: String, len: usize, seed: u64) -> SimFile {
    let mut content = vec![0; len];
    SplitMix64::new(seed).fill(&mut content);
    SimFile { name, content }
}

/// 100 files of 100 KiB take less than 1.3 times one file of 10 MiB (the goal on real
/// sockets is 1.5). Measured over three seeds: 1.03 to 1.21 (1.09 to 1.17 before the first
/// flight's repairs went at its arrival rate, `Bbr::in_first_flight`: both the many and the one
/// got faster, the one by more on one seed). Before the server held a download
/// line that overtook its FINISHED (PROTOCOL 2.1, `CAP_WAIT`), the refusal, the client's 50 ms
/// retry and the lines queued behind it made it 2.05 to 2.09; before every download had an early
/// flight (only the session's first had one), 1.47 to 1.52.
#[test]
fn a_hundred_small_files_take_less_than_one_point_three_times_one_big_one() {
    for seed in 1..=3 {
        let many =
            (0..100).map(|i| random_file(format!("f{i:02}.bin"), 100 << 10, seed * 1000 + i));
        let t_many = get(seed, many.collect());
        let t_one = get(seed, vec![random_file("big.bin".into(), 10 << 20, seed)]);
        let ratio = t_many.as_secs_f64() / t_one.as_secs_f64();
        eprintln!("seed {seed}: 100 x 100 KiB {t_many:?}, 10 MiB {t_one:?}, ratio {ratio:.2}");
        assert!(ratio < 1.3, "seed {seed}: ratio {ratio:.2} ({t_many:?} against {t_one:?})");
    }
}
