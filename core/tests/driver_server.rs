//! Scripted sessions against `ServerDriver`: the policies the runtimes used to decide each on
//! their own (outboxes, the close grace, read pauses, the accept back-off, serving a transfer
//! port) as transcripts a person can read.
//!
//! `alice -> text` is what alice sent, `alice <- text` what the runtime wrote to her socket,
//! `[out] ...` any other output the runtime is asked to perform, `[udp] ...` a datagram taken
//! with `poll_transmit`.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::{Catalogue, FileEntry, FileKey};
use natter_core::chat::server::{ConnId, ServerConfig};
use natter_core::driver::server::{
    ACCEPT_RETRY, CLOSE_GRACE, GATHER_SLICE, Input, MAX_TURN_GATHER, Output, QUIET_BEFORE_RELEASE,
    SATURATED_GATHER, SPARE_TAILS_KEPT, ServerDriver, TURN_GATHER, TURN_QUEUE_BYTES, gather_sleeps,
};
use natter_core::transfer::endpoint::Transmit;
use natter_core::wire::datagram::{self, Datagram};

const TOKEN_SEED: u64 = 7;

/// A driver with simulated time and sockets that take everything written to them, unless a
/// connection is marked as not reading (then its writes stay owed).
struct Script {
    driver: ServerDriver,
    now: Instant,
    labels: BTreeMap<ConnId, String>,
    not_reading: Vec<ConnId>,
    next_conn: ConnId,
    transcript: String,
    /// Ports the runtime is serving, as the runtime sees them (after `Serve`).
    serving: BTreeMap<u16, String>,
    /// Every line each connection received, in order.
    received: BTreeMap<ConnId, String>,
    /// Where every PART went, in order.
    sent_to: Vec<SocketAddr>,
}

fn identity(size: u64) -> FileKey {
    FileKey { size, mtime_secs: 1, mtime_nanos: 0, inode: size }
}

impl Script {
    fn new(config: ServerConfig) -> Self {
        let catalogue = Catalogue::from_entries(vec![FileEntry {
            name: "hello.c".into(),
            size: 3000,
            blake3: [0x7d; 32],
        }]);
        let mut identities = HashMap::new();
        identities.insert("hello.c".to_owned(), identity(3000));
        let now = Instant::now();
        let mut driver = ServerDriver::new(config, catalogue.clone(), TOKEN_SEED);
        driver.handle_input(now, Input::Folder { catalogue: &catalogue, identities: &identities });
        Self {
            driver,
            now,
            labels: BTreeMap::new(),
            not_reading: Vec::new(),
            next_conn: 1,
            transcript: String::new(),
            serving: BTreeMap::new(),
            received: BTreeMap::new(),
            sent_to: Vec::new(),
        }
    }

    fn note(&mut self, text: &str) {
        writeln!(self.transcript, "# {text}").unwrap();
    }

    fn connect(&mut self, label: &str) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.labels.insert(conn, label.to_owned());
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + conn as u16);
        self.driver.handle_input(self.now, Input::Accepted { conn, peer });
        self.drain();
        conn
    }

    fn send(&mut self, conn: ConnId, line: &str) {
        writeln!(self.transcript, "{} -> {line}", self.labels[&conn]).unwrap();
        let bytes = format!("{line}\n");
        self.driver.handle_input(self.now, Input::Received { conn, bytes: bytes.as_bytes() });
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        writeln!(self.transcript, "[time] +{by:?}").unwrap();
        if self.driver.poll_timeout().is_some_and(|at| at <= self.now) {
            self.driver.handle_timeout(self.now);
        }
        self.drain();
    }

    /// Writes everything owed to `conn` as a socket that takes it all would.
    fn write_all(&mut self, conn: ConnId) {
        while self.driver.has_unsent(conn) {
            let owed: Vec<Vec<u8>> = self.driver.unsent(conn).map(<[u8]>::to_vec).collect();
            let len = owed.iter().map(Vec::len).sum();
            for bytes in owed {
                let text = String::from_utf8(bytes).unwrap();
                self.received.entry(conn).or_default().push_str(&text);
                for line in text.lines() {
                    writeln!(self.transcript, "{} <- {line}", self.labels[&conn]).unwrap();
                }
            }
            self.driver.handle_input(self.now, Input::Written { conn, len });
        }
    }

    fn start_reading(&mut self, conn: ConnId) {
        self.not_reading.retain(|&c| c != conn);
        writeln!(self.transcript, "[{} reads again]", self.labels[&conn]).unwrap();
        self.write_all(conn);
        self.drain();
    }

    /// Performs every output the way a runtime would, writing it down.
    fn drain(&mut self) {
        while let Some(output) = self.driver.poll_output() {
            match output {
                Output::Write { conn } => {
                    if !self.not_reading.contains(&conn) {
                        self.write_all(conn);
                    }
                }
                Output::Close { conn } => {
                    writeln!(self.transcript, "[out] close {}", self.labels[&conn]).unwrap();
                }
                Output::PauseReading { conn } => {
                    writeln!(self.transcript, "[out] pause reading {}", self.labels[&conn])
                        .unwrap();
                }
                Output::ResumeReading { conn } => {
                    writeln!(self.transcript, "[out] resume reading {}", self.labels[&conn])
                        .unwrap();
                }
                Output::AcceptAgain => writeln!(self.transcript, "[out] accept again").unwrap(),
                Output::ReleaseMemory => {
                    writeln!(self.transcript, "[out] release free memory").unwrap();
                }
                Output::Cluster(command) => {
                    writeln!(self.transcript, "[out] cluster {command:?}").unwrap();
                }
                Output::Serve { port, file, identity, part_size, .. } => {
                    writeln!(
                        self.transcript,
                        "[out] serve {file} on port {port} (parts of {part_size}, identity known: {})",
                        identity.is_some()
                    )
                    .unwrap();
                    self.serving.insert(port, file);
                }
                Output::CheckFile { port } => {
                    writeln!(self.transcript, "[out] check the file on port {port}").unwrap();
                }
                Output::Transmit { port } => {
                    while let Some(t) = self.driver.poll_transmit(self.now, port) {
                        if let Transmit::Part(o) = &t {
                            self.sent_to.push(o.to);
                        }
                        let line = match t {
                            Transmit::Part(o) => format!(
                                "part {} ({} bytes at {}) for request {}",
                                o.part, o.len, o.offset, o.req_seq
                            ),
                            Transmit::Datagram { bytes, .. } => match datagram::parse(&bytes) {
                                Ok(Datagram::Abort(a)) => format!("ABORT {} {}", a.code, a.reason),
                                other => format!("{other:?}"),
                            },
                        };
                        writeln!(self.transcript, "[udp] port {port}: {line}").unwrap();
                    }
                }
                Output::StopServing { port } => {
                    writeln!(self.transcript, "[out] stop serving port {port}").unwrap();
                    self.serving.remove(&port);
                }
                Output::Log(event) => writeln!(self.transcript, "[log] {event}").unwrap(),
            }
        }
    }

    fn datagram(&mut self, port: u16, from_port: u16, bytes: &[u8]) {
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), from_port);
        self.driver.handle_input(self.now, Input::Datagram { port, from, bytes });
        self.drain();
    }

    /// A REQUEST for `ranges` of the transfer `token`, from the client's port 50000 to the
    /// server's 55000.
    fn request(&mut self, token: u64, req_seq: u32, ranges: &[(u32, u32)]) {
        let mut buf = [0u8; 64];
        let n = datagram::encode_request(token, req_seq, ranges, &mut buf);
        self.datagram(55000, 50000, &buf[..n]);
    }
}

fn config() -> ServerConfig {
    ServerConfig { udp_ports: 55000..=55001, ..ServerConfig::default() }
}

/// [`config`] with room for a big room from one address.
fn crowd_config() -> ServerConfig {
    ServerConfig { max_connections: 1000, max_per_ip: 1000, ..config() }
}

/// The token of the first offer a driver seeded with TOKEN_SEED makes, read off its UDP line.
fn offered_token(received: &str) -> u64 {
    let line = received.lines().find(|l| l.starts_with("UDP ")).unwrap();
    token_of(line)
}

/// The token of an offer line: its last field, in hex (PROTOCOL 2.1).
fn token_of(line: &str) -> u64 {
    u64::from_str_radix(line.rsplit(' ').next().unwrap(), 16).unwrap()
}

#[test]
fn chat_through_the_driver() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    let bob = s.connect("bob");
    s.send(alice, "alice");
    s.send(bob, "bob");
    s.send(alice, "hello bob");
    s.send(bob, "~alice hi");
    s.send(bob, "{quit}");
    assert_eq!(s.driver.open_connections(), 1);
    insta::assert_snapshot!(s.transcript);
}

#[test]
fn a_closed_connection_gets_what_was_queued_within_the_grace() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    let bob = s.connect("bob");
    s.send(alice, "alice");
    s.send(bob, "bob");
    s.note("bob stops reading; alice talks; bob quits: his socket stays until his replies are out");
    s.not_reading.push(bob);
    s.send(alice, "are you there?");
    s.send(bob, "{quit}");
    assert_eq!(s.driver.open_connections(), 2, "bob is owed lines");
    s.advance(CLOSE_GRACE / 2);
    s.start_reading(bob);
    assert_eq!(s.driver.open_connections(), 1, "closed once written");
    assert!(s.received[&bob].ends_with("alice: are you there?\n"));

    s.note("carol quits without reading at all: after the grace her socket is closed anyway");
    let carol = s.connect("carol");
    s.send(carol, "carol");
    s.not_reading.push(carol);
    s.send(alice, "bye carol");
    s.send(carol, "{quit}");
    s.advance(CLOSE_GRACE - Duration::from_millis(1));
    assert_eq!(s.driver.open_connections(), 2);
    s.advance(Duration::from_millis(1));
    assert_eq!(s.driver.open_connections(), 1);
    assert!(!s.driver.has_unsent(carol), "what was owed is dropped with her");
    insta::assert_snapshot!(s.transcript);
}

#[test]
fn a_peer_that_goes_away_is_closed_once() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    let bob = s.connect("bob");
    s.send(alice, "alice");
    s.send(bob, "bob");
    s.note("bob's socket reports an end twice (a read and a failed write)");
    s.driver.handle_input(s.now, Input::PeerClosed { conn: bob });
    s.driver.handle_input(s.now, Input::PeerClosed { conn: bob });
    s.drain();
    let closes = s.transcript.matches("[out] close bob").count();
    assert_eq!(closes, 1);
    assert_eq!(s.received[&alice].matches("bob left the chat").count(), 1);
}

#[test]
fn accept_is_tried_again_after_the_back_off() {
    let mut s = Script::new(config());
    s.driver.handle_input(s.now, Input::AcceptFailed);
    s.driver.handle_input(s.now, Input::AcceptFailed);
    s.drain();
    assert_eq!(s.driver.poll_timeout(), Some(s.now + ACCEPT_RETRY));
    s.advance(ACCEPT_RETRY - Duration::from_millis(1));
    assert!(!s.transcript.contains("accept again"));
    s.advance(Duration::from_millis(1));
    assert_eq!(s.transcript.matches("[out] accept again").count(), 1);
    // The failed accepts were activity: a quarter second after them, memory may go back.
    assert_eq!(s.driver.poll_timeout(), Some(s.now - ACCEPT_RETRY + QUIET_BEFORE_RELEASE));
    s.advance(QUIET_BEFORE_RELEASE - ACCEPT_RETRY);
    assert_eq!(s.transcript.matches("[out] release free memory").count(), 1);
    assert_eq!(s.driver.poll_timeout(), None, "an idle server sleeps");
}

#[test]
fn a_flooder_is_paused_then_resumed() {
    let mut s =
        Script::new(ServerConfig { max_input_rate: 10_000, input_burst: 10_000, ..config() });
    let flood = s.connect("flood");
    let calm = s.connect("calm");
    s.send(flood, "flood");
    s.send(calm, "calm");
    let line = "x".repeat(999);
    let text = format!("{line}\n").repeat(20);
    s.driver.handle_input(s.now, Input::Received { conn: flood, bytes: text.as_bytes() });
    s.drain();
    assert_eq!(s.transcript.matches("[out] pause reading flood").count(), 1);
    assert!(!s.transcript.contains("pause reading calm"));
    // The next timers: the quiet moment to release memory, then the resume.
    while !s.transcript.contains("resume reading flood") {
        let next = s.driver.poll_timeout().unwrap();
        s.advance(next - s.now);
    }
    assert_eq!(s.transcript.matches("[out] resume reading flood").count(), 1);
    assert_eq!(s.received[&calm].matches("flood: x").count(), 20);
}

/// PROTOCOL 2.1, the early flight: asked for in the `download_file` line, the file's three parts
/// go out with the offer, before any datagram came, to the chat connection's own address and as
/// early request 0. A REQUEST from another port of the same host then locks the peer there.
#[test]
fn an_early_flight_leaves_with_the_offer_to_the_chat_address() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.send(alice, "download_file hello.c 1200 100 1000000");
    let chat = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40001);
    assert_eq!(s.sent_to, vec![chat; 3], "{}", s.transcript);
    let token = offered_token(&s.received[&alice]);
    s.request(token, 1, &[(2, 2)]);
    assert_eq!(s.sent_to.last(), Some(&SocketAddr::new(chat.ip(), 50000)));
    insta::assert_snapshot!(s.transcript);
}

/// `natter server --no-early-flights`: a line that asks for an early flight gets its offer
/// alone, and the parts wait for the client's REQUEST, whose `req_seq` may start at 0 again.
#[test]
fn a_server_without_early_flights_sends_nothing_before_a_request() {
    let mut s = Script::new(ServerConfig { early_flights: false, ..config() });
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.send(alice, "download_file hello.c 1200 100 1000000");
    assert!(s.sent_to.is_empty(), "{}", s.transcript);
    assert!(!s.transcript.contains("early flight"), "{}", s.transcript);
    let token = offered_token(&s.received[&alice]);
    s.request(token, 0, &[(0, 0)]);
    assert_eq!(s.sent_to.len(), 1);
}

#[test]
fn a_download_is_served_then_the_port_is_free_again() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.send(alice, "download_file hello.c 1200");
    let token = offered_token(&s.received[&alice]);
    let mut buf = [0u8; 64];
    s.request(token, 0, &[(0, 2)]);
    s.note("the same request again is not answered twice");
    s.request(token, 0, &[(0, 2)]);
    let n = datagram::encode_finished(token, &mut buf);
    s.datagram(55000, 50000, &buf[..n]);
    assert!(s.serving.is_empty());
    s.note("the port is free for the next offer");
    s.send(alice, "download_file hello.c 1200");
    assert!(s.received[&alice].lines().filter(|l| l.starts_with("UDP 55000 ")).count() == 2);
    insta::assert_snapshot!(s.transcript);
}

#[test]
fn a_changed_file_aborts_and_a_silent_client_times_out() {
    let mut s =
        Script::new(ServerConfig { transfer_idle_timeout: Duration::from_secs(10), ..config() });
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.send(alice, "download_file hello.c 1200");
    s.send(alice, "download_file hello.c 1200");
    let text = s.received[&alice].clone();
    let mut offers = text.lines().filter(|l| l.starts_with("UDP "));
    let first = token_of(offers.next().unwrap());
    s.request(first, 0, &[(0, 0)]);
    s.note("the runtime finds the file changed on port 55000 (U7)");
    s.driver.handle_input(s.now, Input::FileChanged { port: 55000 });
    s.drain();
    s.note("nobody ever asks on port 55001 (U8)");
    s.advance(Duration::from_secs(10));
    assert!(s.serving.is_empty());
    assert_eq!(s.driver.transfers(), 0);
    insta::assert_snapshot!(s.transcript);
}

#[test]
fn an_unusable_port_is_never_offered() {
    let mut s = Script::new(config());
    s.driver.handle_input(s.now, Input::PortUnavailable { port: 55000 });
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.send(alice, "download_file hello.c");
    s.send(alice, "download_file hello.c");
    let text = &s.received[&alice];
    assert!(text.contains("UDP 55001 "));
    assert!(!text.contains("UDP 55000 "));
    assert!(text.contains("ERROR server busy"));
}

/// Issue 10: a client that leaves takes its transfers with it; its ports do not wait for the
/// idle timeout (before, one host could hold every port by asking and leaving).
#[test]
fn a_client_that_leaves_frees_its_ports_at_once() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.send(alice, "download_file hello.c 1200");
    s.send(alice, "download_file hello.c 1200");
    assert_eq!(s.serving.len(), 2);
    s.send(alice, "{quit}");
    assert!(s.serving.is_empty(), "both ports stopped: {:?}", s.serving);
    assert_eq!(s.driver.transfers(), 0);
    assert_eq!(s.transcript.matches("the client left the chat").count(), 2);
    let bob = s.connect("bob");
    s.send(bob, "bob");
    s.send(bob, "download_file hello.c 1200");
    s.send(bob, "download_file hello.c 1200");
    let text = &s.received[&bob];
    assert!(text.contains("UDP 55000 ") && text.contains("UDP 55001 "), "{text}");
}

/// Issue 10, PROTOCOL 2.6: a client whose download socket is known gets ABORT 4 when its chat
/// connection ends (it may still be running, behind a chat connection a NAT dropped), and the
/// port is free once that is handed out.
#[test]
fn a_client_that_leaves_mid_download_is_told_with_abort_4() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.send(alice, "download_file hello.c 1200");
    let token = offered_token(&s.received[&alice]);
    s.request(token, 0, &[(0, 0)]);
    s.note("alice's chat connection ends mid-download");
    s.driver.handle_input(s.now, Input::PeerClosed { conn: alice });
    s.drain();
    assert!(s.serving.is_empty(), "{:?}", s.serving);
    assert_eq!(s.driver.transfers(), 0);
    assert!(s.transcript.contains("ABORT the chat connection ended (code 4)"), "{}", s.transcript);
    insta::assert_snapshot!(s.transcript);
}

/// A room of `n` joined people, everything owed written; their ids.
fn room(s: &mut Script, n: usize) -> Vec<ConnId> {
    let people: Vec<ConnId> = (0..n).map(|i| s.connect(&format!("p{i}"))).collect();
    for (i, &p) in people.iter().enumerate() {
        s.send(p, &format!("p{i}"));
    }
    people
}

/// Issue 12, PROTOCOL 4 rule 8: reading stops once a turn has queued TURN_QUEUE_BYTES, and the
/// count starts again once the runtime has written and ends the turn.
#[test]
fn a_turn_stops_reading_once_it_has_queued_its_share() {
    let mut s = Script::new(ServerConfig { max_queued_bytes: 64 << 20, ..config() });
    let people = room(&mut s, 50);
    s.driver.end_turn(s.now);
    let line = format!("{}\n", "x".repeat(1000));
    let mut lines = 0;
    while !s.driver.turn_is_full() {
        let bytes = line.as_bytes();
        s.driver.handle_input(s.now, Input::Received { conn: people[lines % 50], bytes });
        lines += 1;
        assert!(lines < 1000, "the turn never filled");
    }
    // Each line goes to 50 people with the sender's name in front ("p7: ", "p42: "): the turn
    // filled with the line that took it past TURN_QUEUE_BYTES, not before, not later.
    let (least, most) = (50 * (line.len() + 4), 50 * (line.len() + 5));
    assert!(lines * most >= TURN_QUEUE_BYTES && (lines - 1) * least < TURN_QUEUE_BYTES, "{lines}");
    s.drain();
    assert!(s.driver.turn_is_full(), "until the runtime says the turn's writes are done");
    s.driver.end_turn(s.now);
    assert!(!s.driver.turn_is_full(), "a new turn");
}

/// Issue 12, PROTOCOL 4 rule 8: a turn's lines to the room reach each reader as one slice of one
/// buffer shared by all, and a private line between them comes in its place.
#[test]
fn a_turn_of_room_lines_is_one_shared_slice_with_private_lines_in_place() {
    let mut s = Script::new(config());
    let people = room(&mut s, 5);
    s.not_reading.extend(people.iter().copied());
    s.send(people[0], "first");
    s.send(people[1], "~p2 just for you");
    s.send(people[3], "second");
    let p4: Vec<&[u8]> = s.driver.unsent(people[4]).collect();
    assert_eq!(p4, [b"p0: first\np3: second\n".as_slice()], "one slice");
    let p4 = p4[0].as_ptr();
    let p0: Vec<&[u8]> = s.driver.unsent(people[0]).collect();
    assert_eq!(p0[0].as_ptr(), p4, "the same bytes, not a copy");
    s.start_reading(people[2]);
    let p2 = &s.received[&people[2]];
    assert!(p2.ends_with("p0: first\np1: (PRIVATE) just for you\np3: second\n"), "{p2}");
}

/// Issue 12: a reader that goes away while it is owed room lines (runs of the shared feed) takes
/// nothing from the others: they get every line, in order, and the lines after.
#[test]
fn a_reader_that_leaves_owed_room_lines_takes_nothing_from_the_others() {
    let mut s = Script::new(config());
    let people = room(&mut s, 3);
    s.not_reading.extend([people[1], people[2]]);
    s.send(people[0], "one");
    s.driver.handle_input(s.now, Input::PeerClosed { conn: people[2] });
    s.drain();
    s.send(people[0], "two");
    s.start_reading(people[1]);
    let p1 = &s.received[&people[1]];
    assert!(p1.ends_with("p0: one\np2 left the chat...\np0: two\nALL p0\n"), "{p1:?}");
}

const FIVE_MS: Duration = Duration::from_millis(5);

/// Reads a turn's `lines` as a runtime does: nobody in `people` is written to until the turn
/// ends ([`write_turn`]).
fn read_turn(
    s: &mut Script,
    people: &[ConnId],
    lines: impl IntoIterator<Item = (ConnId, impl AsRef<str>)>,
) {
    s.not_reading = people.to_vec();
    for (who, line) in lines {
        s.send(who, line.as_ref());
    }
}

/// Ends a turn as a runtime does, `after` its first line: everything owed to `people` written in
/// one go, then the end.
fn write_turn(s: &mut Script, people: &[ConnId], after: Duration) {
    s.now += after;
    s.not_reading.clear();
    for &p in people {
        s.write_all(p);
    }
    s.driver.end_turn(s.now);
}

/// `count` lines of about 60 bytes, from `people` in turn: twenty fill a kilobyte.
fn crowd(people: &[ConnId], count: usize) -> Vec<(ConnId, String)> {
    (0..count)
        .map(|i| {
            (
                people[i % people.len()],
                format!("line {i} of a crowd, long enough that twenty fill a kilobyte"),
            )
        })
        .collect()
}

/// Issue 12, PROTOCOL 4 rule 8: a busy server (a crowd: many lines to each reader a turn) waits a
/// little before a turn whose writes would be thin, until they are worth making; a quiet one (one
/// person speaking at a time, a few lines a turn, a small room, a pause between turns) never does.
#[test]
fn a_busy_server_gathers_before_a_thin_turn_and_a_quiet_one_never_waits() {
    let mut s = Script::new(config());
    let people = room(&mut s, 40);
    s.driver.end_turn(s.now);
    // A line alone, long enough (over 1 KiB to each) that only its being alone says no crowd.
    s.send(people[0], &"y".repeat(1100));
    s.driver.end_turn(s.now);
    s.send(people[2], "and one more");
    assert_eq!(s.driver.turn_gather(s.now), None, "after a turn of one line alone, even to 40");
    s.driver.end_turn(s.now);
    assert_eq!(s.driver.turn_gather(s.now), None, "nothing read yet, no wait");
    // Turns a millisecond apart: a server with time to spare between them.
    let ms = Duration::from_millis(1);
    s.now += ms;
    read_turn(&mut s, &people, [(people[0], "hello everyone"), (people[1], "hi")]);
    write_turn(&mut s, &people, FIVE_MS);
    s.now += ms;
    s.send(people[2], "and one more");
    assert_eq!(s.driver.turn_gather(s.now), None, "two short lines a turn are no crowd");
    write_turn(&mut s, &people, FIVE_MS);
    s.now += ms;
    read_turn(&mut s, &people, [(people[0], "hello everyone"), (people[1], "hi")]);
    write_turn(&mut s, &people, Duration::ZERO);
    s.now += ms;
    s.send(people[2], "and one more");
    assert_eq!(s.driver.turn_gather(s.now), None, "nor two at once, soon after the last turn");
    // The same two, turn after turn with no time between: the server has none to spare, and
    // reads on briefly (SATURATED_GATHER), but it is no crowd.
    write_turn(&mut s, &people, Duration::ZERO);
    read_turn(&mut s, &people, [(people[0], "hello everyone"), (people[1], "hi")]);
    write_turn(&mut s, &people, Duration::ZERO);
    s.send(people[2], "and one more");
    assert_eq!(s.driver.turn_gather(s.now), Some(SATURATED_GATHER), "no time between turns");
    assert!(!s.driver.write_coalesces(8 << 10), "no crowd");
    write_turn(&mut s, &people, FIVE_MS);
    // A crowd: twenty lines to each of 40 readers in 5 ms, over 1 KiB for each.
    read_turn(&mut s, &people, crowd(&people, 20));
    write_turn(&mut s, &people, FIVE_MS);
    // A turn that read nothing (a socket had room again) says nothing of the pace.
    s.now += Duration::from_millis(1);
    s.driver.end_turn(s.now);
    s.not_reading = people.clone();
    s.send(people[2], "and one more");
    assert_eq!(s.driver.turn_gather(s.now), Some(TURN_GATHER));
    assert!(!s.driver.turn_is_worth_writing(), "a few short lines to each: gather on");
    let later = s.now + Duration::from_millis(20);
    assert_eq!(s.driver.turn_gather(later), None, "a pause of 20 ms: no gather");
    let long = "x".repeat(1000);
    for sent in 0.. {
        if s.driver.turn_is_worth_writing() {
            break;
        }
        assert!(sent < 20, "lines of 1000 bytes soon make the writes worth it");
        s.send(people[3], &long);
    }
    assert_eq!(s.driver.turn_gather(s.now), None, "a turn worth writing is written at once");
    let mut quiet = Script::new(config());
    let few = room(&mut quiet, 3);
    quiet.driver.end_turn(quiet.now);
    read_turn(&mut quiet, &few, crowd(&few, 20));
    write_turn(&mut quiet, &few, FIVE_MS);
    quiet.send(few[2], "hello");
    assert_eq!(quiet.driver.turn_gather(quiet.now), None, "a small room");
}

/// Issue 12, PROTOCOL 4 rule 8: a busy room's gathers, of milliseconds, are slept through in
/// slices; a saturated small room's short one waits on its sockets, so that lines join the turn
/// as they come.
#[test]
fn a_busy_rooms_gather_sleeps_and_a_saturated_ones_does_not() {
    for gather in [TURN_GATHER, Duration::from_millis(10), MAX_TURN_GATHER, GATHER_SLICE] {
        assert!(gather_sleeps(gather), "{gather:?}");
    }
    assert!(!gather_sleeps(SATURATED_GATHER));
    assert!(!gather_sleeps(GATHER_SLICE - Duration::from_nanos(1)));
    assert!(SATURATED_GATHER < GATHER_SLICE && GATHER_SLICE < TURN_GATHER);
}

/// Issue 12, PROTOCOL 4 rule 8: a crowd in a bigger room gathers longer (40 us for each reader a
/// turn writes to, from 5 ms up to 20 ms); a crowd's writes of 1 KiB or more may wait for the
/// reader's acknowledgement, while a small write in the same turn, and every write after a pause,
/// leave at once.
#[test]
fn a_bigger_crowd_gathers_longer_and_only_its_stream_coalesces() {
    let kib = 1 << 10;
    for (readers, wait) in
        [(40, TURN_GATHER), (250, Duration::from_millis(10)), (600, MAX_TURN_GATHER)]
    {
        let mut s = Script::new(crowd_config());
        let people = room(&mut s, readers);
        s.driver.end_turn(s.now);
        s.send(people[1], "hello");
        assert!(!s.driver.write_coalesces(kib), "{readers}: the join's turn was no crowd");
        write_turn(&mut s, &people, Duration::ZERO);
        read_turn(&mut s, &people, crowd(&people, 20));
        write_turn(&mut s, &people, FIVE_MS);
        s.not_reading = people.clone();
        s.send(people[2], "and one more");
        assert_eq!(s.driver.turn_gather(s.now), Some(wait), "{readers} readers");
        assert!(s.driver.write_coalesces(kib), "{readers}: a stream's write may wait");
        assert!(!s.driver.write_coalesces(kib - 1), "{readers}: a small write does not");
        // A line after a pause: the same verdict of the last turn, but no longer a crowd.
        write_turn(&mut s, &people, Duration::ZERO);
        s.now += Duration::from_millis(20);
        read_turn(&mut s, &people, [(people[0], "hello")]);
        assert!(!s.driver.write_coalesces(kib), "{readers}: after a pause, at once");
        write_turn(&mut s, &people, Duration::ZERO);
    }
}

/// Issue 12, PROTOCOL 4 rule 8: a small room that keeps the server from ever waiting (each turn
/// starts as the last one's writes end) is read on for 200 us; the same room with time to spare
/// between turns, a turn after a pause, or a conversation of a few, is written at once.
#[test]
fn a_small_room_that_saturates_the_server_is_read_on_briefly() {
    let us = Duration::from_micros;
    for (readers, gap, pause, wait) in [
        (10, us(10), us(10), Some(SATURATED_GATHER)),
        (10, us(500), us(500), None),
        (10, us(10), us(1000), None),
        (4, us(10), us(10), None),
    ] {
        let mut s = Script::new(config());
        let people = room(&mut s, readers);
        s.driver.end_turn(s.now);
        for turn in 0..3 {
            s.now += gap;
            read_turn(&mut s, &people, crowd(&people, 3));
            assert!(!s.driver.write_coalesces(1 << 10), "{readers}, turn {turn}: no crowd");
            write_turn(&mut s, &people, us(80));
        }
        s.now += pause;
        s.not_reading = people.clone();
        s.send(people[1], "and one more");
        let case = format!("{readers} readers, {gap:?} between turns, then {pause:?}");
        assert_eq!(s.driver.turn_gather(s.now), wait, "{case}");
    }
}

/// Issue 12, PROTOCOL 4 rule 8: a lone line to a big room, turn after turn, is a crowd too when
/// the writes alone come at 200,000 a second (a turn's writes over the wait before it), and stays
/// one across a gathered turn; turns 5 ms apart, or a room of 100, are not.
#[test]
fn lone_lines_to_a_big_room_in_quick_turns_are_gathered() {
    /// A turn that starts `wait` after the last one ended, reads a line from each of `who`, and
    /// is written `length` after it started.
    fn turn(s: &mut Script, people: &[ConnId], wait: Duration, length: Duration, who: &[ConnId]) {
        s.now += wait;
        read_turn(s, people, who.iter().map(|&p| (p, "a line alone")));
        write_turn(s, people, length);
    }
    let ms = Duration::from_millis;
    let mut s = Script::new(crowd_config());
    let people = room(&mut s, 250);
    turn(&mut s, &people, ms(0), ms(1), &people[..1]);
    turn(&mut s, &people, ms(1), ms(1), &people[1..2]);
    s.now += ms(1);
    s.send(people[2], "and one more");
    let ten_ms = Some(ms(10)); // 250 writes a turn: 40 us each
    assert_eq!(s.driver.turn_gather(s.now), ten_ms, "250 writes after 1 ms");
    assert!(!s.driver.write_coalesces(1 << 10), "busy by its writes alone: a line now and then");
    s.driver.end_turn(s.now); // the check's line, written at once: a turn of its own
    // That turn gathered (5 ms here) and got three lines; the next comes 1 ms after it.
    turn(&mut s, &people, ms(0), ms(5), &people[3..5]);
    s.now += ms(1);
    s.send(people[5], "and one more");
    assert_eq!(s.driver.turn_gather(s.now), ten_ms, "a gathered turn stays a crowd");
    write_turn(&mut s, &people, ms(0));
    turn(&mut s, &people, ms(5), ms(0), &people[6..7]);
    s.now += ms(5);
    s.send(people[7], "and one more");
    assert_eq!(s.driver.turn_gather(s.now), None, "250 writes after 5 ms: 50,000 a second");

    let mut hundred = Script::new(config());
    let people = room(&mut hundred, 100);
    for i in 0..5 {
        turn(&mut hundred, &people, ms(0), ms(0), &people[i..=i]);
    }
    hundred.send(people[9], "and one more");
    assert_eq!(hundred.driver.turn_gather(hundred.now), None, "100 writes count as a ms at least");
}

/// Issue 12, PROTOCOL 1.1: joins handled before a member is written give it one presence line,
/// made when written, showing everyone.
#[test]
fn joins_before_a_write_give_each_member_one_presence_line() {
    let mut s = Script::new(config());
    let alice = s.connect("alice");
    s.send(alice, "alice");
    s.not_reading.push(alice);
    for name in ["bob", "carol", "dave"] {
        let c = s.connect(name);
        s.send(c, name);
    }
    s.received.remove(&alice);
    s.not_reading.clear();
    s.write_all(alice);
    let text = &s.received[&alice];
    assert_eq!(text.matches("ALL").count(), 1, "{text}");
    assert!(text.ends_with("ALL bob carol dave\n"), "{text}");
}

/// Issue 12: the driver says when freed memory may go back to the system: a quarter second
/// after the last input, and again when the spare outbox tails are freed; never while inputs
/// keep coming.
#[test]
fn memory_is_released_once_the_server_goes_quiet() {
    let mut s = Script::new(config());
    let ann = s.connect("ann");
    s.send(ann, "ann");
    for _ in 0..10 {
        s.advance(QUIET_BEFORE_RELEASE / 2);
        s.send(ann, "still talking");
    }
    let releases = |s: &Script| s.transcript.matches("[out] release free memory").count();
    assert_eq!(releases(&s), 0, "not while busy");
    s.advance(QUIET_BEFORE_RELEASE);
    assert_eq!(releases(&s), 1);
    // Ann's lines went through an outbox tail, kept as a spare for SPARE_TAILS_KEPT more:
    // freeing it frees memory again.
    s.advance(SPARE_TAILS_KEPT);
    assert_eq!(releases(&s), 2);
    s.advance(Duration::from_secs(10));
    assert_eq!(releases(&s), 2, "nothing more in a quiet spell");
    assert_eq!(s.driver.poll_timeout(), None, "an idle server sleeps");
    s.send(ann, "back again");
    s.advance(QUIET_BEFORE_RELEASE);
    assert_eq!(releases(&s), 3);
}
