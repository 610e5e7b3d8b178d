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
        if now.saturating_duration_since(self.last_check) >= CHANGE_CHECK_EVERY {
            self.last_check = now;
            if self.file.as_ref().is_some_and(ServedFile::changed) {
                self.file = None;
                self.sender.file_changed();
            }
        }
        loop {
            match self.sender.poll_output()? {
                SenderOutput::SendPart {
                    to,
                    req_seq,
                    part,
                    offset,
                    len,
                } => {
                    let Some(file) = &self.file else { continue };
                    let payload = &mut self.buf[PART_HEADER_LEN..PART_HEADER_LEN + len];
                    if file.read_part(offset, payload).is_err() {
                        // Shorter than offered: it changed under us.
                        self.file = None;
                        self.sender.file_changed();
                        continue;
                    }
                    let total = seal_part(&mut self.buf, self.token, req_seq, part, len);
                    self.last_len = Some((to, total));
                    return Some((to, &self.buf[..total]));
                }
                SenderOutput::SendDatagram { to, bytes } => {
                    let len = bytes.len().min(self.buf.len());
                    self.buf[..len].copy_from_slice(&bytes[..len]);
                    self.last_len = Some((to, len));
                    return Some((to, &self.buf[..len]));
                }
                SenderOutput::Done(end) => {
                    self.end = Some(end);
                }
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
        if self.unsent.is_some() {
            None
        } else {
            self.end.as_ref()
        }
    }
}
