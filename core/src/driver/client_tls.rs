//! TLS on the client's chat connection: rustls's sans-IO client connection between the chat
//! client's lines and the socket's bytes. The runtime reads and writes ciphertext only.
//!
//! Who decides what: the certificate check (the system's roots, or a pinned fingerprint) is the
//! verifier in the [`rustls::ClientConfig`] the runtime hands in; this module only moves bytes
//! through the connection and says when it failed.
//!
//! Spec: `docs/PROTOCOL.md` [§1.6] (TLS, pinning and the room password).
//!
//! [§1.6]: ../../../docs/PROTOCOL.md#16-tls-pinning-and-the-room-password

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::ClientConnection;
use rustls::pki_types::ServerName;

/// How a client speaks TLS to the server: the rustls configuration (with its certificate
/// verifier) and the name the certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Protocol versions, the crypto provider and the certificate verifier.
    pub config: Arc<rustls::ClientConfig>,
    /// The server's name (or IP address) as the certificate must show it.
    pub server_name: ServerName<'static>,
}

/// What a read of ciphertext gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// Go on.
    More,
    /// The server said `close_notify`.
    Closed,
}

/// The TLS session of one chat connection.
#[derive(Debug)]
pub(super) struct TlsSession {
    conn: ClientConnection,
    /// The session failed: nothing more is encrypted; only the alert goes out.
    failed: bool,
    /// `close_notify` was sent.
    closed: bool,
}

impl TlsSession {
    pub(super) fn new(tls: &ClientTls) -> Result<Self, rustls::Error> {
        let mut conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())?;
        // Lines typed before the handshake is over wait inside rustls; a person types few.
        conn.set_buffer_limit(None);
        Ok(Self { conn, failed: false, closed: false })
    }

    /// Encrypts `plain` (kept until the handshake is over) and gives what is owed to the socket
    /// now: the handshake's first flight included.
    pub(super) fn encrypt(&mut self, plain: &[u8]) -> Vec<u8> {
        if !self.failed && !self.closed {
            // rustls's buffer has no limit here: the write takes everything.
            let _ = self.conn.writer().write_all(plain);
        }
        self.drain()
    }

    /// What rustls owes the socket (a handshake flight, an alert), possibly nothing.
    pub(super) fn drain(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }

    /// The session is over: `close_notify` (unless it failed) and anything still owed.
    pub(super) fn close(&mut self) -> Vec<u8> {
        if !self.failed && !self.closed {
            self.conn.send_close_notify();
        }
        self.closed = true;
        self.drain()
    }

    /// Feeds ciphertext; appends the plaintext it yields to `plain`. An error (a refused
    /// certificate, a forged record) ends the session; its alert is owed ([`TlsSession::drain`]).
    pub(super) fn receive(
        &mut self,
        mut bytes: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Received, rustls::Error> {
        if self.failed {
            return Ok(Received::More);
        }
        while !bytes.is_empty() {
            let read = self.conn.read_tls(&mut bytes);
            let processed = read
                .map_err(|err| rustls::Error::General(format!("reading TLS: {err}")))
                .and_then(|_| self.conn.process_new_packets());
            if let Err(err) = processed {
                self.failed = true;
                return Err(err);
            }
            // Ok: the plaintext ended with close_notify. Err(WouldBlock): everything there was
            // is read (and appended to `plain` all the same).
            if self.conn.reader().read_to_end(plain).is_ok() {
                return Ok(Received::Closed);
            }
        }
        Ok(Received::More)
    }
}
