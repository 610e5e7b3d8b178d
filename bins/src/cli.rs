//! The command line: what each subcommand takes, and `--help` that explains it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use natter_core::chat::server::ServerConfig;
use natter_core::driver::client::{DEFAULT_MAX_DOWNLOAD_SIZE, DEFAULT_MAX_TRANSFERS};
use natter_core::transfer::receiver::DEFAULT_GIVE_UP_AFTER;
use natter_runtime_common::Runtime;
use natter_runtime_common::options::{DEFAULT_RESCAN_EVERY, DEFAULT_SERVER_ADDR};

#[derive(Debug, Parser)]
#[command(
    name = "natter",
    version,
    about = "A small chat server with fast, reliable file downloads over UDP.",
    long_about = "A small chat server with fast, reliable file downloads over UDP.\n\n\
        Run `natter server` on one machine, then `natter client --name alice` anywhere that can \
        reach it. People talk in public or in private, see who is online, list the files the \
        server offers and download them over natter's own UDP protocol, checked with BLAKE3.",
    after_help = "Log verbosity comes from RUST_LOG (for example RUST_LOG=debug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the chat server and offer the files of a folder for download.
    Server(ServerArgs),
    /// Chat from the terminal: every line typed is sent, every line received is printed.
    Client(ClientArgs),
    /// Chat in a terminal window: messages, who is here, the files on offer, download gauges.
    Tui(ClientArgs),
    /// Chat in a desktop window: a connect form, tabs for private talk, people and files to
    /// click, download progress.
    #[command(long_about = GUI_ABOUT)]
    Gui(GuiArgs),
    /// Download one file and exit: 0 only when the file is byte-exact.
    Get(GetArgs),
    /// Relay a server through a bad network: loss, duplicates, reordering, delay, damage, a rate
    /// limit.
    Impair(Box<crate::impair_args::ImpairArgs>),
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum RuntimeArg {
    /// One mio event loop.
    #[default]
    Mio,
    /// smol tasks.
    Smol,
}

impl From<RuntimeArg> for Runtime {
    fn from(value: RuntimeArg) -> Self {
        match value {
            RuntimeArg::Mio => Runtime::Mio,
            RuntimeArg::Smol => Runtime::Smol,
        }
    }
}

/// A span of seconds on the command line, like `10` or `2.5`.
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub f64);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Seconds(v)),
            _ => Err(format!("{s:?} is not a positive number of seconds")),
        }
    }
}

impl From<Duration> for Seconds {
    fn from(value: Duration) -> Self {
        Seconds(value.as_secs_f64())
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<Seconds> for Duration {
    fn from(value: Seconds) -> Self {
        Duration::from_secs_f64(value.0)
    }
}

/// An inclusive port range like `55000-55015`.
#[derive(Debug, Clone, Copy)]
pub struct PortRange(pub u16, pub u16);

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a port range like 55000-55015");
        let (first, last) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange(first, last))
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// The defaults shown by `--help` are the core's own, so they cannot drift from it.
fn chat_defaults() -> ServerConfig {
    ServerConfig::default()
}

pub(crate) fn default_ports() -> PortRange {
    let ports = chat_defaults().udp_ports;
    PortRange(*ports.start(), *ports.end())
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// TCP address to listen on for chat; transfer ports bind on the same IP.
    #[arg(long, default_value = "0.0.0.0:55000")]
    pub addr: SocketAddr,
    /// Folder whose regular files are offered for download (not subfolders, not links).
    #[arg(long, default_value = "files")]
    pub files: PathBuf,
    /// UDP ports for transfers, one per download in progress.
    #[arg(long, default_value_t = default_ports())]
    pub udp_ports: PortRange,
    /// Most connections at once; the next one gets an ERROR line and is closed.
    #[arg(long, default_value_t = chat_defaults().max_connections)]
    pub max_connections: usize,
    /// Most connections at once from one IP address.
    #[arg(long, default_value_t = chat_defaults().max_per_ip)]
    pub max_per_ip: usize,
    /// Most downloads one client may have in progress at once.
    #[arg(long, default_value_t = chat_defaults().max_transfers_per_client)]
    pub transfers_per_client: usize,
    /// Most downloads in progress at once for all connections from one IP address together, so
    /// one host cannot take every transfer port.
    #[arg(long, default_value_t = chat_defaults().max_transfers_per_ip)]
    pub transfers_per_ip: usize,
    /// Send no early flights: a download's first parts then wait for the client's first request,
    /// a round trip later. An early flight goes, unasked by any UDP datagram, to the port number
    /// of the client's chat connection on its address (up to 1 MiB); behind a shared NAT that
    /// port may belong to another host.
    #[arg(long)]
    pub no_early_flights: bool,
    /// Largest room in which every join and leave sends everyone a fresh `ALL` line; above it,
    /// only the joined/left lines announce changes and `show` gives the list.
    #[arg(long, default_value_t = chat_defaults().presence_room_limit)]
    pub presence_limit: usize,
    /// Bytes per second one connection may send before its socket is read less (flood
    /// protection; 0 turns it off).
    #[arg(long, default_value_t = chat_defaults().max_input_rate)]
    pub max_input_rate: u32,
    /// Bytes queued to one client and not yet written, past which it is closed as a slow reader.
    #[arg(long, default_value_t = chat_defaults().max_queued_bytes)]
    pub max_queued_bytes: usize,
    /// Seconds a new connection has to send its name.
    #[arg(long, default_value_t = chat_defaults().name_timeout.into())]
    pub name_timeout: Seconds,
    /// Seconds between looks at the served folder for new, changed or removed files.
    #[arg(long, default_value_t = DEFAULT_RESCAN_EVERY.into())]
    pub rescan_every: Seconds,
    /// Seconds without a valid request before a transfer is aborted and its port freed.
    #[arg(long, default_value_t = chat_defaults().transfer_idle_timeout.into())]
    pub idle_timeout: Seconds,
    /// Event loop to run on.
    #[arg(long, value_enum, default_value_t)]
    pub runtime: RuntimeArg,
    /// Share the room with other servers through this Redis broker (PROTOCOL.md section 8):
    /// `redis://HOST:PORT`, with AUTH `redis://:PASSWORD@HOST:PORT` or
    /// `redis://USER:PASSWORD@HOST:PORT` (an ACL user; percent-encode `@ : / %` in them), and
    /// `rediss://...` for TLS, the broker's certificate checked against the web's root CAs or
    /// --cluster-ca. The password is never printed.
    #[arg(long, requires = "node")]
    pub cluster: Option<String>,
    /// PEM file of the CA(s) that signed the broker's TLS certificate (a private CA), trusted
    /// instead of the web's root CAs. Needs a rediss:// --cluster.
    #[arg(long, requires = "cluster")]
    pub cluster_ca: Option<PathBuf>,
    /// PEM client certificate chain this node shows a broker that asks for one
    /// (`tls-auth-clients yes`); with --cluster-key. Needs a rediss:// --cluster.
    #[arg(long, requires_all = ["cluster", "cluster_key"])]
    pub cluster_cert: Option<PathBuf>,
    /// PEM private key of --cluster-cert.
    #[arg(long, requires = "cluster_cert")]
    pub cluster_key: Option<PathBuf>,
    /// A file whose first line is the broker's AUTH password, so that it shows neither in `ps`
    /// nor in a shell's history; it replaces a password in --cluster (a user name stays there:
    /// `redis://natter@HOST:PORT`).
    #[arg(long, requires = "cluster")]
    pub cluster_password_file: Option<PathBuf>,
    /// This server's name in the cluster: unique, letters, digits, `_ - .`.
    #[arg(long, requires = "cluster")]
    pub node: Option<String>,
    /// Milliseconds a name claim and this node's heartbeat live unless renewed: a killed node's
    /// people are announced as left about this long after it died.
    #[arg(long, default_value_t = natter_core::cluster::DEFAULT_LEASE.as_millis() as u64)]
    pub cluster_lease_ms: u64,
    #[command(flatten)]
    pub tls: ServerTlsArgs,
}

/// TLS and the room password on the server (PROTOCOL 1.6).
#[derive(Debug, Args)]
pub struct ServerTlsArgs {
    /// Also listen for TLS chat on this address (for example 0.0.0.0:55443).
    #[arg(long)]
    pub tls_addr: Option<SocketAddr>,
    /// The TLS certificate chain (PEM); with --tls-key. Without them a self-signed certificate is
    /// made once and kept in --data-dir; its fingerprint is printed at start.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the server keeps its own files (the self-signed certificate).
    #[arg(long, default_value = "natter-data")]
    pub data_dir: PathBuf,
    /// Turn the plain chat port (--addr) off: only TLS is served.
    #[arg(long, requires = "tls_addr")]
    pub no_plain: bool,
    /// A file holding the room password: clients must send it, over TLS only.
    #[arg(long, requires = "tls_addr")]
    pub password_file: Option<PathBuf>,
}

/// TLS on the client (PROTOCOL 1.6).
#[derive(Debug, Clone, Args)]
pub struct ClientTlsArgs {
    /// Speak TLS to the server (implied by an address like natters://host:port).
    #[arg(long)]
    pub tls: bool,
    /// Trust exactly the certificate with this SHA-256 fingerprint (as the server prints it).
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Where self-signed certificates are pinned on first use (default ~/.natter/known_hosts).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// A file holding the room password (sent only over TLS).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

/// A server's chat address: `host:port`, or `natters://host:port` for TLS.
#[derive(Debug, Clone)]
pub struct ServerAddr {
    /// The host as given (a name or an address): what the certificate must show.
    pub host: String,
    /// Where it resolved to.
    pub addr: SocketAddr,
    /// Given as `natters://`.
    pub tls: bool,
}

impl FromStr for ServerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use std::net::ToSocketAddrs;
        let (tls, rest) = match s.strip_prefix("natters://") {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix("natter://").unwrap_or(s)),
        };
        let addr = rest
            .to_socket_addrs()
            .map_err(|err| format!("{s:?} is not a host:port address: {err}"))?
            .next()
            .ok_or_else(|| format!("{s:?} resolves to no address"))?;
        let host = match rest.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            None => rest.to_owned(),
        };
        Ok(ServerAddr { host, addr, tls })
    }
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server's chat address: host:port, or natters://host:port for TLS.
    #[arg(long, default_value = DEFAULT_SERVER_ADDR)]
    pub addr: ServerAddr,
    /// Your name in the chat (asked for when not given).
    #[arg(long)]
    pub name: Option<String>,
    /// Where downloads are saved.
    #[arg(long, default_value = "Downloads")]
    pub out: PathBuf,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// What every client (`client`, `tui`, `gui`, `get`) takes besides its address, name and folder:
/// how downloads run, the event loop, and TLS.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Payload bytes per part, 512 to 65000 (default: the largest that fits the route's MTU,
    /// 65000 on loopback; 1200 when the MTU is unknown).
    #[arg(long)]
    pub part_size: Option<u16>,
    /// A download gives up after this many seconds without progress.
    #[arg(long, default_value_t = DEFAULT_GIVE_UP_AFTER.into())]
    pub stall_timeout: Seconds,
    /// Refuse offers of files larger than this many bytes (default 1 TiB). A file larger than the
    /// free space of the download folder is refused too.
    #[arg(long, default_value_t = DEFAULT_MAX_DOWNLOAD_SIZE)]
    pub max_size: u64,
    /// Run at most this many downloads at once; the rest wait their turn. The server has a cap
    /// of its own (`natter server --transfers-per-client`, 4 unless raised): the lower one wins.
    #[arg(long, default_value_t = DEFAULT_MAX_TRANSFERS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub transfers: usize,
    /// Event loop to run on.
    #[arg(long, value_enum, default_value_t)]
    pub runtime: RuntimeArg,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Names of the files on the server (see `get_list_file` in the client). Several are fetched
    /// in one session, up to --transfers at once; the exit status is 0 only when every one is byte-exact.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<String>,
    /// Server's chat address: host:port, or natters://host:port for TLS.
    #[arg(long, default_value = DEFAULT_SERVER_ADDR)]
    pub addr: ServerAddr,
    /// Name to join with (default: get-<pid>).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the file is saved.
    #[arg(long, default_value = "Downloads")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub session: SessionArgs,
}

const GUI_ABOUT: &str = "Chat in a desktop window.\n\n\
    A form asks for the server's address and your name (the last ones used are remembered in \
    $XDG_CONFIG_HOME/natter/gui.toml, or ~/.config/natter/gui.toml); with --name the window \
    connects at once. Then: type and press Enter to talk to everyone; click a name to write to \
    that person in a tab of your own; click Download beside a file (progress, rate and time \
    left show at the bottom, and \"Show in folder\" opens the folder once it is saved and \
    checked). Up/Down recall what you sent, Tab completes names, files and /commands, /help lists \
    them. A lost server is tried again by itself. Ctrl+Q or /quit leaves.\n\n\
    Needs a display (X11 or Wayland) and Vulkan; without a GPU, Mesa's software Vulkan \
    (lavapipe, the mesa-vulkan-drivers package) does.";

#[derive(Debug, Args)]
pub struct GuiArgs {
    /// Server's chat address: host:port, or natters://host:port for TLS (default: the last one
    /// used, else 127.0.0.1:55000).
    #[arg(long)]
    pub addr: Option<String>,
    /// Your name in the chat; given, the window connects at once instead of showing the form.
    #[arg(long)]
    pub name: Option<String>,
    /// Where downloads are saved.
    #[arg(long, alias = "out", default_value = "Downloads")]
    pub downloads: PathBuf,
    /// The file the form's last values are kept in (default:
    /// $XDG_CONFIG_HOME/natter/gui.toml, or ~/.config/natter/gui.toml).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
}
