//! Shared pieces of the conformance suite: start a server on either runtime on an ephemeral
//! port, talk to it by hand over a raw socket, download with either runtime's client.
//!
//! Every wait is on a reply (a line, a file, a port), bounded by a deadline; never a bare sleep.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use natter_core::chat::client::ClientEvent;
use natter_core::transfer::receiver::Progress;
use natter_runtime_common::serve::{BoundServer, RunServer};
use natter_runtime_common::tls::{ClientTlsOptions, Fingerprint, ServerTlsOptions, server_tls};
use natter_runtime_common::{
    ClientError, ClientOptions, ClientUi, DownloadError, DownloadOptions, DownloadReport,
    ServerOptions,
};

/// How long any single expected reply may take before the test fails (generous: CI is shared).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A runtime, and for a server whether the suite talks to it over TLS (PROTOCOL 1.6): a TLS
/// server is reached only on its TLS port, by [`Raw`] and by the natter client alike, so every
/// scenario runs unchanged over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    Mio,
    Smol,
    MioTls,
    SmolTls,
}

impl Rt {
    pub fn serve(self) -> RunServer {
        match self {
            Rt::Mio | Rt::MioTls => natter_runtime_mio::serve,
            Rt::Smol | Rt::SmolTls => natter_runtime_smol::serve,
        }
    }

    pub fn client(self) -> natter_runtime_common::RunClient {
        match self {
            Rt::Mio | Rt::MioTls => natter_runtime_mio::client,
            Rt::Smol | Rt::SmolTls => natter_runtime_smol::client,
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Rt::MioTls | Rt::SmolTls)
    }
}

/// The TLS servers running in this process, by the address the suite reaches them on: how a
/// [`Raw`] connection or a client's options know to speak TLS, and which certificate to trust.
static TLS_SERVERS: std::sync::Mutex<Vec<(SocketAddr, Fingerprint)>> =
    std::sync::Mutex::new(Vec::new());

/// The fingerprint of the TLS server at `addr`, if it is one.
pub fn tls_server(addr: SocketAddr) -> Option<Fingerprint> {
    TLS_SERVERS.lock().unwrap().iter().find(|(a, _)| *a == addr).map(|(_, fp)| *fp)
}

/// Client TLS options that trust exactly the certificate `fingerprint` (and pin nothing).
pub fn tls_options(fingerprint: Fingerprint, known_hosts: &Path) -> ClientTlsOptions {
    ClientTlsOptions {
        server_name: "localhost".into(),
        known_hosts: known_hosts.join("known_hosts"),
        fingerprint: Some(fingerprint),
        password: None,
    }
}

/// A running server with its own served folder; stops when dropped.
pub struct TestServer {
    /// Where the suite talks to it: the TLS port of a TLS server.
    pub addr: SocketAddr,
    pub files: tempfile::TempDir,
    /// The plain port, whatever the suite talks on.
    pub plain_addr: SocketAddr,
    /// Its data folder (the self-signed certificate), when it serves TLS.
    pub data: Option<tempfile::TempDir>,
    /// Running while `Some`; [`TestServer::stop`] takes it.
    handle: Option<natter_runtime_common::serve::ServerHandle>,
}

impl Drop for TestServer {
    /// Its port may go to a plain server of another test next: it is a TLS server no more.
    fn drop(&mut self) {
        TLS_SERVERS.lock().unwrap().retain(|(addr, _)| *addr != self.addr);
    }
}

impl TestServer {
    pub fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// Stops the server (its connections are closed) and hands back its served folder.
    pub fn stop(mut self) -> tempfile::TempDir {
        drop(self.handle.take());
        // Dropping `self` must still run (it forgets the TLS port), so the folder is swapped out.
        std::mem::replace(&mut self.files, tempfile::tempdir().unwrap())
    }
}

/// A served folder with a few files of known content.
pub fn folder_with(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

/// Deterministic, incompressible-looking content.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn start(
    rt: Rt,
    files: tempfile::TempDir,
    tweak: impl FnOnce(&mut ServerOptions),
) -> TestServer {
    let mut options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), files.path().to_owned());
    // Each test gets its own UDP port range so tests running in parallel never collide.
    let base = free_udp_range(16);
    options.chat.udp_ports = base..=base + 15;
    options.chat.transfer_idle_timeout = Duration::from_secs(10);
    let data = rt.tls().then(|| tempfile::tempdir().unwrap());
    if let Some(data) = &data {
        options.tls = Some(ServerTlsOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            cert: None,
            key: None,
            data_dir: data.path().to_owned(),
        });
    }
    tweak(&mut options);
    let fingerprint = options.tls.as_ref().map(|tls| server_tls(tls).unwrap().fingerprint);
    let handle = BoundServer::bind(options).unwrap().spawn(rt.serve()).unwrap();
    let plain_addr = handle.local_addr();
    let addr = match (handle.tls_addr(), fingerprint) {
        (Some(addr), Some(fingerprint)) => {
            TLS_SERVERS.lock().unwrap().push((addr, fingerprint));
            addr
        }
        _ => plain_addr,
    };
    TestServer { addr, files, plain_addr, data, handle: Some(handle) }
}

/// A block of `n` UDP ports that were free a moment ago, different for every call in this
/// process. They are taken below the kernel's ephemeral range (32768 and up), where the clients'
/// own sockets land, and each test binary starts at its own place, so that test processes
/// running side by side rarely meet; a block with a port in use is skipped.
pub fn free_udp_range(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() * 997 % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN / u32::from(n) {
        let offset = NEXT.fetch_add(u32::from(n), Ordering::SeqCst) % (SPAN - u32::from(n));
        let base = (FIRST + offset) as u16;
        let all_free =
            (base..base + n).all(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of {n} free UDP ports between {FIRST} and {}", FIRST + SPAN);
}

/// Bytes both ways: a socket, or TLS over one.
pub trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

/// A client speaking the protocol by hand, as netcat would (or `openssl s_client`, when `addr`
/// is a TLS server's).
pub struct Raw {
    stream: TcpStream,
    reader: BufReader<Box<dyn Duplex>>,
    pub name: String,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let socket = stream.try_clone().unwrap();
        let duplex: Box<dyn Duplex> = match tls_server(addr) {
            None => Box::new(socket),
            Some(fingerprint) => {
                let options = tls_options(fingerprint, Path::new("/nonexistent"));
                let (tls, _) = natter_runtime_common::tls::client_tls(addr, &options).unwrap();
                let conn = rustls::ClientConnection::new(tls.config, tls.server_name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, socket))
            }
        };
        Raw { stream, reader: BufReader::new(duplex), name: String::new() }
    }

    /// The chat connection's own address (where an early flight goes, PROTOCOL 2.1).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Connects and joins as `name`, consuming the join line and the presence line.
    pub fn join(addr: SocketAddr, name: &str) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(name);
        assert_eq!(raw.line(), format!("{name} has joined the chat!"));
        let all = raw.line();
        assert!(all == "ALL" || all.starts_with("ALL "), "expected a presence line, got {all:?}");
        raw.name = name.to_owned();
        raw
    }

    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let duplex = self.reader.get_mut();
        duplex.write_all(bytes).unwrap();
        duplex.flush().unwrap();
    }

    /// Waits for the line `want`, skipping the others (presence lines and the rest); panics after
    /// 50 others or on timeout.
    pub fn sees(&mut self, want: &str) {
        let mut seen = Vec::new();
        loop {
            let line = self.line();
            if line == want {
                return;
            }
            seen.push(line);
            assert!(seen.len() < 50, "never saw {want:?}: {seen:?}");
        }
    }

    /// The next line, without its terminator. Panics on timeout or close.
    pub fn line(&mut self) -> String {
        self.try_line().unwrap_or_else(|| panic!("{}: connection closed or timed out", self.name))
    }

    /// The next line, or `None` when the server closed the connection.
    pub fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(buf.pop(), Some(b'\n'), "line without terminator: {buf:?}");
                Some(String::from_utf8(buf).expect("server sent invalid UTF-8"))
            }
            Err(err) => panic!("{}: read failed: {err}", self.name),
        }
    }

    /// Every line that arrives before the reply to a `show` (that reply included last): the
    /// synchronisation point of the suite.
    pub fn sync(&mut self) -> Vec<String> {
        self.send("show");
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line == "ALL" || line.starts_with("ALL ");
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Waits for the server to close the connection, returning the lines it sent first.
    pub fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.try_line() {
            lines.push(line);
        }
        lines
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads raw bytes (for tests that need to see exactly what came).
    pub fn read_some(&mut self, buf: &mut [u8]) -> usize {
        self.reader.read(buf).unwrap()
    }
}

pub fn download_opts(server: &TestServer, file: &str, out: &Path, name: &str) -> DownloadOptions {
    DownloadOptions::new(vec![file.to_owned()], client_opts(server, out, name))
}

/// `natter get` of `options.files` on `rt`: one result per file.
pub fn download_many(
    rt: Rt,
    options: &DownloadOptions,
) -> Result<Vec<natter_runtime_common::client::FileResult>, ClientError> {
    natter_runtime_common::client::download_many(rt.client(), options, |_: &Progress| {})
}

pub fn download(rt: Rt, options: &DownloadOptions) -> Result<DownloadReport, DownloadError> {
    natter_runtime_common::client::download(rt.client(), options, |_: &Progress| {})
}

/// Polls `cond` until it holds or the deadline passes; for waiting on the file system or a port,
/// which send no reply to synchronise on.
pub fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn client_opts(server: &TestServer, out: &Path, name: &str) -> ClientOptions {
    ClientOptions {
        stall_timeout: Duration::from_secs(20),
        tls: tls_server(server.addr).map(|fp| tls_options(fp, out)),
        ..stand_in_client_opts(server.addr, out.to_owned(), name)
    }
}

/// The options of a plain client of a [`stand_in_server`] at `addr`, saving into `out_dir`.
pub fn stand_in_client_opts(addr: SocketAddr, out_dir: PathBuf, name: &str) -> ClientOptions {
    ClientOptions {
        addr,
        name: name.to_owned(),
        out_dir,
        part_size: None,
        stall_timeout: Duration::from_secs(5),
        max_size: natter_core::driver::client::DEFAULT_MAX_DOWNLOAD_SIZE,
        max_transfers: natter_core::driver::client::DEFAULT_MAX_TRANSFERS,
        tls: None,
    }
}

/// A stand-in chat server on 127.0.0.1, for what a natter server would never say (a hostile one,
/// one from before a protocol version): on a thread of its own, `serve` gets the one connection
/// it accepts, as a line reader and a writer, with reads bounded by [`REPLY_TIMEOUT`].
pub fn stand_in_server<T: Send + 'static>(
    serve: impl FnOnce(BufReader<TcpStream>, TcpStream) -> T + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        serve(BufReader::new(stream.try_clone().unwrap()), stream)
    });
    (addr, server)
}

/// A client face that writes down what it is shown, one line each.
#[derive(Default)]
pub struct Recorder {
    pub lines: Vec<String>,
}

impl ClientUi for Recorder {
    fn event(&mut self, event: &ClientEvent) {
        self.lines.push(format!("{event:?}"));
    }

    fn progress(&mut self, _file: &str, _progress: &Progress) {}

    fn download_done(&mut self, file: &str, result: &Result<DownloadReport, DownloadError>) {
        match result {
            Ok(report) => self.lines.push(format!("done {file}: {report}")),
            Err(err) => self.lines.push(format!("done {file}: failed: {err}")),
        }
    }

    fn notice(&mut self, text: &str) {
        self.lines.push(format!("notice: {text}"));
    }

    fn disconnected(&mut self, reason: &str) {
        self.lines.push(format!("disconnected: {reason}"));
    }
}

/// Runs the interactive client of runtime `rt` with `lines` as the person's input (which then
/// ends); returns its result and what it showed.
pub fn run_client(
    rt: Rt,
    options: ClientOptions,
    lines: &[&str],
) -> (Result<(), ClientError>, Vec<String>) {
    let mut ui = Recorder::default();
    let input: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let result =
        natter_runtime_common::client::run_client(rt.client(), options, &mut ui, input.into_iter());
    (result, ui.lines)
}
