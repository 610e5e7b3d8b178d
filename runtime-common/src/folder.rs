//! The served folder, read into a catalogue.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use natter_core::chat::catalogue::{Catalogue, DigestCache, FileEntry, FileKey, is_offerable_name};

use crate::served::identity_of;

/// The files on offer, and the identity each had when its digest was taken: a transfer compares
/// the file it opens against it, so an offer never serves bytes other than the ones it hashed.
#[derive(Debug, Default)]
pub struct ScannedFolder {
    pub catalogue: Catalogue,
    pub identities: HashMap<String, FileKey>,
}

/// Lists the files on offer in `folder` (PROTOCOL.md 1.4): regular files directly inside it whose
/// names the core accepts. Links and subfolders are skipped (S2). Digests come from `cache` when
/// the file's identity is unchanged, so a rescan of a folder of large files costs only `lstat`s
/// (S5); a new or changed file is hashed once.
pub fn scan_folder(folder: &Path, cache: &mut DigestCache) -> io::Result<ScannedFolder> {
    let mut entries = Vec::new();
    let mut identities = HashMap::new();
    for entry in std::fs::read_dir(folder)? {
        // One entry that cannot be read is skipped; it must not empty the whole catalogue.
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_offerable_name(&name) {
            continue;
        }
        let meta = match entry.path().symlink_metadata() {
            Ok(meta) if meta.file_type().is_file() => meta,
            _ => continue,
        };
        let identity = identity_of(&meta);
        let blake3 = match cache.get(&identity) {
            Some(digest) => digest,
            None => match hash_file(&entry.path()) {
                Ok(digest) => {
                    cache.insert(identity, digest);
                    digest
                }
                Err(err) => {
                    tracing::warn!("skipping {name}: {err}");
                    continue;
                }
            },
        };
        identities.insert(name.clone(), identity);
        entries.push(FileEntry { name, size: identity.size, blake3 });
    }
    // Forget digests of files that are gone, so the cache is bounded by the folder.
    cache.retain(&identities.values().copied().collect::<Vec<_>>());
    Ok(ScannedFolder { catalogue: Catalogue::from_entries(entries), identities })
}

/// The BLAKE3 digest of a file, read in large blocks.
pub fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

/// The first look at the served folder, before the server accepts anyone: every digest is ready
/// when the first `download_file` comes (a folder of large files is hashed once, here, instead of
/// stalling the first person who asks). A folder that cannot be read is served as empty, with a
/// warning, so a typo in `--files` does not keep the chat down.
pub fn initial_scan(folder: &Path) -> (ScannedFolder, DigestCache) {
    let mut digests = DigestCache::default();
    let scanned = scan_folder(folder, &mut digests).unwrap_or_else(|err| {
        tracing::warn!("cannot read the served folder {}: {err}", folder.display());
        ScannedFolder::default()
    });
    tracing::info!("offering {} files from {}", scanned.catalogue.len(), folder.display());
    (scanned, digests)
}

/// Looks at the served folder again every `every` on a thread of its own, so that hashing a new
/// or changed large file never stalls the chat or a transfer; hands each view that differs from
/// the last to `deliver`. Ends when `stop` is set or `deliver` says the server is gone.
pub fn watch_folder(
    folder: std::path::PathBuf,
    every: std::time::Duration,
    mut digests: DigestCache,
    mut last: HashMap<String, FileKey>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut deliver: impl FnMut(ScannedFolder) -> bool + Send + 'static,
) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    std::thread::Builder::new().name("natter-folder".into()).spawn(move || {
        loop {
            std::thread::sleep(every);
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match scan_folder(&folder, &mut digests) {
                Ok(scanned) if scanned.identities != last => {
                    tracing::info!(
                        "the served folder changed: {} files on offer",
                        scanned.catalogue.len()
                    );
                    last = scanned.identities.clone();
                    if !deliver(scanned) {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!("cannot read the served folder {}: {err}", folder.display())
                }
            }
        }
    })?;
    Ok(())
}
