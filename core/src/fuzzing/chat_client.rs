//! The chat client under a hostile server and a careless person (P1, S3, S4; PROTOCOL 1.2, 1.3,
//! 2.1).

use std::time::{Duration, Instant};

use crate::chat::client::{
    ChatClient, ChatInput, ChatOutput, ClientEvent, QUIT_GRACE, Sent, is_safe_file_name,
};
use crate::chat::display::is_display_unsafe;
use crate::wire::chat::{ClientLine, ServerLine, UdpOffer};
use crate::wire::line::MAX_LINE;

use super::input::Choices;

/// Lines a person types, so the fuzzer reaches every command without guessing its spelling.
const TYPED: [&str; 10] = [
    "show",
    "get_list_file",
    "get list file",
    "{quit}",
    "download_file hello.c",
    "download_file hello.c 512",
    "download_file ../x 99999999999",
    "~bob hi",
    "",
    "hello everyone",
];

/// The client's name in every session.
const NAME: &str = "fuzz";

/// Random server bytes, well-formed server lines (our own join, offers with any numbers and any
/// file name, errors, lists), typed lines, closes and time, chosen by the fuzzer's bytes.
/// Invariants: no panic; every line sent is one line within the limit and, for a command, the
/// canonical form of what was typed; every event is safe to print (S4); every offer that reaches
/// the runtime has a safe file name and possible numbers (S3); the conversation ends once and is
/// silent afterwards; the `{quit}` timer runs only while quitting.
pub fn chat_client_session(data: &[u8], start: Instant) {
    let mut c = Choices::new(data);
    let mut client = ChatClient::new(NAME);
    let mut now = start;
    let mut over = false;
    let mut joined = false;
    drain(&mut client, &mut over);
    while !c.is_empty() {
        let op = c.byte();
        match op % 8 {
            0..=2 => client.handle_input(now, ChatInput::Received(c.chunk())),
            3 => {
                let typed = c.text();
                client.handle_input(now, ChatInput::Typed(&typed));
            }
            4 => {
                let typed = c.pick(&TYPED);
                client.handle_input(now, ChatInput::Typed(typed));
            }
            5 => {
                now += Duration::from_millis(u64::from(op >> 3) * 100);
                if client.poll_timeout().is_some_and(|at| at <= now) {
                    client.handle_timeout(now);
                }
            }
            6 if op >> 3 == 0 => client.handle_input(now, ChatInput::Closed),
            _ => {
                let line = server_line(&mut c, client.name());
                client.handle_input(now, ChatInput::Received(line.as_bytes()));
            }
        }
        drain(&mut client, &mut over);
        assert!(!joined || client.is_joined(), "the client forgot that it joined");
        joined = client.is_joined();
        assert_eq!(client.is_over(), over, "is_over disagrees with the Over output");
        if let Some(at) = client.poll_timeout() {
            assert!(client.is_quitting() && !over, "a quit timer while not quitting");
            assert!(at <= now + QUIT_GRACE, "the quit timer is further than its grace");
        }
    }
}

/// A well-formed server line with fields from the fuzzer, the kind chosen by its next byte.
pub(crate) fn server_line(c: &mut Choices<'_>, own_name: &str) -> String {
    let line = match c.byte() % 6 {
        0 => ServerLine::Joined(own_name.to_owned()),
        1 => ServerLine::Error(c.text()),
        2 => ServerLine::Udp(offer(c, None)),
        3 => ServerLine::ChooseFile(c.text().split(' ').map(str::to_owned).collect()),
        4 => ServerLine::All(c.text().split(' ').map(str::to_owned).collect()),
        _ => ServerLine::Public { from: own_name.to_owned(), text: c.text() },
    };
    line.encode()
}

/// An offer with every field from the fuzzer; the file name from it too unless given.
pub(crate) fn offer(c: &mut Choices<'_>, file: Option<&str>) -> UdpOffer {
    let mut blake3 = [0u8; 32];
    blake3[..8].copy_from_slice(&c.u64().to_be_bytes());
    UdpOffer {
        port: c.u16(),
        transfer_id: c.u64(),
        file: match file {
            Some(f) => f.to_owned(),
            // A name must be one word for the line to parse at all.
            None => c.text().replace(' ', "_"),
        },
        size: c.u64(),
        part_size: c.u16(),
        blake3,
        token: c.u64(),
        key: None,
    }
}

fn drain(client: &mut ChatClient, over: &mut bool) {
    while let Some(output) = client.poll_output() {
        assert!(!*over, "output after the conversation was over: {output:?}");
        match output {
            ChatOutput::Send { bytes, sent } => check_sent(&bytes, &sent),
            ChatOutput::Event(event) => check_event(&event),
            ChatOutput::Invalid(_) => {}
            ChatOutput::Over { .. } => *over = true,
        }
    }
}

/// A line the client writes is one line within the limit; a command is sent in canonical form.
pub(crate) fn check_one_line(bytes: &[u8]) {
    assert!(bytes.len() <= MAX_LINE + 1, "sent a line of {} bytes", bytes.len());
    assert_eq!(bytes.iter().position(|&b| b == b'\n'), Some(bytes.len() - 1), "not one line");
}

fn check_sent(bytes: &[u8], sent: &Sent) {
    check_one_line(bytes);
    match sent {
        Sent::Name(name) => assert_eq!(bytes, format!("{name}\n").as_bytes()),
        Sent::Line { line, .. } => {
            assert_eq!(bytes, line.encode().as_bytes());
            let body = std::str::from_utf8(&bytes[..bytes.len() - 1]).ok();
            assert_eq!(body.map(ClientLine::parse), Some(Ok(line.clone())), "not canonical");
        }
    }
}

/// Text shown to a person holds nothing that moves a terminal's cursor or reorders text (S4).
pub(crate) fn check_printable(text: &str) {
    assert!(!text.chars().any(is_display_unsafe), "unsafe to print: {text:?}");
}

/// Every string in an event is safe to print, and an offer that gets through is safe to act on.
pub(crate) fn check_event(event: &ClientEvent) {
    match event {
        ClientEvent::Joined(s)
        | ClientEvent::Left(s)
        | ClientEvent::Error(s)
        | ClientEvent::NameRefused(s)
        | ClientEvent::OfferRefused(s)
        | ClientEvent::Rejected(s) => check_printable(s),
        ClientEvent::Presence(names) => names.iter().for_each(|n| check_printable(n)),
        ClientEvent::Files(files) => {
            for f in files {
                assert!(is_safe_file_name(f), "listed an unsafe file name: {f:?}");
            }
        }
        ClientEvent::Public { from, text } | ClientEvent::Private { from, text } => {
            check_printable(from);
            check_printable(text);
        }
        ClientEvent::PrivateSent { to, text } => {
            check_printable(to);
            check_printable(text);
        }
        ClientEvent::Offer(offer) => {
            assert!(is_safe_file_name(&offer.file), "offer of an unsafe name: {:?}", offer.file);
            assert!(offer.part_size > 0 && offer.port > 0, "offer with impossible numbers");
        }
    }
}
