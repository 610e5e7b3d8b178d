//! Scripted chat sessions against `ChatServer` (PROTOCOL.md section 1 and 3).
//!
//! The snapshots are transcripts a person can read: `alice -> text` is what alice typed,
//! `alice <- text` is a line the server sent her, `[close] x` means the server closed x's socket,
//! `[udp] ...` is a transfer the runtime is told to start, `[log] ...` is the server's log line.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::{Catalogue, FileEntry};
use natter_core::chat::server::{
    CAP_WAIT, ChatServer, ConnId, DisconnectReason, LogEvent, ServerConfig, ServerInput,
    ServerOutput,
};

/// Drives one server with simulated time and clients that read everything at once (each `Send`
/// is acknowledged with `Sent` immediately) unless a client is marked as not reading.
struct Session {
    server: ChatServer,
    now: Instant,
    labels: BTreeMap<ConnId, String>,
    not_reading: Vec<ConnId>,
    next_conn: ConnId,
    transcript: String,
    show_logs: bool,
    /// Sends of a `SendToMany` not returned yet.
    expanded: VecDeque<ServerOutput>,
    /// Connections owed a presence line (taken once nothing else is left, if it can be).
    owed: Vec<ConnId>,
}

fn catalogue() -> Catalogue {
    Catalogue::from_entries(vec![
        FileEntry { name: "hello.c".into(), size: 1841, blake3: [0x7d; 32] },
        FileEntry { name: "alice.jpg".into(), size: 52_000, blake3: [0x11; 32] },
    ])
}

impl Session {
    fn new(config: ServerConfig) -> Self {
        Self {
            server: ChatServer::new(config, catalogue(), 7),
            now: Instant::now(),
            labels: BTreeMap::new(),
            not_reading: Vec::new(),
            next_conn: 1,
            transcript: String::new(),
            show_logs: false,
            expanded: VecDeque::new(),
            owed: Vec::new(),
        }
    }

    fn connect_from(&mut self, label: &str, ip: Ipv4Addr) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.labels.insert(conn, label.to_owned());
        let peer = SocketAddr::new(IpAddr::V4(ip), 50000 + conn as u16);
        self.server.handle_input(self.now, ServerInput::Opened { conn, peer });
        self.drain();
        conn
    }

    fn connect(&mut self, label: &str) -> ConnId {
        self.connect_from(label, Ipv4Addr::LOCALHOST)
    }

    /// Connects and sends the label as the name.
    fn join(&mut self, name: &str) -> ConnId {
        let conn = self.connect(name);
        self.say(conn, name);
        conn
    }

    fn say(&mut self, conn: ConnId, line: &str) {
        writeln!(self.transcript, "{} -> {}", self.labels[&conn], line.escape_debug()).unwrap();
        self.raw(conn, format!("{line}\n").as_bytes());
    }

    fn raw(&mut self, conn: ConnId, bytes: &[u8]) {
        self.server.handle_input(self.now, ServerInput::Received { conn, bytes });
        self.drain();
    }

    fn hang_up(&mut self, conn: ConnId) {
        writeln!(self.transcript, "{} hangs up", self.labels[&conn]).unwrap();
        self.server.handle_input(self.now, ServerInput::Closed { conn });
        self.drain();
    }

    fn note(&mut self, text: &str) {
        writeln!(self.transcript, "# {text}").unwrap();
    }

    /// Lets `time` pass, with the server's timers run as a runtime would run them.
    fn pass(&mut self, time: Duration) {
        writeln!(self.transcript, "# {} ms pass", time.as_millis()).unwrap();
        let end = self.now + time;
        while let Some(at) = self.server.poll_timeout().filter(|&at| at <= end) {
            self.now = self.now.max(at);
            self.server.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    /// The next output, with a line to many as one `Send` each; when there is none, an owed
    /// presence line is taken as a runtime would when it writes (PROTOCOL 1.1), as a `Send`.
    fn next_output(&mut self) -> Option<ServerOutput> {
        loop {
            if let Some(output) = self.expanded.pop_front() {
                return Some(output);
            }
            match self.server.poll_output() {
                Some(ServerOutput::SendToMany { conns, bytes }) => {
                    let sends = conns.into_iter().map(|conn| (conn, bytes.clone()));
                    let sends = sends.map(|(conn, bytes)| ServerOutput::Send { conn, bytes });
                    self.expanded.extend(sends);
                }
                Some(ServerOutput::Presence { conn }) => self.owed.push(conn),
                Some(output) => return Some(output),
                None => {
                    let i = self.owed.iter().position(|&c| self.server.presence_ready(c))?;
                    let conn = self.owed.remove(i);
                    let bytes = self.server.take_presence(conn)?;
                    return Some(ServerOutput::Send { conn, bytes });
                }
            }
        }
    }

    /// Polls every output, writing it to the transcript; returns them too.
    fn drain(&mut self) -> Vec<ServerOutput> {
        let mut all = Vec::new();
        while let Some(output) = self.next_output() {
            match &output {
                ServerOutput::Send { conn, bytes } => {
                    let text = String::from_utf8(bytes.to_vec()).unwrap();
                    for line in text.lines() {
                        writeln!(self.transcript, "{} <- {}", self.labels[conn], line).unwrap();
                    }
                    if !self.not_reading.contains(conn) {
                        let (conn, len) = (*conn, bytes.len());
                        self.server.handle_input(self.now, ServerInput::Sent { conn, len });
                    }
                }
                ServerOutput::Close { conn } => {
                    writeln!(self.transcript, "[close] {}", self.labels[conn]).unwrap();
                }
                ServerOutput::EndTransfer { port } => {
                    writeln!(self.transcript, "[udp] end the transfer on port {port}").unwrap();
                }
                ServerOutput::PauseReading { conn } => {
                    writeln!(self.transcript, "[pause reading] {}", self.labels[conn]).unwrap();
                }
                ServerOutput::ResumeReading { conn } => {
                    writeln!(self.transcript, "[resume reading] {}", self.labels[conn]).unwrap();
                }
                ServerOutput::StartTransfer(o) => writeln!(
                    self.transcript,
                    "[udp] start port {} id {} {} for {} ({} bytes, parts of {}, from {})",
                    o.port,
                    o.transfer_id,
                    o.file,
                    self.labels[&o.conn],
                    o.size,
                    o.part_size,
                    o.peer_ip
                )
                .unwrap(),
                ServerOutput::Log(event) => {
                    if self.show_logs {
                        writeln!(self.transcript, "[log] {event}").unwrap();
                    }
                }
                ServerOutput::Cluster(command) => {
                    writeln!(self.transcript, "[cluster] {command:?}").unwrap();
                }
                ServerOutput::SendToMany { .. } | ServerOutput::Presence { .. } => {
                    unreachable!("next_output expands these")
                }
            }
            all.push(output);
        }
        all
    }
}

#[test]
fn protocol_example_section_3() {
    // PROTOCOL 3, the whole example.
    let mut s = Session::new(ServerConfig::default());
    s.show_logs = true;
    let alice = s.join("alice");
    let bob = s.join("bob");
    s.say(bob, "~alice hi alice");
    s.say(alice, "get_list_file");
    s.say(alice, "download_file hello.c");
    s.note("the runtime reports the UDP transfer finished");
    s.server.handle_input(s.now, ServerInput::TransferEnded { port: 55000 });
    s.say(bob, "{quit}");
    insta::assert_snapshot!("protocol_example", s.transcript);
}

#[test]
fn joins_and_leaves() {
    // PROTOCOL 1.1, 1.2 ({quit} and a socket closed without it leave the same way), 1.3
    let mut s = Session::new(ServerConfig::default());
    let alice = s.join("alice");
    let bob = s.join("bob");
    let carol = s.join("Carol");
    s.say(alice, "hello everyone");
    s.say(carol, "show");
    s.say(bob, "{quit}");
    s.hang_up(carol);
    s.join("dave");
    s.say(alice, "");
    s.say(alice, "show");
    insta::assert_snapshot!("joins_and_leaves", s.transcript);
}

#[test]
fn every_error_of_section_1_2() {
    // C1, C4, S1, U9 and PROTOCOL 1.1, 1.2: every ERROR, each leaves the connection open.
    let config = ServerConfig {
        udp_ports: 55000..=55001,
        max_transfers_per_client: 1,
        ..Default::default()
    };
    let mut s = Session::new(config);
    let alice = s.join("alice");
    let x = s.connect("bob");
    s.note("name errors, then a good name on the same connection");
    for bad in
        ["", "a name", &"n".repeat(33), "ALL", "Show", "ALICE", "\u{430}lice", "bad\u{1b}name"]
    {
        s.say(x, bad);
    }
    s.say(x, "bob");
    s.note("command errors");
    s.say(x, "~carol hello?");
    s.say(x, "~alice");
    s.say(x, "~alice ");
    s.say(x, "~");
    s.say(x, "download_file");
    s.say(x, "download_file a b c");
    s.say(x, "download_file hello.c big");
    s.say(x, "download_file ../hello.c");
    s.say(x, "bell\u{7}");
    s.say(x, "cr\rin the middle");
    s.note("a 4097-byte line, then invalid UTF-8");
    s.raw(x, format!("{}\n", "z".repeat(4097)).as_bytes());
    s.raw(x, b"caf\xe9\n");
    s.note("transfer limits: one per client, two ports in all");
    s.say(x, "download_file hello.c 100");
    s.say(x, "download_file alice.jpg");
    s.note("bob's second line waits for his transfer to end, then is refused");
    s.pass(CAP_WAIT);
    s.say(alice, "download_file alice.jpg 99999");
    let carol = s.join("carol");
    s.say(carol, "download_file hello.c");
    s.note("bob's transfer ends, which frees port 55000");
    s.server.handle_input(s.now, ServerInput::TransferEnded { port: 55000 });
    s.say(carol, "download_file hello.c");
    s.say(x, "still here");
    insta::assert_snapshot!("every_error", s.transcript);
}

/// PROTOCOL 2.1 (issue 11): a download line that comes while its client holds its whole cap
/// (its FINISHED overtaken by the line, or lost) waits for one of that client's transfers to end,
/// and the lines behind it wait with it; when one ends, it gets its offer. A line for a file not
/// on offer does not wait.
#[test]
fn a_download_line_at_the_cap_waits_for_a_transfer_to_end() {
    let config = ServerConfig { max_transfers_per_client: 1, ..ServerConfig::default() };
    let mut s = Session::new(config);
    let bob = s.join("bob");
    let carol = s.join("carol");
    s.say(bob, "download_file hello.c");
    s.say(carol, "download_file hello.c");
    s.say(bob, "download_file nothing.txt");
    s.note("at the cap: the next line waits, and the public line behind it too");
    s.say(bob, "download_file alice.jpg");
    s.say(bob, "after the download line");
    s.note("carol's transfer ends: not bob's, so his line still waits");
    s.server.handle_input(s.now, ServerInput::TransferEnded { port: 55001 });
    s.drain();
    s.pass(CAP_WAIT / 2);
    s.note("bob's transfer ends: the waiting line is answered, then the next one is read");
    s.server.handle_input(s.now, ServerInput::TransferEnded { port: 55000 });
    s.drain();
    s.note("the wait ran out with nothing held any more: no second answer");
    s.pass(CAP_WAIT);
    insta::assert_snapshot!("download_line_waits_at_cap", s.transcript);
}

/// The same line gets its refusal when no transfer of its client ends within [`CAP_WAIT`], and
/// a client that hangs up while its line waits leaves nothing behind.
#[test]
fn a_download_line_at_the_cap_is_refused_when_no_transfer_ends() {
    let config = ServerConfig { max_transfers_per_client: 1, ..ServerConfig::default() };
    let mut s = Session::new(config);
    let bob = s.join("bob");
    s.say(bob, "download_file hello.c");
    s.say(bob, "download_file alice.jpg");
    s.say(bob, "after the download line");
    s.pass(CAP_WAIT - Duration::from_millis(1));
    s.note("nothing yet; then the last millisecond");
    s.pass(Duration::from_millis(1));
    let carol = s.join("carol");
    s.say(carol, "download_file alice.jpg");
    s.say(carol, "download_file hello.c");
    s.hang_up(carol);
    assert_eq!(s.server.poll_timeout(), None, "a hung-up connection's line keeps no timer");
    insta::assert_snapshot!("download_line_refused_at_cap", s.transcript);
}

/// With a cap of 0 no transfer of the client can end, so its line is refused at once, unheld.
#[test]
fn a_cap_of_zero_refuses_at_once() {
    let config = ServerConfig { max_transfers_per_client: 0, ..ServerConfig::default() };
    let mut s = Session::new(config);
    let bob = s.join("bob");
    s.say(bob, "download_file hello.c");
    s.say(bob, "after the download line");
    let tail = s.transcript.split("bob -> download_file hello.c\n").nth(1).unwrap().to_owned();
    assert_eq!(
        tail,
        "bob <- ERROR too many transfers: at most 0 at once\nbob -> after the download line\n\
         bob <- bob: after the download line\n"
    );
    assert_eq!(s.server.poll_timeout(), None);
}

#[test]
fn u9_one_address_cannot_hold_every_transfer_port() {
    // U9, PROTOCOL 2.1 (issue 10): six connections from one IP asking for four downloads each
    // took all 16 ports and the next host got `server busy`. Transfers are now counted per
    // address too: that IP stops at 8 and a client from another address is still served.
    let mut s = Session::new(ServerConfig::default());
    let mut greedy = Vec::new();
    for i in 0..6 {
        let name = format!("g{i}");
        let conn = s.connect_from(&name, Ipv4Addr::LOCALHOST);
        s.say(conn, &name);
        greedy.push(conn);
    }
    for &conn in &greedy {
        for _ in 0..4 {
            s.say(conn, "download_file hello.c");
        }
    }
    let other = s.connect_from("other", Ipv4Addr::new(127, 0, 0, 2));
    s.say(other, "other");
    s.say(other, "download_file hello.c");
    let offers = s.transcript.lines().filter(|l| l.contains("<- UDP ")).count();
    let refused = s.transcript.matches("too many transfers from your address: at most 8").count();
    assert_eq!((offers, refused), (9, 16), "{}", s.transcript);
    assert!(!s.transcript.contains("server busy"), "{}", s.transcript);
    let last = s.transcript.lines().rfind(|l| l.starts_with("other <- ")).unwrap();
    assert!(last.starts_with("other <- UDP 55008 "), "{last}");
}

#[test]
fn quit_in_the_middle_of_a_private_exchange() {
    // PROTOCOL 1.2: private messages ignore case; to oneself both copies; after a quit the name is free.
    let mut s = Session::new(ServerConfig::default());
    let alice = s.join("alice");
    let bob = s.join("Bob");
    s.say(alice, "~bob are you there?");
    s.say(bob, "~ALICE yes: (PRIVATE) looks odd but is fine");
    s.say(bob, "~bob note to self");
    s.say(alice, "~Bob I need to tell you");
    s.say(bob, "{quit}");
    s.say(alice, "~bob ...something");
    s.join("bob");
    insta::assert_snapshot!("quit_mid_private", s.transcript);
}

#[test]
fn large_room_sends_no_presence_to_everyone() {
    // PROTOCOL 1.1: above the room limit only the newcomer gets a presence line.
    let mut s = Session::new(ServerConfig { presence_room_limit: 2, ..Default::default() });
    let alice = s.join("alice");
    s.join("bob");
    s.join("carol");
    s.say(alice, "show");
    s.say(alice, "{quit}");
    insta::assert_snapshot!("large_room", s.transcript);
}

fn sends_to(outputs: &[ServerOutput], to: ConnId) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::Send { conn, bytes } if *conn == to => {
                Some(String::from_utf8(bytes.to_vec()).unwrap())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn c2_same_name_at_the_same_moment() {
    // C2: both lines are handled in one go; exactly one joins.
    let mut s = Session::new(ServerConfig::default());
    let a = s.connect("first");
    let b = s.connect("second");
    s.server.handle_input(s.now, ServerInput::Received { conn: a, bytes: b"sam\n" });
    s.server.handle_input(s.now, ServerInput::Received { conn: b, bytes: b"SAM\n" });
    let out = s.drain();
    assert_eq!(sends_to(&out, b), vec!["ERROR name already taken: sam\n"]);
    assert_eq!(s.server.joined_count(), 1);
}

#[test]
fn c4_megabyte_without_newline_then_a_normal_line() {
    // C4: one ERROR for the whole over-long line, memory bounded, connection still open.
    let mut s = Session::new(ServerConfig::default());
    let a = s.join("alice");
    let chunk = vec![b'x'; 64 * 1024];
    let mut errors = 0;
    for _ in 0..16 {
        s.server.handle_input(s.now, ServerInput::Received { conn: a, bytes: &chunk });
        errors += sends_to(&s.drain(), a).len();
    }
    s.server.handle_input(s.now, ServerInput::Received { conn: a, bytes: b"\nhi\n" });
    let out = sends_to(&s.drain(), a);
    assert_eq!(errors, 0);
    assert_eq!(out, vec!["ERROR line too long: at most 4096 bytes\n", "alice: hi\n"]);
}

#[test]
fn c5_a_client_that_never_reads_is_closed() {
    // C5: the non-reader's queue passes the bound, it is closed with a logged reason; others
    // keep chatting and their queues stay empty.
    let config = ServerConfig {
        max_queued_bytes: 64 * 1024,
        presence_defer_bytes: 1024,
        ..Default::default()
    };
    let mut s = Session::new(config);
    let lazy = s.join("lazy");
    s.not_reading.push(lazy);
    let talkers: Vec<ConnId> = ["a", "b", "c"].iter().map(|n| s.join(n)).collect();
    let text = "y".repeat(1000);
    let mut closed_logs = Vec::new();
    let mut closes = 0;
    for round in 0..100 {
        let who = talkers[round % talkers.len()];
        s.server.handle_input(
            s.now,
            ServerInput::Received { conn: who, bytes: format!("{text}\n").as_bytes() },
        );
        for o in s.drain() {
            match o {
                ServerOutput::Close { conn } => {
                    assert_eq!(conn, lazy);
                    closes += 1;
                }
                ServerOutput::Log(LogEvent::Disconnected { reason, name, .. }) => {
                    closed_logs.push((name, reason))
                }
                _ => {}
            }
        }
        assert!(s.server.queued_bytes(lazy) <= 64 * 1024);
        for t in &talkers {
            assert_eq!(s.server.queued_bytes(*t), 0);
        }
    }
    assert_eq!(closes, 1);
    assert_eq!(closed_logs.len(), 1);
    let (name, reason) = &closed_logs[0];
    assert_eq!(name.as_deref(), Some("lazy"));
    assert!(matches!(reason, DisconnectReason::SlowReader { queued } if *queued > 60 * 1024));
    assert_eq!(s.server.joined_count(), 3);
}

#[test]
fn presence_line_not_yet_sent_is_replaced() {
    // PROTOCOL 1.1: two joins handled before anything is written: alice gets both joined
    // lines but one presence line, made when written. Bob's own first line is made at his
    // join (the room as he found it), then one update for carol.
    let mut s = Session::new(ServerConfig::default());
    let alice = s.join("alice");
    let bob = s.connect("bob");
    let carol = s.connect("carol");
    s.server.handle_input(s.now, ServerInput::Received { conn: bob, bytes: b"bob\n" });
    s.server.handle_input(s.now, ServerInput::Received { conn: carol, bytes: b"carol\n" });
    let out = s.drain();
    assert_eq!(
        sends_to(&out, alice),
        vec!["bob has joined the chat!\n", "carol has joined the chat!\n", "ALL bob carol\n"]
    );
    assert_eq!(
        sends_to(&out, bob),
        vec![
            "bob has joined the chat!\n",
            "ALL alice\n",
            "carol has joined the chat!\n",
            "ALL alice carol\n"
        ]
    );
    assert_eq!(s.server.queued_bytes(alice), 0, "every line made was written and counted");
}

#[test]
fn backed_up_client_gets_one_fresh_presence_line_later() {
    // PROTOCOL 1.1 with a slow socket: presence lines are held, coalesced, sent when it drains.
    let config = ServerConfig { presence_defer_bytes: 100, ..Default::default() };
    let mut s = Session::new(config);
    let slow = s.join("slow");
    s.not_reading.push(slow);
    let talker = s.join("talker");
    s.say(talker, &"w".repeat(200));
    let mut names = Vec::new();
    for i in 0..5 {
        names.push(s.join(&format!("p{i}")));
    }
    let queued = s.server.queued_bytes(slow);
    assert!(
        s.transcript.lines().filter(|l| l.starts_with("slow <- ALL")).count() == 2,
        "{}",
        s.transcript
    );
    s.transcript.clear();
    s.server.handle_input(s.now, ServerInput::Sent { conn: slow, len: queued });
    s.drain();
    assert_eq!(s.transcript, "slow <- ALL talker p0 p1 p2 p3 p4\n");
}

#[test]
fn c7_name_timeout_closes_once() {
    // C7: a connection that never sends a name is closed at the deadline, announced once.
    let config = ServerConfig { name_timeout: Duration::from_secs(5), ..Default::default() };
    let mut s = Session::new(config);
    s.show_logs = true;
    let start = s.now;
    let silent = s.connect("silent");
    s.say(silent, "");
    let alice = s.join("alice");
    assert_eq!(s.server.poll_timeout(), Some(start + Duration::from_secs(5)));
    s.now += Duration::from_secs(4);
    s.server.handle_timeout(s.now);
    assert!(s.drain().is_empty());
    s.now += Duration::from_secs(1);
    s.server.handle_timeout(s.now);
    s.drain();
    assert_eq!(s.server.poll_timeout(), None);
    s.hang_up(silent);
    s.hang_up(alice);
    s.hang_up(alice);
    insta::assert_snapshot!("name_timeout", s.transcript);
}

#[test]
fn c8_connection_limits() {
    // C8: over the global or per-IP maximum: one ERROR line, then close.
    let config = ServerConfig { max_connections: 3, max_per_ip: 2, ..Default::default() };
    let mut s = Session::new(config);
    s.show_logs = true;
    s.connect_from("a1", Ipv4Addr::new(10, 0, 0, 1));
    s.connect_from("a2", Ipv4Addr::new(10, 0, 0, 1));
    s.connect_from("a3", Ipv4Addr::new(10, 0, 0, 1));
    let b1 = s.connect_from("b1", Ipv4Addr::new(10, 0, 0, 2));
    s.connect_from("b2", Ipv4Addr::new(10, 0, 0, 2));
    s.hang_up(b1);
    s.connect_from("b3", Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(s.server.connection_count(), 3);
    insta::assert_snapshot!("connection_limits", s.transcript);
}

#[test]
fn s1_hostile_file_names_are_unknown_keys() {
    // S1: every hostile name gets `ERROR no such file`, nothing is started, control chars never echoed.
    let mut s = Session::new(ServerConfig::default());
    let a = s.join("alice");
    let long = "n".repeat(4000); // the longest that fits a line; 10,000 is refused as too long below
    let hostile = [
        "..",
        "../x",
        "../hello.c",
        "/etc/passwd",
        "\\..\\",
        "%2e%2e%2f",
        "\u{2215}etc\u{2215}passwd",
        "\u{ff0f}etc",
        "hello.c\u{2028}",
        "./hello.c",
        "HELLO.C",
        long.as_str(),
    ];
    for name in hostile {
        s.server.handle_input(
            s.now,
            ServerInput::Received { conn: a, bytes: format!("download_file {name}\n").as_bytes() },
        );
        let out = s.drain();
        assert!(!out.iter().any(|o| matches!(o, ServerOutput::StartTransfer(_))), "{name}");
        let sent = sends_to(&out, a);
        assert_eq!(sent.len(), 1, "{name}");
        assert!(sent[0].starts_with("ERROR no such file: "), "{}", sent[0]);
        assert!(sent[0].len() < 200, "the echo is truncated");
        assert!(!sent[0].trim_end_matches('\n').chars().any(|c| c.is_control() || c == '\u{2028}'));
    }
    let huge = format!("download_file {}\n", "n".repeat(10_000));
    s.server.handle_input(s.now, ServerInput::Received { conn: a, bytes: huge.as_bytes() });
    assert_eq!(sends_to(&s.drain(), a), vec!["ERROR line too long: at most 4096 bytes\n"]);
    s.server.handle_input(s.now, ServerInput::Received { conn: a, bytes: b"download_file a\0b\n" });
    let sent = sends_to(&s.drain(), a);
    assert_eq!(sent, vec!["ERROR control character U+0000 at byte 15 is not allowed in a line\n"]);
}

#[test]
fn s4_log_lines_cannot_be_forged() {
    // S4: peers and names are the only untrusted parts of logs; names cannot hold odd characters
    // and file names in logs are escaped.
    let peer: SocketAddr = "127.0.0.1:52418".parse().unwrap();
    let connected = LogEvent::Connected { conn: 1, peer };
    assert_eq!(connected.to_string(), "[CONNECTION] ('127.0.0.1', 52418) connected to the server");
    let gone = LogEvent::Disconnected {
        conn: 1,
        peer,
        name: Some("alice".into()),
        reason: DisconnectReason::Quit,
    };
    assert_eq!(gone.to_string(), "[DISCONNECTED] alice disconnected");
    let forged = LogEvent::TransferOffered {
        conn: 1,
        port: 55000,
        transfer_id: 3,
        file: "a\n[CONNECTION] x\u{2028}".into(),
        early_parts: Some(725),
    };
    let text = forged.to_string();
    assert!(!text.contains('\n') && !text.contains('\u{2028}'), "{text}");
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    assert_eq!(
        LogEvent::Connected { conn: 2, peer: v6 }.to_string(),
        "[CONNECTION] ('::1', 9) connected to the server"
    );
}

#[test]
fn public_fan_out_shares_one_buffer() {
    // ARCHITECTURE: a public line is encoded once; every recipient gets the same allocation.
    let mut s = Session::new(ServerConfig::default());
    let a = s.join("alice");
    for n in ["b", "c", "d"] {
        s.join(n);
    }
    s.server.handle_input(s.now, ServerInput::Received { conn: a, bytes: b"hi all\n" });
    let ptrs: Vec<*const u8> = s
        .drain()
        .iter()
        .filter_map(|o| match o {
            ServerOutput::Send { bytes, .. } => Some(bytes.as_ptr()),
            _ => None,
        })
        .collect();
    assert_eq!(ptrs.len(), 4);
    assert!(ptrs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn big_room_costs_linear_outputs_per_change() {
    // PROTOCOL 1.1: with 300 people and the default limit of 100, a join costs O(room) sends.
    let mut s = Session::new(ServerConfig { max_per_ip: 1000, ..Default::default() });
    for i in 0..300 {
        s.join(&format!("u{i}"));
    }
    s.transcript.clear();
    let c = s.connect("late");
    s.server.handle_input(s.now, ServerInput::Received { conn: c, bytes: b"late\n" });
    let sends = s.drain().iter().filter(|o| matches!(o, ServerOutput::Send { .. })).count();
    assert_eq!(sends, 301 + 1, "joined line to everyone, one presence line to the newcomer");
}

#[test]
fn tokens_and_ids_follow_the_offer_rules() {
    // PROTOCOL 2.1: ids count from 0, first free port, part size clamped, fresh tokens.
    let mut s = Session::new(ServerConfig::default());
    let a = s.join("alice");
    let mut offers = Vec::new();
    for req in ["download_file hello.c", "download_file hello.c 1", "download_file alice.jpg 70000"]
    {
        s.server.handle_input(
            s.now,
            ServerInput::Received { conn: a, bytes: format!("{req}\n").as_bytes() },
        );
        let out = s.drain();
        let start = out.iter().position(|o| matches!(o, ServerOutput::StartTransfer(_))).unwrap();
        let send = out.iter().position(|o| matches!(o, ServerOutput::Send { .. })).unwrap();
        assert!(start < send, "StartTransfer comes before the UDP line");
        if let ServerOutput::StartTransfer(o) = &out[start] {
            offers.push(o.clone());
        }
    }
    let summary: Vec<_> = offers.iter().map(|o| (o.transfer_id, o.port, o.part_size)).collect();
    assert_eq!(summary, [(0, 55000, 1200), (1, 55001, 512), (2, 55002, 65000)]);
    assert_ne!(offers[0].token, offers[1].token);
    assert_eq!(offers[0].peer_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn p1_random_input_soup_never_panics_and_keeps_invariants() {
    // P1 (light, seeded): random opens, closes, acks and lines built from protocol fragments.
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let fragments: [&[u8]; 16] = [
        b"alice",
        b"ALICE",
        b"\xd0\xb0lice",
        b"show",
        b"get list file",
        b"download_file hello.c",
        b"download_file ",
        b"~alice ",
        b"~",
        b"{quit}",
        b"\r",
        b"\n",
        b"\xff",
        b"\x1b",
        b" 700",
        b"x",
    ];
    for seed in 0..20u64 {
        let config = ServerConfig {
            max_connections: 6,
            max_queued_bytes: 4096,
            presence_defer_bytes: 512,
            udp_ports: 55000..=55002,
            ..Default::default()
        };
        let mut server = ChatServer::new(config, catalogue(), seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut now = Instant::now();
        let mut live: Vec<ConnId> = Vec::new();
        let mut next: ConnId = 1;
        for _ in 0..2000 {
            match rng.random_range(0..10) {
                0 => {
                    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1000);
                    server.handle_input(now, ServerInput::Opened { conn: next, peer });
                    live.push(next);
                    next += 1;
                }
                1 if !live.is_empty() => {
                    let conn = live.swap_remove(rng.random_range(0..live.len()));
                    server.handle_input(now, ServerInput::Closed { conn });
                }
                2 => server.handle_input(
                    now,
                    ServerInput::TransferEnded { port: rng.random_range(54999..55004) },
                ),
                3 => {
                    now += Duration::from_secs(rng.random_range(0..40));
                    server.handle_timeout(now);
                }
                _ if !live.is_empty() => {
                    let conn = live[rng.random_range(0..live.len())];
                    let mut bytes = Vec::new();
                    for _ in 0..rng.random_range(1..6) {
                        bytes.extend_from_slice(fragments[rng.random_range(0..fragments.len())]);
                    }
                    server.handle_input(now, ServerInput::Received { conn, bytes: &bytes });
                }
                _ => {}
            }
            while let Some(out) = server.poll_output() {
                if let ServerOutput::Send { conn, bytes } = out {
                    assert!(bytes.len() <= 4097 && bytes.ends_with(b"\n"));
                    if rng.random_bool(0.7) {
                        server.handle_input(now, ServerInput::Sent { conn, len: bytes.len() });
                    }
                }
            }
            assert!(server.joined_count() <= server.connection_count());
            assert!(server.connection_count() <= 6);
            for conn in &live {
                assert!(server.queued_bytes(*conn) <= 4096, "seed {seed}");
            }
        }
    }
}
