//! Codec tests for the chat lines (PROTOCOL.md 1.2, 1.3, 2.1): round trips and malformed input.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use natter_core::wire::chat::{ClientLine, EarlyFlight, LineError, ServerLine, UdpOffer};

fn strip_nl(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

#[test]
fn client_lines_round_trip() {
    // PROTOCOL 1.2: every client line kind.
    let lines = [
        ClientLine::Show,
        ClientLine::GetListFile,
        ClientLine::Download { file: "hello.c".into(), part_size: None, early: None },
        ClientLine::Download { file: "big.iso".into(), part_size: Some(65000), early: None },
        ClientLine::Download { file: "x".into(), part_size: Some(u32::MAX), early: None },
        ClientLine::Download {
            file: "photo.jpg".into(),
            part_size: Some(1446),
            early: Some(EarlyFlight { parts: 725, rate: 50_000_000 }),
        },
        ClientLine::Download {
            file: "x".into(),
            part_size: Some(0),
            early: Some(EarlyFlight { parts: u32::MAX, rate: 0 }),
        },
        ClientLine::Private { to: "alice".into(), text: "hi  there ~ :)".into() },
        ClientLine::Quit,
        ClientLine::Empty,
        ClientLine::Public("hello world".into()),
        ClientLine::Public("tab\tis fine, so is 日本".into()),
        ClientLine::Public(" leading space".into()),
    ];
    for line in lines {
        let wire = line.encode();
        assert!(wire.ends_with('\n'));
        assert_eq!(ClientLine::parse(strip_nl(&wire)), Ok(line.clone()), "{wire:?}");
    }
}

#[test]
fn client_line_aliases_and_edges() {
    assert_eq!(ClientLine::parse("get list file"), Ok(ClientLine::GetListFile));
    assert_eq!(
        ClientLine::parse("Show"),
        Ok(ClientLine::Public("Show".into())),
        "matched whole, case-sensitive"
    );
    assert_eq!(ClientLine::parse("show "), Ok(ClientLine::Public("show ".into())));
    assert_eq!(
        ClientLine::parse("download_files x"),
        Ok(ClientLine::Public("download_files x".into()))
    );
    assert_eq!(
        ClientLine::parse("download_file x 099999999999999"),
        Ok(ClientLine::Download { file: "x".into(), part_size: Some(u32::MAX), early: None }),
        "huge part sizes saturate; the server clamps"
    );
}

#[test]
fn malformed_download_file() {
    // PROTOCOL 1.2: a line starting with `download_file ` is always that command.
    let usage = |problem| Err(LineError::DownloadUsage { problem });
    assert_eq!(ClientLine::parse("download_file"), usage("no file name"));
    assert_eq!(ClientLine::parse("download_file "), usage("no file name"));
    assert_eq!(ClientLine::parse("download_file  x"), usage("no file name"));
    assert_eq!(ClientLine::parse("download_file x 1 2 3 4"), usage("too many words"));
    assert_eq!(ClientLine::parse("download_file x 1 2 3 "), usage("too many words"));
    assert_eq!(ClientLine::parse("download_file x y z"), usage("part size is not a number"));
    let both = "an early flight needs both its part count and its rate";
    assert_eq!(ClientLine::parse("download_file x 12 "), usage(both));
    assert_eq!(ClientLine::parse("download_file x 12 400"), usage(both));
    let early = "the early flight's part count or rate is not a number";
    assert_eq!(ClientLine::parse("download_file x 12 400 "), usage(early));
    assert_eq!(ClientLine::parse("download_file x 12 -1 5"), usage(early));
    assert_eq!(ClientLine::parse("download_file x 12 7 1e6"), usage(early));
    assert_eq!(ClientLine::parse("download_file x abc"), usage("part size is not a number"));
    assert_eq!(ClientLine::parse("download_file x -5"), usage("part size is not a number"));
    assert_eq!(ClientLine::parse("download_file x +5"), usage("part size is not a number"));
    assert_eq!(ClientLine::parse("download_file x "), usage("part size is not a number"));
    let msg = ClientLine::parse("download_file").unwrap_err().to_string();
    assert_eq!(
        msg,
        "usage: download_file <file> [<part_size> [<first_parts> <first_rate>]] (no file name)"
    );
}

/// PROTOCOL 2.1, the early flight: what a server sends is bounded by the file, 1024 parts, 1 MiB
/// and the rate range, the same on both ends.
#[test]
fn an_early_flight_is_bounded_alike_on_both_ends() {
    let ask = |parts, rate| EarlyFlight { parts, rate };
    assert_eq!(ask(725, 50_000_000).bounded(725, 1446), Some(ask(725, 50_000_000)));
    assert_eq!(ask(725, 50_000_000).bounded(100, 1446), Some(ask(100, 50_000_000)));
    assert_eq!(ask(5000, 1).bounded(100_000, 512), Some(ask(1024, 125_000)));
    assert_eq!(ask(5000, u32::MAX).bounded(100_000, 1446), Some(ask(725, 125_000_000)));
    assert_eq!(ask(5000, 1_000_000).bounded(100_000, 65000), Some(ask(16, 1_000_000)));
    assert_eq!(ask(0, 1_000_000).bounded(100, 1446), None);
    assert_eq!(ask(10, 1_000_000).bounded(0, 1446), None);
    assert_eq!(ask(725, 1).requests(), 46);
    assert_eq!(ask(16, 1).requests(), 1);
    assert_eq!(ask(17, 1).requests(), 2);
}

#[test]
fn malformed_private() {
    let usage = |problem| Err(LineError::PrivateUsage { problem });
    assert_eq!(ClientLine::parse("~"), usage("no name"));
    assert_eq!(ClientLine::parse("~ hi"), usage("no name"));
    assert_eq!(ClientLine::parse("~alice"), usage("no text after the name"));
    assert_eq!(ClientLine::parse("~alice "), usage("no text after the name"));
    assert_eq!(
        ClientLine::parse("~alice  x"),
        Ok(ClientLine::Private { to: "alice".into(), text: " x".into() })
    );
}

#[test]
fn control_characters_are_refused() {
    // C4, S4, PROTOCOL 1.2: C0 but TAB, DEL, C1.
    for (line, code, at) in [
        ("a\0b", 0x00, 1),
        ("\u{1b}[2J", 0x1b, 0),
        ("x\ry", 0x0d, 1),
        ("del\u{7f}", 0x7f, 3),
        ("é\u{85}", 0x85, 2),
    ] {
        assert_eq!(ClientLine::parse(line), Err(LineError::ControlChar { code, at }), "{line:?}");
        assert!(ServerLine::parse(line).is_err());
    }
    assert_eq!(
        ClientLine::parse("~bob a\u{1b}").unwrap_err().to_string(),
        "control character U+001B at byte 6 is not allowed in a line"
    );
}

fn offer() -> UdpOffer {
    let mut blake3 = [0u8; 32];
    for (i, b) in blake3.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37);
    }
    UdpOffer {
        port: 55000,
        transfer_id: 0,
        file: "hello.c".into(),
        size: 1841,
        part_size: 1200,
        blake3,
        token: 0x5c1e_0f3a_9b2d_4e71,
        key: None,
    }
}

#[test]
fn server_lines_round_trip() {
    // PROTOCOL 1.3: every server line kind.
    let lines = [
        ServerLine::All(vec![]),
        ServerLine::All(vec!["bob".into(), "Zoë".into()]),
        ServerLine::ChooseFile(vec![]),
        ServerLine::ChooseFile(vec!["alice.jpg".into(), "hello.c".into()]),
        ServerLine::Udp(offer()),
        ServerLine::Udp(UdpOffer { token: 1, transfer_id: u64::MAX, size: 0, ..offer() }),
        ServerLine::Joined("bob".into()),
        ServerLine::Left("bob".into()),
        ServerLine::Public { from: "bob".into(), text: "hi: there".into() },
        ServerLine::Public { from: "bob".into(), text: "".into() },
        ServerLine::Private { from: "bob".into(), text: "psst".into() },
        ServerLine::PrivateEcho { to: "alice".into(), text: "hi alice".into() },
        ServerLine::Error("no such user: carol".into()),
    ];
    for line in lines {
        let wire = line.encode();
        assert_eq!(ServerLine::parse(strip_nl(&wire)), Ok(line.clone()), "{wire:?}");
    }
}

#[test]
fn udp_line_exact_bytes() {
    // PROTOCOL 2.1: 64 lowercase hex digest, 16 lowercase hex token (leading zeros kept).
    let o = UdpOffer { blake3: [0xab; 32], token: 0x1f, ..offer() };
    let wire = ServerLine::Udp(o).encode();
    assert_eq!(
        wire,
        format!("UDP 55000 0 hello.c 1841 1200 {} 000000000000001f\n", "ab".repeat(32))
    );
}

#[test]
fn malformed_server_lines() {
    let digest = "ab".repeat(32);
    for bad in [
        "UDP".to_owned(),
        "UDP 55000 0 hello.c 1841 1200".to_owned(),
        format!("UDP 70000 0 f 1 1200 {digest} 0000000000000001"),
        format!("UDP 55000 0 f 1 1200 {} 0000000000000001", "AB".repeat(32)),
        format!("UDP 55000 0 f 1 1200 {digest} 000000000000001"),
        format!("UDP 55000 0 f 1 1200 {digest} 0000000000000001 extra"),
        format!("UDP 55000 0  f 1 1200 {digest} 0000000000000001"),
        format!("UDP 55000 -1 f 1 1200 {digest} 0000000000000001"),
    ] {
        assert!(
            matches!(ServerLine::parse(&bad), Err(LineError::BadOffer { .. })),
            "{bad:?} -> {:?}",
            ServerLine::parse(&bad)
        );
    }
    for bad in [
        "",
        "hello",
        "bob has joined",
        "from me to x: (PRIVATE) y",
        "from you to x (PRIVATE) y",
        "from you to x: y",
        "ALL  bob",
        "ALL bob ",
        ": hi",
        "a b: hi",
    ] {
        assert!(ServerLine::parse(bad).is_err(), "{bad:?} -> {:?}", ServerLine::parse(bad));
    }
}

#[test]
fn public_text_that_looks_private_is_read_as_private() {
    // A documented ambiguity of PROTOCOL 1.3: the codec cannot tell them apart.
    let line = ServerLine::Public { from: "bob".into(), text: "(PRIVATE) gotcha".into() }.encode();
    assert!(matches!(ServerLine::parse(strip_nl(&line)), Ok(ServerLine::Private { .. })));
}
