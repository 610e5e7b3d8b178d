//! What a person or a test asks a runtime to do, the same for both runtimes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use natter_core::chat::server::{PART_SIZE_RANGE, ServerConfig};
use natter_core::transfer::receiver::SAFE_PART_SIZE;

/// How often a server looks at its served folder again for new, changed or removed files: a
/// rescan costs an `lstat` per file (digests are cached by identity), so a change is seen soon
/// at little cost.
pub const DEFAULT_RESCAN_EVERY: Duration = Duration::from_secs(2);

/// Where a client looks for the server when told nothing: this machine, on the protocol's chat
/// port (PROTOCOL 1). The line client, the terminal one, `get` and the window share it.
pub const DEFAULT_SERVER_ADDR: &str = "127.0.0.1:55000";

/// Which event loop drives the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// One `mio` poll loop on the calling thread.
    #[default]
    Mio,
    /// `smol` tasks on a small executor.
    Smol,
}

/// A chat server with its download ports.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where the TCP listener binds; the UDP transfer ports bind on the same IP.
    pub addr: SocketAddr,
    /// The served folder (PROTOCOL.md 1.4).
    pub files: PathBuf,
    /// Limits, the UDP port range and the rest of the chat rules.
    pub chat: ServerConfig,
    /// How often the served folder is looked at again for new, changed or removed files.
    pub rescan_every: Duration,
    /// A TLS listener beside the plain one (PROTOCOL 1.6).
    pub tls: Option<crate::tls::ServerTlsOptions>,
    /// Listen on `addr` for plain chat (the seed's protocol, netcat's); `false` leaves only TLS.
    pub plain: bool,
    /// The cluster's broker (its address, AUTH and TLS), with `chat.cluster` naming this node
    /// (PROTOCOL.md section 8); `None` for a server alone.
    pub broker: Option<crate::cluster::Broker>,
}

impl ServerOptions {
    pub fn new(addr: SocketAddr, files: PathBuf) -> Self {
        Self {
            addr,
            files,
            chat: ServerConfig::default(),
            rescan_every: DEFAULT_RESCAN_EVERY,
            tls: None,
            plain: true,
            broker: None,
        }
    }
}

/// An interactive chat client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub addr: SocketAddr,
    pub name: String,
    /// Where downloads are saved (`Downloads` by default).
    pub out_dir: PathBuf,
    /// Part size asked for when the user does not name one; `None` picks [`default_part_size`].
    pub part_size: Option<u16>,
    /// A download gives up when no part has arrived for this long.
    pub stall_timeout: Duration,
    /// Offers of larger files are refused (see `ClientConfig::max_download_size`).
    pub max_size: u64,
    /// At most this many downloads run at once; the server's own cap still applies (see
    /// `ClientConfig::max_transfers`).
    pub max_transfers: usize,
    /// Speak TLS to the server (PROTOCOL 1.6).
    pub tls: Option<crate::tls::ClientTlsOptions>,
}

/// A one-shot download of one or more files: join, download, verify, quit.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The files to fetch, in this order; at most `session.max_transfers` run at once, the rest
    /// wait their turn.
    pub files: Vec<String>,
    /// The server, the name, where to save and the download limits, as for a chat session.
    pub session: ClientOptions,
}

impl DownloadOptions {
    /// `natter get` of `files` with the options of an interactive `session`.
    pub fn new(files: Vec<String>, session: ClientOptions) -> Self {
        DownloadOptions { files, session }
    }
}

/// The part size to ask for when the user gave none: the largest whose datagram fits the path.
///
/// The kernel knows the MTU of the route to the server (on a connected UDP socket, `IP_MTU`):
/// 65536 on loopback, where nothing fragments, gives the protocol's largest part (65000 bytes, one
/// syscall per 65 KB instead of per 1.2 KB); 1500 on an Ethernet link gives 1446-byte parts, 20%
/// fewer packets than 1200 for the same bytes. Only when the kernel cannot say is the answer 1200
/// bytes of payload, which fits every path that carries IPv6's minimum of 1280 bytes (QUIC's
/// reasoning). A path whose far side has a smaller MTU than the first hop is handled by the
/// download's fallback to 1200 when no part of the larger size gets through.
pub fn default_part_size(server: IpAddr) -> u16 {
    crate::net::route_mtu(server).map_or(SAFE_PART_SIZE, |(mtu, ipv6)| part_size_for_mtu(mtu, ipv6))
}

/// The largest part whose datagram (IP, UDP and natter headers included) fits `mtu`.
pub fn part_size_for_mtu(mtu: u32, ipv6: bool) -> u16 {
    let ip_header = if ipv6 { 40 } else { 20 };
    let overhead = ip_header + 8 + natter_core::wire::datagram::PART_HEADER_LEN as u32;
    let (min, max) = (*PART_SIZE_RANGE.start(), *PART_SIZE_RANGE.end());
    u16::try_from(mtu.saturating_sub(overhead)).map_or(max, |size| size.clamp(min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_fills_the_mtu() {
        assert_eq!(part_size_for_mtu(1500, false), 1446);
        assert_eq!(part_size_for_mtu(1500, true), 1426);
        assert_eq!(part_size_for_mtu(65536, false), 65_000);
        assert_eq!(part_size_for_mtu(576, false), 522);
        assert_eq!(part_size_for_mtu(100, false), 512);
    }

    #[test]
    fn loopback_gets_the_largest_parts() {
        assert_eq!(default_part_size(IpAddr::from([127, 0, 0, 1])), 65_000);
    }
}
