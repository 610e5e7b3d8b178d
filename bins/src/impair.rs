//! `natter impair`: starts the proxy, prints its counters now and then, stops on Ctrl-C, SIGTERM
//! or after `--duration`, and prints the final counters.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use natter_core::impair::Way;
use natter_core::sim::LinkConfig;
use natter_runtime_common::impair::{self, ProxyCounters};

use crate::impair_args::ImpairArgs;

/// How often the main thread looks at the stop flag and the clock.
const LOOK_EVERY: Duration = Duration::from_millis(100);

pub fn run(args: &ImpairArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(seed_from_clock);
    let options = args.options(seed);
    let started = Instant::now();
    let proxy = match impair::start(options.clone(), started) {
        Ok(proxy) => proxy,
        Err(err) => {
            eprintln!("natter impair: {err}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(err) = signal_hook::flag::register(signal, stop.clone()) {
            tracing::warn!("cannot catch signal {signal} ({err}): final counters may be lost");
        }
    }
    let upstream =
        options.upstream_ip.unwrap_or_else(|| impair::default_upstream_ip(options.server.ip()));
    println!(
        "natter impair: chat {} -> {}, UDP {}:{}-{} -> {}:{}-{} from {upstream}, seed {seed} \
         (--seed {seed} repeats these decisions)",
        proxy.local_addr(),
        options.server,
        options.listen.ip(),
        options.ports.start(),
        options.ports.end(),
        options.server.ip(),
        options.ports.start(),
        options.ports.end(),
    );
    for way in Way::BOTH {
        println!("  conditions {way}: {}", describe(options.impair.way(way)));
    }
    let report_every = Duration::from_secs_f64(args.report_every.0);
    let duration = args.duration.map(Duration::from);
    let mut next_report = started + report_every;
    loop {
        std::thread::sleep(LOOK_EVERY);
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || duration.is_some_and(|d| now >= started + d) {
            break;
        }
        if !report_every.is_zero() && now >= next_report {
            report("after", now - started, &proxy.counters());
            next_report = now + report_every;
        }
    }
    let counters = proxy.stop();
    report("stopped after", started.elapsed(), &counters);
    ExitCode::SUCCESS
}

fn report(when: &str, elapsed: Duration, counters: &ProxyCounters) {
    println!("natter impair: {when} {:.1} s:\n{counters}", elapsed.as_secs_f64());
    let _ = std::io::stdout().flush();
}

/// One way's conditions in the words of `--help`.
fn describe(link: &LinkConfig) -> String {
    let percent = |p: f64| format!("{}%", p * 100.0);
    let mut text = format!(
        "loss {}, delay {:?}, jitter {:?}, duplicate {}, corrupt {}",
        percent(link.loss),
        link.delay,
        link.jitter,
        percent(link.duplicate),
        percent(link.corrupt)
    );
    if link.corrupt > 0.0 {
        let d = link.damage;
        text += &format!(
            " (weights: bit {}, many-bits {}, burst {}, truncate {}, forged {})",
            d.bit_flip, d.many_bits, d.burst, d.truncate, d.forged
        );
    }
    if let Some(b) = link.burst {
        text += &format!(
            ", bursts enter {} leave {} loss {}",
            percent(b.p_enter_bad),
            percent(b.p_leave_bad),
            percent(b.loss_bad)
        );
    }
    if link.rate_bps > 0 {
        text += &format!(", rate {} bit/s, queue {} bytes", link.rate_bps, link.queue_bytes);
    }
    if let Some((from, until)) = link.blackhole {
        text += &format!(", blackhole from {from:?} to {until:?}");
    }
    text
}

/// A seed nobody chose: the clock's nanoseconds, mixed with the process id.
fn seed_from_clock() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
