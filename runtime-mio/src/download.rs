//! `natter get` on mio: join, ask for one file, download it over UDP, verify, quit.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use natter_core::transfer::receiver::Progress;
use natter_runtime_common::upload::MAX_DATAGRAM;
use natter_runtime_common::{
    Download, DownloadError, DownloadOptions, DownloadReport, GetSession, default_part_size, net,
};

const UDP: Token = Token(0);
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Datagrams read before the loop sends what they allowed: keeps requests flowing under load.
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
    let offer = loop {
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            return Err(DownloadError::Disconnected);
        }
        let (reply, offer) = session.on_bytes(&buf[..n])?;
        tcp.write_all(&reply)?;
        if let Some(offer) = offer {
            break offer;
        }
    };

    let mut socket = UdpSocket::from_std(net::udp_socket(net::any_addr_like(options.addr))?);
    socket.connect(std::net::SocketAddr::new(options.addr.ip(), offer.port))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, UDP, Interest::READABLE)?;
    let mut events = Events::with_capacity(16);
    let mut download = Download::start(Instant::now(), &offer, &options.out_dir)?;
    let mut next_progress = Instant::now();
    let mut drained = true;
    let result = loop {
        let now = Instant::now();
        while let Some(len) = download.poll_transmit(now, &mut buf) {
            match socket.send(&buf[..len]) {
                Ok(_) => {}
                // A full socket buffer or an ICMP error: the request counts as lost and loss
                // detection asks again.
                Err(_) => break,
            }
        }
        if let Some(outcome) = download.outcome(now) {
            break outcome;
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
        for _ in 0..RECV_BATCH {
            match socket.recv(&mut buf) {
                Ok(n) => download.on_datagram(Instant::now(), &buf[..n])?,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(_) => {}
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
    let _ = tcp.write_all(GetSession::quit());
    result
}
