//! How a simulated link damages a datagram it corrupts: one bit, many bits, a burst of random
//! bytes, a truncation, or a change whose checksum was recomputed.
//!
//! One flipped bit is what CRC32C always catches. Many bits and long bursts are what it catches only
//! with probability 1 - 2^-32, and a "forged" change (bytes altered, checksum recomputed) is what it
//! cannot catch at all: an on-path attacker, or the rare error a CRC misses. Only the BLAKE3 digest
//! of the whole file stands between a forged part and a wrong file, so the simulator must produce
//! all of them to tell the truth about integrity.

use super::rng::SplitMix64;
use crate::wire::datagram;

/// Relative weights of the ways a corrupted datagram is damaged. A kind of weight 0 never happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamageMix {
    /// One random bit flipped.
    pub bit_flip: u32,
    /// 2 to 16 bits flipped at random positions.
    pub many_bits: u32,
    /// A run of 2 to 64 bytes overwritten with random bytes.
    pub burst: u32,
    /// The datagram cut short at a random length.
    pub truncate: u32,
    /// Random bytes changed and the datagram's checksum recomputed, so it passes the CRC check.
    pub forged: u32,
}

impl DamageMix {
    /// Only single bit flips: the classic model, and the default.
    pub const ONE_BIT: DamageMix =
        DamageMix { bit_flip: 1, many_bits: 0, burst: 0, truncate: 0, forged: 0 };
    /// Every kind, equally often.
    pub const ALL: DamageMix =
        DamageMix { bit_flip: 1, many_bits: 1, burst: 1, truncate: 1, forged: 1 };
    /// Every kind, but mostly forged (4 in 8): the mix that tests the BLAKE3 check hardest.
    pub const MOSTLY_FORGED: DamageMix =
        DamageMix { bit_flip: 1, many_bits: 1, burst: 1, truncate: 1, forged: 4 };

    /// Whether this mix ever recomputes a checksum, so a damaged datagram can pass the CRC check.
    pub fn forges(&self) -> bool {
        self.forged > 0
    }

    fn total(&self) -> u64 {
        [self.bit_flip, self.many_bits, self.burst, self.truncate, self.forged]
            .iter()
            .map(|&w| u64::from(w))
            .sum()
    }
}

impl Default for DamageMix {
    fn default() -> Self {
        DamageMix::ONE_BIT
    }
}

/// What [`damage`] did to a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// One bit flipped.
    BitFlip,
    /// Several bits flipped.
    ManyBits,
    /// A run of bytes overwritten.
    Burst,
    /// Cut short.
    Truncate,
    /// Changed, with its checksum recomputed so it still passes.
    Forged,
}

/// Damages `bytes` in one of the ways `mix` allows, drawn with `rng`, and says which.
///
/// With [`DamageMix::ONE_BIT`] it draws exactly what the old single-bit model drew, so seeds keep
/// their meaning.
pub fn damage(bytes: &mut Vec<u8>, mix: &DamageMix, rng: &mut SplitMix64) -> Damage {
    let kind = pick(mix, rng);
    if bytes.is_empty() {
        return kind;
    }
    match kind {
        Damage::BitFlip => flip_bit(bytes, rng),
        Damage::ManyBits => {
            for _ in 0..2 + rng.below(15) {
                flip_bit(bytes, rng);
            }
        }
        Damage::Burst => overwrite_run(bytes, rng),
        Damage::Truncate => bytes.truncate(rng.below(bytes.len() as u64) as usize),
        Damage::Forged => {
            overwrite_run(bytes, rng);
            datagram::reseal(bytes);
        }
    }
    kind
}

fn pick(mix: &DamageMix, rng: &mut SplitMix64) -> Damage {
    let total = mix.total();
    if total == u64::from(mix.bit_flip) {
        return Damage::BitFlip; // no draw: the single-bit model's sequence is unchanged
    }
    let mut roll = rng.below(total);
    for (weight, kind) in [
        (mix.bit_flip, Damage::BitFlip),
        (mix.many_bits, Damage::ManyBits),
        (mix.burst, Damage::Burst),
        (mix.truncate, Damage::Truncate),
        (mix.forged, Damage::Forged),
    ] {
        let weight = u64::from(weight);
        if roll < weight {
            return kind;
        }
        roll -= weight;
    }
    Damage::BitFlip
}

fn flip_bit(bytes: &mut [u8], rng: &mut SplitMix64) {
    let bit = rng.below(bytes.len() as u64 * 8);
    bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
}

fn overwrite_run(bytes: &mut [u8], rng: &mut SplitMix64) {
    let len = (2 + rng.below(63) as usize).min(bytes.len());
    let start = rng.below((bytes.len() - len + 1) as u64) as usize;
    rng.fill(&mut bytes[start..start + len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bit_changes_exactly_one_bit() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..100 {
            let mut bytes = vec![0u8; 40];
            assert_eq!(damage(&mut bytes, &DamageMix::ONE_BIT, &mut rng), Damage::BitFlip);
            assert_eq!(bytes.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        }
    }

    #[test]
    fn every_kind_of_the_mix_happens() {
        let mut rng = SplitMix64::new(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut bytes = datagram::encode_part(7, 1, 2, &[0xAB; 100]);
            seen.insert(format!("{:?}", damage(&mut bytes, &DamageMix::ALL, &mut rng)));
        }
        assert_eq!(seen.len(), 5, "{seen:?}");
    }

    #[test]
    fn a_forged_part_passes_the_crc_check_with_other_bytes() {
        let original = datagram::encode_part(7, 1, 2, &[0xAB; 100]);
        let mix = DamageMix { forged: 1, ..DamageMix { bit_flip: 0, ..DamageMix::ONE_BIT } };
        let mut rng = SplitMix64::new(9);
        let mut forged_and_parsed = 0;
        for _ in 0..50 {
            let mut bytes = original.clone();
            assert_eq!(damage(&mut bytes, &mix, &mut rng), Damage::Forged);
            assert_ne!(bytes, original);
            if datagram::parse(&bytes).is_ok() {
                forged_and_parsed += 1;
            }
        }
        // Runs that hit the header (magic, kind, size) still fail to parse; the rest get through.
        assert!(forged_and_parsed > 25, "{forged_and_parsed}");
    }

    #[test]
    fn truncation_shortens() {
        let mix = DamageMix { truncate: 1, bit_flip: 0, ..DamageMix::ONE_BIT };
        let mut rng = SplitMix64::new(11);
        let mut bytes = vec![1u8; 64];
        damage(&mut bytes, &mix, &mut rng);
        assert!(bytes.len() < 64);
    }
}
