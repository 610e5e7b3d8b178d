//! One transfer on the server's side: the core's [`Sender`], the file it reads parts from, and the
//! datagram buffer parts are read into. Both runtimes drive it the same way: datagrams in through
//! [`Upload::on_datagram`], datagrams out through [`Upload::send_due`] until it has sent all.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::FileKey;
use natter_core::chat::server::TransferOffer;
use natter_core::transfer::sender::{Sender, SenderConfig, SenderEnd, SenderOutput};
use natter_core::wire::datagram::{PART_HEADER_LEN, seal_part};

use crate::net::{self, SendBatch, UdpSender};
use crate::served::ServedFile;

/// How often the served file is checked for a change while parts are being sent (one `lstat`).
const CHANGE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// The largest datagram natter sends: a 65000-byte part and its header.
pub const MAX_DATAGRAM: usize = PART_HEADER_LEN + 65_000;

/// How many datagrams [`Upload::send_due`] prepares for one system call: as many as one UDP GSO
/// send may carry. Why batch: at 1 Gbit/s with 1500-byte packets the server makes ~85k sends a
/// second, and on a machine whose two cores are shared the per-packet cost is throughput lost.
pub const SEND_BATCH: usize = 64;

/// A batch also ends before it passes this many bytes (but holds at least one datagram). Why:
/// a GSO send must fit one IP packet, and the buffers of a batch are the server's working set:
/// 32 loopback parts of 64 KB would be 2 MB, out of the CPU's cache by the time the kernel
/// copies them, where one part per call (a buffer that stays hot) was faster.
const SEND_BATCH_BYTES: usize = net::GSO_MAX_BYTES;

#[derive(Debug)]
pub struct Upload {
    sender: Sender,
    token: u64,
    file: Option<ServedFile>,
    last_check: Instant,
    end: Option<SenderEnd>,
    /// Datagrams prepared for the next send, one every `stride` bytes (a part with its header):
    /// the one at `batch[i * stride..]` goes to `batch_meta[i].0`, `batch_meta[i].1` bytes long.
    /// Laid out so because a run of them is one GSO send as it is.
    batch: Vec<u8>,
    batch_meta: Vec<(SocketAddr, usize)>,
    stride: usize,
    /// Made on the first send, when the socket is known.
    udp: Option<UdpSender>,
    peer_ip: std::net::IpAddr,
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
            last_check: now,
            end: None,
            batch: Vec::new(),
            batch_meta: Vec::new(),
            stride: (PART_HEADER_LEN + usize::from(offer.part_size)).min(MAX_DATAGRAM),
            udp: None,
            peer_ip: offer.peer_ip,
        }
    }

    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.sender.handle_datagram(now, from, datagram);
    }

    /// Sends every datagram due now on `socket`, a batch per system call. `Err(WouldBlock)`: the
    /// socket's buffer is full; wait until it is writable and call again (the datagrams not sent
    /// are kept, in order). Any other error loses one datagram, as the network might: loss
    /// detection asks for it again.
    pub fn send_due<S: AsFd>(&mut self, now: Instant, socket: &S) -> io::Result<()> {
        let peer_ip = self.peer_ip;
        let udp = self
            .udp
            .get_or_insert_with(|| UdpSender::new(socket, peer_ip));
        loop {
            fill_batch(
                now,
                &mut self.sender,
                &mut self.file,
                &mut self.end,
                &mut self.last_check,
                self.token,
                self.stride,
                &mut self.batch,
                &mut self.batch_meta,
            );
            if self.batch_meta.is_empty() {
                return Ok(());
            }
            let batch = SendBatch {
                buf: &self.batch,
                stride: self.stride,
                meta: &self.batch_meta,
            };
            let sent = match udp.send(socket, &batch) {
                Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
                Ok(sent) => sent,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Err(err),
                // The peer's port is unreachable or similar: the first datagram is lost like any
                // other; go on with the rest.
                Err(_) => 1,
            };
            let sent = sent.min(self.batch_meta.len());
            let left = self.batch_meta.len() - sent;
            self.batch
                .copy_within(sent * self.stride..(sent + left) * self.stride, 0);
            self.batch_meta.drain(..sent);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sender.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.sender.handle_timeout(now);
    }

    /// `Some` once the transfer is over and its port can be freed.
    pub fn end(&self) -> Option<&SenderEnd> {
        if !self.batch_meta.is_empty() {
            None
        } else {
            self.end.as_ref()
        }
    }
}

/// Tops the batch up to [`SEND_BATCH`] datagrams or [`SEND_BATCH_BYTES`] (the ones a short send
/// left over come first), checking first whether the served file changed.
#[allow(clippy::too_many_arguments)]
fn fill_batch(
    now: Instant,
    sender: &mut Sender,
    file: &mut Option<ServedFile>,
    end: &mut Option<SenderEnd>,
    last_check: &mut Instant,
    token: u64,
    stride: usize,
    batch: &mut Vec<u8>,
    meta: &mut Vec<(SocketAddr, usize)>,
) {
    if now.saturating_duration_since(*last_check) >= CHANGE_CHECK_EVERY {
        *last_check = now;
        if file.as_ref().is_some_and(ServedFile::changed) {
            *file = None;
            sender.file_changed();
        }
    }
    while meta.len() < SEND_BATCH
        && (meta.is_empty() || (meta.len() + 1) * stride <= SEND_BATCH_BYTES)
    {
        let at = meta.len() * stride;
        if batch.len() < at + stride {
            batch.resize(at + stride, 0);
        }
        let Some(m) = produce(sender, file, end, token, &mut batch[at..at + stride]) else {
            break;
        };
        meta.push(m);
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
