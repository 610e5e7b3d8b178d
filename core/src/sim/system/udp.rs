//! The simulated UDP paths: every datagram crosses its client's [`Link`] (loss, delay, rate,
//! jitter, duplication, corruption), and a path may drop datagrams larger than it carries (U5).
//!
//! [`Link`]: crate::sim::link::Link

use core::net::{IpAddr, SocketAddr};

use super::{Ev, World};
use crate::sim::damage::damage;

/// The UDP port of a client's socket for download `id`.
pub(super) fn udp_addr(ip: IpAddr, id: u64) -> SocketAddr {
    SocketAddr::new(ip, 40_000u16.wrapping_add(id as u16))
}

impl World {
    pub(super) fn send_down(&mut self, to: SocketAddr, bytes: &[u8]) {
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
            self.schedule_at(at_ns, Ev::DatagramToClient { client, id, bytes });
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
