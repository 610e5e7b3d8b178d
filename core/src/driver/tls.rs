//! TLS on one chat connection, as the server driver holds it: rustls's own sans-IO connection
//! (`read_tls`, `process_new_packets`, `write_tls`), fed the bytes the runtime read and asked for
//! the bytes the runtime must write. The runtime never sees plaintext of a TLS connection; the
//! chat server never sees ciphertext.
//!
//! How writing works: the connection's outbox still holds plaintext lines (fan-out shares them as
//! for a plain connection). When the runtime is about to write, up to [`BATCH`] bytes of that
//! plaintext are encrypted into one ciphertext buffer; the plaintext stays in the outbox until
//! the whole buffer is written, and only then is it reported written to the chat server. So the
//! slow-reader bound (C5) counts what the peer has not received, as on a plain connection, and a
//! TLS connection holds at most one batch of ciphertext besides its outbox.
//!
//! Randomness: rustls's crypto provider (ring) draws its own random bytes for the handshake;
//! that is the one source of randomness the core lets in, and it lives inside rustls.
//!
//! Spec: `docs/PROTOCOL.md` [§1.6] (TLS, pinning and the room password).
//!
//! [§1.6]: ../../../docs/PROTOCOL.md#16-tls-pinning-and-the-room-password

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

/// The most plaintext encrypted at once for one connection: a few TLS records, enough that a
/// turn's lines for one reader are one write, small enough that a thousand lagging readers do
/// not hold a second copy of their backlog.
pub const BATCH: usize = 64 << 10;

/// A drained ciphertext buffer larger than this is freed rather than kept: an idle TLS
/// connection holds no buffer of its own.
const KEEP_OUT: usize = 16 << 10;

/// What a read of ciphertext gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// Go on reading.
    More,
    /// The peer said `close_notify`: it is done sending.
    Closed,
}

/// One TLS chat connection. See the module documentation.
#[derive(Debug)]
pub(super) struct TlsConn {
    tls: ServerConnection,
    /// Ciphertext for the socket; `out[out_done..]` is unsent.
    out: Vec<u8>,
    out_done: usize,
    /// Plaintext bytes of the outbox whose ciphertext is in `out`.
    plain_in_flight: usize,
    /// `close_notify` is queued (it goes once, after the last plaintext).
    notified: bool,
}

impl TlsConn {
    /// A new server side of a handshake.
    pub(super) fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut tls = ServerConnection::new(config)?;
        // Bounded by BATCH and the outbox's own bound instead (see the module documentation).
        tls.set_buffer_limit(None);
        Ok(Self { tls, out: Vec::new(), out_done: 0, plain_in_flight: 0, notified: false })
    }

    /// Feeds ciphertext read from the socket; hands each piece of plaintext it yields to
    /// `plain` (through `buf`, the driver's read buffer). On a TLS error the alert for the peer
    /// is queued and the error returned: the connection must be closed.
    pub(super) fn receive(
        &mut self,
        mut bytes: &[u8],
        buf: &mut [u8],
        mut plain: impl FnMut(&[u8]),
    ) -> Result<Received, rustls::Error> {
        while !bytes.is_empty() {
            if let Err(err) = self.tls.read_tls(&mut bytes) {
                // Only a full deframer buffer: a peer that sends records larger than allowed.
                return Err(rustls::Error::General(format!("reading TLS: {err}")));
            }
            if let Err(err) = self.tls.process_new_packets() {
                // The alert rustls queued goes out; nothing else after it.
                self.fill_out();
                self.notified = true;
                return Err(err);
            }
            loop {
                match self.tls.reader().read(buf) {
                    Ok(0) => return Ok(Received::Closed),
                    Ok(n) => plain(&buf[..n]),
                    // WouldBlock: no more plaintext for now.
                    Err(_) => break,
                }
            }
        }
        Ok(Received::More)
    }

    /// Whether the handshake is still going: plaintext waits in the outbox until it is over.
    pub(super) fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Whether ciphertext is owed to the socket (a handshake flight, a batch, an alert).
    pub(super) fn has_ciphertext(&self) -> bool {
        self.out_done < self.out.len() || self.tls.wants_write()
    }

    /// Whether `close_notify` is queued (or the connection failed): nothing more is encrypted.
    pub(super) fn notified(&self) -> bool {
        self.notified
    }

    /// Whether the last batch is written, so that the next may be made.
    pub(super) fn batch_done(&self) -> bool {
        self.out_done == self.out.len()
    }

    /// The ciphertext owed now (empty when none): write it and report [`TlsConn::written`].
    pub(super) fn ciphertext(&mut self) -> &[u8] {
        if self.batch_done() {
            self.fill_out();
        }
        &self.out[self.out_done..]
    }

    /// Encrypts the next batch of `plain` (the outbox's unsent slices, oldest first) once the
    /// previous batch is written and the handshake is over. `close`: the connection is being
    /// closed, so `close_notify` follows the last of the plaintext.
    pub(super) fn encrypt<'a>(&mut self, plain: impl Iterator<Item = &'a [u8]>, close: bool) {
        if !self.batch_done() || self.is_handshaking() || self.notified {
            return;
        }
        let mut taken = 0;
        let mut all = true;
        for slice in plain {
            let take = slice.len().min(BATCH - taken);
            // Writing to rustls's own buffer cannot fail (its limit is off); a short write would
            // only leave the rest for the next batch.
            taken += self.tls.writer().write(&slice[..take]).unwrap_or(0);
            if take < slice.len() || taken >= BATCH {
                all = false;
                break;
            }
        }
        self.plain_in_flight = taken;
        if close && all {
            self.tls.send_close_notify();
            self.notified = true;
        }
        self.fill_out();
    }

    /// `len` bytes of [`TlsConn::ciphertext`] were written; gives the plaintext bytes that are
    /// now wholly delivered to the socket (a whole batch), else 0.
    pub(super) fn written(&mut self, len: usize) -> usize {
        self.out_done = (self.out_done + len).min(self.out.len());
        if !self.batch_done() {
            return 0;
        }
        self.out.clear();
        self.out_done = 0;
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        }
        std::mem::take(&mut self.plain_in_flight)
    }

    /// Moves what rustls has for the peer into `out`.
    fn fill_out(&mut self) {
        while self.tls.wants_write() {
            // Writing into a Vec cannot fail.
            if self.tls.write_tls(&mut self.out).is_err() {
                break;
            }
        }
    }
}
