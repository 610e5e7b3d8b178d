//! Endurance and hostile input on real sockets: descriptors, ports and memory come back after
//! many connections and downloads; a flooder does not starve the others; a file changed after its
//! offer is never served. Counting this process's descriptors only means something when nothing
//! else runs beside it, so the tests of this file take turns (`SERIAL`); the other suites are
//! other processes with their own descriptor tables.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::UdpSocket;
use std::sync::Mutex;

use natter_core::wire::datagram::{self, Datagram};
use support::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn sample_folder() -> tempfile::TempDir {
    folder_with(&[("hello.c", pattern(1841, 1)), ("alice.jpg", pattern(5000, 2))])
}

/// Open file descriptors of this process (the servers under test run in it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// U7, PROTOCOL 2.2: the file changes on disk after the offer; the client gets ABORT 1, never
/// bytes other than the ones the digest was taken of.
fn changed_file_is_aborted(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut a = Raw::join(server.addr, "alice");
    a.send("download_file hello.c");
    let offer = a.line();
    let words: Vec<&str> = offer.split(' ').collect();
    let port: u16 = words[1].parse().unwrap();
    let token = u64::from_str_radix(words[7], 16).unwrap();
    std::fs::write(server.path("hello.c"), b"replaced after the offer").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    udp.connect(("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let n = datagram::encode_request(token, 1, &[(0, 1)], &mut buf);
    udp.send(&buf[..n]).unwrap();
    let n = udp.recv(&mut buf).unwrap();
    match datagram::parse(&buf[..n]) {
        Ok(Datagram::Abort(abort)) => assert_eq!(u16::from(abort.code), 1),
        other => panic!("expected ABORT 1, got {other:?}"),
    }
}

/// C9: many connect/disconnect cycles leave no descriptors behind.
fn connect_disconnect_cycles(rt: Rt) {
    let server = start(rt, sample_folder(), |_| {});
    let mut probe = Raw::join(server.addr, "probe");
    probe.sync();
    let before = open_fds();
    for i in 0..1000 {
        let mut c = Raw::connect(server.addr);
        if i % 2 == 0 {
            c.send(&format!("u{i}"));
            assert!(c.line().ends_with("has joined the chat!"));
            c.line();
        }
    }
    // Every one of the 500 who joined is announced as leaving, exactly once (C7).
    let mut left = std::collections::HashSet::new();
    while left.len() < 500 {
        let line = probe.line();
        if let Some(name) = line.strip_suffix(" left the chat...") {
            assert!(left.insert(name.to_owned()), "{name} left twice");
        }
    }
    eventually("descriptors to be released", REPLY_TIMEOUT, || open_fds() <= before + 4);
}

/// C6: a client that floods lines without reading does not hold up the others.
fn flooder_does_not_starve_others(rt: Rt) {
    let server = start(rt, sample_folder(), |o| o.chat.max_queued_bytes = 256 * 1024);
    let mut calm = Raw::join(server.addr, "calm");
    let flood = Raw::join(server.addr, "flood");
    calm.sync();
    let addr = server.addr;
    let flooding = std::thread::spawn(move || {
        let line = format!("{}\n", "f".repeat(1000));
        for _ in 0..5000 {
            if std::io::Write::write_all(&mut flood.stream(), line.as_bytes()).is_err() {
                break; // closed for not reading its echoes: as it should be
            }
        }
        drop(flood);
        addr
    });
    // The calm client keeps talking to the server throughout.
    for _ in 0..50 {
        calm.send("show");
        loop {
            let line = calm.line();
            if line.starts_with("ALL") {
                break;
            }
        }
    }
    flooding.join().unwrap();
}

/// U10: a thousand downloads in a row leave no descriptors, ports or memory behind.
fn thousand_downloads(server_rt: Rt, client_rt: Rt) {
    let server = start(server_rt, folder_with(&[("tiny.bin", pattern(3000, 4))]), |o| {
        let base = *o.chat.udp_ports.start();
        o.chat.udp_ports = base..=base + 1;
    });
    let out = tempfile::tempdir().unwrap();
    let options = download_opts(&server, "tiny.bin", out.path(), "repeat");
    let before = open_fds();
    for i in 0..1000 {
        let report = download(client_rt, &options).unwrap_or_else(|e| panic!("download {i}: {e}"));
        std::fs::remove_file(&report.path).unwrap();
    }
    // With two ports, a thousand offers in a row only work if every finished transfer freed its
    // port; the descriptors of sockets and files must be back too.
    eventually("descriptors to be released", REPLY_TIMEOUT, || open_fds() <= before + 8);
}

mod endurance {
    use super::*;
    #[test]
    fn mio_changed_file_is_aborted() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        changed_file_is_aborted(Rt::Mio)
    }
    #[test]
    fn smol_changed_file_is_aborted() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        changed_file_is_aborted(Rt::Smol)
    }
    #[test]
    fn mio_connect_disconnect_cycles() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        connect_disconnect_cycles(Rt::Mio)
    }
    #[test]
    fn smol_connect_disconnect_cycles() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        connect_disconnect_cycles(Rt::Smol)
    }
    #[test]
    fn mio_flooder_does_not_starve_others() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        flooder_does_not_starve_others(Rt::Mio)
    }
    #[test]
    fn smol_flooder_does_not_starve_others() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        flooder_does_not_starve_others(Rt::Smol)
    }
    #[test]
    fn mio_thousand_downloads() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        thousand_downloads(Rt::Mio, Rt::Mio)
    }
    #[test]
    fn smol_thousand_downloads() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        thousand_downloads(Rt::Smol, Rt::Smol)
    }
}
