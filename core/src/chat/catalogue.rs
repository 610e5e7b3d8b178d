//! The files on offer as plain data (PROTOCOL.md 1.4), and the pure helpers a runtime needs around
//! them: which directory entries may be offered, the digest cache, and the `name (1).ext` rule.
//!
//! Safety rests on one idea (S1): a file name from the network is only ever a *key* into
//! [`Catalogue`], never a piece of a path. The runtime builds the catalogue by listing its folder
//! and keeping entries that pass [`is_offerable_name`] and are regular files; `download_file ../x`
//! then fails simply because no key `../x` exists.
//!
//! Spec: `docs/PROTOCOL.md` [§1.4] (The files on offer) and, for the final name of a download,
//! [§2.3] (The client's side of a download).
//!
//! [§1.4]: ../../../docs/PROTOCOL.md#14-the-files-on-offer
//! [§2.3]: ../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download

use std::collections::{BTreeMap, HashMap};

/// One file on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The name as listed in `CHOOSE_FILE` and matched, byte for byte, by `download_file`.
    pub name: String,
    /// The file's length in bytes when it was listed; the offer's `size`.
    pub size: u64,
    /// BLAKE3 digest of the whole file when it was listed; the offer's `blake3`.
    pub blake3: [u8; 32],
}

/// The files on offer, keyed by name. `BTreeMap<String, _>` orders keys by their bytes, which is
/// exactly the order `CHOOSE_FILE` must list them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    files: BTreeMap<String, FileEntry>,
}

impl Catalogue {
    /// Builds a catalogue, silently leaving out entries whose name is not offerable (a runtime
    /// should not hand those in; this keeps the invariant even if one does). A later duplicate
    /// name replaces an earlier one.
    pub fn from_entries(entries: Vec<FileEntry>) -> Self {
        let files = entries
            .into_iter()
            .filter(|e| is_offerable_name(&e.name))
            .map(|e| (e.name.clone(), e))
            .collect();
        Self { files }
    }

    /// The entry for exactly this name, if it is on offer.
    pub fn get(&self, name: &str) -> Option<&FileEntry> {
        self.files.get(name)
    }

    /// The names on offer, sorted by bytes.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// How many files are on offer.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is on offer (`CHOOSE_FILE` alone on its line).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// PROTOCOL 1.4: non-empty, no whitespace or control characters, no `/` or `\`, not starting with
/// `.` (which also rules out `.` and `..`). Applied by the server to what it offers and by the
/// client to what it is offered (S3).
pub fn is_offerable_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '\\')
}

/// What identifies one version of a file on disk without reading it (S5). If any of these change,
/// the content may have changed and the digest is computed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The file's length in bytes.
    pub size: u64,
    /// Modification time: seconds since the Unix epoch (may be negative) ...
    pub mtime_secs: i64,
    /// ... and the nanoseconds within that second.
    pub mtime_nanos: u32,
    /// The inode number, so a file replaced by another of the same size and time is hashed again.
    pub inode: u64,
}

/// BLAKE3 digests by file identity, so a large file asked for again and again is hashed once (S5).
/// Bounded: at most `capacity` entries; when full, an arbitrary old entry is evicted (a rescan
/// calls [`DigestCache::retain`] with the live keys anyway, so the bound only matters for folders
/// with more files than the capacity).
#[derive(Debug, Clone)]
pub struct DigestCache {
    map: HashMap<FileKey, [u8; 32]>,
    capacity: usize,
}

impl Default for DigestCache {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl DigestCache {
    /// An empty cache holding at most `capacity` digests (at least 1); the default is 4096.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { map: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The digest cached for exactly this file identity, if any.
    pub fn get(&self, key: &FileKey) -> Option<[u8; 32]> {
        self.map.get(key).copied()
    }

    /// Caches `digest` for `key`, evicting an arbitrary entry first when the cache is full.
    pub fn insert(&mut self, key: FileKey, digest: [u8; 32]) {
        let full = self.map.len() >= self.capacity && !self.map.contains_key(&key);
        if let Some(victim) = self.map.keys().next().copied().filter(|_| full) {
            self.map.remove(&victim);
        }
        self.map.insert(key, digest);
    }

    /// The cached digest, or `compute()`'s result, cached. Errors are not cached.
    pub fn get_or_compute<E>(
        &mut self,
        key: FileKey,
        compute: impl FnOnce() -> Result<[u8; 32], E>,
    ) -> Result<[u8; 32], E> {
        if let Some(d) = self.get(&key) {
            return Ok(d);
        }
        let d = compute()?;
        self.insert(key, d);
        Ok(d)
    }

    /// Drops every entry whose key is not in `live` (call after listing the folder).
    pub fn retain(&mut self, live: &[FileKey]) {
        self.map.retain(|k, _| live.contains(k));
    }

    /// How many digests are cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no digest is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The names a finished download may take, in order (PROTOCOL 2.3): `photo.jpg`, `photo (1).jpg`,
/// `photo (2).jpg`, ...; without an extension `notes`, `notes (1)`, .... The extension is what
/// follows the last `.`, unless that dot is the first character (`.bashrc` has no extension).
pub fn final_name_candidates(file: &str) -> impl Iterator<Item = String> + '_ {
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (&file[..i], &file[i..]),
        _ => (file, ""),
    };
    std::iter::once(file.to_owned()).chain((1u64..).map(move |n| format!("{stem} ({n}){ext}")))
}

/// The first candidate from [`final_name_candidates`] for which `exists` says no.
pub fn free_final_name(file: &str, exists: impl Fn(&str) -> bool) -> String {
    final_name_candidates(file)
        .find(|candidate| !exists(candidate))
        .unwrap_or_else(|| file.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on purpose
mod tests {
    use super::*;

    fn entry(name: &str) -> FileEntry {
        FileEntry { name: name.into(), size: 1, blake3: [0; 32] }
    }

    #[test]
    fn offerable_names() {
        // PROTOCOL 1.4, S1, S2
        for ok in ["hello.c", "alice.jpg", "a", "résumé.pdf", "x..y"] {
            assert!(is_offerable_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".bashrc",
            "../x",
            "a/b",
            "a\\b",
            "a b",
            "a\tb",
            "a\nb",
            "nul\0",
            "esc\u{1b}",
            "sep\u{2028}",
            "nbsp\u{a0}x",
            "\\..\\",
        ] {
            assert!(!is_offerable_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn catalogue_is_sorted_by_bytes_and_filters() {
        let c = Catalogue::from_entries(vec![
            entry("b"),
            entry("B"),
            entry("a"),
            entry("../x"),
            entry("é"),
        ]);
        assert_eq!(c.names().collect::<Vec<_>>(), ["B", "a", "b", "é"]);
        assert!(c.get("../x").is_none());
        assert_eq!(c.get("a").map(|e| e.size), Some(1));
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn digest_cache_hits_and_misses() {
        // S5: same identity -> computed once; a changed mtime -> computed again.
        let mut cache = DigestCache::with_capacity(2);
        let k = FileKey { size: 10, mtime_secs: 5, mtime_nanos: 7, inode: 42 };
        let mut calls = 0;
        for _ in 0..3 {
            let d = cache.get_or_compute(k, || -> Result<_, ()> {
                calls += 1;
                Ok([1; 32])
            });
            assert_eq!(d, Ok([1; 32]));
        }
        assert_eq!(calls, 1);
        let changed = FileKey { mtime_nanos: 8, ..k };
        assert_eq!(cache.get(&changed), None);
        assert_eq!(cache.get_or_compute(changed, || Err::<[u8; 32], _>("io")), Err("io"));
        assert_eq!(cache.len(), 1, "errors are not cached");
        cache.insert(changed, [2; 32]);
        cache.insert(FileKey { inode: 1, ..k }, [3; 32]);
        assert_eq!(cache.len(), 2, "bounded by capacity");
        cache.insert(changed, [2; 32]);
        cache.retain(&[changed]);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&changed), Some([2; 32]));
    }

    #[test]
    fn final_names() {
        // PROTOCOL 2.3
        let c: Vec<_> = final_name_candidates("photo.jpg").take(3).collect();
        assert_eq!(c, ["photo.jpg", "photo (1).jpg", "photo (2).jpg"]);
        let c: Vec<_> = final_name_candidates("notes").take(2).collect();
        assert_eq!(c, ["notes", "notes (1)"]);
        let c: Vec<_> = final_name_candidates("a.tar.gz").take(2).collect();
        assert_eq!(c, ["a.tar.gz", "a.tar (1).gz"]);
        let taken = ["photo.jpg", "photo (1).jpg"];
        assert_eq!(free_final_name("photo.jpg", |n| taken.contains(&n)), "photo (2).jpg");
        assert_eq!(free_final_name("new.txt", |n| taken.contains(&n)), "new.txt");
    }
}
