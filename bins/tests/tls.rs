//! TLS for the chat, certificate pinning and the room password (issue 14, PROTOCOL 1.6), on
//! real sockets: `openssl s_client` as the netcat of the TLS port, the natter client's pinning
//! flow, the password at the door, and a capture of the loopback wire holding none of the text.
//! (The catalogue has no rows for these yet: they are tagged T1-T6 here and in the report.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use natter_core::chat::password::Password;
use natter_runtime_common::tls::ClientTlsOptions;
use support::*;

fn sample_folder() -> tempfile::TempDir {
    folder_with(&[("hello.c", pattern(1841, 1))])
}

/// The lines a child prints, read on a thread of their own.
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line equal to `want` (other lines may come first).
fn expect_line(rx: &mpsc::Receiver<String>, want: &str) {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(line) if line.trim_end() == want => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line {want:?}; saw {seen:?}"),
        }
    }
}

/// Stops a child this test started (by its own handle, so by its PID) and reaps it.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// T1, PROTOCOL 1.6: `openssl s_client` is the netcat of the TLS port: it joins, talks, and
/// meets a plain client in the same room.
#[test]
fn openssl_s_client_chats() {
    for rt in [Rt::MioTls, Rt::SmolTls] {
        let server = start(rt, sample_folder(), |_| {});
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &server.addr.to_string(), "-quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is installed (CI installs it)");
        let lines = lines_of(child.stdout.take().unwrap());
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"ossl\nhello from openssl\n").unwrap();
        expect_line(&lines, "ossl has joined the chat!");
        expect_line(&lines, "ossl: hello from openssl");
        // A plain client on the plain port is in the same room.
        let mut plain = Raw::join(server.plain_addr, "plain");
        expect_line(&lines, "plain has joined the chat!");
        plain.send("~ossl hi over both");
        expect_line(&lines, "plain: (PRIVATE) hi over both");
        stdin.write_all(b"show\n").unwrap();
        expect_line(&lines, "ALL plain");
        stdin.write_all(b"{quit}\n").unwrap();
        assert_eq!(plain.line(), "from you to ossl: (PRIVATE) hi over both");
        assert_eq!(plain.line(), "ossl left the chat...");
        stop(child);
    }
}

/// Client TLS options that pin in `dir`'s known-hosts file, as `natter client --tls` does.
fn pinning_options(dir: &std::path::Path) -> ClientTlsOptions {
    ClientTlsOptions {
        server_name: "127.0.0.1".into(),
        known_hosts: dir.join("known_hosts"),
        fingerprint: None,
        password: None,
    }
}

/// Runs the natter client against `addr` with `tls`; says a line and quits.
fn chat_once(rt: Rt, addr: SocketAddr, tls: ClientTlsOptions, name: &str) -> Vec<String> {
    let out = tempfile::tempdir().unwrap();
    let options = natter_runtime_common::ClientOptions {
        addr,
        name: name.into(),
        out_dir: out.path().to_owned(),
        part_size: None,
        stall_timeout: Duration::from_secs(20),
        max_size: natter_core::driver::client::DEFAULT_MAX_DOWNLOAD_SIZE,
        max_transfers: natter_core::driver::client::DEFAULT_MAX_TRANSFERS,
        tls: Some(tls),
    };
    let (result, shown) = run_client(rt, options, &["pinned hello", "{quit}"]);
    result.unwrap();
    shown
}

/// T2, PROTOCOL 1.6: the pinning flow. First use pins the self-signed certificate in the
/// known-hosts file and says so; the same certificate again connects quietly; a changed one (a
/// new certificate on the same host and port) is refused loudly, with what to do, and nothing is
/// said in the room; `--fingerprint` of the new one connects again.
#[test]
fn pinning_first_use_same_again_then_changed() {
    for rt in [Rt::Mio, Rt::Smol] {
        let pins = tempfile::tempdir().unwrap();
        let known_hosts = pins.path().join("known_hosts");
        let server =
            start(if rt == Rt::Mio { Rt::MioTls } else { Rt::SmolTls }, sample_folder(), |_| {});
        let addr = server.addr;
        let mut watcher = Raw::join(server.plain_addr, "watcher");

        let first = chat_once(rt, addr, pinning_options(pins.path()), "first");
        assert!(
            first.iter().any(|l| l.starts_with("notice: first connection to 127.0.0.1:")
                && l.contains("now pinned")),
            "{first:?}"
        );
        let pinned = std::fs::read_to_string(&known_hosts).unwrap();
        let fingerprint = tls_server(addr).unwrap().to_string();
        assert_eq!(pinned, format!("127.0.0.1:{} {fingerprint}\n", addr.port()));
        let heard = lines_until(&mut watcher, "first: pinned hello");
        assert_eq!(heard[0], "first has joined the chat!");

        let again = chat_once(rt, addr, pinning_options(pins.path()), "again");
        assert!(!again.iter().any(|l| l.contains("pinned in")), "{again:?}");
        assert!(again.iter().any(|l| l.contains("pinned hello")), "{again:?}");
        assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), pinned, "nothing added");

        // The same address with a new certificate: a server whose data folder is new.
        drop(watcher);
        drop(server);
        let changed =
            start(if rt == Rt::Mio { Rt::MioTls } else { Rt::SmolTls }, sample_folder(), |o| {
                o.tls.as_mut().unwrap().addr = addr;
            });
        assert_eq!(changed.addr, addr);
        let mut watcher = Raw::join(changed.plain_addr, "watcher");
        let refused = chat_once(rt, addr, pinning_options(pins.path()), "mallory");
        let text = refused.join("\n");
        assert!(text.contains("THE SERVER'S CERTIFICATE HAS CHANGED"), "{text}");
        assert!(text.contains(&format!("remove line 1 of {}", known_hosts.display())), "{text}");
        let new_fingerprint = tls_server(addr).unwrap().to_string();
        assert!(text.contains(&format!("--fingerprint {new_fingerprint}")), "{text}");
        assert!(!text.contains("pinned hello"), "{text}");
        assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), pinned, "the pin stays");
        assert_eq!(watcher.sync(), vec!["ALL".to_owned()], "nobody joined");

        // The person checked the new fingerprint and gives it.
        let mut explicit = pinning_options(pins.path());
        explicit.fingerprint = Some(new_fingerprint.parse().unwrap());
        let trusted = chat_once(rt, addr, explicit, "trusting");
        assert!(trusted.iter().any(|l| l.contains("pinned hello")), "{trusted:?}");
        // A wrong --fingerprint is refused even where the known-hosts file would agree.
        let mut wrong = pinning_options(pins.path());
        wrong.fingerprint = Some(fingerprint.parse().unwrap());
        let refused = chat_once(rt, addr, wrong, "wrong").join("\n");
        assert!(refused.contains("not the") && refused.contains("--fingerprint"), "{refused}");
    }
}

/// A server with a room password, on TLS.
fn password_server(rt: Rt) -> TestServer {
    start(rt, sample_folder(), |o| o.chat.password = Some(Password::new("open sesame\n")))
}

/// T3, PROTOCOL 1.6: with a room password, `PASS <password>` comes first, over TLS only; a wrong
/// one gets ERROR and the close; the plain port admits nobody.
#[test]
fn room_password_over_tls_only() {
    for rt in [Rt::MioTls, Rt::SmolTls] {
        let server = password_server(rt);
        let mut ok = Raw::connect(server.addr);
        ok.send("PASS open sesame");
        ok.send("alice");
        assert_eq!(ok.line(), "alice has joined the chat!");
        assert_eq!(ok.line(), "ALL");

        let mut no_pass = Raw::connect(server.addr);
        no_pass.send("bob");
        assert_eq!(no_pass.line(), "ERROR this room needs a password: send PASS <password> first");
        no_pass.send("PASS open sesame");
        no_pass.send("bob");
        assert_eq!(no_pass.line(), "bob has joined the chat!");

        let mut wrong = Raw::connect(server.addr);
        wrong.send("PASS open sesam");
        wrong.send("eve");
        assert_eq!(wrong.until_closed(), vec!["ERROR wrong password".to_owned()]);

        let mut plain = Raw::connect(server.plain_addr);
        plain.send("PASS open sesame");
        let refused = plain.until_closed();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("ERROR this room needs a password, accepted only over TLS"));
        assert_eq!(ok.line(), "bob has joined the chat!");
        assert_eq!(ok.sync(), vec!["ALL bob".to_owned()]);
    }
}

/// T4, PROTOCOL 1.6: repeated wrong passwords from one address are slowed: past the free tries,
/// even the right password waits; the natter client sends the password from its options.
#[test]
fn repeated_wrong_passwords_are_slowed() {
    let server = password_server(Rt::MioTls);
    for _ in 0..=natter_core::chat::server::FREE_TRIES {
        let mut guess = Raw::connect(server.addr);
        guess.send("PASS guess");
        assert_eq!(guess.until_closed(), vec!["ERROR wrong password".to_owned()]);
    }
    let mut right = Raw::connect(server.addr);
    right.send("PASS open sesame");
    let refused = right.until_closed();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].starts_with("ERROR too many wrong passwords from your address"));

    // Once the wait is over (1 s after the fourth wrong try), the natter client gets in.
    std::thread::sleep(natter_core::chat::server::FIRST_WAIT);
    let fingerprint = tls_server(server.addr).unwrap();
    let pins = tempfile::tempdir().unwrap();
    let mut tls = tls_options(fingerprint, pins.path());
    tls.password = Some(Password::new("open sesame"));
    let shown = chat_once(Rt::Mio, server.addr, tls, "carol");
    assert!(shown.iter().any(|l| l.contains("pinned hello")), "{shown:?}");
}

/// T5, PROTOCOL 1.6: `--no-plain` leaves only the TLS port, and the server's log names the
/// certificate's fingerprint but never the password, however it is guessed.
#[test]
fn server_command_line_tls_no_plain_and_a_password_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "hunter2-very-secret\n").unwrap();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let udp = free_udp_range(2);
    let mut server = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["server", "--addr", "127.0.0.1:0", "--no-plain"])
        .args(["--tls-addr", &format!("127.0.0.1:{tls_port}")])
        .args(["--udp-ports", &format!("{udp}-{}", udp + 1)])
        .arg("--files")
        .arg(dir.path())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--password-file")
        .arg(&password_file)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = lines_of(server.stderr.take().unwrap());
    let mut seen = Vec::new();
    let fingerprint = loop {
        let line = log.recv_timeout(REPLY_TIMEOUT).expect("the server says where TLS is");
        seen.push(line.clone());
        if let Some((_, fp)) = line.split_once("certificate fingerprint ") {
            break fp.trim().to_owned();
        }
    };
    expect_line_containing(&log, "[STARTED]", &mut seen);
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let pins = tempfile::tempdir().unwrap();
    let tls = tls_options(fingerprint.parse().unwrap(), pins.path());
    let mut wrong = tls.clone();
    wrong.password = Some(Password::new("hunter2-very-secreT"));
    let shown = chat_once(Rt::Smol, addr, wrong, "guesser");
    assert!(shown.iter().any(|l| l.contains("wrong password")), "{shown:?}");
    let mut right = tls;
    right.password = Some(Password::new("hunter2-very-secret"));
    let shown = chat_once(Rt::Smol, addr, right, "member");
    assert!(shown.iter().any(|l| l.contains("pinned hello")), "{shown:?}");
    expect_line_containing(&log, "[DISCONNECTED] member disconnected", &mut seen);
    stop(server);
    while let Ok(line) = log.recv_timeout(Duration::from_millis(200)) {
        seen.push(line);
    }
    let text = seen.join("\n");
    assert!(text.contains("[PASSWORD]"), "{text}");
    assert!(!text.contains("hunter2"), "the log shows the password:\n{text}");
}

fn expect_line_containing(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    loop {
        let line =
            rx.recv_timeout(REPLY_TIMEOUT).unwrap_or_else(|_| panic!("no {want:?}: {seen:?}"));
        let found = line.contains(want);
        seen.push(line);
        if found {
            return;
        }
    }
}

/// T6, PROTOCOL 1.6: a capture of the loopback wire (tcpdump) during a TLS chat session holds
/// none of what was said, in public or in private, nor the password; the same capture does hold
/// a line said on the plain port, so it would have seen the text. Needs root and tcpdump: CI has
/// both; elsewhere the test says why it does not run.
#[test]
fn a_capture_of_a_tls_session_holds_none_of_the_text() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED a_capture_of_a_tls_session_holds_none_of_the_text: tcpdump needs root");
        return;
    }
    if Command::new("tcpdump").arg("--version").output().is_err() {
        eprintln!("SKIPPED a_capture_of_a_tls_session_holds_none_of_the_text: no tcpdump");
        return;
    }
    let server = start(Rt::MioTls, sample_folder(), |o| {
        o.chat.password = Some(Password::new("capture-pass-word"));
    });
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("chat.pcap");
    let filter =
        format!("tcp port {} or tcp port {}", server.addr.port(), server.plain_addr.port());
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "-n", "-s", "0", "-w"])
        .arg(&pcap)
        .arg(&filter)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = lines_of(tcpdump.stderr.take().unwrap());
    let mut seen = Vec::new();
    expect_line_containing(&log, "listening on lo", &mut seen);

    let mut alice = Raw::connect(server.addr);
    alice.send("PASS capture-pass-word");
    alice.send("alice");
    assert_eq!(alice.line(), "alice has joined the chat!");
    let fingerprint = tls_server(server.addr).unwrap();
    let pins = tempfile::tempdir().unwrap();
    let mut tls = tls_options(fingerprint, pins.path());
    tls.password = Some(Password::new("capture-pass-word"));
    let out = tempfile::tempdir().unwrap();
    let options = natter_runtime_common::ClientOptions {
        addr: server.addr,
        name: "bobcat".into(),
        out_dir: out.path().to_owned(),
        part_size: None,
        stall_timeout: Duration::from_secs(20),
        max_size: natter_core::driver::client::DEFAULT_MAX_DOWNLOAD_SIZE,
        max_transfers: natter_core::driver::client::DEFAULT_MAX_TRANSFERS,
        tls: Some(tls),
    };
    let (result, _) = run_client(
        Rt::Mio,
        options,
        &["the-public-secret-xyzzy", "~alice the-private-secret-plugh", "{quit}"],
    );
    result.unwrap();
    alice.send("the-reply-secret-frobozz");
    let lines = lines_until(&mut alice, "alice: the-reply-secret-frobozz");
    assert!(lines.iter().any(|l| l == "bobcat: the-public-secret-xyzzy"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "bobcat: (PRIVATE) the-private-secret-plugh"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "alice: the-reply-secret-frobozz"), "{lines:?}");
    // The canary: said on the plain port, it must be in the capture.
    let mut plain = Raw::connect(server.plain_addr);
    plain.send("canary-on-the-plain-port");
    assert!(plain.line().starts_with("ERROR this room needs a password"));
    drop(alice);
    // tcpdump writes each packet as it comes (-U); give the last ones a moment, then stop it.
    eventually("the canary in the capture", REPLY_TIMEOUT, || {
        std::fs::read(&pcap).is_ok_and(|b| contains(&b, b"canary-on-the-plain-port"))
    });
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&tcpdump),
        rustix::process::Signal::INT,
    );
    let _ = tcpdump.wait();
    let captured = std::fs::read(&pcap).unwrap();
    assert!(captured.len() > 4000, "the capture holds the TLS session: {} bytes", captured.len());
    for secret in [
        &b"the-public-secret-xyzzy"[..],
        b"the-private-secret-plugh",
        b"the-reply-secret-frobozz",
        b"capture-pass-word",
        b"bobcat",
        b"has joined the chat",
    ] {
        assert!(
            !contains(&captured, secret),
            "the capture holds {:?}",
            String::from_utf8_lossy(secret)
        );
    }
}

/// The lines `raw` reads up to and including `last`. A presence line is made when written
/// (PROTOCOL 1.1), so it may come before or after the lines around it.
fn lines_until(raw: &mut Raw, last: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = raw.line();
        let done = line == last;
        lines.push(line);
        if done {
            return lines;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// T5, PROTOCOL 1.6: the TLS options are explained by `--help`, and a password is never sent
/// without TLS.
#[test]
fn tls_options_are_explained_and_a_plain_password_is_refused() {
    let natter = || Command::new(env!("CARGO_BIN_EXE_natter"));
    for (command, options) in [
        (
            "server",
            &[
                "--tls-addr",
                "--tls-cert",
                "--tls-key",
                "--data-dir",
                "--no-plain",
                "--password-file",
            ][..],
        ),
        (
            "client",
            &["--tls", "--fingerprint", "--known-hosts", "--password-file", "natters://"][..],
        ),
        ("get", &["--tls", "--fingerprint", "--known-hosts", "--password-file"][..]),
    ] {
        let out = natter().args([command, "--help"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        for option in options {
            assert!(text.contains(option), "natter {command} --help lacks {option}:\n{text}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pw\n").unwrap();
    let out = natter()
        .args(["get", "x", "--addr", "127.0.0.1:9", "--password-file"])
        .arg(&password)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only ever sent over TLS"), "{err}");
    let out = natter().args(["server", "--no-plain"]).output().unwrap();
    assert!(!out.status.success(), "--no-plain without --tls-addr leaves no listener");
}
