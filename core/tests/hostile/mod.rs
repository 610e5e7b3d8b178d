//! Hostile datagrams that get past the header. U1, P1 / PROTOCOL 2.2.
//!
//! Random bytes almost never start with `NT`, the version and a known kind, so a test fed with
//! them exercises the first three checks of the parser and nothing behind them. These are built
//! the other way round: a real header most of the time (magic, version, a valid kind, the
//! transfer's real token most of the time), then a body that is well-formed or broken in one
//! chosen way (a count over the limit or that disagrees with the length, backwards or
//! past-the-end ranges, a part of the wrong size or index, a bad or a recomputed checksum, a
//! truncation, trailing bytes, a reason that is not UTF-8), so they reach the parsers and the
//! state machines behind them. Each comes with what it was built to be, for the tests to check the
//! parser's verdict against.
//!
//! Bodies are encoded with the codec's own encoders and then altered; any checksum is recomputed
//! with `datagram::reseal` unless breaking it is the point, so the generator keeps working when a
//! datagram kind gains a checksum (protocol version 2 adds one to REQUEST).

#![allow(dead_code)] // each test binary uses a part of it

use natter_core::sim::rng::SplitMix64;
use natter_core::wire::datagram::{self, AbortCode, MAX_PARTS_PER_REQUEST};

/// The offer the datagrams are aimed at.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The transfer's token.
    pub token: u64,
    /// The file.
    pub content: Vec<u8>,
    /// Its part size.
    pub part_size: u16,
}

impl Offer {
    /// How many parts the file has.
    pub fn n_parts(&self) -> u32 {
        self.content.len().div_ceil(usize::from(self.part_size)) as u32
    }

    /// The exact payload of part `i` (empty past the end).
    pub fn part(&self, i: u32) -> &[u8] {
        let start = (i as usize * usize::from(self.part_size)).min(self.content.len());
        let end = (start + usize::from(self.part_size)).min(self.content.len());
        &self.content[start..end]
    }
}

/// What a datagram was built to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Well-formed, of this kind (1 REQUEST, 2 PART, 3 FINISHED, 4 ABORT): the parser must
    /// accept it, whatever its token.
    WellFormed(u8),
    /// Broken in the named way: the parser must refuse it.
    Malformed(&'static str),
    /// Random bytes: anything goes, but no panic.
    Random,
}

/// A token: the offer's most of the time, one bit off or random otherwise.
fn token(rng: &mut SplitMix64, offer: &Offer) -> u64 {
    match rng.below(10) {
        0 => offer.token ^ (1 << rng.below(64)),
        1 => rng.next_u64(),
        _ => offer.token,
    }
}

/// A small number most of the time (part indices, req_seqs), sometimes any u32.
fn index(rng: &mut SplitMix64, around: u32) -> u32 {
    match rng.below(20) {
        0 => u32::MAX - rng.below(2) as u32,
        1 => rng.next_u64() as u32,
        _ => rng.below(u64::from(around) + 3) as u32,
    }
}

/// How often each kind of datagram is built (relative weights).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Plain random bytes.
    pub random: u64,
    /// REQUESTs.
    pub request: u64,
    /// PARTs.
    pub part: u64,
    /// ABORTs.
    pub abort: u64,
    /// FINISHEDs.
    pub finished: u64,
}

impl Mix {
    /// Every kind about as often as any other.
    pub const EVEN: Mix = Mix { random: 1, request: 8, part: 7, abort: 2, finished: 2 };
    /// For a server: mostly REQUESTs, and a FINISHED (which ends the transfer) rarely.
    pub const AT_SERVER: Mix = Mix { random: 4, request: 60, part: 20, abort: 15, finished: 1 };
    /// For a client: mostly PARTs, and an ABORT (which ends the download) rarely.
    pub const AT_CLIENT: Mix = Mix { random: 4, request: 15, part: 70, abort: 1, finished: 10 };
}

/// One hostile datagram of the [`Mix::EVEN`] mix and what it was built to be.
pub fn datagram(rng: &mut SplitMix64, offer: &Offer) -> (Vec<u8>, Intent) {
    datagram_of(rng, offer, Mix::EVEN)
}

/// One hostile datagram of `mix` and what it was built to be.
pub fn datagram_of(rng: &mut SplitMix64, offer: &Offer, mix: Mix) -> (Vec<u8>, Intent) {
    let mut roll = rng.below(mix.random + mix.request + mix.part + mix.abort + mix.finished);
    let mut pick = |weight: u64| {
        let hit = roll < weight;
        roll = roll.saturating_sub(weight);
        hit
    };
    let (mut bytes, mut intent) = if pick(mix.random) {
        let mut bytes = vec![0; rng.below(80) as usize];
        rng.fill(&mut bytes);
        return (bytes, Intent::Random);
    } else if pick(mix.request) {
        request(rng, offer)
    } else if pick(mix.part) {
        part(rng, offer)
    } else if pick(mix.abort) {
        abort(rng, offer)
    } else {
        finished(rng, offer)
    };
    // Break the header now and then: it must be refused before anything else is looked at.
    match rng.below(40) {
        0 => {
            bytes[rng.below(2) as usize] ^= 1 << rng.below(8);
            intent = Intent::Malformed("bad magic");
        }
        1 => {
            // Versions no natter ever spoke (a later version may accept 1 and 2).
            bytes[2] = [0, 0x7f, 0xfe, 0xff][rng.below(4) as usize];
            intent = Intent::Malformed("bad version");
        }
        2 => {
            bytes[3] = [0, 5, 6, 0x80, 0xff][rng.below(5) as usize];
            intent = Intent::Malformed("unknown kind");
        }
        3 => {
            bytes.truncate(rng.below(datagram::HEADER_LEN as u64) as usize);
            intent = Intent::Malformed("shorter than the header");
        }
        _ => {}
    }
    (bytes, intent)
}

fn request(rng: &mut SplitMix64, offer: &Offer) -> (Vec<u8>, Intent) {
    let n = offer.n_parts();
    // An honest request: every range inside the file, sometimes many (past the per-request
    // bounds). Otherwise any ranges: past the end, to u32::MAX, 256 of them.
    let honest = n > 0 && rng.below(3) == 0;
    let count = match rng.below(10) {
        _ if honest => 1 + rng.below(60),
        0 => MAX_PARTS_PER_REQUEST as u64 - rng.below(3),
        1 => 0,
        _ => 1 + rng.below(6),
    };
    let ranges: Vec<(u32, u32)> = (0..count)
        .map(|_| {
            let first = match rng.below(40) {
                _ if honest => rng.below(u64::from(n)) as u32,
                0 => u32::MAX - rng.below(2) as u32,
                1 => rng.next_u64() as u32,
                2 => n + rng.below(3) as u32,
                _ => rng.below(u64::from(n.max(1))) as u32,
            };
            let last = match rng.below(20) {
                _ if honest => first + rng.below(u64::from(n - first)) as u32,
                0 => u32::MAX,
                1 => first.saturating_add(rng.below(u64::from(n) + 1) as u32),
                // Inside the file when `first` is (no overflow: `first + x < n`).
                _ => first + rng.below(u64::from(n.saturating_sub(first)).max(1)) as u32,
            };
            (first, last)
        })
        .collect();
    let req_seq = index(rng, 20);
    let mut bytes = vec![0; datagram::request_len(ranges.len())];
    let token = token(rng, offer);
    let len = datagram::encode_request(token, req_seq, &ranges, &mut bytes);
    bytes.truncate(len);
    let intent = match rng.below(12) {
        0 if !ranges.is_empty() => {
            // A range backwards (the encoder writes what it is given).
            let mut ranges = ranges.clone();
            let k = rng.below(ranges.len() as u64) as usize;
            ranges[k] = (ranges[k].0.max(1), ranges[k].0.max(1) - 1);
            let len = datagram::encode_request(token, req_seq, &ranges, &mut bytes);
            bytes.truncate(len);
            Intent::Malformed("a backwards range")
        }
        1 => {
            // A count over the limit (the length follows it or not).
            let count = (MAX_PARTS_PER_REQUEST + 1) as u16 + rng.below(1000) as u16;
            let at = count_at();
            bytes[at..at + 2].copy_from_slice(&count.to_be_bytes());
            Intent::Malformed("count over 256")
        }
        2 => {
            bytes.truncate(bytes.len() - 1 - rng.below(7.min(bytes.len() as u64 - 13)) as usize);
            Intent::Malformed("truncated REQUEST")
        }
        3 => {
            bytes.extend(std::iter::repeat_n(0, 1 + rng.below(7) as usize));
            Intent::Malformed("REQUEST longer than its count")
        }
        _ => Intent::WellFormed(bytes[3]),
    };
    datagram::reseal(&mut bytes);
    (bytes, intent)
}

/// Where a REQUEST's `count` field is (offset 16 in protocol version 1), found in an encoded
/// REQUEST rather than assumed, so that a version that adds a field keeps this generator right.
fn count_at() -> usize {
    const COUNT: usize = 0xAB;
    let mut buf = vec![0; datagram::request_len(COUNT)];
    datagram::encode_request(0, 0, &[(0, 0); COUNT], &mut buf);
    (0..datagram::request_len(0) - 1)
        .find(|&i| buf[i..i + 2] == [0, COUNT as u8])
        .unwrap_or_else(|| panic!("no count field in {:02x?}", &buf[..datagram::request_len(0)]))
}

fn part(rng: &mut SplitMix64, offer: &Offer) -> (Vec<u8>, Intent) {
    let n = offer.n_parts();
    let i = index(rng, n);
    let mut payload = offer.part(i).to_vec();
    match rng.below(8) {
        // A length the offer does not allow for this index (still a well-formed datagram).
        0 => payload.resize(rng.below(u64::from(offer.part_size) + 3) as usize, 0xA5),
        // Forged: other bytes under a valid checksum. Only the file's digest can tell.
        1 if !payload.is_empty() => {
            let at = rng.below(payload.len() as u64) as usize;
            payload[at] ^= 1 + rng.below(255) as u8;
        }
        _ => {}
    }
    let mut bytes = datagram::encode_part(token(rng, offer), index(rng, 20), i, &payload);
    let intent = match rng.below(10) {
        0 => {
            // A bit flipped after sealing: the CRC must catch it.
            let bit = rng.below(bytes.len() as u64 * 8);
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            // A flip in the header may make it any kind of malformed; the CRC catches the rest.
            Intent::Malformed("damaged PART")
        }
        1 => {
            // The size field disagrees with the payload, checksum recomputed.
            let size = u16::from_be_bytes([bytes[20], bytes[21]]).wrapping_add(1);
            bytes[20..22].copy_from_slice(&size.to_be_bytes());
            datagram::reseal(&mut bytes);
            Intent::Malformed("size field disagrees")
        }
        2 => {
            bytes.truncate(datagram::HEADER_LEN + rng.below(14) as usize);
            Intent::Malformed("truncated PART header")
        }
        _ => Intent::WellFormed(bytes[3]),
    };
    (bytes, intent)
}

fn finished(rng: &mut SplitMix64, offer: &Offer) -> (Vec<u8>, Intent) {
    let mut bytes = vec![0; datagram::FINISHED_LEN];
    let len = datagram::encode_finished(token(rng, offer), &mut bytes);
    bytes.truncate(len);
    if rng.below(5) == 0 {
        bytes.extend(std::iter::repeat_n(0, 1 + rng.below(3) as usize));
        datagram::reseal(&mut bytes);
        return (bytes, Intent::Malformed("FINISHED with trailing bytes"));
    }
    let kind = bytes[3];
    (bytes, Intent::WellFormed(kind))
}

fn abort(rng: &mut SplitMix64, offer: &Offer) -> (Vec<u8>, Intent) {
    let reasons = ["", "gone", "a part past the end", "\u{1b}[2J\nfake log line", "ünïcødé ✓"];
    let reason = reasons[rng.below(reasons.len() as u64) as usize];
    let code = AbortCode::from(rng.below(6) as u16);
    let mut bytes = vec![0; datagram::abort_len(reason) + 2];
    let len = datagram::encode_abort(token(rng, offer), code, reason, &mut bytes);
    bytes.truncate(len);
    if rng.below(5) == 0 {
        // A byte that is never UTF-8, at the end of the reason, checksum made right again.
        bytes.insert(len - datagram::TRAILER_LEN, 0xff);
        datagram::reseal(&mut bytes);
        return (bytes, Intent::Malformed("reason not UTF-8"));
    }
    if rng.below(10) == 0 {
        bytes.truncate(datagram::HEADER_LEN + rng.below(2) as usize);
        return (bytes, Intent::Malformed("ABORT without its code"));
    }
    let kind = bytes[3];
    (bytes, Intent::WellFormed(kind))
}
