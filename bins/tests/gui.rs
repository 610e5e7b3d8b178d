//! `natter gui` end to end: a real server on ephemeral ports, a virtual X display (Xvfb) of our
//! own, the window on it (wgpu on Mesa's software Vulkan), keys typed with `xdotool` as a person
//! would, and a raw TCP client in the room. Checks that the window draws (a screenshot of the
//! display that is not blank), that a line typed in it reaches the other client, and that
//! Ctrl+Q leaves the room and ends the program with status 0. Issue 13, must-have 3.
//!
//! Nothing waits on time: the window writes its state to a trace file (`NATTER_GUI_TRACE`)
//! whenever it changes (connected, has the keyboard, what the input holds), and every step waits,
//! bounded, for the state it needs. Keys are typed only once the window has the keyboard focus
//! and its input line too; if what the input holds then is not what was typed, it is cleared and
//! typed again (at most a few times), so no keystroke is lost to a window not ready yet.
//!
//! Without Xvfb the test says so and passes, unless `CI` is set: there a missing Xvfb (or
//! xdotool, ImageMagick) is a failure (`.ci/run` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// How long the window may take to come up and join: its first frame compiles shaders on a
/// software renderer, on a machine that may be busy.
const WINDOW_TIMEOUT: Duration = Duration::from_secs(90);

/// A child process killed (by its PID) and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Is `program` there to run? Missing: `None`, with the test skipped (or failed under CI).
fn have(program: &str) -> bool {
    match Command::new(program).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status()
    {
        Ok(_) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => panic!("cannot run {program}: {err}"),
    }
}

/// Our own X display: Xvfb picks a free display number and tells it (`-displayfd`).
fn start_xvfb() -> (Reaped, String) {
    let mut child = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "1024x720x24", "-nolisten", "tcp"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout).read_line(&mut line).expect("Xvfb tells its display");
    let number = line.trim();
    assert!(!number.is_empty() && number.chars().all(|c| c.is_ascii_digit()), "{line:?}");
    (Reaped(child), format!(":{number}"))
}

fn x_command(program: &str, display: &str) -> Command {
    let mut command = Command::new(program);
    command.env("DISPLAY", display).env_remove("WAYLAND_DISPLAY");
    command
}

/// Runs `xdotool ARGS` on `display`; its output.
fn xdotool(display: &str, args: &[&str]) -> std::process::Output {
    x_command("xdotool", display).args(args).output().expect("xdotool runs")
}

/// The trace's last line.
fn last_state(trace: &Path) -> String {
    std::fs::read_to_string(trace).unwrap_or_default().lines().last().unwrap_or("").to_owned()
}

/// Waits (bounded) until the trace's last line satisfies `want`; the line.
fn until_state(
    trace: &Path,
    stderr: &Path,
    limit: Duration,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let state = last_state(trace);
        if want(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "the window never reached the state wanted; last: {state:?}\nits log:\n{}",
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The window's id, once it is mapped (bounded wait).
fn window_id(display: &str) -> String {
    let deadline = Instant::now() + WINDOW_TIMEOUT;
    loop {
        let out = xdotool(display, &["search", "--onlyvisible", "--name", "^natter"]);
        let found = String::from_utf8_lossy(&out.stdout);
        if let Some(id) = found.lines().next() {
            return id.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no natter window on {display}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Gives the window the keyboard, and waits until it says it has it (and its input line too).
fn focus(display: &str, window: &str, trace: &Path, stderr: &Path) {
    let deadline = Instant::now() + WINDOW_TIMEOUT;
    loop {
        xdotool(display, &["windowfocus", "--sync", window]);
        let state = last_state(trace);
        if state.contains("focused=true input_focus=true") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the window never took the keyboard: {state:?}\n{}",
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Types `text` into the focused input line until the window's input holds exactly it.
fn type_checked(display: &str, window: &str, trace: &Path, stderr: &Path, text: &str) {
    let want = format!("input={text:?}");
    for attempt in 1..=5 {
        focus(display, window, trace, stderr);
        xdotool(display, &["type", "--delay", "30", text]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = last_state(trace);
            if state.ends_with(&want) {
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Not what was typed (keys lost or doubled): clear the line and type it again.
        eprintln!("attempt {attempt}: the input holds {:?}; typing again", last_state(trace));
        xdotool(display, &["key", "ctrl+a", "BackSpace"]);
        until_state(trace, stderr, Duration::from_secs(10), |s| s.ends_with("input=\"\""));
    }
    panic!("could not type {text:?} into the window: {}", last_state(trace));
}

/// Screenshots the whole display into `png`; how many colours it holds.
fn screenshot(display: &str, png: &Path) -> usize {
    let status = x_command("import", display)
        .args(["-window", "root"])
        .arg(png)
        .status()
        .expect("ImageMagick's import runs");
    assert!(status.success(), "import failed");
    let out = Command::new("identify").args(["-format", "%k"]).arg(png).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("identify counts colours")
}

// Issue 13 must-have 3 (end to end: a real server, the window under Xvfb, a second client)
#[test]
fn the_window_joins_talks_and_leaves() {
    let ci = std::env::var_os("CI").is_some();
    for tool in ["Xvfb", "xdotool", "import"] {
        if !have(tool) {
            assert!(!ci, "{tool} is missing; .ci/run installs it");
            eprintln!("skipped: {tool} is not installed (apt install xvfb xdotool imagemagick)");
            return;
        }
    }
    let (_xvfb, display) = start_xvfb();
    let server = start(Rt::Mio, folder_with(&[("hello.c", pattern(30_000, 3))]), |_| {});
    let mut bob = Raw::join(server.addr, "bob");
    let work = tempfile::tempdir().unwrap();
    let trace = work.path().join("trace");
    let stderr = work.path().join("stderr");
    let gui = x_command(env!("CARGO_BIN_EXE_natter"), &display)
        .args(["gui", "--addr", &server.addr.to_string(), "--name", "alice", "--downloads"])
        .arg(work.path().join("Downloads"))
        .env("NATTER_GUI_TRACE", &trace)
        .env("XDG_CONFIG_HOME", work.path().join("config"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("natter gui starts");
    let mut gui = Reaped(gui);

    until_state(&trace, &stderr, WINDOW_TIMEOUT, |s| s.starts_with("state=connected"));
    bob.sees("alice has joined the chat!");
    let window = window_id(&display);

    type_checked(&display, &window, &trace, &stderr, "hello from the window");
    xdotool(&display, &["key", "Return"]);
    bob.sees("alice: hello from the window");
    until_state(&trace, &stderr, WINDOW_TIMEOUT, |s| s.ends_with("input=\"\""));

    bob.send("~alice hi alice");
    // The screenshot: the window drew (not one flat colour); kept when asked, for the docs.
    let png: PathBuf = match std::env::var_os("NATTER_GUI_SCREENSHOT") {
        Some(path) => path.into(),
        None => work.path().join("screen.png"),
    };
    let deadline = Instant::now() + WINDOW_TIMEOUT;
    let colours = loop {
        let colours = screenshot(&display, &png);
        if colours > 50 || Instant::now() > deadline {
            break colours;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(colours > 50, "the screenshot is blank or nearly: {colours} colours");

    // Ctrl+Q: leaves the room, the program ends with 0.
    focus(&display, &window, &trace, &stderr);
    xdotool(&display, &["key", "ctrl+q"]);
    bob.sees("alice left the chat...");
    let deadline = Instant::now() + WINDOW_TIMEOUT;
    let status = loop {
        if let Some(status) = gui.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "natter gui did not exit after Ctrl+Q");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "natter gui exited with {status}:\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
}
