//! The files of the client's downloads: each `.part` file with its resume record, the final
//! rename, the discard. [`DownloadFiles`] performs the file outputs of the core's
//! [`ClientDriver`] the same way on every runtime, so a runtime only moves datagrams between its
//! sockets and [`DownloadFiles::on_datagram`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// A failed file operation, with the path, as the person reads it.
fn io_error(what: &str, path: &Path, err: &io::Error) -> String {
    format!("cannot {what} {}: {err}", path.display())
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)
            .and_then(|file| file.set_len(size).map(|()| file))
            .map_err(|err| io_error("write", &part_path, &err))?;
        let saved = std::fs::read(&resume_path).ok();
        let me = Self {
            file,
            out_dir: out_dir.to_owned(),
            name: name.to_owned(),
            part_path,
            resume_path,
            gathered: Vec::with_capacity(WRITE_GATHER),
            gathered_at: 0,
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
        let tmp = self.resume_path.with_extension("resume.tmp");
        std::fs::write(&tmp, record)
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
                continue;
            }
            if let Some(bytes) = self.gathered_range(offset, len) {
                driver.hash(id, offset, bytes);
                continue;
            }
            self.flush()?;
            scratch.resize(len, 0);
            self.file
                .read_exact_at(scratch, offset)
                .map_err(|err| io_error("read", &self.part_path, &err))?;
            driver.hash(id, offset, scratch);
        }
        Ok(())
    }

    /// Moves the verified file to its final name (the first free `name (n).ext`).
    fn keep(mut self) -> Result<PathBuf, String> {
        self.flush()?;
        let final_name =
            free_final_name(&self.name, |candidate| self.out_dir.join(candidate).exists());
        let final_path = self.out_dir.join(final_name);
        std::fs::rename(&self.part_path, &final_path)
            .map_err(|err| io_error("rename to", &final_path, &err))?;
        let _ = std::fs::remove_file(&self.resume_path);
        Ok(final_path)
    }

    /// Removes a download whose bytes are wrong: nothing is left under any name.
    fn discard(self) {
        let _ = std::fs::remove_file(&self.part_path);
        let _ = std::fs::remove_file(&self.resume_path);
    }
}

/// The open files of every download of one client, by [`DownloadId`].
#[derive(Debug)]
pub struct DownloadFiles {
    out_dir: PathBuf,
    files: HashMap<DownloadId, DownloadFile>,
    /// For reading a `.part` file back into the hash.
    scratch: Vec<u8>,
}

impl DownloadFiles {
    /// Downloads are saved in `out_dir` (created when the first one starts).
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self { out_dir: out_dir.into(), files: HashMap::new(), scratch: Vec::new() }
    }

    /// A datagram arrived on download `id`'s socket: the driver checks it, and an accepted part's
    /// payload is written where it goes and fed to the hash, straight from `buf`.
    pub fn on_datagram(
        &mut self,
        driver: &mut ClientDriver,
        now: Instant,
        id: DownloadId,
        buf: &[u8],
    ) {
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
                let input = match self.files.remove(&id).map(DownloadFile::keep) {
                    Some(Ok(path)) => {
                        Input::Saved { id, path: path.to_string_lossy().into_owned() }
                    }
                    Some(Err(error)) => Input::IoFailed { id, error },
                    None => return None,
                };
                driver.handle_input(now, input);
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
