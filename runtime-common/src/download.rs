//! One download on the client's disk: the `.part` file, its resume record, the final rename.
//!
//! [`Download`] wraps the core's [`Receiver`] with the file work every runtime does the same way,
//! so a runtime only moves datagrams between a socket and these methods.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::{free_final_name, is_offerable_name};
use natter_core::chat::client::Offer;
use natter_core::transfer::receiver::{Receiver, ReceiverConfig, ReceiverState, TransferError};

/// How often the resume record is written while parts arrive: a process killed in between
/// requests at most this much again.
const SAVE_EVERY: Duration = Duration::from_millis(500);
/// Parts that continue the previous one are gathered up to this many bytes and written with one
/// `pwrite`. Why: parts mostly arrive in order, and one system call per 1200-byte part (ext4's
/// write path included) was a large share of the client's CPU at 1 Gbit/s, on a machine whose
/// CPU is the real bottleneck of a fast download.
const WRITE_GATHER: usize = 1 << 20;
/// Parts at least this large are written straight away: one call per 16 KiB or more costs
/// little, and gathering them would only add a copy of every byte (loopback uses 64 KB parts).
const GATHER_BELOW: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("the server offered an unsafe file name: {0:?}")]
    UnsafeName(String),
    #[error("cannot use the download folder {path}: {source}")]
    Folder { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot reach the server at {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server closed the connection")]
    Disconnected,
    #[error("download failed: {0}")]
    Transfer(String),
    #[error("network error: {0}")]
    Network(#[from] io::Error),
}

/// The outcome of a finished download.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    pub path: PathBuf,
    pub size: u64,
    /// Bytes that were already on disk from an interrupted attempt.
    pub resumed: u64,
    pub elapsed: Duration,
    pub parts_retransmitted: u64,
}

impl DownloadReport {
    /// Goodput in bytes per second: the bytes this run fetched over its wall time.
    pub fn goodput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        (self.size - self.resumed) as f64 / secs
    }
}

impl std::fmt::Display for DownloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "saved {} ({} bytes) in {:.3} s, {:.2} MB/s, blake3 verified",
            self.path.display(),
            self.size,
            self.elapsed.as_secs_f64(),
            self.goodput() / 1e6
        )?;
        if self.resumed > 0 {
            write!(f, ", resumed with {} bytes already on disk", self.resumed)?;
        }
        Ok(())
    }
}

/// The `.part` file and its resume record.
#[derive(Debug)]
pub struct DownloadFile {
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
    pub fn open(
        out_dir: &Path,
        name: &str,
        size: u64,
    ) -> Result<(Self, Option<Vec<u8>>), DownloadError> {
        // The client state machine already refuses hostile offers (S3); this is the last line of
        // defence before a name becomes a path.
        if !is_offerable_name(name) {
            return Err(DownloadError::UnsafeName(name.to_owned()));
        }
        std::fs::create_dir_all(out_dir).map_err(|source| DownloadError::Folder {
            path: out_dir.to_owned(),
            source,
        })?;
        let part_path = out_dir.join(format!("{name}.part"));
        let resume_path = out_dir.join(format!("{name}.part.resume"));
        let write_err = |source| DownloadError::Write {
            path: part_path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)
            .map_err(write_err)?;
        file.set_len(size).map_err(write_err)?;
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
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), DownloadError> {
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
    fn flush(&mut self) -> Result<(), DownloadError> {
        let result = self.persist();
        self.gathered.clear();
        result
    }

    /// Writes the gathered bytes to the file but keeps them (writing them again later is
    /// harmless), for callers that only hold `&self`.
    fn persist(&self) -> Result<(), DownloadError> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        self.write_through(self.gathered_at, &self.gathered)
    }

    fn write_through(&self, offset: u64, bytes: &[u8]) -> Result<(), DownloadError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|source| DownloadError::Write {
                path: self.part_path.clone(),
                source,
            })
    }

    /// The gathered (unwritten) bytes of `[offset, offset + len)`, when they hold all of it.
    fn gathered_range(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset.checked_sub(self.gathered_at)?).ok()?;
        self.gathered.get(start..start.checked_add(len)?)
    }

    /// Saves the resume record; flushes first, because the record promises that every part it
    /// lists is in the file.
    fn save_resume(&self, record: &[u8]) -> Result<(), DownloadError> {
        self.persist()?;
        // Written beside and renamed over, so a kill in the middle leaves the old record whole.
        let tmp = self.resume_path.with_extension("resume.tmp");
        std::fs::write(&tmp, record)
            .and_then(|()| std::fs::rename(&tmp, &self.resume_path))
            .map_err(|source| DownloadError::Write {
                path: self.resume_path.clone(),
                source,
            })
    }

    /// Feeds the receiver's in-order hash: from the gathered bytes or `just_written` when they
    /// hold the next range, else by reading the `.part` file back (parts that arrived out of
    /// order, or a resumed prefix).
    fn feed_hash(
        &mut self,
        receiver: &mut Receiver,
        just_written: Option<(u64, &[u8])>,
    ) -> Result<(), DownloadError> {
        let mut scratch = Vec::new();
        while let Some((offset, len)) = receiver.next_to_hash() {
            if let Some((at, bytes)) = just_written
                && at == offset
                && bytes.len() == len
            {
                receiver.hash(offset, bytes);
                continue;
            }
            match self.gathered_range(offset, len) {
                Some(bytes) => receiver.hash(offset, bytes),
                None => {
                    self.flush()?;
                    scratch.resize(len, 0);
                    self.file
                        .read_exact_at(&mut scratch, offset)
                        .map_err(|source| DownloadError::Write {
                            path: self.part_path.clone(),
                            source,
                        })?;
                    receiver.hash(offset, &scratch);
                }
            }
        }
        Ok(())
    }

    /// Moves the verified file to its final name (the first free `name (n).ext`).
    fn finish(mut self) -> Result<PathBuf, DownloadError> {
        self.flush()?;
        let final_name = free_final_name(&self.name, |candidate| {
            self.out_dir.join(candidate).exists()
        });
        let final_path = self.out_dir.join(final_name);
        std::fs::rename(&self.part_path, &final_path).map_err(|source| DownloadError::Write {
            path: final_path.clone(),
            source,
        })?;
        let _ = std::fs::remove_file(&self.resume_path);
        Ok(final_path)
    }

    /// Removes a download whose bytes are wrong: nothing is left under any name.
    fn discard(self) {
        let _ = std::fs::remove_file(&self.part_path);
        let _ = std::fs::remove_file(&self.resume_path);
    }
}

/// How the download of one offer ended.
#[derive(Debug)]
pub enum Attempt {
    Over(Result<DownloadReport, DownloadError>),
    /// No part of this size got through (U5): ask again with small parts.
    PartsTooLarge,
}

/// A download in progress: the receiver state machine plus its file.
#[derive(Debug)]
pub struct Download {
    receiver: Receiver,
    file: Option<DownloadFile>,
    started: Instant,
    last_save: Instant,
    dirty: bool,
    resumed: u64,
    size: u64,
}

impl Download {
    /// Starts (or resumes) the download of `offer` into `out_dir`.
    /// `give_up_after`: the download fails when no new part has arrived for this long.
    pub fn start(
        now: Instant,
        offer: &Offer,
        out_dir: &Path,
        give_up_after: Duration,
    ) -> Result<Self, DownloadError> {
        let (file, saved) = DownloadFile::open(out_dir, &offer.file, offer.size)?;
        let mut config =
            ReceiverConfig::new(offer.token, offer.size, offer.part_size, offer.blake3);
        config.give_up_after = give_up_after;
        let receiver = match saved
            .as_deref()
            .map(|saved| Receiver::resume(config.clone(), now, saved))
        {
            Some(Ok(receiver)) => receiver,
            // A record from another version of the file, or a damaged one: start afresh.
            Some(Err(_)) | None => Receiver::new(config, now),
        };
        let resumed = receiver.progress().bytes_received;
        let mut me = Self {
            receiver,
            file: Some(file),
            started: now,
            last_save: now,
            dirty: false,
            resumed,
            size: offer.size,
        };
        if let Some(file) = &mut me.file {
            file.feed_hash(&mut me.receiver, None)?;
        }
        Ok(me)
    }

    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// A datagram arrived from the server. `now` must be read for each datagram, not once per
    /// batch of reads: the congestion controller divides delivered bytes by the time between
    /// arrivals, and a batch stamped with one instant reads as an absurd bandwidth (we saw
    /// 100 GB/s estimates on loopback, then a window that overflowed the socket buffer).
    pub fn on_datagram(&mut self, now: Instant, buf: &[u8]) -> Result<(), DownloadError> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        if let Some(accept) = self.receiver.handle_datagram(now, buf) {
            let payload = &buf[accept.payload.clone()];
            file.write_at(accept.offset, payload)?;
            file.feed_hash(&mut self.receiver, Some((accept.offset, payload)))?;
            self.dirty = true;
        }
        self.maybe_save(now)
    }

    fn maybe_save(&mut self, now: Instant) -> Result<(), DownloadError> {
        if self.dirty && now.saturating_duration_since(self.last_save) >= SAVE_EVERY {
            if let (Some(file), ReceiverState::Running) = (&self.file, self.receiver.state()) {
                file.save_resume(&self.receiver.save_state())?;
            }
            self.last_save = now;
            self.dirty = false;
        }
        Ok(())
    }

    /// The next datagram to send now, if any.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.receiver.poll_transmit(now, buf)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.receiver.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DownloadError> {
        self.receiver.handle_timeout(now);
        self.maybe_save(now)
    }

    /// Saves the resume record now (before the process exits on purpose).
    pub fn save_now(&self) {
        if let Some(file) = &self.file {
            let _ = file.save_resume(&self.receiver.save_state());
        }
    }

    /// `Some` when this offer's download has ended: over (verified and in place, or failed), or
    /// to be asked for again with small parts because no large part got through (U5; the resume
    /// record is saved first). Call after the datagrams due now have been sent.
    pub fn finished(&mut self, now: Instant) -> Option<Attempt> {
        if let Some(result) = self.outcome(now) {
            return Some(Attempt::Over(result));
        }
        if self.receiver.parts_too_large(now) {
            self.save_now();
            return Some(Attempt::PartsTooLarge);
        }
        None
    }

    /// `Some` once the download is over: the file is in place and verified, or it failed. Call
    /// after the receiver's last datagram (FINISHED) has been sent.
    fn outcome(&mut self, now: Instant) -> Option<Result<DownloadReport, DownloadError>> {
        match self.receiver.state() {
            ReceiverState::Running => None,
            ReceiverState::Complete => {
                let file = self.file.take()?;
                Some(file.finish().map(|path| DownloadReport {
                    path,
                    size: self.size,
                    resumed: self.resumed,
                    elapsed: now.saturating_duration_since(self.started),
                    parts_retransmitted: self.receiver.progress().parts_retransmitted,
                }))
            }
            ReceiverState::Failed(err) => {
                let err = DownloadError::Transfer(err.to_string());
                if let Some(file) = self.file.take() {
                    if err_is_wrong_bytes(&self.receiver) {
                        file.discard();
                    } else {
                        file.save_resume(&self.receiver.save_state()).ok();
                    }
                }
                Some(Err(err))
            }
        }
    }
}

/// A digest mismatch means the bytes on disk are wrong: they must not be resumed from.
fn err_is_wrong_bytes(receiver: &Receiver) -> bool {
    matches!(
        receiver.state(),
        ReceiverState::Failed(TransferError::DigestMismatch)
    )
}
