//! The client on mio: one poll loop waits on the chat connection, the person's input, every
//! download socket and the driver's timer, and hands what it reads to the core's client driver
//! (through [`ClientIo`]). The chat client and `natter get` are the same loop in two modes.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use natter_core::driver::client::DownloadId;
use natter_runtime_common::net::UdpReceiver;
use natter_runtime_common::{ClientError, ClientIo, ClientUi, Lines, Sockets, client};

const CHAT: Token = Token(0);
/// The loop's one waker: a typed line, or a file kept on the keeping thread.
const WAKE: Token = Token(1);
/// Download `id` is watched as `Token(FIRST_DOWNLOAD + id)`.
const FIRST_DOWNLOAD: usize = 2;

struct Download {
    socket: UdpSocket,
    rx: UdpReceiver,
    /// Not read until it would block: mio reports readiness once per edge.
    ready: bool,
}

struct MioSockets {
    registry: Registry,
    downloads: HashMap<DownloadId, Download>,
}

impl Sockets for MioSockets {
    fn open(
        &mut self,
        id: DownloadId,
        socket: std::net::UdpSocket,
        max_datagram: usize,
    ) -> io::Result<()> {
        let mut socket = UdpSocket::from_std(socket);
        let token = Token(FIRST_DOWNLOAD + id as usize);
        self.registry.register(&mut socket, token, Interest::READABLE)?;
        let rx = UdpReceiver::new(&socket, max_datagram);
        let download = Download { socket, rx, ready: true };
        self.downloads.insert(id, download);
        Ok(())
    }

    fn send(&mut self, id: DownloadId, datagram: &[u8]) -> io::Result<usize> {
        let d = self.downloads.get(&id).ok_or(io::ErrorKind::NotConnected)?;
        d.socket.send(datagram)
    }

    fn release(&mut self, id: DownloadId) {
        if let Some(mut d) = self.downloads.remove(&id) {
            let _ = self.registry.deregister(&mut d.socket);
        }
    }
}

/// Runs `io` on one mio `Poll` on this thread until it is finished.
pub fn client(
    addr: SocketAddr,
    io: &mut ClientIo,
    ui: &mut dyn ClientUi,
    input: Option<Lines>,
) -> Result<(), ClientError> {
    let mut tcp = TcpStream::from_std(client::connect_session(addr, io)?);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut tcp, CHAT, Interest::READABLE | Interest::WRITABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let mut lines = input.map(|input| read_lines(&waker, input)).transpose()?;
    let keeper_waker = Arc::clone(&waker);
    io.keep_in_background(move || {
        let _ = keeper_waker.wake();
    });
    let mut sockets =
        MioSockets { registry: poll.registry().try_clone()?, downloads: HashMap::new() };
    let mut events = Events::with_capacity(256);
    io.drive(Instant::now(), ui, &mut sockets);
    while !io.is_finished() {
        io.write_chat(&mut tcp);
        let timeout = match io.poll_timeout() {
            _ if sockets.downloads.values().any(|d| d.ready) => Some(Duration::ZERO),
            at => at.map(|at| at.saturating_duration_since(Instant::now())),
        };
        if let Err(err) = poll.poll(&mut events, timeout)
            && err.kind() != io::ErrorKind::Interrupted
        {
            return Err(err.into());
        }
        for event in &events {
            match event.token() {
                CHAT => io.read_chat(&mut tcp),
                // `drive` below takes the kept files.
                WAKE => {
                    if lines.as_ref().is_some_and(|rx| !io.take_typed(rx)) {
                        lines = None;
                    }
                }
                Token(token) => {
                    let id = token.saturating_sub(FIRST_DOWNLOAD) as DownloadId;
                    if let Some(d) = sockets.downloads.get_mut(&id) {
                        d.ready = true;
                    }
                }
            }
        }
        // The early-flight socket first: a transfer's first parts are there, its later ones on
        // its own socket, and read the other way round they would look reordered.
        if let Some(d) = sockets.downloads.get_mut(&client::EARLY_FLIGHTS).filter(|d| d.ready) {
            d.ready = !io.read_datagrams(client::EARLY_FLIGHTS, &d.socket, &d.rx);
        }
        let rest = sockets.downloads.iter_mut().filter(|(id, _)| **id != client::EARLY_FLIGHTS);
        for (&id, d) in rest.filter(|(_, d)| d.ready) {
            d.ready = !io.read_datagrams(id, &d.socket, &d.rx);
        }
        io.drive(Instant::now(), ui, &mut sockets);
    }
    io.close_chat(&mut tcp);
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Reads the person's lines on a thread of their own (the iterator blocks) and wakes the loop.
/// The loop keeps its own handle on the waker: were the thread's the last, the waker's descriptor
/// would close with it, and its last wake (the end of input) would be lost.
fn read_lines(waker: &Arc<Waker>, input: Lines) -> io::Result<mpsc::Receiver<String>> {
    let (tx, rx) = mpsc::channel();
    let waker = Arc::clone(waker);
    std::thread::Builder::new().name("natter-input".into()).spawn(move || {
        for line in input {
            if tx.send(line).is_err() {
                break;
            }
            let _ = waker.wake();
        }
        drop(tx);
        let _ = waker.wake();
    })?;
    Ok(rx)
}
