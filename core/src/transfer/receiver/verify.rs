//! Verification: the BLAKE3 digest of the whole file, hashed in order as the received prefix grows.
//!
//! Parts arrive in any order, but BLAKE3 hashes in order, so the receiver keeps a hash cursor and
//! asks its owner for the bytes between the cursor and the end of the arrived prefix
//! ([`Receiver::next_to_hash`]), taken from the payload just written or read back from the
//! `.part` file (after a resume, or when a gap just closed). When the last part has arrived the
//! digest is already known: no second pass over the file is needed. It either matches the offer
//! (the download is complete and FINISHED goes out) or the download fails with
//! [`TransferError::DigestMismatch`].
//!
//! Spec: `docs/PROTOCOL.md` [§2.3] (The client's side of a download: the digest in file order, and
//! what a match or a mismatch leads to) and [§2.4] (Resume: hashing restarts from the file on
//! disk).
//!
//! [§2.3]: ../../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download
//! [§2.4]: ../../../../docs/PROTOCOL.md#24-resume

use super::requests::FINISHED_COPIES;
use super::{Receiver, ReceiverEvent, ReceiverState, TransferError};

/// The largest chunk [`Receiver::next_to_hash`] asks for, so a runtime reading back its `.part`
/// file needs a bounded buffer.
pub const HASH_CHUNK: usize = 1 << 20;

impl Receiver {
    /// The file range `[offset, offset + len)` that has arrived but is not hashed yet, starting at
    /// the hash cursor. Feed it with [`Receiver::hash`]: from the buffer when it is the payload just
    /// written, else by reading the `.part` file back (after a resume, or when a gap just closed).
    pub fn next_to_hash(&self) -> Option<(u64, usize)> {
        let prefix = self.map.prefix_bytes();
        (self.hashed < prefix && self.state == ReceiverState::Running).then(|| {
            let len = (prefix - self.hashed).min(HASH_CHUNK as u64) as usize;
            (self.hashed, len)
        })
    }

    /// Hashes `bytes`, which are the file's bytes at `offset`. Only the part at the hash cursor and
    /// within the arrived prefix is used; anything else is ignored, so a confused caller cannot
    /// make the digest cover bytes that never arrived.
    pub fn hash(&mut self, offset: u64, bytes: &[u8]) {
        if offset != self.hashed || self.state != ReceiverState::Running {
            return;
        }
        let n = (self.map.prefix_bytes() - self.hashed).min(bytes.len() as u64) as usize;
        self.hasher.update(&bytes[..n]);
        self.hashed += n as u64;
        self.check_complete();
    }

    /// Once every part has arrived and every byte is hashed, compares the digest with the offer's:
    /// complete (and FINISHED due) or failed.
    pub(super) fn check_complete(&mut self) {
        if self.state != ReceiverState::Running
            || !self.map.is_complete()
            || self.hashed != self.layout.size
        {
            return;
        }
        if *self.hasher.finalize().as_bytes() == self.config.blake3 {
            self.state = ReceiverState::Complete;
            self.finished_left = FINISHED_COPIES;
            self.events.push_back(ReceiverEvent::Complete);
        } else {
            self.fail(TransferError::DigestMismatch);
        }
    }
}
