//! Maps keyed by [`ConnId`], hashed cheaply.
//!
//! Every delivery looks its connection up a few times (the queue count, the outbox), so the hash
//! is on the hot path of fan-out: SipHash took a sixth of the server's CPU per delivery. SipHash
//! is there to stop an attacker who chooses keys from forcing collisions; connection ids are
//! numbered by the runtime, never chosen by a peer, so a multiply is enough.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::ConnId;

/// A map from connection to `V`.
pub type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnHasher>>;

/// A set of connections.
pub type ConnSet = HashSet<ConnId, BuildHasherDefault<ConnHasher>>;

/// Fibonacci hashing of a `u64` key: one multiply by 2^64 / φ. Consecutive ids land in
/// consecutive buckets (the low bits follow the id) and the top bits, which the table uses to
/// tell keys in a group apart, are well mixed.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnHasher(u64);

impl Hasher for ConnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    /// Only `u64` keys are expected; anything else still hashes correctly, byte by byte.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_and_every_id_is_found() {
        let mut map = ConnMap::default();
        for id in 0..10_000u64 {
            map.insert(id * 3, id);
        }
        assert!((0..10_000u64).all(|id| map.get(&(id * 3)) == Some(&id)));
        assert_eq!(map.get(&1), None);
        let top_bits: std::collections::HashSet<u64> = (0..128u64)
            .map(|id| {
                let mut h = ConnHasher::default();
                h.write_u64(id);
                h.finish() >> 57
            })
            .collect();
        assert!(top_bits.len() > 64, "top 7 bits barely vary: {}", top_bits.len());
    }
}
