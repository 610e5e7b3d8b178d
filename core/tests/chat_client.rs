//! ChatClient: server lines to events, typed text to lines, hostile offers refused (S3).

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use std::net::SocketAddr;
use std::time::Instant;

use natter_core::chat::catalogue::{Catalogue, FileEntry};
use natter_core::chat::client::{
    ChatClient, ChatInput, ChatOutput, ClientEvent, InputError, Offer, QUIT_GRACE, Sent,
};
use natter_core::chat::server::{ChatServer, ServerConfig, ServerInput, ServerOutput};
use natter_core::wire::chat::{ClientLine, LineError, UdpOffer};

fn outputs(client: &mut ChatClient) -> Vec<ChatOutput> {
    std::iter::from_fn(|| client.poll_output()).collect()
}

/// The events the server's `bytes` give (the name line a new client sends first is skipped).
fn events(client: &mut ChatClient, bytes: &[u8]) -> Vec<ClientEvent> {
    outputs(client);
    client.handle_input(Instant::now(), ChatInput::Received(bytes));
    outputs(client)
        .into_iter()
        .filter_map(|o| match o {
            ChatOutput::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// The line sent for `text`, or why none is.
fn line_for(client: &mut ChatClient, text: &str) -> Result<Vec<u8>, InputError> {
    outputs(client);
    client.handle_input(Instant::now(), ChatInput::Typed(text));
    match outputs(client).as_slice() {
        [ChatOutput::Send { bytes, .. }] => Ok(bytes.clone()),
        [ChatOutput::Invalid(err)] => Err(err.clone()),
        other => panic!("{text:?}: {other:?}"),
    }
}

/// The first output of a new client: its name line.
fn hello(client: &mut ChatClient) -> Vec<u8> {
    match client.poll_output() {
        Some(ChatOutput::Send { bytes, sent: Sent::Name(_) }) => bytes,
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_server_line_becomes_an_event() {
    // PROTOCOL 1.3
    let mut c = ChatClient::new("alice");
    assert_eq!(hello(&mut c), b"alice\n");
    let digest = "7d".repeat(32);
    let stream = format!(
        "alice has joined the chat!\r\nALL\nbob has joined the chat!\nALL bob\n\
         bob: hi all\nbob: (PRIVATE) psst\nfrom you to bob: (PRIVATE) yes\nCHOOSE_FILE alice.jpg hello.c\n\
         UDP 55000 0 hello.c 1841 1200 {digest} 5c1e0f3a9b2d4e71\nERROR no such user: carol\nbob left the chat...\n"
    );
    let got = events(&mut c, stream.as_bytes());
    assert!(c.is_joined());
    assert_eq!(
        got,
        vec![
            ClientEvent::Joined("alice".into()),
            ClientEvent::Presence(vec![]),
            ClientEvent::Joined("bob".into()),
            ClientEvent::Presence(vec!["bob".into()]),
            ClientEvent::Public { from: "bob".into(), text: "hi all".into() },
            ClientEvent::Private { from: "bob".into(), text: "psst".into() },
            ClientEvent::PrivateSent { to: "bob".into(), text: "yes".into() },
            ClientEvent::Files(vec!["alice.jpg".into(), "hello.c".into()]),
            ClientEvent::Offer(
                Offer::checked(UdpOffer {
                    port: 55000,
                    transfer_id: 0,
                    file: "hello.c".into(),
                    size: 1841,
                    part_size: 1200,
                    blake3: [0x7d; 32],
                    token: 0x5c1e_0f3a_9b2d_4e71,
                    key: None,
                })
                .expect("a safe offer")
            ),
            ClientEvent::Error("no such user: carol".into()),
            ClientEvent::Left("bob".into()),
        ]
    );
}

#[test]
fn byte_by_byte_gives_the_same_events() {
    // C3 on the client side.
    let stream = "bob: héllo 🎉\nALL bob\n".as_bytes();
    let mut whole = ChatClient::new("a");
    let expected = events(&mut whole, stream);
    let mut split = ChatClient::new("a");
    let mut got = Vec::new();
    for b in stream {
        got.extend(events(&mut split, &[*b]));
    }
    assert_eq!(got, expected);
}

#[test]
fn s3_hostile_offers_are_refused() {
    // S3: a hostile server offering names that escape Downloads/ or carry odd characters.
    let digest = "00".repeat(32);
    for file in [
        "../../.bashrc",
        ".bashrc",
        "a/b",
        "..\\x",
        "/etc/passwd",
        "x.part",
        "x.part.resume",
        "x.part.resume.tmp",
        &"n".repeat(256),
    ] {
        let mut c = ChatClient::new("alice");
        let line = format!("UDP 55000 0 {file} 10 1200 {digest} 0000000000000001\n");
        let got = events(&mut c, line.as_bytes());
        assert_eq!(got.len(), 1);
        assert!(
            matches!(&got[0], ClientEvent::OfferRefused(r) if r.starts_with("refused an offer")),
            "{file}: {got:?}"
        );
    }
    // control characters, U+2028 and a bidi override in the name: refused (as an unreadable line
    // or as an unsafe offer), and the reason is printable
    for file in ["evil\u{1b}[2J", "a\u{2028}b", "nbsp\u{a0}x", "txt.\u{202e}exe"] {
        let mut c = ChatClient::new("alice");
        let got = events(
            &mut c,
            format!("UDP 55000 0 {file} 10 1200 {digest} 0000000000000001\n").as_bytes(),
        );
        match &got[..] {
            [ClientEvent::Rejected(reason) | ClientEvent::OfferRefused(reason)] => {
                assert!(!reason.chars().any(|ch| ch.is_control() || ch == '\u{2028}'), "{reason:?}")
            }
            other => panic!("{file:?}: {other:?}"),
        }
    }
    let mut c = ChatClient::new("alice");
    let got =
        events(&mut c, format!("UDP 55000 0 ok.txt 10 0 {digest} 0000000000000001\n").as_bytes());
    assert!(matches!(&got[..], [ClientEvent::OfferRefused(_)]), "part size 0");
}

/// S4: what the server relays cannot disguise itself on a terminal: line separators and bidi
/// overrides in names and messages reach the UI as visible escapes.
#[test]
fn s4_events_are_safe_to_print() {
    let mut c = ChatClient::new("alice");
    let got = events(&mut c, "bob: look \u{202e}evil\u{202c} and \u{2028} next\n".as_bytes());
    match &got[..] {
        [ClientEvent::Public { from, text }] => {
            assert_eq!(from, "bob");
            assert_eq!(text, "look \\u{202e}evil\\u{202c} and \\u{2028} next");
        }
        other => panic!("{other:?}"),
    }
}

/// A large room's presence line is longer than the 4096 bytes a client may send; the client
/// still reads it (up to MAX_SERVER_LINE).
#[test]
fn long_server_lines_are_read() {
    let names: Vec<String> = (0..1000).map(|i| format!("user{i:028}")).collect();
    let line = format!("ALL {}\n", names.join(" "));
    assert!(line.len() > 30_000);
    let mut c = ChatClient::new("alice");
    let got = events(&mut c, line.as_bytes());
    assert_eq!(got, vec![ClientEvent::Presence(names)]);
}

#[test]
fn s3_unsafe_names_are_dropped_from_the_file_list() {
    let mut c = ChatClient::new("alice");
    let got = events(&mut c, b"CHOOSE_FILE ../x good.txt .hidden\n");
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[0], ClientEvent::Rejected(r) if r.contains("2 unsafe")));
    assert_eq!(got[1], ClientEvent::Files(vec!["good.txt".into()]));
}

#[test]
fn malformed_server_lines_are_rejected_not_fatal() {
    let mut c = ChatClient::new("alice");
    let mut bytes = b"gibberish\n\xff\n".to_vec();
    bytes.extend(vec![b'x'; 5000]);
    bytes.extend(b"\nbob: still fine\n");
    let got = events(&mut c, &bytes);
    assert_eq!(got.len(), 4);
    assert!(got[..3].iter().all(|e| matches!(e, ClientEvent::Rejected(_))));
    assert_eq!(got[3], ClientEvent::Public { from: "bob".into(), text: "still fine".into() });
}

#[test]
fn typed_text_to_lines() {
    // PROTOCOL 1.2: intents become canonical lines; mistakes are caught before sending.
    let mut c = ChatClient::new("alice");
    assert_eq!(line_for(&mut c, "hello").unwrap(), b"hello\n");
    assert_eq!(line_for(&mut c, "get list file").unwrap(), b"get_list_file\n");
    assert_eq!(
        line_for(&mut c, "download_file hello.c 60000").unwrap(),
        b"download_file hello.c 60000\n"
    );
    assert_eq!(line_for(&mut c, "~bob hi").unwrap(), b"~bob hi\n");
    assert_eq!(line_for(&mut c, "").unwrap(), b"\n");
    assert!(matches!(
        line_for(&mut c, "~bob"),
        Err(InputError::Line(LineError::PrivateUsage { .. }))
    ));
    assert!(matches!(
        line_for(&mut c, "download_file"),
        Err(InputError::Line(LineError::DownloadUsage { .. }))
    ));
    assert!(matches!(
        line_for(&mut c, "two\nlines"),
        Err(InputError::Line(LineError::ControlChar { code: 10, .. }))
    ));
    assert_eq!(line_for(&mut c, &"x".repeat(4097)), Err(InputError::TooLong));
    // Only what the server takes for {quit} is {quit}: with a space it is a public message.
    assert_eq!(line_for(&mut c, "{quit} ").unwrap(), b"{quit} \n");
    assert!(!c.is_quitting());
    assert_eq!(line_for(&mut c, "{quit}").unwrap(), b"{quit}\n");
    assert!(c.is_quitting());
}

/// PROTOCOL 1.2: after `{quit}` the server answers what came before and closes; the client waits
/// for that close at most QUIT_GRACE, reading on meanwhile, then closes itself.
#[test]
fn quit_waits_for_the_close_then_gives_up() {
    let t0 = Instant::now();
    let mut c = ChatClient::new("alice");
    outputs(&mut c);
    c.handle_input(t0, ChatInput::Received(b"alice has joined the chat!\n"));
    c.handle_input(t0, ChatInput::Typed("{quit}"));
    assert_eq!(c.poll_timeout(), Some(t0 + QUIT_GRACE));
    c.handle_input(t0, ChatInput::Typed("typed after quit"));
    c.handle_input(t0, ChatInput::Received(b"ALL\n"));
    c.handle_timeout(t0 + QUIT_GRACE / 2);
    let got = outputs(&mut c);
    assert!(
        matches!(
            &got[..],
            [
                _,
                ChatOutput::Send { sent: Sent::Line { line: ClientLine::Quit, .. }, .. },
                ChatOutput::Event(ClientEvent::Presence(_))
            ]
        ),
        "{got:?}"
    );
    c.handle_timeout(t0 + QUIT_GRACE);
    assert_eq!(outputs(&mut c), vec![ChatOutput::Over { quit: true }]);
    assert_eq!(c.poll_timeout(), None);

    // The server closing in time ends it the same way; a close nobody asked for says so.
    let mut c = ChatClient::new("bob");
    c.handle_input(t0, ChatInput::Closed);
    assert_eq!(outputs(&mut c).last(), Some(&ChatOutput::Over { quit: false }));
}

/// PROTOCOL 1.1: the server reads every line before the join as a name. A line typed while the
/// first name was still unanswered is the next try when that name is refused, and our join is the
/// join of the oldest name still unanswered.
#[test]
fn a_line_typed_before_the_refusal_is_the_next_name() {
    let mut c = ChatClient::new("WATCHER");
    assert_eq!(line_for(&mut c, "carol").unwrap(), b"carol\n");
    assert_eq!(line_for(&mut c, "hello").unwrap(), b"hello\n");
    let got = events(
        &mut c,
        b"ERROR name already taken: watcher\ncarol has joined the chat!\nALL watcher\ncarol: hello\n",
    );
    assert!(matches!(got[0], ClientEvent::NameRefused(_)));
    assert!(c.is_joined());
    assert_eq!(c.name(), "carol");
    assert!(!c.wants_name());
}

#[test]
fn client_and_server_in_memory() {
    // The two state machines talk to each other with no socket: PROTOCOL 3 from alice's side.
    let files = vec![FileEntry { name: "hello.c".into(), size: 1841, blake3: [9; 32] }];
    let mut server = ChatServer::new(ServerConfig::default(), Catalogue::from_entries(files), 1);
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut alice = ChatClient::new("alice");
    server.handle_input(now, ServerInput::Opened { conn: 1, peer });
    let mut got = Vec::new();
    let typed = ["", "get_list_file", "download_file hello.c 8000"];
    for (i, text) in typed.iter().enumerate() {
        let bytes = if i == 0 { hello(&mut alice) } else { line_for(&mut alice, text).unwrap() };
        server.handle_input(now, ServerInput::Received { conn: 1, bytes: &bytes });
        // Written at once, as a runtime reports it: the presence line follows its join line.
        while let Some(out) = server.poll_output() {
            let (conn, bytes) = match out {
                ServerOutput::Send { conn, bytes } => (conn, bytes),
                ServerOutput::SendToMany { conns, bytes } if conns == [1] => (1, bytes),
                ServerOutput::Presence { conn } => match server.take_presence(conn) {
                    Some(bytes) => (conn, bytes),
                    None => continue,
                },
                _ => continue,
            };
            got.extend(events(&mut alice, &bytes));
            server.handle_input(now, ServerInput::Sent { conn, len: bytes.len() });
        }
    }
    assert!(alice.is_joined());
    assert_eq!(got[2], ClientEvent::Files(vec!["hello.c".into()]));
    assert!(
        matches!(&got[3], ClientEvent::Offer(o) if o.file == "hello.c" && o.part_size == 8000 && o.blake3 == [9; 32])
    );
}

/// PROTOCOL 1.1: an ERROR before the join is a refused name; what is typed next is the next name,
/// and once joined, typed text is a message again.
#[test]
fn a_refused_name_is_followed_by_another() {
    let mut c = ChatClient::new("alice");
    assert_eq!(hello(&mut c), b"alice\n");
    let got = events(&mut c, b"ERROR name already taken: alice\n");
    assert_eq!(got, vec![ClientEvent::NameRefused("name already taken: alice".into())]);
    assert_eq!(line_for(&mut c, "alice2").unwrap(), b"alice2\n");
    assert_eq!(c.name(), "alice2");
    let got = events(&mut c, b"alice2 has joined the chat!\nERROR no such user: bob\n");
    assert!(c.is_joined());
    assert_eq!(got[1], ClientEvent::Error("no such user: bob".into()));
    assert_eq!(line_for(&mut c, "hello").unwrap(), b"hello\n");
}
