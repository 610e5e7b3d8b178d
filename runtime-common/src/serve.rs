//! The server's file and datagram work, the same on every runtime: what the server driver's
//! [`Output`]s ask of files (open the served file, look whether it changed, close it), its log
//! lines, binding the transfer ports, and turning [`Transmit`] orders into batched sends (a part
//! is read with one `pread` straight into the datagram buffer and sealed there).
//!
//! A runtime hands every output to [`ServedFiles::perform`], which does this work and gives back
//! the outputs only a runtime can do (write to a connection, close it, pause or resume reading
//! it, accept again, transmit on a port).

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use natter_core::chat::catalogue::DigestCache;
use natter_core::cluster::ClusterEvent;

use natter_core::driver::server::{
    Input, MAX_WRITE_BUFFERS, Output, READ_CHUNK, ServerDriver, UDP_READS_PER_TURN,
};
use natter_core::transfer::endpoint::{Transmit, part_datagram_len};
use natter_core::wire::datagram::{MAX_DATAGRAM, PART_HEADER_LEN};

use crate::cluster::ClusterLink;
use crate::net::{self, SendBatch, UdpSender};
use crate::served::ServedFile;
use crate::{ScannedFolder, log};

/// How many datagrams one send prepares: as many as one UDP GSO send may carry. Why batch: at
/// 1 Gbit/s with 1500-byte packets the server makes ~85k sends a second, and on a machine whose
/// two cores are shared the per-packet cost is throughput lost.
const SEND_BATCH: usize = 64;

/// A batch also ends before it passes this many bytes (but holds at least one datagram). Why:
/// a GSO send must fit one IP packet, and the buffers of a batch are the server's working set:
/// 32 loopback parts of 64 KB would be 2 MB, out of the CPU's cache by the time the kernel
/// copies them, where one part per call (a buffer that stays hot) was faster.
const SEND_BATCH_BYTES: usize = net::GSO_MAX_BYTES;

/// Binds every transfer port of `options` once, at start-up, and keeps them: a port that another
/// program holds is reported to the driver (it is never offered) instead of an offer going out
/// for a port nobody will answer on.
pub fn bind_transfer_ports(
    now: Instant,
    ip: IpAddr,
    ports: std::ops::RangeInclusive<u16>,
    driver: &mut ServerDriver,
) -> Vec<(u16, UdpSocket)> {
    let mut bound = Vec::new();
    for port in ports {
        match net::udp_socket(SocketAddr::new(ip, port)) {
            Ok(socket) => bound.push((port, socket)),
            Err(err) => {
                tracing::warn!("UDP port {port} is not usable ({err}); it will not be offered");
                driver.handle_input(now, Input::PortUnavailable { port });
            }
        }
    }
    if bound.is_empty() {
        tracing::warn!("no transfer port could be bound: downloads are off");
    }
    bound
}

/// Hands a newly scanned folder to the driver.
pub fn feed_folder(now: Instant, driver: &mut ServerDriver, folder: &ScannedFolder) {
    driver.handle_input(
        now,
        Input::Folder { catalogue: &folder.catalogue, identities: &folder.identities },
    );
}

/// What other threads hand a server loop: a new view of the folder, or news from the cluster's
/// broker. A runtime passes each to [`feed`] on its own thread.
#[derive(Debug)]
pub enum Delivery {
    /// The served folder, read again.
    Folder(ScannedFolder),
    /// The cluster's broker said something (PROTOCOL 8).
    Cluster(ClusterEvent),
}

/// Feeds what another thread delivered to the driver.
pub fn feed(now: Instant, driver: &mut ServerDriver, delivery: &Delivery) {
    match delivery {
        Delivery::Folder(folder) => feed_folder(now, driver, folder),
        Delivery::Cluster(event) => driver.handle_input(now, Input::Cluster(event)),
    }
}

/// The served folder and, per transfer port, the open file and the datagrams prepared for it;
/// and the link to the cluster's broker, whose commands are outputs like the file work.
#[derive(Debug)]
pub struct ServedFiles {
    folder: PathBuf,
    ports: HashMap<u16, PortIo>,
    cluster: Option<ClusterLink>,
}

/// One transfer port's side of the work.
#[derive(Debug, Default)]
struct PortIo {
    file: Option<ServedFile>,
    /// Datagrams prepared for the next send, one every `stride` bytes (a part with its header):
    /// the one at `batch[i * stride..]` goes to `meta[i].0`, `meta[i].1` bytes long. Laid out so
    /// because a run of them is one GSO send as it is.
    batch: Vec<u8>,
    meta: Vec<(SocketAddr, usize)>,
    stride: usize,
    /// Made on the first send of a transfer, when the peer is known.
    udp: Option<UdpSender>,
}

impl ServedFiles {
    /// Serves files from `folder`.
    pub fn new(folder: PathBuf) -> Self {
        Self { folder, ports: HashMap::new(), cluster: None }
    }

    /// Does the file and log work of `output`; gives back the outputs that need the runtime's
    /// sockets.
    pub fn perform(
        &mut self,
        now: Instant,
        driver: &mut ServerDriver,
        output: Output,
    ) -> Option<Output> {
        match output {
            Output::Serve { port, file, identity, part_size, sealed } => {
                let io = self.ports.entry(port).or_default();
                io.stride = part_datagram_len(part_size, sealed).min(MAX_DATAGRAM);
                io.udp = None;
                io.file = match ServedFile::open(&self.folder, &file) {
                    Ok(opened) if Some(opened.identity()) == identity => Some(opened),
                    Ok(_) | Err(_) => None,
                };
                if io.file.is_none() {
                    driver.handle_input(now, Input::FileChanged { port });
                }
            }
            Output::CheckFile { port } => {
                let io = self.ports.entry(port).or_default();
                if io.file.as_ref().is_none_or(ServedFile::changed) {
                    io.file = None;
                    driver.handle_input(now, Input::FileChanged { port });
                }
            }
            Output::StopServing { port } => {
                if let Some(io) = self.ports.get_mut(&port) {
                    io.file = None;
                }
            }
            Output::Log(event) => log::server_event(&event),
            Output::ReleaseMemory => crate::memory::release_free_memory(),
            Output::Cluster(command) => {
                if let Some(link) = &self.cluster {
                    link.send(command);
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Sends every datagram due on `port` on `socket`, a batch per system call. `Err(WouldBlock)`:
    /// the socket's buffer is full; call again when it is writable (the datagrams not sent are
    /// kept, in order). Any other error loses one datagram, as the network might: loss detection
    /// asks for it again.
    pub fn send_due<S: AsFd>(
        &mut self,
        now: Instant,
        driver: &mut ServerDriver,
        port: u16,
        socket: &S,
    ) -> io::Result<()> {
        let io = self.ports.entry(port).or_default();
        loop {
            io.fill(now, driver, port);
            let Some(&(first_to, _)) = io.meta.first() else {
                return Ok(());
            };
            let udp = io.udp.get_or_insert_with(|| UdpSender::new(socket, first_to.ip()));
            let batch = SendBatch { buf: &io.batch, stride: io.stride, meta: &io.meta };
            let sent = match udp.send(socket, &batch) {
                Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
                Ok(sent) => sent,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Err(err),
                // The peer's port is unreachable or similar: the first datagram is lost like any
                // other; go on with the rest.
                Err(_) => 1,
            };
            let sent = sent.min(io.meta.len());
            let left = io.meta.len() - sent;
            io.batch.copy_within(sent * io.stride..(sent + left) * io.stride, 0);
            io.meta.drain(..sent);
        }
    }
}

impl PortIo {
    /// Tops the batch up to [`SEND_BATCH`] datagrams or [`SEND_BATCH_BYTES`] (the ones a short
    /// send left over come first).
    fn fill(&mut self, now: Instant, driver: &mut ServerDriver, port: u16) {
        let stride = self.stride.max(PART_HEADER_LEN);
        while self.meta.len() < SEND_BATCH
            && (self.meta.is_empty() || (self.meta.len() + 1) * stride <= SEND_BATCH_BYTES)
        {
            let at = self.meta.len() * stride;
            if self.batch.len() < at + stride {
                self.batch.resize(at + stride, 0);
            }
            let Some(transmit) = driver.poll_transmit(now, port) else {
                return;
            };
            let buf = &mut self.batch[at..at + stride];
            match transmit {
                Transmit::Part(order) => {
                    let read = match (&self.file, buf.get_mut(order.payload())) {
                        (Some(file), Some(payload)) => {
                            file.read_part(order.offset, payload).is_ok()
                        }
                        _ => false,
                    };
                    if !read {
                        // Shorter than offered, or gone: it changed under us (U7).
                        self.file = None;
                        driver.handle_input(now, Input::FileChanged { port });
                        continue;
                    }
                    // Sealed (PROTOCOL 2.7) or not, where the payload was read: no copy.
                    self.meta.push((order.to, order.seal(buf)));
                }
                Transmit::Datagram { to, bytes } => {
                    let len = bytes.len().min(buf.len());
                    buf[..len].copy_from_slice(&bytes[..len]);
                    self.meta.push((to, len));
                }
            }
        }
    }
}

/// What a server needs before its loop starts: the driver, the file work, the bound ports.
#[derive(Debug)]
pub struct Prepared {
    /// The whole server's decisions.
    pub driver: ServerDriver,
    /// The file work of its outputs.
    pub files: ServedFiles,
    /// The transfer ports that could be bound, each with its socket.
    pub ports: Vec<(u16, UdpSocket)>,
}

/// Starts watching the served folder and, in a cluster, the link to the broker (what they have
/// goes to `deliver`, on their threads, until `stop` is set or `deliver` says the server is
/// gone), builds the driver for `options` over the folder as first scanned, binds the transfer
/// ports, and says that the server started.
pub fn prepare(
    now: Instant,
    options: &crate::ServerOptions,
    scanned: (ScannedFolder, DigestCache),
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &Stop,
    deliver: impl FnMut(Delivery) -> bool + Send + Clone + 'static,
) -> io::Result<Prepared> {
    let (folder, digests) = scanned;
    let mut config = options.chat.clone();
    let mut files = ServedFiles::new(options.files.clone());
    if let (Some(cluster), Some(broker)) = (&mut config.cluster, &options.broker) {
        // A new epoch each start: the others drop what an earlier run of this node held (8.4).
        let random = log::secret_seed()?;
        cluster.epoch = u64::from_le_bytes([
            random[0], random[1], random[2], random[3], random[4], random[5], random[6], random[7],
        ]);
        let mut deliver = deliver.clone();
        let link = crate::cluster::start(
            broker,
            move |event| deliver(Delivery::Cluster(event)),
            stop.asked.clone(),
        )?;
        files.cluster = Some(link);
    }
    let mut deliver = deliver;
    crate::watch_folder(
        options.files.clone(),
        options.rescan_every,
        digests,
        folder.identities.clone(),
        stop.asked.clone(),
        move |folder| deliver(Delivery::Folder(folder)),
    )?;
    let seed = log::secret_seed()?;
    let mut driver = ServerDriver::with_secret_seed(config, folder.catalogue.clone(), seed);
    if let Some(tls) = tls {
        driver = driver.with_tls(tls);
    }
    feed_folder(now, &mut driver, &folder);
    let ports =
        bind_transfer_ports(now, options.addr.ip(), options.chat.udp_ports.clone(), &mut driver);
    tracing::info!("[STARTED] Waiting for connections...");
    Ok(Prepared { driver, files, ports })
}

/// A request to stop, that reaches a server loop however it waits: the loop says how it wants to
/// be woken ([`Stop::on_ask`]) and looks at [`Stop::asked`] when it wakes.
#[derive(Clone, Default)]
pub struct Stop {
    asked: Arc<AtomicBool>,
    wake: Arc<Mutex<Option<Waker>>>,
}

type Waker = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop").field("asked", &self.asked()).finish()
    }
}

impl Stop {
    /// Asks the loop to stop and wakes it.
    pub fn ask(&self) {
        self.asked.store(true, Ordering::SeqCst);
        if let Ok(wake) = self.wake.lock()
            && let Some(wake) = wake.as_ref()
        {
            wake();
        }
    }

    /// Whether a stop was asked for.
    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }

    /// How the loop is woken when a stop is asked for (at once, if it was asked already).
    pub fn on_ask(&self, wake: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut slot) = self.wake.lock() {
            *slot = Some(Box::new(wake));
        }
        if self.asked() {
            self.ask();
        }
    }
}

/// The loop of one runtime: serves `server` until `stop` is asked.
pub type RunServer = fn(BoundServer, Stop) -> io::Result<()>;

/// A chat listener: plain, or TLS (PROTOCOL 1.6).
#[derive(Debug)]
pub struct Listener {
    /// Non-blocking.
    pub socket: std::net::TcpListener,
    /// Its connections speak TLS.
    pub tls: bool,
}

/// A server whose folder is read and whose chat listeners are bound, not yet running.
#[derive(Debug)]
pub struct BoundServer {
    /// The chat listeners: the plain one first (unless turned off), then the TLS one.
    pub listeners: Vec<Listener>,
    /// What was asked for.
    pub options: crate::ServerOptions,
    /// The served folder as first read, and the digests taken.
    pub scanned: (ScannedFolder, DigestCache),
    /// The TLS listener's configuration, certificate loaded.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl BoundServer {
    /// Reads the served folder, loads the TLS certificate (making the self-signed one if need
    /// be), then binds the TCP listeners (port 0 picks a free one): once a port accepts, every
    /// digest is ready.
    pub fn bind(options: crate::ServerOptions) -> io::Result<Self> {
        crate::net::hold_udp_gro_on();
        let scanned = crate::initial_scan(&options.files);
        let mut listeners = Vec::new();
        if options.plain {
            listeners.push(Listener { socket: listen(options.addr)?, tls: false });
        }
        let mut tls = None;
        if let Some(tls_options) = &options.tls {
            let server_tls = crate::tls::server_tls(tls_options).map_err(io::Error::other)?;
            let socket = listen(tls_options.addr)?;
            tracing::info!(
                "TLS on {}, certificate fingerprint {}",
                socket.local_addr()?,
                server_tls.fingerprint
            );
            listeners.push(Listener { socket, tls: true });
            tls = Some(server_tls.config);
        }
        if listeners.is_empty() {
            return Err(io::Error::other("no listener: plain chat is off and TLS is not on"));
        }
        Ok(Self { listeners, options, scanned, tls })
    }

    /// Where the chat listener is bound: the plain one, or the TLS one when there is no other.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.first().ok_or(io::ErrorKind::NotFound)?.socket.local_addr()
    }

    /// Where the TLS listener is bound, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| l.tls)?.socket.local_addr().ok()
    }

    /// Runs the server with `run` on this thread until the process ends.
    pub fn run(self, run: RunServer) -> io::Result<()> {
        run(self, Stop::default())
    }

    /// Runs the server with `run` on a thread of its own.
    pub fn spawn(self, run: RunServer) -> io::Result<ServerHandle> {
        let local_addr = self.local_addr()?;
        let tls_addr = self.tls_addr();
        let stop = Stop::default();
        let asked = stop.clone();
        let thread = std::thread::Builder::new()
            .name("natter-server".into())
            .spawn(move || run(self, asked))?;
        Ok(ServerHandle { local_addr, tls_addr, stop, thread: Some(thread) })
    }
}

/// A server running on its own thread; dropping the handle stops it and waits for the thread.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stop: Stop,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// Where the chat listener is bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the TLS listener is bound, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }
}

/// A non-blocking TCP listener on `addr`.
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.ask();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a turn at one socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// There may be more: come back after the others had their turn.
    More,
    /// The socket would block: wait until it is ready again.
    Blocked,
    /// The connection is over (the driver was told).
    Ended,
}

/// A chat connection was accepted (on the TLS listener when `tls`): sets what every runtime
/// sets on it (no Nagle delay to start with: the driver writes a turn's lines at once, and only a
/// crowd's stream lets writes wait, `ServerDriver::write_coalesces`;
/// keepalive, so a vanished peer is noticed; a lost segment sent again soon,
/// [`net::shorten_tcp_recovery`]) and tells the driver.
pub fn accepted<S: AsFd>(
    now: Instant,
    driver: &mut ServerDriver,
    conn: u64,
    peer: SocketAddr,
    stream: &S,
    tls: bool,
) {
    net::coalesce_writes(stream, false);
    net::keep_alive(stream);
    net::shorten_tcp_recovery(stream);
    let input =
        if tls { Input::AcceptedTls { conn, peer } } else { Input::Accepted { conn, peer } };
    driver.handle_input(now, input);
}

/// What a failed `accept` means: `true` to accept again now (a connection reset before it was
/// taken, an interrupted call); `false` to stop, after telling the driver when the failure is a
/// lack of resources (it says when to try again with [`Output::AcceptAgain`]).
pub fn accept_failed(now: Instant, driver: &mut ServerDriver, err: &io::Error) -> bool {
    match err.kind() {
        io::ErrorKind::WouldBlock => false,
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => true,
        _ => {
            tracing::warn!("accept failed: {err}; trying again shortly");
            driver.handle_input(now, Input::AcceptFailed);
            false
        }
    }
}

/// Reads one chunk (at most [`READ_CHUNK`]) from chat connection `conn` with `read` and feeds
/// the driver: the bytes, or the end of the connection.
pub fn read_chunk(
    now: Instant,
    driver: &mut ServerDriver,
    conn: u64,
    buf: &mut [u8],
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> Turn {
    let len = READ_CHUNK.min(buf.len());
    match read(&mut buf[..len]) {
        Ok(0) => {}
        Ok(n) => {
            driver.handle_input(now, Input::Received { conn, bytes: &buf[..n] });
            return Turn::More;
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Turn::Blocked,
        Err(err) if err.kind() == io::ErrorKind::Interrupted => return Turn::More,
        Err(_) => {}
    }
    driver.handle_input(now, Input::PeerClosed { conn });
    Turn::Ended
}

/// Writes what is owed to `conn` with `write` (one vectored write per call) until it is all out
/// or the socket is full, reporting each write to the driver.
pub fn write_owed(
    now: Instant,
    driver: &mut ServerDriver,
    conn: u64,
    mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> Turn {
    while driver.has_unsent(conn) {
        let mut slices = [IoSlice::new(&[]); MAX_WRITE_BUFFERS];
        let mut count = 0;
        for (slot, buf) in slices.iter_mut().zip(driver.unsent(conn)) {
            *slot = IoSlice::new(buf);
            count += 1;
        }
        match write(&slices[..count]) {
            Ok(0) => break,
            Ok(len) => driver.handle_input(now, Input::Written { conn, len }),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Turn::Blocked,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if !driver.has_unsent(conn) {
        return Turn::More;
    }
    driver.handle_input(now, Input::PeerClosed { conn });
    Turn::Ended
}

/// Takes up to [`UDP_READS_PER_TURN`] datagrams from transfer port `port` with `recv` and feeds
/// each to the driver, stamped with its own time (the idle clock and the change check read it).
pub fn receive_datagrams(
    driver: &mut ServerDriver,
    port: u16,
    buf: &mut [u8],
    mut recv: impl FnMut(&mut [u8]) -> io::Result<(usize, SocketAddr)>,
) -> Turn {
    for _ in 0..UDP_READS_PER_TURN {
        match recv(buf) {
            Ok((n, from)) => {
                let input = Input::Datagram { port, from, bytes: &buf[..n] };
                driver.handle_input(Instant::now(), input);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Turn::Blocked,
            // An ICMP error from an earlier send, or an interrupted call: read on.
            Err(_) => {}
        }
    }
    Turn::More
}
