//! One download over real loopback UDP sockets, through everything both runtimes share: the
//! server's part reads, in-place sealing and GSO batches (`ServedFiles`), the client's `recvmmsg`
//! and GRO batches, in-place opening and `.part` writes (`ClientIo`). The chat lines between the
//! two drivers are handed over in memory: a private (TLS) connection is marked with
//! `ServerDriver::set_secure`, the hook the TLS listener calls, so sealed downloads (PROTOCOL 2.7)
//! run on real sockets before TLS itself is in the tree.
//!
//! Shared by `tests/sealed_loopback.rs` and `examples/sealed_speed.rs`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use natter_core::chat::client::ClientEvent;
use natter_core::chat::server::ServerConfig;
use natter_core::driver::client::{DownloadId, Input as ClientInput};
use natter_core::driver::server::{Input, Output, ServerDriver};
use natter_core::transfer::receiver::Progress;
use natter_core::wire::datagram::MAX_DATAGRAM;
use natter_runtime_common::net::{self, UdpReceiver};
use natter_runtime_common::serve::{self, ServedFiles};
use natter_runtime_common::{
    ClientIo, ClientUi, DownloadError, DownloadOptions, DownloadReport, Sockets, initial_scan,
};
use rustix::event::{PollFd, PollFlags, Timespec};

/// What one download did.
#[derive(Debug)]
pub struct Run {
    /// From the first line to the verified, renamed file.
    pub elapsed: Duration,
    /// The downloaded file equals the served one.
    pub exact: bool,
    /// The version byte of every datagram the server received (the client's REQUESTs and
    /// FINISHEDs), as they came off the socket.
    pub request_versions: Vec<u8>,
    /// The offer line the client read.
    pub offer: String,
}

struct Quiet;

impl ClientUi for Quiet {
    fn event(&mut self, _: &ClientEvent) {}
    fn progress(&mut self, _: &str, _: &Progress) {}
    fn download_done(&mut self, _: &str, _: &Result<DownloadReport, DownloadError>) {}
    fn notice(&mut self, _: &str) {}
    fn disconnected(&mut self, _: &str) {}
}

#[derive(Default)]
struct StdSockets {
    downloads: HashMap<DownloadId, (UdpSocket, UdpReceiver)>,
}

impl Sockets for StdSockets {
    fn open(&mut self, id: DownloadId, socket: UdpSocket, max_datagram: usize) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        let rx = UdpReceiver::new(&socket, max_datagram);
        self.downloads.insert(id, (socket, rx));
        Ok(())
    }

    fn send(&mut self, id: DownloadId, datagram: &[u8]) -> io::Result<usize> {
        let (socket, _) = self.downloads.get(&id).ok_or(io::ErrorKind::NotConnected)?;
        socket.send(datagram)
    }

    fn release(&mut self, id: DownloadId) {
        self.downloads.remove(&id);
    }
}

/// The server's chat bytes for the client: reads what is there, then "would block" (never the
/// end of the stream, which would be a close).
struct Pipe(Vec<u8>);

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

/// The server's transfer socket: a free loopback port, non-blocking.
pub fn server_socket() -> Result<UdpSocket, String> {
    let localhost = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let udp = net::udp_socket(localhost).map_err(|e| e.to_string())?;
    udp.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(udp)
}

/// Downloads `name` from `served` into `out` over loopback, sealed when `secure`, in parts of
/// `part_size` (`None`: what the route allows, 65000 on loopback); gives up after `limit`.
pub fn download(
    served: &Path,
    name: &str,
    out: &Path,
    secure: bool,
    part_size: Option<u16>,
    limit: Duration,
) -> Result<Run, String> {
    download_on(server_socket()?, served, name, out, secure, part_size, limit)
}

/// [`download`] with the server's transfer socket given (a test that captures the port).
pub fn download_on(
    udp: UdpSocket,
    served: &Path,
    name: &str,
    out: &Path,
    secure: bool,
    part_size: Option<u16>,
    limit: Duration,
) -> Result<Run, String> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = udp.local_addr().map_err(|e| e.to_string())?.port();
    let config = ServerConfig { udp_ports: port..=port, ..ServerConfig::default() };
    let (folder, _digests) = initial_scan(served);
    let start = Instant::now();
    let mut driver = ServerDriver::with_secret_seed(config, folder.catalogue.clone(), [7; 32]);
    serve::feed_folder(start, &mut driver, &folder);
    let mut files = ServedFiles::new(served.to_path_buf());
    driver.handle_input(start, Input::Accepted { conn: 1, peer: SocketAddr::new(localhost, 1) });
    driver.set_secure(1, secure);
    let session = natter_runtime_common::ClientOptions {
        addr: SocketAddr::new(localhost, 1),
        name: "alice".into(),
        out_dir: out.to_path_buf(),
        part_size,
        stall_timeout: Duration::from_secs(10),
        max_size: u64::MAX,
        max_transfers: natter_core::driver::client::DEFAULT_MAX_TRANSFERS,
        // The chat lines go between the drivers in memory here: the TLS layer is not what this
        // test is about (the conformance suite runs downloads over real TLS).
        tls: None,
    };
    let options = DownloadOptions::new(vec![name.into()], session);
    let mut client = ClientIo::get(&options, start).map_err(|e| e.to_string())?;
    // There is no connect here (`connect_session`): say so, without an early-flight socket.
    let connected = ClientInput::Connected { handshake: Duration::ZERO, early_socket: None };
    client.handle_input(start, connected);
    let mut sockets = StdSockets::default();
    let mut to_client = Pipe(Vec::new());
    let mut offer = String::new();
    let mut request_versions = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut transmit_owed = false;
    while !client.is_finished() {
        let now = Instant::now();
        if now > start + limit {
            return Err(format!("no verified file within {limit:?}"));
        }
        client.drive(now, &mut Quiet, &mut sockets);
        if !client.outbox.is_empty() {
            let lines = std::mem::take(&mut client.outbox);
            driver.handle_input(now, Input::Received { conn: 1, bytes: &lines });
        }
        while let Some(output) = driver.poll_output() {
            match files.perform(now, &mut driver, output) {
                Some(Output::Write { conn }) => {
                    let bytes: Vec<u8> = driver.unsent(conn).flat_map(<[u8]>::to_vec).collect();
                    driver.handle_input(now, Input::Written { conn, len: bytes.len() });
                    let text = String::from_utf8_lossy(&bytes);
                    if let Some(line) = text.lines().find(|l| l.starts_with("UDP ")) {
                        offer = line.to_owned();
                    }
                    to_client.0.extend(bytes);
                }
                Some(Output::Transmit { .. }) => transmit_owed = true,
                _ => {}
            }
        }
        if transmit_owed {
            transmit_owed = files.send_due(now, &mut driver, port, &udp).is_err();
        }
        client.read_chat(&mut to_client);
        serve::receive_datagrams(&mut driver, port, &mut buf, |b| {
            let (n, from) = udp.recv_from(b)?;
            request_versions.push(b.get(2).copied().unwrap_or(0));
            Ok((n, from))
        });
        for (&id, (socket, rx)) in &sockets.downloads {
            client.read_datagrams(id, socket, rx);
        }
        if driver.poll_timeout().is_some_and(|at| at <= now) {
            driver.handle_timeout(now);
        }
        if !transmit_owed && client.outbox.is_empty() && to_client.0.is_empty() {
            // Nothing to do until a datagram arrives or a timer is due: wait as a runtime does,
            // so the process's CPU time is the work of both ends, not a spinning loop.
            let due = [client.poll_timeout(), driver.poll_timeout()].into_iter().flatten().min();
            let wait = due.map_or(Duration::from_millis(10), |at| {
                at.saturating_duration_since(Instant::now()).min(Duration::from_millis(10))
            });
            let mut fds = vec![PollFd::new(&udp, PollFlags::IN)];
            for (socket, _) in sockets.downloads.values() {
                fds.push(PollFd::new(socket, PollFlags::IN));
            }
            let timeout = Timespec::try_from(wait).unwrap_or(Timespec { tv_sec: 0, tv_nsec: 0 });
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
        }
    }
    let elapsed = start.elapsed();
    client.download_result().map_err(|e| e.to_string())?;
    let sent = std::fs::read(served.join(name)).map_err(|e| e.to_string())?;
    let got = std::fs::read(out.join(name)).map_err(|e| e.to_string())?;
    Ok(Run { elapsed, exact: sent == got, request_versions, offer })
}
