//! The server as smol tasks around one server driver: a task per connection reads it, one turn
//! task performs a turn's writes together and the driver's timer, a task per transfer port
//! receives, and the folder rescans feed the driver too. A socket that is full gets a
//! short-lived task that waits until it is writable and sends on.
//!
//! Why one task per connection: an idle connection then costs its socket, its task and an entry
//! in the hub. Why writes are not done by the connection tasks: a turn reads every connection
//! that is ready first (their tasks run before the writer, which is woken by the first line
//! owed), so that the lines of a whole turn go to each reader in one write, as on mio.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use natter_core::driver::server::{Output, READ_CHUNK, ServerDriver};
use natter_core::wire::datagram::MAX_DATAGRAM;
use natter_runtime_common::ServedFiles;
use natter_runtime_common::serve::{self, BoundServer, Prepared, Stop, Turn};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Timer};

/// A wake-up with no content between tasks: a channel of one, as one raised flag is as good as
/// many.
fn signal() -> (Sender<()>, Receiver<()>) {
    smol::channel::bounded(1)
}

fn raise(signal: &Sender<()>) {
    let _ = signal.try_send(());
}

/// A connection's waker is kept in its entry, not in a channel: an idle connection costs less.
fn wake(slot: &mut Option<Waker>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

/// One connection: its socket, and what its task waits for besides bytes.
struct Conn {
    stream: Rc<Async<TcpStream>>,
    /// The connection's task, while it waits for reading to resume (or for the close).
    waker: Option<Waker>,
    /// The driver paused reading it (flood protection, or a close in progress).
    paused: bool,
    /// Its socket was full: a task waits until it is writable and writes the rest.
    write_waits: bool,
}

/// What every task shares: the driver, the file work, the sockets, one read buffer.
struct Hub {
    driver: ServerDriver,
    files: ServedFiles,
    ex: Rc<LocalExecutor<'static>>,
    conns: HashMap<u64, Conn>,
    /// Transfer sockets, and whether a task already waits for one to be writable.
    udp: HashMap<u16, (Rc<Async<UdpSocket>>, bool)>,
    /// Connections owed a write this turn, in the order the driver asked.
    owed: Vec<u64>,
    /// Raised when `owed` gets its first connection: wakes the writer task.
    writes_owed: Sender<()>,
    /// One per listener: each accept loop waits on its own.
    accept_again: Vec<Sender<()>>,
    timer_moved: Sender<()>,
    armed: Option<Instant>,
    /// Connections of every listener share one numbering.
    next_conn: u64,
    buf: Vec<u8>,
}

type Shared = Rc<RefCell<Hub>>;

/// Serves `server` as smol tasks on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listeners, options, scanned, tls } = server;
    let ex = Rc::new(LocalExecutor::new());
    // The two wakes from other threads (a stop, a rescanned folder) need channels.
    let (stop_tx, stop_rx) = signal();
    stop.on_ask(move || raise(&stop_tx));
    let (folder_tx, folder_rx) = smol::channel::unbounded();
    let deliver = move |what| folder_tx.send_blocking(what).is_ok();
    let Prepared { driver, files, ports } =
        serve::prepare(Instant::now(), &options, scanned, tls, &stop, deliver)?;
    let mut udp = HashMap::new();
    for (port, socket) in ports {
        udp.insert(port, (Rc::new(Async::new(socket)?), false));
    }
    let (writes_owed, writes_rx) = signal();
    let (timer_moved, timer_rx) = signal();
    let hub: Shared = Rc::new(RefCell::new(Hub {
        driver,
        files,
        ex: ex.clone(),
        conns: HashMap::new(),
        udp,
        owed: Vec::new(),
        writes_owed,
        accept_again: Vec::new(),
        timer_moved,
        armed: None,
        next_conn: 0,
        buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
    }));
    for (&port, (socket, _)) in &hub.borrow().udp {
        ex.spawn(receive_task(hub.clone(), port, socket.clone())).detach();
    }
    ex.spawn(turn_task(hub.clone(), writes_rx, timer_rx)).detach();
    let folder_hub = hub.clone();
    ex.spawn(async move {
        while let Ok(delivered) = folder_rx.recv().await {
            feed(&folder_hub, |h| serve::feed(Instant::now(), &mut h.driver, &delivered));
        }
    })
    .detach();
    // The accept loops are part of the future run here, not detached tasks, so that the
    // listeners close when the server stops.
    let stopped = async move {
        let _ = stop_rx.recv().await;
        Ok(())
    };
    let mut run: Pin<Box<dyn Future<Output = io::Result<()>>>> = Box::pin(stopped);
    for listener in listeners {
        let (again, again_rx) = signal();
        hub.borrow_mut().accept_again.push(again);
        let accepting =
            accept_loop(hub.clone(), Async::new(listener.socket)?, listener.tls, again_rx);
        run = Box::pin(run.or(accepting));
    }
    smol::block_on(ex.run(run))
}

/// Accepts on one listener (the TLS one when `tls`) until the server stops; each connection gets
/// a task of its own.
async fn accept_loop(
    hub: Shared,
    listener: Async<TcpListener>,
    tls: bool,
    accept_again: Receiver<()>,
) -> io::Result<()> {
    loop {
        let (stream, peer) = loop {
            match listener.accept().await {
                Ok(accepted) => break accepted,
                Err(err)
                    if feed(&hub, |h| {
                        serve::accept_failed(Instant::now(), &mut h.driver, &err)
                    }) => {}
                Err(_) => drop(accept_again.recv().await),
            }
        };
        let stream = Rc::new(stream);
        let conn = feed(&hub, |h| {
            let conn = h.next_conn;
            h.next_conn += 1;
            serve::accepted(Instant::now(), &mut h.driver, conn, peer, stream.get_ref(), tls);
            let c = Conn { stream: stream.clone(), waker: None, paused: false, write_waits: false };
            h.conns.insert(conn, c);
            conn
        });
        hub.borrow().ex.spawn(conn_task(hub.clone(), conn, stream)).detach();
    }
}

/// Feeds the driver (through the hub), then performs everything it asks.
fn feed<T>(hub: &Shared, input: impl FnOnce(&mut Hub) -> T) -> T {
    let mut guard = hub.borrow_mut();
    let fed = input(&mut guard);
    guard.perform(hub);
    fed
}

impl Hub {
    /// Performs the driver's outputs until it asks nothing more. Writes are only noted: the
    /// writer task does them once the connections that are ready have been read.
    fn perform(&mut self, hub: &Shared) {
        let now = Instant::now();
        while let Some(output) = self.driver.poll_output() {
            let Some(output) = self.files.perform(now, &mut self.driver, output) else {
                continue;
            };
            match output {
                Output::Write { conn } => {
                    self.owed.push(conn);
                    raise(&self.writes_owed);
                }
                Output::Close { conn } => {
                    // Its task reads the end, or, paused, is woken; it finds no entry and ends.
                    if let Some(mut c) = self.conns.remove(&conn) {
                        let _ = c.stream.get_ref().shutdown(std::net::Shutdown::Both);
                        wake(&mut c.waker);
                    }
                }
                Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                    let paused = matches!(output, Output::PauseReading { .. });
                    self.conns.entry(conn).and_modify(|c| {
                        c.paused = paused;
                        wake(&mut c.waker);
                    });
                }
                Output::AcceptAgain => self.accept_again.iter().for_each(raise),
                Output::Transmit { port } => self.transmit(hub, now, port),
                _ => {}
            }
        }
        // Wake the timer task only when the deadline moved earlier than the one it sleeps on.
        let next = self.driver.poll_timeout();
        if next.is_some_and(|at| self.armed.is_none_or(|armed| at < armed)) {
            self.armed = next;
            raise(&self.timer_moved);
        }
    }

    /// Runs `then` on a task of its own once `writable` is ready (a full socket has room).
    fn when_writable(
        &self,
        hub: &Shared,
        writable: impl Future<Output = io::Result<()>> + 'static,
        then: impl FnOnce(&mut Hub, &Shared) + 'static,
    ) {
        let hub = hub.clone();
        let task = async move {
            let _ = writable.await;
            feed(&hub, |h| then(h, &hub));
        };
        self.ex.spawn(task).detach();
    }

    /// Sends what is due on `port`; when its socket is full, sends on once it is writable.
    fn transmit(&mut self, hub: &Shared, now: Instant, port: u16) {
        let Some((socket, waits)) = self.udp.get_mut(&port).filter(|(_, waits)| !*waits) else {
            return;
        };
        if self.files.send_due(now, &mut self.driver, port, socket.get_ref()).is_err() {
            *waits = true;
            let socket = socket.clone();
            self.when_writable(hub, async move { socket.writable().await }, move |h, hub| {
                h.udp.entry(port).and_modify(|(_, waits)| *waits = false);
                h.transmit(hub, Instant::now(), port);
            });
        }
    }

    /// Writes what is owed to `conn` until it is all out; when its socket is full, writes the
    /// rest once it is writable.
    fn flush(&mut self, hub: &Shared, now: Instant, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.write_waits) else {
            return;
        };
        let mut socket = c.stream.get_ref();
        if serve::write_owed(now, &mut self.driver, conn, |s| socket.write_vectored(s))
            == Turn::Blocked
        {
            c.write_waits = true;
            let stream = c.stream.clone();
            self.when_writable(hub, async move { stream.writable().await }, move |h, hub| {
                h.conns.entry(conn).and_modify(|c| c.write_waits = false);
                h.flush(hub, Instant::now(), conn);
            });
        }
    }

    /// Performs the writes owed, in the order they were asked for.
    fn write_turn(&mut self, hub: &Shared) {
        let mut owed = std::mem::take(&mut self.owed);
        let now = Instant::now();
        for conn in owed.drain(..) {
            self.flush(hub, now, conn);
        }
        self.driver.end_turn(now);
        // Keep the list's room for the next turn (unless writing owed more already).
        if self.owed.is_empty() {
            self.owed = owed;
        }
    }

    /// Ready with `true` while `conn` may be read, `false` once it is closed.
    fn poll_readable(&mut self, conn: u64, cx: &mut Context<'_>) -> Poll<bool> {
        match self.conns.get_mut(&conn) {
            None => Poll::Ready(false),
            Some(c) if !c.paused => Poll::Ready(true),
            Some(c) => {
                if !c.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    c.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Reads connection `conn` a chunk at a time, letting every other task run between chunks (C6);
/// ends when it is closed.
async fn conn_task(hub: Shared, conn: u64, stream: Rc<Async<TcpStream>>) {
    let mut wait = true;
    while poll_fn(|cx| hub.borrow_mut().poll_readable(conn, cx)).await {
        // An error counts as ready: the read that follows meets it and ends the connection.
        if wait {
            let _ = stream.readable().await;
        }
        let mut filled = false;
        let turn = feed(&hub, |h| {
            if h.conns.get(&conn).is_none_or(|c| c.paused) {
                return Turn::More; // closed or paused while waiting: `poll_readable` decides
            }
            serve::read_chunk(Instant::now(), &mut h.driver, conn, &mut h.buf, |b| {
                let read = stream.get_ref().read(b);
                filled = read.as_ref().is_ok_and(|&n| n == b.len());
                read
            })
        });
        // A full turn (the driver's bound): this task performs the writes owed before the
        // others read on.
        if hub.borrow().driver.turn_is_full() {
            feed(&hub, |h| h.write_turn(&hub));
        }
        // A short read took all the kernel had: wait for readiness with the other sockets. A
        // full chunk may have more behind it: read again once the others had their turn (C6).
        match turn {
            Turn::Ended => return,
            Turn::More => {
                wait = !filled;
                smol::future::yield_now().await;
            }
            Turn::Blocked => wait = true,
        }
    }
}

/// Performs the turn's writes and the driver's timer. Woken by the first write owed, so the
/// connection tasks already woken read first (a busy server waits the driver's gather, while they
/// read on into this turn); by the deadline; or by an input that brought the deadline earlier. An
/// idle server does not wake at all.
async fn turn_task(hub: Shared, writes_owed: Receiver<()>, timer_moved: Receiver<()>) {
    loop {
        let next = hub.borrow().driver.poll_timeout();
        if next.is_some_and(|at| at <= Instant::now()) {
            feed(&hub, |h| h.driver.handle_timeout(Instant::now()));
            continue;
        }
        hub.borrow_mut().armed = next;
        let due = async {
            match next {
                Some(at) => drop(Timer::at(at).await),
                None => std::future::pending().await,
            }
            false
        };
        let moved = async { timer_moved.recv().await.is_err() };
        let owed = async { writes_owed.recv().await.is_ok() };
        if owed.or(due).or(moved).await {
            let gather = hub.borrow().driver.turn_gather(Instant::now());
            if let Some(wait) = gather {
                Timer::after(wait).await;
            }
            feed(&hub, |h| h.write_turn(&hub));
            // Writing may have asked for more writes (a close after the last byte, a presence
            // line): they wait for the next turn, after the reads that came meanwhile.
            smol::future::yield_now().await;
        }
    }
}

async fn receive_task(hub: Shared, port: u16, socket: Rc<Async<UdpSocket>>) {
    while socket.readable().await.is_ok() {
        feed(&hub, |h| {
            serve::receive_datagrams(&mut h.driver, port, &mut h.buf, |b| {
                socket.get_ref().recv_from(b)
            })
        });
        smol::future::yield_now().await;
    }
}
