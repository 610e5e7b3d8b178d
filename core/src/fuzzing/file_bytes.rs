//! The bytes of every file the client-side targets offer: byte `i` is `i * 31 % 251`, a pattern
//! with a period of 251 bytes (prime, so no part size lines up with it), built by copying slices
//! of one period rather than byte by byte: the targets make megabytes of it.

/// One period of the pattern.
const PERIOD: [u8; 251] = {
    let mut table = [0u8; 251];
    let mut i = 0;
    while i < 251 {
        table[i] = (i * 31 % 251) as u8;
        i += 1;
    }
    table
};

/// The file's bytes `offset .. offset + len`.
pub(crate) fn file_bytes(offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = (offset % PERIOD.len() as u64) as usize;
    while out.len() < len {
        let n = (PERIOD.len() - at).min(len - out.len());
        out.extend_from_slice(&PERIOD[at..at + n]);
        at = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::file_bytes;

    #[test]
    fn the_pattern_is_the_same_from_any_offset() {
        // P1: what a part carries must be the slice of the whole file the digest was taken over.
        let whole = file_bytes(0, 2000);
        assert_eq!(whole[..3], [0, 31, 62]);
        for offset in [0usize, 1, 250, 251, 252, 777] {
            assert_eq!(file_bytes(offset as u64, 600), whole[offset..offset + 600]);
        }
    }
}
