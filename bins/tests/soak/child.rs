//! The real `natter server` in a child process. Its descriptors and memory are then its own:
//! `/proc/<pid>/fd` and `/proc/<pid>/status` count none of the test's clients, test harness or
//! other servers, which an in-process server would share with them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{REPLY_TIMEOUT, Rt, free_udp_range};

/// A `natter server` process serving a folder of its own; killed when dropped.
pub struct ChildServer {
    pub addr: SocketAddr,
    pub files: tempfile::TempDir,
    child: Child,
    /// Holds the server's standard error (warnings and errors only: `RUST_LOG=warn`).
    log_dir: tempfile::TempDir,
}

impl ChildServer {
    /// Starts `natter server --runtime <rt>` on a free loopback port with `udp_ports` transfer
    /// ports and the `extra` arguments, and waits until it accepts connections.
    pub fn start(rt: Rt, files: tempfile::TempDir, udp_ports: u16, extra: &[&str]) -> ChildServer {
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("server.log");
        // The port is free when asked for and taken by the child a moment later; another
        // process may take it in between, so a start that fails to bind is tried again.
        for _ in 0..5 {
            let addr = free_tcp_addr();
            let base = free_udp_range(udp_ports);
            let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
                .arg("server")
                .args(["--addr", &addr.to_string()])
                .arg("--files")
                .arg(files.path())
                .args(["--udp-ports", &format!("{base}-{}", base + udp_ports - 1)])
                .args(["--runtime", runtime_arg(rt)])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).unwrap())
                .spawn()
                .expect("start natter server");
            match wait_until_serving(&mut child, addr, &log_path) {
                Ok(()) => {
                    let server = ChildServer { addr, files, child, log_dir };
                    // It forgets the first session once it reads the end of it.
                    server.until_connections(0);
                    return server;
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    assert!(why.contains("in use"), "natter server did not start: {why}");
                }
            }
        }
        panic!("natter server found no free port in 5 tries");
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server process holds now.
    pub fn usage(&self) -> Usage {
        Usage::of(&format!("/proc/{}", self.pid()))
    }

    /// Forgets the server's peak memory so far (`VmHWM`), so that [`Usage::peak_kib`] is the
    /// peak of what follows. Linux only (`/proc/<pid>/clear_refs`, since 4.0); false if it could
    /// not, in which case the peak counts from the start.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// Waits until the server holds exactly `fds` descriptors (it closes sockets on its own
    /// schedule: a peer's close is noticed on its next read, a slow reader after its grace),
    /// then says what it holds.
    pub fn settled_at(&self, fds: usize) -> Usage {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let now = self.usage();
            if now.fds == fds {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the server holds {} descriptors, not {fds}, after {REPLY_TIMEOUT:?}",
                now.fds
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the server holds exactly `n` TCP connections (listener not counted).
    pub fn until_connections(&self, n: usize) -> Usage {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let now = self.usage();
            if now.connections == n {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the server holds {} connections, not {n}, after {REPLY_TIMEOUT:?}",
                now.connections
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the server wrote to standard error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // Only the child this value started, by its own handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the child serves at `addr`: one whole session (a name, then `{quit}`, read to the
/// close) means it has bound its ports and runs its loop, and holds no socket for the session
/// any more. The reason and its log if it exits or does not serve in time.
fn wait_until_serving(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut stream = loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("exited with {status}:\n{}", log()));
        }
        if let Ok(stream) = TcpStream::connect(addr) {
            break stream;
        }
        if Instant::now() > deadline {
            return Err(format!("not listening after {REPLY_TIMEOUT:?}:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    stream.write_all(b"startup-probe\n{quit}\n").unwrap();
    let mut session = String::new();
    stream.read_to_string(&mut session).map_err(|e| format!("{e}:\n{}", log()))?;
    if !session.starts_with("startup-probe has joined the chat!\n") {
        return Err(format!("unexpected first session {session:?}:\n{}", log()));
    }
    Ok(())
}

fn runtime_arg(rt: Rt) -> &'static str {
    match rt {
        Rt::Mio | Rt::MioTls => "mio",
        Rt::Smol | Rt::SmolTls => "smol",
    }
}

/// A loopback address whose port was free a moment ago.
fn free_tcp_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Descriptors, memory and threads of one process, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Open file descriptors.
    pub fds: usize,
    /// Of them, TCP connections (not listeners).
    pub connections: usize,
    /// Resident memory now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident memory (`VmHWM`), KiB.
    pub peak_kib: u64,
    /// Threads.
    pub threads: u64,
}

impl Usage {
    /// This test process.
    pub fn of_self() -> Usage {
        Usage::of("/proc/self")
    }

    fn of(proc_dir: &str) -> Usage {
        let connected = tcp_connection_inodes();
        let mut fds = 0;
        let mut connections = 0;
        for entry in std::fs::read_dir(format!("{proc_dir}/fd")).unwrap() {
            fds += 1;
            // A descriptor may close between the listing and this look: then it is no socket.
            let target = entry.ok().and_then(|e| std::fs::read_link(e.path()).ok());
            let inode = target
                .as_ref()
                .and_then(|t| t.to_str())
                .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok());
            if inode.is_some_and(|i| connected.contains(&i)) {
                connections += 1;
            }
        }
        let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {proc_dir}/status"))
        };
        Usage {
            fds,
            connections,
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
            threads: field("Threads:"),
        }
    }
}

/// The inodes of every TCP socket on this machine's loopback namespace that is not listening
/// (`/proc/net/tcp` and `tcp6`: the state is the fourth column, `0A` for LISTEN; the inode the
/// tenth).
fn tcp_connection_inodes() -> std::collections::HashSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    (cols.get(3) != Some(&"0A")).then(|| cols.get(9)?.parse().ok()).flatten()
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}
