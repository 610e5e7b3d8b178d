//! The server on smol: the turn of [`natter_runtime_common::turn`] (reads, the driver, its
//! outputs) runs as one future that waits on one poller of every socket (listeners, chat
//! connections, transfer ports), on the driver's timer, and on the task that feeds the driver what
//! other threads deliver (a rescanned folder, the cluster's news); the executor runs it until a
//! stop is asked.
//!
//! Why one poller of our own (`polling`, smol's) under smol's reactor, rather than an
//! `Async<TcpStream>` and a task per socket: those cost an idle person about 450 bytes (the
//! reactor's source, the task, their slots), three quarters of what the rest of the server spends
//! on one (issue 12). The poller is edge-triggered, as the turn expects: it reads and writes until a
//! socket would block and remembers what is ready. smol's reactor sees the poller as one source
//! that is readable when a socket is ready.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use natter_runtime_common::serve::{self, BoundServer, Stop};
use natter_runtime_common::turn::{ServerIo, Sockets};
use polling::{Event, Events, PollMode, Poller};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Timer};

/// Transfer port `p` is key `p` in the poller, listener `i` is `LISTENERS + i`, and
/// connection `c` is `FIRST_CONN + c`.
const LISTENERS: usize = 1 << 16;
const FIRST_CONN: usize = 1 << 17;

/// The sockets of the turn, each in the poller.
struct Smol;

impl Sockets for Smol {
    type Stream = Polled<TcpStream>;
    type Datagrams = Polled<UdpSocket>;

    fn read(stream: &Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
        (&stream.socket).read(buf)
    }

    fn write(stream: &Self::Stream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        (&stream.socket).write_vectored(slices)
    }

    fn recv_from(socket: &Self::Datagrams, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        socket.socket.recv_from(buf)
    }
}

/// A non-blocking socket that the turn's poller watches once [`Polled::watch`] is called; it
/// leaves the poller before it closes.
struct Polled<T: AsFd> {
    socket: T,
    poller: Rc<Poller>,
}

impl<T: AsFd> Polled<T> {
    fn new(socket: T, poller: &Rc<Poller>) -> Self {
        Self { socket, poller: poller.clone() }
    }

    /// Watches both directions under `key`, edge-triggered.
    fn watch(&self, key: usize) -> io::Result<()> {
        // SAFETY: `polling` asks that a source be deleted from the poller before it is closed.
        // The socket is closed only when this `Polled` is dropped, and its `drop` deletes it
        // first.
        #[allow(unsafe_code)]
        unsafe {
            self.poller.add_with_mode(&self.socket.as_fd(), Event::all(key), PollMode::Edge)
        }
    }
}

impl<T: AsFd> Drop for Polled<T> {
    fn drop(&mut self) {
        // A socket that was never watched is not found: nothing to do either way.
        let _ = self.poller.delete(&self.socket);
    }
}

impl<T: AsFd> AsFd for Polled<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// A wake-up with no content between tasks: a channel of one, as one raised flag is as good as
/// many.
fn signal() -> (Sender<()>, Receiver<()>) {
    smol::channel::bounded(1)
}

fn raise(signal: &Sender<()>) {
    let _ = signal.try_send(());
}

/// What the turn task and the delivery task share.
struct Hub {
    io: ServerIo<Smol>,
    /// The listeners, each in the poller, and whether it is the TLS one.
    listeners: Vec<(Polled<TcpListener>, bool)>,
    /// Raised when the delivery task fed the driver: wakes the turn task.
    fed: Sender<()>,
}

type Shared = Rc<RefCell<Hub>>;

/// Serves `server` on smol on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listeners, options, scanned, tls } = server;
    let ex = LocalExecutor::new();
    // The wakes from other threads (a stop, a delivery: a rescanned folder, the cluster's news)
    // need channels.
    let (stop_tx, stop_rx) = signal();
    stop.on_ask(move || raise(&stop_tx));
    let (folder_tx, folder_rx) = smol::channel::unbounded();
    let deliver = move |what| folder_tx.send_blocking(what).is_ok();
    let prepared = serve::prepare(Instant::now(), &options, scanned, tls, &stop, deliver)?;
    let poller = Rc::new(Poller::new()?);
    let io = ServerIo::new(prepared, |port, socket| {
        let socket = Polled::new(socket, &poller);
        socket.watch(usize::from(port))?;
        Ok(socket)
    })?;
    let mut watched = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let socket = Polled::new(listener.socket, &poller);
        socket.watch(LISTENERS + i)?;
        watched.push((socket, listener.tls));
    }
    let (fed, fed_rx) = signal();
    let hub = Rc::new(RefCell::new(Hub { io, listeners: watched, fed }));
    let folder_hub = hub.clone();
    ex.spawn(async move {
        while let Ok(delivered) = folder_rx.recv().await {
            let mut h = folder_hub.borrow_mut();
            serve::feed(Instant::now(), &mut h.io.driver, &delivered);
            raise(&h.fed);
        }
    })
    .detach();
    let stopped = async move {
        let _ = stop_rx.recv().await;
        Ok(())
    };
    let turns = turn_task(hub, Async::new(poller)?, fed_rx);
    // When this returns, the executor drops the delivery task, and with the hub every socket.
    smol::block_on(ex.run(stopped.or(turns)))
}

/// Runs the turns: rounds of reads while sockets are ready and the driver's gather lasts, then
/// the outputs. Woken by the poller, the delivery task, or the driver's timer; an idle server does
/// not wake at all. Returns only when the poller fails.
async fn turn_task(hub: Shared, poller: Async<Rc<Poller>>, fed: Receiver<()>) -> io::Result<()> {
    let mut events = Events::new();
    loop {
        let mut gather_until = None;
        let mut woken = false;
        loop {
            // What is ready already (a zero-timeout wait: a few syscalls in `polling`): a busy
            // server finds some most rounds, and then does not go through smol's reactor to
            // learn that its poller has events.
            let now = Instant::now();
            events.clear();
            poller.get_ref().wait(&mut events, Some(Duration::ZERO))?;
            let found = !events.is_empty();
            dispatch(&mut hub.borrow_mut(), now, &events);
            // Read after `wake_at`: sockets still queued from the last turn make it "now".
            let wake_at = hub.borrow().io.wake_at(gather_until);
            if !found && !woken && wake_at.is_none_or(|at| at > Instant::now()) {
                let fed = async {
                    let _ = fed.recv().await;
                    Ok(())
                };
                let due = async {
                    match wake_at {
                        Some(at) => _ = Timer::at(at).await,
                        None => std::future::pending().await,
                    }
                    Ok(())
                };
                poller.readable().or(fed).or(due).await?;
                woken = true;
                continue;
            }
            woken = false;
            // Let the delivery task run: a busy turn does not wait.
            smol::future::yield_now().await;
            if hub.borrow_mut().io.round(Instant::now(), &mut gather_until) {
                break;
            }
        }
        let mut h = hub.borrow_mut();
        let now = Instant::now();
        if h.io.end_turn(now) {
            accept_all(&mut h, now, None);
        }
    }
}

/// Notes what each event says is ready; accepts, and writes where a socket has room again.
fn dispatch(hub: &mut Hub, now: Instant, events: &Events) {
    for event in events.iter() {
        if let Some(conn) = event.key.checked_sub(FIRST_CONN) {
            let conn = conn as u64;
            if event.readable {
                hub.io.mark_readable(conn);
            }
            if event.writable {
                hub.io.writable(now, conn);
            }
        } else if let Some(listener) = event.key.checked_sub(LISTENERS) {
            accept_all(hub, now, Some(listener));
        } else if let Ok(port) = u16::try_from(event.key) {
            if event.readable {
                hub.io.mark_receivable(port);
            }
            if event.writable {
                hub.io.sendable(now, port);
            }
        }
    }
}

/// Accepts on listener `which` (on every one when `None`) until it has no more, and puts each
/// connection in the poller.
fn accept_all(hub: &mut Hub, now: Instant, which: Option<usize>) {
    let Hub { io, listeners, .. } = hub;
    for (i, (listener, tls)) in listeners.iter().enumerate() {
        if which.is_some_and(|w| w != i) {
            continue;
        }
        loop {
            let (stream, peer) = match listener.socket.accept() {
                Ok(accepted) => accepted,
                Err(err) if serve::accept_failed(now, &mut io.driver, &err) => continue,
                Err(_) => break,
            };
            if let Err(err) = stream.set_nonblocking(true) {
                tracing::warn!("cannot make a new connection non-blocking, closing it: {err}");
                continue;
            }
            let stream = Polled::new(stream, &listener.poller);
            let watch = |conn: u64, stream: &mut Polled<TcpStream>| {
                let key = usize::try_from(conn).ok().and_then(|c| c.checked_add(FIRST_CONN));
                stream.watch(key.ok_or_else(|| io::Error::other("connection numbers ran out"))?)
            };
            if let Err(err) = io.accepted(now, stream, peer, *tls, watch) {
                tracing::warn!("cannot watch a new connection: {err}");
            }
        }
    }
}
