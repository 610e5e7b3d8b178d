//! Socket set-up both runtimes share.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;

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
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = datagrams
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    Ok(rustix::net::sendmmsg(
        socket,
        &mut msgs,
        SendFlags::empty(),
    )?)
}
