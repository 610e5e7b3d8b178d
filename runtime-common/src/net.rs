//! Socket set-up both runtimes share.

use std::io;
use std::net::{SocketAddr, UdpSocket};

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
