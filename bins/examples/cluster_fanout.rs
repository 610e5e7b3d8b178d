//! Fan-out through a cluster against one server (issue 15, `bench/cluster/README.md`).
//!
//! Starts its own `redis-server` and `natter server` processes on loopback and, for each setup,
//! connects `CLIENTS` people spread evenly over the setup's nodes. Every person sends `LINES`
//! public lines, one every `GAP`, each carrying the microsecond it was sent; every person reads
//! every line. It prints one table row per setup: deliveries per second (all lines delivered to
//! everyone, over the time from the first send to the last delivery), p50 and p99 of the delay
//! from send to delivery, the CPU seconds the nodes and the broker used during the load, and
//! that CPU per delivery. The setups run one after the other, `REPS` times over (interleaved, so
//! that a noisy minute on a shared machine hits every setup alike), then a summary gives each
//! setup's median over the repetitions.
//!
//!     cargo build --release -p natter --example cluster_fanout
//!     target/release/examples/cluster_fanout target/release/natter [CLIENTS] [LINES] [GAP_MS] [REPS]
//!
//! With `SERVER_CPUS=LIST` (a `taskset -c` list) the broker and the nodes run pinned to those
//! CPUs (started through `taskset`); pin the load generator apart with `taskset -c OTHER`:
//!
//!     SERVER_CPUS=1 taskset -c 0 target/release/examples/cluster_fanout target/release/natter 200 50 20 3
//!
//! Only loopback, only processes it started (stopped by PID at the end), every wait bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: any failure ends the run

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// CPU seconds (user + system) the process used so far, from /proc.
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the `)`.
        (ticks(11) + ticks(12)) / 100.0
    }
}

/// `program`, started through `taskset -c $SERVER_CPUS` when that is set (`taskset` execs the
/// program, so the child's PID is the program's).
fn pinned(program: &str) -> Command {
    match std::env::var("SERVER_CPUS") {
        Ok(cpus) if !cpus.is_empty() => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpus, program]);
            command
        }
        _ => Command::new(program),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn node(natter: &str, udp: u16, redis: Option<u16>, name: &str) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let files = std::env::temp_dir().join(format!("natter-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&files).unwrap();
    let mut command = pinned(natter);
    command
        .env("RUST_LOG", "warn")
        .args(["server", "--addr", &addr.to_string(), "--udp-ports", &format!("{udp}-{udp}")])
        .args(["--max-connections", "5000", "--max-per-ip", "5000", "--presence-limit", "1000"])
        .args(["--max-input-rate", "0", "--max-queued-bytes", "67108864"])
        .arg("--files")
        .arg(&files);
    if let Some(port) = redis {
        command.args(["--cluster", &format!("redis://127.0.0.1:{port}"), "--node", name]);
    }
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_listening(addr);
    (Proc(child), addr)
}

struct Outcome {
    deliveries: usize,
    expected: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
}

type Sent = (Vec<u64>, usize, Duration, Option<TcpStream>);

/// Joins `clients` people over `nodes`, waits until every one sees the whole room, calls
/// `ready` (so that CPU is counted for the load only, not for the joins), then runs the load.
fn load(
    nodes: &[SocketAddr],
    (clients, lines, gap): (usize, usize, Duration),
    ready: impl FnOnce(),
) -> Outcome {
    let mut streams = Vec::new();
    for i in 0..clients {
        let stream = TcpStream::connect(nodes[i % nodes.len()]).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = stream.set_nodelay(true);
        (&stream).write_all(format!("c{i}\n").as_bytes()).unwrap();
        streams.push(stream);
    }
    // Ready when `show` lists everyone else.
    let mut readers: Vec<BufReader<TcpStream>> =
        streams.iter().map(|s| BufReader::new(s.try_clone().unwrap())).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, reader) in readers.iter_mut().enumerate() {
        loop {
            (&streams[i]).write_all(b"show\n").unwrap();
            let mut line = String::new();
            let all = loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line.starts_with("ALL") {
                    break line.split_whitespace().count() - 1;
                }
            };
            if all == clients - 1 {
                break;
            }
            assert!(Instant::now() < deadline, "c{i} sees only {all} of {}", clients - 1);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    ready();
    let start = Instant::now();
    let expected = clients * lines * clients;
    let barrier = Arc::new(Barrier::new(clients * 2));
    let mut handles: Vec<std::thread::JoinHandle<Sent>> = Vec::new();
    for (stream, mut reader) in streams.into_iter().zip(readers) {
        let b = barrier.clone();
        handles.push(std::thread::spawn(move || {
            b.wait();
            let mut stream = stream;
            for k in 0..lines {
                let now = start.elapsed().as_micros();
                stream.write_all(format!("t{now} {k}\n").as_bytes()).unwrap();
                std::thread::sleep(gap);
            }
            (Vec::new(), 0usize, Duration::ZERO, Some(stream))
        }));
        let b = barrier.clone();
        handles.push(std::thread::spawn(move || {
            b.wait();
            let want = clients * lines;
            let (mut got, mut lat, mut line) = (0, Vec::with_capacity(want), String::new());
            let mut last = Duration::ZERO;
            while got < want {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Some(sent) = line.split_once(": t").and_then(|(_, t)| t.split(' ').next())
                else {
                    continue;
                };
                let Ok(sent) = sent.parse::<u64>() else { continue };
                last = start.elapsed();
                lat.push((last.as_micros() as u64).saturating_sub(sent));
                got += 1;
            }
            (lat, got, last, None)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut deliveries = 0;
    let mut end = Duration::ZERO;
    let mut keep = Vec::new();
    for handle in handles {
        let (lat, got, last, stream) = handle.join().unwrap();
        latencies_us.extend(lat);
        deliveries += got;
        end = end.max(last);
        keep.extend(stream);
    }
    drop(keep);
    Outcome { deliveries, expected, seconds: end.as_secs_f64(), latencies_us }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// One setup's figures in one repetition.
#[derive(Clone, Copy)]
struct Row {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    delivered: usize,
    complete: bool,
    nodes_cpu: f64,
    redis_cpu: f64,
}

impl Row {
    /// Server CPU (nodes and broker) per delivery, in nanoseconds.
    fn ns_per_delivery(&self) -> f64 {
        (self.nodes_cpu + self.redis_cpu) * 1e9 / self.delivered.max(1) as f64
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<24} {:>13.0} {:>8.2} {:>8.2} {:>10} {:>8.2}s {:>8.2}s {:>8.0}{}",
            self.per_second,
            self.p50_ms,
            self.p99_ms,
            self.delivered,
            self.nodes_cpu,
            self.redis_cpu,
            self.ns_per_delivery(),
            if self.complete { "" } else { "  (incomplete)" }
        );
    }
}

fn header() {
    println!(
        "{:<24} {:>13} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}",
        "setup",
        "deliveries/s",
        "p50_ms",
        "p99_ms",
        "delivered",
        "nodes_cpu",
        "redis_cpu",
        "ns/deliv"
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let natter = args.get(1).cloned().unwrap_or_else(|| "target/release/natter".into());
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let lines: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(50);
    let gap = Duration::from_millis(args.get(4).and_then(|a| a.parse().ok()).unwrap_or(20));
    let reps: usize = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(1).clamp(1, 20);
    let redis_port = free_port();
    let dir = std::env::temp_dir().join(format!("natter-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "{clients} people, {lines} lines each, one every {gap:?}: {} deliveries per setup, {reps} \
         repetition(s); servers pinned to CPUs {}",
        clients * lines * clients,
        std::env::var("SERVER_CPUS").unwrap_or_else(|_| "(none)".into())
    );
    header();
    let half = clients / 2;
    let setups = [
        (format!("1 node alone x {clients}"), 1, false),
        (format!("1 node + redis x {clients}"), 1, true),
        (format!("2 nodes + redis x {half}"), 2, true),
    ];
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); setups.len()];
    for rep in 0..reps {
        for (i, (label, count, cluster)) in setups.iter().enumerate() {
            let row =
                run_setup(&natter, (i, *count, *cluster), redis_port, &dir, (clients, lines, gap));
            row.print(&format!("{label} #{}", rep + 1));
            rows[i].push(row);
        }
    }
    if reps > 1 {
        println!("\nmedian of {reps}:");
        header();
        for ((label, _, _), rows) in setups.iter().zip(&rows) {
            let pick = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
            let delivered = rows.iter().map(|r| r.delivered).min().unwrap_or(0);
            let row = Row {
                per_second: pick(|r| r.per_second),
                p50_ms: pick(|r| r.p50_ms),
                p99_ms: pick(|r| r.p99_ms),
                delivered,
                complete: rows.iter().all(|r| r.complete),
                nodes_cpu: pick(|r| r.nodes_cpu),
                redis_cpu: pick(|r| r.redis_cpu),
            };
            row.print(label);
        }
    }
}

/// Starts setup `i` (`count` nodes, with a broker or not), runs the load, stops it all.
fn run_setup(
    natter: &str,
    (i, count, cluster): (usize, usize, bool),
    redis_port: u16,
    dir: &std::path::Path,
    (clients, lines, gap): (usize, usize, Duration),
) -> Row {
    let redis = cluster.then(|| {
        let child = pinned("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_listening(format!("127.0.0.1:{redis_port}").parse().unwrap());
        Proc(child)
    });
    let nodes: Vec<(Proc, SocketAddr)> = (0..count)
        .map(|n| {
            let udp = 31_500 + (i * 10 + n) as u16;
            node(natter, udp, cluster.then_some(redis_port), &format!("b{i}n{n}"))
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
    // Let the nodes find each other before the people come.
    std::thread::sleep(Duration::from_millis(300));
    let (mut cpu_before, mut redis_before) = (0.0, 0.0);
    let outcome = load(&addrs, (clients, lines, gap), || {
        cpu_before = nodes.iter().map(|(p, _)| p.cpu()).sum();
        redis_before = redis.as_ref().map_or(0.0, Proc::cpu);
    });
    let nodes_cpu = nodes.iter().map(|(p, _)| p.cpu()).sum::<f64>() - cpu_before;
    let redis_cpu = redis.as_ref().map_or(0.0, Proc::cpu) - redis_before;
    let mut lat = outcome.latencies_us;
    lat.sort_unstable();
    drop(nodes);
    drop(redis);
    Row {
        per_second: outcome.deliveries as f64 / outcome.seconds,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        delivered: outcome.deliveries,
        complete: outcome.deliveries == outcome.expected,
        nodes_cpu,
        redis_cpu,
    }
}
