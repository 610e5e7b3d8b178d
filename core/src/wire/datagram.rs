//! The UDP datagrams of a download (PROTOCOL.md 2.2): parse, encode into a caller's buffer, CRC32C.
//!
//! Every datagram starts with a 12-byte header (magic `NT`, version, kind, token u64); integers are
//! big-endian. Version 2 (the current one) ends every REQUEST, FINISHED and ABORT with a CRC32C of
//! the bytes before it, so a corrupted request is dropped like a corrupted part; PART is the same in
//! both versions. A server answers each client in the version its REQUESTs use, so a version-1
//! client is still served ([`parse_versioned`], the `_in` encoders). Parsing borrows from the input (a PART's payload and an ABORT's reason are slices of
//! the datagram) so the receive path never copies. Encoding writes into a buffer the caller owns so
//! the runtime decides about memory and batching; for PART the runtime first `pread`s the payload
//! into place and then [`seal_part`] writes the header and checksum around it (zero copies).
//!
//! Spec: `docs/PROTOCOL.md` [§2.2] (Datagrams: layouts, integrity, drop rules) and [§5]
//! (Versioning: the version byte).
//!
//! [§2.2]: ../../../docs/PROTOCOL.md#22-datagrams
//! [§5]: ../../../docs/PROTOCOL.md#5-versioning

use nom::Parser;
use nom::bytes::complete::tag;
use nom::number::complete::{be_u16, be_u32, be_u64, u8 as be_u8};
use thiserror::Error;

/// Bytes of the common header: magic (2), version (1), kind (1), token (8).
pub const HEADER_LEN: usize = 12;
/// Bytes of a PART before its payload: header + req_seq u32 + part u32 + size u16 + crc32c u32.
pub const PART_HEADER_LEN: usize = 26;
/// The largest datagram natter sends: a part of the largest size a server grants (65000 bytes)
/// and its header.
pub const MAX_DATAGRAM: usize = PART_HEADER_LEN + 65_000;
/// Bytes of a REQUEST before its ranges: header + req_seq u32 + count u16.
pub const REQUEST_HEADER_LEN: usize = 18;
/// Bytes of the CRC32C trailer that ends a version-2 REQUEST, FINISHED and ABORT.
pub const TRAILER_LEN: usize = 4;
/// Bytes of one REQUEST range: first u32 + last u32.
pub const RANGE_LEN: usize = 8;
/// At most this many parts are answered for one REQUEST (and at most this many ranges are legal).
pub const MAX_PARTS_PER_REQUEST: usize = 256;
/// At most this many payload bytes are answered for one REQUEST (2 MiB).
pub const MAX_REQUEST_PAYLOAD: u64 = 2 << 20;
/// The largest REQUEST on the wire: 256 ranges and the version-2 trailer.
pub const MAX_REQUEST_LEN: usize =
    REQUEST_HEADER_LEN + MAX_PARTS_PER_REQUEST * RANGE_LEN + TRAILER_LEN;
/// The largest PART payload the `size` u16 field can describe.
pub const MAX_PART_PAYLOAD: usize = u16::MAX as usize;

pub(crate) const MAGIC: [u8; 2] = *b"NT";
pub(crate) const KIND_REQUEST: u8 = 1;
pub(crate) const KIND_PART: u8 = 2;
pub(crate) const KIND_FINISHED: u8 = 3;
pub(crate) const KIND_ABORT: u8 = 4;
/// Offset of the crc32c field inside a PART.
const CRC_AT: usize = 22;

/// The datagram protocol version: the byte at offset 2 (PROTOCOL.md 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// Version 1: only PART carries a checksum.
    V1,
    /// Version 2: REQUEST, FINISHED and ABORT end with a CRC32C trailer too.
    V2,
}

impl Version {
    /// What natter sends: the newest version.
    pub const CURRENT: Version = Version::V2;

    /// The version byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Version> {
        match byte {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }

    /// Bytes of checksum trailer this version puts after a REQUEST, FINISHED or ABORT.
    pub fn trailer_len(self) -> usize {
        match self {
            Version::V1 => 0,
            Version::V2 => TRAILER_LEN,
        }
    }
}

/// One parsed datagram, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Kind 1, client to server: parts wanted.
    Request(Request),
    /// Kind 2, server to client: one part's payload, CRC already verified.
    Part(Part<'a>),
    /// Kind 3, client to server: the download is complete and verified; the server frees the port.
    /// The header alone, 12 bytes exactly.
    Finished {
        /// The transfer's token, from the offer.
        token: u64,
    },
    /// Kind 4, server to client: the transfer is over.
    Abort(Abort<'a>),
}

impl Datagram<'_> {
    /// The transfer token every datagram carries.
    pub fn token(&self) -> u64 {
        match self {
            Datagram::Request(r) => r.token,
            Datagram::Part(p) => p.token,
            Datagram::Finished { token } => *token,
            Datagram::Abort(a) => a.token,
        }
    }
}

/// Client to server: "answer request `req_seq` with these inclusive part ranges".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The transfer's token, from the offer; anything else is ignored by the server (U2).
    pub token: u64,
    /// The client's request number: +1 per new REQUEST, same for an identical copy. The server
    /// answers only a `req_seq` greater than the last one it answered (U3).
    pub req_seq: u32,
    /// Inclusive `(first, last)` part indices, `first <= last` guaranteed by the parser.
    pub ranges: Vec<(u32, u32)>,
}

/// Server to client: one part's payload. The CRC has already been checked when this exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The transfer's token, from the offer.
    pub token: u64,
    /// Echo of the REQUEST that asked for this part (the client's RTT sample key).
    pub req_seq: u32,
    /// The part index, from 0; its payload starts at byte `part * part_size` of the file.
    pub part: u32,
    /// The payload, borrowed from the datagram; its length matched the `size` field.
    pub data: &'a [u8],
}

/// Server to client: the transfer is over, with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort<'a> {
    /// The transfer's token, from the offer.
    pub token: u64,
    /// Why the transfer ended; unknown codes are kept as [`AbortCode::Other`].
    pub code: AbortCode,
    /// Text meant for a person, borrowed from the datagram. Valid UTF-8 but untrusted: a client
    /// truncates it and escapes controls before showing it.
    pub reason: &'a str,
}

/// Why a server aborted a transfer (PROTOCOL.md 2.2). Unknown codes are kept, not rejected, so a
/// newer server's reason still reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortCode {
    /// 1: the file changed on disk since the offer.
    FileChanged,
    /// 2: a request asked for a part past the end of the file.
    PastEnd,
    /// 3: no valid request for the idle timeout.
    TimedOut,
    /// 4: the client's chat connection ended, and its transfers with it (version 2).
    ClientLeft,
    /// Any other code.
    Other(u16),
}

impl From<u16> for AbortCode {
    fn from(code: u16) -> Self {
        match code {
            1 => AbortCode::FileChanged,
            2 => AbortCode::PastEnd,
            3 => AbortCode::TimedOut,
            4 => AbortCode::ClientLeft,
            other => AbortCode::Other(other),
        }
    }
}

impl From<AbortCode> for u16 {
    fn from(code: AbortCode) -> Self {
        match code {
            AbortCode::FileChanged => 1,
            AbortCode::PastEnd => 2,
            AbortCode::TimedOut => 3,
            AbortCode::ClientLeft => 4,
            AbortCode::Other(other) => other,
        }
    }
}

impl std::fmt::Display for AbortCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            AbortCode::FileChanged => "file changed on the server",
            AbortCode::PastEnd => "a part past the end of the file was requested",
            AbortCode::TimedOut => "transfer timed out",
            AbortCode::ClientLeft => "the chat connection ended",
            AbortCode::Other(_) => "unknown abort code",
        };
        write!(f, "{text} (code {})", u16::from(*self))
    }
}

/// Why a datagram was rejected. Every one of these means "drop it as if it were lost".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DatagramError {
    /// Shorter than its header or its fixed fields; carries the datagram's length in bytes.
    #[error("datagram too short: {0} bytes")]
    Truncated(usize),
    /// The first two bytes are not `NT`: not a natter datagram.
    #[error("not a natter datagram (bad magic)")]
    BadMagic,
    /// A version byte other than 1 or 2 (PROTOCOL 5); carries the version found.
    #[error("unsupported natter datagram version {0}")]
    BadVersion(u8),
    /// A kind byte other than 1 to 4; carries the kind found.
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// A PART whose `size` field disagrees with the payload that arrived.
    #[error("PART size field says {declared} bytes but {actual} payload bytes arrived")]
    SizeMismatch {
        /// The payload length the `size` field claims, in bytes.
        declared: usize,
        /// The payload bytes actually present after the PART header.
        actual: usize,
    },
    /// A PART whose CRC32C does not match: corrupted on the way.
    #[error("PART checksum (CRC32C) does not match: the datagram was corrupted")]
    BadCrc,
    /// A REQUEST whose `count` is above [`MAX_PARTS_PER_REQUEST`]; carries the count.
    #[error("REQUEST has {0} ranges, more than the limit of 256")]
    TooManyRanges(usize),
    /// A REQUEST whose length is not `18 + 8 * count`.
    #[error("REQUEST says {count} ranges but carries {bytes} bytes of ranges")]
    RangeCountMismatch {
        /// The `count` field.
        count: usize,
        /// The bytes that follow the REQUEST header (should be `8 * count`).
        bytes: usize,
    },
    /// A REQUEST range with `first > last`.
    #[error("REQUEST range {first}-{last} is backwards")]
    InvertedRange {
        /// The range's `first` part index.
        first: u32,
        /// The range's `last` part index, smaller than `first`.
        last: u32,
    },
    /// A FINISHED with bytes after its header (and, in version 2, its checksum); carries how many.
    #[error("FINISHED datagram has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A version-2 REQUEST, FINISHED or ABORT whose CRC32C trailer does not match.
    #[error("datagram checksum (CRC32C) does not match: the datagram was corrupted")]
    BadTrailer,
    /// An ABORT whose reason text is not UTF-8.
    #[error("ABORT reason is not valid UTF-8")]
    InvalidReason,
    /// A sealed transfer got a datagram that is not sealed (version 1 or 2), or a plain transfer
    /// a sealed one (PROTOCOL 2.7): carries the version found.
    #[error("datagram version {0} is not the one this transfer speaks")]
    WrongVersion(u8),
    /// A sealed datagram whose AEAD tag does not verify: forged, altered on the way, or sealed
    /// under another transfer's key (PROTOCOL 2.7).
    #[error("sealed datagram failed authentication: forged, altered or for another transfer")]
    Unauthentic,
    /// A sealed REQUEST whose ranges overlap: answering it would send one part twice under one
    /// nonce (PROTOCOL 2.7).
    #[error("sealed REQUEST ranges overlap")]
    OverlappingRanges,
    /// A sealed datagram with a nonzero field its kind does not use (PROTOCOL 2.7).
    #[error("sealed datagram has a nonzero unused field")]
    UnusedField,
}

type NomErr<'a> = nom::error::Error<&'a [u8]>;

/// Splits the common header into (version, kind, token, body).
fn header(buf: &[u8]) -> Result<(Version, u8, u64, &[u8]), DatagramError> {
    if buf.len() < HEADER_LEN {
        return Err(DatagramError::Truncated(buf.len()));
    }
    let magic: nom::IResult<&[u8], &[u8], NomErr<'_>> = tag(&MAGIC[..]).parse(buf);
    let rest = magic.map(|(rest, _)| rest).map_err(|_| DatagramError::BadMagic)?;
    let fields: nom::IResult<&[u8], (u8, u8, u64), NomErr<'_>> = (be_u8, be_u8, be_u64).parse(rest);
    let (body, (version, kind, token)) = fields.map_err(|_| DatagramError::Truncated(buf.len()))?;
    if version == crate::wire::sealed::SEALED_VERSION {
        return Err(DatagramError::WrongVersion(version));
    }
    let version = Version::from_byte(version).ok_or(DatagramError::BadVersion(version))?;
    Ok((version, kind, token, body))
}

/// Parses one datagram of either version. Every checksum is verified here (a PART's in both
/// versions, the trailer in version 2), so what comes back was not corrupted on the way.
pub fn parse(buf: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    parse_versioned(buf).map(|(_, dgram)| dgram)
}

/// Like [`parse`], and says which version the datagram was: a server answers in it.
pub fn parse_versioned(buf: &[u8]) -> Result<(Version, Datagram<'_>), DatagramError> {
    let (version, kind, token, body) = header(buf)?;
    if kind == KIND_PART {
        return parse_part(token, body, buf).map(|part| (version, Datagram::Part(part)));
    }
    let body = match version {
        Version::V1 => body,
        Version::V2 => strip_trailer(kind, buf, body)?,
    };
    let dgram = match kind {
        KIND_REQUEST => parse_request(token, body, buf.len()).map(Datagram::Request),
        KIND_FINISHED if body.is_empty() => Ok(Datagram::Finished { token }),
        KIND_FINISHED => Err(DatagramError::TrailingBytes(body.len())),
        KIND_ABORT => {
            let fields: nom::IResult<&[u8], u16, NomErr<'_>> = be_u16.parse(body);
            let (reason, code) = fields.map_err(|_| DatagramError::Truncated(buf.len()))?;
            let reason = std::str::from_utf8(reason).map_err(|_| DatagramError::InvalidReason)?;
            Ok(Datagram::Abort(Abort { token, code: AbortCode::from(code), reason }))
        }
        other => Err(DatagramError::UnknownKind(other)),
    };
    dgram.map(|dgram| (version, dgram))
}

/// Checks a version-2 trailer and returns the body without it. An unknown kind is reported as
/// such rather than as a checksum failure.
fn strip_trailer<'a>(kind: u8, whole: &[u8], body: &'a [u8]) -> Result<&'a [u8], DatagramError> {
    if !(KIND_REQUEST..=KIND_ABORT).contains(&kind) {
        return Err(DatagramError::UnknownKind(kind));
    }
    if body.len() < TRAILER_LEN {
        return Err(DatagramError::Truncated(whole.len()));
    }
    let (body, trailer) = body.split_at(body.len() - TRAILER_LEN);
    let (checked, _) = whole.split_at(whole.len() - TRAILER_LEN);
    let mut expected = [0; TRAILER_LEN];
    expected.copy_from_slice(trailer);
    if crc32c::crc32c(checked) != u32::from_be_bytes(expected) {
        return Err(DatagramError::BadTrailer);
    }
    Ok(body)
}

fn parse_request(token: u64, body: &[u8], total: usize) -> Result<Request, DatagramError> {
    let fields: nom::IResult<&[u8], u32, NomErr<'_>> = be_u32.parse(body);
    let (rest, req_seq) = fields.map_err(|_| DatagramError::Truncated(total))?;
    let ranges = parse_ranges(rest, total)?;
    Ok(Request { token, req_seq, ranges })
}

/// A REQUEST's `count` and ranges (the body after `req_seq`), shared with the sealed layout
/// ([`crate::wire::sealed`]); `total` is the whole datagram's length, for the error.
pub(crate) fn parse_ranges(body: &[u8], total: usize) -> Result<Vec<(u32, u32)>, DatagramError> {
    let fields: nom::IResult<&[u8], u16, NomErr<'_>> = be_u16.parse(body);
    let (mut rest, count) = fields.map_err(|_| DatagramError::Truncated(total))?;
    let count = usize::from(count);
    if count > MAX_PARTS_PER_REQUEST {
        return Err(DatagramError::TooManyRanges(count));
    }
    if rest.len() != count * RANGE_LEN {
        return Err(DatagramError::RangeCountMismatch { count, bytes: rest.len() });
    }
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        let pair: nom::IResult<&[u8], (u32, u32), NomErr<'_>> = (be_u32, be_u32).parse(rest);
        let (next, (first, last)) = pair.map_err(|_| DatagramError::Truncated(total))?;
        if first > last {
            return Err(DatagramError::InvertedRange { first, last });
        }
        ranges.push((first, last));
        rest = next;
    }
    Ok(ranges)
}

/// Writes a REQUEST's `count` and ranges at the start of `buf`; returns the bytes written.
///
/// # Panics
/// As [`encode_request`]: more than 256 ranges, or `buf` too short.
pub(crate) fn write_ranges(ranges: &[(u32, u32)], buf: &mut [u8]) -> usize {
    assert!(ranges.len() <= MAX_PARTS_PER_REQUEST, "a REQUEST carries at most 256 ranges");
    // Cannot truncate: checked against 256 above.
    buf[0..2].copy_from_slice(&(ranges.len() as u16).to_be_bytes());
    for (i, &(first, last)) in ranges.iter().enumerate() {
        let at = 2 + i * RANGE_LEN;
        buf[at..at + 4].copy_from_slice(&first.to_be_bytes());
        buf[at + 4..at + 8].copy_from_slice(&last.to_be_bytes());
    }
    2 + ranges.len() * RANGE_LEN
}

fn parse_part<'a>(token: u64, body: &'a [u8], whole: &'a [u8]) -> Result<Part<'a>, DatagramError> {
    let fields: nom::IResult<&[u8], (u32, u32, u16, u32), NomErr<'_>> =
        (be_u32, be_u32, be_u16, be_u32).parse(body);
    let (data, (req_seq, part, size, crc)) =
        fields.map_err(|_| DatagramError::Truncated(whole.len()))?;
    if data.len() != usize::from(size) {
        return Err(DatagramError::SizeMismatch {
            declared: usize::from(size),
            actual: data.len(),
        });
    }
    if part_crc(whole) != crc {
        return Err(DatagramError::BadCrc);
    }
    Ok(Part { token, req_seq, part, data })
}

/// CRC32C of a whole PART datagram with its crc field taken as zero (PROTOCOL.md 2.2), computed
/// without copying or mutating the datagram.
fn part_crc(whole: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&whole[..CRC_AT]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &whole[PART_HEADER_LEN..])
}

/// Recomputes the checksum of a datagram whose bytes were changed after it was sealed, so it
/// passes the CRC check again: what an on-path forger or an error the CRC misses produces. Used by
/// the simulator to prove that only the file's BLAKE3 digest decides; a datagram too short or of a
/// kind without a checksum is left alone.
pub fn reseal(buf: &mut [u8]) {
    if buf.len() < HEADER_LEN {
        return;
    }
    if buf[3] == KIND_PART {
        if buf.len() >= PART_HEADER_LEN {
            let crc = part_crc(buf);
            buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        }
    } else if buf[2] == Version::V2.byte() && buf.len() >= HEADER_LEN + TRAILER_LEN {
        seal_trailer(buf);
    }
}

fn write_header(buf: &mut [u8], version: Version, kind: u8, token: u64) {
    buf[0..2].copy_from_slice(&MAGIC);
    buf[2] = version.byte();
    buf[3] = kind;
    buf[4..12].copy_from_slice(&token.to_be_bytes());
}

/// Writes the CRC32C of everything before the last four bytes into them (version 2).
fn seal_trailer(datagram: &mut [u8]) {
    let (checked, trailer) = datagram.split_at_mut(datagram.len() - TRAILER_LEN);
    trailer.copy_from_slice(&crc32c::crc32c(checked).to_be_bytes());
}

/// Writes the trailer of `datagram` if `version` has one; returns the datagram's length.
fn finish(version: Version, datagram: &mut [u8]) -> usize {
    if version == Version::V2 {
        seal_trailer(datagram);
    }
    datagram.len()
}

/// Bytes a REQUEST with `n_ranges` ranges takes on the wire, in the current version.
pub const fn request_len(n_ranges: usize) -> usize {
    REQUEST_HEADER_LEN + n_ranges * RANGE_LEN + TRAILER_LEN
}

/// Writes a REQUEST in the current version into `buf` and returns its length.
///
/// # Panics
/// If `ranges` has more than 256 entries or `buf` is shorter than [`request_len`]`(ranges.len())`:
/// both are the caller's programming errors, never something a peer can cause.
pub fn encode_request(token: u64, req_seq: u32, ranges: &[(u32, u32)], buf: &mut [u8]) -> usize {
    encode_request_in(Version::CURRENT, token, req_seq, ranges, buf)
}

/// [`encode_request`] in a given version (tests speak version 1 with it).
///
/// # Panics
/// As [`encode_request`].
pub fn encode_request_in(
    version: Version,
    token: u64,
    req_seq: u32,
    ranges: &[(u32, u32)],
    buf: &mut [u8],
) -> usize {
    assert!(ranges.len() <= MAX_PARTS_PER_REQUEST, "a REQUEST carries at most 256 ranges");
    let len = REQUEST_HEADER_LEN + ranges.len() * RANGE_LEN + version.trailer_len();
    write_header(&mut buf[..len], version, KIND_REQUEST, token);
    buf[12..16].copy_from_slice(&req_seq.to_be_bytes());
    write_ranges(ranges, &mut buf[16..len]);
    finish(version, &mut buf[..len])
}

/// Bytes a FINISHED takes on the wire in the current version.
pub const FINISHED_LEN: usize = HEADER_LEN + TRAILER_LEN;

/// Writes a FINISHED in the current version into `buf` (at least [`FINISHED_LEN`] bytes) and
/// returns its length.
pub fn encode_finished(token: u64, buf: &mut [u8]) -> usize {
    encode_finished_in(Version::CURRENT, token, buf)
}

/// [`encode_finished`] in a given version.
pub fn encode_finished_in(version: Version, token: u64, buf: &mut [u8]) -> usize {
    let len = HEADER_LEN + version.trailer_len();
    write_header(&mut buf[..len], version, KIND_FINISHED, token);
    finish(version, &mut buf[..len])
}

/// Bytes an ABORT with this reason takes on the wire in the current version (the longest).
pub fn abort_len(reason: &str) -> usize {
    HEADER_LEN + 2 + reason.len() + TRAILER_LEN
}

/// Writes an ABORT in the current version into `buf` (at least [`abort_len`] bytes) and returns
/// its length.
pub fn encode_abort(token: u64, code: AbortCode, reason: &str, buf: &mut [u8]) -> usize {
    encode_abort_in(Version::CURRENT, token, code, reason, buf)
}

/// [`encode_abort`] in a given version: a server aborts in the version its client speaks.
pub fn encode_abort_in(
    version: Version,
    token: u64,
    code: AbortCode,
    reason: &str,
    buf: &mut [u8],
) -> usize {
    let len = HEADER_LEN + 2 + reason.len() + version.trailer_len();
    write_header(&mut buf[..len], version, KIND_ABORT, token);
    buf[12..14].copy_from_slice(&u16::from(code).to_be_bytes());
    buf[14..14 + reason.len()].copy_from_slice(reason.as_bytes());
    finish(version, &mut buf[..len])
}

/// Finishes a PART whose payload the runtime already placed at
/// `buf[PART_HEADER_LEN..PART_HEADER_LEN + len]`: writes the header and the CRC32C, returns the
/// datagram's total length.
///
/// # Panics
/// If `len` exceeds 65535 (the size field is u16) or `buf` is shorter than `PART_HEADER_LEN + len`:
/// programming errors of the caller, who chose `len` from the sender's output.
pub fn seal_part(buf: &mut [u8], token: u64, req_seq: u32, part: u32, len: usize) -> usize {
    seal_part_in(Version::CURRENT, buf, token, req_seq, part, len)
}

/// [`seal_part`] in a given version: a server answers in the version of the REQUEST.
///
/// # Panics
/// As [`seal_part`].
pub fn seal_part_in(
    version: Version,
    buf: &mut [u8],
    token: u64,
    req_seq: u32,
    part: u32,
    len: usize,
) -> usize {
    let size = u16::try_from(len).unwrap_or_else(|_| panic!("PART payload {len} exceeds 65535"));
    let total = PART_HEADER_LEN + len;
    let buf = &mut buf[..total];
    write_header(buf, version, KIND_PART, token);
    buf[12..16].copy_from_slice(&req_seq.to_be_bytes());
    buf[16..20].copy_from_slice(&part.to_be_bytes());
    buf[20..22].copy_from_slice(&size.to_be_bytes());
    let crc = part_crc(buf);
    buf[CRC_AT..PART_HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
    total
}

/// Convenience for tests and the simulator: a whole PART datagram from a payload slice.
pub fn encode_part(token: u64, req_seq: u32, part: u32, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; PART_HEADER_LEN + data.len()];
    buf[PART_HEADER_LEN..].copy_from_slice(data);
    seal_part(&mut buf, token, req_seq, part, data.len());
    buf
}

#[cfg(test)]
mod tests {
    // U1, P1 / PROTOCOL 2.2: round trips and malformed inputs.
    use super::*;

    const TOKEN: u64 = 0x5c1e_0f3a_9b2d_4e71;

    const EXAMPLE_V1: [u8; 34] = [
        b'N', b'T', 1, 1, 0x5c, 0x1e, 0x0f, 0x3a, 0x9b, 0x2d, 0x4e, 0x71, 0, 0, 0, 7, 0, 2, 0, 0,
        0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 5,
    ];

    fn example_request() -> Datagram<'static> {
        Datagram::Request(Request { token: TOKEN, req_seq: 7, ranges: vec![(0, 1), (5, 5)] })
    }

    #[test]
    fn request_round_trip_and_exact_bytes() {
        // The example of PROTOCOL 2.2, in version 2: version byte 2 and a CRC32C trailer.
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = encode_request(TOKEN, 7, &[(0, 1), (5, 5)], &mut buf);
        assert_eq!(n, 38);
        let mut expected = EXAMPLE_V1.to_vec();
        expected[2] = 2;
        expected.extend_from_slice(&crc32c::crc32c(&expected).to_be_bytes());
        assert_eq!(&buf[..n], &expected[..]);
        assert_eq!(&buf[34..38], &[0xd2, 0x5a, 0xcb, 0xfa], "the trailer printed in PROTOCOL 2.2");
        assert_eq!(parse_versioned(&buf[..n]), Ok((Version::V2, example_request())));
    }

    #[test]
    fn version_1_request_has_no_trailer_and_still_parses() {
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = encode_request_in(Version::V1, TOKEN, 7, &[(0, 1), (5, 5)], &mut buf);
        assert_eq!(&buf[..n], &EXAMPLE_V1[..]);
        assert_eq!(parse_versioned(&EXAMPLE_V1), Ok((Version::V1, example_request())));
        let n = encode_finished_in(Version::V1, TOKEN, &mut buf);
        assert_eq!(n, HEADER_LEN);
        assert_eq!(
            parse_versioned(&buf[..n]),
            Ok((Version::V1, Datagram::Finished { token: TOKEN }))
        );
        let n = encode_abort_in(Version::V1, TOKEN, AbortCode::PastEnd, "x", &mut buf);
        assert_eq!(n, HEADER_LEN + 3);
        assert!(matches!(parse_versioned(&buf[..n]), Ok((Version::V1, Datagram::Abort(_)))));
        let part = seal_part_in(Version::V1, &mut buf, TOKEN, 1, 2, 0);
        assert_eq!(buf[2], 1);
        assert!(matches!(parse_versioned(&buf[..part]), Ok((Version::V1, Datagram::Part(_)))));
    }

    #[test]
    fn every_single_bit_flip_in_a_version_2_request_finished_or_abort_is_caught() {
        let mut req = [0u8; 64];
        let n = encode_request(TOKEN, 7, &[(0, 1), (5, 5)], &mut req);
        let mut fin = [0u8; FINISHED_LEN];
        let f = encode_finished(TOKEN, &mut fin);
        let mut abort = [0u8; 64];
        let a = encode_abort(TOKEN, AbortCode::FileChanged, "gone", &mut abort);
        for whole in [&req[..n], &fin[..f], &abort[..a]] {
            assert!(parse(whole).is_ok());
            for bit in 0..whole.len() * 8 {
                let mut bad = whole.to_vec();
                bad[bit / 8] ^= 1 << (bit % 8);
                if let Ok(dgram) = parse(&bad) {
                    panic!("bit {bit} flipped and accepted: {dgram:?}");
                }
            }
        }
    }

    #[test]
    fn request_with_256_ranges_round_trips() {
        let ranges: Vec<(u32, u32)> = (0..256).map(|i| (i * 2, i * 2 + 1)).collect();
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = encode_request(TOKEN, u32::MAX, &ranges, &mut buf);
        assert_eq!(n, MAX_REQUEST_LEN);
        match parse(&buf[..n]) {
            Ok(Datagram::Request(r)) => {
                assert_eq!(r.ranges, ranges);
                assert_eq!(r.req_seq, u32::MAX);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn part_round_trip_and_layout() {
        let d = encode_part(TOKEN, 3, 9, b"hello");
        assert_eq!(d.len(), PART_HEADER_LEN + 5);
        assert_eq!(&d[12..22], &[0, 0, 0, 3, 0, 0, 0, 9, 0, 5]);
        assert_eq!(
            parse(&d),
            Ok(Datagram::Part(Part { token: TOKEN, req_seq: 3, part: 9, data: b"hello" }))
        );
        // The CRC is over the whole datagram with the field zeroed.
        let mut zeroed = d.clone();
        zeroed[22..26].fill(0);
        assert_eq!(crc32c::crc32c(&zeroed).to_be_bytes(), d[22..26]);
    }

    #[test]
    fn empty_part_round_trips() {
        let d = encode_part(TOKEN, 0, 0, b"");
        assert!(matches!(parse(&d), Ok(Datagram::Part(p)) if p.data.is_empty()));
    }

    #[test]
    fn finished_and_abort_round_trip() {
        let mut buf = [0u8; 64];
        let n = encode_finished(TOKEN, &mut buf);
        assert_eq!(parse(&buf[..n]), Ok(Datagram::Finished { token: TOKEN }));
        for code in [1u16, 2, 3, 77] {
            let n = encode_abort(TOKEN, AbortCode::from(code), "gone – sorry", &mut buf);
            match parse(&buf[..n]) {
                Ok(Datagram::Abort(a)) => {
                    assert_eq!(u16::from(a.code), code);
                    assert_eq!(a.reason, "gone – sorry");
                    assert_eq!(a.token, TOKEN);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn every_truncation_of_every_kind_is_rejected_without_panic() {
        let mut req = [0u8; 64];
        let n = encode_request(TOKEN, 1, &[(2, 4)], &mut req);
        let part = encode_part(TOKEN, 1, 2, b"abcdef");
        let mut abort = [0u8; 64];
        let a = encode_abort(TOKEN, AbortCode::PastEnd, "x", &mut abort);
        for whole in [&req[..n], &part[..], &abort[..a]] {
            for cut in 0..whole.len() - 1 {
                assert!(parse(&whole[..cut]).is_err(), "cut at {cut} of {whole:?}");
            }
        }
        assert_eq!(parse(&[]), Err(DatagramError::Truncated(0)));
        assert_eq!(parse(&part[..11]), Err(DatagramError::Truncated(11)));
    }

    #[test]
    fn bad_magic_version_kind() {
        let mut d = encode_part(TOKEN, 1, 2, b"abc");
        d[0] = b'X';
        assert_eq!(parse(&d), Err(DatagramError::BadMagic));
        let mut d = encode_part(TOKEN, 1, 2, b"abc");
        d[2] = 3;
        assert_eq!(parse(&d), Err(DatagramError::WrongVersion(3)), "sealed: not for plain");
        for version in [0, 4, 255] {
            let mut d = encode_part(TOKEN, 1, 2, b"abc");
            d[2] = version;
            assert_eq!(parse(&d), Err(DatagramError::BadVersion(version)));
        }
        let mut d = encode_part(TOKEN, 1, 2, b"abc");
        d[3] = 9;
        assert_eq!(parse(&d), Err(DatagramError::UnknownKind(9)));
        d[3] = 0;
        assert_eq!(parse(&d), Err(DatagramError::UnknownKind(0)));
    }

    #[test]
    fn part_size_field_disagreeing_with_bytes() {
        let d = encode_part(TOKEN, 1, 2, b"abcdef");
        // One byte missing.
        assert_eq!(
            parse(&d[..d.len() - 1]),
            Err(DatagramError::SizeMismatch { declared: 6, actual: 5 })
        );
        // One byte too many.
        let mut longer = d.clone();
        longer.push(0);
        assert_eq!(parse(&longer), Err(DatagramError::SizeMismatch { declared: 6, actual: 7 }));
    }

    #[test]
    fn every_single_bit_flip_in_a_part_is_caught() {
        let d = encode_part(TOKEN, 1, 2, b"the payload bytes");
        for bit in 0..d.len() * 8 {
            let mut bad = d.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            if let Ok(Datagram::Part(p)) = parse(&bad) {
                panic!("bit {bit} flipped and accepted: {p:?}");
            }
        }
        let mut bad = d.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        assert_eq!(parse(&bad), Err(DatagramError::BadCrc));
    }

    #[test]
    fn request_count_over_limit_or_disagreeing() {
        let mut buf = vec![0u8; request_len(257)];
        let ranges: Vec<(u32, u32)> = (0..256).map(|i| (i, i)).collect();
        let n = encode_request(TOKEN, 1, &ranges, &mut buf);
        buf[16..18].copy_from_slice(&257u16.to_be_bytes());
        reseal(&mut buf[..n]);
        assert_eq!(parse(&buf[..n]), Err(DatagramError::TooManyRanges(257)));

        let mut buf = [0u8; 64];
        let n = encode_request(TOKEN, 1, &[(1, 2), (3, 4)], &mut buf);
        buf[17] = 3;
        reseal(&mut buf[..n]);
        assert_eq!(
            parse(&buf[..n]),
            Err(DatagramError::RangeCountMismatch { count: 3, bytes: 16 })
        );
        buf[17] = 1;
        reseal(&mut buf[..n]);
        assert_eq!(
            parse(&buf[..n]),
            Err(DatagramError::RangeCountMismatch { count: 1, bytes: 16 })
        );
    }

    #[test]
    fn request_first_after_last() {
        let mut buf = [0u8; 64];
        let n = encode_request(TOKEN, 1, &[(9, 3)], &mut buf);
        assert_eq!(parse(&buf[..n]), Err(DatagramError::InvertedRange { first: 9, last: 3 }));
    }

    #[test]
    fn abort_reason_not_utf8() {
        let mut buf = [0u8; 64];
        let n = encode_abort(TOKEN, AbortCode::TimedOut, "ab", &mut buf);
        buf[n - 1 - TRAILER_LEN] = 0xff;
        reseal(&mut buf[..n]);
        assert_eq!(parse(&buf[..n]), Err(DatagramError::InvalidReason));
    }

    #[test]
    fn finished_with_trailing_bytes() {
        let mut buf = [0u8; 64];
        let n = encode_finished(TOKEN, &mut buf);
        reseal(&mut buf[..n + 1]);
        assert_eq!(parse(&buf[..n + 1]), Err(DatagramError::TrailingBytes(1)));
        let n = encode_finished_in(Version::V1, TOKEN, &mut buf);
        assert_eq!(parse(&buf[..n + 1]), Err(DatagramError::TrailingBytes(1)));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A tiny deterministic xorshift so this test needs no RNG crate.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 && next() % 2 == 0 {
                d[0] = b'N';
                d[1] = b'T';
                d[2] = 1;
                d[3] = (next() % 5) as u8;
            }
            if let Ok(Datagram::Request(r)) = parse(&d) {
                assert!(r.ranges.iter().all(|&(a, b)| a <= b));
            }
        }
    }
}
