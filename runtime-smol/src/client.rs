//! The interactive client on smol: one loop waits on the server, the person's input and the
//! downloads' sockets at once.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natter_core::chat::client::{ClientEvent, Offer};
use natter_runtime_common::upload::MAX_DATAGRAM;
use natter_runtime_common::{
    Attempt, ChatSession, ClientOptions, ClientUi, Download, DownloadError, GetSession, Typed,
    default_part_size, net,
};
use smol::Async;
use smol::Timer;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::download::UdpAsync;

const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// How long to wait for the server to close after `{quit}`.
const QUIT_GRACE: Duration = Duration::from_secs(2);

struct Active {
    socket: UdpAsync,
    download: Download,
    file: String,
}

enum Wake {
    Server(io::Result<usize>),
    Input(Option<String>),
    Download(usize),
    Timer,
}

/// Runs a chat session until the person quits (or their input ends and every download is over),
/// or the server closes the connection.
pub fn run_client(
    options: ClientOptions,
    ui: &mut dyn ClientUi,
    input: impl Iterator<Item = String> + Send + 'static,
) -> Result<(), DownloadError> {
    smol::block_on(run(options, ui, input))
}

async fn run(
    options: ClientOptions,
    ui: &mut dyn ClientUi,
    input: impl Iterator<Item = String> + Send + 'static,
) -> Result<(), DownloadError> {
    let mut tcp =
        TcpStream::connect(options.addr)
            .await
            .map_err(|source| DownloadError::Connect {
                addr: options.addr,
                source,
            })?;
    let _ = tcp.set_nodelay(true);
    let (tx, rx) = smol::channel::unbounded::<String>();
    std::thread::Builder::new()
        .name("natter-input".into())
        .spawn(move || {
            for line in input {
                if tx.send_blocking(line).is_err() {
                    break;
                }
            }
        })?;

    let part_size = options
        .part_size
        .unwrap_or_else(|| default_part_size(options.addr.ip()));
    let mut session = ChatSession::new(&options.name, part_size);
    tcp.write_all(&session.hello()).await?;
    let mut downloads: Vec<Option<Active>> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut tcp_buf = vec![0u8; 16 * 1024];
    let mut input_open = true;
    let mut next_progress = Instant::now();
    let mut retries: Vec<Vec<u8>> = Vec::new();

    loop {
        let now = Instant::now();
        let deadline = downloads
            .iter()
            .flatten()
            .filter_map(|a| a.download.poll_timeout())
            .min();
        let wake_at = deadline
            .unwrap_or(now + PROGRESS_EVERY)
            .min(now + PROGRESS_EVERY);
        let wake = {
            let server = async { Wake::Server(tcp.read(&mut tcp_buf).await) };
            let line = async {
                if input_open {
                    Wake::Input(rx.recv().await.ok())
                } else {
                    std::future::pending().await
                }
            };
            let timer = async {
                Timer::at(wake_at).await;
                Wake::Timer
            };
            let mut any = server.or(line).boxed_local();
            for (i, active) in downloads.iter().enumerate() {
                if let Some(active) = active {
                    let socket = &active.socket;
                    any = any
                        .or(async move {
                            let _ = socket.readable().await;
                            Wake::Download(i)
                        })
                        .boxed_local();
                }
            }
            any.or(timer).await
        };
        match wake {
            Wake::Server(Ok(0)) | Wake::Server(Err(_)) => {
                for active in downloads.iter().flatten() {
                    active.download.save_now();
                }
                while let Some(event) = session.poll_event() {
                    ui.event(&event);
                }
                ui.disconnected("the server closed the connection");
                return Ok(());
            }
            Wake::Server(Ok(n)) => session.handle_bytes(&tcp_buf[..n]),
            Wake::Input(Some(line)) => match session.typed(&line) {
                Typed::Send(bytes) => tcp.write_all(&bytes).await?,
                Typed::Quit => {
                    quit(&mut tcp, &mut session, ui, &mut tcp_buf).await?;
                    break;
                }
                Typed::Invalid(why) => ui.notice(&why),
            },
            Wake::Input(None) => input_open = false,
            Wake::Download(i) => {
                if let Some(Some(active)) = downloads.get_mut(i) {
                    loop {
                        match active.socket.get_ref().recv(&mut buf) {
                            Ok(n) => {
                                if let Err(err) =
                                    active.download.on_datagram(Instant::now(), &buf[..n])
                                {
                                    ui.download_done(&active.file, &Err(err));
                                    downloads[i] = None;
                                    break;
                                }
                            }
                            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {}
                        }
                    }
                }
            }
            Wake::Timer => {}
        }
        while let Some(event) = session.poll_event() {
            ui.event(&event);
            if let ClientEvent::Offer(offer) = &event {
                match start_download(&options, offer) {
                    Ok(active) => downloads.push(Some(active)),
                    Err(err) => ui.download_done(&offer.file, &Err(err)),
                }
            }
        }
        let now = Instant::now();
        let show_progress = now >= next_progress;
        if show_progress {
            next_progress = now + PROGRESS_EVERY;
        }
        for slot in downloads.iter_mut() {
            let Some(active) = slot else { continue };
            if active.download.poll_timeout().is_some_and(|at| at <= now)
                && let Err(err) = active.download.handle_timeout(now)
            {
                ui.download_done(&active.file, &Err(err));
                *slot = None;
                continue;
            }
            while let Some(len) = active.download.poll_transmit(now, &mut buf) {
                if active.socket.get_ref().send(&buf[..len]).is_err() {
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
                    retries.push(line);
                }
                None => continue,
            }
            *slot = None;
        }
        for line in retries.drain(..) {
            tcp.write_all(&line).await?;
        }
        if downloads.iter().all(Option::is_none) {
            downloads.clear();
            if !input_open && session.awaiting_offers() == 0 {
                quit(&mut tcp, &mut session, ui, &mut tcp_buf).await?;
                break;
            }
        }
    }
    for active in downloads.iter().flatten() {
        active.download.save_now();
    }
    Ok(())
}

/// Says goodbye, then shows what the server still had to say (it answers everything sent before
/// `{quit}` and closes), waiting at most `QUIT_GRACE`.
async fn quit(
    tcp: &mut TcpStream,
    session: &mut ChatSession,
    ui: &mut dyn ClientUi,
    buf: &mut [u8],
) -> Result<(), DownloadError> {
    tcp.write_all(GetSession::quit()).await?;
    tcp.flush().await?;
    let drain = async {
        while let Ok(n @ 1..) = tcp.read(buf).await {
            session.handle_bytes(&buf[..n]);
            while let Some(event) = session.poll_event() {
                ui.event(&event);
            }
        }
    };
    drain
        .or(async {
            Timer::after(QUIT_GRACE).await;
        })
        .await;
    Ok(())
}

fn start_download(options: &ClientOptions, offer: &Offer) -> Result<Active, DownloadError> {
    let socket = Async::new(net::udp_socket(net::any_addr_like(options.addr))?)?;
    socket
        .get_ref()
        .connect(SocketAddr::new(options.addr.ip(), offer.port))?;
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
