//! What a simulated client is to the simulator: the [`SimClient`] trait, what the network tells
//! it ([`ClientInput`]) and what it asks of the network ([`ClientAction`]), and how it is placed
//! in a run ([`ClientSpec`]).

use core::net::SocketAddr;
use std::fmt;
use std::time::{Duration, Instant};

use super::{DownloadFolder, DownloadReport, SessionEnd};
use crate::sim::Path;

/// What the simulated network tells a client about its chat connection.
#[derive(Debug, Clone, Copy)]
pub enum ClientInput<'a> {
    /// Bytes the client read from its connection.
    Received(&'a [u8]),
    /// The server closed the connection; everything it sent before was read already.
    ConnectionEnded,
    /// The connection is open (the simulated connect costs no time, so this comes at once).
    /// `early_socket` is a UDP socket bound on the connection's own address, as a runtime binds
    /// one for early flights (PROTOCOL 2.1): what arrives there is handed to the client with the
    /// address it came from, which the client driver tells apart. `handshake` is the round trip a
    /// real connect would have measured.
    Connected {
        /// The id of the early-flight socket.
        early_socket: u64,
        /// Its address: the chat connection's own, as the server sees it.
        local: SocketAddr,
        /// The chat path's round trip.
        handshake: Duration,
    },
}

/// What a client asks of the simulated network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Open a chat connection (a client has one at a time; this replaces any earlier one, which
    /// should have been reset or closed first).
    Connect,
    /// Write these bytes to the connection.
    Send(Vec<u8>),
    /// Stop reading the connection: what arrives waits, and the server's window closes (C5).
    StopReading,
    /// Read the connection again.
    ResumeReading,
    /// Reset the connection (RST): unsent bytes are lost, nothing more is read.
    Reset,
    /// Close the connection (FIN) once what was written has gone out.
    Close,
    /// Vanish without a word (half-open TCP): no FIN, no RST, no reading, ever again.
    Vanish,
    /// Open a UDP socket for download `id`, talking to the server's `port`.
    OpenDownload {
        /// The client's number for the download.
        id: u64,
        /// The server's transfer port.
        port: u16,
    },
    /// Close download `id`'s socket: what arrives for it from now on is dropped.
    CloseDownload {
        /// The client's number for the download.
        id: u64,
    },
    /// Nothing on the network: what the client program did on its own (kept a file, gave a
    /// download up, finished), written to the timeline as `label [text]`.
    Note(String),
}

/// A simulated client. The simulator calls these the way a client runtime would call its driver.
pub trait SimClient: fmt::Debug {
    /// The simulation starts at `now`.
    fn start(&mut self, now: Instant);
    /// Something happened on the chat connection.
    fn handle_input(&mut self, now: Instant, input: ClientInput<'_>);
    /// The next thing to do, or `None` (called until `None`).
    fn poll_action(&mut self) -> Option<ClientAction>;
    /// When [`SimClient::handle_timeout`] must be called next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The time has come.
    fn handle_timeout(&mut self, now: Instant);
    /// A datagram from `from` arrived on socket `id`: a download's, or the early-flight socket
    /// of [`ClientInput::Connected`] (decrypted in place when sealed).
    fn handle_datagram(&mut self, now: Instant, id: u64, from: SocketAddr, buf: &mut [u8]);
    /// The next datagram to send, written into `buf`: the download it belongs to and its length.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(u64, usize)>;
    /// Every download so far, in the order they were offered (a client that does not download
    /// has none).
    fn downloads(&self) -> Vec<DownloadReport> {
        Vec::new()
    }
    /// Every session of the client program that ended, with when (after the start).
    fn finished(&self) -> Vec<(Duration, SessionEnd)> {
        Vec::new()
    }
    /// The client's download folder as it is now.
    fn folder(&self) -> DownloadFolder {
        DownloadFolder::default()
    }
}

/// One client of a run.
#[derive(Debug)]
pub struct ClientSpec {
    /// Its name in the report and the transcript.
    pub label: String,
    /// Its UDP path to the server.
    pub path: Path,
    /// The largest datagram its path carries either way; larger ones are dropped (U5).
    pub max_datagram: Option<usize>,
    /// The client itself.
    pub client: Box<dyn SimClient>,
    /// Its chat connections are private, as TLS ones are: the server marks them secure
    /// ([`crate::driver::server::ServerDriver::set_secure`]), so its offers carry a key and its
    /// downloads are sealed (PROTOCOL 2.7).
    pub secure: bool,
}

impl ClientSpec {
    /// A client on a clean 100 Mbit/s UDP path with a 10 ms round trip.
    pub fn new(label: impl Into<String>, client: impl SimClient + 'static) -> Self {
        Self {
            label: label.into(),
            path: Path::symmetric(100_000_000, Duration::from_millis(10), 0.0),
            max_datagram: None,
            client: Box::new(client),
            secure: false,
        }
    }

    /// The same client over private (TLS) chat connections: its downloads are sealed.
    pub fn secure(mut self) -> Self {
        self.secure = true;
        self
    }

    /// The same client on another UDP path.
    pub fn with_path(mut self, path: Path) -> Self {
        self.path = path;
        self
    }

    /// The same client on a path that drops datagrams larger than `bytes`.
    pub fn with_max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = Some(bytes);
        self
    }
}
