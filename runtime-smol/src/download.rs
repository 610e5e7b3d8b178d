//! `natter get` on smol: join, ask for one file, download it over UDP, verify, quit.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natter_core::chat::client::Offer;
use natter_core::transfer::receiver::{Progress, SAFE_PART_SIZE};
use natter_core::wire::datagram::PART_HEADER_LEN;
use natter_runtime_common::upload::MAX_DATAGRAM;
use natter_runtime_common::{
    Attempt, Download, DownloadError, DownloadOptions, DownloadReport, GetSession,
    default_part_size, net,
};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Async, Timer};

const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How long to wait for the server to close after `{quit}`.
const QUIT_GRACE: Duration = Duration::from_secs(2);

/// Downloads `options.file`; the file is byte-exact (BLAKE3) or this is an error.
pub fn download(
    options: &DownloadOptions,
    on_progress: impl FnMut(&Progress),
) -> Result<DownloadReport, DownloadError> {
    smol::block_on(download_async(options, on_progress))
}

async fn download_async(
    options: &DownloadOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<DownloadReport, DownloadError> {
    let connect = |source| DownloadError::Connect {
        addr: options.addr,
        source,
    };
    let mut tcp = TcpStream::connect(options.addr)
        .or(async {
            Timer::after(Duration::from_secs(10)).await;
            Err(io::ErrorKind::TimedOut.into())
        })
        .await
        .map_err(connect)?;
    let _ = tcp.set_nodelay(true);
    let part_size = options
        .part_size
        .unwrap_or_else(|| default_part_size(options.addr.ip()));
    let mut session = GetSession::new(&options.name, &options.file, part_size);
    tcp.write_all(&session.hello()).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let result = loop {
        let offer = wait_for_offer(&mut tcp, &mut session, &mut buf, options.stall_timeout).await?;
        match over_udp(options, &offer, &mut buf, &mut on_progress).await? {
            Attempt::Over(result) => break result,
            Attempt::PartsTooLarge => {
                tracing::info!(
                    "no part of {} bytes got through in time; asking again with {SAFE_PART_SIZE}",
                    offer.part_size
                );
                tcp.write_all(&session.ask_again(SAFE_PART_SIZE)).await?;
            }
        }
    };
    let _ = tcp.write_all(GetSession::quit()).await;
    let _ = tcp.flush().await;
    // Wait for the server to close, so that our name is free again when this returns: a script
    // that runs `natter get` in a loop with one name would otherwise race its own last run.
    let closed = async { while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {} };
    closed
        .or(async {
            Timer::after(QUIT_GRACE).await;
        })
        .await;
    result
}

async fn wait_for_offer(
    tcp: &mut TcpStream,
    session: &mut GetSession,
    buf: &mut [u8],
    stall: Duration,
) -> Result<Offer, DownloadError> {
    loop {
        let n = tcp
            .read(buf)
            .or(async {
                Timer::after(stall).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        if n == 0 {
            return Err(DownloadError::Disconnected);
        }
        let (reply, offer) = session.on_bytes(&buf[..n])?;
        tcp.write_all(&reply).await?;
        if let Some(offer) = offer {
            return Ok(offer);
        }
    }
}

async fn over_udp(
    options: &DownloadOptions,
    offer: &Offer,
    buf: &mut [u8],
    on_progress: &mut impl FnMut(&Progress),
) -> Result<Attempt, DownloadError> {
    let socket = Async::new(net::udp_socket(net::any_addr_like(options.addr))?)?;
    socket
        .get_ref()
        .connect(SocketAddr::new(options.addr.ip(), offer.port))?;
    let mut download = Download::start(
        Instant::now(),
        offer,
        &options.out_dir,
        options.stall_timeout,
    )?;
    let mut udp = net::UdpReceiver::new(
        socket.get_ref(),
        PART_HEADER_LEN + usize::from(offer.part_size),
    );
    let mut next_progress = Instant::now();
    let mut drained = true;
    let result = loop {
        let now = Instant::now();
        while let Some(len) = download.poll_transmit(now, buf) {
            if socket.get_ref().send(&buf[..len]).is_err() {
                break; // counted as lost; loss detection asks again
            }
        }
        match download.finished(now) {
            Some(Attempt::Over(outcome)) => break outcome,
            Some(Attempt::PartsTooLarge) => return Ok(Attempt::PartsTooLarge),
            None => {}
        }
        if now >= next_progress {
            on_progress(&download.receiver().progress());
            next_progress = now + PROGRESS_EVERY;
        }
        let wake = download
            .poll_timeout()
            .unwrap_or(next_progress)
            .min(next_progress);
        let readable = async { socket.readable().await.map(|()| true) };
        let timer = async {
            Timer::at(wake).await;
            Ok(false)
        };
        // Datagrams left from the last batch: read on without waiting.
        let ready = !drained || readable.or(timer).await?;
        drained = true;
        if ready {
            let mut read = 0;
            while read < RECV_BATCH {
                match udp.recv(socket.get_ref()) {
                    Ok(n) => read += n.max(1),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        read += 1;
                        continue;
                    }
                }
                for datagram in udp.datagrams() {
                    download.on_datagram(Instant::now(), datagram)?;
                }
                drained = false;
            }
        }
        if download
            .poll_timeout()
            .is_some_and(|at| at <= Instant::now())
        {
            download.handle_timeout(Instant::now())?;
        }
    };
    on_progress(&download.receiver().progress());
    Ok(Attempt::Over(result))
}

/// Datagrams read before the loop sends what they allowed. Why a bound: at 1 Gbit/s the socket
/// may never run dry while the machine is busy, and a loop that reads until it does sends no
/// request meanwhile, so the pipe empties behind it (the mio client has the same bound).
const RECV_BATCH: usize = 64;

/// Keeps the type visible to the client module.
pub(crate) type UdpAsync = Async<UdpSocket>;
