//! Sealed datagrams (PROTOCOL.md 2.7): version 3, every datagram of a transfer whose offer carried
//! a key is encrypted and authenticated with AES-256-GCM.
//!
//! Layout: a 12-byte header in the clear (magic `NT`, version 3, kind, `req_seq` u32, `part` u32),
//! the body encrypted in place, and a 16-byte tag over both (the header is the AEAD's associated
//! data). The body is what follows the plain header's fixed fields in version 2, without the token
//! (the key stands for it), the PART size field (the length says it) and any CRC (the tag is a far
//! stronger check). The nonce is made of fields that never repeat under one key:
//!
//! ```text
//! nonce = direction u8 | kind u8 | 0 0 | req_seq u32 | part u32
//! ```
//!
//! Why that is enough, in short (the spec has the argument): the server answers a `req_seq` once,
//! never a smaller one, and never one part twice for one REQUEST ([`open`] refuses overlapping
//! ranges), so its PARTs' (`req_seq`, `part`) never repeat; it sends at most one ABORT. The client
//! builds each REQUEST once (its copies are the same bytes) and its FINISHED is always the same
//! empty message. The key is fresh for every offer.
//!
//! Like the plain codec, encoding writes into the caller's buffer and a PART is sealed where its
//! payload was read ([`seal_part`]); [`open`] decrypts in place and borrows the plaintext from the
//! caller's buffer, so a sealed datagram costs no allocation and no copy on either side.
//!
//! Spec: `docs/PROTOCOL.md` [§2.7] (Sealed datagrams) and [§5] (Versioning).
//!
//! [§2.7]: ../../../docs/PROTOCOL.md#27-sealed-datagrams
//! [§5]: ../../../docs/PROTOCOL.md#5-versioning

use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::wire::datagram::{
    self, Abort, AbortCode, Datagram, DatagramError, KIND_ABORT, KIND_FINISHED, KIND_PART,
    KIND_REQUEST, MAGIC, MAX_PARTS_PER_REQUEST, PART_HEADER_LEN, Part, RANGE_LEN, Request,
};

/// The version byte of a sealed datagram.
pub const SEALED_VERSION: u8 = 3;
/// Bytes of the clear header: magic (2), version (1), kind (1), `req_seq` (4), `part` (4).
pub const SEALED_HEADER_LEN: usize = 12;
/// Bytes of the AES-GCM tag that ends every sealed datagram.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to its body: header and tag.
pub const SEALED_OVERHEAD: usize = SEALED_HEADER_LEN + TAG_LEN;
/// Bytes of a transfer key: AES-256.
pub const KEY_LEN: usize = 32;
/// Bytes of a sealed FINISHED: it has no body.
pub const FINISHED_LEN: usize = SEALED_OVERHEAD;
/// The largest sealed REQUEST: 256 ranges.
pub const MAX_REQUEST_LEN: usize = request_len(MAX_PARTS_PER_REQUEST);
/// How much smaller a sealed offer's part size is than the size asked for (PROTOCOL 2.7): a
/// sealed PART's header and tag are 2 bytes longer than a plain PART's header, so a part size a
/// client chose to fit its path's MTU still fits once sealed.
pub const PART_SIZE_SHRINK: u16 = (SEALED_OVERHEAD - PART_HEADER_LEN) as u16;

/// First byte of the nonce: who sent the datagram.
const TO_SERVER: u8 = 1;
/// See [`TO_SERVER`].
const TO_CLIENT: u8 = 2;

/// One transfer's AES-256-GCM key, ready to seal and open. Cheap to clone (shared), compared by
/// identity, and never printed: its `Debug` form hides the bytes (issue 14: logs never show a key).
#[derive(Clone)]
pub struct SealKey(Arc<LessSafeKey>);

impl SealKey {
    /// The key for these 32 bytes.
    pub fn new(bytes: &[u8; KEY_LEN]) -> Self {
        // ring refuses only a key of the wrong length, which the type rules out.
        let Ok(key) = UnboundKey::new(&AES_256_GCM, bytes) else {
            unreachable!("AES-256-GCM takes any 32-byte key")
        };
        SealKey(Arc::new(LessSafeKey::new(key)))
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<secret>)")
    }
}

impl PartialEq for SealKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SealKey {}

/// Bytes a sealed REQUEST with `n_ranges` ranges takes on the wire.
pub const fn request_len(n_ranges: usize) -> usize {
    SEALED_OVERHEAD + 2 + n_ranges * RANGE_LEN
}

/// Bytes a sealed ABORT with this reason takes on the wire.
pub fn abort_len(reason: &str) -> usize {
    SEALED_OVERHEAD + 2 + reason.len()
}

/// Bytes a sealed PART of `len` payload bytes takes on the wire.
pub const fn part_len(len: usize) -> usize {
    SEALED_OVERHEAD + len
}

/// Which way a kind of datagram goes: REQUEST and FINISHED to the server, PART and ABORT to the
/// client.
fn direction(kind: u8) -> u8 {
    if kind == KIND_REQUEST || kind == KIND_FINISHED { TO_SERVER } else { TO_CLIENT }
}

fn nonce(kind: u8, req_seq: u32, part: u32) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[0] = direction(kind);
    n[1] = kind;
    n[4..8].copy_from_slice(&req_seq.to_be_bytes());
    n[8..12].copy_from_slice(&part.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Writes the header, encrypts the `body_len` bytes after it in place and appends the tag;
/// returns the datagram's length.
///
/// # Panics
/// If `buf` is shorter than [`SEALED_OVERHEAD`]` + body_len`: the caller sized it.
fn seal(
    key: &SealKey,
    buf: &mut [u8],
    kind: u8,
    req_seq: u32,
    part: u32,
    body_len: usize,
) -> usize {
    let total = SEALED_OVERHEAD + body_len;
    let buf = &mut buf[..total];
    buf[0..2].copy_from_slice(&MAGIC);
    buf[2] = SEALED_VERSION;
    buf[3] = kind;
    buf[4..8].copy_from_slice(&req_seq.to_be_bytes());
    buf[8..12].copy_from_slice(&part.to_be_bytes());
    let (header, rest) = buf.split_at_mut(SEALED_HEADER_LEN);
    let (body, tag_out) = rest.split_at_mut(body_len);
    let aad = Aad::from(&*header);
    // ring fails only for a body over 64 GiB; a datagram is at most 64 KiB.
    let Ok(tag) = key.0.seal_in_place_separate_tag(nonce(kind, req_seq, part), aad, body) else {
        unreachable!("a datagram body is far below AES-GCM's limit")
    };
    tag_out.copy_from_slice(tag.as_ref());
    total
}

/// Seals a PART whose payload the runtime already placed at
/// `buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + len]` (encrypting it where it lies); returns the
/// datagram's length, [`part_len`]`(len)`.
///
/// # Panics
/// If `buf` is shorter than [`part_len`]`(len)`: the caller sized it from the order.
pub fn seal_part(key: &SealKey, buf: &mut [u8], req_seq: u32, part: u32, len: usize) -> usize {
    seal(key, buf, KIND_PART, req_seq, part, len)
}

/// Writes a sealed REQUEST into `buf` and returns its length.
///
/// # Panics
/// If `ranges` has more than 256 entries or `buf` is shorter than [`request_len`]: the caller's
/// programming errors.
pub fn encode_request(key: &SealKey, req_seq: u32, ranges: &[(u32, u32)], buf: &mut [u8]) -> usize {
    let body = datagram::write_ranges(ranges, &mut buf[SEALED_HEADER_LEN..]);
    seal(key, buf, KIND_REQUEST, req_seq, 0, body)
}

/// Writes a sealed FINISHED into `buf` (at least [`FINISHED_LEN`] bytes) and returns its length.
pub fn encode_finished(key: &SealKey, buf: &mut [u8]) -> usize {
    seal(key, buf, KIND_FINISHED, 0, 0, 0)
}

/// Writes a sealed ABORT into `buf` (at least [`abort_len`] bytes) and returns its length.
pub fn encode_abort(key: &SealKey, code: AbortCode, reason: &str, buf: &mut [u8]) -> usize {
    let body = &mut buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + 2 + reason.len()];
    body[..2].copy_from_slice(&u16::from(code).to_be_bytes());
    body[2..].copy_from_slice(reason.as_bytes());
    seal(key, buf, KIND_ABORT, 0, 0, 2 + reason.len())
}

/// Checks and decrypts a sealed datagram in place, and parses its body. `token` is the transfer's
/// token from the offer: a sealed datagram does not carry it (its key stands for it), and the
/// result reports it so that callers treat both versions alike. What comes back was sealed with
/// `key` and not altered; its payload or reason borrows the decrypted bytes of `buf`.
///
/// Dropped ([`DatagramError`]): too short, wrong magic, a version other than 3, an unknown kind,
/// a nonzero field the kind does not use, a tag that does not verify ([`DatagramError::Unauthentic`]:
/// forged, altered, or another transfer's), then the body rules of version 2 (range count and
/// order, an empty FINISHED, a UTF-8 reason) and ranges that overlap.
pub fn open<'a>(
    key: &SealKey,
    token: u64,
    buf: &'a mut [u8],
) -> Result<Datagram<'a>, DatagramError> {
    let total = buf.len();
    if total < SEALED_OVERHEAD {
        return Err(DatagramError::Truncated(total));
    }
    if buf[0..2] != MAGIC {
        return Err(DatagramError::BadMagic);
    }
    match buf[2] {
        SEALED_VERSION => {}
        1 | 2 => return Err(DatagramError::WrongVersion(buf[2])),
        other => return Err(DatagramError::BadVersion(other)),
    }
    let kind = buf[3];
    if !(KIND_REQUEST..=KIND_ABORT).contains(&kind) {
        return Err(DatagramError::UnknownKind(kind));
    }
    let field = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let (req_seq, part) = (field(4), field(8));
    let unused = match kind {
        KIND_REQUEST => part != 0,
        KIND_PART => false,
        _ => req_seq != 0 || part != 0,
    };
    if unused {
        return Err(DatagramError::UnusedField);
    }
    let (header, rest) = buf.split_at_mut(SEALED_HEADER_LEN);
    let body: &'a [u8] = key
        .0
        .open_in_place(nonce(kind, req_seq, part), Aad::from(&*header), rest)
        .map_err(|_| DatagramError::Unauthentic)?;
    match kind {
        KIND_PART => Ok(Datagram::Part(Part { token, req_seq, part, data: body })),
        KIND_REQUEST => {
            let ranges = datagram::parse_ranges(body, total)?;
            if overlap(&ranges) {
                return Err(DatagramError::OverlappingRanges);
            }
            Ok(Datagram::Request(Request { token, req_seq, ranges }))
        }
        KIND_FINISHED if body.is_empty() => Ok(Datagram::Finished { token }),
        KIND_FINISHED => Err(DatagramError::TrailingBytes(body.len())),
        _ => {
            let Some((code, reason)) = body.split_first_chunk::<2>() else {
                return Err(DatagramError::Truncated(total));
            };
            let reason = std::str::from_utf8(reason).map_err(|_| DatagramError::InvalidReason)?;
            let code = AbortCode::from(u16::from_be_bytes(*code));
            Ok(Datagram::Abort(Abort { token, code, reason }))
        }
    }
}

/// Whether any two inclusive ranges share a part. Sorted by first part, they are disjoint when
/// each starts after the previous one ends; at most 256 ranges, so the copy is small.
fn overlap(ranges: &[(u32, u32)]) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|pair| pair[1].0 <= pair[0].1)
}

#[cfg(test)]
mod tests {
    // U1, U3, P1 / PROTOCOL 2.7: round trips, tampering, malformed and foreign sealed datagrams.
    use super::*;

    const TOKEN: u64 = 0x5c1e_0f3a_9b2d_4e71;

    fn key(byte: u8) -> SealKey {
        SealKey::new(&[byte; KEY_LEN])
    }

    fn part_bytes(key: &SealKey, req_seq: u32, part: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; part_len(payload.len())];
        buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let n = seal_part(key, &mut buf, req_seq, part, payload.len());
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn part_round_trip_hides_the_payload() {
        let k = key(1);
        let mut d = part_bytes(&k, 7, 9, b"the secret payload");
        assert_eq!(&d[..12], &[b'N', b'T', 3, 2, 0, 0, 0, 7, 0, 0, 0, 9]);
        assert!(!d.windows(6).any(|w| w == b"secret"), "the payload is encrypted");
        let opened = open(&k, TOKEN, &mut d);
        assert_eq!(
            opened,
            Ok(Datagram::Part(Part {
                token: TOKEN,
                req_seq: 7,
                part: 9,
                data: b"the secret payload"
            }))
        );
    }

    #[test]
    fn request_finished_abort_round_trip() {
        let k = key(2);
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = encode_request(&k, 5, &[(0, 3), (9, 9)], &mut buf);
        assert_eq!(n, request_len(2));
        assert_eq!(
            open(&k, TOKEN, &mut buf[..n]),
            Ok(Datagram::Request(Request {
                token: TOKEN,
                req_seq: 5,
                ranges: vec![(0, 3), (9, 9)]
            }))
        );
        let n = encode_finished(&k, &mut buf);
        assert_eq!(n, FINISHED_LEN);
        assert_eq!(open(&k, TOKEN, &mut buf[..n]), Ok(Datagram::Finished { token: TOKEN }));
        let n = encode_abort(&k, AbortCode::FileChanged, "gone – sorry", &mut buf);
        assert_eq!(n, abort_len("gone – sorry"));
        match open(&k, TOKEN, &mut buf[..n]) {
            Ok(Datagram::Abort(a)) => {
                assert_eq!(a.code, AbortCode::FileChanged);
                assert_eq!(a.reason, "gone – sorry");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_request_fits_and_round_trips() {
        let k = key(3);
        let ranges: Vec<(u32, u32)> = (0..256).map(|i| (i * 2, i * 2)).collect();
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = encode_request(&k, u32::MAX, &ranges, &mut buf);
        assert_eq!(n, MAX_REQUEST_LEN);
        assert!(
            matches!(open(&k, TOKEN, &mut buf[..n]), Ok(Datagram::Request(r)) if r.ranges == ranges)
        );
    }

    #[test]
    fn every_single_bit_flip_is_refused_as_unauthentic_or_malformed() {
        let k = key(4);
        let part = part_bytes(&k, 1, 2, b"payload bytes");
        let mut req = [0u8; 64];
        let r = encode_request(&k, 3, &[(1, 2)], &mut req);
        let mut fin = [0u8; FINISHED_LEN];
        encode_finished(&k, &mut fin);
        let mut abort = [0u8; 64];
        let a = encode_abort(&k, AbortCode::TimedOut, "late", &mut abort);
        for whole in [&part[..], &req[..r], &fin[..], &abort[..a]] {
            for bit in 0..whole.len() * 8 {
                let mut bad = whole.to_vec();
                bad[bit / 8] ^= 1 << (bit % 8);
                if let Ok(d) = open(&k, TOKEN, &mut bad) {
                    panic!("bit {bit} flipped and accepted: {d:?}");
                }
            }
        }
    }

    #[test]
    fn another_transfers_key_or_a_moved_header_is_refused() {
        let mut d = part_bytes(&key(5), 1, 2, b"abc");
        assert_eq!(open(&key(6), TOKEN, &mut d.clone()), Err(DatagramError::Unauthentic));
        // The same ciphertext presented as another part or another request's answer.
        d[11] = 3;
        assert_eq!(open(&key(5), TOKEN, &mut d.clone()), Err(DatagramError::Unauthentic));
        d[11] = 2;
        d[7] = 9;
        assert_eq!(open(&key(5), TOKEN, &mut d), Err(DatagramError::Unauthentic));
    }

    #[test]
    fn a_request_reflected_as_an_abort_is_refused() {
        // Same key, same fields, other kind: the kind is in the nonce and the associated data.
        let k = key(7);
        let mut buf = [0u8; 64];
        let n = encode_finished(&k, &mut buf);
        buf[3] = KIND_ABORT;
        assert_eq!(open(&k, TOKEN, &mut buf[..n]), Err(DatagramError::Unauthentic));
    }

    #[test]
    fn malformed_headers_are_refused_before_any_decryption() {
        let k = key(8);
        let good = part_bytes(&k, 1, 2, b"abc");
        for cut in 0..SEALED_OVERHEAD {
            assert_eq!(
                open(&k, TOKEN, &mut good[..cut].to_vec()),
                Err(DatagramError::Truncated(cut))
            );
        }
        let mut d = good.clone();
        d[0] = b'X';
        assert_eq!(open(&k, TOKEN, &mut d), Err(DatagramError::BadMagic));
        for (version, err) in [
            (2, DatagramError::WrongVersion(2)),
            (1, DatagramError::WrongVersion(1)),
            (9, DatagramError::BadVersion(9)),
        ] {
            let mut d = good.clone();
            d[2] = version;
            assert_eq!(open(&k, TOKEN, &mut d), Err(err));
        }
        let mut d = good.clone();
        d[3] = 5;
        assert_eq!(open(&k, TOKEN, &mut d), Err(DatagramError::UnknownKind(5)));
        let mut fin = [0u8; FINISHED_LEN];
        encode_finished(&k, &mut fin);
        fin[7] = 1;
        assert_eq!(open(&k, TOKEN, &mut fin), Err(DatagramError::UnusedField));
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let k = key(9);
        let mut buf = [0u8; 64];
        for ranges in [&[(0, 5), (5, 7)][..], &[(8, 9), (0, 8)], &[(3, 3), (3, 3)]] {
            let n = encode_request(&k, 1, ranges, &mut buf);
            assert_eq!(open(&k, TOKEN, &mut buf[..n]), Err(DatagramError::OverlappingRanges));
        }
        let n = encode_request(&k, 1, &[(9, 9), (0, 8)], &mut buf);
        assert!(open(&k, TOKEN, &mut buf[..n]).is_ok(), "disjoint in any order is fine");
    }

    #[test]
    fn plain_datagrams_are_not_sealed_ones_and_back() {
        let k = key(10);
        let mut plain = datagram::encode_part(TOKEN, 1, 2, b"abc");
        assert_eq!(open(&k, TOKEN, &mut plain), Err(DatagramError::WrongVersion(2)));
        let sealed = part_bytes(&k, 1, 2, b"abc");
        assert_eq!(datagram::parse(&sealed), Err(DatagramError::WrongVersion(3)));
    }

    #[test]
    fn nonces_differ_by_direction_kind_req_seq_and_part() {
        let all = [
            nonce(KIND_REQUEST, 1, 0),
            nonce(KIND_PART, 1, 0),
            nonce(KIND_PART, 0, 1),
            nonce(KIND_FINISHED, 0, 0),
            nonce(KIND_ABORT, 0, 0),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.as_ref(), b.as_ref());
            }
        }
        assert_eq!(nonce(KIND_REQUEST, 0, 0).as_ref()[0], TO_SERVER);
        assert_eq!(nonce(KIND_ABORT, 0, 0).as_ref()[0], TO_CLIENT);
    }

    #[test]
    fn a_key_never_shows_in_debug_output() {
        let shown = format!("{:?}", key(0xab));
        assert_eq!(shown, "SealKey(<secret>)");
    }

    #[test]
    fn random_bytes_never_panic() {
        let k = key(11);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let len = (next() % 90) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 {
                d[0] = b'N';
                d[1] = b'T';
                d[2] = SEALED_VERSION;
                d[3] = (next() % 5) as u8;
            }
            assert!(open(&k, TOKEN, &mut d).is_err(), "random bytes never authenticate");
        }
    }
}
