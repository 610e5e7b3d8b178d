//! The server as smol tasks around one server driver: a task per socket waits, reads and feeds;
//! every input is followed by performing the driver's outputs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::rc::Rc;
use std::time::Instant;

use natter_core::driver::server::{Input, Output, READ_CHUNK, ServerDriver};
use natter_core::wire::datagram::MAX_DATAGRAM;
use natter_runtime_common::serve::{self, BoundServer, Prepared, Stop, Turn};
use natter_runtime_common::{ServedFiles, net};
use smol::channel::{Receiver, Sender, bounded};
use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Timer};

/// A wake-up with no content: capacity 1, since one pending "look again" is as good as many.
fn signal() -> (Sender<()>, Receiver<()>) {
    bounded(1)
}

fn wake(signal: Option<&Sender<()>>) {
    if let Some(tx) = signal {
        let _ = tx.try_send(());
    }
}

/// One connection's socket and the signals of its two tasks.
struct Conn {
    stream: Rc<Async<TcpStream>>,
    write: Sender<()>,
    resume: Sender<()>,
    paused: bool,
}

/// What every task shares: the driver, the file work, the sockets' signals, one read buffer.
struct Hub {
    driver: ServerDriver,
    files: ServedFiles,
    conns: HashMap<u64, Conn>,
    transmit: HashMap<u16, Sender<()>>,
    accept_again: Sender<()>,
    timer_moved: Sender<()>,
    armed: Option<Instant>,
    buf: Vec<u8>,
}

type Shared = Rc<RefCell<Hub>>;

/// Serves `server` as smol tasks on this thread until `stop` is asked.
pub fn serve(server: BoundServer, stop: Stop) -> io::Result<()> {
    let BoundServer { listener, options, scanned } = server;
    let ex = Rc::new(LocalExecutor::new());
    let listener = Async::new(listener)?;
    let (stop_tx, stop_rx) = signal();
    stop.on_ask(move || {
        let _ = stop_tx.try_send(());
    });
    let (folder_tx, folder_rx) = smol::channel::unbounded();
    let deliver = move |scanned| folder_tx.send_blocking(scanned).is_ok();
    let Prepared { driver, files, ports } =
        serve::prepare(Instant::now(), &options, scanned, &stop, deliver)?;
    let (accept_tx, accept_rx) = signal();
    let (timer_tx, timer_rx) = signal();
    let hub: Shared = Rc::new(RefCell::new(Hub {
        driver,
        files,
        conns: HashMap::new(),
        transmit: HashMap::new(),
        accept_again: accept_tx,
        timer_moved: timer_tx,
        armed: None,
        buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM)],
    }));
    for (port, socket) in ports {
        let socket = Rc::new(Async::new(socket)?);
        let (tx, rx) = signal();
        hub.borrow_mut().transmit.insert(port, tx);
        ex.spawn(receive_task(hub.clone(), port, socket.clone())).detach();
        ex.spawn(transmit_task(hub.clone(), port, socket, rx)).detach();
    }
    ex.spawn(timer_task(hub.clone(), timer_rx)).detach();
    let folder_hub = hub.clone();
    ex.spawn(async move {
        while let Ok(scanned) = folder_rx.recv().await {
            feed(&folder_hub, |d| serve::feed_folder(Instant::now(), d, &scanned));
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
                    let _ = stream.get_ref().set_nodelay(true);
                    net::keep_alive(stream.get_ref());
                    let stream = Rc::new(stream);
                    let ((write, write_rx), (resume, resume_rx)) = (signal(), signal());
                    let c = Conn { stream: stream.clone(), write, resume, paused: false };
                    hub.borrow_mut().conns.insert(conn, c);
                    let writer = writer_task(hub.clone(), conn, stream.clone(), write_rx);
                    executor.spawn(writer).detach();
                    let reader = reader_task(hub.clone(), conn, stream, resume_rx);
                    executor.spawn(reader).detach();
                    feed(&hub, |d| {
                        d.handle_input(Instant::now(), Input::Accepted { conn, peer });
                    });
                }
                Err(err) => {
                    tracing::warn!("accept failed: {err}; trying again shortly");
                    feed(&hub, |d| d.handle_input(Instant::now(), Input::AcceptFailed));
                    let _ = accept_rx.recv().await;
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

/// Feeds the driver, then performs everything it asks.
fn feed<T>(hub: &Shared, input: impl FnOnce(&mut ServerDriver) -> T) -> T {
    let mut guard = hub.borrow_mut();
    let h = &mut *guard;
    let fed = input(&mut h.driver);
    let now = Instant::now();
    while let Some(output) = h.driver.poll_output() {
        let Some(output) = h.files.perform(now, &mut h.driver, output) else {
            continue;
        };
        match output {
            Output::Write { conn } => wake(h.conns.get(&conn).map(|c| &c.write)),
            // Dropping the signals ends both tasks; the shutdown wakes a reader that waits.
            Output::Close { conn } => {
                if let Some(c) = h.conns.remove(&conn) {
                    let _ = c.stream.get_ref().shutdown(std::net::Shutdown::Both);
                }
            }
            Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                let Some(c) = h.conns.get_mut(&conn) else { continue };
                c.paused = matches!(output, Output::PauseReading { .. });
                wake(Some(&c.resume).filter(|_| !c.paused));
            }
            Output::AcceptAgain => wake(Some(&h.accept_again)),
            Output::Transmit { port } => wake(h.transmit.get(&port)),
            _ => {}
        }
    }
    // Wake the timer task only when the deadline moved earlier than the one it sleeps on.
    let next = h.driver.poll_timeout();
    if next.is_some_and(|at| h.armed.is_none_or(|armed| at < armed)) {
        h.armed = next;
        let _ = h.timer_moved.try_send(());
    }
    fed
}

async fn reader_task(hub: Shared, conn: u64, stream: Rc<Async<TcpStream>>, resume: Receiver<()>) {
    loop {
        let paused = hub.borrow().conns.get(&conn).map(|c| c.paused);
        match paused {
            None => return,
            Some(true) if resume.recv().await.is_err() => return,
            Some(true) => continue,
            Some(false) => {}
        }
        let _ = stream.readable().await;
        // The hub's one read buffer; no other task runs until it is back (feeding is not async).
        let mut buf = std::mem::take(&mut hub.borrow_mut().buf);
        let turn = feed(&hub, |d| {
            serve::read_chunk(Instant::now(), d, conn, &mut buf, |b| stream.get_ref().read(b))
        });
        hub.borrow_mut().buf = buf;
        if turn == Turn::Ended {
            return;
        }
        // Let every other connection have its turn before this one is read again (C6).
        smol::future::yield_now().await;
    }
}

async fn writer_task(hub: Shared, conn: u64, stream: Rc<Async<TcpStream>>, wake: Receiver<()>) {
    while wake.recv().await.is_ok() {
        loop {
            let mut socket = stream.get_ref();
            let turn = feed(&hub, |d| {
                serve::write_owed(Instant::now(), d, conn, |slices| socket.write_vectored(slices))
            });
            match turn {
                Turn::Ended => return,
                Turn::Blocked if stream.writable().await.is_ok() => {}
                _ => break,
            }
        }
    }
}

async fn receive_task(hub: Shared, port: u16, socket: Rc<Async<UdpSocket>>) {
    while socket.readable().await.is_ok() {
        let mut buf = std::mem::take(&mut hub.borrow_mut().buf);
        feed(&hub, |d| {
            serve::receive_datagrams(d, port, &mut buf, |b| socket.get_ref().recv_from(b))
        });
        hub.borrow_mut().buf = buf;
        smol::future::yield_now().await;
    }
}

async fn transmit_task(hub: Shared, port: u16, socket: Rc<Async<UdpSocket>>, wake: Receiver<()>) {
    while wake.recv().await.is_ok() {
        loop {
            let sent = {
                let mut guard = hub.borrow_mut();
                let h = &mut *guard;
                h.files.send_due(Instant::now(), &mut h.driver, port, socket.get_ref())
            };
            // Sending may have ended the transfer: perform what that asks.
            feed(&hub, |_| {});
            if sent.is_ok() || socket.writable().await.is_err() {
                break;
            }
        }
    }
}

/// Calls the driver's `handle_timeout` when its deadline comes; sleeps until then, or until an
/// input brought an earlier deadline. An idle server does not wake at all.
async fn timer_task(hub: Shared, moved: Receiver<()>) {
    loop {
        let next = hub.borrow().driver.poll_timeout();
        if next.is_some_and(|at| at <= Instant::now()) {
            feed(&hub, |d| d.handle_timeout(Instant::now()));
            continue;
        }
        hub.borrow_mut().armed = next;
        let due = async {
            match next {
                Some(at) => drop(Timer::at(at).await),
                None => std::future::pending().await,
            }
        };
        due.or(async {
            let _ = moved.recv().await;
        })
        .await;
    }
}
