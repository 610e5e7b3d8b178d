//! The server on one mio `Poll`: waits, says what is ready, and runs the turn of
//! [`natter_runtime_common::turn`] (reads, the driver, its outputs).

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use natter_runtime_common::serve::{self, BoundServer, Delivery, Stop};
use natter_runtime_common::turn::{ServerIo, Sockets};

/// Listener `i` (plain, TLS) is `Token(i)` below `WAKER`.
const WAKER: Token = Token(2);
/// Transfer sockets are `Token(UDP_TOKENS + port)`; connections start above every port.
const UDP_TOKENS: usize = 3;
const FIRST_CONN: usize = 1 << 17;

/// mio's sockets, for the turn.
struct Mio;

impl Sockets for Mio {
    type Stream = TcpStream;
    type Datagrams = UdpSocket;

    fn read(mut stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        stream.read(buf)
    }

    fn write(mut stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        stream.write_vectored(slices)
    }

    fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        socket.recv_from(buf)
    }
}

type Io = ServerIo<Mio>;

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
    let prepared = serve::prepare(Instant::now(), &options, scanned, tls, &stop, deliver)?;
    let registry = poll.registry().try_clone()?;
    let mut io = Io::new(prepared, |port, socket| {
        let mut socket = UdpSocket::from_std(socket);
        let token = Token(UDP_TOKENS + usize::from(port));
        registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(socket)
    })?;
    let mut events = Events::with_capacity(1024);
    while !stop.asked() {
        let mut gather_until = None;
        loop {
            let timeout =
                io.wake_at(gather_until).map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(err) = poll.poll(&mut events, timeout)
                && err.kind() != io::ErrorKind::Interrupted
            {
                return Err(err);
            }
            let now = Instant::now();
            dispatch(&mut io, now, &events, &sockets, &registry, &folder_rx);
            if io.round(now, &mut gather_until) {
                break;
            }
        }
        if io.end_turn(Instant::now()) {
            (0..sockets.len())
                .for_each(|i| accept_all(&mut io, Instant::now(), &sockets[i], &registry));
        }
    }
    Ok(())
}

/// Notes what each event says is ready; accepts, and writes where a socket has room again.
fn dispatch(
    io: &mut Io,
    now: Instant,
    events: &Events,
    listeners: &[(TcpListener, bool)],
    registry: &mio::Registry,
    folder_rx: &Receiver<Delivery>,
) {
    for event in events.iter() {
        match event.token() {
            Token(i) if i < WAKER.0 => {
                if let Some(listener) = listeners.get(i) {
                    accept_all(io, now, listener, registry);
                }
            }
            WAKER => {
                while let Ok(delivered) = folder_rx.try_recv() {
                    serve::feed(now, &mut io.driver, &delivered);
                }
            }
            Token(t) if t >= FIRST_CONN => {
                let conn = (t - FIRST_CONN) as u64;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    io.mark_readable(conn);
                }
                if event.is_writable() {
                    io.writable(now, conn);
                }
            }
            Token(t) => {
                let Ok(port) = u16::try_from(t - UDP_TOKENS) else { continue };
                if event.is_readable() {
                    io.mark_receivable(port);
                }
                if event.is_writable() {
                    io.sendable(now, port);
                }
            }
        }
    }
}

fn accept_all(io: &mut Io, now: Instant, listener: &(TcpListener, bool), registry: &mio::Registry) {
    let (listener, tls) = listener;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let register = |conn: u64, stream: &mut TcpStream| {
                    let token = Token(FIRST_CONN + conn as usize);
                    registry.register(stream, token, Interest::READABLE | Interest::WRITABLE)
                };
                if let Err(err) = io.accepted(now, stream, peer, *tls, register) {
                    tracing::warn!("cannot watch a new connection: {err}");
                }
            }
            Err(err) if serve::accept_failed(now, &mut io.driver, &err) => {}
            Err(_) => return,
        }
    }
}
