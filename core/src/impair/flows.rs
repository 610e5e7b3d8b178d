//! Which upstream socket carries which client: the flow table of `natter impair`.
//!
//! A natter server locks a transfer to the first address that sent a valid REQUEST for it (and
//! accepts only the IP of the chat connection), so the proxy must speak for each client from an
//! address of its own: one upstream socket per (client address, transfer port), a *flow*. Replies
//! that come back on a flow's socket go to that client. Flows nobody used for a while expire, and
//! their number is capped (the least recently active flow makes room for a new one), so the
//! proxy's sockets and memory stay bounded whatever the clients do.

use core::net::SocketAddr;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Names a flow; never reused within one [`Flows`].
pub type FlowId = u64;

/// What identifies a flow: the client's address and the transfer port it sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Where the client's datagrams come from (and its replies go to).
    pub client: SocketAddr,
    /// The transfer port they were sent to (the same number on the proxy and on the server).
    pub port: u16,
}

/// How many flows may exist and how long an unused one lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// The most flows at once (at least 1).
    pub max_flows: usize,
    /// A flow without a datagram either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for FlowLimits {
    /// 1,024 flows, one minute: well past a natter server's own 30 s transfer idle timeout, so a
    /// flow outlives the transfer it carries.
    fn default() -> Self {
        FlowLimits { max_flows: 1024, idle_timeout: Duration::from_secs(60) }
    }
}

/// What a client's datagram maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A flow that exists: send through its socket.
    Known(FlowId),
    /// A new flow: open its socket first. If the table was full, `evicted` was closed to make
    /// room (close its socket too).
    New {
        /// The new flow.
        id: FlowId,
        /// The flow closed to make room, if one was.
        evicted: Option<FlowId>,
    },
}

/// What the flow table did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows open now.
    pub open: usize,
    /// Flows ever opened.
    pub opened: u64,
    /// Flows closed for being idle.
    pub expired: u64,
    /// Flows closed to make room for a new one.
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FlowKey,
    last_active: Instant,
}

/// The flows, by key and by id.
#[derive(Debug)]
pub struct Flows {
    limits: FlowLimits,
    by_key: HashMap<FlowKey, FlowId>,
    entries: HashMap<FlowId, Entry>,
    next_id: FlowId,
    counters: FlowCounters,
}

impl Flows {
    /// An empty table with these limits (a `max_flows` of 0 is taken as 1).
    pub fn new(limits: FlowLimits) -> Self {
        let limits = FlowLimits { max_flows: limits.max_flows.max(1), ..limits };
        Flows {
            limits,
            by_key: HashMap::new(),
            entries: HashMap::new(),
            next_id: 0,
            counters: FlowCounters::default(),
        }
    }

    /// A datagram from `key.client` arrived on port `key.port` at `now`.
    pub fn from_client(&mut self, now: Instant, key: FlowKey) -> Lookup {
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.last_active = now;
            }
            return Lookup::Known(id);
        }
        let evicted = (self.entries.len() >= self.limits.max_flows)
            .then(|| self.least_recently_active())
            .flatten();
        if let Some(old) = evicted {
            self.remove(old);
            self.counters.evicted += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(key, id);
        self.entries.insert(id, Entry { key, last_active: now });
        self.counters.opened += 1;
        Lookup::New { id, evicted }
    }

    /// A datagram came back from the server on flow `id` at `now`: where it goes, if the flow
    /// still exists.
    pub fn from_server(&mut self, now: Instant, id: FlowId) -> Option<FlowKey> {
        let entry = self.entries.get_mut(&id)?;
        entry.last_active = now;
        Some(entry.key)
    }

    /// The client and port of flow `id`, if it exists.
    pub fn key(&self, id: FlowId) -> Option<FlowKey> {
        self.entries.get(&id).map(|e| e.key)
    }

    /// Closes flow `id` (its socket could not be opened, or is closed).
    pub fn remove(&mut self, id: FlowId) {
        if let Some(entry) = self.entries.remove(&id) {
            self.by_key.remove(&entry.key);
        }
    }

    fn least_recently_active(&self) -> Option<FlowId> {
        self.entries.iter().min_by_key(|(id, e)| (e.last_active, **id)).map(|(id, _)| *id)
    }

    /// When the next flow expires, if any is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // An idle timeout too long to add to an instant never ends.
        self.entries
            .values()
            .filter_map(|e| e.last_active.checked_add(self.limits.idle_timeout))
            .min()
    }

    /// A flow idle for the whole timeout at `now`, removed from the table (close its socket); call
    /// until `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<FlowId> {
        let idle = self.limits.idle_timeout;
        let (&id, _) = self
            .entries
            .iter()
            .find(|(_, e)| e.last_active.checked_add(idle).is_some_and(|end| end <= now))?;
        self.remove(id);
        self.counters.expired += 1;
        Some(id)
    }

    /// What the table did so far.
    pub fn counters(&self) -> FlowCounters {
        FlowCounters { open: self.entries.len(), ..self.counters }
    }
}

#[cfg(test)]
#[path = "../../tests/unit/impair_flows.rs"]
mod tests;
