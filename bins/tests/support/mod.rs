//! Shared pieces of the conformance suite: start a server on either runtime on an ephemeral
//! port, talk to it by hand over a raw socket, download with either runtime's client.
//!
//! Every wait is on a reply (a line, a file, a port), bounded by a deadline; never a bare sleep.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use natter_core::transfer::receiver::Progress;
use natter_runtime_common::{DownloadError, DownloadOptions, DownloadReport, ServerOptions};

/// How long any single expected reply may take before the test fails (generous: CI is shared).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    Mio,
    Smol,
}

pub enum Handle {
    Mio(natter_runtime_mio::ServerHandle),
    Smol(natter_runtime_smol::ServerHandle),
}

/// A running server with its own served folder; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub files: tempfile::TempDir,
    _handle: Handle,
}

impl TestServer {
    pub fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
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
    options.idle_timeout = Duration::from_secs(10);
    tweak(&mut options);
    let (addr, handle) = match rt {
        Rt::Mio => {
            let server = natter_runtime_mio::Server::bind(options).unwrap();
            let h = server.spawn();
            (h.local_addr(), Handle::Mio(h))
        }
        Rt::Smol => {
            let server = natter_runtime_smol::Server::bind(options).unwrap();
            let h = server.spawn();
            (h.local_addr(), Handle::Smol(h))
        }
    };
    TestServer {
        addr,
        files,
        _handle: handle,
    }
}

/// A block of `n` UDP ports, picked so that parallel tests in this process do not share one.
pub fn free_udp_range(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Start high, away from the default range and the kernel's ephemeral range (32768-60999 by
    // default), and hand out consecutive blocks.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = NEXT.fetch_add(n, Ordering::SeqCst);
    let base = 61_000 + (std::process::id() as u16 % 8) * 512 + offset;
    assert!(base < 65_000, "ran out of test ports");
    base
}

/// A client speaking the protocol by hand, as netcat would.
pub struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub name: String,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Raw {
            stream,
            reader,
            name: String::new(),
        }
    }

    /// Connects and joins as `name`, consuming the join line and the presence line.
    pub fn join(addr: SocketAddr, name: &str) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(name);
        assert_eq!(raw.line(), format!("{name} has joined the chat!"));
        let all = raw.line();
        assert!(
            all == "ALL" || all.starts_with("ALL "),
            "expected a presence line, got {all:?}"
        );
        raw.name = name.to_owned();
        raw
    }

    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next line, without its terminator. Panics on timeout or close.
    pub fn line(&mut self) -> String {
        self.try_line()
            .unwrap_or_else(|| panic!("{}: connection closed or timed out", self.name))
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
    DownloadOptions {
        addr: server.addr,
        name: name.to_owned(),
        file: file.to_owned(),
        out_dir: out.to_owned(),
        part_size: None,
        stall_timeout: Duration::from_secs(20),
    }
}

pub fn download(rt: Rt, options: &DownloadOptions) -> Result<DownloadReport, DownloadError> {
    let progress = |_: &Progress| {};
    match rt {
        Rt::Mio => natter_runtime_mio::download(options, progress),
        Rt::Smol => natter_runtime_smol::download(options, progress),
    }
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
