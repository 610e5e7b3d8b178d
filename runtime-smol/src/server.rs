//! The server as smol tasks around one server driver: a task per connection reads it (and waits
//! when its socket is full), one writer task performs a turn's writes together, and a task per
//! transfer port, the timer and the folder rescans feed the driver too.
//!
//! Why one task per connection and not two with channels between them: an idle connection then
//! costs its socket, its task and an entry in the hub (a few hundred bytes), and a wake is a flag
//! and a [`Waker`] in that entry. Why writes are not done by the connection tasks: a turn reads
//! every connection that is ready first (their tasks run before the writer, which is woken by the
//! first line owed), so that the lines of a whole turn go to each reader in one write, as on mio.

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
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
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

/// One connection: its socket, and what its task is to do besides waiting for bytes.
struct Conn {
    stream: Async<TcpStream>,
    /// The connection's task, for a wake its socket does not give (resumed, blocked, closed).
    waker: Option<Waker>,
    /// The driver paused reading it (flood protection, or a close in progress).
    paused: bool,
    /// Read without waiting for readiness: the last read filled its chunk, or reading resumed.
    read_now: bool,
    /// Its socket was full: its task writes the rest when it is writable.
    write_blocked: bool,
}

impl Conn {
    fn new(stream: Async<TcpStream>) -> Self {
        Self { stream, waker: None, paused: false, read_now: false, write_blocked: false }
    }

    /// Wakes its task for what its socket does not signal (resumed, blocked, closed).
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// What a connection's task is to do after a wait.
#[derive(Clone, Copy)]
struct Ready {
    read: bool,
    write: bool,
}

/// What every task shares: the driver, the file work, the sockets, one read buffer.
struct Hub {
    driver: ServerDriver,
    files: ServedFiles,
    conns: HashMap<u64, Conn>,
    /// Connections owed a write this turn, in the order the driver asked.
    owed: Vec<u64>,
    /// Raised when `owed` gets its first connection: wakes the writer task.
    writes_owed: Signal,
    /// Chunks read since the writes owed were last performed (the turn's size, for
    /// [`ServerDriver::turn_gather`]).
    reads_in_turn: usize,
    transmit: HashMap<u16, Signal>,
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
    let deliver = move |scanned| folder_tx.send_blocking(scanned).is_ok();
    let Prepared { driver, files, ports } =
        serve::prepare(Instant::now(), &options, scanned, &stop, deliver)?;
    let hub: Shared = Rc::new(RefCell::new(Hub {
        driver,
        files,
        conns: HashMap::new(),
        owed: Vec::new(),
        writes_owed: Signal::default(),
        reads_in_turn: 0,
        transmit: HashMap::new(),
        accept_again: Signal::default(),
        timer_moved: Signal::default(),
        armed: None,
        buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
    }));
    for (port, socket) in ports {
        let socket = Rc::new(Async::new(socket)?);
        hub.borrow_mut().transmit.insert(port, Signal::default());
        ex.spawn(receive_task(hub.clone(), port, socket.clone())).detach();
        ex.spawn(transmit_task(hub.clone(), port, socket)).detach();
    }
    ex.spawn(timer_task(hub.clone())).detach();
    ex.spawn(writer_task(hub.clone())).detach();
    let folder_hub = hub.clone();
    ex.spawn(async move {
        while let Ok(scanned) = folder_rx.recv().await {
            feed(&folder_hub, |h| serve::feed_folder(Instant::now(), &mut h.driver, &scanned));
        }
    })
    .detach();
    let executor = ex.clone();
    let accept_loop = async move {
        let mut next_conn = 0u64;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let conn = next_conn;
                    next_conn += 1;
                    feed(&hub, |h| {
                        serve::accepted(
                            Instant::now(),
                            &mut h.driver,
                            conn,
                            peer,
                            stream.get_ref(),
                        );
                        h.conns.insert(conn, Conn::new(stream));
                    });
                    executor.spawn(conn_task(hub.clone(), conn)).detach();
                }
                Err(err) => {
                    if !feed(&hub, |h| serve::accept_failed(Instant::now(), &mut h.driver, &err)) {
                        poll_fn(|cx| hub.borrow_mut().accept_again.poll_take(cx)).await;
                    }
                }
            }
        }
    };
    let stopped = async move {
        let _ = stop_rx.recv().await;
        Ok(())
    };
    smol::block_on(ex.run(accept_loop.or(stopped)))
}

/// Feeds the driver (through the hub), then performs everything it asks.
fn feed<T>(hub: &Shared, input: impl FnOnce(&mut Hub) -> T) -> T {
    let mut hub = hub.borrow_mut();
    let fed = input(&mut hub);
    hub.perform();
    fed
}

impl Hub {
    /// Performs the driver's outputs until it asks nothing more. Writes are only noted: the
    /// writer task does them once the connections that are ready have been read.
    fn perform(&mut self) {
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
                        let _ = c.stream.get_ref().shutdown(std::net::Shutdown::Both);
                        c.wake(); // its task finds the entry gone and ends
                    }
                }
                Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                    let paused = matches!(output, Output::PauseReading { .. });
                    self.conns.entry(conn).and_modify(|c| {
                        (c.paused, c.read_now) = (paused, !paused);
                        c.wake();
                    });
                }
                Output::AcceptAgain => self.accept_again.raise(),
                Output::Transmit { port } => {
                    if let Some(signal) = self.transmit.get_mut(&port) {
                        signal.raise();
                    }
                }
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

    /// Writes what is owed to `conn` until it is all out or its socket is full; then its task
    /// waits for the socket to be writable and writes the rest.
    fn flush(&mut self, now: Instant, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.write_blocked) else {
            return;
        };
        let mut socket = c.stream.get_ref();
        let turn = serve::write_owed(now, &mut self.driver, conn, |s| socket.write_vectored(s));
        if turn == Turn::Blocked {
            c.write_blocked = true;
            c.wake();
        }
    }

    /// Performs the writes owed, in the order they were asked for.
    fn write_turn(&mut self) {
        self.reads_in_turn = 0;
        let mut owed = std::mem::take(&mut self.owed);
        let now = Instant::now();
        for conn in owed.drain(..) {
            self.flush(now, conn);
        }
        self.driver.end_turn();
        // Keep the list's room for the next turn (unless writing owed more already).
        if self.owed.is_empty() {
            self.owed = owed;
        }
    }

    /// What `conn`'s task is to do now; `None` once the connection is closed.
    fn poll_conn(&mut self, conn: u64, cx: &mut Context<'_>) -> Poll<Option<Ready>> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Poll::Ready(None);
        };
        // An error counts as ready: the read or write that follows meets it and ends the
        // connection.
        let write = c.write_blocked && c.stream.poll_writable(cx).is_ready();
        let read = !c.paused && (c.read_now || c.stream.poll_readable(cx).is_ready());
        if read || write {
            return Poll::Ready(Some(Ready { read, write }));
        }
        remember(&mut c.waker, cx);
        Poll::Pending
    }
}

/// Reads connection `conn` a chunk at a time, letting every other task run between chunks (C6),
/// and writes to it when its socket, full before, takes bytes again; ends when it is closed.
async fn conn_task(hub: Shared, conn: u64) {
    while let Some(ready) = poll_fn(|cx| hub.borrow_mut().poll_conn(conn, cx)).await {
        if ready.write {
            feed(&hub, |h| {
                if let Some(c) = h.conns.get_mut(&conn) {
                    c.write_blocked = false;
                }
                h.flush(Instant::now(), conn);
            });
        }
        if !ready.read {
            continue;
        }
        let turn = feed(&hub, |h| {
            let Some(c) = h.conns.get_mut(&conn) else {
                return Turn::Ended;
            };
            let mut socket = c.stream.get_ref();
            let mut filled = false;
            let turn = serve::read_chunk(Instant::now(), &mut h.driver, conn, &mut h.buf, |b| {
                let read = socket.read(b);
                filled = read.as_ref().is_ok_and(|&n| n == b.len());
                read
            });
            // A short read took all the kernel had: wait for readiness with the other sockets
            // rather than reading again at once (a read that finds nothing, and a turn of its
            // own whose lines would go out in writes of their own). A full chunk may have more
            // behind it: read again once the others had their turn (C6).
            c.read_now = turn == Turn::More && filled;
            h.reads_in_turn += 1;
            turn
        });
        // A full turn (the driver's bound): this task performs the writes owed before the
        // others read on.
        if hub.borrow().driver.turn_is_full() {
            feed(&hub, Hub::write_turn);
        }
        match turn {
            Turn::Ended => return,
            // The others have their turn before this one is read again (C6).
            Turn::More => smol::future::yield_now().await,
            Turn::Blocked => {}
        }
    }
}

/// Performs the writes owed, every connection's lines of the turn in one write where the socket
/// takes them. It is woken by the first write owed, so the connection tasks already woken read
/// first.
async fn writer_task(hub: Shared) {
    loop {
        poll_fn(|cx| hub.borrow_mut().writes_owed.poll_take(cx)).await;
        let gather = {
            let h = hub.borrow();
            h.driver.turn_gather(Instant::now(), h.reads_in_turn)
        };
        if let Some(wait) = gather {
            // A busy room: the connection tasks read on meanwhile, into this turn.
            Timer::after(wait).await;
        }
        feed(&hub, Hub::write_turn);
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

async fn transmit_task(hub: Shared, port: u16, socket: Rc<Async<UdpSocket>>) {
    loop {
        poll_fn(|cx| match hub.borrow_mut().transmit.get_mut(&port) {
            Some(signal) => signal.poll_take(cx),
            None => Poll::Pending,
        })
        .await;
        loop {
            // Sending may have ended the transfer: `feed` performs what that asks.
            let sent = feed(&hub, |h| {
                h.files.send_due(Instant::now(), &mut h.driver, port, socket.get_ref())
            });
            if sent.is_ok() || socket.writable().await.is_err() {
                break;
            }
        }
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
