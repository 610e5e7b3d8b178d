//! The client on smol: one task waits on the chat connection, the person's input, every download
//! socket and the driver's timer at once, and hands what it reads to the core's client driver
//! (through [`ClientIo`]). The chat client and `natter get` are the same loop in two modes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::pin::Pin;
use std::time::Instant;

use natter_core::driver::client::{DownloadId, Input};
use natter_runtime_common::net::UdpReceiver;
use natter_runtime_common::{ClientError, ClientIo, ClientUi, Lines, Sockets, client};
use smol::future::FutureExt;
use smol::{Async, Timer};

struct Download {
    socket: Async<UdpSocket>,
    rx: UdpReceiver,
}

#[derive(Default)]
struct SmolSockets {
    downloads: HashMap<DownloadId, Download>,
}

impl Sockets for SmolSockets {
    fn open(
        &mut self,
        id: DownloadId,
        socket: std::net::UdpSocket,
        max_datagram: usize,
    ) -> io::Result<()> {
        let socket = Async::new(socket)?;
        let rx = UdpReceiver::new(socket.get_ref(), max_datagram);
        self.downloads.insert(id, Download { socket, rx });
        Ok(())
    }

    fn send(&mut self, id: DownloadId, datagram: &[u8]) -> io::Result<usize> {
        let d = self.downloads.get(&id).ok_or(io::ErrorKind::NotConnected)?;
        d.socket.get_ref().send(datagram)
    }

    fn release(&mut self, id: DownloadId) {
        self.downloads.remove(&id);
    }
}

/// What woke the loop.
enum Wake {
    Chat,
    Line(Option<String>),
    Datagrams,
    Timer,
    /// A file kept on the keeping thread (see `ClientIo::keep_in_background`).
    Kept,
}

/// Runs `io` as one smol task on this thread until it is finished.
pub fn client(
    addr: SocketAddr,
    io: &mut ClientIo,
    ui: &mut dyn ClientUi,
    input: Option<Lines>,
) -> Result<(), ClientError> {
    smol::block_on(async {
        let tcp: Async<TcpStream> = Async::new(client::connect_session(addr, io)?)?;
        let mut lines = input.map(read_lines).transpose()?;
        // One wake owed at most: `drive` takes every file kept since.
        let (kept_tx, kept) = smol::channel::bounded(1);
        io.keep_in_background(move || {
            let _ = kept_tx.try_send(());
        });
        let mut sockets = SmolSockets::default();
        io.drive(Instant::now(), ui, &mut sockets);
        while !io.is_finished() {
            io.write_chat(&mut tcp.get_ref());
            let wake = {
                let chat = &tcp;
                let writing = !io.outbox.is_empty();
                let mut any: Pin<Box<dyn Future<Output = Wake> + '_>> = Box::pin(async move {
                    // Writable matters only while the outbox waits; a read wakes either way.
                    let _ = if writing {
                        chat.readable().or(chat.writable()).await
                    } else {
                        chat.readable().await
                    };
                    Wake::Chat
                });
                any = Box::pin(any.or(async {
                    // Closed: no keeping thread, so nothing will ever be kept there.
                    if kept.recv().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    Wake::Kept
                }));
                if let Some(rx) = &lines {
                    any = Box::pin(any.or(async move { Wake::Line(rx.recv().await.ok()) }));
                }
                for d in sockets.downloads.values() {
                    any = Box::pin(any.or(async move {
                        let _ = d.socket.readable().await;
                        Wake::Datagrams
                    }));
                }
                if let Some(at) = io.poll_timeout() {
                    any = Box::pin(any.or(async move {
                        Timer::at(at).await;
                        Wake::Timer
                    }));
                }
                any.await
            };
            match wake {
                Wake::Chat => io.read_chat(&mut tcp.get_ref()),
                Wake::Line(Some(line)) => io.handle_input(Instant::now(), Input::Typed(&line)),
                Wake::Line(None) => {
                    lines = None;
                    io.handle_input(Instant::now(), Input::InputEnded);
                }
                Wake::Datagrams => {
                    // Every socket gets its batch, so that the first one cannot starve the others; one
                    // left unread stays readable and wakes the next wait at once.
                    // The early-flight socket first (see the mio client).
                    let early = sockets.downloads.get(&client::EARLY_FLIGHTS);
                    let rest =
                        sockets.downloads.iter().filter(|(id, _)| **id != client::EARLY_FLIGHTS);
                    for (&id, d) in
                        early.map(|d| (&client::EARLY_FLIGHTS, d)).into_iter().chain(rest)
                    {
                        io.read_datagrams(id, d.socket.get_ref(), &d.rx);
                    }
                }
                Wake::Timer | Wake::Kept => {}
            }
            io.drive(Instant::now(), ui, &mut sockets);
        }
        io.close_chat(&mut tcp.get_ref());
        let _ = tcp.get_ref().shutdown(std::net::Shutdown::Write);
        Ok(())
    })
}

/// Reads the person's lines on a thread of their own (the iterator blocks).
fn read_lines(input: Lines) -> io::Result<smol::channel::Receiver<String>> {
    let (tx, rx) = smol::channel::unbounded();
    std::thread::Builder::new().name("natter-input".into()).spawn(move || {
        for line in input {
            if tx.send_blocking(line).is_err() {
                break;
            }
        }
    })?;
    Ok(rx)
}
