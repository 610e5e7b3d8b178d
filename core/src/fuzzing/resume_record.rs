//! Resume records from a damaged or hostile disk (U6, P1; PROTOCOL 2.4).

use std::time::Instant;

use crate::transfer::parts::{Layout, PartMap};
use crate::transfer::receiver::{Receiver, ReceiverConfig};
use crate::wire::datagram::{self, Datagram, MAX_REQUEST_LEN};

use super::input::Choices;

/// Where a record's fields are (see `crate::transfer::parts`): magic, version, digest, size,
/// part size, then the bitmap and a CRC32C of everything before it.
const DIGEST_AT: usize = 5;
const SIZE_AT: usize = 37;
const PART_SIZE_AT: usize = 45;
const HEADER: usize = 47;
/// Layouts whose bitmap is larger than this are skipped: no record in a fuzzer's input can fill
/// one, and building the map would only slow the search (`extreme_offer` covers big offers).
const MAX_BITMAP: u64 = 1 << 16;

/// The first byte says how to treat the rest, which is a record: bit 0 mends its CRC (so the
/// fields behind it are reached), bit 1 its magic and version, bit 2 loads it for a layout that
/// differs from the one it names, bit 3 for another digest. Invariants: no panic; a record that
/// loads describes a consistent map (count, prefix, bytes within the file), saves back to the
/// same bytes but for the unused bits of its last bitmap byte, and loads again to the same map;
/// a receiver resumed from it never asks for a part the record says is on disk.
pub fn resume_record_round_trip(data: &[u8], start: Instant) {
    let mut c = Choices::new(data);
    let flags = c.byte();
    let mut record = c.take(usize::MAX).to_vec();
    if flags & 2 != 0 && record.len() >= 5 {
        record[..5].copy_from_slice(b"NTRS\x01");
    }
    if flags & 1 != 0 && record.len() >= 4 {
        let body = record.len() - 4;
        let crc = crc32c::crc32c(&record[..body]);
        record[body..].copy_from_slice(&crc.to_be_bytes());
    }
    let field = |at: usize, n: usize| record.get(at..at + n).unwrap_or(&[]);
    let mut size = [0u8; 8];
    size[..field(SIZE_AT, 8).len()].copy_from_slice(field(SIZE_AT, 8));
    let mut part_size = [0u8; 2];
    part_size[..field(PART_SIZE_AT, 2).len()].copy_from_slice(field(PART_SIZE_AT, 2));
    let mut digest = [0u8; 32];
    digest[..field(DIGEST_AT, 32).len()].copy_from_slice(field(DIGEST_AT, 32));
    let mut layout = Layout::new(u64::from_be_bytes(size), u16::from_be_bytes(part_size));
    if flags & 4 != 0 {
        layout = Layout::new(layout.size ^ u64::from(flags >> 4), layout.part_size);
    }
    if flags & 8 != 0 {
        digest[0] ^= 1;
    }
    if u64::from(layout.n_parts()).div_ceil(8) > MAX_BITMAP {
        return;
    }
    let Ok(map) = PartMap::load(layout, &digest, &record) else {
        return;
    };
    check_map(&map);
    let saved = map.save(&digest);
    assert_eq!(saved.len(), record.len(), "a record loaded from bytes of another length");
    // The last bitmap byte's bits past the last part mean nothing; everything else must match.
    let last_bits = HEADER + (map.n_parts() as usize).div_ceil(8);
    let unused = (8 - map.n_parts() % 8) % 8;
    assert_eq!(saved[..last_bits - 1], record[..last_bits - 1], "fields changed by a round trip");
    if last_bits > HEADER {
        let keep = 0xffu8 >> unused;
        assert_eq!(saved[last_bits - 1], record[last_bits - 1] & keep, "bitmap changed");
    }
    assert_eq!(PartMap::load(layout, &digest, &saved), Ok(map.clone()), "no round trip");

    // A receiver resumed from the record asks only for what is missing.
    let config = ReceiverConfig::new(0x5c1e_0f3a_9b2d_4e71, layout.size, layout.part_size, digest);
    let Ok(mut receiver) = Receiver::resume(config, start, &record) else {
        panic!("the receiver refused a record that the map loads");
    };
    assert_eq!(receiver.progress().parts_received, map.count());
    let mut buf = [0u8; MAX_REQUEST_LEN];
    for _ in 0..4 {
        let Some(n) = receiver.poll_transmit(start, &mut buf) else {
            break;
        };
        if let Ok(Datagram::Request(request)) = datagram::parse(&buf[..n]) {
            for (first, last) in request.ranges {
                assert!(last < map.n_parts(), "asked for part {last} past the end");
                for part in first..=last {
                    assert!(!map.has(part), "asked for part {part}, which the record holds");
                }
            }
        }
    }
}

/// The counters of a map agree with its bits.
fn check_map(map: &PartMap) {
    let n = map.n_parts();
    let layout = map.layout();
    assert!(map.count() <= n);
    assert_eq!((0..n).filter(|&p| map.has(p)).count() as u32, map.count(), "count is wrong");
    let prefix = map.prefix_parts();
    assert!((0..prefix).all(|p| map.has(p)), "a hole inside the prefix");
    assert!(prefix == n || !map.has(prefix), "the prefix stops early");
    assert!(map.bytes() <= layout.size && map.prefix_bytes() <= map.bytes());
    assert_eq!(map.is_complete(), map.next_missing(0).is_none());
}
