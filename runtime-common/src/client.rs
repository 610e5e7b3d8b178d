//! What both runtimes do for a client, once: the core's [`ClientDriver`] with the files of its
//! downloads ([`DownloadFiles`]), the chat connection's outbox, and the mapping of the driver's
//! outputs to what a person sees ([`ClientUi`]). A runtime only waits on its sockets, the
//! person's input and the timer, and hands what it read to a [`ClientIo`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use natter_core::chat::client::ClientEvent;
use natter_core::driver::client::{
    CHAT_READ_CHUNK, CONNECT_TIMEOUT, ClientConfig, ClientDriver, DATAGRAM_READS_PER_TURN,
    DownloadFailure, DownloadId, DownloadReport, Input, Mode, Output,
};
use natter_core::transfer::receiver::Progress;
use natter_core::transfer::receiver::TRANSMIT_BUF_LEN;

use crate::download::DownloadFiles;
use crate::net::{RecvBuffers, UdpReceiver};
use crate::options::{ClientOptions, DownloadOptions, default_part_size};
use crate::ui::ClientUi;

/// The id under which [`ClientIo::drive`] hands the runtime the early-flight socket (PROTOCOL
/// 2.1), to watch and read ([`ClientIo::read_datagrams`]) like a download's. No download has it:
/// ids count up from 0.
pub const EARLY_FLIGHTS: DownloadId = u32::MAX as DownloadId;

/// Why a chat session could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("network error: {0}")]
    Network(#[from] io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
}

/// Why a download did not leave a verified file: the session failed, or the download did.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Failed(#[from] DownloadFailure),
}

impl From<io::Error> for DownloadError {
    fn from(err: io::Error) -> Self {
        DownloadError::Client(err.into())
    }
}

/// Connects `io`'s session to the chat server ([`connect`]), binds the early-flight socket on
/// the connection's own address (PROTOCOL 2.1; best effort), and tells the driver both: how long
/// the connect took (a round trip of the path, which sizes the first flight of each download)
/// and where the socket is.
pub fn connect_session(
    addr: SocketAddr,
    io: &mut ClientIo,
) -> Result<std::net::TcpStream, ClientError> {
    let started = Instant::now();
    let stream = connect(addr)?;
    let now = Instant::now();
    let handshake = now.saturating_duration_since(started);
    io.early_socket = stream.local_addr().ok().and_then(|local| crate::net::udp_socket(local).ok());
    let early_socket = io.early_socket.as_ref().and_then(|s| s.local_addr().ok());
    io.handle_input(now, Input::Connected { handshake, early_socket });
    Ok(stream)
}

/// Connects to the chat server (blocking, at most [`CONNECT_TIMEOUT`]); the stream is returned
/// non-blocking, with Nagle off so that typed lines go out at once, and a lost segment sent
/// again soon ([`crate::net::shorten_tcp_recovery`]).
pub fn connect(addr: SocketAddr) -> Result<std::net::TcpStream, ClientError> {
    let connect = |source| ClientError::Connect { addr, source };
    let stream = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(connect)?;
    stream.set_nodelay(true).map_err(connect)?;
    crate::net::shorten_tcp_recovery(&stream);
    stream.set_nonblocking(true).map_err(connect)?;
    Ok(stream)
}

/// The person's typed lines (the iterator may block: a runtime reads it on a thread of its own).
pub type Lines = Box<dyn Iterator<Item = String> + Send>;

/// The client loop of one runtime: connects to `addr` and runs `io` until it is finished.
pub type RunClient =
    fn(SocketAddr, &mut ClientIo, &mut dyn ClientUi, Option<Lines>) -> Result<(), ClientError>;

/// Runs a chat session with `run` until the person quits (or their input ends and nothing is
/// awaited), or the server closes the connection.
pub fn run_client(
    run: RunClient,
    options: ClientOptions,
    ui: &mut dyn ClientUi,
    input: impl Iterator<Item = String> + Send + 'static,
) -> Result<(), ClientError> {
    let mut io = ClientIo::interactive(&options, Instant::now())?;
    run(options.addr, &mut io, ui, Some(Box::new(input)))
}

/// `natter get` with `run`: downloads `options.file`; the file is byte-exact (BLAKE3) or this is
/// an error.
pub fn download(
    run: RunClient,
    options: &DownloadOptions,
    on_progress: impl FnMut(&Progress),
) -> Result<DownloadReport, DownloadError> {
    let mut io = ClientIo::get(options, Instant::now())?;
    run(options.session.addr, &mut io, &mut ProgressUi(on_progress), None)?;
    io.download_result()
}

/// What became of one file of a `natter get`.
pub type FileResult = (String, Result<DownloadReport, DownloadFailure>);

/// `natter get A B C ...` with `run`: fetches `options.files` in one session, at most
/// `max_transfers` at once;
/// one result per file, in the order they ended, and none lost: a file the session never got to
/// says why. `Err` only when the session could not start.
pub fn download_many(
    run: RunClient,
    options: &DownloadOptions,
    on_progress: impl FnMut(&Progress),
) -> Result<Vec<FileResult>, ClientError> {
    let mut io = ClientIo::get(options, Instant::now())?;
    run(options.session.addr, &mut io, &mut ProgressUi(on_progress), None)?;
    Ok(std::mem::take(&mut io.files_done))
}

/// The download sockets of one client, as a runtime keeps them.
pub trait Sockets {
    /// Starts watching download `id`'s UDP `socket` (non-blocking, connected to the server's
    /// transfer port; or, as [`EARLY_FLIGHTS`], the early-flight socket, not connected), for
    /// datagrams of up to `max_datagram` bytes.
    fn open(
        &mut self,
        id: DownloadId,
        socket: std::net::UdpSocket,
        max_datagram: usize,
    ) -> io::Result<()>;
    /// Sends one datagram on download `id`'s socket.
    fn send(&mut self, id: DownloadId, datagram: &[u8]) -> io::Result<usize>;
    /// Closes download `id`'s socket (if it is open).
    fn release(&mut self, id: DownloadId);
}

/// A client session's state outside the driver's decisions.
#[derive(Debug)]
pub struct ClientIo {
    driver: ClientDriver,
    files: DownloadFiles,
    /// Bytes for the chat connection not yet written.
    pub outbox: Vec<u8>,
    transmit: Vec<u8>,
    read_buf: Vec<u8>,
    /// Every download's datagrams are read into these, one socket's batch at a time.
    received: RecvBuffers,
    finished: Option<Option<Result<DownloadReport, DownloadFailure>>>,
    /// `natter get`: each file's result, as the driver gave it ([`Output::FileDone`]).
    files_done: Vec<FileResult>,
    /// Over TLS: the certificate to pin once the handshake has seen it for the first time.
    pinning: Option<std::sync::Arc<crate::tls::Pinning>>,
    /// The early-flight socket (PROTOCOL 2.1), until it is handed to the runtime as
    /// [`EARLY_FLIGHTS`].
    early_socket: Option<std::net::UdpSocket>,
}

impl ClientIo {
    /// An interactive chat client.
    pub fn interactive(o: &ClientOptions, now: Instant) -> Result<Self, ClientError> {
        Self::session(Mode::Interactive, o, now)
    }

    /// `natter get`: the files of `o`, then leave.
    pub fn get(o: &DownloadOptions, now: Instant) -> Result<Self, ClientError> {
        Self::session(Mode::Get { files: o.files.clone() }, &o.session, now)
    }

    fn session(mode: Mode, o: &ClientOptions, now: Instant) -> Result<Self, ClientError> {
        let mut config = Self::config(mode, &o.name, o.addr, o.part_size, o.stall_timeout);
        config.max_download_size = o.max_size;
        config.max_transfers = o.max_transfers;
        let pinning = Self::secure(&mut config, o.addr, o.tls.as_ref())?;
        Ok(Self::new(config, o.out_dir.clone(), now, pinning))
    }

    /// Sets the driver up for TLS (PROTOCOL 1.6) when asked to.
    fn secure(
        config: &mut ClientConfig,
        addr: SocketAddr,
        tls: Option<&crate::tls::ClientTlsOptions>,
    ) -> Result<Option<std::sync::Arc<crate::tls::Pinning>>, ClientError> {
        let Some(tls) = tls else {
            return Ok(None);
        };
        let (client_tls, pinning) = crate::tls::client_tls(addr, tls)?;
        config.tls = Some(client_tls);
        config.password = tls.password.clone();
        Ok(Some(pinning))
    }

    /// The driver's config; a part size not given is the largest the route to `addr` carries.
    fn config(
        mode: Mode,
        name: &str,
        addr: SocketAddr,
        part_size: Option<u16>,
        give_up_after: std::time::Duration,
    ) -> ClientConfig {
        let part_size = part_size.unwrap_or_else(|| default_part_size(addr.ip()));
        // `connect_session` reports the connect, with the early-flight socket.
        ClientConfig {
            give_up_after,
            awaits_connected: true,
            ..ClientConfig::new(name, mode, addr.ip(), part_size)
        }
    }

    fn new(
        config: ClientConfig,
        out_dir: PathBuf,
        now: Instant,
        pinning: Option<std::sync::Arc<crate::tls::Pinning>>,
    ) -> Self {
        crate::net::hold_udp_gro_on();
        Self {
            driver: ClientDriver::new(config, now),
            files: DownloadFiles::new(out_dir),
            outbox: Vec::new(),
            transmit: vec![0; TRANSMIT_BUF_LEN],
            read_buf: vec![0; CHAT_READ_CHUNK],
            received: RecvBuffers::default(),
            finished: None,
            files_done: Vec::new(),
            pinning,
            early_socket: None,
        }
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.driver.handle_input(now, input);
    }

    /// Verified files are kept (fsynced and renamed) on a thread of their own, which calls `wake`
    /// after each so that the runtime's loop comes back to [`ClientIo::drive`]. Why: the disk's
    /// waits would otherwise hold up every other download (see [`DownloadFiles`]). If the thread
    /// cannot start, files are kept on the loop's thread, as without this.
    pub fn keep_in_background(&mut self, wake: impl Fn() + Send + 'static) {
        if let Err(err) = self.files.keep_in_background(wake) {
            tracing::warn!("cannot start a thread to save files on, saving them in turn: {err}");
        }
    }

    /// A datagram on download `id`'s socket; read `now` for each one (see
    /// [`ClientDriver::handle_datagram`]).
    pub fn on_datagram(&mut self, now: Instant, id: DownloadId, buf: &mut [u8]) {
        self.files.on_datagram(&mut self.driver, now, id, buf);
    }

    /// When the driver's next timeout is due ([`ClientIo::drive`] handles it).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.driver.poll_timeout()
    }

    /// Handles the driver's timeout if it is due, then performs everything the driver asks for
    /// now: file work, what to show, sockets to open and close, datagrams to send, bytes for the
    /// chat connection (into [`ClientIo::outbox`]). A runtime calls it after every wake.
    pub fn drive(&mut self, now: Instant, ui: &mut dyn ClientUi, sockets: &mut impl Sockets) {
        if self.poll_timeout().is_some_and(|at| at <= now) {
            self.driver.handle_timeout(now);
        }
        self.files.take_kept(&mut self.driver, now);
        if let Some(saved) = self.pinning.as_ref().and_then(|p| p.save_first_use()) {
            ui.notice(&saved);
        }
        if let Some(socket) = self.early_socket.take() {
            // Not watched, flights go nowhere: each download finds none came and asks again.
            let _ = socket
                .set_nonblocking(true)
                .and_then(|()| sockets.open(EARLY_FLIGHTS, socket, usize::from(u16::MAX)));
        }
        loop {
            while let Some(output) = self.driver.poll_output() {
                let Some(output) = self.files.perform(&mut self.driver, now, output) else {
                    continue;
                };
                let Some(output) = show(ui, output) else {
                    continue;
                };
                match output {
                    Output::Send(bytes) => self.outbox.extend_from_slice(&bytes),
                    Output::Open { id, peer, max_datagram, early, .. } => {
                        let opened = crate::net::client_udp_socket(peer)
                            .and_then(|socket| sockets.open(id, socket, max_datagram));
                        if let Err(err) = opened {
                            let error = format!("cannot open a UDP socket to {peer}: {err}");
                            self.driver.handle_input(now, Input::IoFailed { id, error });
                        } else if early {
                            // What came for it on the early-flight socket before it was open.
                            for mut datagram in self.driver.take_early_held(id) {
                                self.files.on_datagram(
                                    &mut self.driver,
                                    Instant::now(),
                                    id,
                                    &mut datagram,
                                );
                            }
                        }
                    }
                    Output::Release { id } => sockets.release(id),
                    Output::Finish(result) => self.finished = Some(result),
                    Output::FileDone { file, result } => self.files_done.push((file, result)),
                    _ => {}
                }
            }
            // The outputs are drained before the transmissions, and again after them: a download
            // is released only once its last datagrams are out.
            let mut sent = false;
            while let Some((id, len)) = self.driver.poll_transmit(now, &mut self.transmit) {
                sent = true;
                // A full socket buffer or an ICMP error: the request counts as lost, and loss
                // detection asks again.
                let _ = sockets.send(id, &self.transmit[..len]);
            }
            if !sent {
                return;
            }
        }
    }

    /// Reads what the (non-blocking) chat connection holds, until it would block, into the driver.
    /// A read error is the end of the connection, as a close is.
    pub fn read_chat(&mut self, stream: &mut impl Read) {
        while !self.driver.is_finished() {
            let input = match stream.read(&mut self.read_buf) {
                Ok(0) => Input::ServerClosed,
                Ok(n) => Input::Received(&self.read_buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => Input::ServerClosed,
            };
            let closed = input == Input::ServerClosed;
            self.driver.handle_input(Instant::now(), input);
            if closed {
                return;
            }
        }
    }

    /// Writes what the (non-blocking) chat connection takes now; the rest waits in the outbox for
    /// the connection to be writable. A write error is the end of the connection.
    pub fn write_chat(&mut self, stream: &mut impl Write) {
        while !self.outbox.is_empty() {
            match stream.write(&self.outbox) {
                Ok(n) if n > 0 => {
                    self.outbox.drain(..n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Ok(_) | Err(_) => {
                    self.outbox.clear();
                    self.driver.handle_input(Instant::now(), Input::ServerClosed);
                }
            }
        }
    }

    /// Reads a batch of datagrams (recvmmsg, GRO) from download `id`'s socket into the driver and
    /// the files; returns whether the socket is drained (it would block). The batch is bounded
    /// ([`DATAGRAM_READS_PER_TURN`]) so that the requests its parts allow go out before more is read.
    /// On [`EARLY_FLIGHTS`], each datagram goes to the download of the transfer it came from,
    /// and the driver learns whether the socket was left empty
    /// ([`ClientDriver::early_socket_read`]: no flight's check concludes while it holds more).
    pub fn read_datagrams(&mut self, id: DownloadId, socket: &impl AsFd, rx: &UdpReceiver) -> bool {
        let drained = self.read_batch(id, socket, rx);
        if id == EARLY_FLIGHTS {
            self.driver.early_socket_read(drained);
        }
        drained
    }

    /// [`ClientIo::read_datagrams`] without telling the driver how the early-flight socket was
    /// left.
    fn read_batch(&mut self, id: DownloadId, socket: &impl AsFd, rx: &UdpReceiver) -> bool {
        let mut reads = 0;
        while reads < DATAGRAM_READS_PER_TURN {
            match rx.recv(socket, &mut self.received) {
                Ok(n) => reads += n.max(1),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
                // An ICMP error from an earlier send, say: nothing to read, nothing to decide.
                Err(_) => {
                    reads += 1;
                    continue;
                }
            }
            for (from, datagram) in self.received.datagrams_from_mut() {
                // The early-flight socket's datagrams go where the driver says, or wait in it.
                let id = match id {
                    EARLY_FLIGHTS => {
                        match self.driver.early_datagram(Instant::now(), from, datagram) {
                            Some(flight) => flight,
                            None => continue,
                        }
                    }
                    id => id,
                };
                // Read per datagram: see ClientDriver::handle_datagram.
                self.files.on_datagram(&mut self.driver, Instant::now(), id, datagram);
            }
        }
        false
    }

    /// Hands the lines typed so far, from a thread that reads the person's input, to the driver;
    /// `false` once that input has ended (the thread dropped its sender).
    pub fn take_typed(&mut self, lines: &mpsc::Receiver<String>) -> bool {
        loop {
            match lines.try_recv() {
                Ok(line) => self.handle_input(Instant::now(), Input::Typed(&line)),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        self.handle_input(Instant::now(), Input::InputEnded);
        false
    }

    /// The session is over: writes what is left for the chat connection (the `{quit}` of
    /// `natter get`, which does not wait for the server's close), once and without blocking; the
    /// runtime then shuts the connection down and stops.
    pub fn close_chat(&mut self, stream: &mut impl Write) {
        self.write_chat(stream);
    }

    /// Whether the session is over: then close the chat connection and stop.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// The result of a [`ClientIo::get`] session once it is over.
    pub fn download_result(&mut self) -> Result<DownloadReport, DownloadError> {
        match self.finished.take().flatten() {
            Some(result) => Ok(result?),
            None => Err(DownloadFailure::Disconnected.into()),
        }
    }
}

/// Shows the outputs meant for a person; hands back the others.
pub fn show(ui: &mut dyn ClientUi, output: Output) -> Option<Output> {
    match output {
        Output::Event(event) => ui.event(&event),
        Output::Notice(text) => ui.notice(&text),
        Output::Progress { file, progress, .. } => ui.progress(&file, &progress),
        Output::Disconnected(reason) => ui.disconnected(&reason),
        Output::Ended { file, result, .. } => {
            ui.download_done(&file, &result.map_err(DownloadError::from));
        }
        other => return Some(other),
    }
    None
}

/// The face of `natter get`: progress goes to a callback, notices to the log.
pub struct ProgressUi<F>(pub F);

impl<F> std::fmt::Debug for ProgressUi<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressUi")
    }
}

impl<F: FnMut(&Progress)> ClientUi for ProgressUi<F> {
    fn event(&mut self, event: &ClientEvent) {
        match event {
            // An offer's token is a credential: it never goes to a log (issue 14).
            ClientEvent::Offer(offer) => {
                tracing::debug!("server: offer of {} on port {}", offer.file, offer.port);
            }
            _ => tracing::debug!("server: {event:?}"),
        }
    }

    fn progress(&mut self, _file: &str, progress: &Progress) {
        (self.0)(progress);
    }

    fn download_done(&mut self, _file: &str, _result: &Result<DownloadReport, DownloadError>) {}

    fn notice(&mut self, text: &str) {
        tracing::info!("{text}");
    }

    fn disconnected(&mut self, _reason: &str) {}
}
