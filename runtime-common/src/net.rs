//! Socket set-up both runtimes share.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::OnceLock;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use rustix::net::sockopt::{Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel buffer asked for on every transfer socket. The default (~208 KiB) holds three 64 KiB
/// parts: a burst of parts on loopback, or a round trip's worth at high rates, would overflow it
/// and be lost before the event loop wakes. The kernel caps the value at `net.core.rmem_max`.
const UDP_BUFFER: usize = 8 << 20;

/// A non-blocking UDP socket bound to `addr`, with large kernel buffers.
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only costs speed.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The unspecified address of the same family as `peer`, port 0: where a client binds.
pub fn any_addr_like(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// A download's socket: non-blocking, large buffers, bound where a client binds and connected
/// to `peer` (the server's transfer port), so the kernel drops datagrams from anyone else.
pub fn client_udp_socket(peer: SocketAddr) -> io::Result<UdpSocket> {
    let socket = udp_socket(any_addr_like(peer))?;
    socket.connect(peer)?;
    Ok(socket)
}

/// The MTU the kernel knows for the route to `peer`, from a connected (never used) UDP socket.
pub fn route_mtu(peer: std::net::IpAddr) -> Option<(u32, bool)> {
    let addr = SocketAddr::new(peer, 9);
    let socket = UdpSocket::bind(any_addr_like(addr)).ok()?;
    socket.connect(addr).ok()?;
    let mtu = match peer {
        std::net::IpAddr::V4(_) => rustix::net::sockopt::ip_mtu(&socket).ok()?,
        std::net::IpAddr::V6(_) => rustix::net::sockopt::ipv6_mtu(&socket).ok()?,
    };
    Some((mtu, peer.is_ipv6()))
}

/// How long a silent chat connection may go unprobed, and how it is probed: a peer that vanished
/// without a FIN or RST (power cut, cable pulled: a half-open connection, C7) is noticed after
/// about `KEEPALIVE_IDLE + 3 * KEEPALIVE_INTERVAL` instead of never, and leaves like any other.
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Lets the kernel hold a chat connection's small writes until the reader acknowledges what it
/// has (`coalesce`: Nagle's rule), or sends each write at once (best effort). Turning the delay off
/// sends whatever it holds at once.
pub fn coalesce_writes<S: AsFd>(stream: &S, coalesce: bool) {
    let _ = socket2::SockRef::from(stream).set_tcp_nodelay(!coalesce);
}

/// Turns on TCP keepalive for an accepted chat connection (best effort).
pub fn keep_alive<S: AsFd>(stream: &S) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(3);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// Sends `datagrams` with one `sendmmsg` call; returns how many went out (the rest stay to be
/// sent again: the kernel stops at the first one that would block). Why: one system call per
/// 1500-byte datagram was a large part of the server's CPU at 1 Gbit/s (~85k datagrams/s).
/// `WouldBlock` comes back only when not even the first could go.
pub fn send_batch(socket: impl AsFd, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    let addrs: Vec<SocketAddrAny> = datagrams.iter().map(|&(to, _)| to.into()).collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|&(_, d)| [IoSlice::new(d)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
        datagrams.iter().map(|_| SendAncillaryBuffer::default()).collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    Ok(rustix::net::sendmmsg(socket, &mut msgs, SendFlags::empty())?)
}

/// The most bytes one GSO send may carry: the segments travel as one UDP datagram through the
/// stack until they are cut, so they must fit one IP packet's 16-bit length with its headers.
pub const GSO_MAX_BYTES: usize = 65_000;

/// IP and UDP headers a segment adds to its datagram on the wire: IPv4, IPv6.
const IP_UDP_HEADERS: (usize, usize) = (28, 48);

/// quinn-udp's state for `socket` (GSO and GRO as the kernel offers them), with the kernel's
/// GRO switch held on first ([`hold_udp_gro_on`]).
fn udp_state<S: AsFd>(socket: &S) -> Option<UdpSocketState> {
    hold_udp_gro_on();
    UdpSocketState::new(socket.into()).ok()
}

/// Keeps one IPv6 UDP socket with GRO on for the life of the process. Call it when the process
/// starts (the server's bind, a client session's set-up), so that the descriptor is part of the
/// process from then on; every transfer socket's set-up calls it too.
///
/// Why: `UdpSocketState::new` probes GRO on a throwaway IPv6 socket. Turning GRO on for the only
/// such socket, and closing it, each flip a kernel static key, and each flip rewrites kernel code
/// on every CPU, with an interrupt to each. A `natter get` of 100 small files spent a tenth of its
/// CPU there (`perf`), and stalled every other process on the machine 200 times. While one socket
/// holds the key on, a probe only counts up and down. Best effort: without IPv6 the probe uses an
/// IPv4 socket, whose key the transfer sockets themselves hold on.
pub fn hold_udp_gro_on() {
    static HELD: OnceLock<Option<(UdpSocket, UdpSocketState)>> = OnceLock::new();
    HELD.get_or_init(|| {
        // The family quinn-udp's probe uses: IPv6, or IPv4 where there is none.
        let socket = UdpSocket::bind("[::]:0")
            .or_else(|_| UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)))
            .ok()?;
        // Connected to itself: nobody else can fill its receive buffer, which is never read.
        socket.connect(socket.local_addr().ok()?).ok()?;
        // The state's set-up turns GRO on for the socket itself.
        let state = UdpSocketState::new((&socket).into()).ok()?;
        Some((socket, state))
    });
}

/// Sends datagrams on one transfer socket: a run of equal-sized datagrams to one peer goes out as
/// one UDP GSO send (`UDP_SEGMENT`), anything else with `sendmmsg`.
///
/// Why GSO: at 1 Gbit/s with 1500-byte packets the server's CPU went mostly to the kernel's
/// per-packet send path (socket, UDP, IP, netfilter, qdisc), once per datagram even with
/// `sendmmsg`. With GSO the stack is traversed once per run of up to 64 segments and the packet
/// is cut just before the device (in software where the device cannot: the cut is cheap next to
/// the traversal). When the kernel refuses GSO (EIO or EINVAL: a device or a path without it),
/// quinn-udp turns it off for this socket and the same datagrams go out with `sendmmsg`.
#[derive(Debug)]
pub struct UdpSender {
    state: Option<UdpSocketState>,
    /// The largest datagram that may be a GSO segment: every segment must fit the route's MTU.
    max_segment: usize,
}

impl UdpSender {
    /// A sender for `socket`, whose datagrams go to `peer`.
    pub fn new<S: AsFd>(socket: &S, peer: std::net::IpAddr) -> Self {
        let max_segment = route_mtu(peer).map_or(0, |(mtu, v6)| {
            let headers = if v6 { IP_UDP_HEADERS.1 } else { IP_UDP_HEADERS.0 };
            (mtu as usize).saturating_sub(headers)
        });
        let state = udp_state(socket);
        tracing::debug!(
            "UDP GSO to {peer}: {} segments of at most {max_segment} bytes",
            state.as_ref().map_or(1, UdpSocketState::max_gso_segments)
        );
        // quinn-udp sets "don't fragment, ignore the path MTU" (QUIC probes its own MTU). natter
        // lets a client ask for parts larger than the path MTU, which IP then fragments as before:
        // put the kernel's default back (best effort).
        let _ = rustix::net::sockopt::set_ip_mtu_discover(socket, Ipv4PathMtuDiscovery::WANT);
        let _ = rustix::net::sockopt::set_ipv6_mtu_discover(socket, Ipv6PathMtuDiscovery::WANT);
        Self { state, max_segment }
    }

    /// How many segments one GSO send may hold now (1: GSO is off).
    fn max_segments(&self) -> usize {
        self.state.as_ref().map_or(1, UdpSocketState::max_gso_segments)
    }

    /// Sends a prefix of `batch` with one system call; returns how many datagrams went out.
    /// `WouldBlock` comes back only when none could go.
    pub fn send<S: AsFd>(&self, socket: &S, batch: &SendBatch<'_>) -> io::Result<usize> {
        let Some(&(to, _)) = batch.meta.first() else {
            return Ok(0);
        };
        let run = self.gso_run(batch);
        if let (Some(state), true) = (&self.state, run > 1) {
            let (last_to, last_len) = batch.meta[run - 1];
            debug_assert_eq!(last_to, to);
            let contents = &batch.buf[..(run - 1) * batch.stride + last_len];
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents,
                segment_size: Some(batch.stride),
                src_ip: None,
            };
            match state.try_send(socket.into(), &transmit) {
                Ok(()) => return Ok(run),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Err(err),
                // GSO refused: quinn-udp has turned it off; send the same datagrams without it.
                Err(_) if state.max_gso_segments() <= 1 => {}
                Err(err) => return Err(err),
            }
        }
        let datagrams: Vec<(SocketAddr, &[u8])> = batch.datagrams().collect();
        send_batch(socket, &datagrams)
    }

    /// How many datagrams at the start of `batch` can go as one GSO send.
    fn gso_run(&self, batch: &SendBatch<'_>) -> usize {
        gso_run(self.max_segments(), self.max_segment, batch)
    }
}

/// How many datagrams at the start of `batch` can go as one GSO send of at most `max_segments`
/// segments of at most `max_segment` bytes: same peer, every one exactly `stride` bytes but the
/// last, which may be shorter. 1 when GSO is off (`max_segments` 1).
fn gso_run(max_segments: usize, max_segment: usize, batch: &SendBatch<'_>) -> usize {
    let max = max_segments.min(batch.meta.len());
    if max <= 1 || batch.stride > max_segment {
        return 1;
    }
    let to = batch.meta[0].0;
    let mut run = 1;
    while run < max
        && batch.meta[run - 1].1 == batch.stride
        && batch.meta[run].0 == to
        && run * batch.stride + batch.meta[run].1 <= GSO_MAX_BYTES
    {
        run += 1;
    }
    run
}

/// Datagrams laid out one every `stride` bytes of `buf`, the `i`th going to `meta[i].0` and
/// `meta[i].1` bytes long: the layout a GSO send takes as it is.
#[derive(Debug)]
pub struct SendBatch<'a> {
    pub buf: &'a [u8],
    pub stride: usize,
    pub meta: &'a [(SocketAddr, usize)],
}

impl SendBatch<'_> {
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta
            .iter()
            .enumerate()
            .map(|(i, &(to, len))| (to, &self.buf[i * self.stride..i * self.stride + len]))
    }
}

/// The shortest wait before TCP sends a lost segment of a chat connection again: 20 ms, where
/// Linux waits at least 200.
///
/// Why: a chat connection is a thin stream, a line or two in flight. When that one segment is
/// lost, Linux probes for it only after two round trips plus its minimum RTO (the allowance for a
/// peer's delayed ACK), and every line behind it waits. At 20 ms and 5% loss each way, one
/// `natter get` of 1 MiB in six lost about 230 ms so: a `download_file` line or its offer (issue
/// 11). With this floor the same loss cost about 20 ms in 20 runs. A probe that comes before a
/// delayed ACK is only a duplicate segment, which the peer drops.
pub const CHAT_RTO_MIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Sets [`CHAT_RTO_MIN`] on a chat connection, where the kernel offers it (`TCP_RTO_MIN_US`,
/// Linux 6.15 and later); elsewhere, and on error, the kernel's own floor stays.
#[cfg(target_os = "linux")]
pub fn shorten_tcp_recovery(stream: &impl AsFd) {
    use std::os::fd::AsRawFd;
    // From the kernel's uapi linux/tcp.h; the libc crate does not have it yet.
    const TCP_RTO_MIN_US: libc::c_int = 45;
    let micros = libc::c_int::try_from(CHAT_RTO_MIN.as_micros()).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    #[allow(unsafe_code)] // one of the workspace's three unsafe calls; see the SAFETY note
    // SAFETY: `setsockopt` reads `len` bytes from the pointer, which points at a live `c_int`
    // of that size for the whole call; the descriptor is borrowed from an open socket. An
    // option the kernel does not know fails with ENOPROTOOPT and changes nothing.
    let _ = unsafe {
        libc::setsockopt(
            stream.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MIN_US,
            std::ptr::from_ref(&micros).cast(),
            len,
        )
    };
}

/// See the Linux version: elsewhere the kernel's own floor stays.
#[cfg(not(target_os = "linux"))]
pub fn shorten_tcp_recovery(_stream: &impl AsFd) {}

/// How one socket is read in batches of `recvmmsg`, which quinn-udp reads with GRO on where the
/// kernel offers it (several datagrams from one peer, one `stride` apart, in one buffer): the
/// socket's quinn-udp state and the shape of the batch its datagrams need. The buffers are a
/// [`RecvBuffers`], one for every socket a loop reads in turn.
///
/// Why batches: one `recv` system call per 1500-byte datagram was a large share of the client's
/// CPU at 1 Gbit/s; `recvmmsg` reads up to 32 at once. The batch is bounded in bytes as well, so
/// that large loopback parts are processed while they are still in the CPU's cache.
#[derive(Debug)]
pub struct UdpReceiver {
    state: Option<UdpSocketState>,
    /// Bytes of each buffer: a GRO bundle, or one datagram.
    buf_len: usize,
    /// Buffers in one batch.
    count: usize,
}

/// Bytes one [`UdpReceiver::recv`] reads at most (rounded up to one datagram).
const RECV_BATCH_BYTES: usize = 256 << 10;
/// Buffer for one GRO bundle: the kernel coalesces at most 64 KiB.
const GRO_BUF: usize = 64 << 10;

impl UdpReceiver {
    /// Sets `socket` up for batches of datagrams of at most `max_datagram` bytes.
    pub fn new<S: AsFd>(socket: &S, max_datagram: usize) -> Self {
        let state = udp_state(socket);
        let gro = state.as_ref().is_some_and(|s| s.gro_segments() > 1);
        let buf_len = if gro { GRO_BUF.max(max_datagram) } else { max_datagram };
        let count = (RECV_BATCH_BYTES / max_datagram.max(1)).clamp(1, 32);
        Self { state, buf_len, count }
    }

    /// Reads what `socket` holds, up to one batch, into `bufs`; returns how many reads were
    /// filled (0: `WouldBlock`, nothing to read). Then take the datagrams from `bufs`.
    pub fn recv<S: AsFd>(&self, socket: &S, bufs: &mut RecvBuffers) -> io::Result<usize> {
        bufs.fit(self.buf_len, self.count);
        bufs.filled = 0;
        let n = match &self.state {
            Some(state) => {
                let mut slices: Vec<IoSliceMut<'_>> =
                    bufs.bufs.iter_mut().take(self.count).map(|b| IoSliceMut::new(b)).collect();
                state.recv(socket.into(), &mut slices, &mut bufs.meta[..self.count])?
            }
            None => {
                let Some(buf) = bufs.bufs.first_mut() else {
                    return Ok(0);
                };
                let (len, _, from) =
                    rustix::net::recvfrom(socket, buf, rustix::net::RecvFlags::empty())?;
                bufs.meta[0].len = len;
                bufs.meta[0].stride = len;
                bufs.meta[0].addr = from
                    .and_then(|from| SocketAddr::try_from(from).ok())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                1
            }
        };
        bufs.filled = n;
        Ok(n)
    }
}

/// The buffers a batch of datagrams is read into ([`UdpReceiver::recv`]), and what the last
/// batch holds. One serves every download of a client: each socket's batch is handled before the
/// next is read. Why one: a batch is up to 2 MiB (32 GRO bundles), and with a set of buffers per
/// download, 32 downloads starting at once allocated and zeroed 64 MiB, 1.7 ms per download,
/// before the last of them could send its first request (issue 11).
#[derive(Debug, Default)]
pub struct RecvBuffers {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// How many datagrams (or GRO bundles) the last [`UdpReceiver::recv`] read.
    filled: usize,
}

impl RecvBuffers {
    /// Room for `count` buffers of `buf_len` bytes at least.
    fn fit(&mut self, buf_len: usize, count: usize) {
        if self.bufs.first().is_some_and(|b| b.len() < buf_len) {
            self.bufs.iter_mut().for_each(|b| b.resize(buf_len, 0));
        }
        let buf_len = self.bufs.first().map_or(buf_len, Vec::len);
        if self.bufs.len() < count {
            self.bufs.resize_with(count, || vec![0; buf_len]);
            self.meta.resize(count, RecvMeta::default());
        }
    }

    /// The datagrams the last [`UdpReceiver::recv`] read, in arrival order, to be changed in
    /// place (a sealed datagram is decrypted where it lies, PROTOCOL 2.7).
    pub fn datagrams_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        self.bufs.iter_mut().zip(&self.meta).take(self.filled).flat_map(|(buf, meta)| {
            let stride = meta.stride.max(1);
            let len = meta.len.min(buf.len());
            buf[..len].chunks_mut(stride)
        })
    }

    /// The same, each with the address it came from.
    pub fn datagrams_from_mut(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> {
        self.bufs.iter_mut().zip(&self.meta).take(self.filled).flat_map(|(buf, meta)| {
            let stride = meta.stride.max(1);
            let len = meta.len.min(buf.len());
            buf[..len].chunks_mut(stride).map(|datagram| (meta.addr, datagram))
        })
    }

    /// The datagrams the last [`UdpReceiver::recv`] read, in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs.iter().zip(&self.meta).take(self.filled).flat_map(|(buf, meta)| {
            let stride = meta.stride.max(1);
            buf[..meta.len.min(buf.len())].chunks(stride)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // PROTOCOL 2.2: every PART is its own datagram on the wire, however the server batched it.
    use super::*;
    use std::time::{Duration, Instant};

    /// `count` datagrams of `stride` bytes (the last `last` bytes), each filled with its index.
    fn batch_bytes(count: usize, stride: usize, last: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; count * stride];
        let mut lens = Vec::new();
        for i in 0..count {
            let len = if i + 1 == count { last } else { stride };
            buf[i * stride..i * stride + len].fill(i as u8 + 1);
            lens.push(len);
        }
        (buf, lens)
    }

    /// Reads until `want` datagrams arrived or a second passed.
    fn receive(rx: &UdpReceiver, socket: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut bufs = RecvBuffers::default();
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.len() < want && Instant::now() < deadline {
            match rx.recv(socket, &mut bufs) {
                Ok(_) => got.extend(bufs.datagrams().map(<[u8]>::to_vec)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(err) => panic!("recv failed: {err}"),
            }
        }
        got
    }

    /// Says a test skipped its GSO checks, and why, where `cargo test` shows it: straight to the
    /// standard error stream, which the test harness does not capture (it captures `eprintln!`
    /// only), so the skip is visible in every run and not only with `--nocapture`.
    fn skipped(reason: &str) {
        use std::io::Write;
        let line = format!("SKIPPED: no UDP GSO on this machine: {reason}\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// Why `sender` will not use GSO on this machine, if it will not: the test that needs the
    /// kernel's GSO says so and skips, rather than passing silently.
    fn gso_unavailable(sender: &UdpSender) -> Option<String> {
        if sender.state.is_none() {
            Some("quinn-udp could not set the socket up".to_owned())
        } else if sender.max_segments() <= 1 {
            Some("the kernel refuses UDP_SEGMENT on this socket".to_owned())
        } else if sender.max_segment < 1400 {
            Some(format!("the route MTU leaves segments of {} bytes", sender.max_segment))
        } else {
            None
        }
    }

    /// A GSO run (equal datagrams, a shorter last one) arrives as separate datagrams, whether the
    /// kernel hands them over one by one or as a GRO bundle that the receiver takes apart. Where
    /// the kernel offers GSO, the run goes out in one GSO send that the kernel accepts (quinn-udp
    /// turns GSO off for a socket whose GSO send failed); elsewhere the test says it checked the
    /// `sendmmsg` path only.
    #[test]
    fn a_gso_run_arrives_as_separate_datagrams() {
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = udp_socket(local).unwrap();
        let client = udp_socket(local).unwrap();
        let to = client.local_addr().unwrap();
        let sender = UdpSender::new(&server, to.ip());
        let unavailable = gso_unavailable(&sender);
        let rx = UdpReceiver::new(&client, 1500);
        let (buf, lens) = batch_bytes(5, 1400, 300);
        let meta: Vec<(SocketAddr, usize)> = lens.iter().map(|&l| (to, l)).collect();
        let batch = SendBatch { buf: &buf, stride: 1400, meta: &meta };
        if unavailable.is_none() {
            assert_eq!(sender.gso_run(&batch), 5, "the whole batch is one GSO run");
        }
        let mut sent = 0;
        let mut calls = 0;
        while sent < meta.len() {
            let rest = SendBatch {
                buf: &batch.buf[sent * 1400..],
                stride: 1400,
                meta: &batch.meta[sent..],
            };
            sent += sender.send(&server, &rest).unwrap();
            calls += 1;
        }
        let got = receive(&rx, &client, 5);
        let want: Vec<Vec<u8>> = batch.datagrams().map(|(_, d)| d.to_vec()).collect();
        assert_eq!(got, want);
        match unavailable {
            None => {
                assert_eq!(calls, 1, "one GSO send carried the run");
                assert!(sender.max_segments() > 1, "the kernel refused the GSO send");
            }
            Some(reason) => skipped(&format!("GSO part: {reason}; the sendmmsg path was checked")),
        }
    }

    /// One set of buffers serves sockets whose batches differ (GRO bundles of 64 KiB, loopback
    /// datagrams of 65,000 bytes): it grows to the largest of both, so that no datagram is cut.
    #[test]
    fn shared_buffers_fit_every_socket_that_reads_into_them() {
        let mut bufs = RecvBuffers::default();
        bufs.fit(GRO_BUF, 32);
        bufs.fit(65_000, 4);
        bufs.fit(1500, 8);
        assert_eq!(bufs.bufs.len(), 32);
        assert_eq!(bufs.meta.len(), 32);
        assert!(bufs.bufs.iter().all(|b| b.len() == GRO_BUF), "every buffer takes a bundle");
        let mut bufs = RecvBuffers::default();
        bufs.fit(1500, 32);
        bufs.fit(65_000, 4);
        assert!(bufs.bufs.iter().all(|b| b.len() == 65_000), "grown for the larger datagrams");
    }

    /// Only equal-sized datagrams to one peer form a run; a different peer or size, the segment
    /// limit or the 65,000-byte bound ends it. Pure logic: runs on every kernel.
    #[test]
    fn a_run_ends_at_another_peer_or_size() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let buf = vec![0u8; 80 * 1000];
        let run = |max_segments: usize, meta: &[(SocketAddr, usize)]| {
            gso_run(max_segments, 1472, &SendBatch { buf: &buf, stride: 1000, meta })
        };
        assert_eq!(run(64, &[(a, 1000), (a, 1000), (a, 500), (a, 1000)]), 3);
        assert_eq!(run(64, &[(a, 1000), (a, 1000), (b, 1000)]), 2);
        assert_eq!(run(64, &[(a, 500), (a, 1000)]), 1);
        assert_eq!(run(64, &[(a, 1000)]), 1);
        let many = vec![(a, 1000); 80];
        assert_eq!(run(64, &many), 64, "at most max_segments");
        assert_eq!(run(1, &many), 1, "GSO off");
        // A 66th segment of 1000 bytes would pass GSO_MAX_BYTES.
        assert_eq!(run(128, &many), GSO_MAX_BYTES / 1000);
        // A stride larger than the path's MTU allows is never a segment.
        let big = gso_run(64, 999, &SendBatch { buf: &buf, stride: 1000, meta: &many });
        assert_eq!(big, 1);
    }

    /// Where the kernel offers GSO, the sender for a loopback peer uses it with segments as large
    /// as the loopback MTU allows; elsewhere the test says it skipped.
    #[test]
    fn the_sender_uses_gso_where_the_kernel_offers_it() {
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = udp_socket(local).unwrap();
        let sender = UdpSender::new(&server, local.ip());
        match gso_unavailable(&sender) {
            None => {
                assert!(sender.max_segments() > 1);
                // Loopback's MTU is 65536: segments up to 65508 bytes.
                assert!(sender.max_segment > 9000, "{}", sender.max_segment);
            }
            Some(reason) => skipped(&reason),
        }
    }
}
