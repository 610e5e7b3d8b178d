//! The server's turn, once for both runtimes: which sockets are ready, reading them fairly, and
//! performing what the driver asks.
//!
//! A turn reads every connection that is ready one chunk at a time, round after round (so a
//! flooder cannot starve the others, C6), and the transfer ports a batch each; a busy room reads on
//! for the driver's gather, so that each write carries more lines; then the driver's outputs are
//! performed: a turn's lines go to each reader in one write. A runtime only waits: it says what
//! became ready ([`ServerIo::mark_readable`], [`ServerIo::mark_receivable`], [`ServerIo::writable`],
//! [`ServerIo::sendable`]), runs rounds while [`ServerIo::round`] says the turn goes on, and ends
//! it with [`ServerIo::end_turn`]. A runtime whose sockets are awaited by tasks asks each socket's
//! task what to wait for with [`ServerIo::watch`]; its waker is woken whenever that changes.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::task::{Context, Waker};
use std::time::Instant;

use natter_core::chat::server::ConnMap;
use natter_core::driver::server::{Output, READ_CHUNK, ServerDriver};
use natter_core::wire::datagram::MAX_DATAGRAM;

use crate::ServedFiles;
use crate::serve::{self, Prepared, Turn};

/// The sockets of a runtime, as it holds them; a call that would block gives `WouldBlock`.
pub trait Sockets {
    /// A chat connection's socket.
    type Stream: AsFd;
    /// A transfer port's socket.
    type Datagrams: AsFd;
    /// Where the task that awaits a socket is woken from: a [`Waker`] in a runtime of tasks;
    /// nothing (`()`) in a runtime whose one loop waits on every socket, where a waker per
    /// socket would be 16 bytes per idle person for nothing (issue 12).
    type Wake: WakeSlot;
    fn read(stream: &Self::Stream, buf: &mut [u8]) -> io::Result<usize>;
    fn write(stream: &Self::Stream, slices: &[IoSlice<'_>]) -> io::Result<usize>;
    fn recv_from(socket: &Self::Datagrams, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// Holds what wakes the task that awaits one socket (see [`Sockets::Wake`]).
pub trait WakeSlot: Default {
    /// `waker` is the one to wake from now on.
    fn keep(&mut self, waker: &Waker);
    /// Wakes the task, if one waits.
    fn wake(&mut self);
}

/// A runtime of tasks: the task that last asked what to wait for.
impl WakeSlot for Option<Waker> {
    fn keep(&mut self, waker: &Waker) {
        if !self.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *self = Some(waker.clone());
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }
}

/// A runtime with one loop for every socket: no task to wake. Such a runtime must not call
/// [`ServerIo::watch`]: a task that waited on it would never be woken.
impl WakeSlot for () {
    fn keep(&mut self, _: &Waker) {}

    fn wake(&mut self) {}
}

/// What a socket's task waits for next (see [`ServerIo::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub read: bool,
    pub write: bool,
}

/// A socket and where it stands in the turn.
struct Watched<S, W> {
    socket: S,
    /// In the read queue already: one entry per socket, however often it was marked.
    queued: bool,
    /// The driver asked not to read it for now.
    paused: bool,
    /// Its last write (or send) would have blocked: the rest goes when it is writable.
    write_waits: bool,
    /// The task that waits on it, in a runtime of tasks; woken when what it waits for changes.
    waker: W,
}

impl<S, W: WakeSlot> Watched<S, W> {
    fn new(socket: S) -> Self {
        Self { socket, queued: false, paused: false, write_waits: false, waker: W::default() }
    }

    fn want(&self) -> Want {
        Want { read: !self.queued && !self.paused, write: self.write_waits }
    }

    fn wake(&mut self) {
        self.waker.wake();
    }

    /// What to wait for now; `waker` is woken when that changes.
    fn watch(&mut self, waker: &Waker) -> Want {
        self.waker.keep(waker);
        self.want()
    }
}

/// The driver, the file work, and the sockets of one server, with their turn.
pub struct ServerIo<R: Sockets> {
    pub driver: ServerDriver,
    files: ServedFiles,
    conns: ConnMap<Watched<R::Stream, R::Wake>>,
    ports: HashMap<u16, Watched<R::Datagrams, R::Wake>>,
    /// Connections with bytes (or an end) waiting in the kernel, read a chunk each per round.
    readable: VecDeque<u64>,
    /// Transfer ports with datagrams waiting, read a batch each per round.
    receivable: VecDeque<u16>,
    /// Connections of every listener share one numbering.
    next_conn: u64,
    buf: Vec<u8>,
}

impl<R: Sockets> std::fmt::Debug for ServerIo<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIo")
            .field("conns", &self.conns.len())
            .field("ports", &self.ports.len())
            .field("readable", &self.readable.len())
            .finish_non_exhaustive()
    }
}

impl<R: Sockets> ServerIo<R> {
    /// The server `prepared`, with its transfer ports' sockets as the runtime holds them.
    pub fn new(
        prepared: Prepared,
        mut wrap: impl FnMut(u16, std::net::UdpSocket) -> io::Result<R::Datagrams>,
    ) -> io::Result<Self> {
        let Prepared { driver, files, ports } = prepared;
        let mut watched = HashMap::new();
        for (port, socket) in ports {
            watched.insert(port, Watched::new(wrap(port, socket)?));
        }
        Ok(Self {
            driver,
            files,
            conns: ConnMap::default(),
            ports: watched,
            readable: VecDeque::new(),
            receivable: VecDeque::new(),
            next_conn: 0,
            buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
        })
    }

    /// The transfer ports, for a runtime to watch.
    pub fn ports(&self) -> impl Iterator<Item = (u16, &R::Datagrams)> {
        self.ports.iter().map(|(&port, p)| (port, &p.socket))
    }

    /// A connection was accepted (on the TLS listener when `tls`); gives its number. `register`
    /// watches it, or refuses it (then it is dropped, unknown to the driver).
    pub fn accepted(
        &mut self,
        now: Instant,
        socket: R::Stream,
        peer: SocketAddr,
        tls: bool,
        register: impl FnOnce(u64, &mut R::Stream) -> io::Result<()>,
    ) -> io::Result<u64> {
        let mut socket = socket;
        let conn = self.next_conn;
        self.next_conn += 1;
        register(conn, &mut socket)?;
        serve::accepted(now, &mut self.driver, conn, peer, &socket, tls);
        self.conns.insert(conn, Watched::new(socket));
        Ok(conn)
    }

    /// `conn` has bytes (or an end) to read: it is read in the turn's rounds.
    pub fn mark_readable(&mut self, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.queued) {
            c.queued = true;
            self.readable.push_back(conn);
        }
    }

    /// Transfer port `port` has datagrams to read.
    pub fn mark_receivable(&mut self, port: u16) {
        if let Some(p) = self.ports.get_mut(&port).filter(|p| !p.queued) {
            p.queued = true;
            self.receivable.push_back(port);
        }
    }

    /// What the task of connection `conn` should wait for now, `None` once it is closed; the
    /// task is woken when that changes.
    pub fn watch(&mut self, conn: u64, cx: &mut Context<'_>) -> Option<Want> {
        self.conns.get_mut(&conn).map(|c| c.watch(cx.waker()))
    }

    /// What the task of transfer port `port` should wait for now.
    pub fn watch_port(&mut self, port: u16, cx: &mut Context<'_>) -> Option<Want> {
        self.ports.get_mut(&port).map(|p| p.watch(cx.waker()))
    }

    /// When the runtime should run the next round: at once while sockets wait to be read, at the
    /// end of the gather once it started (`gather_until`), else at the driver's timer.
    pub fn wake_at(&self, gather_until: Option<Instant>) -> Option<Instant> {
        let busy = !self.readable.is_empty() || !self.receivable.is_empty();
        gather_until.or_else(|| busy.then(Instant::now)).or(self.driver.poll_timeout())
    }

    /// Reads a round: a chunk from every readable connection and a batch from every transfer
    /// port that has some. `true` when the turn should end now: the gather (started on the first
    /// round, kept in `gather_until`) is over, its writes are worth making, or the driver holds a
    /// turn's worth.
    pub fn round(&mut self, now: Instant, gather_until: &mut Option<Instant>) -> bool {
        self.read_round(now);
        self.receive_round();
        let driver = &self.driver;
        let until = *gather_until.get_or_insert_with(|| match driver.turn_gather(now) {
            Some(wait) => now + wait,
            None => now,
        });
        now >= until || self.driver.turn_is_worth_writing() || self.driver.turn_is_full()
    }

    /// Ends the turn: the timer if it is due, then every output. `true` when the driver asks to
    /// accept again (after running out of descriptors).
    pub fn end_turn(&mut self, now: Instant) -> bool {
        if self.driver.poll_timeout().is_some_and(|at| at <= now) {
            self.driver.handle_timeout(now);
        }
        let accept_again = self.perform(now);
        self.driver.end_turn(now);
        accept_again
    }

    /// `conn`'s socket has room again: writes on what it owes.
    pub fn writable(&mut self, now: Instant, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.write_waits = false;
            self.flush(now, conn);
        }
    }

    /// Transfer port `port`'s socket has room again: sends on what is due.
    pub fn sendable(&mut self, now: Instant, port: u16) {
        if let Some(p) = self.ports.get_mut(&port) {
            p.write_waits = false;
            self.transmit(now, port);
        }
    }

    /// One chunk from every readable connection; a round stops early when the driver has queued a
    /// turn's worth, and the rest are read next turn.
    fn read_round(&mut self, now: Instant) {
        for _ in 0..self.readable.len() {
            if self.driver.turn_is_full() {
                break;
            }
            let Some(conn) = self.readable.pop_front() else { break };
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            c.queued = false;
            if c.paused {
                c.wake();
                continue;
            }
            let socket = &c.socket;
            let turn = serve::read_chunk(now, &mut self.driver, conn, &mut self.buf, |b| {
                R::read(socket, b)
            });
            match turn {
                Turn::More => self.mark_readable(conn),
                Turn::Blocked => c.wake(),
                Turn::Ended => {}
            }
        }
    }

    fn receive_round(&mut self) {
        for _ in 0..self.receivable.len() {
            let Some(port) = self.receivable.pop_front() else { break };
            let Some(p) = self.ports.get_mut(&port) else { continue };
            p.queued = false;
            let socket = &p.socket;
            let turn = serve::receive_datagrams(&mut self.driver, port, &mut self.buf, |b| {
                R::recv_from(socket, b)
            });
            match turn {
                Turn::More => self.mark_receivable(port),
                Turn::Blocked | Turn::Ended => p.wake(),
            }
        }
    }

    /// Performs what the driver asks until it asks nothing more; `true` when it asked to accept
    /// again.
    fn perform(&mut self, now: Instant) -> bool {
        let mut accept_again = false;
        while let Some(output) = self.driver.poll_output() {
            let Some(output) = self.files.perform(now, &mut self.driver, output) else {
                continue;
            };
            match output {
                Output::Write { conn } => self.flush(now, conn),
                Output::Close { conn } => {
                    // Closing the socket also takes it out of an epoll set (its only descriptor).
                    if let Some(mut c) = self.conns.remove(&conn) {
                        let _ =
                            socket2::SockRef::from(&c.socket).shutdown(std::net::Shutdown::Both);
                        c.wake();
                    }
                }
                Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                    let paused = matches!(output, Output::PauseReading { .. });
                    self.conns.entry(conn).and_modify(|c| c.paused = paused);
                    self.mark_readable(conn); // a paused one leaves the queue, woken
                }
                Output::AcceptAgain => accept_again = true,
                Output::Transmit { port } => self.transmit(now, port),
                _ => {}
            }
        }
        accept_again
    }

    /// Writes what is owed to `conn` until it is all out or the socket is full.
    fn flush(&mut self, now: Instant, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.write_waits) else {
            return;
        };
        let socket = &c.socket;
        if serve::write_owed(now, &mut self.driver, conn, |s| R::write(socket, s)) == Turn::Blocked
        {
            c.write_waits = true;
            c.wake();
        }
    }

    /// Sends what is due on `port`; a full socket keeps the rest until it is writable.
    fn transmit(&mut self, now: Instant, port: u16) {
        let Some(p) = self.ports.get_mut(&port).filter(|p| !p.write_waits) else {
            return;
        };
        if self.files.send_due(now, &mut self.driver, port, &p.socket).is_err() {
            p.write_waits = true;
            p.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket of a one-loop runtime costs its descriptor and three flags in the table, no
    /// waker (issue 12: the table has a slot per connection, up to twice over).
    #[test]
    fn a_one_loop_runtime_keeps_no_waker_per_socket() {
        assert_eq!(std::mem::size_of::<Watched<std::net::TcpStream, ()>>(), 8);
        assert_eq!(std::mem::size_of::<Watched<std::net::TcpStream, Option<Waker>>>(), 24);
    }

    #[test]
    fn a_kept_waker_is_woken_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut slot: Option<Waker> = None;
        slot.keep(&waker);
        slot.keep(&waker);
        slot.wake();
        slot.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
