//! Which parts of a file have arrived: a bitmap, its in-order prefix, and the resume record.
//!
//! The resume record is what a client keeps beside its `.part` file so an interrupted download
//! asks only for the missing parts. It names the offer it belongs to (BLAKE3 digest, size,
//! part size) so a record from another version of the file, or another part size, is refused
//! instead of silently mixing two files' bytes (PROTOCOL.md 2.4, TEST-CATALOGUE U6).
//!
//! Record layout (big-endian): magic `NTRS`, version u8 = 1, digest (32 bytes), size u64, part_size u16,
//! bitmap (ceil(n_parts / 8) bytes, part i is bit `i % 8` of byte `i / 8`), then a CRC32C of
//! everything before it, so a torn write of the side-car is detected.
//!
//! Spec: `docs/PROTOCOL.md` [§2.4] (Resume: the record) and [§2.1] (The offer: part numbering and
//! lengths).
//!
//! [§2.4]: ../../../docs/PROTOCOL.md#24-resume
//! [§2.1]: ../../../docs/PROTOCOL.md#21-the-offer

use thiserror::Error;

const RECORD_MAGIC: [u8; 4] = *b"NTRS";
const RECORD_VERSION: u8 = 1;
const RECORD_HEADER: usize = 4 + 1 + 32 + 8 + 2;

/// The geometry of an offer: how many parts and how big each one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The file's length in bytes, from the offer.
    pub size: u64,
    /// Payload bytes of every part but the last; at least 1 when built with [`Layout::new`].
    pub part_size: u16,
}

impl Layout {
    /// A layout; `part_size` 0 is only meaningful for an empty file and is treated as 1 otherwise
    /// so that no arithmetic ever divides by zero.
    pub fn new(size: u64, part_size: u16) -> Self {
        Layout { size, part_size: part_size.max(1) }
    }

    /// `ceil(size / part_size)`; zero for an empty file. Saturates at u32::MAX parts (the part
    /// index is u32 on the wire; such a file cannot be offered meaningfully anyway).
    pub fn n_parts(&self) -> u32 {
        let n = self.size.div_ceil(u64::from(self.part_size));
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Byte offset of part `i` in the file.
    pub fn offset(&self, part: u32) -> u64 {
        u64::from(part) * u64::from(self.part_size)
    }

    /// Payload length of part `i`: `part_size` except the last, which holds the remainder. Zero
    /// for an index past the end.
    pub fn part_len(&self, part: u32) -> usize {
        let start = self.offset(part);
        if start >= self.size {
            return 0;
        }
        // Bounded by part_size (u16), so the cast cannot truncate.
        (self.size - start).min(u64::from(self.part_size)) as usize
    }
}

/// Why a saved resume record cannot be used for this offer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResumeError {
    /// Shorter than a header and CRC, or not the length the offer's bitmap needs; carries the
    /// record's length in bytes.
    #[error("resume record is truncated or has the wrong length ({0} bytes)")]
    BadLength(usize),
    /// Does not start with `NTRS`.
    #[error("not a natter resume record (bad magic)")]
    BadMagic,
    /// A version byte other than 1; carries the version found.
    #[error("resume record version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The trailing CRC32C does not match: a torn or damaged write.
    #[error("resume record is corrupt (checksum mismatch)")]
    Corrupt,
    /// A sound record, but for another offer: digest, size or part size differ (PROTOCOL 2.4,
    /// "Implementation note"). The download starts from scratch.
    #[error(
        "resume record belongs to another version of the file (digest, size or part size differ)"
    )]
    DifferentOffer,
}

/// A bitmap of arrived parts with a count and the length of the arrived in-order prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartMap {
    layout: Layout,
    bits: Vec<u8>,
    count: u32,
    /// Every part below this index has arrived; the part at it has not (or it equals n_parts).
    prefix: u32,
}

impl PartMap {
    /// An empty map for an offer.
    pub fn new(layout: Layout) -> Self {
        let n = layout.n_parts();
        PartMap { layout, bits: vec![0; n.div_ceil(8) as usize], count: 0, prefix: 0 }
    }

    /// The offer geometry this map was built for.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many parts the file has; see [`Layout::n_parts`].
    pub fn n_parts(&self) -> u32 {
        self.layout.n_parts()
    }

    /// How many parts have arrived.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether every part has arrived (true at once for an empty file).
    pub fn is_complete(&self) -> bool {
        self.count == self.n_parts()
    }

    /// Whether `part` has arrived; false for an index past the end.
    pub fn has(&self, part: u32) -> bool {
        part < self.n_parts() && self.bits[(part / 8) as usize] & (1 << (part % 8)) != 0
    }

    /// Marks `part` arrived; returns false if it already was (a duplicate) or is out of range.
    pub fn insert(&mut self, part: u32) -> bool {
        if part >= self.n_parts() || self.has(part) {
            return false;
        }
        self.bits[(part / 8) as usize] |= 1 << (part % 8);
        self.count += 1;
        while self.prefix < self.n_parts() && self.has(self.prefix) {
            self.prefix += 1;
        }
        true
    }

    /// Number of leading parts that have all arrived.
    pub fn prefix_parts(&self) -> u32 {
        self.prefix
    }

    /// Bytes of the file covered by the arrived in-order prefix.
    pub fn prefix_bytes(&self) -> u64 {
        self.layout.offset(self.prefix).min(self.layout.size)
    }

    /// The first missing part at or after `from`, if any.
    pub fn next_missing(&self, from: u32) -> Option<u32> {
        let n = self.n_parts();
        let mut i = from.max(self.prefix);
        while i < n {
            let byte = self.bits[(i / 8) as usize];
            if byte == 0xff && i.is_multiple_of(8) {
                i += 8;
                continue;
            }
            if byte & (1 << (i % 8)) == 0 {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// Bytes received so far (sum of the arrived parts' lengths).
    pub fn bytes(&self) -> u64 {
        let n = self.n_parts();
        if n == 0 {
            return 0;
        }
        let full = u64::from(self.count) * u64::from(self.layout.part_size);
        if self.has(n - 1) {
            full - u64::from(self.layout.part_size) + self.layout.part_len(n - 1) as u64
        } else {
            full
        }
    }

    /// The resume record for this map and the offer digest (see the module doc for the layout).
    pub fn save(&self, digest: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + self.bits.len() + 4);
        out.extend_from_slice(&RECORD_MAGIC);
        out.push(RECORD_VERSION);
        out.extend_from_slice(digest);
        out.extend_from_slice(&self.layout.size.to_be_bytes());
        out.extend_from_slice(&self.layout.part_size.to_be_bytes());
        out.extend_from_slice(&self.bits);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Loads a record written by [`PartMap::save`], refusing one from a different offer.
    pub fn load(layout: Layout, digest: &[u8; 32], record: &[u8]) -> Result<Self, ResumeError> {
        if record.len() < RECORD_HEADER + 4 {
            return Err(ResumeError::BadLength(record.len()));
        }
        if record[0..4] != RECORD_MAGIC {
            return Err(ResumeError::BadMagic);
        }
        if record[4] != RECORD_VERSION {
            return Err(ResumeError::UnsupportedVersion(record[4]));
        }
        let (body, crc) = record.split_at(record.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(ResumeError::Corrupt);
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&body[37..45]);
        let part_size = u16::from_be_bytes([body[45], body[46]]);
        if body[5..37] != digest[..]
            || u64::from_be_bytes(size) != layout.size
            || part_size != layout.part_size
        {
            return Err(ResumeError::DifferentOffer);
        }
        let mut map = PartMap::new(layout);
        let bits = &body[RECORD_HEADER..];
        if bits.len() != map.bits.len() {
            return Err(ResumeError::BadLength(record.len()));
        }
        for part in 0..map.n_parts() {
            if bits[(part / 8) as usize] & (1 << (part % 8)) != 0 {
                map.insert(part);
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    // U6 / PROTOCOL 2.3: resume record round trip and refusal of a different offer.
    use super::*;

    #[test]
    fn layout_arithmetic() {
        let l = Layout::new(2500, 1200);
        assert_eq!(l.n_parts(), 3);
        assert_eq!(l.part_len(0), 1200);
        assert_eq!(l.part_len(2), 100);
        assert_eq!(l.part_len(3), 0);
        assert_eq!(Layout::new(0, 1200).n_parts(), 0);
        assert_eq!(Layout::new(2400, 1200).part_len(1), 1200);
    }

    #[test]
    fn prefix_follows_inserts() {
        let mut m = PartMap::new(Layout::new(10_000, 1000));
        assert!(m.insert(1));
        assert_eq!(m.prefix_parts(), 0);
        assert!(!m.insert(1));
        assert!(!m.insert(10));
        assert!(m.insert(0));
        assert_eq!(m.prefix_parts(), 2);
        assert_eq!(m.prefix_bytes(), 2000);
        assert_eq!(m.next_missing(0), Some(2));
        for i in 2..10 {
            m.insert(i);
        }
        assert!(m.is_complete());
        assert_eq!(m.bytes(), 10_000);
        assert_eq!(m.prefix_bytes(), 10_000);
        assert_eq!(m.next_missing(0), None);
    }

    #[test]
    fn save_load_round_trip() {
        let layout = Layout::new(123_457, 517);
        let mut m = PartMap::new(layout);
        for i in (0..layout.n_parts()).filter(|i| i % 3 != 1) {
            m.insert(i);
        }
        let digest = [7u8; 32];
        let rec = m.save(&digest);
        assert_eq!(PartMap::load(layout, &digest, &rec), Ok(m.clone()));
    }

    #[test]
    fn load_refuses_other_offers_and_damage() {
        let layout = Layout::new(5000, 1000);
        let mut m = PartMap::new(layout);
        m.insert(3);
        let digest = [1u8; 32];
        let rec = m.save(&digest);
        assert_eq!(PartMap::load(layout, &[2u8; 32], &rec), Err(ResumeError::DifferentOffer));
        assert_eq!(
            PartMap::load(Layout::new(5001, 1000), &digest, &rec),
            Err(ResumeError::DifferentOffer)
        );
        assert_eq!(
            PartMap::load(Layout::new(5000, 999), &digest, &rec),
            Err(ResumeError::DifferentOffer)
        );
        let mut bad = rec.clone();
        bad[50] ^= 1;
        assert_eq!(PartMap::load(layout, &digest, &bad), Err(ResumeError::Corrupt));
        let mut bad = rec.clone();
        bad[0] = b'X';
        assert_eq!(PartMap::load(layout, &digest, &bad), Err(ResumeError::BadMagic));
        let mut bad = rec.clone();
        bad[4] = 9;
        assert_eq!(PartMap::load(layout, &digest, &bad), Err(ResumeError::UnsupportedVersion(9)));
        for cut in 0..rec.len() {
            assert!(PartMap::load(layout, &digest, &rec[..cut]).is_err());
        }
    }
}
