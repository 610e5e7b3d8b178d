//! The server as smol tasks around one server driver: a task per connection reads it, one writer
//! task performs a turn's writes together, a task per transfer port receives, and the timer and
//! the folder rescans feed the driver too. A socket that is full gets a short-lived task that
//! waits until it is writable and sends on.
//!
//! Why one task per connection and no channels: an idle connection then costs its socket, its
//! task and an entry in the hub, and a wake is a flag and a [`Waker`] in that entry. Why writes
//! are not done by the connection tasks: a turn reads every connection that is ready first (their
//! tasks run before the writer, which is woken by the first line owed), so that the lines of a
//! whole turn go to each reader in one write, as on mio.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use natter_core::driver::server::{Output, READ_CHUNK, ServerDriver};
use natter_core::wire::datagram::MAX_DATAGRAM;
use natter_runtime_common::ServedFiles;
use natter_runtime_common::serve::{self, BoundServer, Prepared, Stop, Turn};
use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Timer};

/// A wake-up with no content between tasks of this thread: one raised flag is as good as many.
#[derive(Default)]
struct Signal {
    raised: bool,
    waker: Option<Waker>,
}

impl Signal {
    fn raise(&mut self) {
        self.raised = true;
        wake(&mut self.waker);
    }

    /// Ready (and lowered) once raised; otherwise wakes `cx` when it is.
    fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::take(&mut self.raised) {
            return Poll::Ready(());
        }
        remember(&mut self.waker, cx);
        Poll::Pending
    }
}

/// Keeps the waker of `cx` in `slot` (a clone only when it is another task's).
fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

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
    writes_owed: Signal,
    accept_again: Signal,
    timer_moved: Signal,
    armed: Option<Instant>,
    buf: Vec<u8>,
}

type Shared = Rc<RefCell<Hub>>;

/// Serves `server` as smol tasks on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listener, options, scanned } = server;
    let ex = Rc::new(LocalExecutor::new());
    let listener = Async::new(listener)?;
    // The two wakes from other threads (a stop, a rescanned folder) need channels.
    let (stop_tx, stop_rx) = smol::channel::bounded(1);
    stop.on_ask(move || {
        let _ = stop_tx.try_send(());
    });
    let (folder_tx, folder_rx) = smol::channel::unbounded();
    let deliver = move |what| folder_tx.send_blocking(what).is_ok();
    let Prepared { driver, files, ports } =
        serve::prepare(Instant::now(), &options, scanned, &stop, deliver)?;
    let mut udp = HashMap::new();
    for (port, socket) in ports {
        udp.insert(port, (Rc::new(Async::new(socket)?), false));
    }
    let hub: Shared = Rc::new(RefCell::new(Hub {
        driver,
        files,
        ex: ex.clone(),
        conns: HashMap::new(),
        udp,
        owed: Vec::new(),
        writes_owed: Signal::default(),
        accept_again: Signal::default(),
        timer_moved: Signal::default(),
        armed: None,
        buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
    }));
    for (&port, (socket, _)) in &hub.borrow().udp {
        ex.spawn(receive_task(hub.clone(), port, socket.clone())).detach();
    }
    ex.spawn(timer_task(hub.clone())).detach();
    ex.spawn(writer_task(hub.clone())).detach();
    let folder_hub = hub.clone();
    ex.spawn(async move {
        while let Ok(delivered) = folder_rx.recv().await {
            feed(&folder_hub, |h| serve::feed(Instant::now(), &mut h.driver, &delivered));
        }
    })
    .detach();
    let accept_loop = async move {
        for conn in 0u64.. {
            let accepted = loop {
                match listener.accept().await {
                    Ok(accepted) => break accepted,
                    Err(err)
                        if feed(&hub, |h| {
                            serve::accept_failed(Instant::now(), &mut h.driver, &err)
                        }) => {}
                    Err(_) => poll_fn(|cx| hub.borrow_mut().accept_again.poll_take(cx)).await,
                }
            };
            let (stream, peer) = accepted;
            let stream = Rc::new(stream);
            feed(&hub, |h| {
                serve::accepted(Instant::now(), &mut h.driver, conn, peer, stream.get_ref());
                let c =
                    Conn { stream: stream.clone(), waker: None, paused: false, write_waits: false };
                h.conns.insert(conn, c);
            });
            hub.borrow().ex.spawn(conn_task(hub.clone(), conn, stream)).detach();
        }
        Ok(())
    };
    let stopped = async move {
        let _ = stop_rx.recv().await;
        Ok(())
    };
    smol::block_on(ex.run(accept_loop.or(stopped)))
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
                    self.writes_owed.raise();
                }
                Output::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        // Its task reads the end, or, paused, is woken; it finds no entry and ends.
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
                Output::AcceptAgain => self.accept_again.raise(),
                Output::Transmit { port } => self.transmit(hub, now, port),
                _ => {}
            }
        }
        // Wake the timer task only when the deadline moved earlier than the one it sleeps on.
        let next = self.driver.poll_timeout();
        if next.is_some_and(|at| self.armed.is_none_or(|armed| at < armed)) {
            self.armed = next;
            self.timer_moved.raise();
        }
    }

    /// Sends what is due on `port`; when its socket is full, a task sends on once it is writable.
    fn transmit(&mut self, hub: &Shared, now: Instant, port: u16) {
        let Some((socket, waits)) = self.udp.get_mut(&port).filter(|(_, waits)| !*waits) else {
            return;
        };
        if self.files.send_due(now, &mut self.driver, port, socket.get_ref()).is_err() {
            *waits = true;
            let (socket, hub) = (socket.clone(), hub.clone());
            self.ex
                .spawn(async move {
                    let _ = socket.writable().await;
                    feed(&hub, |h| {
                        h.udp.entry(port).and_modify(|(_, waits)| *waits = false);
                        h.transmit(&hub, Instant::now(), port);
                    });
                })
                .detach();
        }
    }

    /// Writes what is owed to `conn` until it is all out; when its socket is full, a task writes
    /// the rest once it is writable.
    fn flush(&mut self, hub: &Shared, now: Instant, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.write_waits) else {
            return;
        };
        let mut socket = c.stream.get_ref();
        if serve::write_owed(now, &mut self.driver, conn, |s| socket.write_vectored(s))
            == Turn::Blocked
        {
            c.write_waits = true;
            let (stream, hub) = (c.stream.clone(), hub.clone());
            self.ex
                .spawn(async move {
                    let _ = stream.writable().await;
                    feed(&hub, |h| {
                        h.conns.entry(conn).and_modify(|c| c.write_waits = false);
                        h.flush(&hub, Instant::now(), conn);
                    });
                })
                .detach();
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
                remember(&mut c.waker, cx);
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
        let turn = feed(&hub, |h| {
            if h.conns.get(&conn)?.paused {
                return Some((Turn::More, false)); // paused while waiting: read when resumed
            }
            let mut filled = false;
            let turn = serve::read_chunk(Instant::now(), &mut h.driver, conn, &mut h.buf, |b| {
                let read = stream.get_ref().read(b);
                filled = read.as_ref().is_ok_and(|&n| n == b.len());
                read
            });
            Some((turn, filled))
        });
        // A full turn (the driver's bound): this task performs the writes owed before the
        // others read on.
        if hub.borrow().driver.turn_is_full() {
            feed(&hub, |h| h.write_turn(&hub));
        }
        // A short read took all the kernel had: wait for readiness with the other sockets. A
        // full chunk may have more behind it: read again once the others had their turn (C6).
        match turn {
            None | Some((Turn::Ended, _)) => return,
            Some((Turn::More, filled)) => {
                wait = !filled;
                smol::future::yield_now().await;
            }
            Some((Turn::Blocked, _)) => wait = true,
        }
    }
}

/// Performs the writes owed, every connection's lines of the turn in one write where the socket
/// takes them. It is woken by the first write owed, so the connection tasks already woken read
/// first; a busy server waits the driver's gather first, while they read on into this turn.
async fn writer_task(hub: Shared) {
    loop {
        poll_fn(|cx| hub.borrow_mut().writes_owed.poll_take(cx)).await;
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

/// Calls the driver's `handle_timeout` when its deadline comes; sleeps until then, or until an
/// input brought an earlier deadline. An idle server does not wake at all.
async fn timer_task(hub: Shared) {
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
        };
        due.or(poll_fn(|cx| hub.borrow_mut().timer_moved.poll_take(cx))).await;
    }
}
