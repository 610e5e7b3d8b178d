//! `natter impair`'s command line: the knobs of the bad network, each way, and how they read.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use natter_core::impair::ImpairConfig;
use natter_core::impair::flows::FlowLimits;
use natter_core::sim::damage::DamageMix;
use natter_core::sim::{GilbertElliott, LinkConfig};
use natter_runtime_common::impair::ImpairOptions;

use crate::cli::{PortRange, Seconds, default_ports};

const EXAMPLE: &str = "\
Clients connect to the proxy instead of the server and need no change: their chat goes to \
--listen, and their transfer datagrams to the same IP at the port of the server's offer.

Values written A/B apply A to client->server datagrams (REQUEST, FINISHED) and B to \
server->client ones (PART, ABORT); a single value applies to both ways. The chat (TCP) is \
relayed untouched. Counters (forwarded, lost, duplicated, damaged by kind, each way) are printed \
every --report-every seconds and when the proxy stops (Ctrl-C, or after --duration).

Example: a server on 127.0.0.1, and a path that loses 10% each way, damages 1% of the server's \
datagrams in every way there is, and reorders within 5 ms:

  natter server --addr 127.0.0.1:55000 --udp-ports 55000-55015 &
  natter impair --listen 127.0.0.2:55000 --server 127.0.0.1:55000 --ports 55000-55015 \\
      --loss 10% --corrupt 0/1% --jitter-ms 5 --seed 7 &
  natter get hello.c --addr 127.0.0.2:55000";

/// A UDP proxy that puts a bad network between natter clients and a server.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLE)]
pub struct ImpairArgs {
    /// Where clients connect their chat (TCP). The transfer ports listen on the same IP, which must
    /// be a specific one and, on one machine, not the server's (on loopback: 127.0.0.2).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// The natter server's chat address; its transfer ports are on the same IP.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:55000")]
    pub server: SocketAddr,
    /// The server's UDP transfer ports (its --udp-ports); the proxy listens on the same numbers.
    #[arg(long, value_name = "FIRST-LAST", default_value_t = default_ports())]
    pub ports: PortRange,
    /// The IP the proxy speaks to the server from, for the chat and every transfer (the server
    /// wants both from one IP). Default: 127.0.0.3 for a server on loopback, otherwise the one
    /// the kernel picks.
    #[arg(long, value_name = "IP")]
    pub upstream_ip: Option<IpAddr>,
    /// Random loss: the chance each datagram is lost, as a fraction (0.1) or a percentage (10%).
    #[arg(long, value_name = "P[/P]", default_value = "0")]
    pub loss: PerWay<Probability>,
    /// Burst loss on top of --loss (Gilbert-Elliott): ENTER:LEAVE:LOSS, the chances per datagram
    /// of entering and of leaving the bad state, and the loss in it; "off" for none. Example:
    /// 1%:30%:80% (bursts of about 3 datagrams, 80% of them lost, every 100 datagrams or so).
    #[arg(long, value_name = "E:L:P[/E:L:P]", default_value = "off")]
    pub burst: PerWay<Burst>,
    /// One-way delay, milliseconds.
    #[arg(long, value_name = "MS[/MS]", default_value = "0")]
    pub delay_ms: PerWay<Millis>,
    /// Jitter, milliseconds: each copy waits an extra time drawn from 0 to this, so datagrams
    /// closer together than the jitter are reordered.
    #[arg(long, value_name = "MS[/MS]", default_value = "0")]
    pub jitter_ms: PerWay<Millis>,
    /// Duplication: the chance a datagram is delivered twice (the copy has its own jitter).
    #[arg(long, value_name = "P[/P]", default_value = "0")]
    pub duplicate: PerWay<Probability>,
    /// Corruption: the chance a delivered copy is damaged, in one of the --damage ways.
    #[arg(long, value_name = "P[/P]", default_value = "0")]
    pub corrupt: PerWay<Probability>,
    /// How a corrupted copy is damaged: "all", or a comma-separated list of bit (one bit
    /// flipped), many-bits (2-16 bits), burst (2-64 bytes overwritten), truncate (cut short),
    /// forged (bytes changed and the CRC recomputed: only the file's BLAKE3 digest can tell a
    /// forged PART); each may carry a weight, as in bit=3,truncate=1.
    #[arg(long, value_name = "KINDS[/KINDS]", default_value = "all")]
    pub damage: PerWay<Damage>,
    /// Rate limit in bits per second, with an optional k, M or G suffix (10M is 10 Mbit/s); 0 is
    /// no limit. Datagrams wait in a drop-tail queue behind it (see --queue-bytes).
    #[arg(long, value_name = "BITS[/BITS]", default_value = "0")]
    pub rate: PerWay<Rate>,
    /// The rate limit's queue, bytes; a datagram that would overfill it is dropped. Default: 100 ms
    /// at the rate, at least 256 KiB.
    #[arg(long, value_name = "BYTES[/BYTES]")]
    pub queue_bytes: Option<PerWay<Bytes>>,
    /// An outage: everything entering from START to START+LENGTH seconds after the proxy starts
    /// is lost. Example: 10+5.
    #[arg(long, value_name = "START+LENGTH[/...]")]
    pub blackhole: Option<PerWay<Blackhole>>,
    /// Seed of every decision (which datagram is lost, damaged, how late...): the same seed and
    /// the same traffic give the same run. Default: from the clock, printed at start.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most client flows (a client address and a transfer port, each with an upstream socket) at
    /// once; the least recently active one makes room for a new one.
    #[arg(long, value_name = "N", default_value_t = FlowLimits::default().max_flows)]
    pub max_flows: usize,
    /// Seconds a flow without a datagram either way lives.
    #[arg(long, value_name = "SECONDS", default_value_t = FlowLimits::default().idle_timeout.into())]
    pub flow_idle: Seconds,
    /// Most chat connections relayed at once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds between counter reports; 0 prints them only when the proxy stops.
    #[arg(long, value_name = "SECONDS", default_value = "10")]
    pub report_every: SecondsOrZero,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<Seconds>,
}

impl ImpairArgs {
    /// The proxy's options, every decision drawn from `seed`.
    pub fn options(&self, seed: u64) -> ImpairOptions {
        let mut impair = ImpairConfig::new(self.link(0), self.link(1));
        // Room for every queue and then some: a rate-limited queue is bounded by itself.
        impair.max_held_bytes = natter_core::impair::DEFAULT_MAX_HELD_BYTES;
        ImpairOptions {
            listen: self.listen,
            server: self.server,
            ports: self.ports.0..=self.ports.1,
            upstream_ip: self.upstream_ip,
            impair,
            seed,
            flows: FlowLimits {
                max_flows: self.max_flows.max(1),
                idle_timeout: self.flow_idle.into(),
            },
            max_connections: self.max_connections,
        }
    }

    /// The conditions of way `i` (0: client to server, 1: server to client).
    fn link(&self, i: usize) -> LinkConfig {
        let rate = self.rate.get(i).0;
        let queue_bytes = match &self.queue_bytes {
            Some(q) => q.get(i).0,
            None => default_queue(rate),
        };
        let mut link = LinkConfig::clean(rate, self.delay_ms.get(i).duration(), queue_bytes);
        link.loss = self.loss.get(i).0;
        link.burst = self.burst.get(i).0;
        link.jitter = self.jitter_ms.get(i).duration();
        link.duplicate = self.duplicate.get(i).0;
        link.corrupt = self.corrupt.get(i).0;
        link.damage = self.damage.get(i).0;
        link.blackhole = self.blackhole.as_ref().map(|b| {
            let b = b.get(i);
            (b.start, b.start + b.length)
        });
        link
    }
}

/// 100 ms of the rate (a classic bandwidth-delay product for a long path), at least 256 KiB so
/// that a few of the largest parts (65 KB on loopback) fit at any rate.
fn default_queue(rate_bps: u64) -> u64 {
    (rate_bps / 8 / 10).max(256 << 10)
}

/// A value for each way: `A` for both, or `A/B` (client to server, server to client).
#[derive(Debug, Clone, PartialEq)]
pub struct PerWay<T>(pub T, pub T);

impl<T> PerWay<T> {
    fn get(&self, i: usize) -> &T {
        if i == 0 { &self.0 } else { &self.1 }
    }
}

impl<T: FromStr<Err = String> + Clone> FromStr for PerWay<T> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split('/').collect::<Vec<_>>()[..] {
            [both] => {
                let v: T = both.trim().parse()?;
                Ok(PerWay(v.clone(), v))
            }
            [up, down] => Ok(PerWay(up.trim().parse()?, down.trim().parse()?)),
            _ => Err(format!(
                "{s:?}: give one value for both ways, or two as CLIENT_TO_SERVER/SERVER_TO_CLIENT"
            )),
        }
    }
}

/// A chance from 0 to 1, written as a fraction (0.1) or a percentage (10%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probability(pub f64);

impl FromStr for Probability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (number, scale) = match s.strip_suffix('%') {
            Some(percent) => (percent, 100.0),
            None => (s, 1.0),
        };
        match number.trim().parse::<f64>() {
            Ok(v) if (0.0..=scale).contains(&v) => Ok(Probability(v / scale)),
            _ => Err(format!("{s:?} is not a chance between 0 and 1 (or 0% and 100%)")),
        }
    }
}

/// A Gilbert-Elliott burst-loss model, or none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst(pub Option<GilbertElliott>);

impl FromStr for Burst {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            return Ok(Burst(None));
        }
        let bad = || format!("{s:?} is not ENTER:LEAVE:LOSS (three chances, as 1%:30%:80%) or off");
        let parts: Vec<&str> = s.split(':').collect();
        let [enter, leave, loss] = parts[..] else { return Err(bad()) };
        let chance = |p: &str| p.parse::<Probability>().map(|p| p.0).map_err(|_| bad());
        Ok(Burst(Some(GilbertElliott {
            p_enter_bad: chance(enter)?,
            p_leave_bad: chance(leave)?,
            loss_bad: chance(loss)?,
        })))
    }
}

/// A number of milliseconds, 0 or more (fractions allowed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Millis(pub f64);

impl Millis {
    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0 / 1000.0)
    }
}

impl FromStr for Millis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..1e9).contains(&v) => Ok(Millis(v)),
            _ => Err(format!("{s:?} is not a number of milliseconds, 0 or more")),
        }
    }
}

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bytes(pub u64);

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Bytes).map_err(|_| format!("{s:?} is not a number of bytes"))
    }
}

/// A number of seconds, 0 or more (0 turns something off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondsOrZero(pub f64);

impl FromStr for SecondsOrZero {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..1e9).contains(&v) => Ok(SecondsOrZero(v)),
            _ => Err(format!("{s:?} is not a number of seconds, 0 or more")),
        }
    }
}

/// A rate in bits per second: 0, 500k, 10M, 1.5G.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, scale) = match s.char_indices().last() {
            Some((i, 'k' | 'K')) => (&s[..i], 1e3),
            Some((i, 'm' | 'M')) => (&s[..i], 1e6),
            Some((i, 'g' | 'G')) => (&s[..i], 1e9),
            _ => (s, 1.0),
        };
        match number.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e13 => {
                let bps = (v * scale).round() as u64;
                if bps == 0 && v > 0.0 {
                    return Err(format!("{s:?} rounds to 0 bits per second (0 means no limit)"));
                }
                Ok(Rate(bps))
            }
            _ => Err(format!("{s:?} is not a rate in bits per second, as 0, 500k, 10M or 1G")),
        }
    }
}

/// An outage: from `start` for `length`, counted from the proxy's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blackhole {
    pub start: Duration,
    pub length: Duration,
}

impl FromStr for Blackhole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not START+LENGTH in seconds, as 10+5");
        let (start, length) = s.split_once('+').ok_or_else(bad)?;
        let seconds = |v: &str| match v.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..1e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
            _ => Err(bad()),
        };
        Ok(Blackhole { start: seconds(start)?, length: seconds(length)? })
    }
}

/// The ways a corrupted copy may be damaged, with their weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Damage(pub DamageMix);

impl FromStr for Damage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "all" {
            return Ok(Damage(DamageMix::ALL));
        }
        let mut mix = DamageMix { bit_flip: 0, many_bits: 0, burst: 0, truncate: 0, forged: 0 };
        for entry in s.split(',') {
            let (name, weight) = match entry.split_once('=') {
                Some((name, weight)) => {
                    let weight = weight.trim().parse::<u32>().map_err(|_| {
                        format!("{entry:?}: a weight is a whole number, as burst=3")
                    })?;
                    (name.trim(), weight)
                }
                None => (entry.trim(), 1),
            };
            let slot = match name {
                "bit" => &mut mix.bit_flip,
                "many-bits" => &mut mix.many_bits,
                "burst" => &mut mix.burst,
                "truncate" => &mut mix.truncate,
                "forged" => &mut mix.forged,
                other => {
                    return Err(format!(
                        "{other:?} is not a kind of damage: all, or bit, many-bits, burst, \
                         truncate, forged"
                    ));
                }
            };
            *slot = weight;
        }
        if mix == (DamageMix { bit_flip: 0, many_bits: 0, burst: 0, truncate: 0, forged: 0 }) {
            return Err(format!("{s:?}: at least one kind of damage needs a weight above 0"));
        }
        Ok(Damage(mix))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ImpairArgs,
    }

    fn parse(extra: &[&str]) -> Result<ImpairArgs, clap::Error> {
        let mut argv = vec!["natter-impair", "--listen", "127.0.0.2:55000"];
        argv.extend_from_slice(extra);
        Wrapper::try_parse_from(argv).map(|w| w.args)
    }

    #[test]
    fn one_value_is_both_ways_two_are_up_and_down() {
        let args = parse(&["--loss", "10%", "--corrupt", "0/0.02", "--rate", "10M/1G"]).unwrap();
        let options = args.options(5);
        let (up, down) = (&options.impair.to_server, &options.impair.to_client);
        assert_eq!((up.loss, down.loss), (0.1, 0.1));
        assert_eq!((up.corrupt, down.corrupt), (0.0, 0.02));
        assert_eq!((up.rate_bps, down.rate_bps), (10_000_000, 1_000_000_000));
        assert_eq!(up.queue_bytes, 256 << 10);
        assert_eq!(down.queue_bytes, 12_500_000);
        assert_eq!(up.damage, DamageMix::ALL);
        assert_eq!(options.seed, 5);
        assert_eq!(options.ports, 55000..=55015);
    }

    #[test]
    fn every_knob_reaches_the_link() {
        let args = parse(&[
            "--burst",
            "off/1%:30%:80%",
            "--delay-ms",
            "2.5",
            "--jitter-ms",
            "0/4",
            "--duplicate",
            "5%",
            "--damage",
            "bit=3,truncate",
            "--queue-bytes",
            "1000/2000",
            "--blackhole",
            "10+5",
            "--ports",
            "40000-40003",
        ])
        .unwrap();
        let options = args.options(1);
        let (up, down) = (&options.impair.to_server, &options.impair.to_client);
        assert_eq!(up.burst, None);
        assert_eq!(
            down.burst,
            Some(GilbertElliott { p_enter_bad: 0.01, p_leave_bad: 0.3, loss_bad: 0.8 })
        );
        assert_eq!(up.delay, Duration::from_micros(2500));
        assert_eq!((up.jitter, down.jitter), (Duration::ZERO, Duration::from_millis(4)));
        assert_eq!(up.duplicate, 0.05);
        assert_eq!(
            up.damage,
            DamageMix { bit_flip: 3, many_bits: 0, burst: 0, truncate: 1, forged: 0 }
        );
        assert_eq!((up.queue_bytes, down.queue_bytes), (1000, 2000));
        let hole = Some((Duration::from_secs(10), Duration::from_secs(15)));
        assert_eq!((up.blackhole, down.blackhole), (hole, hole));
        assert_eq!(options.ports, 40000..=40003);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (flag, value, says) in [
            ("--loss", "110%", "between 0 and 1"),
            ("--loss", "1.5", "between 0 and 1"),
            ("--loss", "0.1/0.2/0.3", "two as"),
            ("--burst", "1%:2%", "ENTER:LEAVE:LOSS"),
            ("--damage", "bits", "not a kind of damage"),
            ("--damage", "bit=0", "at least one kind"),
            ("--rate", "fast", "bits per second"),
            ("--delay-ms=-1", "", "milliseconds"),
            ("--blackhole", "10", "START+LENGTH"),
        ] {
            let argv: Vec<&str> = [flag, value].into_iter().filter(|a| !a.is_empty()).collect();
            let err = parse(&argv).unwrap_err().to_string();
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
    }
}
