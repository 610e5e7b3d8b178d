//! One transfer on the server's side: the core's [`Sender`], the file it reads parts from, and the
//! datagram buffer parts are read into. Both runtimes drive it the same way: datagrams in through
//! [`Upload::on_datagram`], datagrams out through [`Upload::next_datagram`] until it returns `None`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::FileKey;
use natter_core::chat::server::TransferOffer;
use natter_core::transfer::sender::{Sender, SenderConfig, SenderEnd, SenderOutput};
use natter_core::wire::datagram::{PART_HEADER_LEN, seal_part};

use crate::served::ServedFile;

/// How often the served file is checked for a change while parts are being sent (one `lstat`).
const CHANGE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// The largest datagram natter sends: a 65000-byte part and its header.
pub const MAX_DATAGRAM: usize = PART_HEADER_LEN + 65_000;

/// How many datagrams [`Upload::fill_batch`] prepares for one `sendmmsg`. Why batch: at
/// 1 Gbit/s with 1500-byte packets the server makes ~85k sends a second, and on a machine whose
/// two cores are shared the per-call cost is throughput lost; 32 per call makes it negligible
/// while a batch (48 KB at MTU 1500) stays well under one bottleneck buffer.
pub const SEND_BATCH: usize = 32;

/// A batch also ends once it holds this many bytes. Why: the buffers of a batch are the
/// server's working set; 32 loopback parts of 64 KB would be 2 MB, out of the CPU's cache by
/// the time the kernel copies them, where one part per call (a buffer that stays hot) was
/// faster. Large parts gain little from batching anyway: the copy dwarfs the call.
const SEND_BATCH_BYTES: usize = 64 << 10;

#[derive(Debug)]
pub struct Upload {
    sender: Sender,
    token: u64,
    file: Option<ServedFile>,
    buf: Vec<u8>,
    /// The datagram in `buf` that the socket refused (would block), to send again first.
    unsent: Option<(SocketAddr, usize)>,
    last_len: Option<(SocketAddr, usize)>,
    last_check: Instant,
    end: Option<SenderEnd>,
    /// Datagrams prepared by [`Upload::fill_batch`]: `batch[i]` holds the one that goes to
    /// `batch_meta[i].0`, `batch_meta[i].1` bytes long. Each buffer is sized for this transfer's
    /// parts.
    batch: Vec<Vec<u8>>,
    batch_meta: Vec<(SocketAddr, usize)>,
    part_size: u16,
}

impl Upload {
    /// Starts serving `offer` from `folder`. `identity` is the file's identity when its digest
    /// was taken; a file that differs now is answered with ABORT 1 (U7), never with other bytes.
    pub fn start(
        now: Instant,
        offer: &TransferOffer,
        folder: &Path,
        identity: Option<FileKey>,
        idle_timeout: Duration,
    ) -> Self {
        let config = SenderConfig {
            token: offer.token,
            peer_ip: offer.peer_ip,
            size: offer.size,
            part_size: offer.part_size,
            idle_timeout,
        };
        let mut sender = Sender::new(config, now);
        let file = match ServedFile::open(folder, &offer.file) {
            Ok(file) if Some(file.identity()) == identity => Some(file),
            Ok(_) | Err(_) => {
                sender.file_changed();
                None
            }
        };
        Self {
            sender,
            token: offer.token,
            file,
            buf: vec![0; MAX_DATAGRAM],
            unsent: None,
            last_len: None,
            last_check: now,
            end: None,
            batch: Vec::new(),
            batch_meta: Vec::new(),
            part_size: offer.part_size,
        }
    }

    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.sender.handle_datagram(now, from, datagram);
    }

    /// The next datagram to send now. When the socket would block, call [`Upload::unsend`] and the
    /// same datagram comes back first next time.
    pub fn next_datagram(&mut self, now: Instant) -> Option<(SocketAddr, &[u8])> {
        if let Some((to, len)) = self.unsent.take() {
            self.last_len = Some((to, len));
            return Some((to, &self.buf[..len]));
        }
        self.check_file(now);
        let (to, len) = produce(
            &mut self.sender,
            &mut self.file,
            &mut self.end,
            self.token,
            &mut self.buf,
        )?;
        self.last_len = Some((to, len));
        Some((to, &self.buf[..len]))
    }

    /// Prepares up to [`SEND_BATCH`] datagrams (the ones a short send left over come first) and
    /// returns them with where each goes, for one `sendmmsg`; then call [`Upload::batch_sent`]
    /// with how many went out. Do not mix with [`Upload::next_datagram`] on one transfer.
    pub fn fill_batch(&mut self, now: Instant) -> Vec<(SocketAddr, &[u8])> {
        self.check_file(now);
        let buf_len = (PART_HEADER_LEN + usize::from(self.part_size)).min(MAX_DATAGRAM);
        let mut bytes: usize = self.batch_meta.iter().map(|&(_, len)| len).sum();
        while self.batch_meta.len() < SEND_BATCH && bytes < SEND_BATCH_BYTES {
            let i = self.batch_meta.len();
            if self.batch.len() <= i {
                self.batch.push(vec![0; buf_len]);
            }
            let Some(meta) = produce(
                &mut self.sender,
                &mut self.file,
                &mut self.end,
                self.token,
                &mut self.batch[i],
            ) else {
                break;
            };
            bytes += meta.1;
            self.batch_meta.push(meta);
        }
        self.batch
            .iter()
            .zip(&self.batch_meta)
            .map(|(buf, &(to, len))| (to, &buf[..len]))
            .collect()
    }

    /// The first `n` datagrams of the last [`Upload::fill_batch`] were sent (or are given up on:
    /// a datagram the network refused counts as lost, and loss detection asks again).
    pub fn batch_sent(&mut self, n: usize) {
        let n = n.min(self.batch_meta.len());
        self.batch_meta.drain(..n);
        self.batch.rotate_left(n);
    }

    fn check_file(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_check) >= CHANGE_CHECK_EVERY {
            self.last_check = now;
            if self.file.as_ref().is_some_and(ServedFile::changed) {
                self.file = None;
                self.sender.file_changed();
            }
        }
    }

    /// The datagram last returned by [`Upload::next_datagram`] was not sent: keep it.
    pub fn unsend(&mut self) {
        self.unsent = self.last_len.take();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sender.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.sender.handle_timeout(now);
    }

    /// `Some` once the transfer is over and its port can be freed.
    pub fn end(&self) -> Option<&SenderEnd> {
        if self.unsent.is_some() || !self.batch_meta.is_empty() {
            None
        } else {
            self.end.as_ref()
        }
    }
}

/// Asks the sender for its next output and writes the datagram into `buf` (reading the part from
/// `file`); returns where it goes and its length. `None`: nothing to send now.
fn produce(
    sender: &mut Sender,
    file: &mut Option<ServedFile>,
    end: &mut Option<SenderEnd>,
    token: u64,
    buf: &mut [u8],
) -> Option<(SocketAddr, usize)> {
    loop {
        match sender.poll_output()? {
            SenderOutput::SendPart {
                to,
                req_seq,
                part,
                offset,
                len,
            } => {
                let Some(f) = file.as_ref() else { continue };
                let Some(payload) = buf.get_mut(PART_HEADER_LEN..PART_HEADER_LEN + len) else {
                    continue;
                };
                if f.read_part(offset, payload).is_err() {
                    // Shorter than offered: it changed under us.
                    *file = None;
                    sender.file_changed();
                    continue;
                }
                return Some((to, seal_part(buf, token, req_seq, part, len)));
            }
            SenderOutput::SendDatagram { to, bytes } => {
                let len = bytes.len().min(buf.len());
                buf[..len].copy_from_slice(&bytes[..len]);
                return Some((to, len));
            }
            SenderOutput::Done(e) => *end = Some(e),
        }
    }
}
