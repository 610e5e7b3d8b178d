//! The simulated UDP paths: every datagram crosses its client's [`Link`] (loss, delay, rate,
//! jitter, duplication, corruption), and a path may drop datagrams larger than it carries (U5).
//!
//! [`Link`]: crate::sim::link::Link

use core::net::{IpAddr, SocketAddr};

use super::{Ev, World};
use crate::sim::damage::damage;

/// Marks the id of an early-flight socket ([`early_socket_id`]): download sockets count up from
/// 1 and never reach it.
const EARLY_SOCKET: u64 = 1 << 32;

/// The UDP address of a client's socket `id`: for a download's socket, port 40,000 + id; for the
/// early-flight socket of a chat connection, that connection's own address.
pub(super) fn udp_addr(ip: IpAddr, id: u64) -> SocketAddr {
    if id & EARLY_SOCKET != 0 {
        SocketAddr::new(ip, conn_port(id & !EARLY_SOCKET))
    } else {
        SocketAddr::new(ip, 40_000u16.wrapping_add(id as u16))
    }
}

/// The client's port of chat connection `conn`.
pub(super) fn conn_port(conn: u64) -> u16 {
    50_000u16.wrapping_add(conn as u16)
}

/// The id of the early-flight socket bound on chat connection `conn`'s address.
pub(super) fn early_socket_id(conn: u64) -> u64 {
    EARLY_SOCKET | conn
}

impl World {
    /// Sends `bytes` from the server's transfer port `from_port` to `to`.
    pub(super) fn send_down(&mut self, from_port: u16, to: SocketAddr, bytes: &[u8]) {
        if let Some(capture) = &mut self.capture {
            capture.push(bytes.to_vec());
        }
        let Some(&(client, id)) = self.routes.get(&to) else {
            return;
        };
        let c = &mut self.clients[client];
        if c.max_datagram.is_some_and(|max| bytes.len() > max) {
            c.report.dropped_too_large += 1;
            return;
        }
        let mut copies = Vec::new();
        c.down.transmit(self.now_ns, bytes.len(), &mut self.rng, &mut copies);
        let mix = c.down.config.damage;
        for (at_ns, corrupt) in copies {
            let mut bytes = bytes.to_vec();
            if corrupt {
                damage(&mut bytes, &mix, &mut self.rng);
            }
            self.schedule_at(at_ns, Ev::DatagramToClient { client, id, from_port, bytes });
        }
    }

    pub(super) fn send_up(&mut self, client: usize, id: u64, bytes: &[u8]) {
        if let Some(capture) = &mut self.capture {
            capture.push(bytes.to_vec());
        }
        let c = &mut self.clients[client];
        let Some(&port) = c.downloads.get(&id) else {
            return;
        };
        if c.max_datagram.is_some_and(|max| bytes.len() > max) {
            c.report.dropped_too_large += 1;
            return;
        }
        let from = udp_addr(c.ip, id);
        let mut copies = Vec::new();
        c.up.transmit(self.now_ns, bytes.len(), &mut self.rng, &mut copies);
        let mix = c.up.config.damage;
        for (at_ns, corrupt) in copies {
            let mut bytes = bytes.to_vec();
            if corrupt {
                damage(&mut bytes, &mix, &mut self.rng);
            }
            self.schedule_at(at_ns, Ev::DatagramToServer { port, from, bytes });
        }
    }
}
