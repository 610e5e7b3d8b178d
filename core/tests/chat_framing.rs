//! C3, C4, PROTOCOL 1 conventions: the framer gives the same result however the bytes are split.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use natter_core::wire::line::{Framed, LineFramer, MAX_LINE};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn frame(chunks: impl IntoIterator<Item = Vec<u8>>) -> Vec<Framed> {
    let mut framer = LineFramer::new();
    let mut out = Vec::new();
    for chunk in chunks {
        framer.feed(&chunk, |f| out.push(f));
        assert!(framer.buffered_partial() <= MAX_LINE + 1, "memory bound");
    }
    out
}

/// A stream mixing everything the framer must survive.
fn nasty_stream() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice("alice\r\nhé 日本 🎉\n\n".as_bytes());
    s.extend_from_slice(&vec![b'a'; MAX_LINE]);
    s.extend_from_slice(b"\r\n");
    s.extend_from_slice(&vec![b'b'; MAX_LINE + 1]);
    s.extend_from_slice(b"\n\xff\xc3\n");
    s.extend_from_slice(&vec![0xe6; 10_000]);
    s.extend_from_slice("\nend\r\r\n".as_bytes());
    s.extend_from_slice(b"unterminated tail");
    s
}

#[test]
fn whole_bytewise_and_random_splits_agree() {
    // C3: whole, one byte at a time, and 500 seeded random splittings.
    let stream = nasty_stream();
    let whole = frame([stream.clone()]);
    assert_eq!(
        whole,
        vec![
            Framed::Line("alice".into()),
            Framed::Line("hé 日本 🎉".into()),
            Framed::Line(String::new()),
            Framed::Line("a".repeat(MAX_LINE)),
            Framed::TooLong,
            Framed::InvalidUtf8,
            Framed::TooLong,
            Framed::Line("end\r".into()),
        ]
    );
    assert_eq!(frame(stream.iter().map(|&b| vec![b])), whole);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for round in 0..500 {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let max = if round % 2 == 0 { 8 } else { 6000 };
            let n = rng.random_range(1..=max).min(stream.len() - at);
            chunks.push(stream[at..at + n].to_vec());
            at += n;
        }
        assert_eq!(frame(chunks), whole, "seed 0x5eed round {round}");
    }
}
