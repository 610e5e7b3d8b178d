//! Sealed against plain downloads over real loopback UDP, through the code both runtimes run
//! (server part reads, in-place sealing, GSO; client recvmmsg/GRO, in-place opening, `.part`
//! writes and BLAKE3), with server and client in ONE thread: the figure is what one core does for
//! both ends, so it shows the cost of sealing, not the speed two processes reach.
//!
//! Run: `cargo run --release -p natter-runtime-common --example sealed_speed [MiB] [reps]`
//! (default 256 MiB, 3 repetitions, in the system's temporary folder). Prints wall-clock MB/s and
//! the CPU seconds the process spent per GiB (user + system, from `/proc/self/stat`): on a shared
//! machine the CPU figure is the steadier one. For the report (issue 14, Speed), never asserted.

#[path = "../tests/loopback/mod.rs"]
mod loopback;

use std::time::Duration;

/// User + system CPU seconds this process has used (Linux, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which ends with the last ')'): utime is the 12th, stime
    // the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    (fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0)) / 100.0
}

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
    println!(
        "{mib} MiB over loopback, {reps} runs each: MB/s median (min-max), CPU s per GiB median"
    );
    for part_size in [None, Some(1446)] {
        for secure in [false, true] {
            let mut rates = Vec::new();
            let mut cpu = Vec::new();
            for rep in 0..reps {
                let cpu_before = cpu_seconds();
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
                cpu.push((cpu_seconds() - cpu_before) * 1024.0 / mib as f64);
                let _ = std::fs::remove_dir_all(&out);
            }
            rates.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            println!(
                "{:<8} parts {:>5}: {:>6.0}  ({:.0}-{:.0})  {:.2} CPU s/GiB",
                if secure { "sealed" } else { "plain" },
                part_size.map_or("65000".to_owned(), |p| p.to_string()),
                rates[rates.len() / 2],
                rates[0],
                rates[rates.len() - 1],
                cpu[cpu.len() / 2]
            );
        }
    }
    Ok(())
}
