//! The decisions of `natter impair`, a UDP proxy that puts a bad network between a natter client and
//! server: which datagram is lost, duplicated or damaged, and when each copy is delivered.
//!
//! Each direction is one simulated [`Link`] (random and Gilbert-Elliott burst loss, a rate-limited
//! drop-tail queue, delay, jitter that reorders, duplication, corruption), the same model the
//! simulator uses, driven here in real time instead of simulated time; a corrupted copy is damaged
//! with [`damage`] (one bit, many bits, a burst of bytes, a truncation, or a forgery whose CRC was
//! recomputed). The two directions draw from two generators derived from one seed, so the fate of
//! the n-th datagram one way depends only on the seed and that way's traffic, never on how the two
//! ways interleave.
//!
//! Sans-IO like the rest of the core: a runtime feeds each datagram it reads with
//! [`Impairer::handle_datagram`], sleeps until [`Impairer::poll_timeout`], and sends what
//! [`Impairer::poll_transmit`] gives. Which upstream socket carries which client is the job of
//! [`flows::Flows`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use natter_core::impair::{ImpairConfig, Impairer, Way};
//! use natter_core::sim::LinkConfig;
//!
//! # fn demo(start: Instant) {
//! // `start` is the runtime's clock, read by the runtime, never by the core.
//! let mut to_client = LinkConfig::clean(0, Duration::from_millis(5), 0);
//! to_client.duplicate = 1.0;
//! let config = ImpairConfig::new(LinkConfig::clean(0, Duration::ZERO, 0), to_client);
//! let mut impairer = Impairer::new(config, 7, start);
//! impairer.handle_datagram(start, Way::ToClient, 1, b"hello");
//! // Nothing is due before the 5 ms delay has passed...
//! assert!(impairer.poll_transmit(start).is_none());
//! let due = impairer.poll_timeout().unwrap();
//! assert!(due >= start + Duration::from_millis(5));
//! // ...then both copies come out, for flow 1.
//! let later = start + Duration::from_millis(10);
//! let first = impairer.poll_transmit(later).unwrap();
//! let second = impairer.poll_transmit(later).unwrap();
//! assert_eq!((first.flow, &first.bytes[..]), (1, &b"hello"[..]));
//! assert_eq!(second.bytes, b"hello");
//! assert!(impairer.poll_transmit(later).is_none());
//! # }
//! ```

pub mod flows;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::sim::damage::{Damage, damage};
use crate::sim::link::{Link, LinkConfig};
use crate::sim::rng::SplitMix64;

pub use flows::FlowId;

/// The most bytes held for later delivery, both ways together, unless configured: 64 MiB is a
/// second of 500 Mbit/s, far more than any delay or queue asked of a test needs, and it bounds
/// the memory a flood can take when no rate limit (and so no queue bound) is set.
pub const DEFAULT_MAX_HELD_BYTES: usize = 64 << 20;

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// From the client to the server: REQUESTs and FINISHED.
    ToServer,
    /// From the server to the client: PARTs and ABORTs.
    ToClient,
}

impl Way {
    /// Both ways, client to server first.
    pub const BOTH: [Way; 2] = [Way::ToServer, Way::ToClient];

    fn index(self) -> usize {
        match self {
            Way::ToServer => 0,
            Way::ToClient => 1,
        }
    }
}

impl fmt::Display for Way {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Way::ToServer => "client->server",
            Way::ToClient => "server->client",
        })
    }
}

/// What happens to datagrams each way.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairConfig {
    /// Client to server.
    pub to_server: LinkConfig,
    /// Server to client.
    pub to_client: LinkConfig,
    /// Copies waiting for their delivery time may hold at most this many bytes; a copy that would
    /// pass it is dropped (counted as `overflow`).
    pub max_held_bytes: usize,
}

impl ImpairConfig {
    /// These conditions each way, and the default bound on held bytes.
    pub fn new(to_server: LinkConfig, to_client: LinkConfig) -> Self {
        ImpairConfig { to_server, to_client, max_held_bytes: DEFAULT_MAX_HELD_BYTES }
    }

    /// The conditions of one way.
    pub fn way(&self, way: Way) -> &LinkConfig {
        match way {
            Way::ToServer => &self.to_server,
            Way::ToClient => &self.to_client,
        }
    }
}

/// How many delivered copies were damaged, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DamageCounts {
    /// One bit flipped.
    pub bit_flip: u64,
    /// Several bits flipped.
    pub many_bits: u64,
    /// A run of bytes overwritten.
    pub burst: u64,
    /// Cut short.
    pub truncate: u64,
    /// Changed with the checksum recomputed.
    pub forged: u64,
}

impl DamageCounts {
    fn count(&mut self, kind: Damage) {
        let counter = match kind {
            Damage::BitFlip => &mut self.bit_flip,
            Damage::ManyBits => &mut self.many_bits,
            Damage::Burst => &mut self.burst,
            Damage::Truncate => &mut self.truncate,
            Damage::Forged => &mut self.forged,
        };
        *counter += 1;
    }

    /// Every damaged copy.
    pub fn total(&self) -> u64 {
        self.bit_flip + self.many_bits + self.burst + self.truncate + self.forged
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &DamageCounts) {
        self.bit_flip += other.bit_flip;
        self.many_bits += other.many_bits;
        self.burst += other.burst;
        self.truncate += other.truncate;
        self.forged += other.forged;
    }
}

/// What one way did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WayCounters {
    /// Datagrams that came in.
    pub received: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Copies handed out for sending (duplicates count twice, damaged ones too).
    pub delivered: u64,
    /// Their bytes (after damage).
    pub delivered_bytes: u64,
    /// Datagrams lost at random, in a burst or in a blackhole.
    pub lost: u64,
    /// Datagrams dropped because the rate limiter's queue was full.
    pub queue_drops: u64,
    /// Copies dropped because too many bytes were already held for later.
    pub overflow_drops: u64,
    /// Copies dropped because their flow ended before they were due.
    pub orphaned: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Copies damaged, by kind.
    pub damaged: DamageCounts,
}

impl WayCounters {
    /// Adds `other`'s counts to these (for totals over many runs).
    pub fn add(&mut self, other: &WayCounters) {
        self.received += other.received;
        self.received_bytes += other.received_bytes;
        self.delivered += other.delivered;
        self.delivered_bytes += other.delivered_bytes;
        self.lost += other.lost;
        self.queue_drops += other.queue_drops;
        self.overflow_drops += other.overflow_drops;
        self.orphaned += other.orphaned;
        self.duplicated += other.duplicated;
        self.damaged.add(&other.damaged);
    }
}

impl fmt::Display for WayCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.damaged;
        write!(
            f,
            "{} in, {} out; lost {}, queue-dropped {}, overflow {}, orphaned {}, duplicated {}, \
             damaged {} (bit {}, many-bits {}, burst {}, truncate {}, forged {})",
            self.received,
            self.delivered,
            self.lost,
            self.queue_drops,
            self.overflow_drops,
            self.orphaned,
            self.duplicated,
            d.total(),
            d.bit_flip,
            d.many_bits,
            d.burst,
            d.truncate,
            d.forged
        )
    }
}

/// A copy to send now: `bytes` go `way` for `flow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Which way it goes.
    pub way: Way,
    /// The flow it belongs to, as given to [`Impairer::handle_datagram`].
    pub flow: FlowId,
    /// The bytes to send (damaged, if the link damaged this copy).
    pub bytes: Vec<u8>,
}

/// A copy waiting for its delivery time.
#[derive(Debug)]
struct Held {
    due_ns: u64,
    /// Arrival order: copies due at the same nanosecond leave in the order they came.
    seq: u64,
    delivery: Delivery,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ns, self.seq) == (other.due_ns, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due_ns, self.seq).cmp(&(other.due_ns, other.seq))
    }
}

/// One way's link, its own random draws and its counters.
#[derive(Debug)]
struct WayState {
    link: Link,
    rng: SplitMix64,
    counters: WayCounters,
}

/// The impairment of both ways: datagrams in, delayed, duplicated, damaged copies out (or none).
#[derive(Debug)]
pub struct Impairer {
    /// Instants are kept as nanoseconds since this one, as [`Link`] counts them.
    base: Instant,
    ways: [WayState; 2],
    held: BinaryHeap<Reverse<Held>>,
    held_bytes: usize,
    max_held_bytes: usize,
    next_seq: u64,
    arrivals: Vec<(u64, bool)>,
}

impl Impairer {
    /// Impairs with `config`, every draw following from `seed`; `now` is time zero (a blackhole's
    /// `from..until` counts from it).
    pub fn new(config: ImpairConfig, seed: u64, now: Instant) -> Self {
        // Two independent streams from one seed: SplitMix64 outputs are well mixed, so two of them
        // seed two generators whose sequences do not overlap in any practical run.
        let mut seeder = SplitMix64::new(seed);
        let mut way = |link: LinkConfig| WayState {
            link: Link::new(link),
            rng: SplitMix64::new(seeder.next_u64()),
            counters: WayCounters::default(),
        };
        let ways = [way(config.to_server), way(config.to_client)];
        Impairer {
            base: now,
            ways,
            held: BinaryHeap::new(),
            held_bytes: 0,
            max_held_bytes: config.max_held_bytes,
            next_seq: 0,
            arrivals: Vec::new(),
        }
    }

    fn nanos_since_base(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A datagram of `flow` arrived `way` at `now`: decides its fate and holds its copies (if any)
    /// until they are due.
    pub fn handle_datagram(&mut self, now: Instant, way: Way, flow: FlowId, bytes: &[u8]) {
        let now_ns = self.nanos_since_base(now);
        let state = &mut self.ways[way.index()];
        state.counters.received += 1;
        state.counters.received_bytes += bytes.len() as u64;
        let before = state.link.stats;
        state.link.transmit(now_ns, bytes.len(), &mut state.rng, &mut self.arrivals);
        let after = state.link.stats;
        state.counters.lost += after.lost - before.lost;
        state.counters.queue_drops += after.queue_drops - before.queue_drops;
        state.counters.duplicated += after.duplicated - before.duplicated;
        for &(due_ns, corrupt) in &self.arrivals {
            let mut copy = bytes.to_vec();
            if corrupt {
                let kind = damage(&mut copy, &state.link.config.damage, &mut state.rng);
                state.counters.damaged.count(kind);
            }
            if self.held_bytes + copy.len() > self.max_held_bytes {
                state.counters.overflow_drops += 1;
                continue;
            }
            self.held_bytes += copy.len();
            let seq = self.next_seq;
            self.next_seq += 1;
            let delivery = Delivery { way, flow, bytes: copy };
            self.held.push(Reverse(Held { due_ns, seq, delivery }));
        }
    }

    /// When the next copy is due; `None` when nothing is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| self.base + Duration::from_nanos(h.due_ns))
    }

    /// The next copy due at or before `now`, earliest first; call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Delivery> {
        let now_ns = self.nanos_since_base(now);
        if self.held.peek().is_none_or(|Reverse(h)| h.due_ns > now_ns) {
            return None;
        }
        let Reverse(held) = self.held.pop()?;
        self.held_bytes -= held.delivery.bytes.len();
        let counters = &mut self.ways[held.delivery.way.index()].counters;
        counters.delivered += 1;
        counters.delivered_bytes += held.delivery.bytes.len() as u64;
        Some(held.delivery)
    }

    /// `flow` is gone (its socket closed): its held copies are dropped, as they could not be sent.
    pub fn forget_flow(&mut self, flow: FlowId) {
        let before = std::mem::take(&mut self.held).into_vec();
        for Reverse(held) in before {
            if held.delivery.flow == flow {
                self.held_bytes -= held.delivery.bytes.len();
                self.ways[held.delivery.way.index()].counters.orphaned += 1;
            } else {
                self.held.push(Reverse(held));
            }
        }
    }

    /// What `way` did so far.
    pub fn counters(&self, way: Way) -> WayCounters {
        self.ways[way.index()].counters
    }

    /// Bytes held for later delivery now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
#[path = "../../tests/unit/impair.rs"]
mod tests;
