//! The interactive client on mio: lines typed by a person go to the server, server lines come back
//! as events for the UI, offers become downloads that run beside the chat.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use natter_core::chat::client::ClientEvent;
use natter_runtime_common::upload::MAX_DATAGRAM;
use natter_runtime_common::{
    Attempt, ChatSession, ClientOptions, ClientUi, Download, DownloadError, GetSession, Typed,
    default_part_size, net,
};

const TCP: Token = Token(0);
const INPUT: Token = Token(1);
const FIRST_DOWNLOAD: usize = 2;
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// How long to wait for the server to close after `{quit}`.
const QUIT_GRACE: Duration = Duration::from_secs(2);

struct Active {
    socket: UdpSocket,
    download: Download,
    file: String,
}

/// Runs a chat session until the person quits (or their input ends and every download is over),
/// or the server closes the connection.
pub fn run_client(
    options: ClientOptions,
    ui: &mut dyn ClientUi,
    input: impl Iterator<Item = String> + Send + 'static,
) -> Result<(), DownloadError> {
    let std_stream = std::net::TcpStream::connect_timeout(&options.addr, Duration::from_secs(10))
        .map_err(|source| DownloadError::Connect {
        addr: options.addr,
        source,
    })?;
    std_stream.set_nonblocking(true)?;
    std_stream.set_nodelay(true)?;
    let mut tcp = TcpStream::from_std(std_stream);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut tcp, TCP, Interest::READABLE | Interest::WRITABLE)?;

    let (tx, rx) = mpsc::channel::<String>();
    let waker = Arc::new(Waker::new(poll.registry(), INPUT)?);
    let input_waker = waker.clone();
    std::thread::Builder::new()
        .name("natter-input".into())
        .spawn(move || {
            for line in input {
                if tx.send(line).is_err() {
                    break;
                }
                let _ = input_waker.wake();
            }
            drop(tx);
            let _ = input_waker.wake();
        })?;

    let part_size = options
        .part_size
        .unwrap_or_else(|| default_part_size(options.addr.ip()));
    let mut session = ChatSession::new(&options.name, part_size);
    let mut out: Vec<u8> = session.hello();
    let mut downloads: HashMap<usize, Active> = HashMap::new();
    let mut next_token = FIRST_DOWNLOAD;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut events = Events::with_capacity(64);
    let mut input_open = true;
    let mut quitting = false;
    let mut next_progress = Instant::now();
    let mut failed: Vec<usize> = Vec::new();

    // After {quit} the server answers everything sent before it and closes; the client keeps
    // reading until then (so a piped `show` still prints its answer), but not forever.
    let mut quit_deadline: Option<Instant> = None;
    let mut server_closed = false;
    loop {
        flush(&mut tcp, &mut out)?;
        if quitting {
            let deadline = *quit_deadline.get_or_insert_with(|| Instant::now() + QUIT_GRACE);
            if Instant::now() >= deadline {
                break;
            }
        }
        let now = Instant::now();
        let deadline = downloads
            .values()
            .filter_map(|a| a.download.poll_timeout())
            .min();
        let timeout = deadline
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or(PROGRESS_EVERY)
            .min(PROGRESS_EVERY);
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        }
        for event in events.iter() {
            match event.token() {
                TCP => loop {
                    match tcp.read(&mut buf) {
                        Ok(0) => {
                            server_closed = true;
                            break;
                        }
                        Ok(n) => session.handle_bytes(&buf[..n]),
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => {
                            ui.disconnected(&err.to_string());
                            return Err(err.into());
                        }
                    }
                },
                INPUT => loop {
                    match rx.try_recv() {
                        Ok(line) => match session.typed(&line) {
                            Typed::Send(bytes) => out.extend_from_slice(&bytes),
                            Typed::Quit => {
                                out.extend_from_slice(GetSession::quit());
                                quitting = true;
                            }
                            Typed::Invalid(why) => ui.notice(&why),
                        },
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            input_open = false;
                            break;
                        }
                    }
                },
                Token(token) => {
                    if let Some(active) = downloads.get_mut(&token) {
                        loop {
                            match active.socket.recv(&mut buf) {
                                Ok(n) => {
                                    if let Err(err) =
                                        active.download.on_datagram(Instant::now(), &buf[..n])
                                    {
                                        ui.download_done(&active.file, &Err(err));
                                        failed.push(token);
                                        break;
                                    }
                                }
                                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                                Err(_) => {}
                            }
                        }
                    }
                }
            }
        }
        for token in failed.drain(..) {
            downloads.remove(&token);
        }
        if server_closed {
            while let Some(event) = session.poll_event() {
                ui.event(&event);
            }
            if !quitting {
                ui.disconnected("the server closed the connection");
            }
            break;
        }
        while let Some(event) = session.poll_event() {
            ui.event(&event);
            if let ClientEvent::Offer(offer) = &event {
                match start_download(&poll, &options, offer, next_token) {
                    Ok(active) => {
                        downloads.insert(next_token, active);
                        next_token += 1;
                    }
                    Err(err) => ui.download_done(&offer.file, &Err(err)),
                }
            }
        }
        let now = Instant::now();
        let show_progress = now >= next_progress;
        if show_progress {
            next_progress = now + PROGRESS_EVERY;
        }
        let mut finished = Vec::new();
        for (&token, active) in downloads.iter_mut() {
            if active.download.poll_timeout().is_some_and(|at| at <= now)
                && let Err(err) = active.download.handle_timeout(now)
            {
                ui.download_done(&active.file, &Err(err));
                finished.push(token);
                continue;
            }
            while let Some(len) = active.download.poll_transmit(now, &mut buf) {
                if active.socket.send(&buf[..len]).is_err() {
                    break;
                }
            }
            if show_progress {
                ui.progress(&active.file, &active.download.receiver().progress());
            }
            match active.download.finished(now) {
                Some(Attempt::Over(result)) => ui.download_done(&active.file, &result),
                Some(Attempt::PartsTooLarge) => {
                    let (notice, line) = session.retry_with_small_parts(&active.file);
                    ui.notice(&notice);
                    out.extend_from_slice(&line);
                }
                None => continue,
            }
            finished.push(token);
        }
        for token in finished {
            downloads.remove(&token);
        }
        if !input_open && !quitting && downloads.is_empty() && session.awaiting_offers() == 0 {
            out.extend_from_slice(GetSession::quit());
            quitting = true;
        }
    }
    for active in downloads.values() {
        active.download.save_now();
    }
    Ok(())
}

fn start_download(
    poll: &Poll,
    options: &ClientOptions,
    offer: &natter_core::chat::client::Offer,
    token: usize,
) -> Result<Active, DownloadError> {
    let mut socket = UdpSocket::from_std(net::udp_socket(net::any_addr_like(options.addr))?);
    socket.connect(std::net::SocketAddr::new(options.addr.ip(), offer.port))?;
    poll.registry()
        .register(&mut socket, Token(token), Interest::READABLE)?;
    let download = Download::start(
        Instant::now(),
        offer,
        &options.out_dir,
        options.stall_timeout,
    )?;
    Ok(Active {
        socket,
        download,
        file: offer.file.clone(),
    })
}

/// Writes what the socket takes now; the rest waits for the next writable event.
fn flush(tcp: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    while !out.is_empty() {
        match tcp.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
