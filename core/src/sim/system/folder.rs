//! The in-memory folders: the server's, whose files have an identity that changes with every
//! edit (U7) and make the catalogue it is handed when it is scanned, and a client's download
//! folder ([`DownloadFolder`]: kept files, `.part` files, resume records), which outlives the
//! client program that writes it (U6).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{SimFile, World};
use crate::chat::catalogue::{Catalogue, FileEntry, FileKey};
use crate::driver::server::Input;

/// A file of the folder: its bytes and its identity (which changes with every edit).
#[derive(Debug)]
pub(super) struct FolderFile {
    pub(super) content: Vec<u8>,
    pub(super) key: FileKey,
}

/// The folder as the run starts: every file with an identity of its own.
pub(super) fn folder_of(files: &[SimFile]) -> BTreeMap<String, FolderFile> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let key = FileKey {
                size: f.content.len() as u64,
                mtime_secs: 0,
                mtime_nanos: 0,
                inode: i as u64 + 1,
            };
            let file = FolderFile { content: f.content.clone(), key };
            (f.name.clone(), file)
        })
        .collect()
}

/// The catalogue of the folder as it is now, and each file's identity.
pub(super) fn catalogue_of(
    folder: &BTreeMap<String, FolderFile>,
) -> (Catalogue, HashMap<String, FileKey>) {
    let entries = folder
        .iter()
        .map(|(name, f)| FileEntry {
            name: name.clone(),
            size: f.content.len() as u64,
            blake3: *blake3::hash(&f.content).as_bytes(),
        })
        .collect();
    let identities = folder.iter().map(|(n, f)| (n.clone(), f.key)).collect();
    (Catalogue::from_entries(entries), identities)
}

impl World {
    pub(super) fn change_file(&mut self, index: usize) {
        let Some(change) = self.changes.get(index).cloned() else {
            return;
        };
        let Some(file) = self.folder.get_mut(&change.name) else {
            return;
        };
        file.key.size = change.content.len() as u64;
        file.key.mtime_secs += 1;
        file.content = change.content;
        let name = change.name;
        self.note(|| format!("[folder] {name} changed"));
        let (catalogue, identities) = catalogue_of(&self.folder);
        let now = self.now();
        self.driver
            .handle_input(now, Input::Folder { catalogue: &catalogue, identities: &identities });
        self.perform();
    }
}

/// A client's download folder, in memory: what a real client leaves in its `Downloads/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadFolder {
    /// Verified files under their final names (`name (1).ext` when the name was taken).
    pub files: BTreeMap<String, Vec<u8>>,
    /// `<file>.part`: the bytes of a download not verified yet, by the name of the file.
    pub parts: BTreeMap<String, Vec<u8>>,
    /// `<file>.part.resume`: the last resume record saved beside a `.part` file.
    pub records: BTreeMap<String, SavedRecord>,
}

/// A resume record as saved, with the parts it lists (as the simulator saw them accepted up to the
/// moment it was saved: the record itself is the receiver's business).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedRecord {
    /// The record, as the client driver handed it over.
    pub bytes: Vec<u8>,
    /// The parts it lists.
    pub parts: BTreeSet<u32>,
}
