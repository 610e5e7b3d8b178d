//! The `natter` command as a person or a script meets it: help texts, exit codes, and a download
//! that survives the client process being killed (U6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// `natter get FILE --quiet --addr ADDR --out OUT` with `extra` arguments, ready to run.
fn get(addr: std::net::SocketAddr, file: &str, out: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = natter();
    command
        .args(["get", file, "--quiet", "--addr", &addr.to_string()])
        .arg("--out")
        .arg(out)
        .args(extra);
    command
}

fn natter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_natter"))
}

#[test]
fn help_explains_every_command() {
    let out = natter().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in ["server", "client", "get", "RUST_LOG"] {
        assert!(text.contains(word), "--help does not mention {word}:\n{text}");
    }
    for (command, options) in [
        ("server", &["--addr", "--files", "--udp-ports", "--no-early-flights", "--runtime"][..]),
        ("client", &["--addr", "--name", "--runtime"][..]),
        ("get", &["--addr", "--name", "--out", "--part-size", "--transfers", "--runtime"][..]),
    ] {
        let out = natter().args([command, "--help"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        for option in options {
            assert!(text.contains(option), "natter {command} --help lacks {option}:\n{text}");
        }
    }
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = natter().args(["server", "--udp-ports", "9-1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port range"));
    let out = natter().args(["get", "a.bin", "--transfers", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--transfers") && err.contains("1..=1024"), "{err}");
}

/// `natter get A B C D --transfers 4` against a server that allows only 2 at once: the lower cap
/// wins (the refused requests wait for a free transfer) and every file is byte-exact, in one
/// session.
#[test]
fn get_fetches_several_files_at_once_within_the_servers_cap() {
    let files: Vec<(String, Vec<u8>)> = (0..4u8)
        .map(|i| (format!("f{i}.bin"), pattern(200_000 + usize::from(i), i.into())))
        .collect();
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let server = start(Rt::Mio, folder_with(&named), |c| {
        c.chat.max_transfers_per_client = 2;
        c.chat.max_transfers_per_ip = 2;
    });
    let out_dir = tempfile::tempdir().unwrap();
    let mut command = get(server.addr, "f0.bin", out_dir.path(), &["--transfers", "4"]);
    command.args(["f1.bin", "f2.bin", "f3.bin"]);
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(out_dir.path().join(name)).unwrap(), bytes, "{name}");
    }
}

/// `natter get` exits non-zero, with the server's reason, for a file that is not on offer (S1).
#[test]
fn get_of_unknown_file_fails_with_the_reason() {
    let server = start(Rt::Mio, folder_with(&[("a.txt", b"a".to_vec())]), |_| {});
    let out_dir = tempfile::tempdir().unwrap();
    let out = get(server.addr, "../etc/passwd", out_dir.path(), &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such file"), "{err}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0, "nothing may be written");
}

/// `natter get` prints size, time and goodput, and the file is byte-exact.
#[test]
fn get_prints_what_it_did() {
    let server = start(Rt::Smol, folder_with(&[("a.bin", pattern(300_000, 5))]), |_| {});
    let out_dir = tempfile::tempdir().unwrap();
    let out = get(server.addr, "a.bin", out_dir.path(), &["--runtime", "smol"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("300000 bytes")
            && stdout.contains("MB/s")
            && stdout.contains("blake3 verified"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(out_dir.path().join("a.bin")).unwrap(), pattern(300_000, 5));
}

/// U6, PROTOCOL 2.3: the client process is killed in the middle of a download; run again, it
/// resumes from its `.part` file (only the missing parts are asked for) and ends byte-exact.
///
/// The first run goes through a proxy that holds the server's datagrams to 32 Mbit/s, so that a
/// 16 MiB file takes four seconds however fast the machine is: the first resume record (after
/// half a second) always comes before the end, and the test writes little to a disk that may be
/// nearly full. The second run goes to the server directly.
#[test]
fn download_resumes_after_the_client_is_killed() {
    use natter_core::impair::ImpairConfig;
    use natter_core::sim::LinkConfig;
    use natter_runtime_common::impair::{self, ImpairOptions};

    let content = pattern(16 << 20, 9);
    let mut ports = None;
    let server = start(Rt::Mio, folder_with(&[("big.bin", content)]), |o| {
        ports = Some(o.chat.udp_ports.clone())
    });
    let unlimited = LinkConfig::clean(0, Duration::ZERO, 0);
    let limited = LinkConfig::clean(32_000_000, Duration::ZERO, 256 << 10);
    let proxy = impair::start(
        ImpairOptions {
            listen: "127.0.0.2:0".parse().unwrap(),
            server: server.addr,
            ports: ports.unwrap(),
            upstream_ip: None,
            impair: ImpairConfig::new(unlimited, limited),
            seed: 9,
            flows: Default::default(),
            max_connections: 8,
        },
        std::time::Instant::now(),
    )
    .unwrap();

    let out_dir = tempfile::tempdir().unwrap();
    let resume_record = out_dir.path().join("big.bin.part.resume");
    let first_stderr = out_dir.path().join("first.stderr");
    let mut child = get(
        proxy.local_addr(),
        "big.bin",
        out_dir.path(),
        &["--part-size", "1200", "--name", "first"],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&first_stderr).unwrap())
    .spawn()
    .unwrap();
    let mut ended = None;
    eventually("a resume record or the end of the first run", Duration::from_secs(60), || {
        ended = child.try_wait().unwrap();
        resume_record.exists() || ended.is_some()
    });
    if let Some(status) = ended.filter(|_| !resume_record.exists()) {
        panic!(
            "the first run ended ({status}) before it saved a resume record: {}",
            std::fs::read_to_string(&first_stderr).unwrap_or_default()
        );
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the download finished before it could be killed; make the file bigger or the link slower"
    );
    assert!(!out_dir.path().join("big.bin").exists());
    proxy.stop();

    let out =
        get(server.addr, "big.bin", out_dir.path(), &["--part-size", "1200", "--name", "second"])
            .output()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resumed with"), "the second run started afresh: {stdout}");
    let got = std::fs::read(out_dir.path().join("big.bin")).unwrap();
    assert!(got == std::fs::read(server.path("big.bin")).unwrap(), "resumed file differs");
    assert!(!resume_record.exists());
}

/// PROTOCOL 1.1-1.3, 2.3: the line client as a person uses it, on both runtimes. It asks for the
/// name when none is given, prints every line received, downloads an offered file into the
/// folder with a verified digest, and leaves when its input ends and the download is over.
#[test]
fn line_client_chats_and_downloads() {
    use std::io::Write as _;
    for runtime in ["mio", "smol"] {
        let server = start(Rt::Mio, folder_with(&[("hello.c", pattern(5000, 3))]), |_| {});
        let mut watcher = Raw::join(server.addr, "watcher");
        let dir = tempfile::tempdir().unwrap();
        let mut child = natter()
            .args(["client", "--runtime", runtime, "--addr", &server.addr.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"alice\nhello everyone\nget_list_file\ndownload_file hello.c\n").unwrap();
        // The watcher sees alice arrive and speak: the client sent what was typed.
        assert_eq!(watcher.line(), "alice has joined the chat!");
        // PROTOCOL 1.1: the watcher's presence line is made when written, so it may follow what
        // alice said in the same turn.
        let mut next_two = [watcher.line(), watcher.line()];
        next_two.sort();
        assert_eq!(next_two, ["ALL alice", "alice: hello everyone"]);
        drop(stdin); // input ends; the client leaves once the download is over
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{runtime}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for expected in [
            "Your name:",
            "alice has joined the chat!",
            "alice: hello everyone",
            "CHOOSE_FILE hello.c",
            "UDP ",
            "blake3 verified",
        ] {
            assert!(stdout.contains(expected), "{runtime}: missing {expected:?} in:\n{stdout}");
        }
        assert_eq!(std::fs::read(dir.path().join("Downloads/hello.c")).unwrap(), pattern(5000, 3));
        assert_eq!(watcher.line(), "alice left the chat...");
    }
}

/// PROTOCOL 1.1, C1: a refused name keeps the connection open; the line client says so and takes
/// the next line typed as the next name.
#[test]
fn line_client_tries_another_name() {
    use std::io::Write as _;
    for runtime in ["mio", "smol"] {
        let server = start(Rt::Smol, folder_with(&[]), |_| {});
        let mut watcher = Raw::join(server.addr, "watcher");
        let mut child = natter()
            .args([
                "client",
                "--name",
                "WATCHER",
                "--runtime",
                runtime,
                "--addr",
                &server.addr.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"carol\nhello\n").unwrap();
        assert_eq!(watcher.line(), "carol has joined the chat!");
        // PROTOCOL 1.1: the watcher's presence line is made when written, so it may follow
        // what carol said in the same read.
        let mut next_two = [watcher.line(), watcher.line()];
        next_two.sort();
        assert_eq!(next_two, ["ALL carol", "carol: hello"]);
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{runtime}: {stdout}");
        assert!(
            stdout.contains("ERROR name already taken: watcher (type another name)"),
            "{runtime}: {stdout}"
        );
        assert!(stdout.contains("carol has joined the chat!"), "{runtime}: {stdout}");
    }
}

/// U8 from the client's side, and `--stall-timeout`: when the server goes silent, `natter get`
/// gives up with a clear error after the stall timeout and leaves no file under the final name.
#[test]
fn get_gives_up_on_a_silent_server() {
    use std::io::{BufRead, BufReader, Write as _};
    // A chat server by hand that offers a transfer on a UDP port where nobody answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let name = line.trim_end().to_owned();
        writer.write_all(format!("{name} has joined the chat!\nALL\n").as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("download_file a.bin"), "{line}");
        let digest = "ab".repeat(32);
        writer
            .write_all(
                format!("UDP {port} 0 a.bin 5000 1200 {digest} 00000000000000aa\n").as_bytes(),
            )
            .unwrap();
        // Stay connected until the client leaves.
        let _ = reader.read_line(&mut line);
    });
    let out_dir = tempfile::tempdir().unwrap();
    let out = get(addr, "a.bin", out_dir.path(), &["--part-size", "1200", "--stall-timeout", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no progress"), "{err}");
    assert!(!out_dir.path().join("a.bin").exists());
    fake.join().unwrap();
    drop(silent);
}

/// The accept back-off, one value in the server driver (`ACCEPT_RETRY`) where the two runtimes
/// had 50 ms and 10 ms: a server out of descriptors leaves new connections waiting in the kernel's
/// backlog and takes them once others have left. On both runtimes.
#[test]
fn out_of_descriptors_the_server_accepts_again_later() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    /// A joining client that reads with a short timeout, so a connection the server has not
    /// accepted yet shows as silence rather than as a failed test.
    fn joins(stream: &TcpStream, name: &str, wait: Duration) -> bool {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stream);
        matches!(reader.read_line(&mut line), Ok(n) if n > 0)
            && line.trim_end() == format!("{name} has joined the chat!")
    }
    for runtime in ["mio", "smol"] {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let udp = free_udp_range(2);
        let script = format!(
            "ulimit -n 48 && exec \"$0\" server --addr 127.0.0.1:{port} --files {} \
             --udp-ports {udp}-{} --runtime {runtime}",
            dir.path().display(),
            udp + 1
        );
        let mut server = Command::new("bash")
            .args(["-c", &script, env!("CARGO_BIN_EXE_natter")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        eventually("the server listens", REPLY_TIMEOUT, || TcpStream::connect(addr).is_ok());
        let mut joined = Vec::new();
        let mut waiting = None;
        for i in 0..100 {
            let mut stream = TcpStream::connect(addr).unwrap();
            let name = format!("c{i}");
            stream.write_all(format!("{name}\n").as_bytes()).unwrap();
            if joins(&stream, &name, Duration::from_millis(500)) {
                joined.push(stream);
            } else {
                waiting = Some((stream, name));
                break;
            }
        }
        let (stream, name) = waiting.expect("the descriptor limit was never reached");
        assert!(joined.len() >= 10, "{runtime}: only {} joined", joined.len());
        // Five leave: the one waiting in the backlog is taken and joins.
        joined.truncate(joined.len() - 5);
        let mut reader = BufReader::new(&stream);
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).unwrap_or(0);
            assert!(n > 0, "{runtime}: {name} was never accepted ({seen:?})");
            if line.trim_end() == format!("{name} has joined the chat!") {
                break;
            }
            seen.push(line);
        }
        let _ = server.kill();
        let _ = server.wait();
    }
}
