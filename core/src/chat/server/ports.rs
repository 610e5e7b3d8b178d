//! The UDP ports offers may use: which are held and by whom, which the runtime cannot bind, and
//! the choice of the first free one.
//!
//! Implements the `port` field of `docs/PROTOCOL.md` section 2.1 "The offer": the first free port
//! of the configured range; a port that cannot be bound is never offered.

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use super::ConnId;

/// The configured port range, the ports in use and the ones the runtime could not bind.
#[derive(Debug)]
pub(super) struct PortPool {
    /// The ports offers may use ([`super::ServerConfig::udp_ports`]).
    range: RangeInclusive<u16>,
    /// Ports in use and the connection whose offer holds each.
    in_use: BTreeMap<u16, (ConnId, IpAddr)>,
    /// Ports of the range the runtime could not bind; skipped when choosing.
    unavailable: BTreeSet<u16>,
}

impl PortPool {
    /// A pool over `range` with every port free.
    pub(super) fn new(range: RangeInclusive<u16>) -> Self {
        Self { range, in_use: BTreeMap::new(), unavailable: BTreeSet::new() }
    }

    /// The lowest port of the range that is neither in use nor unavailable.
    pub(super) fn first_free(&self) -> Option<u16> {
        self.range.clone().find(|p| !self.in_use.contains_key(p) && !self.unavailable.contains(p))
    }

    /// Marks `port` as held by an offer made to `conn`.
    pub(super) fn take(&mut self, port: u16, conn: ConnId, ip: IpAddr) {
        self.in_use.insert(port, (conn, ip));
    }

    /// Frees `port`; the connection that held it, if it was in use.
    pub(super) fn release(&mut self, port: u16) -> Option<ConnId> {
        self.in_use.remove(&port).map(|(conn, _)| conn)
    }

    /// The runtime cannot bind `port`: it is never chosen again.
    pub(super) fn mark_unavailable(&mut self, port: u16) {
        self.unavailable.insert(port);
    }

    /// The ports held by offers made to `conn`.
    pub(super) fn held_by(&self, conn: ConnId) -> Vec<u16> {
        self.in_use.iter().filter(|&(_, &(c, _))| c == conn).map(|(&port, _)| port).collect()
    }

    /// How many ports are held for transfers offered to connections from `ip`, whichever
    /// connection asked (the per-address cap, U9).
    pub(super) fn held_from(&self, ip: IpAddr) -> usize {
        self.in_use.values().filter(|&&(_, from)| from == ip).count()
    }

    /// How many ports are held by offers.
    pub(super) fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr};

    use super::PortPool;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn the_first_free_port_is_chosen() {
        let mut pool = PortPool::new(55000..=55002);
        assert_eq!(pool.first_free(), Some(55000));
        pool.take(55000, 1, IP);
        assert_eq!(pool.first_free(), Some(55001));
        pool.take(55001, 1, IP);
        pool.take(55002, 2, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(pool.first_free(), None);
        assert_eq!(pool.in_use(), 3);
        assert_eq!(pool.held_from(IP), 2);
    }

    #[test]
    fn a_released_port_is_free_again_and_names_its_holder() {
        let mut pool = PortPool::new(55000..=55002);
        pool.take(55000, 7, IP);
        pool.take(55001, 8, IP);
        assert_eq!(pool.release(55000), Some(7));
        assert_eq!(pool.first_free(), Some(55000));
        assert_eq!(pool.release(55000), None, "already free");
        assert_eq!(pool.release(40000), None, "outside the range");
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn unavailable_ports_are_skipped_for_good() {
        let mut pool = PortPool::new(55000..=55002);
        pool.mark_unavailable(55000);
        pool.mark_unavailable(55002);
        assert_eq!(pool.first_free(), Some(55001));
        pool.take(55001, 1, IP);
        assert_eq!(pool.first_free(), None);
        pool.release(55001);
        assert_eq!(pool.first_free(), Some(55001));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn an_empty_range_has_no_free_port() {
        #[allow(clippy::reversed_empty_ranges)]
        let pool = PortPool::new(55001..=55000);
        assert_eq!(pool.first_free(), None);
    }
}
