//! The server on smol: the turn of [`natter_runtime_common::turn`] (reads, the driver, its
//! outputs) runs as one future that waits on one poller of every socket (listeners, chat
//! connections, transfer ports), on the driver's timer, and on what other threads deliver (a
//! rescanned folder, the cluster's news, a stop).
//!
//! Why one poller of our own (`polling`, smol's) under smol's reactor, rather than an
//! `Async<TcpStream>` and a task per socket: those cost an idle person about 450 bytes (the
//! reactor's source, the task, their slots), three quarters of what the rest of the server spends
//! on one (issue 12). The poller is edge-triggered, as the turn expects: it reads and writes until a
//! socket would block and remembers what is ready. smol's reactor sees the poller as one source
//! that is readable when a socket is ready.

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use natter_runtime_common::serve::{self, BoundServer, Delivery, Stop};
use natter_runtime_common::turn::{Key, ServerIo, Sockets};
use polling::{Event, Events, PollMode, Poller};
use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::{Async, Timer};

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
    fn watch(&self, key: Key) -> io::Result<()> {
        let key = key.raw()?;
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

/// The server's listeners, each in the poller, and whether it is the TLS one.
type Listeners = Vec<(Polled<TcpListener>, bool)>;

/// What another thread sends the turn: a delivery to feed the driver (a rescanned folder, the
/// cluster's news), or `None` to wake it because a stop was asked.
type Wake = Option<Delivery>;

/// Serves `server` on smol on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listeners, options, scanned, tls } = server;
    let (wake, from_threads) = smol::channel::unbounded::<Wake>();
    let stop_wake = wake.clone();
    stop.on_ask(move || drop(stop_wake.try_send(None)));
    let deliver = move |what| wake.send_blocking(Some(what)).is_ok();
    let prepared = serve::prepare(Instant::now(), &options, scanned, tls, &stop, deliver)?;
    let poller = Rc::new(Poller::new()?);
    let mut io = ServerIo::new(prepared, |port, socket| {
        let socket = Polled::new(socket, &poller);
        socket.watch(Key::Port(port))?;
        Ok(socket)
    })?;
    let mut watched = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let socket = Polled::new(listener.socket, &poller);
        socket.watch(Key::Listener(i))?;
        watched.push((socket, listener.tls));
    }
    let poller = Async::new(poller)?;
    smol::block_on(turns(&mut io, &watched, &poller, &from_threads, &stop))
}

/// Runs the turns until a stop is asked: rounds of reads while sockets are ready and the
/// driver's gather lasts, then the outputs. Woken by the poller, another thread, or the driver's
/// timer; an idle server does not wake at all.
async fn turns(
    io: &mut ServerIo<Smol>,
    listeners: &Listeners,
    poller: &Async<Rc<Poller>>,
    from_threads: &Receiver<Wake>,
    stop: &Stop,
) -> io::Result<()> {
    let mut events = Events::new();
    while !stop.asked() {
        let mut woken = false;
        loop {
            // A gathering turn sleeps, woken by none of its sockets, then looks at what came.
            if let Some(until) = io.sleep_until(Instant::now()) {
                Timer::at(until).await;
                woken = true;
            }
            // What is ready already (a zero-timeout wait: a few syscalls in `polling`): a busy
            // server finds some most rounds, and then does not go through smol's reactor to
            // learn that its poller has events.
            let now = Instant::now();
            events.clear();
            poller.get_ref().wait(&mut events, Some(Duration::ZERO))?;
            dispatch(io, listeners, now, &events);
            // Read after `wake_at`: sockets still queued from the last turn make it "now".
            let wake_at = io.wake_at();
            if events.is_empty() && !woken && wake_at.is_none_or(|at| at > Instant::now()) {
                let delivered = async { Ok(from_threads.recv().await.ok().flatten()) };
                let due = async {
                    match wake_at {
                        Some(at) => _ = Timer::at(at).await,
                        None => std::future::pending().await,
                    }
                    Ok(None)
                };
                let ready = async { poller.readable().await.map(|()| None) };
                if let Some(delivery) = ready.or(delivered).or(due).await? {
                    serve::feed(Instant::now(), &mut io.driver, &delivery);
                }
                woken = true;
                continue;
            }
            woken = false;
            if io.round(Instant::now()) {
                break;
            }
        }
        let now = Instant::now();
        // What came while the server was too busy to wait.
        while let Ok(wake) = from_threads.try_recv() {
            if let Some(delivery) = wake {
                serve::feed(now, &mut io.driver, &delivery);
            }
        }
        if io.end_turn(now) {
            listeners.iter().for_each(|listener| accept_all(io, now, listener));
        }
    }
    Ok(())
}

/// Notes what each event says is ready; accepts, and writes where a socket has room again.
fn dispatch(io: &mut ServerIo<Smol>, listeners: &Listeners, now: Instant, events: &Events) {
    for event in events.iter() {
        match Key::from_raw(event.key) {
            Key::Listener(i) => {
                if let Some(listener) = listeners.get(i) {
                    accept_all(io, now, listener);
                }
            }
            key => io.ready(now, key, event.readable, event.writable),
        }
    }
}

/// Accepts on `listener` until it has no more, and puts each connection in the poller.
fn accept_all(
    io: &mut ServerIo<Smol>,
    now: Instant,
    (listener, tls): &(Polled<TcpListener>, bool),
) {
    let accept = || {
        let (stream, peer) = listener.socket.accept()?;
        stream.set_nonblocking(true)?;
        Ok((Polled::new(stream, &listener.poller), peer))
    };
    io.accept_all(now, *tls, accept, |key, stream| stream.watch(key));
}
