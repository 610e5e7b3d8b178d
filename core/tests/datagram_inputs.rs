//! The datagram parser against structured hostile datagrams (`hostile::datagram`): a real header
//! most of the time, then a well-formed body or one broken in a chosen way. P1, U1 / PROTOCOL 2.2.
//!
//! Random bytes stop at the magic; these reach every check behind the header, and each gets the
//! verdict it was built for.

mod hostile;

use std::collections::BTreeMap;

use hostile::{Intent, Offer};
use natter_core::fuzzing;
use natter_core::sim::rng::SplitMix64;
use natter_core::wire::datagram::{self, Datagram};

/// The kind number of a parsed datagram (PROTOCOL 2.2).
fn kind(d: &Datagram<'_>) -> u8 {
    match d {
        Datagram::Request(_) => 1,
        Datagram::Part(_) => 2,
        Datagram::Finished { .. } => 3,
        Datagram::Abort(_) => 4,
    }
}

/// The variant's name of an error, without its fields.
fn variant(e: &datagram::DatagramError) -> String {
    let text = format!("{e:?}");
    text.split(['(', ' ', '{']).next().unwrap_or_default().to_owned()
}

#[test]
fn structured_hostile_datagrams_get_the_verdict_they_were_built_for() {
    let offer = Offer { token: 0x5c1e_0f3a_9b2d_4e71, content: vec![0x3c; 5000], part_size: 512 };
    let mut rng = SplitMix64::new(0x5eed);
    let mut parsed: BTreeMap<u8, u64> = BTreeMap::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..20_000 {
        let (bytes, intent) = hostile::datagram(&mut rng, &offer);
        let verdict = datagram::parse(&bytes);
        match (&intent, &verdict) {
            (Intent::WellFormed(k), Ok(d)) => assert_eq!(kind(d), *k, "#{i}: {bytes:02x?}"),
            (Intent::WellFormed(_), Err(e)) => {
                panic!("#{i}: well-formed, refused ({e}): {bytes:02x?}")
            }
            (Intent::Malformed(what), Ok(d)) => panic!("#{i}: {what}, accepted as {d:?}"),
            _ => {}
        }
        match &verdict {
            Ok(d) => *parsed.entry(kind(d)).or_default() += 1,
            Err(e) => *refused.entry(variant(e)).or_default() += 1,
        }
        // Whatever parses encodes back to the same datagram (the fuzz target's invariant).
        fuzzing::datagram_round_trip(&bytes);
    }
    eprintln!("parsed by kind {parsed:?}, refused {refused:?}");
    // The inputs got past the header: every kind parsed many times...
    for k in 1..=4 {
        assert!(parsed.get(&k).copied().unwrap_or(0) >= 1000, "kind {k}: {parsed:?}");
    }
    // ...and the parser refused them for every reason it has.
    for reason in [
        "Truncated",
        "BadMagic",
        "BadVersion",
        "UnknownKind",
        "SizeMismatch",
        "BadCrc",
        "TooManyRanges",
        "RangeCountMismatch",
        "InvertedRange",
        "TrailingBytes",
        "InvalidReason",
    ] {
        assert!(refused.get(reason).copied().unwrap_or(0) >= 20, "{reason}: {refused:?}");
    }
}
