//! The chat server and its transfer ports on one mio `Poll`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use natter_core::chat::catalogue::DigestCache;
use natter_core::chat::server::{ChatServer, ServerInput, ServerOutput, TransferOffer};
use natter_runtime_common::upload::MAX_DATAGRAM;
use natter_runtime_common::{
    ScannedFolder, ServerOptions, Upload, initial_scan, log, net, watch_folder,
};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Transfer sockets use their port as token; connections start above every port.
const FIRST_CONN: usize = 1 << 17;
/// Transfer sockets are `Token(UDP_TOKENS + port)`, clear of the listener and the waker.
const UDP_TOKENS: usize = 2;
/// Bytes read from one connection before the others get their turn: a client that floods is read
/// no faster than its share (C6).
const READ_CHUNK: usize = 16 * 1024;
/// Datagrams taken from one transfer socket before the loop looks at the others.
const UDP_BATCH: usize = 64;
const MAX_IOVECS: usize = 64;
/// How long to wait before accepting again after running out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

struct Conn {
    stream: TcpStream,
    queue: VecDeque<Bytes>,
    /// How much of the front buffer is already written.
    front_done: usize,
    closing: bool,
}

struct Transfer {
    socket: UdpSocket,
    upload: Upload,
    writable_wait: bool,
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    options: ServerOptions,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    folder: ScannedFolder,
    digests: DigestCache,
}

/// A server running on its own thread; dropping the handle stops it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Server {
    /// Reads the served folder, then binds the TCP listener (port 0 picks a free one): once the
    /// port accepts, every digest is ready.
    pub fn bind(options: ServerOptions) -> io::Result<Self> {
        let (folder, digests) = initial_scan(&options.files);
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(options.addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Self {
            poll,
            listener,
            local_addr,
            options,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            folder,
            digests,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs the loop on a new thread.
    pub fn spawn(self) -> ServerHandle {
        let local_addr = self.local_addr;
        let stop = self.stop.clone();
        let waker = self.waker.clone();
        let thread = std::thread::Builder::new()
            .name("natter-server-mio".into())
            .spawn(move || self.run())
            .ok();
        ServerHandle {
            local_addr,
            stop,
            waker,
            thread,
        }
    }

    /// Runs the loop on this thread until stopped.
    pub fn run(self) -> io::Result<()> {
        let Server {
            mut poll,
            listener,
            options,
            stop,
            folder,
            digests,
            waker,
            ..
        } = self;
        let (folder_tx, folder_rx) = std::sync::mpsc::channel();
        watch_folder(
            options.files.clone(),
            options.rescan_every,
            digests,
            folder.identities.clone(),
            stop.clone(),
            move |scanned| folder_tx.send(scanned).is_ok() && waker.wake().is_ok(),
        )?;
        let core = ChatServer::new(
            options.chat.clone(),
            folder.catalogue.clone(),
            log::random_seed(),
        );
        let mut state = State {
            core,
            folder,
            conns: HashMap::new(),
            transfers: HashMap::new(),
            readable: VecDeque::new(),
            udp_readable: VecDeque::new(),
            paused: Vec::new(),
            idle_ports: HashMap::new(),
            accept_retry: None,
            next_conn: 0,
            read_buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
            options,
        };
        state.bind_transfer_ports(Instant::now(), poll.registry());
        tracing::info!("[STARTED] Waiting for connections...");
        let mut events = Events::with_capacity(1024);
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let timeout = if state.readable.is_empty() && state.udp_readable.is_empty() {
                state
                    .next_deadline()
                    .map(|at| at.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => state.accept_all(now, &listener, poll.registry()),
                    WAKER => {
                        // The folder watcher has news (or the handle asks us to stop).
                        while let Ok(scanned) = folder_rx.try_recv() {
                            state.core.set_catalogue(scanned.catalogue.clone());
                            state.folder = scanned;
                        }
                    }
                    Token(t) if t >= FIRST_CONN => {
                        let conn = (t - FIRST_CONN) as u64;
                        let wants_read =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if wants_read && !state.readable.contains(&conn) {
                            state.readable.push_back(conn);
                        }
                        if event.is_writable() {
                            state.flush(now, conn);
                        }
                    }
                    Token(t) => {
                        if let Ok(port) = u16::try_from(t - UDP_TOKENS) {
                            state.transfer_ready(now, port);
                        }
                    }
                }
            }
            if state.accept_retry.is_some_and(|at| at <= now) {
                state.accept_retry = None;
                state.accept_all(now, &listener, poll.registry());
            }
            state.resume_paused(now);
            state.read_round(now);
            for _ in 0..state.udp_readable.len() {
                if let Some(port) = state.udp_readable.pop_front() {
                    state.transfer_ready(now, port);
                }
            }
            state.handle_timeouts(Instant::now());
            state.apply_outputs(Instant::now());
        }
        Ok(())
    }
}

struct State {
    core: ChatServer,
    folder: ScannedFolder,
    conns: HashMap<u64, Conn>,
    transfers: HashMap<u16, Transfer>,
    /// Connections with bytes (or an end) waiting in the kernel, read one chunk each per round.
    readable: VecDeque<u64>,
    /// When to call `accept` again after it failed for want of resources.
    accept_retry: Option<Instant>,
    /// Bound transfer ports with no transfer on them.
    idle_ports: HashMap<u16, UdpSocket>,
    /// Connections not to be read before a time, because they sent more than their share (C6).
    paused: Vec<(Instant, u64)>,
    /// Transfer sockets whose last read stopped at the batch limit, not at an empty queue.
    udp_readable: VecDeque<u16>,
    next_conn: u64,
    read_buf: Vec<u8>,
    options: ServerOptions,
}

impl State {
    /// Connections whose pause is over are read again.
    fn resume_paused(&mut self, now: Instant) {
        let readable = &mut self.readable;
        self.paused.retain(|&(until, conn)| {
            let due = until <= now;
            if due && !readable.contains(&conn) {
                readable.push_back(conn);
            }
            !due
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        let transfers = self
            .transfers
            .values()
            .filter_map(|t| t.upload.poll_timeout());
        let paused = self.paused.iter().map(|&(until, _)| until);
        self.core
            .poll_timeout()
            .into_iter()
            .chain(transfers)
            .chain(paused)
            .min()
    }

    fn accept_all(&mut self, now: Instant, listener: &TcpListener, registry: &mio::Registry) {
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    let token = Token(FIRST_CONN + conn as usize);
                    if let Err(err) = registry.register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!("cannot watch a new connection: {err}");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    net::keep_alive(&stream);
                    self.conns.insert(
                        conn,
                        Conn {
                            stream,
                            queue: VecDeque::new(),
                            front_done: 0,
                            closing: false,
                        },
                    );
                    self.core
                        .handle_input(now, ServerInput::Opened { conn, peer });
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                // A connection reset before we took it: the next one may be fine.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => {
                    // Out of descriptors, most likely. The listener is edge-triggered, so the
                    // connections already waiting would sit there until a new one arrived: try
                    // again shortly instead.
                    tracing::warn!("accept failed: {err}; trying again shortly");
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// One chunk from every connection that has bytes waiting: fair between a flooder and the rest.
    fn read_round(&mut self, now: Instant) {
        for _ in 0..self.readable.len() {
            let Some(conn) = self.readable.pop_front() else {
                break;
            };
            if let Some(until) = self.core.may_read(conn, now) {
                // It sent more than its share (C6): its bytes wait in the kernel meanwhile.
                self.paused.push((until, conn));
                continue;
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            match c.stream.read(&mut self.read_buf[..READ_CHUNK]) {
                Ok(0) => self.lost(now, conn),
                Ok(n) => {
                    self.core.handle_input(
                        now,
                        ServerInput::Received {
                            conn,
                            bytes: &self.read_buf[..n],
                        },
                    );
                    self.readable.push_back(conn);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                    self.readable.push_back(conn)
                }
                Err(_) => self.lost(now, conn),
            }
        }
    }

    /// The peer went away (closed, reset, or an error): the core announces the leave.
    fn lost(&mut self, now: Instant, conn: u64) {
        if self.conns.remove(&conn).is_some() {
            self.core.handle_input(now, ServerInput::Closed { conn });
        }
    }

    fn flush(&mut self, now: Instant, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut written_total = 0;
        let mut failed = false;
        while !c.queue.is_empty() {
            let mut slices = Vec::with_capacity(MAX_IOVECS.min(c.queue.len()));
            for (i, buf) in c.queue.iter().take(MAX_IOVECS).enumerate() {
                let start = if i == 0 { c.front_done } else { 0 };
                slices.push(IoSlice::new(&buf[start..]));
            }
            match c.stream.write_vectored(&slices) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(mut n) => {
                    written_total += n;
                    while n > 0 {
                        let Some(front) = c.queue.front() else { break };
                        let left = front.len() - c.front_done;
                        if n >= left {
                            n -= left;
                            c.queue.pop_front();
                            c.front_done = 0;
                        } else {
                            c.front_done += n;
                            n = 0;
                        }
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        // The core has forgotten a connection it closed: what fits in the socket now is sent, the
        // rest is dropped with it (a client that stopped reading gets no more of our memory).
        let done_closing = c.closing;
        if written_total > 0 {
            self.core.handle_input(
                now,
                ServerInput::Sent {
                    conn,
                    len: written_total,
                },
            );
        }
        if failed {
            self.lost(now, conn);
        } else if done_closing && let Some(c) = self.conns.remove(&conn) {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
        }
        for transfer in self.transfers.values_mut() {
            if transfer.upload.poll_timeout().is_some_and(|at| at <= now) {
                transfer.upload.handle_timeout(now);
            }
        }
        let ports: Vec<u16> = self.transfers.keys().copied().collect();
        for port in ports {
            self.send_parts(now, port);
        }
    }

    /// Performs what the core asks until it asks nothing more. Writing reports `Sent`, which can
    /// release a presence line the core held back, so this loops until a round produces nothing.
    fn apply_outputs(&mut self, now: Instant) {
        loop {
            let mut touched = Vec::new();
            let mut any = false;
            while let Some(output) = self.core.poll_output() {
                any = true;
                match output {
                    ServerOutput::Send { conn, bytes } => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.queue.push_back(bytes);
                            touched.push(conn);
                        }
                    }
                    ServerOutput::Close { conn } => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.closing = true;
                            touched.push(conn);
                        }
                    }
                    ServerOutput::StartTransfer(offer) => self.start_transfer(now, offer),
                    ServerOutput::Log(event) => log::server_event(&event),
                }
            }
            if !any {
                return;
            }
            touched.sort_unstable();
            touched.dedup();
            for conn in touched {
                self.flush(now, conn);
            }
        }
    }

    /// Binds every transfer port once, at start-up, and keeps them: a port that another program
    /// holds is known before anyone is offered it (the core skips it), instead of an offer going
    /// out for a port nobody will answer on.
    fn bind_transfer_ports(&mut self, now: Instant, registry: &mio::Registry) {
        for port in self.options.chat.udp_ports.clone() {
            let addr = SocketAddr::new(self.options.addr.ip(), port);
            let bound = net::udp_socket(addr)
                .map(UdpSocket::from_std)
                .and_then(|mut socket| {
                    registry.register(
                        &mut socket,
                        Token(UDP_TOKENS + usize::from(port)),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    Ok(socket)
                });
            match bound {
                Ok(socket) => {
                    self.idle_ports.insert(port, socket);
                }
                Err(err) => {
                    tracing::warn!("UDP port {port} is not usable ({err}); it will not be offered");
                    self.core
                        .handle_input(now, ServerInput::PortUnavailable { port });
                }
            }
        }
        if self.idle_ports.is_empty() {
            tracing::warn!("no transfer port could be bound: downloads are off");
        }
    }

    fn start_transfer(&mut self, now: Instant, offer: TransferOffer) {
        let port = offer.port;
        let Some(socket) = self.idle_ports.remove(&port) else {
            // The core only offers ports that were bound and are free; this cannot happen, but
            // if it did, ending the transfer frees the port in the core again.
            tracing::warn!("no socket for UDP port {port}");
            self.core
                .handle_input(now, ServerInput::TransferEnded { port });
            return;
        };
        tracing::info!(
            "[UDP STARTED] Waiting for connections... port {port}, transfer {}, file {}",
            offer.transfer_id,
            offer.file
        );
        let identity = self.folder.identities.get(&offer.file).copied();
        let upload = Upload::start(
            now,
            &offer,
            &self.options.files,
            identity,
            self.options.idle_timeout,
        );
        self.transfers.insert(
            port,
            Transfer {
                socket,
                upload,
                writable_wait: false,
            },
        );
    }

    fn transfer_ready(&mut self, now: Instant, port: u16) {
        let Some(t) = self.transfers.get_mut(&port) else {
            return;
        };
        t.writable_wait = false;
        let mut drained = false;
        for _ in 0..UDP_BATCH {
            match t.socket.recv_from(&mut self.read_buf) {
                Ok((n, from)) => t.upload.on_datagram(now, from, &self.read_buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                // An ICMP error from an earlier send, or an interrupted call: go on reading.
                Err(_) => {}
            }
        }
        if !drained && !self.udp_readable.contains(&port) {
            self.udp_readable.push_back(port);
        }
        self.send_parts(now, port);
    }

    fn send_parts(&mut self, now: Instant, port: u16) {
        let Some(t) = self.transfers.get_mut(&port) else {
            return;
        };
        if t.writable_wait {
            return;
        }
        // Everything the sender wants now, a GSO send (or a `sendmmsg`) per system call.
        if t.upload.send_due(now, &t.socket).is_err() {
            t.writable_wait = true;
            return;
        }
        if let Some(end) = t.upload.end() {
            tracing::info!("transfer on port {port} ended: {end:?}");
            if let Some(t) = self.transfers.remove(&port) {
                self.idle_ports.insert(port, t.socket);
            }
            self.core
                .handle_input(now, ServerInput::TransferEnded { port });
        }
    }
}
