//! Sealed against plain downloads over real loopback UDP, through the code both runtimes run
//! (server part reads, in-place sealing, GSO; client recvmmsg/GRO, in-place opening, `.part`
//! writes and BLAKE3), with server and client in ONE thread: the figure is what one core does for
//! both ends, so it shows the cost of sealing, not the speed two processes reach.
//!
//! Run: `cargo run --release -p natter-runtime-common --example sealed_speed [MiB] [reps]`
//! (default 256 MiB, 3 repetitions, in the system's temporary folder). Wall-clock figures for the
//! report (issue 14, Speed), never asserted.

#[path = "../tests/loopback/mod.rs"]
mod loopback;

use std::time::Duration;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let reps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let served = dir.path().join("served");
    std::fs::create_dir(&served).map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(served.join("f.bin"), &bytes).map_err(|e| e.to_string())?;
    drop(bytes);
    println!("{mib} MiB over loopback, {reps} runs each, MB/s (median, min-max)");
    for part_size in [None, Some(1446)] {
        for secure in [false, true] {
            let mut rates = Vec::new();
            for rep in 0..reps {
                let out = dir.path().join(format!("out-{secure}-{part_size:?}-{rep}"));
                let run = loopback::download(
                    &served,
                    "f.bin",
                    &out,
                    secure,
                    part_size,
                    Duration::from_secs(300),
                )?;
                if !run.exact {
                    return Err("a download was not byte-exact".into());
                }
                rates.push((mib << 20) as f64 / run.elapsed.as_secs_f64() / 1e6);
                let _ = std::fs::remove_dir_all(&out);
            }
            rates.sort_by(f64::total_cmp);
            println!(
                "{:<8} parts {:>5}: {:>6.0}  ({:.0}-{:.0})",
                if secure { "sealed" } else { "plain" },
                part_size.map_or("65000".to_owned(), |p| p.to_string()),
                rates[rates.len() / 2],
                rates[0],
                rates[rates.len() - 1]
            );
        }
    }
    Ok(())
}
