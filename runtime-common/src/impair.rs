//! The sockets of `natter impair`: a proxy in front of a natter server that relays the chat over
//! TCP untouched and passes every transfer datagram through the core's [`Impairer`].
//!
//! Topology. An unmodified client connects its chat to the proxy and sends its transfer datagrams
//! to the proxy's IP at the port of the server's offer. So the proxy listens for TCP on `listen`
//! and for UDP on `listen.ip()` at every port of the server's transfer range (the same numbers),
//! and forwards to the server's chat address and to `server.ip()` at the same port. The server
//! accepts a transfer's datagrams only from the IP of the chat connection (U2) and locks the
//! transfer to the first address that sends a valid REQUEST, so every upstream connection and
//! socket is made from one local IP (`upstream_ip`), with one UDP socket per client and port
//! (a flow, see [`Flows`]) so that replies find their way back.
//!
//! One thread waits on every UDP socket with `poll(2)` and feeds the impairer; each chat
//! connection is relayed by two threads of its own, blocking, byte for byte.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::UdpSocket;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use natter_core::impair::flows::{FlowCounters, FlowKey, FlowLimits, Flows, Lookup};
use natter_core::impair::{Delivery, FlowId, ImpairConfig, Impairer, Way, WayCounters};
use rustix::event::{PollFd, PollFlags, Timespec};
use socket2::{Domain, Socket, Type};

use crate::net;

/// How long the proxy tries to reach the server's chat port for a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Datagrams read from one socket before the others get a turn: a busy flow must not delay the
/// deliveries that are due (and so the timing the impairment promises).
const READS_PER_TURN: usize = 64;

/// The loop wakes at least this often to publish its counters and see whether it must stop.
const TICK: Duration = Duration::from_millis(50);

/// Large enough for any UDP datagram.
const DATAGRAM_BUF: usize = 65_536;

/// What the proxy relays, from where to where, and how it impairs.
#[derive(Debug, Clone)]
pub struct ImpairOptions {
    /// Where clients connect their chat (TCP); the transfer ports listen on the same IP, which
    /// must be a specific one (a reply must come from the address the client sent to).
    pub listen: SocketAddr,
    /// The natter server's chat address; its transfer ports are on the same IP.
    pub server: SocketAddr,
    /// The server's transfer port range; the proxy listens on the same numbers.
    pub ports: RangeInclusive<u16>,
    /// The local IP of every upstream connection and socket; `None`: [`default_upstream_ip`].
    pub upstream_ip: Option<IpAddr>,
    /// What happens to datagrams each way.
    pub impair: ImpairConfig,
    /// Every impairment decision follows from it.
    pub seed: u64,
    /// How many flows, and how long an idle one lives.
    pub flows: FlowLimits,
    /// The most chat connections relayed at once; more are closed at once.
    pub max_connections: usize,
}

/// Where the proxy speaks to the server from, unless told: 127.0.0.3 for a server on IPv4
/// loopback, so that the server's log and per-IP limits tell proxied clients from direct ones
/// (127.0.0.1); elsewhere the unspecified address, which lets the kernel pick the route's source
/// address, the same one for the TCP connection and the UDP sockets.
pub fn default_upstream_ip(server: IpAddr) -> IpAddr {
    match server {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// What the chat relay did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatCounters {
    /// Connections relayed now.
    pub open: usize,
    /// Connections accepted and relayed.
    pub accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub refused: u64,
    /// Connections closed because the server could not be reached.
    pub upstream_failed: u64,
}

/// Everything the proxy counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Client to server datagrams.
    pub to_server: WayCounters,
    /// Server to client datagrams.
    pub to_client: WayCounters,
    /// The flow table.
    pub flows: FlowCounters,
    /// The chat relay.
    pub chat: ChatCounters,
    /// Datagrams the kernel would not take (a full buffer, an unreachable peer): lost, in effect.
    pub send_errors: u64,
    /// Client datagrams dropped because no upstream socket could be opened for them.
    pub no_upstream: u64,
}

impl ProxyCounters {
    /// The counters of one way.
    pub fn way(&self, way: Way) -> &WayCounters {
        match way {
            Way::ToServer => &self.to_server,
            Way::ToClient => &self.to_client,
        }
    }
}

impl fmt::Display for ProxyCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for way in Way::BOTH {
            writeln!(f, "  {way}: {}", self.way(way))?;
        }
        let (fl, c) = (&self.flows, &self.chat);
        write!(
            f,
            "  flows: {} open, {} opened, {} expired, {} evicted; send errors {}, no upstream {}\n  \
             chat: {} open, {} accepted, {} refused, {} could not reach the server",
            fl.open,
            fl.opened,
            fl.expired,
            fl.evicted,
            self.send_errors,
            self.no_upstream,
            c.open,
            c.accepted,
            c.refused,
            c.upstream_failed
        )
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ImpairError {
    #[error(
        "listen on a specific IP, not {0}: replies must come from the address the client sent to"
    )]
    UnspecifiedListen(IpAddr),
    #[error("cannot listen for chat on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(
        "cannot bind UDP {addr}: {source} (the proxy needs an IP of its own, such as 127.0.0.2, \
         when the server's transfer ports use the same numbers)"
    )]
    Port { addr: SocketAddr, source: io::Error },
    #[error("cannot start the proxy: {0}")]
    Io(#[from] io::Error),
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct ProxyHandle {
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: SocketAddr,
    counters: Arc<Mutex<ProxyCounters>>,
    thread: Option<JoinHandle<()>>,
}

impl ProxyHandle {
    /// Where clients connect their chat (the actual port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The counters as of the last few tens of milliseconds.
    pub fn counters(&self) -> ProxyCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops relaying, closes every socket and connection, and returns the final counters.
    pub fn stop(mut self) -> ProxyCounters {
        self.shut_down();
        self.counters()
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the loop at once rather than at its next tick (best effort: it ticks anyway).
        if let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
            let _ = socket.send_to(&[0], self.waker);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Binds every socket of `options` and starts relaying on a thread of its own.
pub fn start(options: ImpairOptions, now: Instant) -> Result<ProxyHandle, ImpairError> {
    let listen_ip = options.listen.ip();
    if listen_ip.is_unspecified() {
        return Err(ImpairError::UnspecifiedListen(listen_ip));
    }
    let listen = |source| ImpairError::Listen { addr: options.listen, source };
    let tcp = TcpListener::bind(options.listen).map_err(listen)?;
    tcp.set_nonblocking(true).map_err(listen)?;
    let listen_addr = tcp.local_addr().map_err(listen)?;
    let mut ports = Vec::new();
    for port in options.ports.clone() {
        let addr = SocketAddr::new(listen_ip, port);
        let socket = net::udp_socket(addr).map_err(|source| ImpairError::Port { addr, source })?;
        ports.push(socket);
    }
    let waker = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    waker.set_nonblocking(true)?;
    let waker_addr = waker.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Mutex::new(ProxyCounters::default()));
    let upstream_ip =
        options.upstream_ip.unwrap_or_else(|| default_upstream_ip(options.server.ip()));
    let proxy = Proxy {
        impairer: Impairer::new(options.impair.clone(), options.seed, now),
        flows: Flows::new(options.flows),
        first_port: *options.ports.start(),
        ports,
        upstream: HashMap::new(),
        server: options.server,
        upstream_ip,
        chat: ChatRelay::new(
            tcp,
            options.server,
            upstream_ip,
            options.max_connections,
            stop.clone(),
        ),
        waker,
        stop: stop.clone(),
        published: counters.clone(),
        counters: ProxyCounters::default(),
        buf: vec![0; DATAGRAM_BUF],
    };
    let thread = std::thread::Builder::new().name("natter-impair".into()).spawn(move || {
        proxy.run();
    })?;
    Ok(ProxyHandle { listen: listen_addr, stop, waker: waker_addr, counters, thread: Some(thread) })
}

/// The proxy loop's state.
struct Proxy {
    impairer: Impairer,
    flows: Flows,
    first_port: u16,
    /// The client-facing transfer sockets, `first_port` first.
    ports: Vec<UdpSocket>,
    /// Each flow's upstream socket, connected to the server's port of the flow.
    upstream: HashMap<FlowId, UdpSocket>,
    server: SocketAddr,
    upstream_ip: IpAddr,
    chat: ChatRelay,
    waker: UdpSocket,
    stop: Arc<AtomicBool>,
    published: Arc<Mutex<ProxyCounters>>,
    counters: ProxyCounters,
    buf: Vec<u8>,
}

/// Which socket a poll entry is.
#[derive(Debug, Clone, Copy)]
enum Source {
    Waker,
    Chat,
    Port(usize),
    Upstream(FlowId),
}

impl Proxy {
    fn run(mut self) {
        let mut last_publish = Instant::now();
        let mut ready = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let wake = [self.impairer.poll_timeout(), self.flows.poll_timeout()]
                .into_iter()
                .flatten()
                .fold(now + TICK, Instant::min);
            if let Err(err) = self.wait(wake.saturating_duration_since(now), &mut ready) {
                tracing::error!("natter impair: poll failed: {err}");
                break;
            }
            for &source in &ready {
                self.read(source);
            }
            self.deliver_due(Instant::now());
            self.expire_flows(Instant::now());
            self.chat.reap();
            if last_publish.elapsed() >= TICK {
                self.publish();
                last_publish = Instant::now();
            }
        }
        self.chat.close_all();
        self.publish();
    }

    /// Waits up to `timeout` for any socket to be readable; `ready` gets the ones that are.
    fn wait(&self, timeout: Duration, ready: &mut Vec<Source>) -> io::Result<()> {
        ready.clear();
        let mut sources = vec![Source::Waker, Source::Chat];
        let mut fds = vec![
            PollFd::new(&self.waker, PollFlags::IN),
            PollFd::new(self.chat.listener(), PollFlags::IN),
        ];
        for (index, socket) in self.ports.iter().enumerate() {
            sources.push(Source::Port(index));
            fds.push(PollFd::new(socket, PollFlags::IN));
        }
        for (&id, socket) in &self.upstream {
            sources.push(Source::Upstream(id));
            fds.push(PollFd::new(socket, PollFlags::IN));
        }
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 });
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        ready.extend(
            fds.iter().zip(&sources).filter(|(fd, _)| !fd.revents().is_empty()).map(|(_, &s)| s),
        );
        Ok(())
    }

    fn read(&mut self, source: Source) {
        match source {
            Source::Waker => while self.waker.recv(&mut self.buf).is_ok() {},
            Source::Chat => self.chat.accept(),
            Source::Port(index) => self.read_port(index),
            Source::Upstream(id) => self.read_upstream(id),
        }
    }

    /// Datagrams from clients on one transfer port: each goes to its flow, then to the impairer.
    fn read_port(&mut self, index: usize) {
        let port = self.first_port + index as u16;
        for _ in 0..READS_PER_TURN {
            let (len, client) = match self.ports[index].recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                // An ICMP error from an earlier send to a client that is gone: nothing to read.
                Err(_) => continue,
            };
            let now = Instant::now();
            let id = match self.flows.from_client(now, FlowKey { client, port }) {
                Lookup::Known(id) => id,
                Lookup::New { id, evicted } => {
                    if let Some(old) = evicted {
                        self.close_flow(old);
                    }
                    match self.open_upstream(port) {
                        Ok(socket) => {
                            self.upstream.insert(id, socket);
                            id
                        }
                        Err(err) => {
                            tracing::warn!("no upstream socket for {client} on port {port}: {err}");
                            self.flows.remove(id);
                            self.counters.no_upstream += 1;
                            continue;
                        }
                    }
                }
            };
            self.impairer.handle_datagram(now, Way::ToServer, id, &self.buf[..len]);
        }
    }

    /// Datagrams from the server on one flow's socket.
    fn read_upstream(&mut self, id: FlowId) {
        for _ in 0..READS_PER_TURN {
            let Some(socket) = self.upstream.get(&id) else { return };
            let len = match socket.recv(&mut self.buf) {
                Ok(len) => len,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let now = Instant::now();
            if self.flows.from_server(now, id).is_some() {
                self.impairer.handle_datagram(now, Way::ToClient, id, &self.buf[..len]);
            }
        }
    }

    fn open_upstream(&self, port: u16) -> io::Result<UdpSocket> {
        let socket = net::udp_socket(SocketAddr::new(self.upstream_ip, 0))?;
        socket.connect(SocketAddr::new(self.server.ip(), port))?;
        Ok(socket)
    }

    /// Sends every copy that is due.
    fn deliver_due(&mut self, now: Instant) {
        while let Some(Delivery { way, flow, bytes }) = self.impairer.poll_transmit(now) {
            let sent = match way {
                Way::ToServer => self.upstream.get(&flow).map(|socket| socket.send(&bytes)),
                Way::ToClient => self.flows.key(flow).and_then(|key| {
                    let socket = self.ports.get(usize::from(key.port - self.first_port))?;
                    Some(socket.send_to(&bytes, key.client))
                }),
            };
            if !matches!(sent, Some(Ok(_))) {
                self.counters.send_errors += 1;
            }
        }
    }

    fn expire_flows(&mut self, now: Instant) {
        while let Some(id) = self.flows.poll_expired(now) {
            self.close_flow(id);
        }
    }

    fn close_flow(&mut self, id: FlowId) {
        self.upstream.remove(&id);
        self.impairer.forget_flow(id);
    }

    fn publish(&mut self) {
        self.counters.to_server = self.impairer.counters(Way::ToServer);
        self.counters.to_client = self.impairer.counters(Way::ToClient);
        self.counters.flows = self.flows.counters();
        self.counters.chat = self.chat.counters();
        *self.published.lock().unwrap_or_else(PoisonError::into_inner) = self.counters;
    }
}

/// The streams of every relayed chat connection, so that stopping can cut them all.
type Registry = Arc<Mutex<HashMap<u64, Vec<TcpStream>>>>;

/// The chat relay: accepts on the proxy's chat port and relays each connection to the server,
/// byte for byte, from the upstream IP.
struct ChatRelay {
    listener: TcpListener,
    server: SocketAddr,
    upstream_ip: IpAddr,
    max_connections: usize,
    stop: Arc<AtomicBool>,
    registry: Registry,
    threads: Vec<JoinHandle<()>>,
    next_id: u64,
    accepted: u64,
    refused: u64,
    upstream_failed: Arc<AtomicU64>,
}

impl ChatRelay {
    fn new(
        listener: TcpListener,
        server: SocketAddr,
        upstream_ip: IpAddr,
        max_connections: usize,
        stop: Arc<AtomicBool>,
    ) -> Self {
        ChatRelay {
            listener,
            server,
            upstream_ip,
            max_connections,
            stop,
            registry: Arc::default(),
            threads: Vec::new(),
            next_id: 0,
            accepted: 0,
            refused: 0,
            upstream_failed: Arc::default(),
        }
    }

    fn listener(&self) -> &TcpListener {
        &self.listener
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<TcpStream>>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn accept(&mut self) {
        loop {
            let client = match self.listener.accept() {
                Ok((client, _)) => client,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                // A connection reset before it was accepted, or out of descriptors: try later.
                Err(_) => return,
            };
            if self.lock().len() >= self.max_connections {
                self.refused += 1;
                drop(client);
                continue;
            }
            // Accepted sockets do not inherit the listener's non-blocking mode on every system.
            if client.set_nonblocking(false).is_err() {
                continue;
            }
            let Ok(clone) = client.try_clone() else { continue };
            let id = self.next_id;
            self.next_id += 1;
            self.lock().insert(id, vec![clone]);
            self.accepted += 1;
            let relay = Relay {
                id,
                server: self.server,
                upstream_ip: self.upstream_ip,
                registry: self.registry.clone(),
                stop: self.stop.clone(),
                upstream_failed: self.upstream_failed.clone(),
            };
            match std::thread::Builder::new().name("natter-impair-chat".into()).spawn(move || {
                relay.run(client);
            }) {
                Ok(thread) => self.threads.push(thread),
                Err(err) => {
                    tracing::warn!("cannot relay a chat connection: {err}");
                    if let Some(streams) = self.lock().remove(&id) {
                        shut_all(&streams);
                    }
                }
            }
        }
    }

    /// Joins the relays that ended.
    fn reap(&mut self) {
        let (done, running) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition::<Vec<_>, _>(|thread| thread.is_finished());
        self.threads = running;
        for thread in done {
            let _ = thread.join();
        }
    }

    fn close_all(&mut self) {
        for streams in self.lock().values() {
            shut_all(streams);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    fn counters(&self) -> ChatCounters {
        ChatCounters {
            open: self.lock().len(),
            accepted: self.accepted,
            refused: self.refused,
            upstream_failed: self.upstream_failed.load(Ordering::Relaxed),
        }
    }
}

fn shut_all(streams: &[TcpStream]) {
    for stream in streams {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// One relayed chat connection.
struct Relay {
    id: u64,
    server: SocketAddr,
    upstream_ip: IpAddr,
    registry: Registry,
    stop: Arc<AtomicBool>,
    upstream_failed: Arc<AtomicU64>,
}

impl Relay {
    fn run(self, client: TcpStream) {
        if let Some(upstream) = self.connect() {
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            match (client.try_clone(), upstream.try_clone()) {
                (Ok(client_read), Ok(upstream_write)) => {
                    let up = std::thread::Builder::new()
                        .name("natter-impair-chat".into())
                        .spawn(move || pump(client_read, upstream_write));
                    pump(upstream, client);
                    if let Ok(up) = up {
                        let _ = up.join();
                    }
                }
                _ => shut_all(&[client, upstream]),
            }
        } else {
            let _ = client.shutdown(Shutdown::Both);
        }
        self.registry.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }

    /// The upstream connection, from the upstream IP, registered so that stopping cuts it; `None`
    /// when the server cannot be reached or the proxy is stopping.
    fn connect(&self) -> Option<TcpStream> {
        let upstream = match connect_from(self.upstream_ip, self.server) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!("cannot reach the server at {}: {err}", self.server);
                self.upstream_failed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let clone = upstream.try_clone().ok()?;
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock: either stopping already cut what is registered (and we see the flag),
        // or it will cut this stream too.
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        registry.entry(self.id).or_default().push(clone);
        Some(upstream)
    }
}

/// A blocking TCP connection to `server` from `ip` (any port; the unspecified IP lets the kernel
/// choose).
fn connect_from(ip: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, None)?;
    if !ip.is_unspecified() {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&server.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// Copies `from` to `to` until the end; at a clean end the write side of `to` is shut (the far end
/// sees the same end of stream), on an error both connections are cut so the other direction
/// ends too.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    match io::copy(&mut from, &mut to) {
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => shut_all(&[from, to]),
    }
}
