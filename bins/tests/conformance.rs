//! The conformance suite: every scenario on real sockets (127.0.0.1, ephemeral ports), on both
//! runtimes, and across them for downloads (a mio server with a smol client and the other way).
//! Each test names the PROTOCOL.md section and the TEST-CATALOGUE.md row it covers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use natter_core::wire::datagram::{self, Datagram, Version};
use natter_core::wire::sealed::{self, SealKey};
use natter_runtime_common::DownloadFailure;
use support::*;

/// Runs a chat scenario against each server runtime.
macro_rules! on_each_server {
    ($($name:ident),* $(,)?) => {
        mod mio_server {
            $( #[test] fn $name() { super::$name(super::Rt::Mio) } )*
        }
        mod smol_server {
            $( #[test] fn $name() { super::$name(super::Rt::Smol) } )*
        }
    };
}

/// Runs a chat scenario against each server runtime over TLS (PROTOCOL 1.6): the same
/// scenario, every connection on the TLS port.
macro_rules! on_each_server_over_tls {
    ($($name:ident),* $(,)?) => {
        mod mio_server_tls {
            $( #[test] fn $name() { super::$name(super::Rt::MioTls) } )*
        }
        mod smol_server_tls {
            $( #[test] fn $name() { super::$name(super::Rt::SmolTls) } )*
        }
    };
}

/// Runs a download scenario for each (server, client) runtime pair.
macro_rules! on_each_pair {
    ($($name:ident),* $(,)?) => {
        mod mio_to_mio { $( #[test] fn $name() { super::$name(super::Rt::Mio, super::Rt::Mio) } )* }
        mod smol_to_smol { $( #[test] fn $name() { super::$name(super::Rt::Smol, super::Rt::Smol) } )* }
        mod mio_server_smol_client { $( #[test] fn $name() { super::$name(super::Rt::Mio, super::Rt::Smol) } )* }
        mod smol_server_mio_client { $( #[test] fn $name() { super::$name(super::Rt::Smol, super::Rt::Mio) } )* }
        mod mio_to_mio_tls { $( #[test] fn $name() { super::$name(super::Rt::MioTls, super::Rt::Mio) } )* }
        mod smol_to_smol_tls { $( #[test] fn $name() { super::$name(super::Rt::SmolTls, super::Rt::Smol) } )* }
    };
}

/// What came back to a transfer driven by hand: a part (`req_seq`, index, payload), or an ABORT's
/// code.
type Got = Result<(u32, u32, Vec<u8>), u16>;

/// A transfer driven by hand from its offer line: plain datagrams (PROTOCOL 2.2), or sealed ones
/// (2.7) when the offer carries a key, as every offer over TLS does.
struct ByHand {
    udp: UdpSocket,
    token: u64,
    key: Option<SealKey>,
}

impl ByHand {
    fn new(words: &[&str]) -> Self {
        let port: u16 = words[1].parse().unwrap();
        let token = u64::from_str_radix(words[7], 16).unwrap();
        let key = words.get(8).map(|hex| {
            let bytes: Vec<u8> =
                (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
            SealKey::new(&bytes.try_into().unwrap())
        });
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        udp.connect(("127.0.0.1", port)).unwrap();
        Self { udp, token, key }
    }

    /// A REQUEST that is not the transfer's: a wrong token, or sealed under a wrong key.
    fn send_forged_request(&self) {
        let mut buf = [0u8; 2048];
        let n = match &self.key {
            Some(_) => sealed::encode_request(&SealKey::new(&[9; 32]), 1, &[(0, 0)], &mut buf),
            None => datagram::encode_request(self.token ^ 1, 1, &[(0, 0)], &mut buf),
        };
        self.udp.send(&buf[..n]).unwrap();
    }

    fn send_request(&self, req_seq: u32, ranges: &[(u32, u32)]) {
        let mut buf = [0u8; 2048];
        let n = match &self.key {
            Some(key) => sealed::encode_request(key, req_seq, ranges, &mut buf),
            None => datagram::encode_request(self.token, req_seq, ranges, &mut buf),
        };
        self.udp.send(&buf[..n]).unwrap();
    }

    fn send_finished(&self) {
        let mut buf = [0u8; 64];
        let n = match &self.key {
            Some(key) => sealed::encode_finished(key, &mut buf),
            None => datagram::encode_finished(self.token, &mut buf),
        };
        self.udp.send(&buf[..n]).unwrap();
    }

    /// The next datagram from the server, opened; `None` when nothing came within the socket's
    /// timeout.
    fn recv(&self) -> Option<Got> {
        let mut buf = [0u8; 2048];
        let n = self.udp.recv(&mut buf).ok()?;
        let got = match &self.key {
            Some(key) => sealed::open(key, self.token, &mut buf[..n]),
            None => datagram::parse(&buf[..n]),
        };
        match got {
            Ok(Datagram::Part(p)) => Some(Ok((p.req_seq, p.part, p.data.to_vec()))),
            Ok(Datagram::Abort(abort)) => Some(Err(u16::from(abort.code))),
            other => panic!("neither a part nor an ABORT: {other:?}"),
        }
    }
}

fn sample_folder() -> tempfile::TempDir {
    folder_with(&[("hello.c", pattern(1841, 1)), ("alice.jpg", pattern(5000, 2))])
}

// ---------------------------------------------------------------- chat

/// PROTOCOL 3 (the example), 1.1-1.3, 2.1-2.2: joins, presence, private messages, the file list,
/// an offer, a download by hand over UDP, a quit.
fn protocol_example(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut alice = Raw::connect(server.addr);
    alice.send("alice");
    assert_eq!(alice.line(), "alice has joined the chat!");
    assert_eq!(alice.line(), "ALL");
    let mut bob = Raw::connect(server.addr);
    bob.send("bob");
    assert_eq!(bob.line(), "bob has joined the chat!");
    assert_eq!(bob.line(), "ALL alice");
    assert_eq!(alice.line(), "bob has joined the chat!");
    assert_eq!(alice.line(), "ALL bob");
    bob.send("~alice hi alice");
    assert_eq!(bob.line(), "from you to alice: (PRIVATE) hi alice");
    assert_eq!(alice.line(), "bob: (PRIVATE) hi alice");
    alice.send("get_list_file");
    assert_eq!(alice.line(), "CHOOSE_FILE alice.jpg hello.c");
    alice.send("download_file hello.c");
    let offer = alice.line();
    let words: Vec<&str> = offer.split(' ').collect();
    // Over TLS the offer carries a key (2.7), and the part size leaves room for the seal.
    let (fields, part_size) = if rt.tls() { (9, 1198) } else { (8, 1200) };
    assert_eq!(words.len(), fields, "{offer}");
    assert_eq!(words[0], "UDP");
    assert_eq!(words[2], "0", "first transfer id");
    assert_eq!(&words[3..6], &["hello.c", "1841", part_size.to_string().as_str()]);
    let digest = blake3::hash(&pattern(1841, 1));
    assert_eq!(words[6], digest.to_hex().as_str());
    assert_eq!(words[7].len(), 16);

    // Parts 0-1 by hand, as the example says.
    let transfer = ByHand::new(&words);
    transfer.send_request(1, &[(0, 1)]);
    let mut file = vec![0u8; 1841];
    for _ in 0..2 {
        let Some(Ok((req_seq, part, data))) = transfer.recv() else { panic!("not a part") };
        assert_eq!(req_seq, 1);
        let at = part as usize * part_size;
        file[at..at + data.len()].copy_from_slice(&data);
    }
    assert_eq!(file, pattern(1841, 1));
    transfer.send_finished();

    bob.send("{quit}");
    assert_eq!(bob.until_closed(), Vec::<String>::new());
    assert_eq!(alice.line(), "bob left the chat...");
    assert_eq!(alice.line(), "ALL");
}

/// PROTOCOL 1.2, C1: every invalid name gets ERROR and the connection stays open for another try.
fn name_errors(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let _alice = Raw::join(server.addr, "alice");
    let mut c = Raw::connect(server.addr);
    let long = "x".repeat(33);
    for bad in [
        "",
        &long,
        "ALL",
        "show",
        "from",
        "Choose_File",
        "ALICE",
        "\u{0430}lice",
        "a b",
        "bad\u{1b}name",
        "bo:b",
    ] {
        c.send(bad);
        let reply = c.line();
        assert!(reply.starts_with("ERROR "), "name {bad:?} got {reply:?}");
    }
    c.send("carol");
    assert_eq!(c.line(), "carol has joined the chat!");
    assert_eq!(c.line(), "ALL alice");
}

/// PROTOCOL 1.2, C4, S1: every error a joined client can meet, and the connection stays open.
fn line_errors(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut a = Raw::join(server.addr, "alice");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"~nobody hi\n".to_vec(), "ERROR no such user: nobody"),
        (b"~alice\n".to_vec(), "ERROR "),
        (b"~alice \n".to_vec(), "ERROR "),
        (b"download_file\n".to_vec(), "ERROR "),
        (b"download_file a b c\n".to_vec(), "ERROR "),
        (b"download_file hello.c big\n".to_vec(), "ERROR "),
        (b"download_file nothere.txt\n".to_vec(), "ERROR no such file: nothere.txt"),
        (b"download_file ../hello.c\n".to_vec(), "ERROR no such file"),
        (b"download_file /etc/passwd\n".to_vec(), "ERROR no such file"),
        (b"download_file %2e%2e%2f\n".to_vec(), "ERROR no such file"),
        ("download_file \u{2215}etc\u{FF0F}passwd\n".as_bytes().to_vec(), "ERROR no such file"),
        (format!("download_file {}\n", "y".repeat(10_000)).into_bytes(), "ERROR"),
        (b"\xff\xfe bad utf-8\n".to_vec(), "ERROR "),
        (b"nul \x00 inside\n".to_vec(), "ERROR "),
        (b"esc \x1b[2J inside\n".to_vec(), "ERROR "),
        (b"cr \r inside\n".to_vec(), "ERROR "),
        ([vec![b'z'; 4097], b"\n".to_vec()].concat(), "ERROR "),
    ];
    for (bytes, expected) in cases {
        a.send_bytes(&bytes);
        let reply = a.line();
        assert!(
            reply.starts_with(expected),
            "{:?} got {reply:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
        assert!(
            !reply.chars().any(|c| c.is_control()),
            "reply echoes a control character: {reply:?}"
        );
    }
    // Still open and in sync. The longest message is the one whose relayed line (`alice: ` and the
    // text) still fits the 4096-byte limit every client enforces; one byte more is refused.
    let max = "m".repeat(4096 - "alice: ".len());
    a.send(&max);
    assert!(a.line() == format!("alice: {max}"), "the longest message was not relayed");
    a.send(&format!("{max}m"));
    assert!(a.line().starts_with("ERROR message too long"));
    assert_eq!(a.sync(), vec!["ALL".to_owned()]);
}

/// C4: a megabyte without a newline is discarded without being stored, then the line works.
fn megabyte_without_newline(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut a = Raw::join(server.addr, "alice");
    let chunk = vec![b'q'; 64 * 1024];
    for _ in 0..16 {
        a.send_bytes(&chunk);
    }
    a.send_bytes(b"\nafter\n");
    assert!(a.line().starts_with("ERROR "));
    assert_eq!(a.line(), "alice: after");
}

/// C3, PROTOCOL 1.2: the same lines sent whole and one byte at a time (inside UTF-8 too).
fn bytes_whole_and_one_at_a_time(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let script = "zoë\nhéllo wörld ✓\n~zoë to myself\nshow\n".as_bytes();
    let mut whole = Raw::connect(server.addr);
    whole.send_bytes(script);
    let expect_whole = [
        "zoë has joined the chat!",
        "ALL",
        "zoë: héllo wörld ✓",
        "from you to zoë: (PRIVATE) to myself",
        "zoë: (PRIVATE) to myself",
        "ALL",
    ];
    for line in expect_whole {
        assert_eq!(whole.line(), line);
    }
    let script2 = String::from_utf8(script.to_vec()).unwrap().replace("zoë", "ünï");
    let mut slow = Raw::connect(server.addr);
    slow.stream().set_nodelay(true).unwrap();
    for byte in script2.as_bytes() {
        slow.send_bytes(&[*byte]);
    }
    for line in [
        "ünï has joined the chat!",
        "ALL zoë",
        "ünï: héllo wörld ✓",
        "from you to ünï: (PRIVATE) to myself",
        "ünï: (PRIVATE) to myself",
        "ALL zoë",
    ] {
        assert_eq!(slow.line(), line);
    }
}

/// PROTOCOL 1.1, 1.2: several joins and leaves, a quit in the middle of a private exchange, and
/// a client that closes its socket without {quit} leaves exactly as if it had sent it (C7).
fn joins_and_leaves(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut a = Raw::join(server.addr, "alice");
    let mut b = Raw::join(server.addr, "bob");
    assert_eq!(a.line(), "bob has joined the chat!");
    assert_eq!(a.line(), "ALL bob");
    let c = Raw::join(server.addr, "carol");
    for r in [&mut a, &mut b] {
        assert_eq!(r.line(), "carol has joined the chat!");
    }
    assert_eq!(a.line(), "ALL bob carol");
    assert_eq!(b.line(), "ALL alice carol");
    a.send("~bob are you there?");
    assert_eq!(a.line(), "from you to bob: (PRIVATE) are you there?");
    assert_eq!(b.line(), "alice: (PRIVATE) are you there?");
    b.send("{quit}");
    b.until_closed();
    assert_eq!(a.line(), "bob left the chat...");
    assert_eq!(a.line(), "ALL carol");
    a.send("~bob still there?");
    assert_eq!(a.line(), "ERROR no such user: bob");
    drop(c); // closes without {quit}
    assert_eq!(a.line(), "carol left the chat...");
    assert_eq!(a.line(), "ALL");
    assert_eq!(a.sync(), vec!["ALL".to_owned()]);
}

/// C2: two connections claim the same name at the same moment; exactly one joins.
fn same_name_at_once(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut x = Raw::connect(server.addr);
    let mut y = Raw::connect(server.addr);
    x.send("dup");
    y.send("DUP");
    let rx = x.line();
    let ry = y.line();
    let joined = [&rx, &ry].iter().filter(|l| l.ends_with("has joined the chat!")).count();
    let refused = [&rx, &ry].iter().filter(|l| l.starts_with("ERROR ")).count();
    assert_eq!((joined, refused), (1, 1), "{rx:?} / {ry:?}");
}

/// C8: past the maximum number of connections, one ERROR line and the connection is closed.
fn too_many_connections(rt: Rt) {
    let server = start(rt, sample_folder(), |o| o.chat.max_connections = 2);
    let _a = Raw::join(server.addr, "alice");
    let _b = Raw::join(server.addr, "bob");
    let mut c = Raw::connect(server.addr);
    let lines = c.until_closed();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("ERROR "), "{lines:?}");
}

/// C7: a connection that never sends a name is closed after the timeout.
fn name_timeout(rt: Rt) {
    let server = start(rt, sample_folder(), |o| o.chat.name_timeout = Duration::from_millis(300));
    let mut a = Raw::join(server.addr, "alice");
    let mut silent = Raw::connect(server.addr);
    let lines = silent.until_closed();
    assert!(lines.len() == 1 && lines[0].starts_with("ERROR "), "{lines:?}");
    assert_eq!(a.sync(), vec!["ALL".to_owned()], "nobody joined, nobody left");
}

/// C5: a client that never reads is disconnected when its queue passes the bound; the others go on.
fn slow_reader_is_closed(rt: Rt) {
    // The talker's input is not limited here: this is about the reader (C6 is its own test).
    let server = start(rt, sample_folder(), |o| {
        o.chat.max_queued_bytes = 64 * 1024;
        o.chat.max_input_rate = 0;
    });
    let mut talker = Raw::join(server.addr, "talker");
    let sleeper = Raw::join(server.addr, "sleeper");
    sleeper.stream().set_nodelay(true).unwrap();
    assert_eq!(talker.line(), "sleeper has joined the chat!");
    assert_eq!(talker.line(), "ALL sleeper");
    let text = "w".repeat(4000);
    // Enough to fill the sleeper's socket buffers and then its queue on the server.
    let mut left = false;
    for _ in 0..20_000 {
        talker.send(&text);
        let line = talker.line();
        if line == "sleeper left the chat..." {
            left = true;
            break;
        }
        assert_eq!(line, format!("talker: {text}"));
    }
    assert!(left, "the sleeper was never disconnected");
    drop(sleeper);
}

/// C5, PROTOCOL 4: a reader that lags behind (the server's socket to it fills up, so the server
/// must wait until it is writable) but stays under the queue bound gets every line, in order,
/// once it reads again.
fn lagging_reader_gets_every_line(rt: Rt) {
    let server = start(rt, sample_folder(), |o| {
        o.chat.max_queued_bytes = 64 << 20;
        o.chat.max_input_rate = 0;
    });
    let mut talker = Raw::join(server.addr, "talker");
    let mut lagger = Raw::join(server.addr, "lagger");
    assert_eq!(talker.line(), "lagger has joined the chat!");
    assert_eq!(talker.line(), "ALL lagger");
    // 8 MB: more than the largest send buffer the kernel gives the server (4 MiB by default)
    // and the lagger's receive buffer (128 KiB by default, grown only as it reads).
    let lines = 2000;
    let text = "w".repeat(4000);
    for i in 0..lines {
        talker.send(&format!("{i} {text}"));
        assert_eq!(talker.line(), format!("talker: {i} {text}"));
    }
    for i in 0..lines {
        assert_eq!(lagger.line(), format!("talker: {i} {text}"), "line {i} of {lines}");
    }
    assert_eq!(lagger.sync(), vec!["ALL talker".to_owned()]);
}

/// C6, PROTOCOL 1.5: a client whose reading the server paused (it floods past its rate) still
/// gets what others say while it is paused, not only once its flood has been read.
fn paused_flooder_still_gets_lines(rt: Rt) {
    let server = start(rt, sample_folder(), |o| {
        o.chat.max_input_rate = 256 * 1024;
        o.chat.input_burst = 64 * 1024;
    });
    let mut talker = Raw::join(server.addr, "talker");
    let mut flooder = Raw::join(server.addr, "flooder");
    assert_eq!(talker.line(), "flooder has joined the chat!");
    assert_eq!(talker.line(), "ALL flooder");
    // 384 KiB at 256 KiB/s after a 64 KiB burst: read over more than a second.
    let flood_lines = 384;
    let line = format!("flood {}\n", "f".repeat(1000 - 7));
    let mut writer = flooder.stream().try_clone().unwrap();
    let flooding = std::thread::spawn(move || {
        for _ in 0..flood_lines {
            std::io::Write::write_all(&mut writer, line.as_bytes()).unwrap();
        }
    });
    // The flood is on (and the flooder paused) once its first lines come back.
    assert!(flooder.line().starts_with("flooder: flood "));
    talker.send("hello while you flood");
    let mut echoes_before = 1;
    loop {
        let line = flooder.line();
        if line == "talker: hello while you flood" {
            break;
        }
        assert!(line.starts_with("flooder: flood "), "{line}");
        echoes_before += 1;
    }
    assert!(
        echoes_before < flood_lines,
        "the talker's line came only after the whole flood ({echoes_before} echoes first)"
    );
    flooding.join().unwrap();
}

// ---------------------------------------------------------------- downloads

/// PROTOCOL 2, U4: 0 B, 1 B, exactly one part, and 50 MiB, byte-exact, checked by BLAKE3.
fn downloads_are_byte_exact(server_rt: Rt, client_rt: Rt) {
    let big = pattern(50 << 20, 7);
    let files = folder_with(&[
        ("empty.bin", Vec::new()),
        ("one.bin", vec![42]),
        ("part.bin", pattern(65000, 3)),
        ("big.bin", big.clone()),
    ]);
    let server = start(server_rt, files, |_| {});
    let out = tempfile::tempdir().unwrap();
    for (file, size) in
        [("empty.bin", 0usize), ("one.bin", 1), ("part.bin", 65000), ("big.bin", 50 << 20)]
    {
        let options = download_opts(&server, file, out.path(), "getter");
        let report = download(client_rt, &options).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(report.size, size as u64);
        let got = std::fs::read(&report.path).unwrap();
        assert_eq!(got, std::fs::read(server.path(file)).unwrap(), "{file} differs");
        assert!(!out.path().join(format!("{file}.part")).exists());
    }
    // A second download of the same file takes the next free name.
    let report =
        download(client_rt, &download_opts(&server, "one.bin", out.path(), "getter")).unwrap();
    assert_eq!(std::path::Path::new(&report.path).file_name().unwrap(), "one (1).bin");
}

/// U10-style load, PROTOCOL 2.2: 16 downloads at once from several clients.
fn sixteen_concurrent_downloads(server_rt: Rt, client_rt: Rt) {
    let files: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("f{i}.bin"), pattern(3 << 20, 10 + i))).collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    // Every client comes from 127.0.0.1: lift the per-address cap (8 by default) to all 16 ports.
    let server = start(server_rt, folder_with(&refs), |o| o.chat.max_transfers_per_ip = 16);
    let out = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let server = &server;
                let dir = out.path().join(format!("c{i}"));
                s.spawn(move || {
                    let file = format!("f{}.bin", i % 4);
                    let options = download_opts(server, &file, &dir, &format!("client{i}"));
                    let report =
                        download(client_rt, &options).unwrap_or_else(|e| panic!("client{i}: {e}"));
                    assert_eq!(
                        std::fs::read(report.path).unwrap(),
                        pattern(3 << 20, 10 + (i % 4) as u64)
                    );
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

// ---------------------------------------------------------------- client policy

/// PROTOCOL 1.2: the client treats as `{quit}` exactly what the server does. `{quit} ` with a
/// space is a public message (the client once trimmed it and left); the lines after it are sent,
/// and when the input ends the client leaves on its own.
fn client_quit_is_exactly_the_servers(server_rt: Rt, client_rt: Rt) {
    let server = start(server_rt, sample_folder(), |_| {});
    let mut watcher = Raw::join(server.addr, "watcher");
    let out = tempfile::tempdir().unwrap();
    let options = client_opts(&server, out.path(), "alice");
    let (result, shown) = run_client(client_rt, options, &["{quit} ", " {quit}", "still here"]);
    result.unwrap();
    // Presence lines are snapshots (1.1): when alice's lines arrive in the same read as her
    // name, the `ALL alice` not yet sent is replaced by the newer one, so they are left out here.
    let mut seen = Vec::new();
    while seen.last().is_none_or(|l| l != "alice left the chat...") {
        let line = watcher.line();
        if !line.starts_with("ALL") {
            seen.push(line);
        }
    }
    assert_eq!(
        seen,
        [
            "alice has joined the chat!",
            "alice: {quit} ",
            "alice:  {quit}",
            "alice: still here",
            "alice left the chat...",
        ]
    );
    assert!(
        shown.iter().any(|l| l.contains("still here")),
        "the client saw its own line before leaving: {shown:?}"
    );
    assert!(!shown.iter().any(|l| l.starts_with("disconnected")), "{shown:?}");
}

/// The drift that motivated the client driver: piped `~nobody hi` then `download_file hello.c`.
/// The server's ERROR answers the private message, not the download, so the client whose input
/// has ended waits for the offer, downloads the file, and only then leaves.
fn piped_private_error_then_download(server_rt: Rt, client_rt: Rt) {
    let server = start(server_rt, sample_folder(), |_| {});
    let out = tempfile::tempdir().unwrap();
    let options = client_opts(&server, out.path(), "alice");
    let (result, shown) = run_client(client_rt, options, &["~nobody hi", "download_file hello.c"]);
    result.unwrap();
    assert!(shown.iter().any(|l| l.contains("no such user: nobody")), "{shown:?}");
    assert!(shown.iter().any(|l| l.starts_with("done hello.c: saved")), "{shown:?}");
    assert_eq!(
        std::fs::read(out.path().join("hello.c")).unwrap(),
        std::fs::read(server.path("hello.c")).unwrap()
    );
    assert!(!out.path().join("hello.c.part").exists());
}

/// S3, PROTOCOL 2.1 (issue 10): a hostile server pushes offers nobody asked for, one of them for
/// a name outside `Downloads/`. The client takes none of them: no file is created at all. Before
/// the fix an unasked `UDP ...` line started a download and created its `.part` file.
fn s3_unasked_offers_from_a_hostile_server_write_nothing(_server_rt: Rt, client_rt: Rt) {
    use std::io::{BufRead, Write};
    let (addr, hostile) = stand_in_server(|mut reader, mut writer| {
        let mut name = String::new();
        reader.read_line(&mut name).unwrap();
        let digest = "ab".repeat(32);
        let lines = format!(
            "alice has joined the chat!\nALL\n\
             UDP 40000 0 doc.bin 100 1200 {digest} 0011223344556677\n\
             UDP 40001 1 ../../.bashrc 100 1200 {digest} 0011223344556678\n\
             UDP 40002 2 doc.bin 100 1200 {digest} 0011223344556679\n"
        );
        writer.write_all(lines.as_bytes()).unwrap();
        // Until the client leaves: it says {quit}, or its socket closes.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && !line.starts_with("{quit}") {
            line.clear();
        }
    });
    let out = tempfile::tempdir().unwrap();
    let downloads = out.path().join("Downloads");
    let options = stand_in_client_opts(addr, downloads.clone(), "alice");
    let (result, shown) = run_client(client_rt, options, &[]);
    hostile.join().unwrap();
    result.unwrap();
    let ignored = shown.iter().filter(|l| l.contains("did not ask for")).count();
    assert_eq!(ignored, 2, "{shown:?}");
    assert!(shown.iter().any(|l| l.contains("unsafe file name")), "{shown:?}");
    assert!(!downloads.exists(), "the client created {downloads:?}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Issue 11, PROTOCOL 2.1 (the cap of 4 per client) and 4 (rule 6): `natter get A B C ...`
/// fetches ten files in one session, at most 4 at once, every one verified and reported; a file
/// not on offer is reported as refused, the others are not lost.
fn get_many_files_in_one_session(server_rt: Rt, client_rt: Rt) {
    let mut files: Vec<(String, Vec<u8>)> =
        (0..10).map(|i| (format!("f{i}.bin"), pattern(20_000 + i * 7_001, i as u64))).collect();
    files.push(("empty.bin".into(), Vec::new()));
    let folder: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let server = start(server_rt, folder_with(&folder), |_| {});
    let out = tempfile::tempdir().unwrap();
    let mut options = download_opts(&server, "f0.bin", out.path(), "many");
    options.files = files.iter().map(|(n, _)| n.clone()).collect();
    options.files.insert(3, "missing.bin".into());
    let results = download_many(client_rt, &options).unwrap();
    assert_eq!(results.len(), files.len() + 1, "{results:?}");
    for (name, bytes) in &files {
        let (_, result) = results.iter().find(|(f, _)| f == name).unwrap();
        let report = result.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(std::fs::read(&report.path).unwrap(), *bytes, "{name} differs");
    }
    let (_, missing) = results.iter().find(|(f, _)| f == "missing.bin").unwrap();
    assert!(
        matches!(missing, Err(DownloadFailure::Refused(r)) if r.contains("no such file")),
        "{missing:?}"
    );
    // Nothing half-done is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Issue 11, PROTOCOL 2.1: a person who asks for six downloads at once gets them all: the
/// client sends at most four (the server's cap) and queues the rest until one ends.
fn interactive_downloads_past_the_cap_are_queued(server_rt: Rt, client_rt: Rt) {
    let files: Vec<(String, Vec<u8>)> =
        (0..6).map(|i| (format!("q{i}.bin"), pattern(300_000, 40 + i as u64))).collect();
    let folder: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let server = start(server_rt, folder_with(&folder), |_| {});
    let out = tempfile::tempdir().unwrap();
    let options = client_opts(&server, out.path(), "queuer");
    let typed: Vec<String> = files.iter().map(|(n, _)| format!("download_file {n}")).collect();
    let typed: Vec<&str> = typed.iter().map(String::as_str).collect();
    let (result, shown) = run_client(client_rt, options, &typed);
    result.unwrap();
    // The server may still refuse one whose turn came before it saw the last FINISHED (UDP and
    // TCP race on loopback, PROTOCOL 4 rule 7): the client asks again, and nothing fails.
    assert!(!shown.iter().any(|l| l.contains("failed")), "{shown:?}");
    // How many wait depends on how fast the first ones end (the lines are typed from a thread);
    // the queue itself is tested step by step in core/tests/client_driver.rs.
    assert!(shown.iter().filter(|l| l.contains("queued: download_file")).count() <= 2);
    for (name, bytes) in &files {
        assert_eq!(std::fs::read(out.path().join(name)).unwrap(), *bytes, "{name}");
    }
}

on_each_pair!(
    a_server_before_early_flights_gets_the_plain_line,
    get_many_files_in_one_session,
    interactive_downloads_past_the_cap_are_queued,
    s3_unasked_offers_from_a_hostile_server_write_nothing,
    downloads_are_byte_exact,
    sixteen_concurrent_downloads,
    client_quit_is_exactly_the_servers,
    piped_private_error_then_download,
);

/// PROTOCOL 5, 2.2: a version-1 client (REQUEST and FINISHED without a checksum trailer) is
/// served in version 1: its PARTs carry version 1, and its FINISHED frees the port.
fn a_version_1_client_is_still_served(rt: Rt) {
    let server = start(rt, sample_folder(), |o| {
        let only = *o.chat.udp_ports.start();
        o.chat.udp_ports = only..=only;
    });
    let mut a = Raw::join(server.addr, "old");
    a.send("download_file hello.c");
    let offer = a.line();
    let words: Vec<&str> = offer.split(' ').collect();
    let port: u16 = words[1].parse().unwrap();
    let token = u64::from_str_radix(words[7], 16).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    udp.connect(("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let n = datagram::encode_request_in(Version::V1, token, 0, &[(0, 1)], &mut buf);
    udp.send(&buf[..n]).unwrap();
    let mut file = vec![0u8; 1841];
    for _ in 0..2 {
        let n = udp.recv(&mut buf).unwrap();
        let Ok((Version::V1, Datagram::Part(part))) = datagram::parse_versioned(&buf[..n]) else {
            panic!("not a version-1 part: {:?}", datagram::parse_versioned(&buf[..n]))
        };
        let at = part.part as usize * 1200;
        file[at..at + part.data.len()].copy_from_slice(part.data);
    }
    assert_eq!(file, pattern(1841, 1));
    let n = datagram::encode_finished_in(Version::V1, token, &mut buf);
    udp.send(&buf[..n]).unwrap();
    // The only port is free again once FINISHED was understood.
    let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        a.send("download_file hello.c");
        let line = a.line();
        if line.starts_with("UDP ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "FINISHED v1 did not free the port: {line}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PROTOCOL 2.1, the early flight (version 4): a client that bound UDP on its chat connection's
/// own address and asks for 100 parts at 1 MB/s gets the file's parts with the offer, without a
/// REQUEST, as early requests of 16 parts; over TLS sealed under the offer's key. Its first
/// REQUEST, from another port, then moves the transfer there.
fn an_early_flight_needs_no_request(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut a = Raw::connect(server.addr);
    let early = UdpSocket::bind(a.local_addr()).unwrap();
    early.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    a.send("early");
    assert_eq!(a.line(), "early has joined the chat!");
    a.line();
    a.send("download_file alice.jpg 1200 100 1000000");
    let offer = a.line();
    let words: Vec<&str> = offer.split(' ').collect();
    let by_hand = ByHand::new(&words);
    let part_size = if by_hand.key.is_some() { 1200 - sealed::PART_SIZE_SHRINK } else { 1200 };
    let n_parts = 5000usize.div_ceil(usize::from(part_size));
    let on_early = ByHand { udp: early, token: by_hand.token, key: by_hand.key.clone() };
    let mut file = vec![0u8; 5000];
    for _ in 0..n_parts {
        let Some(Ok((req_seq, part, data))) = on_early.recv() else {
            panic!("the early flight did not arrive: {offer}");
        };
        assert_eq!(req_seq, part / 16);
        let at = part as usize * usize::from(part_size);
        file[at..at + data.len()].copy_from_slice(&data);
    }
    assert_eq!(file, pattern(5000, 2));
    // Early request 0 was the whole flight; a REQUEST numbered 0 is not newer.
    by_hand.send_request(0, &[(0, 0)]);
    by_hand.send_request(1, &[(1, 1)]);
    assert!(matches!(by_hand.recv(), Some(Ok((1, 1, _)))));
    by_hand.send_finished();
}

/// PROTOCOL 2.1 and 5 (version 4): a server from before early flights answers the longer line
/// with a usage error; the client asks again as that server understands, and the download goes
/// on (here to a refusal, which this stand-in server gives to every plain line).
fn a_server_before_early_flights_gets_the_plain_line(_server_rt: Rt, client_rt: Rt) {
    use std::io::{BufRead, Write};
    let (addr, old) = stand_in_server(|mut reader, mut writer| {
        let mut lines = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            let got = line.trim_end().to_owned();
            line.clear();
            let reply = match got.split(' ').count() {
                1 if lines.is_empty() => format!("{got} has joined the chat!\nALL\n"),
                5 => "ERROR usage: download_file <file> [<part_size>] (too many words)\n".into(),
                3 => "ERROR no such file: hello.c\n".into(),
                _ => String::new(),
            };
            writer.write_all(reply.as_bytes()).unwrap();
            let quit = got == "{quit}";
            lines.push(got);
            if quit {
                break;
            }
        }
        lines
    });
    let out = tempfile::tempdir().unwrap();
    let mut session = stand_in_client_opts(addr, out.path().join("Downloads"), "getter");
    session.part_size = Some(1200);
    let options = natter_runtime_common::DownloadOptions::new(vec!["hello.c".into()], session);
    let err = download(client_rt, &options).unwrap_err();
    assert!(err.to_string().contains("no such file: hello.c"), "{err}");
    let lines = old.join().unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[1].starts_with("download_file hello.c 1200 "), "{lines:?}");
    assert_eq!(lines[1].split(' ').count(), 5, "{lines:?}");
    assert_eq!(lines[2], "download_file hello.c 1200", "{lines:?}");
    assert_eq!(lines[3], "{quit}", "{lines:?}");
}

// ---------------------------------------------------------------- transfer limits

/// U9, PROTOCOL 2.1-2.2: all ports busy gives `ERROR server busy`; the per-client cap gives ERROR;
/// other clients are still served.
fn port_exhaustion_and_client_cap(rt: Rt) {
    let server = start(rt, sample_folder(), |o| {
        let base = *o.chat.udp_ports.start();
        o.chat.udp_ports = base..=base + 5;
        o.chat.max_transfers_per_client = 4;
    });
    let mut a = Raw::join(server.addr, "alice");
    for _ in 0..4 {
        a.send("download_file hello.c");
        assert!(a.line().starts_with("UDP "));
    }
    a.send("download_file hello.c");
    let capped = a.line();
    assert!(capped.starts_with("ERROR "), "{capped}");
    let mut b = Raw::join(server.addr, "bob");
    for _ in 0..2 {
        b.send("download_file hello.c");
        assert!(b.line().starts_with("UDP "));
    }
    b.send("download_file hello.c");
    let busy = b.line();
    assert!(busy.starts_with("ERROR server busy"), "{busy}");
}

/// U8, U2, PROTOCOL 2.1: a client that vanishes gets ABORT 3 after the idle timeout and its port is
/// free again; datagrams with a wrong token get no reply at all.
fn vanished_client_frees_its_port(rt: Rt) {
    let server = start(rt, sample_folder(), |o| {
        let base = *o.chat.udp_ports.start();
        o.chat.udp_ports = base..=base;
        o.chat.transfer_idle_timeout = Duration::from_millis(500);
    });
    let mut a = Raw::join(server.addr, "alice");
    a.send("download_file hello.c");
    let offer = a.line();
    let words: Vec<&str> = offer.split(' ').collect();
    a.send("download_file hello.c");
    assert!(a.line().starts_with("ERROR server busy"));

    let transfer = ByHand::new(&words);
    // Wrong token (or, sealed, a wrong key): silence.
    transfer.send_forged_request();
    transfer.udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(transfer.recv().is_none(), "a wrong token was answered");
    // One real request, then silence: the part, then ABORT 3.
    transfer.send_request(1, &[(0, 0)]);
    transfer.udp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    assert!(matches!(transfer.recv(), Some(Ok(_))));
    assert_eq!(transfer.recv(), Some(Err(3)), "expected ABORT 3");
    // The port is free again: the next offer gets it.
    let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        a.send("download_file hello.c");
        let line = a.line();
        if line.starts_with("UDP ") {
            assert_eq!(line.split(' ').nth(1), Some(words[1]));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "port never freed: {line}");
    }
}

/// PROTOCOL 1.4, S2: the served folder is watched; a new file is offered, a removed one is not,
/// and a subfolder or a link never is.
fn folder_changes_are_seen(rt: Rt) {
    let server = start(rt, sample_folder(), |o| o.rescan_every = Duration::from_millis(50));
    let mut a = Raw::join(server.addr, "alice");
    std::fs::write(server.path("new.txt"), b"fresh").unwrap();
    std::fs::remove_file(server.path("alice.jpg")).unwrap();
    std::fs::create_dir(server.path("sub")).unwrap();
    std::fs::write(server.path("sub/inner.txt"), b"hidden").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", server.path("link")).unwrap();
    std::fs::write(server.path(".hidden"), b"dot file").unwrap();
    let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        a.send("get_list_file");
        let list = a.line();
        if list == "CHOOSE_FILE hello.c new.txt" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the folder change was never seen: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for name in ["link", "sub", ".hidden", "alice.jpg"] {
        a.send(&format!("download_file {name}"));
        assert_eq!(a.line(), format!("ERROR no such file: {name}"));
    }
}

/// U9, PROTOCOL 2.1: a port of the range that another program holds is never offered; the next
/// free one is.
fn port_held_by_another_program_is_skipped(rt: Rt) {
    let base = free_udp_range(2);
    let _held = UdpSocket::bind(("127.0.0.1", base)).unwrap();
    let server = start(rt, sample_folder(), |o| o.chat.udp_ports = base..=base + 1);
    let mut a = Raw::join(server.addr, "alice");
    a.send("download_file hello.c");
    let offer = a.line();
    assert_eq!(offer.split(' ').nth(1), Some((base + 1).to_string().as_str()), "{offer}");
    a.send("download_file hello.c");
    assert!(a.line().starts_with("ERROR server busy"));
}

/// C7, PROTOCOL 1.2: a client reset in the middle of a line leaves exactly as if it had quit,
/// announced once; the half line is never relayed.
fn reset_in_the_middle_of_a_line(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut a = Raw::join(server.addr, "alice");
    let mut b = Raw::join(server.addr, "bob");
    assert_eq!(a.line(), "bob has joined the chat!");
    assert_eq!(a.line(), "ALL bob");
    // Whether the half line reaches the server before the reset or is thrown away with it, the
    // result must be the same: no message, one leave.
    b.send_bytes(b"half a li");
    socket2::SockRef::from(b.stream()).set_linger(Some(Duration::ZERO)).unwrap();
    drop(b); // RST, not FIN
    assert_eq!(a.line(), "bob left the chat...");
    assert_eq!(a.line(), "ALL");
    a.send("~bob still there?");
    assert_eq!(a.line(), "ERROR no such user: bob", "bob left once and is gone");
}

on_each_server!(
    a_version_1_client_is_still_served,
    an_early_flight_needs_no_request,
    reset_in_the_middle_of_a_line,
    port_held_by_another_program_is_skipped,
    folder_changes_are_seen,
    protocol_example,
    name_errors,
    line_errors,
    megabyte_without_newline,
    bytes_whole_and_one_at_a_time,
    joins_and_leaves,
    same_name_at_once,
    too_many_connections,
    name_timeout,
    slow_reader_is_closed,
    lagging_reader_gets_every_line,
    paused_flooder_still_gets_lines,
    port_exhaustion_and_client_cap,
    vanished_client_frees_its_port,
);

// Every chat scenario again over TLS (PROTOCOL 1.6), but two: the flood one writes to the socket
// from a second thread, under the TLS session's feet (C6 is the same code for both); and a
// version-1 client has no place there, since every offer over TLS is sealed (2.7, version 3).
on_each_server_over_tls!(
    an_early_flight_needs_no_request,
    reset_in_the_middle_of_a_line,
    port_held_by_another_program_is_skipped,
    folder_changes_are_seen,
    protocol_example,
    name_errors,
    line_errors,
    megabyte_without_newline,
    bytes_whole_and_one_at_a_time,
    joins_and_leaves,
    same_name_at_once,
    too_many_connections,
    name_timeout,
    slow_reader_is_closed,
    lagging_reader_gets_every_line,
    port_exhaustion_and_client_cap,
    vanished_client_frees_its_port,
);
