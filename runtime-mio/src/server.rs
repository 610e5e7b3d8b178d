//! The server on one mio `Poll`: waits, reads, feeds the server driver, performs its outputs.

use std::collections::{HashMap, VecDeque};

use natter_core::chat::server::ConnMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use natter_core::driver::server::{Output, READ_CHUNK, ServerDriver};
use natter_core::wire::datagram::MAX_DATAGRAM;
use natter_runtime_common::ServedFiles;
use natter_runtime_common::serve::{self, BoundServer, Delivery, Prepared, Stop, Turn};

/// Listener `i` (plain, TLS) is `Token(i)` below `WAKER`.
const WAKER: Token = Token(2);
/// Transfer sockets are `Token(UDP_TOKENS + port)`; connections start above every port.
const UDP_TOKENS: usize = 3;
const FIRST_CONN: usize = 1 << 17;

/// Serves `server` on one mio `Poll` on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listeners, options, scanned, tls } = server;
    let mut poll = Poll::new()?;
    let mut sockets = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut socket = TcpListener::from_std(listener.socket);
        poll.registry().register(&mut socket, Token(i), Interest::READABLE)?;
        sockets.push((socket, listener.tls));
    }
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let wake = waker.clone();
    stop.on_ask(move || drop(wake.wake()));
    let (folder_tx, folder_rx) = std::sync::mpsc::channel();
    let deliver = move |what| folder_tx.send(what).is_ok() && waker.wake().is_ok();
    let Prepared { driver, files, ports } =
        serve::prepare(Instant::now(), &options, scanned, tls, &stop, deliver)?;
    let mut udp = HashMap::new();
    for (port, socket) in ports {
        let mut socket = UdpSocket::from_std(socket);
        let token = Token(UDP_TOKENS + usize::from(port));
        poll.registry().register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        udp.insert(port, socket);
    }
    let mut io = Io {
        driver,
        files,
        listeners: sockets,
        registry: poll.registry().try_clone()?,
        conns: ConnMap::default(),
        udp,
        readable: VecDeque::new(),
        udp_readable: VecDeque::new(),
        next_conn: 0,
        buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
    };
    let mut events = Events::with_capacity(1024);
    while !stop.asked() {
        // One turn: wait, then read what is ready. A busy room with a small turn reads on until
        // the driver's gather is over, so that each write carries more lines.
        let mut gather_until: Option<Instant> = None;
        loop {
            // Until the gather is over; at once while sockets wait to be read; else the timer.
            let busy = !io.readable.is_empty() || !io.udp_readable.is_empty();
            let wake_at = gather_until.or_else(|| busy.then(Instant::now));
            let wake_at = wake_at.or(io.driver.poll_timeout());
            let timeout = wake_at.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(err) = poll.poll(&mut events, timeout)
                && err.kind() != io::ErrorKind::Interrupted
            {
                return Err(err);
            }
            let now = Instant::now();
            io.dispatch(now, &events, &folder_rx);
            io.read_round(now);
            io.receive_round();
            gather_until = gather_until.or_else(|| io.driver.turn_gather(now).map(|w| now + w));
            if gather_until.is_none_or(|until| now >= until) || io.driver.turn_is_full() {
                break;
            }
        }
        if io.driver.poll_timeout().is_some_and(|at| at <= Instant::now()) {
            io.driver.handle_timeout(Instant::now());
        }
        io.perform(Instant::now());
        io.driver.end_turn(Instant::now());
    }
    Ok(())
}

/// One connection's socket and where it stands in the read rounds.
struct Conn {
    stream: TcpStream,
    /// In `readable` already: one entry per connection, however many events came.
    queued: bool,
    /// The driver asked not to read it for now.
    paused: bool,
}

/// The sockets and the driver they feed.
struct Io {
    driver: ServerDriver,
    files: ServedFiles,
    /// The chat listeners, and whether each is the TLS one.
    listeners: Vec<(TcpListener, bool)>,
    registry: mio::Registry,
    conns: ConnMap<Conn>,
    udp: HashMap<u16, UdpSocket>,
    /// Connections with bytes (or an end) waiting in the kernel, read one chunk each per round.
    readable: VecDeque<u64>,
    /// Transfer ports whose last read stopped at the turn's limit, not at an empty queue.
    udp_readable: VecDeque<u16>,
    next_conn: u64,
    buf: Vec<u8>,
}

impl Io {
    /// Notes what each event says is ready; accepts, and writes where a socket has room again.
    fn dispatch(&mut self, now: Instant, events: &Events, folder_rx: &Receiver<Delivery>) {
        for event in events.iter() {
            match event.token() {
                Token(i) if i < WAKER.0 => self.accept_all(now, i),
                WAKER => {
                    while let Ok(delivered) = folder_rx.try_recv() {
                        serve::feed(now, &mut self.driver, &delivered);
                    }
                }
                Token(t) if t >= FIRST_CONN => {
                    let conn = (t - FIRST_CONN) as u64;
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.mark_readable(conn);
                    }
                    if event.is_writable() {
                        self.flush(now, conn);
                    }
                }
                Token(t) => {
                    let Ok(port) = u16::try_from(t - UDP_TOKENS) else { continue };
                    if event.is_readable() && !self.udp_readable.contains(&port) {
                        self.udp_readable.push_back(port);
                    }
                    if event.is_writable() {
                        self.transmit(now, port);
                    }
                }
            }
        }
    }

    fn accept_all(&mut self, now: Instant, listener: usize) {
        let Some((listener, tls)) = self.listeners.get(listener) else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    let token = Token(FIRST_CONN + conn as usize);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(err) = self.registry.register(&mut stream, token, interest) {
                        tracing::warn!("cannot watch a new connection: {err}");
                        continue;
                    }
                    serve::accepted(now, &mut self.driver, conn, peer, &stream, *tls);
                    self.conns.insert(conn, Conn { stream, queued: false, paused: false });
                }
                Err(err) if serve::accept_failed(now, &mut self.driver, &err) => {}
                Err(_) => return,
            }
        }
    }

    fn mark_readable(&mut self, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.queued) {
            c.queued = true;
            self.readable.push_back(conn);
        }
    }

    /// One chunk from every readable connection: fair between a flooder and the rest. A round
    /// stops early when the driver has queued a turn's worth; the rest are read next turn.
    fn read_round(&mut self, now: Instant) {
        for _ in 0..self.readable.len() {
            if self.driver.turn_is_full() {
                break;
            }
            let Some(conn) = self.readable.pop_front() else { break };
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            c.queued = false;
            if c.paused {
                continue;
            }
            let stream = &mut c.stream;
            let turn =
                serve::read_chunk(now, &mut self.driver, conn, &mut self.buf, |b| stream.read(b));
            if turn == Turn::More {
                self.mark_readable(conn);
            }
        }
    }

    /// A turn's worth of datagrams from every transfer port that has some.
    fn receive_round(&mut self) {
        for _ in 0..self.udp_readable.len() {
            let Some(port) = self.udp_readable.pop_front() else { break };
            let Some(socket) = self.udp.get(&port) else { continue };
            let receive = |b: &mut [u8]| socket.recv_from(b);
            if serve::receive_datagrams(&mut self.driver, port, &mut self.buf, receive)
                == Turn::More
            {
                self.udp_readable.push_back(port);
            }
        }
    }

    /// Performs what the driver asks until it asks nothing more.
    fn perform(&mut self, now: Instant) {
        while let Some(output) = self.driver.poll_output() {
            let Some(output) = self.files.perform(now, &mut self.driver, output) else {
                continue;
            };
            match output {
                Output::Write { conn } => self.flush(now, conn),
                Output::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        let _ = self.registry.deregister(&mut c.stream);
                        let _ = c.stream.shutdown(std::net::Shutdown::Both);
                    }
                }
                Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                    let paused = matches!(output, Output::PauseReading { .. });
                    self.conns.entry(conn).and_modify(|c| c.paused = paused);
                    self.mark_readable(conn); // a paused one is dropped from the round
                }
                Output::AcceptAgain => {
                    (0..self.listeners.len()).for_each(|i| self.accept_all(now, i))
                }
                Output::Transmit { port } => self.transmit(now, port),
                _ => {}
            }
        }
    }

    /// Writes what is owed to `conn` until it is all out or the socket is full.
    fn flush(&mut self, now: Instant, conn: u64) {
        if let Some(Conn { stream, .. }) = self.conns.get_mut(&conn) {
            serve::write_owed(now, &mut self.driver, conn, |slices| stream.write_vectored(slices));
        }
    }

    /// Sends what is due on `port`. A full socket keeps the rest: its writable edge sends on.
    fn transmit(&mut self, now: Instant, port: u16) {
        if let Some(socket) = self.udp.get(&port) {
            let _ = self.files.send_due(now, &mut self.driver, port, socket);
        }
    }
}
