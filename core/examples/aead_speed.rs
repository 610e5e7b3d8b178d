//! How fast each AEAD that ring offers seals and opens datagrams on one core: the measurement
//! behind the choice of AES-256-GCM for sealed datagrams (PROTOCOL 2.7, issue 14).
//!
//! Run: `cargo run --release -p natter-core --example aead_speed` (one thread, so one core).
//! Prints MB/s of payload for the two datagram sizes natter uses most: 1444-byte parts (an
//! Ethernet path) and 64998-byte parts (loopback). Wall-clock figures: for the report, never
//! asserted in a test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// Seals (or opens) `len`-byte payloads in place for about `budget`; returns MB/s.
fn rate(algorithm: &'static Algorithm, len: usize, open: bool, budget: Duration) -> f64 {
    let key = match UnboundKey::new(algorithm, &[7u8; 32]) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => return 0.0,
    };
    let mut buf = vec![0x5au8; len + 16];
    let aad = [1u8; 12];
    // A sealed datagram to open, made once.
    let mut sealed = buf.clone();
    let nonce = |i: u64| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&i.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let Ok(tag) = key.seal_in_place_separate_tag(nonce(0), Aad::from(aad), &mut sealed[..len])
    else {
        return 0.0;
    };
    sealed[len..].copy_from_slice(tag.as_ref());
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut i = 1u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            if open {
                buf.copy_from_slice(&sealed);
                let ok = key.open_in_place(nonce(0), Aad::from(aad), &mut buf).is_ok();
                black_box(ok);
            } else {
                let tag = key.seal_in_place_separate_tag(nonce(i), Aad::from(aad), &mut buf[..len]);
                black_box(tag.is_ok());
            }
            i += 1;
            bytes += len as u64;
        }
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let budget = Duration::from_millis(700);
    println!("{:<20} {:>8} {:>12} {:>12}", "aead", "payload", "seal MB/s", "open MB/s");
    for (name, algorithm) in
        [("AES-256-GCM", &AES_256_GCM), ("ChaCha20-Poly1305", &CHACHA20_POLY1305)]
    {
        for len in [1444usize, 64_998] {
            let seal = rate(algorithm, len, false, budget);
            let open = rate(algorithm, len, true, budget);
            println!("{name:<20} {len:>8} {seal:>12.0} {open:>12.0}");
        }
    }
    println!("(open includes copying the sealed datagram back into the buffer each time)");
}
