//! The server on one mio `Poll`: waits, says what is ready, and runs the turn of
//! [`natter_runtime_common::turn`] (reads, the driver, its outputs).

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use natter_runtime_common::serve::{self, BoundServer, Delivery, Stop};
use natter_runtime_common::turn::{Key, ServerIo, Sockets};

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

/// The token of the turn's socket `key`.
fn token(key: Key) -> io::Result<Token> {
    key.raw().map(Token)
}

/// Serves `server` on one mio `Poll` on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listeners, options, scanned, tls } = server;
    let mut poll = Poll::new()?;
    let mut sockets = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut socket = TcpListener::from_std(listener.socket);
        poll.registry().register(&mut socket, token(Key::Listener(i))?, Interest::READABLE)?;
        sockets.push((socket, listener.tls));
    }
    let waker = Arc::new(Waker::new(poll.registry(), token(Key::Wake)?)?);
    let wake = waker.clone();
    stop.on_ask(move || drop(wake.wake()));
    let (folder_tx, folder_rx) = std::sync::mpsc::channel();
    let deliver = move |what| folder_tx.send(what).is_ok() && waker.wake().is_ok();
    let prepared = serve::prepare(Instant::now(), &options, scanned, tls, &stop, deliver)?;
    let registry = poll.registry().try_clone()?;
    let mut io = Io::new(prepared, |port, socket| {
        let mut socket = UdpSocket::from_std(socket);
        let token = token(Key::Port(port))?;
        registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(socket)
    })?;
    let mut events = Events::with_capacity(1024);
    while !stop.asked() {
        loop {
            let now = Instant::now();
            let mut timeout = io.wake_at().map(|at| at.saturating_duration_since(now));
            if let Some(until) = io.sleep_until(now) {
                std::thread::sleep(until.saturating_duration_since(now));
                timeout = Some(Duration::ZERO);
            }
            if let Err(err) = poll.poll(&mut events, timeout)
                && err.kind() != io::ErrorKind::Interrupted
            {
                return Err(err);
            }
            let now = Instant::now();
            dispatch(&mut io, now, &events, &sockets, &registry, &folder_rx);
            if io.round(now) {
                break;
            }
        }
        let now = Instant::now();
        if io.end_turn(now) {
            sockets.iter().for_each(|listener| accept_all(&mut io, now, listener, &registry));
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
        match Key::from_raw(event.token().0) {
            Key::Listener(i) => {
                if let Some(listener) = listeners.get(i) {
                    accept_all(io, now, listener, registry);
                }
            }
            Key::Wake => {
                while let Ok(delivered) = folder_rx.try_recv() {
                    serve::feed(now, &mut io.driver, &delivered);
                }
            }
            key => {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                io.ready(now, key, readable, event.is_writable());
            }
        }
    }
}

fn accept_all(io: &mut Io, now: Instant, listener: &(TcpListener, bool), registry: &mio::Registry) {
    let (listener, tls) = listener;
    let watch = |key, stream: &mut TcpStream| {
        registry.register(stream, token(key)?, Interest::READABLE | Interest::WRITABLE)
    };
    io.accept_all(now, *tls, || listener.accept(), watch);
}
