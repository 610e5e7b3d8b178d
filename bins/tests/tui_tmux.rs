//! `natter tui` in a real terminal: tmux runs it against a real server, `send-keys` types as a
//! person would, `capture-pane` reads the screen. The seed session (PROTOCOL 3) with no protocol
//! keyword typed: join, talk, talk privately, paste two lines, who, files, download from the file
//! pane, quit; then the terminal is given back (the alternate screen left) and the exit status
//! is 0. Issue 13, must-haves 3 and 4.
//!
//! tmux runs on a socket of its own (`-L`), killed at the end: no tmux server of the person who
//! runs the tests is touched. `.ci/run` installs tmux; without it this test fails and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// A tmux server of our own, with one window running `natter tui`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn command(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux must be installed to run this test (.ci/run installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.command(&["capture-pane", "-p", "-t", "natter"]).stdout)
            .into_owned()
    }

    /// Types `text` literally (no key names), then Enter when `enter`.
    fn type_text(&self, text: &str) {
        assert!(self.command(&["send-keys", "-t", "natter", "-l", text]).status.success());
    }

    fn key(&self, key: &str) {
        assert!(self.command(&["send-keys", "-t", "natter", key]).status.success());
    }

    fn pane(&self, format: &str) -> String {
        let out = self.command(&["display-message", "-p", "-t", "natter", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits (bounded) until the screen shows `text`.
    fn until_shown(&self, text: &str) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "the screen never showed {text:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own tmux server only (its own socket).
        let _ = self.command(&["kill-server"]);
    }
}

/// Starts `natter tui` as `name` in a new tmux server (the pane keeps its exit status).
fn start_tui(server: &TestServer, out: &std::path::Path, name: &str, width: u16) -> Tmux {
    let tmux = Tmux { socket: format!("natter-test-{}-{name}", std::process::id()) };
    // `exec`: the pane's process is natter itself, so its PID is the pane's.
    let natter = format!(
        "exec {} tui --addr {} --name {name} --out {}",
        env!("CARGO_BIN_EXE_natter"),
        server.addr,
        out.display()
    );
    let width = width.to_string();
    let started =
        tmux.command(&["new-session", "-d", "-s", "natter", "-x", &width, "-y", "30", &natter]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    // Keep the pane after natter exits, to read its exit status and screen mode.
    tmux.command(&["set-option", "-t", "natter", "remain-on-exit", "on"]);
    tmux
}

impl Tmux {
    /// Waits (bounded) for natter to exit; its exit status, or the signal that ended it.
    fn exit_status(&self) -> String {
        // tmux marks the pane dead when the terminal closes and learns the status when it reaps
        // the process, which on a loaded machine can come much later: until then the status is
        // read from the kernel, which keeps it for an unreaped process (`exit_code`, the last
        // field of /proc/PID/stat, in `waitpid` form).
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let pid = self.pane("#{pane_pid}");
        loop {
            let dead = self.pane("#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}");
            match dead.split(':').collect::<Vec<_>>()[..] {
                ["1", status, ""] if !status.is_empty() => return status.to_owned(),
                ["1", _, signal] if !signal.is_empty() => return format!("signal {signal}"),
                ["1", ..] => {
                    if let Some(code) = zombie_exit_code(&pid) {
                        return match code & 0x7f {
                            0 => (code >> 8).to_string(),
                            signal => format!("signal {signal}"),
                        };
                    }
                }
                _ => {}
            }
            assert!(Instant::now() < deadline, "natter tui did not exit:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `waitpid` status of process `pid` if it has exited and is not reaped yet.
fn zombie_exit_code(pid: &str) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold spaces: the fields start after its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    (fields.first() == Some(&"Z")).then_some(())?;
    fields.last()?.parse().ok()
}

// Issue 13 must-have 4; PROTOCOL 3, 1.2, 2, 4.1.
#[test]
fn the_seed_session_in_a_real_terminal() {
    let content = pattern(200_000, 7);
    let server = start(Rt::Mio, folder_with(&[("hello.c", content.clone())]), |_| {});
    let out = tempfile::tempdir().unwrap();
    let mut bob = Raw::join(server.addr, "bob");
    let tmux = start_tui(&server, out.path(), "alice", 100);

    tmux.until_shown("you joined as alice");
    bob.sees("alice has joined the chat!");
    tmux.until_shown("files (1)");

    tmux.type_text("hello bob");
    tmux.key("Enter");
    bob.sees("alice: hello bob");
    tmux.until_shown("<alice> hello bob");

    bob.send("~alice hi alice");
    tmux.until_shown("*bob* hi alice");

    tmux.type_text("/msg bob psst");
    tmux.key("Enter");
    bob.sees("alice: (PRIVATE) psst");
    tmux.until_shown("-> *bob* psst");

    // A pasted block (tmux pastes it bracketed, as a terminal does) waits for a yes.
    tmux.command(&["set-buffer", "line one\nline two"]);
    tmux.command(&["paste-buffer", "-p", "-t", "natter"]);
    tmux.until_shown("send 2 pasted lines?");
    tmux.key("Enter");
    bob.sees("alice: line one");
    bob.sees("alice: line two");

    tmux.type_text("/who");
    tmux.key("Enter");
    tmux.until_shown("2 here: alice (you), bob");

    tmux.type_text("/files");
    tmux.key("Enter");
    tmux.until_shown("1 files on offer: hello.c");

    // The file pane: F2, Enter on the (only) file.
    tmux.key("F2");
    tmux.until_shown("files: Enter downloads");
    tmux.key("Enter");
    tmux.until_shown("saved ");
    tmux.key("Escape");
    assert_eq!(std::fs::read(out.path().join("hello.c")).unwrap(), content, "byte-exact");
    tmux.until_shown("✓ hello.c");

    tmux.type_text("/quit");
    tmux.key("Enter");
    bob.sees("alice left the chat...");
    assert_eq!(tmux.exit_status(), "0");
    assert_eq!(tmux.pane("#{alternate_on}"), "0", "the terminal is given back");
    // Nothing alice did reached bob as a public message but what she said.
    let rest = bob.sync();
    assert!(rest.iter().all(|l| !l.starts_with("alice:")), "{rest:?}");
}

// Issue 13 (the terminal restored on exit): a `kill` of natter tui gives the terminal back.
#[test]
fn a_killed_tui_gives_the_terminal_back() {
    let server = start(Rt::Mio, folder_with(&[("a.txt", b"a".to_vec())]), |_| {});
    let out = tempfile::tempdir().unwrap();
    let tmux = start_tui(&server, out.path(), "carol", 60);
    tmux.until_shown("you joined as carol");
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "the tui draws on the alternate screen");
    let pid = tmux.pane("#{pane_pid}");
    // Our own child, by its PID.
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tmux.exit_status();
    assert_eq!(tmux.pane("#{alternate_on}"), "0", "the terminal is given back");
}
