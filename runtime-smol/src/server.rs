//! The chat server and its transfer ports as smol tasks around one shared core.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use natter_core::chat::catalogue::DigestCache;
use natter_core::chat::server::{ChatServer, ServerInput, ServerOutput, TransferOffer};
use natter_runtime_common::upload::MAX_DATAGRAM;
use natter_runtime_common::{
    ScannedFolder, ServerOptions, Upload, initial_scan, log, net, watch_folder,
};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Async, LocalExecutor, Timer};

/// Bytes a connection's task reads at a time.
const IDLE_READ_BUFFER: usize = 2048;
/// Buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long a connection the core closed may take to receive what was queued before the close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

enum WriterMsg {
    Data(Bytes),
    Close,
}

struct Hub {
    core: ChatServer,
    writers: HashMap<u64, (Sender<WriterMsg>, TcpStream)>,
    folder: ScannedFolder,
    options: ServerOptions,
    /// Bound transfer ports with no transfer on them (see `bind_transfer_ports`).
    idle_ports: HashMap<u16, Async<UdpSocket>>,
}

type Shared = Rc<RefCell<Hub>>;

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    options: ServerOptions,
    folder: ScannedFolder,
    digests: DigestCache,
}

/// A server running on its own thread; dropping the handle stops it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.take();
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
        let listener = TcpListener::bind(options.addr)?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            options,
            folder,
            digests,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn spawn(self) -> ServerHandle {
        let local_addr = self.local_addr;
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("natter-server-smol".into())
            .spawn(move || self.run_until(stop_rx))
            .ok();
        ServerHandle {
            local_addr,
            stop: Some(stop_tx),
            thread,
        }
    }

    /// Runs on this thread until the process ends.
    pub fn run(self) -> io::Result<()> {
        let (_keep, stop_rx) = smol::channel::bounded::<()>(1);
        self.run_until(stop_rx)
    }

    fn run_until(self, stop: Receiver<()>) -> io::Result<()> {
        let executor = Rc::new(LocalExecutor::new());
        let listener = Async::new(self.listener)?;
        let (folder, digests) = (self.folder, self.digests);
        // The watcher thread stops when this function returns (and with it the executor).
        let stopped = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (folder_tx, folder_rx) = smol::channel::unbounded();
        watch_folder(
            self.options.files.clone(),
            self.options.rescan_every,
            digests,
            folder.identities.clone(),
            stopped.0.clone(),
            move |scanned| folder_tx.send_blocking(scanned).is_ok(),
        )?;
        let core = ChatServer::new(
            self.options.chat.clone(),
            folder.catalogue.clone(),
            log::random_seed(),
        );
        let hub: Shared = Rc::new(RefCell::new(Hub {
            core,
            writers: HashMap::new(),
            folder,
            options: self.options,
            idle_ports: HashMap::new(),
        }));
        bind_transfer_ports(&hub);
        tracing::info!("[STARTED] Waiting for connections...");
        let ex = executor.clone();
        // Capacity 1: one pending "look again" is as good as many.
        let (deadline_tx, deadline_rx) = smol::channel::bounded::<()>(1);
        let accept_loop = async move {
            executor
                .spawn(timer_task(hub.clone(), executor.clone(), deadline_rx))
                .detach();
            let folder_hub = hub.clone();
            executor
                .spawn(async move {
                    while let Ok(scanned) = folder_rx.recv().await {
                        let mut h = folder_hub.borrow_mut();
                        h.core.set_catalogue(scanned.catalogue.clone());
                        h.folder = scanned;
                    }
                })
                .detach();
            let mut next_conn = 0u64;
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let conn = next_conn;
                        next_conn += 1;
                        let stream = TcpStream::from(stream);
                        let _ = stream.set_nodelay(true);
                        net::keep_alive(&stream);
                        let (tx, rx) = smol::channel::unbounded();
                        {
                            let mut h = hub.borrow_mut();
                            h.writers.insert(conn, (tx, stream.clone()));
                            h.core
                                .handle_input(Instant::now(), ServerInput::Opened { conn, peer });
                        }
                        let _ = deadline_tx.try_send(());
                        drain(&hub, &executor);
                        executor
                            .spawn(writer_task(
                                hub.clone(),
                                executor.clone(),
                                conn,
                                stream.clone(),
                                rx,
                            ))
                            .detach();
                        executor
                            .spawn(reader_task(hub.clone(), executor.clone(), conn, stream))
                            .detach();
                    }
                    Err(err) => {
                        tracing::warn!("accept failed: {err}");
                        Timer::after(Duration::from_millis(10)).await;
                    }
                }
            }
        };
        let stopped = async move {
            let _ = stop.recv().await;
            Ok(())
        };
        smol::block_on(ex.run(accept_loop.or(stopped)))
    }
}

/// Performs what the core asks, right after each input.
fn drain(hub: &Shared, executor: &Rc<LocalExecutor<'static>>) {
    loop {
        let output = hub.borrow_mut().core.poll_output();
        let Some(output) = output else { return };
        match output {
            ServerOutput::Send { conn, bytes } => {
                if let Some((tx, _)) = hub.borrow().writers.get(&conn) {
                    let _ = tx.try_send(WriterMsg::Data(bytes));
                }
            }
            ServerOutput::Close { conn } => {
                let known = hub.borrow_mut().writers.remove(&conn);
                if let Some((tx, stream)) = known {
                    let _ = tx.try_send(WriterMsg::Close);
                    // What was queued before the close gets a moment to leave (an ERROR line
                    // before a refusal); a client that does not read at all is cut off then.
                    executor
                        .spawn(async move {
                            Timer::after(CLOSE_GRACE).await;
                            let _ = stream.shutdown(std::net::Shutdown::Both);
                        })
                        .detach();
                }
            }
            ServerOutput::StartTransfer(offer) => start_transfer(hub, executor, offer),
            ServerOutput::Log(event) => log::server_event(&event),
        }
    }
}

fn input(hub: &Shared, executor: &Rc<LocalExecutor<'static>>, input: ServerInput<'_>) {
    hub.borrow_mut().core.handle_input(Instant::now(), input);
    drain(hub, executor);
}

async fn reader_task(
    hub: Shared,
    executor: Rc<LocalExecutor<'static>>,
    conn: u64,
    mut stream: TcpStream,
) {
    // Small: every idle connection's task holds it while it waits (10,000 connections at 16 KiB
    // each were 160 MB); chat lines are short, and a long one just takes a second read.
    let mut buf = vec![0u8; IDLE_READ_BUFFER];
    loop {
        // A connection that sent more than its share (C6) waits; its bytes stay in the kernel.
        loop {
            let pause = hub.borrow_mut().core.may_read(conn, Instant::now());
            match pause {
                Some(until) => Timer::at(until).await,
                None => break,
            };
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => input(
                &hub,
                &executor,
                ServerInput::Received {
                    conn,
                    bytes: &buf[..n],
                },
            ),
        }
        // Let every other connection have its turn before this one is read again.
        smol::future::yield_now().await;
        if !hub.borrow().writers.contains_key(&conn) {
            return; // the core closed it; the writer task ends it
        }
    }
    let known = hub.borrow_mut().writers.remove(&conn);
    if let Some((tx, _)) = known {
        let _ = tx.try_send(WriterMsg::Close);
        input(&hub, &executor, ServerInput::Closed { conn });
    }
}

async fn writer_task(
    hub: Shared,
    executor: Rc<LocalExecutor<'static>>,
    conn: u64,
    mut stream: TcpStream,
    rx: Receiver<WriterMsg>,
) {
    // Everything queued by the time the socket is writable goes out in one vectored write: a
    // burst of chat lines costs one syscall, not one each.
    let mut batch: Vec<Bytes> = Vec::new();
    let mut closing = false;
    while !closing {
        match rx.recv().await {
            Ok(WriterMsg::Data(bytes)) => batch.push(bytes),
            Ok(WriterMsg::Close) | Err(_) => break,
        }
        while batch.len() < MAX_IOVECS {
            match rx.try_recv() {
                Ok(WriterMsg::Data(bytes)) => batch.push(bytes),
                Ok(WriterMsg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let len: usize = batch.iter().map(Bytes::len).sum();
        if write_all_vectored(&mut stream, &mut batch).await.is_err() {
            let known = hub.borrow_mut().writers.remove(&conn);
            if known.is_some() {
                input(&hub, &executor, ServerInput::Closed { conn });
            }
            break;
        }
        input(&hub, &executor, ServerInput::Sent { conn, len });
    }
    let _ = stream.flush().await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Writes every buffer of `batch` (and empties it), as few syscalls as the socket allows.
async fn write_all_vectored(stream: &mut TcpStream, batch: &mut Vec<Bytes>) -> io::Result<()> {
    let mut first = 0;
    let mut offset = 0;
    while first < batch.len() {
        let slices: Vec<std::io::IoSlice<'_>> = batch[first..]
            .iter()
            .enumerate()
            .map(|(i, b)| std::io::IoSlice::new(if i == 0 { &b[offset..] } else { b }))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 && first < batch.len() {
            let left = batch[first].len() - offset;
            if written >= left {
                written -= left;
                first += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}

/// Calls the core's `handle_timeout` when its deadline comes. It sleeps until that deadline, or
/// until a new connection may have brought an earlier one (only `Opened` adds deadlines): an idle
/// server does not wake at all.
async fn timer_task(
    hub: Shared,
    executor: Rc<LocalExecutor<'static>>,
    deadline_moved: Receiver<()>,
) {
    loop {
        let now = Instant::now();
        let due = hub.borrow().core.poll_timeout();
        if due.is_some_and(|at| at <= now) {
            hub.borrow_mut().core.handle_timeout(now);
            drain(&hub, &executor);
        }
        let next = hub.borrow().core.poll_timeout();
        let moved = async {
            let _ = deadline_moved.recv().await;
        };
        match next {
            Some(at) => {
                moved
                    .or(async {
                        Timer::at(at).await;
                    })
                    .await
            }
            None => moved.await,
        }
    }
}

/// Sets the flag when dropped: tells the folder watcher that the server is gone.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Binds every transfer port once, at start-up, and keeps them: a port that another program holds
/// is known before anyone is offered it (the core skips it), instead of an offer going out for a
/// port nobody will answer on.
fn bind_transfer_ports(hub: &Shared) {
    let now = Instant::now();
    let mut h = hub.borrow_mut();
    for port in h.options.chat.udp_ports.clone() {
        let addr = SocketAddr::new(h.options.addr.ip(), port);
        match net::udp_socket(addr).and_then(Async::new) {
            Ok(socket) => {
                h.idle_ports.insert(port, socket);
            }
            Err(err) => {
                tracing::warn!("UDP port {port} is not usable ({err}); it will not be offered");
                h.core
                    .handle_input(now, ServerInput::PortUnavailable { port });
            }
        }
    }
    if h.idle_ports.is_empty() {
        tracing::warn!("no transfer port could be bound: downloads are off");
    }
}

fn start_transfer(hub: &Shared, executor: &Rc<LocalExecutor<'static>>, offer: TransferOffer) {
    let port = offer.port;
    let now = Instant::now();
    let (socket, upload) = {
        let mut h = hub.borrow_mut();
        let identity = h.folder.identities.get(&offer.file).copied();
        let upload = Upload::start(
            now,
            &offer,
            &h.options.files,
            identity,
            h.options.idle_timeout,
        );
        (h.idle_ports.remove(&port), upload)
    };
    let Some(socket) = socket else {
        // The core only offers ports that were bound and are free; should it happen anyway,
        // ending the transfer frees the port in the core again.
        tracing::warn!("no socket for UDP port {port}");
        input(hub, executor, ServerInput::TransferEnded { port });
        return;
    };
    tracing::info!(
        "[UDP STARTED] Waiting for connections... port {port}, transfer {}, file {}",
        offer.transfer_id,
        offer.file
    );
    executor
        .spawn(transfer_task(
            hub.clone(),
            executor.clone(),
            port,
            socket,
            upload,
        ))
        .detach();
}

async fn transfer_task(
    hub: Shared,
    executor: Rc<LocalExecutor<'static>>,
    port: u16,
    socket: Async<UdpSocket>,
    mut upload: Upload,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Send everything the sender wants now, a GSO send (or a `sendmmsg`) per system call.
        while upload.send_due(Instant::now(), socket.get_ref()).is_err() {
            let _ = socket.writable().await;
        }
        if let Some(end) = upload.end() {
            tracing::info!("transfer on port {port} ended: {end:?}");
            break;
        }
        let deadline = upload.poll_timeout();
        let readable = async { socket.readable().await.map(|()| true) };
        let timer = async {
            match deadline {
                Some(at) => Timer::at(at).await,
                None => Timer::after(Duration::from_secs(3600)).await,
            };
            Ok(false)
        };
        match readable.or(timer).await {
            Ok(true) => loop {
                match socket.get_ref().recv_from(&mut buf) {
                    Ok((n, from)) => upload.on_datagram(Instant::now(), from, &buf[..n]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {}
                }
            },
            Ok(false) => upload.handle_timeout(Instant::now()),
            Err(_) => upload.handle_timeout(Instant::now()),
        }
        if upload.poll_timeout().is_some_and(|at| at <= Instant::now()) {
            upload.handle_timeout(Instant::now());
        }
    }
    hub.borrow_mut().idle_ports.insert(port, socket);
    input(&hub, &executor, ServerInput::TransferEnded { port });
}
