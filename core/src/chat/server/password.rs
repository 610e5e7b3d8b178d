//! The room password at the door: a server with a password admits a connection only after a
//! right `PASS` line, only over TLS, and slows down an address that keeps guessing.
//!
//! Implements `docs/PROTOCOL.md` section 1.6 "TLS, pinning and the room password".

use core::net::IpAddr;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{ChatServer, ConnId, DisconnectReason, LogEvent};

/// Wrong passwords an address may send before it has to wait between tries.
pub const FREE_TRIES: u32 = 3;
/// The wait after the first try past [`FREE_TRIES`]; it doubles with every further wrong one.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between tries.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Addresses remembered at once; past it, the ones whose wait is over are forgotten first.
const MAX_ADDRESSES: usize = 4096;

/// How an address has been guessing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Failures {
    count: u32,
    not_before: Option<Instant>,
}

/// Wrong passwords by address.
#[derive(Debug, Default)]
pub(super) struct Guesses(HashMap<IpAddr, Failures>);

impl Guesses {
    /// When `ip` may try again, if it must wait.
    fn wait_until(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        self.0.get(&ip).and_then(|f| f.not_before).filter(|&at| at > now)
    }

    fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.0.len() >= MAX_ADDRESSES && !self.0.contains_key(&ip) {
            self.0.retain(|_, f| f.not_before.is_some_and(|at| at > now));
        }
        let f = self.0.entry(ip).or_insert(Failures { count: 0, not_before: None });
        f.count = f.count.saturating_add(1);
        if f.count > FREE_TRIES {
            let doublings = (f.count - FREE_TRIES - 1).min(16);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
            f.not_before = Some(now + wait);
        }
    }

    fn passed(&mut self, ip: IpAddr) {
        self.0.remove(&ip);
    }
}

/// What the door decided about a line from a connection not yet admitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Door {
    /// No password, or already admitted: the line is a name.
    Open,
    /// The line was the door's (a `PASS`, or a refusal sent): nothing more to do with it.
    Handled,
}

impl ChatServer {
    /// Whether `conn` came in over TLS.
    pub fn is_secure(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.secure)
    }

    /// A line before the name: with a room password it must be `PASS <password>`, over TLS.
    pub(super) fn door(&mut self, now: Instant, conn: ConnId, line: &str) -> Door {
        let Some(password) = self.config.password.clone() else {
            return Door::Open;
        };
        let Some(c) = self.conns.get(&conn) else {
            return Door::Handled;
        };
        if c.admitted {
            return Door::Open;
        }
        let (secure, ip, peer) = (c.secure, c.peer.ip(), c.peer);
        if !secure {
            self.send_error(
                conn,
                "this room needs a password, accepted only over TLS: connect to the TLS port",
            );
            self.leave(conn, DisconnectReason::WrongPassword, true);
            return Door::Handled;
        }
        let Some(given) = line.strip_prefix("PASS ") else {
            self.send_error(conn, "this room needs a password: send PASS <password> first");
            return Door::Handled;
        };
        if let Some(at) = self.guesses.wait_until(ip, now) {
            let secs = at.saturating_duration_since(now).as_secs_f64().ceil();
            self.send_error(
                conn,
                &format!("too many wrong passwords from your address: try again in {secs} s"),
            );
            self.leave(conn, DisconnectReason::WrongPassword, true);
            return Door::Handled;
        }
        if password.matches(given) {
            self.guesses.passed(ip);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.admitted = true;
            }
        } else {
            self.guesses.failed(ip, now);
            self.push(super::ServerOutput::Log(LogEvent::WrongPassword { conn, peer }));
            self.send_error(conn, "wrong password");
            self.leave(conn, DisconnectReason::WrongPassword, true);
        }
        Door::Handled
    }
}

#[cfg(test)]
#[path = "../../../tests/unit/server_password.rs"]
mod tests;
