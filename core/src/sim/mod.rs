//! A seeded, deterministic network simulator in simulated time.
//!
//! It runs real [`Receiver`]s against real [`Sender`]s over a simulated path ([`link::Link`] each
//! way) with an event queue keyed by simulated time. Nothing here reads a clock: all instants are
//! `base + offset`, where `base` is an `Instant` the caller passes in (tests and examples read the
//! clock once for it). The same seed gives the same run, bit for bit, so a failing seed is a
//! reproducible bug.
//!
//! Several transfers can share the path (and so its bottleneck queue), which is how fairness and
//! queue growth are measured.

pub mod cluster;
pub mod damage;
pub mod link;
pub mod rng;
pub mod system;

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::transfer::congestion::ControllerKind;
use crate::transfer::receiver::{
    DEFAULT_GIVE_UP_AFTER, Progress, Receiver, ReceiverConfig, ReceiverState, TransferError,
};
use crate::transfer::sender::{
    DEFAULT_IDLE_TIMEOUT, Sender, SenderConfig, SenderEnd, SenderInput, SenderOutput,
};
use crate::wire::datagram::{self, PART_HEADER_LEN};
use crate::wire::sealed::{self, SEALED_HEADER_LEN, SealKey};
pub use link::{GilbertElliott, LinkConfig, LinkStats};
use rng::SplitMix64;

/// The two directions of the path.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Server to client (the PARTs).
    pub down: LinkConfig,
    /// Client to server (the REQUESTs).
    pub up: LinkConfig,
}

impl Path {
    /// A symmetric path: `rate_bps` each way, round trip `rtt`, random loss `loss` each way, and a
    /// bottleneck queue of one bandwidth-delay product (at least 64 KiB), the classic buffer sizing.
    pub fn symmetric(rate_bps: u64, rtt: Duration, loss: f64) -> Self {
        let bdp = (rate_bps as f64 / 8.0 * rtt.as_secs_f64()) as u64;
        let mut link = LinkConfig::clean(rate_bps, rtt / 2, bdp.max(64 << 10));
        link.loss = loss;
        Path { down: link.clone(), up: link }
    }

    /// Applies the same impairment to both directions.
    pub fn with(mut self, f: impl Fn(&mut LinkConfig)) -> Self {
        f(&mut self.down);
        f(&mut self.up);
        self
    }
}

/// One transfer to simulate.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// The file's size, bytes.
    pub size: u64,
    /// The part size the sender uses.
    pub part_size: u16,
    /// The sender's congestion controller.
    pub controller: ControllerKind,
    /// When the client starts, after the simulation's start.
    pub start: Duration,
    /// Seed of the file's content.
    pub content_seed: u64,
    /// The receiver fails when no new part arrived for this long.
    pub give_up_after: Duration,
    /// See [`ReceiverConfig::request_copies`].
    pub request_copies: u8,
    /// When the client's event loop does not run (see [`Stalls`]); `None`: it always runs.
    pub client_stalls: Option<Stalls>,
    /// The offer's key, as an offer made over TLS carries one: then every datagram of the flow
    /// is sealed (PROTOCOL 2.7). `None`: plain datagrams.
    pub key: Option<[u8; 32]>,
}

/// A client that does not get the CPU all the time: for `length` out of every `every` its event
/// loop does not run. Datagrams that arrive meanwhile wait in its socket buffer and its timers
/// fire late, at the end of the stall.
///
/// Why model it: on a real 2-core machine shared with the server, the delay lines and other
/// work, the client loop often wakes milliseconds late, and mio rounds poll timeouts up to whole
/// milliseconds. The plain simulator, whose endpoints act at the exact instant, claimed 89% of a
/// 1 Gbit/s 20 ms 5% loss path while the real one got 20-50%; with stalls the simulator shows
/// the same collapse when the pacer forgives too little lateness (see `CATCH_UP` in
/// [`crate::transfer::pacing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalls {
    /// A stall starts this often (0: never).
    pub every: Duration,
    /// Each stall lasts this long.
    pub length: Duration,
}

impl Stalls {
    /// When the stall that covers `t_ns` ends, if one does.
    fn end_of(&self, t_ns: u64) -> Option<u64> {
        let every = self.every.as_nanos() as u64;
        let length = self.length.as_nanos() as u64;
        if every == 0 {
            return None;
        }
        let phase = t_ns % every;
        (phase < length).then(|| t_ns - phase + length)
    }
}

impl FlowSpec {
    /// When the client may act again if `t_ns` falls in one of its stalls.
    fn stalled_until(&self, t_ns: u64) -> Option<u64> {
        self.client_stalls.and_then(|s| s.end_of(t_ns))
    }

    /// A flow of a `size`-byte file in parts of `part_size`, starting at once, with the default
    /// controller, give-up time and request copies, and a client that always runs.
    pub fn new(size: u64, part_size: u16) -> Self {
        FlowSpec {
            size,
            part_size,
            controller: ControllerKind::default(),
            start: Duration::ZERO,
            content_seed: size ^ 0x5eed,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            request_copies: crate::transfer::receiver::DEFAULT_REQUEST_COPIES,
            client_stalls: None,
            key: None,
        }
    }
}

/// How a simulated transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver completed: every part arrived and the digest matched.
    Complete,
    /// The receiver failed with a clear error.
    Failed(TransferError),
    /// The simulation's time limit passed first.
    TimeLimit,
}

/// What happened to one transfer.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// How the receiver ended.
    pub outcome: Outcome,
    /// Payload bytes the receiver accepted that differ from the file. 0 unless the down link
    /// forges parts ([`damage::DamageMix::forged`]): a forged part passes the CRC check by
    /// construction, and only the file's BLAKE3 digest can then refuse the download.
    pub wrong_bytes_accepted: u64,
    /// The bytes written equal the file (checked independently of the receiver's digest). A flow
    /// that reports [`Outcome::Complete`] without this is the one failure that must never happen.
    pub bytes_exact: bool,
    /// From the flow's start to completion (or to the end of the simulation).
    pub elapsed: Duration,
    /// File bits per second over `elapsed` (0 unless complete).
    pub goodput_bps: f64,
    /// The receiver's progress at the end.
    pub progress: Progress,
    /// How the sender ended, if it did.
    pub sender_end: Option<SenderEnd>,
}

/// What happened in one simulation.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Every flow, in the order given.
    pub flows: Vec<FlowReport>,
    /// The server-to-client direction's statistics.
    pub down: LinkStats,
    /// The client-to-server direction's statistics.
    pub up: LinkStats,
    /// Simulated time when the run ended.
    pub end: Duration,
}

/// The simulation's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The path every flow shares.
    pub path: Path,
    /// Every random draw of the run comes from this.
    pub seed: u64,
    /// Give up simulating after this much simulated time.
    pub time_limit: Duration,
}

struct Flow {
    spec: FlowSpec,
    content: Vec<u8>,
    written: Vec<u8>,
    receiver: Option<Receiver>,
    sender: Sender,
    client: SocketAddr,
    wrong: u64,
    done_at: Option<u64>,
    sender_end: Option<SenderEnd>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at_ns: u64,
    seq: u64,
    flow: usize,
    to_sender: bool,
    bytes: Vec<u8>,
}

/// Runs the flows over the path until all are over or the time limit passes.
pub fn run(base: Instant, config: &SimConfig, specs: &[FlowSpec]) -> SimReport {
    let mut rng = SplitMix64::new(config.seed);
    let mut down = link::Link::new(config.path.down.clone());
    let mut up = link::Link::new(config.path.up.clone());
    let mut flows: Vec<Flow> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut content = vec![0; spec.size as usize];
            SplitMix64::new(spec.content_seed).fill(&mut content);
            let client_ip = IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8));
            let sender = Sender::new(
                SenderConfig {
                    token: 0x1000 + i as u64,
                    seal: spec.key.as_ref().map(SealKey::new),
                    peer_ip: client_ip,
                    size: spec.size,
                    part_size: spec.part_size,
                    idle_timeout: DEFAULT_IDLE_TIMEOUT,
                    early: None,
                },
                base + spec.start,
            );
            Flow {
                written: vec![0; content.len()],
                content,
                receiver: None,
                sender,
                client: SocketAddr::new(client_ip, 40_000),
                spec: spec.clone(),
                wrong: 0,
                done_at: None,
                sender_end: None,
            }
        })
        .collect();
    let mut queue: BinaryHeap<Reverse<Event>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut copies = Vec::new();
    let mut buf = vec![0u8; sealed::part_len(usize::from(u16::MAX))];
    let limit_ns = config.time_limit.as_nanos() as u64;
    let to_ns = |t: Instant| t.saturating_duration_since(base).as_nanos() as u64;
    let mut now_ns = 0u64;
    let mut stuck = 0u32;
    loop {
        let now = base + Duration::from_nanos(now_ns);
        // Let every endpoint act at `now`.
        for (i, flow) in flows.iter_mut().enumerate() {
            if flow.receiver.is_none() && now_ns >= flow.spec.start.as_nanos() as u64 {
                let digest = *blake3::hash(&flow.content).as_bytes();
                let mut cfg = ReceiverConfig::new(
                    0x1000 + i as u64,
                    flow.spec.size,
                    flow.spec.part_size,
                    digest,
                );
                cfg.controller = flow.spec.controller;
                cfg.give_up_after = flow.spec.give_up_after;
                cfg.request_copies = flow.spec.request_copies;
                cfg.seal = flow.spec.key.as_ref().map(SealKey::new);
                flow.receiver = Some(Receiver::new(cfg, now));
            }
            let stalled = flow.spec.stalled_until(now_ns).is_some();
            if let Some(rx) = flow.receiver.as_mut().filter(|_| !stalled) {
                while let Some((offset, len)) = rx.next_to_hash() {
                    let at = offset as usize;
                    rx.hash(offset, &flow.written[at..at + len]);
                }
                if flow.done_at.is_none() && rx.state() != ReceiverState::Running {
                    flow.done_at = Some(now_ns);
                }
                while let Some(n) = rx.poll_transmit(now, &mut buf) {
                    up.transmit(now_ns, n, &mut rng, &mut copies);
                    for &(at_ns, corrupt) in &copies {
                        let mut bytes = buf[..n].to_vec();
                        if corrupt {
                            damage::damage(&mut bytes, &up.config.damage, &mut rng);
                        }
                        seq += 1;
                        queue.push(Reverse(Event { at_ns, seq, flow: i, to_sender: true, bytes }));
                    }
                }
            }
            while let Some(out) = flow.sender.poll_output() {
                let bytes_len = match out {
                    SenderOutput::SendPart { version, req_seq, part, offset, len, .. } => {
                        let at = offset as usize;
                        if let Some(key) = flow.spec.key.as_ref().map(SealKey::new) {
                            buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + len]
                                .copy_from_slice(&flow.content[at..at + len]);
                            sealed::seal_part(&key, &mut buf, req_seq, part, len)
                        } else {
                            buf[PART_HEADER_LEN..PART_HEADER_LEN + len]
                                .copy_from_slice(&flow.content[at..at + len]);
                            datagram::seal_part_in(
                                version,
                                &mut buf,
                                0x1000 + i as u64,
                                req_seq,
                                part,
                                len,
                            )
                        }
                    }
                    SenderOutput::SendDatagram { bytes, .. } => {
                        buf[..bytes.len()].copy_from_slice(&bytes);
                        bytes.len()
                    }
                    SenderOutput::Done(end) => {
                        flow.sender_end = Some(end);
                        continue;
                    }
                };
                down.transmit(now_ns, bytes_len, &mut rng, &mut copies);
                for &(at_ns, corrupt) in &copies {
                    let mut bytes = buf[..bytes_len].to_vec();
                    if corrupt {
                        damage::damage(&mut bytes, &down.config.damage, &mut rng);
                    }
                    seq += 1;
                    queue.push(Reverse(Event { at_ns, seq, flow: i, to_sender: false, bytes }));
                }
            }
        }
        let all_over = flows.iter().all(|f| f.done_at.is_some() && f.sender.is_done());
        if all_over {
            break;
        }
        // The next moment anything happens.
        let mut next = queue.peek().map(|Reverse(e)| e.at_ns);
        for flow in &flows {
            let start = flow.spec.start.as_nanos() as u64;
            let timers = match flow.receiver.as_ref() {
                None => Some(start),
                Some(rx) => rx.poll_timeout().map(to_ns).map(|t| {
                    let t = t.max(now_ns);
                    flow.spec.stalled_until(t).unwrap_or(t)
                }),
            };
            // A client that skipped its turn in a stall acts when the stall ends.
            let resume = flow.spec.stalled_until(now_ns);
            for t in [timers, resume, flow.sender.poll_timeout().map(to_ns)].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        let Some(next) = next else { break };
        let next = next.max(now_ns);
        if next > limit_ns {
            now_ns = limit_ns;
            break;
        }
        if next == now_ns {
            stuck += 1;
            assert!(stuck < 100_000, "simulation stuck at {now_ns} ns");
        } else {
            stuck = 0;
        }
        now_ns = next;
        let now = base + Duration::from_nanos(now_ns);
        while queue.peek().is_some_and(|Reverse(e)| e.at_ns <= now_ns) {
            let Some(Reverse(mut ev)) = queue.pop() else {
                break;
            };
            let flow = &mut flows[ev.flow];
            if !ev.to_sender
                && let Some(until) = flow.spec.stalled_until(now_ns)
            {
                // The client is not running: the datagram waits in its socket buffer.
                seq += 1;
                queue.push(Reverse(Event { at_ns: until, seq, ..ev }));
                continue;
            }
            if ev.to_sender {
                flow.sender.handle_input(
                    now,
                    SenderInput::Datagram { from: flow.client, bytes: &ev.bytes },
                );
            } else if let Some(rx) = flow.receiver.as_mut()
                && let Some(acc) = rx.handle_datagram(now, &mut ev.bytes)
            {
                let at = acc.offset as usize;
                let payload = &ev.bytes[acc.payload];
                flow.written[at..at + payload.len()].copy_from_slice(payload);
                let truth = &flow.content[at..at + payload.len()];
                flow.wrong += payload.iter().zip(truth).filter(|(a, b)| a != b).count() as u64;
            }
        }
        for flow in &mut flows {
            let stalled = flow.spec.stalled_until(now_ns).is_some();
            if let Some(rx) = flow.receiver.as_mut().filter(|_| !stalled)
                && rx.poll_timeout().is_some_and(|t| to_ns(t) <= now_ns)
            {
                rx.handle_timeout(now);
            }
            if flow.sender.poll_timeout().is_some_and(|t| to_ns(t) <= now_ns) {
                flow.sender.handle_timeout(now);
            }
        }
    }
    let flows = flows
        .into_iter()
        .map(|f| {
            let start = f.spec.start.as_nanos() as u64;
            let end = f.done_at.unwrap_or(now_ns);
            let elapsed = Duration::from_nanos(end.saturating_sub(start));
            let (outcome, progress) = match f.receiver.as_ref() {
                None => (Outcome::TimeLimit, Progress::default()),
                Some(rx) => (
                    match rx.state() {
                        ReceiverState::Complete => Outcome::Complete,
                        ReceiverState::Failed(e) => Outcome::Failed(e),
                        ReceiverState::Running => Outcome::TimeLimit,
                    },
                    rx.progress(),
                ),
            };
            let goodput_bps = if outcome == Outcome::Complete && !elapsed.is_zero() {
                f.spec.size as f64 * 8.0 / elapsed.as_secs_f64()
            } else {
                0.0
            };
            FlowReport {
                bytes_exact: f.written == f.content,
                wrong_bytes_accepted: f.wrong,
                outcome,
                elapsed,
                goodput_bps,
                progress,
                sender_end: f.sender_end,
            }
        })
        .collect();
    SimReport { flows, down: down.stats, up: up.stats, end: Duration::from_nanos(now_ns) }
}
