//! One file being served: opened once per transfer, read part by part at its offset.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use natter_core::chat::catalogue::FileKey;

/// The identity the digest cache and the change check use: size, modification time, inode.
pub fn identity_of(meta: &std::fs::Metadata) -> FileKey {
    FileKey {
        size: meta.len(),
        mtime_secs: meta.mtime(),
        mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        inode: meta.ino(),
    }
}

/// A served file held open for one transfer.
#[derive(Debug)]
pub struct ServedFile {
    file: File,
    path: PathBuf,
    identity: FileKey,
}

impl ServedFile {
    /// Opens `name` in `folder`. `name` comes from the catalogue, which only holds names that the
    /// folder scan found as regular files, so joining it is safe; the link check is repeated here
    /// because the folder may have changed since the scan.
    pub fn open(folder: &Path, name: &str) -> io::Result<Self> {
        let path = folder.join(name);
        let before = std::fs::symlink_metadata(&path)?;
        if !before.file_type().is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let file = File::open(&path)?;
        let identity = identity_of(&file.metadata()?);
        if identity != identity_of(&before) {
            return Err(io::Error::other("the file was replaced while it was being opened"));
        }
        Ok(Self { file, path, identity })
    }

    pub fn identity(&self) -> FileKey {
        self.identity
    }

    /// Reads exactly `buf.len()` bytes at `offset` (one `pread`, no seek, no copy beyond the one
    /// into the datagram buffer).
    pub fn read_part(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Whether the file under the served name is no longer the one offered: edited, removed or
    /// replaced (by another file or a link). Costs one `lstat`.
    pub fn changed(&self) -> bool {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => !meta.file_type().is_file() || identity_of(&meta) != self.identity,
            Err(_) => true,
        }
    }
}
