//! The files of the client's downloads: each `.part` file with its resume record, the final
//! rename, the discard. [`DownloadFiles`] performs the file outputs of the core's
//! [`ClientDriver`] the same way on every runtime, so a runtime only moves datagrams between its
//! sockets and [`DownloadFiles::on_datagram`].
//!
//! `Downloads/` may hold things planted by someone else (a shared folder, an earlier hostile
//! download), so every step refuses to be redirected (PROTOCOL 2.3, issue 10):
//! - a `.part` file is created exclusively and opened without following a link (`O_NOFOLLOW`);
//!   an existing one is used only if it is a plain file with no other name (no hard link);
//! - it is locked (`flock`) so a second client cannot write into it at the same time;
//! - its size must fit the folder's free space before anything is written;
//! - it is fsynced before the final rename, which never replaces anything
//!   (`renameat2(RENAME_NOREPLACE)`), and the folder is fsynced after it;
//! - the resume record's temporary file is created exclusively too.
//!
//! A runtime may have verified files kept on a thread of their own ([`DownloadFiles::keep_in_background`]):
//! the fsyncs take the disk's time, 0.5 ms or more per file here, and on the loop's thread they
//! held up every other download (100 files of 100 KiB: 0.36 s against 0.26 s with the fsyncs off
//! the loop, issue 11).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use rustix::fs::{CWD, OFlags, RenameFlags};
use rustix::io::Errno;

use natter_core::chat::catalogue::{free_final_name, is_offerable_name};
use natter_core::driver::client::{ClientDriver, DownloadId, Input, Output};

/// Parts that continue the previous one are gathered up to this many bytes and written with one
/// `pwrite`. Why: parts mostly arrive in order, and one system call per 1200-byte part (ext4's
/// write path included) was a large share of the client's CPU at 1 Gbit/s, on a machine whose
/// CPU is the real bottleneck of a fast download.
const WRITE_GATHER: usize = 1 << 20;
/// Parts at least this large are written straight away: one call per 16 KiB or more costs
/// little, and gathering them would only add a copy of every byte (loopback uses 64 KB parts).
const GATHER_BELOW: usize = 16 << 10;

/// Every time this many more bytes of a download are hashed, their writeback to disk is started
/// (see [`DownloadFile::start_writeback`]).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// The largest resume record read back: one bit per part of the largest offer a client takes,
/// and the header. A bigger file beside a `.part` is not a record of ours.
const MAX_RECORD_BYTES: u64 = natter_core::chat::client::MAX_PARTS / 8 + 1024;

/// A failed file operation, with the path, as the person reads it.
fn io_error(what: &str, path: &Path, err: &io::Error) -> String {
    format!("cannot {what} {}: {err}", path.display())
}

/// Options that open `path` itself, never what a link there points to.
fn no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    // The flag's bits fit an i32: it is a C `int` flag.
    options.custom_flags(OFlags::NOFOLLOW.bits() as i32);
    options
}

fn is_errno(err: &io::Error, errno: Errno) -> bool {
    err.raw_os_error() == Some(errno.raw_os_error())
}

/// Opens `<name>.part` for writing: created if absent, else the one an earlier run left, as long
/// as it is a plain file with no other name; then locked against a second writer.
fn open_part_file(part_path: &Path) -> Result<File, String> {
    let refuse = |why: &str| format!("refusing to write {}: {why}", part_path.display());
    let file = match no_follow().read(true).write(true).create_new(true).open(part_path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            match no_follow().read(true).write(true).open(part_path) {
                Ok(file) => file,
                Err(err) if is_errno(&err, Errno::LOOP) => {
                    return Err(refuse("it is a symbolic link"));
                }
                Err(err) => return Err(io_error("write", part_path, &err)),
            }
        }
        Err(err) => return Err(io_error("create", part_path, &err)),
    };
    let meta = file.metadata().map_err(|err| io_error("inspect", part_path, &err))?;
    if !meta.file_type().is_file() {
        return Err(refuse("it is not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(refuse("it has other names (hard links), so writing it would change them"));
    }
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(refuse("another download is writing it right now"))
        }
        Err(std::fs::TryLockError::Error(err)) => Err(io_error("lock", part_path, &err)),
    }
}

/// Refuses a download that cannot fit: the bytes still to allocate against the folder's free
/// space. A sparse `.part` file would otherwise run the disk full halfway through.
fn check_free_space(dir: &Path, file: &File, size: u64) -> Result<(), String> {
    let allocated = file.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
    let needed = size.saturating_sub(allocated);
    let Ok(stats) = rustix::fs::statvfs(dir) else {
        return Ok(()); // a file system that cannot say: the write errors will
    };
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    if needed > free {
        return Err(format!(
            "not enough free space in {}: the file needs {needed} more bytes, {free} are free",
            dir.display()
        ));
    }
    Ok(())
}

/// Reads the resume record beside a `.part` file, without following a link and only up to the
/// size a record can have. Anything odd means "no record": the download starts afresh.
fn read_record(path: &Path) -> Option<Vec<u8>> {
    let file = no_follow().read(true).open(path).ok()?;
    if !file.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let mut record = Vec::new();
    file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut record).ok()?;
    (record.len() as u64 <= MAX_RECORD_BYTES).then_some(record)
}

/// Renames `from` to `to` unless `to` exists (as anything, a dangling link included). Falls back
/// to link-then-unlink on file systems without `RENAME_NOREPLACE`, which refuses the same way.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// The `.part` file and its resume record.
#[derive(Debug)]
struct DownloadFile {
    file: File,
    out_dir: PathBuf,
    name: String,
    part_path: PathBuf,
    resume_path: PathBuf,
    /// Bytes written by [`DownloadFile::write_at`] but not yet to the file, which start at
    /// `gathered_at`. Flushed before anything reads the file back or records what it holds.
    gathered: Vec<u8>,
    gathered_at: u64,
    /// The hashed prefix's end and how much of it was already sent towards the disk.
    hashed_to: u64,
    written_back_to: u64,
}

impl DownloadFile {
    /// Opens (or creates) `<out_dir>/<name>.part` and reads the resume record beside it, if any.
    fn open(out_dir: &Path, name: &str, size: u64) -> Result<(Self, Option<Vec<u8>>), String> {
        // The client state machine already refuses hostile offers (S3); this is the last line of
        // defence before a name becomes a path.
        if !is_offerable_name(name) {
            return Err(format!("the server offered an unsafe file name: {name:?}"));
        }
        std::fs::create_dir_all(out_dir)
            .map_err(|err| io_error("use the download folder", out_dir, &err))?;
        let part_path = out_dir.join(format!("{name}.part"));
        let resume_path = out_dir.join(format!("{name}.part.resume"));
        let file = open_part_file(&part_path)?;
        check_free_space(out_dir, &file, size)?;
        file.set_len(size).map_err(|err| io_error("write", &part_path, &err))?;
        let saved = read_record(&resume_path);
        let me = Self {
            file,
            out_dir: out_dir.to_owned(),
            name: name.to_owned(),
            part_path,
            resume_path,
            // A small file never gathers more than itself.
            gathered: Vec::with_capacity(
                usize::try_from(size).map_or(WRITE_GATHER, |size| size.min(WRITE_GATHER)),
            ),
            gathered_at: 0,
            hashed_to: 0,
            written_back_to: 0,
        };
        Ok((me, saved))
    }

    /// Writes `bytes` at `offset`, gathered with the previous write when it continues it.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let continues = offset == self.gathered_at + self.gathered.len() as u64;
        if !continues || self.gathered.len() + bytes.len() > WRITE_GATHER {
            self.flush()?;
            self.gathered_at = offset;
        }
        if bytes.len() >= GATHER_BELOW {
            self.flush()?;
            return self.write_through(offset, bytes);
        }
        self.gathered.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes the gathered bytes to the file and forgets them.
    fn flush(&mut self) -> Result<(), String> {
        let result = if self.gathered.is_empty() {
            Ok(())
        } else {
            self.write_through(self.gathered_at, &self.gathered)
        };
        self.gathered.clear();
        result
    }

    fn write_through(&self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|err| io_error("write", &self.part_path, &err))
    }

    /// The gathered (unwritten) bytes of `[offset, offset + len)`, when they hold all of it.
    fn gathered_range(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset.checked_sub(self.gathered_at)?).ok()?;
        self.gathered.get(start..start.checked_add(len)?)
    }

    /// Saves the resume record; flushes first, because the record promises that every part it
    /// lists is in the file.
    fn save_resume(&mut self, record: &[u8]) -> Result<(), String> {
        self.flush()?;
        // Written beside and renamed over, so a kill in the middle leaves the old record whole.
        // The temporary name is created afresh (whatever was there, a planted link included, is
        // removed, never followed); the rename replaces the record's name itself, never a target.
        let tmp = self.resume_path.with_extension("resume.tmp");
        match std::fs::remove_file(&tmp) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(io_error("replace", &tmp, &err));
            }
            _ => {}
        }
        no_follow()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| io::Write::write_all(&mut file, record))
            .and_then(|()| std::fs::rename(&tmp, &self.resume_path))
            .map_err(|err| io_error("write", &self.resume_path, &err))
    }

    /// Feeds the driver's in-order hash of download `id`: from `just_written` or the gathered
    /// bytes when they hold the next range, else by reading the `.part` file back (parts that
    /// arrived out of order, or a resumed prefix).
    fn feed_hash(
        &mut self,
        driver: &mut ClientDriver,
        id: DownloadId,
        just_written: Option<(u64, &[u8])>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), String> {
        while let Some((offset, len)) = driver.next_to_hash(id) {
            if let Some((at, bytes)) = just_written
                && at == offset
                && bytes.len() == len
            {
                driver.hash(id, offset, bytes);
                self.hashed_to = offset + len as u64;
                continue;
            }
            if let Some(bytes) = self.gathered_range(offset, len) {
                driver.hash(id, offset, bytes);
                self.hashed_to = offset + len as u64;
                continue;
            }
            self.flush()?;
            scratch.resize(len, 0);
            self.file
                .read_exact_at(scratch, offset)
                .map_err(|err| io_error("read", &self.part_path, &err))?;
            driver.hash(id, offset, scratch);
            self.hashed_to = offset + len as u64;
        }
        self.start_writeback();
        Ok(())
    }

    /// Starts the disk writeback of the hashed prefix, in steps of [`WRITEBACK_EVERY`], and lets
    /// the page cache drop those pages. Why: the verified file is fsynced before its rename, and
    /// without this all of it would be written back then, in one wait at the end (0.2 s more for
    /// 256 MiB on loopback). `POSIX_FADV_DONTNEED` starts writeback without waiting for it; the
    /// hashed bytes are not read again. Only an optimisation: errors are ignored.
    fn start_writeback(&mut self) {
        let flushed_to = if self.gathered.is_empty() { self.hashed_to } else { self.gathered_at };
        let upto = self.hashed_to.min(flushed_to);
        if upto.saturating_sub(self.written_back_to) >= WRITEBACK_EVERY {
            let len = std::num::NonZeroU64::new(upto - self.written_back_to);
            let advice = rustix::fs::Advice::DontNeed;
            let _ = rustix::fs::fadvise(&self.file, self.written_back_to, len, advice);
            self.written_back_to = upto;
        }
    }

    /// Moves the verified file to its final name (the first free `name (n).ext`): on disk first
    /// (fsync), then renamed without replacing anything, then the folder's entry on disk too.
    fn keep(mut self) -> Result<PathBuf, String> {
        self.flush()?;
        self.file.sync_data().map_err(|err| io_error("save", &self.part_path, &err))?;
        // The `.part` name must still be the file written: nobody swapped in another since.
        let opened =
            self.file.metadata().map_err(|err| io_error("inspect", &self.part_path, &err))?;
        let named = std::fs::symlink_metadata(&self.part_path)
            .map_err(|err| io_error("inspect", &self.part_path, &err))?;
        if (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
            return Err(format!(
                "refusing to rename {}: it was replaced while downloading",
                self.part_path.display()
            ));
        }
        // A name taken by anything, a dangling link included, is skipped; one taken between the
        // look and the rename makes the rename fail, and the next name is tried.
        let taken = |candidate: &str| self.out_dir.join(candidate).symlink_metadata().is_ok();
        let mut attempts = 0;
        let final_path = loop {
            let final_path = self.out_dir.join(free_final_name(&self.name, taken));
            match rename_no_replace(&self.part_path, &final_path) {
                Ok(()) => break final_path,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                    attempts += 1;
                }
                Err(err) => return Err(io_error("rename to", &final_path, &err)),
            }
        };
        // The new name is an entry of the folder: it lasts a crash once the folder is on disk.
        File::open(&self.out_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| io_error("save", &self.out_dir, &err))?;
        let _ = std::fs::remove_file(&self.resume_path);
        Ok(final_path)
    }

    /// Removes a download whose bytes are wrong: nothing is left under any name.
    fn discard(self) {
        let _ = std::fs::remove_file(&self.part_path);
        let _ = std::fs::remove_file(&self.resume_path);
    }
}

/// What became of one verified download's file: where it is kept, or why it could not be.
type Kept = (DownloadId, Result<PathBuf, String>);

/// A thread that keeps verified downloads ([`DownloadFile::keep`]) one after the other, and
/// calls `wake` after each, so that the runtime's loop comes for the result.
#[derive(Debug)]
struct Keeper {
    /// `None` only while dropping: the thread ends when this closes.
    jobs: Option<mpsc::Sender<(DownloadId, DownloadFile)>>,
    kept: mpsc::Receiver<Kept>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    fn start(wake: impl Fn() + Send + 'static) -> io::Result<Self> {
        let (jobs, queued) = mpsc::channel::<(DownloadId, DownloadFile)>();
        let (done, kept) = mpsc::channel();
        let thread = std::thread::Builder::new().name("natter-keep".into()).spawn(move || {
            for (id, file) in queued {
                if done.send((id, file.keep())).is_err() {
                    return;
                }
                wake();
            }
        })?;
        Ok(Self { jobs: Some(jobs), kept, thread: Some(thread) })
    }

    /// Hands `file` to the thread to keep; gives it back, to keep here, if the thread is gone.
    fn hand_over(&self, id: DownloadId, file: DownloadFile) -> Option<DownloadFile> {
        let Some(jobs) = &self.jobs else {
            return Some(file);
        };
        jobs.send((id, file)).err().map(|mpsc::SendError((_, file))| file)
    }
}

impl Drop for Keeper {
    /// Waits for the files handed over: a session that ends while one is being kept must not
    /// leave it half renamed.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The open files of every download of one client, by [`DownloadId`].
#[derive(Debug)]
pub struct DownloadFiles {
    out_dir: PathBuf,
    files: HashMap<DownloadId, DownloadFile>,
    /// For reading a `.part` file back into the hash.
    scratch: Vec<u8>,
    /// Keeps verified files off the runtime's thread, once the runtime asked for it.
    keeper: Option<Keeper>,
}

impl DownloadFiles {
    /// Downloads are saved in `out_dir` (created when the first one starts).
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self { out_dir: out_dir.into(), files: HashMap::new(), scratch: Vec::new(), keeper: None }
    }

    /// From now on a verified file is kept (fsync, rename, the folder's fsync) on a thread of its
    /// own, which calls `wake` once each is done; the runtime's loop then calls
    /// [`DownloadFiles::take_kept`]. Without this, [`DownloadFiles::perform`] keeps it there and then.
    /// A second call changes nothing: the first thread keeps on, with the results it holds.
    pub fn keep_in_background(&mut self, wake: impl Fn() + Send + 'static) -> io::Result<()> {
        if self.keeper.is_none() {
            self.keeper = Some(Keeper::start(wake)?);
        }
        Ok(())
    }

    /// Tells the driver about the files kept in the background since the last call.
    pub fn take_kept(&mut self, driver: &mut ClientDriver, now: Instant) {
        let Some(keeper) = &self.keeper else {
            return;
        };
        while let Ok((id, kept)) = keeper.kept.try_recv() {
            driver.handle_input(now, kept_input(id, kept));
        }
    }

    /// A datagram arrived on download `id`'s socket: the driver checks it, and an accepted part's
    /// payload is written where it goes and fed to the hash, straight from `buf`.
    pub fn on_datagram(
        &mut self,
        driver: &mut ClientDriver,
        now: Instant,
        id: DownloadId,
        buf: &mut [u8],
    ) {
        // A sealed datagram is decrypted in place (PROTOCOL 2.7).
        let Some(accept) = driver.handle_datagram(now, id, buf) else {
            return;
        };
        let (Some(file), Some(payload)) = (self.files.get_mut(&id), buf.get(accept.payload)) else {
            return;
        };
        let written = file.write_at(accept.offset, payload).and_then(|()| {
            file.feed_hash(driver, id, Some((accept.offset, payload)), &mut self.scratch)
        });
        if let Err(error) = written {
            driver.handle_input(now, Input::IoFailed { id, error });
        }
    }

    /// Performs the file work of `output` and tells the driver how it went. Returns the output
    /// when something is left for the runtime: a socket to open or close, bytes to send, something
    /// to show, the end of the session.
    pub fn perform(
        &mut self,
        driver: &mut ClientDriver,
        now: Instant,
        output: Output,
    ) -> Option<Output> {
        match output {
            Output::Open { id, ref file, size, .. } => {
                match DownloadFile::open(&self.out_dir, file, size) {
                    Ok((mut opened, resume)) => {
                        driver.handle_input(now, Input::Opened { id, resume });
                        // A resumed prefix is hashed from the file before new parts arrive.
                        let fed = opened.feed_hash(driver, id, None, &mut self.scratch);
                        self.files.insert(id, opened);
                        match fed {
                            Ok(()) => return Some(output),
                            Err(error) => driver.handle_input(now, Input::IoFailed { id, error }),
                        }
                    }
                    Err(error) => driver.handle_input(now, Input::IoFailed { id, error }),
                }
                None
            }
            Output::SaveRecord { id, record } => {
                if let Some(file) = self.files.get_mut(&id)
                    && let Err(error) = file.save_resume(&record)
                {
                    driver.handle_input(now, Input::IoFailed { id, error });
                }
                None
            }
            Output::Keep { id } => {
                let file = self.files.remove(&id)?;
                // Handed to the keeping thread, whose answer comes through `take_kept`; kept
                // here when there is none, or it is gone.
                let left_here = match &self.keeper {
                    Some(keeper) => keeper.hand_over(id, file),
                    None => Some(file),
                };
                if let Some(file) = left_here {
                    driver.handle_input(now, kept_input(id, file.keep()));
                }
                None
            }
            Output::Discard { id } => {
                if let Some(file) = self.files.remove(&id) {
                    file.discard();
                }
                None
            }
            Output::Release { id } => {
                if let Some(mut file) = self.files.remove(&id) {
                    // The driver saved what the record promises; the rest is only kept bytes.
                    let _ = file.flush();
                }
                Some(output)
            }
            other => Some(other),
        }
    }
}

/// The driver's input for a kept (or not) download.
fn kept_input(id: DownloadId, kept: Result<PathBuf, String>) -> Input<'static> {
    match kept {
        Ok(path) => Input::Saved { id, path: path.to_string_lossy().into_owned() },
        Err(error) => Input::IoFailed { id, error },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test panicking is a failing test
mod tests {
    // Issue 10, S3, PROTOCOL 2.3: what `Downloads/` may hold never redirects a download's writes.
    use super::*;
    use std::os::unix::fs::symlink;

    fn folder() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_part_file_planted_as_a_link_is_never_written_through() {
        // Before the fix the download wrote through the link into the other file.
        let dir = folder();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        symlink(&victim, dir.path().join("doc.bin.part")).unwrap();
        let err = DownloadFile::open(dir.path(), "doc.bin", 4096).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A dangling link is refused the same way, and creates nothing at its target.
        let nowhere = dir.path().join("nowhere");
        symlink(&nowhere, dir.path().join("new.bin.part")).unwrap();
        assert!(DownloadFile::open(dir.path(), "new.bin", 10).is_err());
        assert!(!nowhere.exists());
    }

    #[test]
    fn a_part_file_with_another_name_is_refused() {
        let dir = folder();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::hard_link(&victim, dir.path().join("doc.bin.part")).unwrap();
        let err = DownloadFile::open(dir.path(), "doc.bin", 4096).unwrap_err();
        assert!(err.contains("hard links"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_second_writer_is_locked_out() {
        let dir = folder();
        let (_first, _) = DownloadFile::open(dir.path(), "doc.bin", 100).unwrap();
        let err = DownloadFile::open(dir.path(), "doc.bin", 100).unwrap_err();
        assert!(err.contains("another download is writing it"), "{err}");
    }

    #[test]
    fn a_file_larger_than_the_free_space_is_refused_before_writing() {
        let dir = folder();
        let err = DownloadFile::open(dir.path(), "huge.bin", 1 << 60).unwrap_err();
        assert!(err.contains("not enough free space"), "{err}");
    }

    #[test]
    fn the_final_rename_never_replaces_or_follows_a_link() {
        let dir = folder();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        // The final name is taken by a link to another file, and `(1)` by a dangling link.
        symlink(&victim, dir.path().join("doc.bin")).unwrap();
        symlink(dir.path().join("nowhere"), dir.path().join("doc (1).bin")).unwrap();
        let (mut file, _) = DownloadFile::open(dir.path(), "doc.bin", 5).unwrap();
        file.write_at(0, b"hello").unwrap();
        let kept = file.keep().unwrap();
        assert_eq!(kept.file_name().unwrap(), "doc (2).bin");
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(dir.path().join("doc.bin")).unwrap().is_symlink());
        assert!(!dir.path().join("doc.bin.part").exists());
    }

    #[test]
    fn a_file_kept_in_the_background_is_renamed_and_the_loop_woken() {
        let dir = folder();
        let (woken, wakes) = mpsc::channel();
        let keeper = Keeper::start(move || woken.send(()).unwrap()).unwrap();
        let (mut file, _) = DownloadFile::open(dir.path(), "doc.bin", 5).unwrap();
        file.write_at(0, b"hello").unwrap();
        assert!(keeper.hand_over(7, file).is_none());
        wakes.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        let (id, kept) = keeper.kept.try_recv().unwrap();
        assert_eq!(id, 7);
        assert_eq!(std::fs::read(kept.unwrap()).unwrap(), b"hello");
        assert!(!dir.path().join("doc.bin.part").exists());
    }

    #[test]
    fn a_keeper_dropped_at_the_end_of_a_session_first_keeps_what_it_was_given() {
        let dir = folder();
        let keeper = Keeper::start(|| {}).unwrap();
        for name in ["a.bin", "b.bin", "c.bin"] {
            let (mut file, _) = DownloadFile::open(dir.path(), name, 3).unwrap();
            file.write_at(0, b"abc").unwrap();
            assert!(keeper.hand_over(1, file).is_none());
        }
        drop(keeper);
        for name in ["a.bin", "b.bin", "c.bin"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"abc", "{name}");
        }
    }

    #[test]
    fn a_part_file_swapped_for_a_link_while_downloading_is_not_renamed() {
        let dir = folder();
        let (file, _) = DownloadFile::open(dir.path(), "doc.bin", 5).unwrap();
        let part = dir.path().join("doc.bin.part");
        std::fs::remove_file(&part).unwrap();
        symlink(dir.path().join("elsewhere"), &part).unwrap();
        let err = file.keep().unwrap_err();
        assert!(err.contains("replaced while downloading"), "{err}");
        assert!(!dir.path().join("doc.bin").exists());
    }

    #[test]
    fn a_planted_record_link_is_not_followed_and_temp_names_fit_name_max() {
        // The longest name a client accepts: its `.part.resume.tmp` is exactly NAME_MAX (255).
        let name =
            format!("{}.bin", "n".repeat(natter_core::chat::client::MAX_FILE_NAME_BYTES - 4));
        let dir = folder();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        symlink(&victim, dir.path().join(format!("{name}.part.resume.tmp"))).unwrap();
        symlink(&victim, dir.path().join(format!("{name}.part.resume"))).unwrap();
        let (mut file, record) = DownloadFile::open(dir.path(), &name, 3).unwrap();
        assert_eq!(record, None, "a link is not a record");
        file.write_at(0, b"abc").unwrap();
        file.save_resume(b"record").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            std::fs::read(dir.path().join(format!("{name}.part.resume"))).unwrap(),
            b"record"
        );
        let kept = file.keep().unwrap();
        assert_eq!(std::fs::read(kept).unwrap(), b"abc");
        assert!(!dir.path().join(format!("{name}.part.resume")).exists());
    }
}
