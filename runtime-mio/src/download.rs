//! `natter get` on mio: join, ask for one file, download it over UDP, verify, quit.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use natter_core::chat::client::Offer;
use natter_core::transfer::receiver::{Progress, SAFE_PART_SIZE};
use natter_core::wire::datagram::PART_HEADER_LEN;
use natter_runtime_common::upload::MAX_DATAGRAM;
use natter_runtime_common::{
    Attempt, Download, DownloadError, DownloadOptions, DownloadReport, GetSession,
    default_part_size, net,
};

const UDP: Token = Token(0);
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How long to wait for the server to close after `{quit}`.
const QUIT_GRACE: Duration = Duration::from_secs(2);
/// Reads (a `recvmmsg` batch or GRO bundle counts as many) before the loop sends what they
/// allowed: keeps requests flowing under load.
const RECV_BATCH: usize = 64;

/// Downloads `options.file` and returns where it was saved; the file is byte-exact (BLAKE3) or
/// this is an error.
pub fn download(
    options: &DownloadOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<DownloadReport, DownloadError> {
    let connect = |source| DownloadError::Connect {
        addr: options.addr,
        source,
    };
    let mut tcp =
        TcpStream::connect_timeout(&options.addr, Duration::from_secs(10)).map_err(connect)?;
    tcp.set_read_timeout(Some(options.stall_timeout))
        .map_err(connect)?;
    tcp.set_nodelay(true).map_err(connect)?;
    let part_size = options
        .part_size
        .unwrap_or_else(|| default_part_size(options.addr.ip()));
    let mut session = GetSession::new(&options.name, &options.file, part_size);
    tcp.write_all(&session.hello())?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let result = loop {
        let offer = wait_for_offer(&mut tcp, &mut session, &mut buf)?;
        match over_udp(options, &offer, &mut buf, &mut on_progress)? {
            Attempt::Over(result) => break result,
            Attempt::PartsTooLarge => {
                tracing::info!(
                    "no part of {} bytes got through in time; asking again with {SAFE_PART_SIZE}",
                    offer.part_size
                );
                tcp.write_all(&session.ask_again(SAFE_PART_SIZE))?;
            }
        }
    };
    let _ = tcp.write_all(GetSession::quit());
    // Wait for the server to close, so that our name is free again when this returns: a script
    // that runs `natter get` in a loop with one name would otherwise race its own last run.
    let _ = tcp.set_read_timeout(Some(QUIT_GRACE));
    while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
    result
}

fn wait_for_offer(
    tcp: &mut TcpStream,
    session: &mut GetSession,
    buf: &mut [u8],
) -> Result<Offer, DownloadError> {
    loop {
        let n = tcp.read(buf)?;
        if n == 0 {
            return Err(DownloadError::Disconnected);
        }
        let (reply, offer) = session.on_bytes(&buf[..n])?;
        tcp.write_all(&reply)?;
        if let Some(offer) = offer {
            return Ok(offer);
        }
    }
}

fn over_udp(
    options: &DownloadOptions,
    offer: &Offer,
    buf: &mut [u8],
    on_progress: &mut impl FnMut(&Progress),
) -> Result<Attempt, DownloadError> {
    let mut socket = UdpSocket::from_std(net::udp_socket(net::any_addr_like(options.addr))?);
    socket.connect(SocketAddr::new(options.addr.ip(), offer.port))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, UDP, Interest::READABLE)?;
    let mut events = Events::with_capacity(16);
    let mut download = Download::start(
        Instant::now(),
        offer,
        &options.out_dir,
        options.stall_timeout,
    )?;
    let mut udp = net::UdpReceiver::new(&socket, PART_HEADER_LEN + usize::from(offer.part_size));
    let mut next_progress = Instant::now();
    let mut drained = true;
    let result = loop {
        let now = Instant::now();
        while let Some(len) = download.poll_transmit(now, buf) {
            // A full socket buffer or an ICMP error: the request counts as lost and loss
            // detection asks again.
            if socket.send(&buf[..len]).is_err() {
                break;
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
        let timeout = match download.poll_timeout() {
            _ if !drained => Duration::ZERO,
            Some(at) => at.saturating_duration_since(now).min(PROGRESS_EVERY),
            None => PROGRESS_EVERY,
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
        drained = false;
        let mut read = 0;
        while read < RECV_BATCH {
            match udp.recv(&socket) {
                Ok(n) => read += n.max(1),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(_) => {
                    read += 1;
                    continue;
                }
            }
            for datagram in udp.datagrams() {
                download.on_datagram(Instant::now(), datagram)?;
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
