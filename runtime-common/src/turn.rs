//! The server's turn, once for both runtimes: which sockets are ready, reading them fairly, and
//! performing what the driver asks.
//!
//! A turn reads every connection that is ready one chunk at a time, round after round (so a
//! flooder cannot starve the others, C6), and the transfer ports a batch each; a busy room reads on
//! for the driver's gather, so that each write carries more lines (a long gather asleep, in
//! slices: [`ServerIo::sleep_until`]); then the driver's outputs are performed: a turn's lines go
//! to each reader in one write. A runtime only waits: it says what became ready
//! ([`ServerIo::mark_readable`], [`ServerIo::mark_receivable`], [`ServerIo::writable`],
//! [`ServerIo::sendable`]), runs rounds while [`ServerIo::round`] says the turn goes on, and ends
//! it with [`ServerIo::end_turn`]. The runtime watches every socket for both directions,
//! edge-triggered: the turn reads and writes until a socket would block and remembers what is
//! ready, so no socket needs a waker of its own (an idle person costs the table its socket and
//! four flags: 8 bytes on mio in a release build, 24 on smol, whose socket carries its poller's
//! handle).

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use natter_core::chat::server::ConnMap;
use natter_core::driver::server::{GATHER_SLICE, Output, READ_CHUNK, ServerDriver, gather_sleeps};
use natter_core::wire::datagram::MAX_DATAGRAM;

use crate::serve::{self, Prepared, Turn};
use crate::{ServedFiles, net};

/// The sockets of a runtime, as it holds them; a call that would block gives `WouldBlock`.
pub trait Sockets {
    /// A chat connection's socket.
    type Stream: AsFd;
    /// A transfer port's socket.
    type Datagrams: AsFd;
    fn read(stream: &Self::Stream, buf: &mut [u8]) -> io::Result<usize>;
    fn write(stream: &Self::Stream, slices: &[IoSlice<'_>]) -> io::Result<usize>;
    fn recv_from(socket: &Self::Datagrams, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// What a runtime's poller calls each socket of the turn: one space of keys for all of them,
/// so that both runtimes read an event the same way ([`ServerIo::ready`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A transfer port, by its number.
    Port(u16),
    /// The runtime's listener `i` (plain, then TLS).
    Listener(usize),
    /// The runtime's own wake-up from other threads, if it has one.
    Wake,
    /// A chat connection, by its number (never reused).
    Conn(u64),
}

const LISTENER_KEYS: usize = 1 << 16;
const WAKE_KEY: usize = (1 << 17) - 1;
const CONN_KEYS: usize = 1 << 17;

impl Key {
    /// The number the poller knows the socket by; an error past the last one.
    pub fn raw(self) -> io::Result<usize> {
        let raw = match self {
            Key::Port(port) => Some(usize::from(port)),
            Key::Listener(i) => Some(LISTENER_KEYS + i).filter(|&key| key < WAKE_KEY),
            Key::Wake => Some(WAKE_KEY),
            Key::Conn(conn) => usize::try_from(conn).ok().and_then(|c| c.checked_add(CONN_KEYS)),
        };
        raw.ok_or_else(|| io::Error::other(format!("no poller key is left for {self:?}")))
    }

    /// The socket the poller's number `raw` stands for.
    pub fn from_raw(raw: usize) -> Key {
        if let Some(conn) = raw.checked_sub(CONN_KEYS) {
            Key::Conn(conn as u64)
        } else if raw == WAKE_KEY {
            Key::Wake
        } else if let Some(i) = raw.checked_sub(LISTENER_KEYS) {
            Key::Listener(i)
        } else {
            Key::Port(raw as u16) // below LISTENER_KEYS: a u16
        }
    }
}

/// A socket and where it stands in the turn.
struct Watched<S> {
    socket: S,
    /// In the read queue already: one entry per socket, however often it was marked.
    queued: bool,
    /// The driver asked not to read it for now.
    paused: bool,
    /// Its last write (or send) would have blocked: the rest goes when it is writable.
    write_waits: bool,
    /// A chat connection's writes may wait for the reader's acknowledgement of the last ones
    /// ([`ServerDriver::write_coalesces`]); it starts without (no Nagle delay). Unused on a port.
    coalesces: bool,
}

impl<S> Watched<S> {
    fn new(socket: S) -> Self {
        Self { socket, queued: false, paused: false, write_waits: false, coalesces: false }
    }
}

/// A turn's gather: when it ends, and whether it is slept through ([`ServerIo::sleep_until`]).
#[derive(Debug, Clone, Copy)]
struct Gather {
    until: Instant,
    asleep: bool,
}

/// The driver, the file work, and the sockets of one server, with their turn.
pub struct ServerIo<R: Sockets> {
    pub driver: ServerDriver,
    files: ServedFiles,
    conns: ConnMap<Watched<R::Stream>>,
    ports: HashMap<u16, Watched<R::Datagrams>>,
    /// Connections with bytes (or an end) waiting in the kernel, read a chunk each per round.
    readable: VecDeque<u64>,
    /// Transfer ports with datagrams waiting, read a batch each per round.
    receivable: VecDeque<u16>,
    /// This turn's gather, once its first round has asked the driver.
    gather: Option<Gather>,
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
            gather: None,
            next_conn: 0,
            buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
        })
    }

    /// What the runtime's poller said of the socket under `key`: `readable` (bytes, an end or an
    /// error to read) and `writable` (room). A listener's event and the runtime's own wake-up
    /// are the runtime's to handle (a listener with [`ServerIo::accept_all`]).
    pub fn ready(&mut self, now: Instant, key: Key, readable: bool, writable: bool) {
        match key {
            Key::Conn(conn) => {
                if readable {
                    self.mark_readable(conn);
                }
                if writable {
                    self.writable(now, conn);
                }
            }
            Key::Port(port) => {
                if readable {
                    self.mark_receivable(port);
                }
                if writable {
                    self.sendable(now, port);
                }
            }
            Key::Listener(_) | Key::Wake => {}
        }
    }

    /// Accepts on a listener (the TLS one when `tls`) until it has no more: `accept` takes the
    /// next connection, `watch` puts it in the runtime's poller under the key given.
    pub fn accept_all(
        &mut self,
        now: Instant,
        tls: bool,
        mut accept: impl FnMut() -> io::Result<(R::Stream, SocketAddr)>,
        mut watch: impl FnMut(Key, &mut R::Stream) -> io::Result<()>,
    ) {
        loop {
            let (stream, peer) = match accept() {
                Ok(accepted) => accepted,
                Err(err) if serve::accept_failed(now, &mut self.driver, &err) => continue,
                Err(_) => return,
            };
            let watch = |conn, stream: &mut R::Stream| watch(Key::Conn(conn), stream);
            if let Err(err) = self.accepted(now, stream, peer, tls, watch) {
                tracing::warn!("cannot watch a new connection: {err}");
            }
        }
    }

    /// A connection was accepted (on the TLS listener when `tls`); gives its number. `register`
    /// watches it, or refuses it (then it is dropped, unknown to the driver).
    fn accepted(
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
    fn mark_readable(&mut self, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.queued) {
            c.queued = true;
            self.readable.push_back(conn);
        }
    }

    /// Transfer port `port` has datagrams to read.
    fn mark_receivable(&mut self, port: u16) {
        if let Some(p) = self.ports.get_mut(&port).filter(|p| !p.queued) {
            p.queued = true;
            self.receivable.push_back(port);
        }
    }

    /// When the runtime should run the next round: at once while sockets wait to be read, at the
    /// end of the turn's gather once it started, else at the driver's timer.
    pub fn wake_at(&self) -> Option<Instant> {
        let busy = !self.readable.is_empty() || !self.receivable.is_empty();
        let gather = self.gather.map(|gather| gather.until);
        gather.or_else(|| busy.then(Instant::now)).or(self.driver.poll_timeout())
    }

    /// Until when the runtime should sleep before the next round, woken by no socket, and then
    /// look without waiting at what is ready: while the turn gathers and its gather is one that
    /// sleeps ([`gather_sleeps`]), a slice of it at most ([`GATHER_SLICE`]); `None` otherwise
    /// (wait on the sockets until [`ServerIo::wake_at`]).
    pub fn sleep_until(&self, now: Instant) -> Option<Instant> {
        let gather = self.gather.filter(|gather| gather.asleep && gather.until > now)?;
        Some(gather.until.min(now + GATHER_SLICE))
    }

    /// Reads a round: a chunk from every readable connection and a batch from every transfer
    /// port that has some. `true` when the turn should end now: the gather (started on the turn's
    /// first round) is over, its writes are worth making, or the driver holds a turn's worth.
    pub fn round(&mut self, now: Instant) -> bool {
        self.read_round(now);
        self.receive_round();
        let driver = &self.driver;
        let gather = *self.gather.get_or_insert_with(|| match driver.turn_gather(now) {
            Some(wait) => Gather { until: now + wait, asleep: gather_sleeps(wait) },
            None => Gather { until: now, asleep: false },
        });
        now >= gather.until || self.driver.turn_is_worth_writing() || self.driver.turn_is_full()
    }

    /// Ends the turn: the timer if it is due, then every output. `true` when the driver asks to
    /// accept again (after running out of descriptors).
    pub fn end_turn(&mut self, now: Instant) -> bool {
        self.gather = None;
        if self.driver.poll_timeout().is_some_and(|at| at <= now) {
            self.driver.handle_timeout(now);
        }
        let accept_again = self.perform(now);
        self.driver.writes_done(Instant::now());
        self.driver.end_turn(now);
        accept_again
    }

    /// `conn`'s socket has room: if its last write would have blocked, writes on what it owes.
    /// Otherwise nothing: an edge-triggered poller says a socket has room whenever it reports
    /// anything of it (bytes that came in, too), and what it is owed goes out when the turn ends,
    /// in one write with the rest of the turn's lines.
    fn writable(&mut self, now: Instant, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn)
            && std::mem::take(&mut c.write_waits)
        {
            self.flush(now, conn);
        }
    }

    /// Transfer port `port`'s socket has room: if its last send would have blocked, sends on what
    /// is due (as [`ServerIo::writable`]).
    fn sendable(&mut self, now: Instant, port: u16) {
        if let Some(p) = self.ports.get_mut(&port)
            && std::mem::take(&mut p.write_waits)
        {
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
                continue; // read again when resumed
            }
            let socket = &c.socket;
            let turn = serve::read_chunk(now, &mut self.driver, conn, &mut self.buf, |b| {
                R::read(socket, b)
            });
            if turn == Turn::More {
                self.mark_readable(conn);
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
            if turn == Turn::More {
                self.mark_receivable(port);
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
                    // Dropping the socket takes it out of the runtime's poller: mio's by closing
                    // its only descriptor, smol's by deleting it first.
                    if let Some(c) = self.conns.remove(&conn) {
                        let _ =
                            socket2::SockRef::from(&c.socket).shutdown(std::net::Shutdown::Both);
                    }
                }
                Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                    let paused = matches!(output, Output::PauseReading { .. });
                    self.conns.entry(conn).and_modify(|c| c.paused = paused);
                    self.mark_readable(conn); // a paused one leaves the queue unread
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
        // What is owed is counted (a walk of its slices) only in a turn whose writes may wait.
        let coalesces = self.driver.turn_coalesces() && {
            let owed = self.driver.unsent(conn).map(<[u8]>::len).sum();
            self.driver.write_coalesces(owed)
        };
        if c.coalesces != coalesces {
            c.coalesces = coalesces;
            net::coalesce_writes(&c.socket, coalesces);
        }
        let socket = &c.socket;
        if serve::write_owed(now, &mut self.driver, conn, |s| R::write(socket, s)) == Turn::Blocked
        {
            c.write_waits = true;
        }
    }

    /// Sends what is due on `port`; a full socket keeps the rest until it is writable.
    fn transmit(&mut self, now: Instant, port: u16) {
        let Some(p) = self.ports.get_mut(&port).filter(|p| !p.write_waits) else {
            return;
        };
        if self.files.send_due(now, &mut self.driver, port, &p.socket).is_err() {
            p.write_waits = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use natter_core::chat::catalogue::Catalogue;
    use natter_core::chat::server::ServerConfig;

    use super::*;

    /// A socket costs its descriptor and four flags in the table (issue 12: the table has a
    /// slot per connection, up to twice over).
    #[test]
    fn a_socket_in_the_turn_costs_eight_bytes() {
        assert_eq!(std::mem::size_of::<Watched<std::net::TcpStream>>(), 8);
    }

    #[test]
    fn every_key_reads_back_as_itself() {
        let keys = [
            Key::Port(0),
            Key::Port(u16::MAX),
            Key::Listener(0),
            Key::Listener(1),
            Key::Wake,
            Key::Conn(0),
            Key::Conn(1 << 40),
        ];
        for key in keys {
            assert_eq!(Key::from_raw(key.raw().expect("a key")), key);
        }
        // Listeners stop below the wake-up; connections stop where the poller's numbers do.
        assert!(Key::Listener(WAKE_KEY - LISTENER_KEYS).raw().is_err());
        assert!(Key::Conn(u64::MAX).raw().is_err());
    }

    /// Unix stream pairs stand in for a runtime's TCP sockets.
    struct Pairs;

    impl Sockets for Pairs {
        type Stream = UnixStream;
        type Datagrams = std::net::UdpSocket;

        fn read(mut stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
            stream.read(buf)
        }

        fn write(mut stream: &UnixStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            stream.write_vectored(slices)
        }

        fn recv_from(
            socket: &std::net::UdpSocket,
            buf: &mut [u8],
        ) -> io::Result<(usize, SocketAddr)> {
            socket.recv_from(buf)
        }
    }

    /// Everything the person at `client` has been sent so far.
    fn received(mut client: &UnixStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("reading the test's socket: {err}"),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// A turn of a default server over an empty folder, which lives as long as the folder kept.
    fn serving() -> (ServerIo<Pairs>, tempfile::TempDir) {
        let driver = ServerDriver::new(ServerConfig::default(), Catalogue::default(), 1);
        let folder = tempfile::tempdir().expect("a temporary folder");
        let files = ServedFiles::new(folder.path().to_path_buf());
        let prepared = Prepared { driver, files, ports: Vec::new() };
        let io = ServerIo::new(prepared, |_, socket| Ok(socket)).expect("io");
        (io, folder)
    }

    /// Regression (issue 12): an edge-triggered poller reports a socket's room with every event of
    /// it, bytes that came in included. Taken as "write now", that sent a reader's lines in the
    /// middle of the turn that read them, a write more per turn.
    #[test]
    fn room_reported_with_a_read_writes_nothing_before_the_turn_ends() {
        let now = Instant::now();
        let (mut io, _folder) = serving();
        let (server_end, client) = UnixStream::pair().expect("a socket pair");
        server_end.set_nonblocking(true).expect("non-blocking");
        client.set_nonblocking(true).expect("non-blocking");
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let conn = io.accepted(now, server_end, peer, false, |_, _| Ok(())).expect("accepted");
        let turn = |io: &mut ServerIo<Pairs>, line: &[u8]| {
            (&client).write_all(line).expect("the person writes");
            io.mark_readable(conn);
            while !io.round(now) {}
        };
        turn(&mut io, b"alice\n");
        io.end_turn(now);
        assert!(received(&client).contains("alice"), "the join was written");

        turn(&mut io, b"hello\n");
        io.writable(now, conn);
        assert_eq!(received(&client), "", "nothing goes out before the turn ends");
        io.end_turn(now);
        assert!(received(&client).contains("hello"), "the turn's line went out at its end");
    }

    /// A gathering turn that sleeps does so in slices, to its end and no further; a turn that
    /// does not gather, or gathers on its sockets, never sleeps.
    #[test]
    fn a_gather_is_slept_through_in_slices() {
        let now = Instant::now();
        let (mut io, _folder) = serving();
        assert_eq!(io.sleep_until(now), None, "no gather, no sleep");
        // A quiet server's first round does not gather: it never sleeps.
        assert!(io.round(now), "a turn with nothing to gather ends at once");
        assert_eq!(io.sleep_until(now), None);
        io.end_turn(now);

        let ms = std::time::Duration::from_millis;
        io.gather = Some(Gather { until: now + ms(5), asleep: true });
        assert_eq!(io.sleep_until(now), Some(now + GATHER_SLICE), "a slice of a long gather");
        let late = now + ms(5) - GATHER_SLICE / 2;
        assert_eq!(io.sleep_until(late), Some(now + ms(5)), "the last slice ends with the gather");
        assert_eq!(io.sleep_until(now + ms(5)), None, "over: read and write");
        io.gather = Some(Gather { until: now + GATHER_SLICE, asleep: true });
        assert_eq!(io.sleep_until(now), Some(now + GATHER_SLICE), "a slice's gather, one sleep");
        io.gather = Some(Gather { until: now + GATHER_SLICE, asleep: false });
        assert_eq!(io.sleep_until(now), None, "a gather that waits on its sockets never sleeps");
    }
}
