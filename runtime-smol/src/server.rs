//! The server as smol tasks: a task per socket waits for what the turn wants of it (bytes to
//! read, room to write) and says when it is there; one task runs the turns of
//! [`natter_runtime_common::turn`] (reads, the driver, its outputs), as the mio loop does.
//!
//! Why a task per socket: an idle connection then costs its socket, its task and an entry in the
//! turn. Why the reads are not done by those tasks: a turn reads every connection that is ready,
//! a chunk each per round, before it writes, so that the lines of a whole turn go to each reader
//! in one write.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use natter_runtime_common::serve::{self, BoundServer, Stop};
use natter_runtime_common::turn::{ServerIo, Sockets};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Timer};

/// smol's sockets, for the turn: shared with the task that awaits each.
struct Smol;

impl Sockets for Smol {
    type Stream = Rc<Async<TcpStream>>;
    type Datagrams = Rc<Async<UdpSocket>>;
    type Wake = Option<std::task::Waker>;

    fn read(stream: &Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
        stream.get_ref().read(buf)
    }

    fn write(stream: &Self::Stream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        stream.get_ref().write_vectored(slices)
    }

    fn recv_from(socket: &Self::Datagrams, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        socket.get_ref().recv_from(buf)
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

/// What every task shares: the sockets and the driver with their turn, and the wake-ups.
struct Hub {
    io: ServerIo<Smol>,
    /// Raised when a socket is ready or the driver was fed: wakes the turn task.
    ready: Sender<()>,
    /// One per listener: each accept loop waits on its own.
    accept_again: Vec<Sender<()>>,
}

type Shared = Rc<RefCell<Hub>>;

/// Feeds the turn (or the driver) outside the turn task, and wakes it to perform what follows.
fn fed<T>(hub: &Shared, input: impl FnOnce(&mut Hub) -> T) -> T {
    let mut guard = hub.borrow_mut();
    let fed = input(&mut guard);
    raise(&guard.ready);
    fed
}

/// Serves `server` as smol tasks on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listeners, options, scanned, tls } = server;
    let ex = Rc::new(LocalExecutor::new());
    // The two wakes from other threads (a stop, a rescanned folder) need channels.
    let (stop_tx, stop_rx) = signal();
    stop.on_ask(move || raise(&stop_tx));
    let (folder_tx, folder_rx) = smol::channel::unbounded();
    let deliver = move |what| folder_tx.send_blocking(what).is_ok();
    let prepared = serve::prepare(Instant::now(), &options, scanned, tls, &stop, deliver)?;
    let io: ServerIo<Smol> = ServerIo::new(prepared, |_, socket| Ok(Rc::new(Async::new(socket)?)))?;
    let ports: Vec<_> = io.ports().map(|(port, socket)| (port, socket.clone())).collect();
    let (ready, ready_rx) = signal();
    let hub = Rc::new(RefCell::new(Hub { io, ready, accept_again: Vec::new() }));
    for (port, socket) in ports {
        ex.spawn(watch_task(hub.clone(), socket, Watched::Port(port))).detach();
    }
    ex.spawn(turn_task(hub.clone(), ready_rx)).detach();
    let folder_hub = hub.clone();
    ex.spawn(async move {
        while let Ok(delivered) = folder_rx.recv().await {
            fed(&folder_hub, |h| serve::feed(Instant::now(), &mut h.io.driver, &delivered));
        }
    })
    .detach();
    // The accept loops are part of the future run here, not detached tasks, so that the
    // listeners close when the server stops.
    let stopped = async move {
        let _ = stop_rx.recv().await;
        Ok(())
    };
    let mut run: std::pin::Pin<Box<dyn Future<Output = io::Result<()>>>> = Box::pin(stopped);
    for listener in listeners {
        let (again, again_rx) = signal();
        hub.borrow_mut().accept_again.push(again);
        let socket = Async::new(listener.socket)?;
        let accepting = accept_loop(hub.clone(), ex.clone(), socket, listener.tls, again_rx);
        run = Box::pin(run.or(accepting));
    }
    smol::block_on(ex.run(run))
}

/// Accepts on one listener (the TLS one when `tls`) until the server stops; each connection gets
/// a task of its own.
async fn accept_loop(
    hub: Shared,
    ex: Rc<LocalExecutor<'static>>,
    listener: Async<TcpListener>,
    tls: bool,
    accept_again: Receiver<()>,
) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                let now = Instant::now();
                if !fed(&hub, |h| serve::accept_failed(now, &mut h.io.driver, &err)) {
                    let _ = accept_again.recv().await;
                }
                continue;
            }
        };
        let stream = Rc::new(stream);
        let socket = stream.clone();
        let accepted =
            fed(&hub, |h| h.io.accepted(Instant::now(), socket, peer, tls, |_, _| Ok(())));
        if let Ok(conn) = accepted {
            ex.spawn(watch_task(hub.clone(), stream, Watched::Conn(conn))).detach();
        }
    }
}

/// The socket a task watches.
#[derive(Clone, Copy)]
enum Watched {
    Conn(u64),
    Port(u16),
}

/// Waits for what the turn wants of one socket (bytes to read, room to write) and says when it is
/// there, until the socket is closed.
async fn watch_task<T>(hub: Shared, socket: Rc<Async<T>>, watched: Watched) {
    loop {
        let ready = poll_fn(|cx| {
            let want = match watched {
                Watched::Conn(conn) => hub.borrow_mut().io.watch(conn, cx),
                Watched::Port(port) => hub.borrow_mut().io.watch_port(port, cx),
            };
            let Some(want) = want else { return Poll::Ready(None) };
            // An error counts as ready: the read or write that follows meets it.
            if want.read && socket.poll_readable(cx).is_ready() {
                return Poll::Ready(Some(true));
            }
            if want.write && socket.poll_writable(cx).is_ready() {
                return Poll::Ready(Some(false));
            }
            Poll::Pending
        });
        let Some(readable) = ready.await else { return };
        fed(&hub, |h| match (watched, readable) {
            (Watched::Conn(conn), true) => h.io.mark_readable(conn),
            (Watched::Conn(conn), false) => h.io.writable(Instant::now(), conn),
            (Watched::Port(port), true) => h.io.mark_receivable(port),
            (Watched::Port(port), false) => h.io.sendable(Instant::now(), port),
        });
    }
}

/// Runs the turns: rounds of reads while sockets are ready (letting their tasks run between
/// rounds) and the driver's gather lasts, then the outputs. Woken by a ready socket, an input,
/// or the driver's timer; an idle server does not wake at all.
async fn turn_task(hub: Shared, ready: Receiver<()>) {
    loop {
        let mut gather_until = None;
        loop {
            let wake_at = hub.borrow().io.wake_at(gather_until);
            match wake_at {
                Some(at) if at <= Instant::now() => {}
                Some(at) => {
                    let due = async {
                        Timer::at(at).await;
                        Ok(())
                    };
                    let _ = ready.recv().or(due).await;
                }
                None => {
                    let _ = ready.recv().await;
                }
            }
            // Let the tasks of every socket that became ready with this one say so first, so
            // that the round reads them all, as one poll of a loop would (and, when the round is
            // due at once, let the other tasks run).
            smol::future::yield_now().await;
            if hub.borrow_mut().io.round(Instant::now(), &mut gather_until) {
                break;
            }
        }
        let mut h = hub.borrow_mut();
        if h.io.end_turn(Instant::now()) {
            h.accept_again.iter().for_each(raise);
        }
    }
}
