//! Scripted sessions of the client driver: a person (or `natter get`), a scripted server, simulated
//! time and an in-memory disk. PROTOCOL.md 1 and 2 from the client's side; TEST-CATALOGUE U5, U6.
//!
//! The snapshots read like a conversation: `[ms] < line` is a line from the server, `[ms] typed:`
//! what the person typed, `[ms] > line` what the client sent, `#n` a download and its datagrams
//! (`#n > REQUEST seq: ranges`, `#n < parts ...`), and the rest are the driver's outputs: what to
//! show, what to do to files and sockets, and when the session finishes.

#![allow(clippy::unwrap_used)] // a test panicking is a failing test

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use natter_core::chat::catalogue::free_final_name;
use natter_core::chat::client::{ClientEvent, QUIT_GRACE};
use natter_core::driver::client::{
    CAP_RETRY_AFTER, CHECKPOINT_EVERY, ClientConfig, ClientDriver, DownloadFailure, DownloadId,
    DownloadReport, Input, MAX_CAP_RETRIES, Mode, Output, PROGRESS_EVERY,
};
use natter_core::transfer::receiver::{LARGE_PART_PATIENCE, SAFE_PART_SIZE};
use natter_core::wire::chat::{ServerLine, UdpOffer};
use natter_core::wire::datagram::{self, AbortCode, Datagram, MAX_REQUEST_LEN};

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
/// The client's address on the same network (no NAT between them).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + i / 251) as u8 ^ seed).collect()
}

/// One client driver with everything around it simulated.
struct Script {
    d: ClientDriver,
    t0: Instant,
    now: Instant,
    log: String,
    /// The server's files, by name.
    served: BTreeMap<String, Vec<u8>>,
    /// The client's `Downloads/`: final files, `.part` files and resume records, by name.
    disk: BTreeMap<String, Vec<u8>>,
    parts: BTreeMap<String, Vec<u8>>,
    records: BTreeMap<String, Vec<u8>>,
    /// Open downloads: file name and the token of their offer.
    open: BTreeMap<DownloadId, (String, u64)>,
    /// Parts asked for and not answered yet, with their req_seq.
    wanted: BTreeMap<DownloadId, Vec<(u32, u32)>>,
    show_progress: bool,
    progress_at: Vec<Duration>,
    finished: Option<Option<Result<DownloadReport, DownloadFailure>>>,
    next_port: u16,
    /// The part size of each offer, by port.
    part_sizes: BTreeMap<u16, u16>,
    /// Keeps are answered only by [`Script::answer_keeps`], as when a runtime keeps files on a
    /// thread of its own; else at once.
    keeps_later: bool,
    /// Keeps not yet answered, with the path each file gets.
    keeps_owed: Vec<(DownloadId, String)>,
}

impl Script {
    fn new(mode: Mode, part_size: u16) -> Self {
        let now = Instant::now();
        let mut config = ClientConfig::new("alice", mode, SERVER, part_size);
        config.give_up_after = Duration::from_secs(5);
        let mut s = Self {
            d: ClientDriver::new(config, now),
            t0: now,
            now,
            log: String::new(),
            served: BTreeMap::new(),
            disk: BTreeMap::new(),
            parts: BTreeMap::new(),
            records: BTreeMap::new(),
            open: BTreeMap::new(),
            wanted: BTreeMap::new(),
            show_progress: false,
            progress_at: Vec::new(),
            finished: None,
            next_port: 50000,
            part_sizes: BTreeMap::new(),
            keeps_later: false,
            keeps_owed: Vec::new(),
        };
        s.serve_file("hello.c", content(5000, 1));
        s.drain();
        s
    }

    fn interactive() -> Self {
        Self::new(Mode::Interactive, 1200)
    }

    /// `natter get` of `file` from a runtime that reports the connect (20 ms) and an early-flight
    /// socket on the connection's address, as runtime-common does (PROTOCOL 2.1).
    fn get_with_early_socket(file: &str, part_size: u16) -> Self {
        let now = Instant::now();
        let mut config = ClientConfig::new("alice", Mode::get(file), SERVER, part_size);
        config.give_up_after = Duration::from_secs(5);
        config.awaits_connected = true;
        let mut s = Self::new(Mode::Interactive, part_size);
        s.d = ClientDriver::new(config, now);
        s.t0 = now;
        s.now = now;
        s.log.clear();
        s.drain();
        s.note("the download line waits for the connect");
        s.now += Duration::from_millis(20);
        let early_socket = Some(SocketAddr::new(CLIENT, 50_123));
        s.say(format!("connected in 20 ms; early-flight socket at {early_socket:?}"));
        s.d.handle_input(
            s.now,
            Input::Connected { handshake: Duration::from_millis(20), early_socket },
        );
        s.drain();
        s
    }

    /// The server's early flight for download `id`: `parts`, answered as early requests of 16
    /// parts (PROTOCOL 2.1).
    fn deliver_early(&mut self, id: DownloadId, parts: std::ops::Range<u32>) {
        for part in parts {
            self.wanted.entry(id).or_default().push((part / 16, part));
        }
        self.deliver(id, usize::MAX, false);
    }

    /// An interactive client that asked for every one of `files` (name, length) in order: the
    /// first four are offered and run (the cap), the rest wait, and the first has just ended.
    fn four_running_and_a_done(files: &[(&str, usize)]) -> Self {
        let mut s = Script::interactive();
        for (i, &(f, len)) in files.iter().enumerate() {
            s.serve_file(f, vec![i as u8; len]);
        }
        s.join();
        for (f, _) in files {
            s.typed(&format!("download_file {f}"));
        }
        for (f, _) in &files[..4] {
            let offer = s.offer(f, 1200);
            s.server(&offer);
        }
        s.deliver(1, 10, false);
        s
    }

    fn serve_file(&mut self, name: &str, bytes: Vec<u8>) {
        self.served.insert(name.to_owned(), bytes);
    }

    fn at(&self) -> u128 {
        self.now.duration_since(self.t0).as_millis()
    }

    fn note(&mut self, text: &str) {
        writeln!(self.log, "# {text}").unwrap();
    }

    fn say(&mut self, text: String) {
        let at = self.at();
        writeln!(self.log, "[{at}] {text}").unwrap();
    }

    fn server(&mut self, line: &str) {
        self.say(format!("< {line}"));
        self.d.handle_input(self.now, Input::Received(format!("{line}\n").as_bytes()));
        self.drain();
    }

    fn join(&mut self) {
        self.server("alice has joined the chat!");
        self.server("ALL");
    }

    /// The UDP line offering `file` (served) in parts of `part_size`, on a port of its own.
    fn offer(&mut self, file: &str, part_size: u16) -> String {
        let bytes = &self.served[file];
        let port = self.next_port;
        self.next_port += 1;
        self.part_sizes.insert(port, part_size);
        let line = ServerLine::Udp(UdpOffer {
            port,
            transfer_id: u64::from(port - 50000),
            file: file.to_owned(),
            size: bytes.len() as u64,
            part_size,
            blake3: *blake3::hash(bytes).as_bytes(),
            token: u64::from(port),
            key: None,
        })
        .encode();
        line.trim_end().to_owned()
    }

    fn typed(&mut self, text: &str) {
        self.say(format!("typed: {text}"));
        self.d.handle_input(self.now, Input::Typed(text));
        self.drain();
    }

    fn input_ended(&mut self) {
        self.say("input ends".into());
        self.d.handle_input(self.now, Input::InputEnded);
        self.drain();
    }

    fn server_closes(&mut self) {
        self.say("server closes the connection".into());
        self.d.handle_input(self.now, Input::ServerClosed);
        self.drain();
    }

    /// Lets simulated time pass, firing the driver's timers on the way.
    fn wait(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.d.poll_timeout().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            self.d.handle_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    /// Answers the parts asked of download `id` (at most `max`), as the server would; `corrupt`
    /// flips a byte of every payload before its CRC is computed (wrong bytes, valid datagrams).
    fn deliver(&mut self, id: DownloadId, max: usize, corrupt: bool) {
        let Some((file, token)) = self.open.get(&id).cloned() else {
            return; // over and released
        };
        let bytes = self.served[&file].clone();
        let part_size = self.part_size(id);
        let wanted = self.wanted.entry(id).or_default();
        let n = max.min(wanted.len());
        let batch: Vec<(u32, u32)> = wanted.drain(..n).collect();
        if batch.is_empty() {
            return;
        }
        let list: Vec<String> = batch.iter().map(|(_, p)| p.to_string()).collect();
        self.say(format!("#{id} < parts {}", list.join(" ")));
        for (req_seq, part) in batch {
            let start = part as usize * part_size;
            let end = (start + part_size).min(bytes.len());
            let mut payload = bytes[start..end].to_vec();
            if corrupt && !payload.is_empty() {
                payload[0] ^= 0xff;
            }
            let mut dgram = datagram::encode_part(token, req_seq, part, &payload);
            self.accept(id, &file, &mut dgram);
        }
        self.drain();
    }

    /// Download `id`'s early-flight `parts` (early requests of 16 parts, PROTOCOL 2.1), read from
    /// the session's early-flight socket in one batch: the driver says whose they are. `drained`:
    /// the socket is empty after it.
    fn read_early(&mut self, id: DownloadId, parts: std::ops::Range<u32>, drained: bool) {
        let (file, token) = self.open[&id].clone();
        let bytes = self.served[&file].clone();
        let part_size = self.part_size(id);
        let left = if drained { "empty after" } else { "more waits" };
        self.say(format!("early-flight socket < parts {parts:?} from port {token}; {left}"));
        let from = SocketAddr::new(SERVER, token as u16);
        for part in parts {
            let start = part as usize * part_size;
            let payload = &bytes[start..(start + part_size).min(bytes.len())];
            let mut dgram = datagram::encode_part(token, part / 16, part, payload);
            assert_eq!(self.d.early_datagram(self.now, from, &dgram), Some(id));
            self.accept(id, &file, &mut dgram);
        }
        self.d.early_socket_read(drained);
        self.drain();
    }

    /// Hands one datagram of download `id` (of `file`) to the driver, writes what it accepts and
    /// feeds the hash.
    fn accept(&mut self, id: DownloadId, file: &str, dgram: &mut [u8]) {
        if let Some(accept) = self.d.handle_datagram(self.now, id, dgram) {
            let buf = self.parts.get_mut(file).unwrap();
            let at = accept.offset as usize;
            buf[at..at + accept.payload.len()].copy_from_slice(&dgram[accept.payload]);
        }
        while let Some((offset, len)) = self.d.next_to_hash(id) {
            let at = offset as usize;
            let chunk = self.parts[file][at..at + len].to_vec();
            self.d.hash(id, offset, &chunk);
        }
    }

    /// The files whose keeps were owed are saved now.
    fn answer_keeps(&mut self) {
        for (id, path) in std::mem::take(&mut self.keeps_owed) {
            self.say(format!("  #{id} saved as {path}"));
            self.d.handle_input(self.now, Input::Saved { id, path });
        }
        self.drain();
    }

    fn abort(&mut self, id: DownloadId, reason: &str) {
        let (_, token) = self.open[&id].clone();
        let mut buf = vec![0; 200];
        let n = datagram::encode_abort(token, AbortCode::TimedOut, reason, &mut buf);
        self.say(format!("#{id} < ABORT {reason}"));
        self.d.handle_datagram(self.now, id, &mut buf[..n]);
        self.drain();
    }

    fn part_size(&self, id: DownloadId) -> usize {
        let port = self.open[&id].1 as u16;
        usize::from(self.part_sizes[&port])
    }

    /// Performs every output and sends every datagram, as a runtime's loop does.
    fn drain(&mut self) {
        loop {
            while let Some(output) = self.d.poll_output() {
                self.perform(output);
            }
            let mut buf = [0u8; MAX_REQUEST_LEN];
            let mut sent = false;
            while let Some((id, n)) = self.d.poll_transmit(self.now, &mut buf) {
                sent = true;
                match datagram::parse(&buf[..n]).unwrap() {
                    Datagram::Request(r) => {
                        let ranges: Vec<String> =
                            r.ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                        self.say(format!("#{id} > REQUEST {}: {}", r.req_seq, ranges.join(" ")));
                        let wanted = self.wanted.entry(id).or_default();
                        for &(a, b) in &r.ranges {
                            for p in a..=b {
                                if !wanted.iter().any(|&(_, w)| w == p) {
                                    wanted.push((r.req_seq, p));
                                }
                            }
                        }
                    }
                    Datagram::Finished { .. } => self.say(format!("#{id} > FINISHED")),
                    other => panic!("client sent {other:?}"),
                }
            }
            if !sent {
                return;
            }
        }
    }

    fn perform(&mut self, output: Output) {
        let now = self.now;
        match output {
            Output::Send(bytes) => {
                let text = String::from_utf8(bytes).unwrap();
                for line in text.lines() {
                    self.say(format!("> {line}"));
                }
            }
            Output::Event(ClientEvent::Offer(o)) => {
                self.say(format!("  show the offer of {} on port {}", o.file, o.port));
            }
            Output::Event(event) => self.say(format!("  show {event:?}")),
            Output::Notice(text) => self.say(format!("  notice: {text}")),
            Output::Progress { id, progress, .. } => {
                self.progress_at.push(now.duration_since(self.t0));
                if self.show_progress {
                    let (got, size) = (progress.bytes_received, progress.size);
                    self.say(format!("  #{id} progress {got}/{size}"));
                }
            }
            Output::Disconnected(reason) => self.say(format!("  disconnected: {reason}")),
            Output::Open { id, file, size, peer, max_datagram, early } => {
                let resume = self.records.get(&file).cloned();
                self.say(format!(
                    "  open #{id}: {file}.part ({size} bytes{}), udp to {peer} (datagrams of {max_datagram}){}",
                    if resume.is_some() { ", record found" } else { "" },
                    if early { ", on the early-flight socket" } else { "" }
                ));
                self.parts.entry(file.clone()).or_insert_with(|| vec![0; size as usize]);
                self.open.insert(id, (file, u64::from(peer.port())));
                self.d.handle_input(now, Input::Opened { id, resume });
            }
            Output::SaveRecord { id, record } => {
                let file = self.open[&id].0.clone();
                self.say(format!("  save record #{id}"));
                self.records.insert(file, record);
            }
            Output::Keep { id } => {
                let file = self.open[&id].0.clone();
                let name = free_final_name(&file, |c| self.disk.contains_key(c));
                self.say(format!("  keep #{id} as {name}"));
                let bytes = self.parts.remove(&file).unwrap();
                assert_eq!(bytes, self.served[&file], "kept bytes differ");
                self.disk.insert(name.clone(), bytes);
                self.records.remove(&file);
                let path = format!("Downloads/{name}");
                if self.keeps_later {
                    self.keeps_owed.push((id, path));
                } else {
                    self.d.handle_input(now, Input::Saved { id, path });
                }
            }
            Output::Discard { id } => {
                let file = self.open[&id].0.clone();
                self.say(format!("  discard #{id}"));
                self.parts.remove(&file);
                self.records.remove(&file);
            }
            Output::Release { id } => {
                self.say(format!("  release #{id}"));
                self.open.remove(&id);
                self.wanted.remove(&id);
            }
            Output::Ended { id, file, result } => {
                let text = match result {
                    Ok(r) => format!(
                        "saved {} ({} bytes, {} resumed) in {} ms",
                        r.path,
                        r.size,
                        r.resumed,
                        r.elapsed.as_millis()
                    ),
                    Err(e) => format!("failed: {e}"),
                };
                self.say(format!("  ended #{id} {file}: {text}"));
            }
            Output::FileDone { file, result } => {
                let text = match result {
                    Ok(r) => format!("saved as {}", r.path),
                    Err(e) => format!("failed: {e}"),
                };
                self.say(format!("  file done {file}: {text}"));
            }
            Output::Finish(result) => {
                let text = match &result {
                    None => "the chat session".to_owned(),
                    Some(Ok(r)) => format!("got {}", r.path),
                    Some(Err(e)) => format!("error: {e}"),
                };
                self.say(format!("  finish: {text}"));
                assert!(self.finished.is_none(), "finished twice");
                self.finished = Some(result);
            }
        }
    }
}

/// PROTOCOL 1.1-1.3: join, chat, ask; `{quit}` is what the server takes for it, exactly.
#[test]
fn join_chat_and_quit() {
    let mut s = Script::interactive();
    s.join();
    s.typed("hello all");
    s.server("alice: hello all");
    s.typed("~bob psst");
    s.server("from you to bob: (PRIVATE) psst");
    s.typed("show");
    s.server("bob has joined the chat!");
    s.server("ALL bob");
    s.server("ALL bob");
    s.typed("download_file");
    s.typed("{quit} ");
    s.server("alice: {quit} ");
    s.typed("{quit}");
    s.typed("too late");
    s.server_closes();
    assert_eq!(s.finished, Some(None));
    insta::assert_snapshot!(s.log);
}

/// The drift that motivated the driver: an ERROR answers the oldest open request (the private
/// message), not the download, so a script whose input ends waits for the offer and downloads.
#[test]
fn an_error_for_a_private_message_does_not_answer_a_download() {
    let mut s = Script::interactive();
    s.join();
    s.typed("~nobody hi");
    s.typed("download_file hello.c");
    s.input_ended();
    s.server("ERROR no such user: nobody");
    s.note("the download request is still open: no {quit} yet");
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(1, 10, false);
    s.server_closes();
    assert_eq!(s.disk["hello.c"], s.served["hello.c"]);
    insta::assert_snapshot!(s.log);
}

/// A presence line nobody asked for (someone joined) does not answer anything but a `show`, and an
/// ERROR for a download is what the piped client waited for.
#[test]
fn unasked_presence_lines_do_not_break_matching() {
    let mut s = Script::interactive();
    s.join();
    s.typed("download_file nothing.txt");
    s.input_ended();
    s.server("bob has joined the chat!");
    s.server("ALL bob");
    s.server("ERROR no such file: nothing.txt");
    s.server_closes();
    insta::assert_snapshot!(s.log);
}

/// S3 spirit: an offer pushed without a request is not downloaded, nor a second concurrent one
/// of the same file.
#[test]
fn an_unasked_offer_is_ignored() {
    let mut s = Script::interactive();
    s.join();
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.typed("download_file other.c");
    s.server(&offer);
    assert!(s.open.is_empty());
    s.note("two offers of one file at once: the second would write over the first's .part file");
    s.typed("download_file hello.c");
    s.typed("download_file hello.c");
    let (first, second) = (s.offer("hello.c", 1200), s.offer("hello.c", 1200));
    s.server(&first);
    s.server(&second);
    assert_eq!(s.open.len(), 1);
    insta::assert_snapshot!(s.log);
}

/// S3, PROTOCOL 2.1 (issue 10): offers no server may make, or larger than the client affords,
/// are refused before anything is opened or allocated. Before the fix an offer of 4 TiB in 1-byte
/// parts made `natter get` allocate and write a 512 MiB resume record.
#[test]
fn s3_extreme_offers_are_refused_before_anything_is_opened() {
    let mut s = Script::interactive();
    s.join();
    let hostile = |size: u64, part_size: u16| {
        let line = ServerLine::Udp(UdpOffer {
            port: 50000,
            transfer_id: 0,
            file: "huge.bin".into(),
            size,
            part_size,
            blake3: [7; 32],
            token: 1,
            key: None,
        })
        .encode();
        line.trim_end().to_owned()
    };
    for (size, part_size) in [
        (4 << 40, 1),      // 4 TiB in 1-byte parts: 2^42 parts
        (1 << 20, 511),    // below the smallest part size a server grants
        (1 << 20, 65_001), // above the largest
        (1 << 39, 1200),   // 512 GiB in 1200-byte parts: more parts than the client keeps
        (2 << 40, 65_000), // 2 TiB: above the client's 1 TiB limit
    ] {
        s.typed("download_file huge.bin");
        s.server(&hostile(size, part_size));
    }
    assert!(s.open.is_empty());
    assert!(!s.log.contains("open #"), "{}", s.log);
    assert_eq!(s.log.matches("refused").count(), 5, "{}", s.log);
    insta::assert_snapshot!(s.log);
}

/// Issue 10: a write that fails (a full disk) ends the download with a clear error, keeps the
/// last checkpoint's record (and saves no new one, which could list parts the disk never got),
/// and sends FINISHED so the server frees the port now instead of after its idle timeout.
#[test]
fn a_failed_write_keeps_the_last_record_and_sends_finished() {
    let mut s = Script::interactive();
    s.serve_file("big.bin", content(60 * 1200, 3));
    s.join();
    s.typed("download_file big.bin");
    let offer = s.offer("big.bin", 1200);
    s.server(&offer);
    for _ in 0..7 {
        s.deliver(1, 2, false);
        s.wait(Duration::from_millis(100));
    }
    assert_eq!(s.log.matches("save record").count(), 1);
    let record = s.records["big.bin"].clone();
    s.deliver(1, 2, false);
    s.say("  (the disk is full)".into());
    let error = "cannot write Downloads/big.bin.part: No space left on device (os error 28)";
    s.d.handle_input(s.now, Input::IoFailed { id: 1, error: error.into() });
    s.drain();
    assert_eq!(s.records["big.bin"], record, "the last checkpoint's record is kept as it was");
    assert_eq!(s.log.matches("#1 > FINISHED").count(), 3);
    assert!(s.log.contains("release #1"));
    s.wait(Duration::from_secs(1));
    assert_eq!(s.log.matches("save record").count(), 1);
    insta::assert_snapshot!(s.log);
}

/// After `{quit}` the client reads on for QUIT_GRACE, then gives up on the server's close.
#[test]
fn quit_grace() {
    let mut s = Script::interactive();
    s.join();
    s.typed("{quit}");
    s.wait(QUIT_GRACE / 2);
    s.server("bob: still here");
    s.wait(QUIT_GRACE);
    assert_eq!(s.finished, Some(None));
    insta::assert_snapshot!(s.log);
}

/// Input ends while an offer is awaited: the client waits for it, downloads, then leaves.
#[test]
fn input_ended_with_an_awaited_offer() {
    let mut s = Script::interactive();
    s.join();
    s.typed("download_file hello.c");
    s.input_ended();
    s.wait(Duration::from_secs(1));
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(1, 2, false);
    s.note("the download runs: still no {quit}");
    s.deliver(1, 10, false);
    s.wait(QUIT_GRACE);
    assert_eq!(s.finished, Some(None));
    insta::assert_snapshot!(s.log);
}

/// U5: no part of 65000 bytes arrives in LARGE_PART_PATIENCE; the record is kept, the socket
/// released, and the file asked for again in SAFE_PART_SIZE parts, which go through.
#[test]
fn u5_falls_back_to_small_parts() {
    let mut s = Script::new(Mode::Interactive, 65000);
    s.serve_file("big.bin", content(10_000, 2));
    s.join();
    s.typed("download_file big.bin");
    let offer = s.offer("big.bin", 65000);
    s.server(&offer);
    s.note("the path drops every datagram this large");
    s.wanted.clear();
    s.wait(LARGE_PART_PATIENCE);
    assert!(s.records.contains_key("big.bin"), "the record is kept");
    let offer = s.offer("big.bin", SAFE_PART_SIZE);
    s.server(&offer);
    s.deliver(2, 100, false);
    assert_eq!(s.disk["big.bin"], s.served["big.bin"]);
    insta::assert_snapshot!(s.log);
}

/// U6: while parts arrive, a resume record is saved every CHECKPOINT_EVERY, not more often; a
/// new download of the file after a stall resumes from it.
#[test]
fn checkpoints_and_resume() {
    let mut s = Script::interactive();
    s.serve_file("big.bin", content(60 * 1200, 3));
    s.join();
    s.typed("download_file big.bin");
    let offer = s.offer("big.bin", 1200);
    s.server(&offer);
    for _ in 0..12 {
        s.deliver(1, 2, false);
        s.wait(Duration::from_millis(100));
    }
    let saves = s.log.matches("save record").count();
    assert_eq!(saves, 2, "one record per {CHECKPOINT_EVERY:?}");
    s.note("the path goes quiet: the download gives up and keeps what it has");
    s.wanted.clear();
    s.wait(Duration::from_secs(6));
    s.typed("download_file big.bin");
    let offer = s.offer("big.bin", 1200);
    s.server(&offer);
    for _ in 0..20 {
        s.deliver(2, 100, false);
        s.wait(Duration::from_millis(10));
    }
    assert_eq!(s.disk["big.bin"], s.served["big.bin"]);
    insta::assert_snapshot!(s.log);
}

/// What becomes of a download's files: verified -> kept under the first free name; wrong bytes
/// -> deleted with the record; an abort -> `.part` and record kept, socket released.
#[test]
fn keep_discard_release() {
    let mut s = Script::interactive();
    s.disk.insert("hello.c".into(), b"an older download".to_vec());
    s.join();
    s.typed("download_file hello.c");
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(1, 10, false);
    assert_eq!(s.disk["hello (1).c"], s.served["hello.c"]);

    s.note("wrong bytes, right CRCs: the digest catches them");
    s.typed("download_file hello.c");
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(2, 10, true);
    assert!(!s.parts.contains_key("hello.c") && !s.records.contains_key("hello.c"));

    s.note("the server gives up on the transfer");
    s.typed("download_file hello.c");
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(3, 2, false);
    s.abort(3, "idle");
    assert!(s.parts.contains_key("hello.c") && s.records.contains_key("hello.c"));
    insta::assert_snapshot!(s.log);
}

/// `natter get`: join, ask, download, leave; the result is the download's.
#[test]
fn get_mode_success() {
    let mut s = Script::new(Mode::get("hello.c"), 1200);
    s.join();
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(1, 10, false);
    s.server_closes();
    assert!(matches!(&s.finished, Some(Some(Ok(r))) if r.size == 5000));
    insta::assert_snapshot!(s.log);
}

/// `natter get` of a file the server refuses: the server's reason is the result, after `{quit}`;
/// a refused name ends it at once; a server that never answers ends it after the stall time.
#[test]
fn get_mode_refusals() {
    let get = || Script::new(Mode::get("nothing.txt"), 1200);
    let mut s = get();
    s.join();
    s.server("ERROR no such file: nothing.txt");
    s.server_closes();
    assert!(
        matches!(&s.finished, Some(Some(Err(DownloadFailure::Refused(r)))) if r.contains("no such file"))
    );
    let mut log = s.log;

    let mut s = get();
    s.server("ERROR name already taken: alice");
    assert!(matches!(&s.finished, Some(Some(Err(DownloadFailure::Refused(_))))));
    log += "\n";
    log += &s.log;

    let mut s = get();
    s.join();
    s.wait(Duration::from_secs(5));
    s.wait(QUIT_GRACE);
    assert!(matches!(&s.finished, Some(Some(Err(DownloadFailure::NoAnswer(_))))));
    log += "\n";
    log += &s.log;
    insta::assert_snapshot!(log);
}

/// One progress cadence for every client: every PROGRESS_EVERY while a download runs.
#[test]
fn progress_every_100_ms() {
    let mut s = Script::interactive();
    s.serve_file("big.bin", content(600 * 1200, 4));
    s.join();
    s.typed("download_file big.bin");
    let offer = s.offer("big.bin", 1200);
    s.server(&offer);
    for _ in 0..10 {
        s.deliver(1, 5, false);
        s.wait(Duration::from_millis(50));
    }
    let ticks: Vec<u128> = s.progress_at.iter().map(Duration::as_millis).collect();
    let step = PROGRESS_EVERY.as_millis();
    assert_eq!(ticks, vec![0, step, 2 * step, 3 * step, 4 * step, 5 * step]);
}

/// Issue 11, PROTOCOL 2.1 and 4 (rule 6): `natter get` of six files asks for four with its
/// name, queues two, asks for the next as each download's FINISHED copies are out, reports every
/// file (a refused one too) and leaves without waiting for the server's close.
#[test]
fn get_mode_many_files_queue_behind_the_cap() {
    let files = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin", "nothing.txt"];
    let mut s = Script::new(Mode::Get { files: files.map(String::from).to_vec() }, 1200);
    for (i, f) in files[..5].iter().enumerate() {
        s.serve_file(f, vec![i as u8; 2000]);
    }
    s.join();
    for f in &files[..4] {
        let offer = s.offer(f, 1200);
        s.server(&offer);
    }
    s.note("a.bin arrives: its FINISHED copies go out, then e.bin is asked for");
    s.deliver(1, 10, false);
    let offer = s.offer("e.bin", 1200);
    s.server(&offer);
    s.note("b.bin arrives: then nothing.txt is asked for, and refused");
    s.deliver(2, 10, false);
    s.server("ERROR no such file: nothing.txt");
    for id in [3, 4, 5] {
        s.deliver(id, 10, false);
    }
    assert!(
        matches!(&s.finished, Some(Some(Err(DownloadFailure::Refused(r)))) if r.contains("nothing.txt"))
    );
    for f in &files[..5] {
        assert_eq!(s.disk[*f], s.served[*f], "{f}");
    }
    insta::assert_snapshot!(s.log);
}

/// Issue 11 (`LINE_GATHER`): a line freed while other downloads still run waits up to 2 ms (an
/// eighth of the round trip at most) for the lines the others' ends free, and they go out
/// together: one TCP segment, not one each, and so fewer segments to lose and stall behind.
#[test]
fn lines_freed_while_others_run_go_out_together() {
    let mut s = first_of_three_ends_on_a_20_ms_path();
    s.wait(Duration::from_millis(1));
    s.note("b.bin ends 1 ms later: e.bin's line joins d.bin's");
    s.deliver(2, 10, false);
    s.wait(Duration::from_millis(5));
    let at = |line: &str| {
        s.log.lines().find(|l| l.ends_with(line)).map(|l| l[..l.find(']').unwrap_or(0)].to_owned())
    };
    assert_eq!(at("> download_file d.bin 1200"), Some("[42".to_owned()), "{}", s.log);
    assert_eq!(at("> download_file e.bin 1200"), Some("[42".to_owned()), "{}", s.log);
    insta::assert_snapshot!(s.log);
}

/// Issue 11: a person who types more downloads than the cap sees the rest queued, and each
/// goes out when one ends; a refusal by the server's (lower) cap queues the line again.
#[test]
fn interactive_downloads_past_the_cap_wait_their_turn() {
    let mut s = Script::interactive();
    for (i, f) in ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin", "f.bin"].iter().enumerate() {
        s.serve_file(f, vec![i as u8; 2000]);
    }
    s.join();
    for f in ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"] {
        s.typed(&format!("download_file {f}"));
    }
    for f in ["a.bin", "b.bin", "c.bin"] {
        let offer = s.offer(f, 1200);
        s.server(&offer);
    }
    s.note("this server allows three at once");
    s.server("ERROR too many transfers: at most 3 at once");
    s.typed("download_file f.bin");
    s.deliver(1, 10, false);
    s.note("a.bin is done: d.bin goes out; each end lets the next queued line go");
    for f in ["d.bin", "e.bin", "f.bin"] {
        let offer = s.offer(f, 1200);
        s.server(&offer);
        let oldest = s.open.keys().next().copied();
        if let Some(id) = oldest {
            s.deliver(id, 10, false);
        }
    }
    for id in 1..=6 {
        s.deliver(id, 10, false);
    }
    for f in ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin", "f.bin"] {
        assert_eq!(s.disk[f], s.served[f], "{f}");
    }
    insta::assert_snapshot!(s.log);
}

/// Issue 11 regression: a `download_file` that overtakes the FINISHED of one of ours is refused
/// by the server's cap ("at most 4 at once") while we hold only 3. It is asked again shortly,
/// and the cap stays 4. Before, the client took the refusal for a cap of 3 (what it held), and a
/// `natter get` of many small files sank to a few downloads at once as such races piled up.
#[test]
fn a_refusal_that_overtook_a_finished_keeps_the_servers_cap() {
    let files = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin", "f.bin"];
    let mut s = Script::four_running_and_a_done(&files.map(|f| (f, 2000)));
    s.note("a.bin is done and e.bin goes out, but the server has not seen a.bin's FINISHED yet");
    s.server("ERROR too many transfers: at most 4 at once");
    s.wait(CAP_RETRY_AFTER);
    let asked = s.log.matches("> download_file e.bin").count();
    assert_eq!(asked, 2, "e.bin is asked again without waiting for another end:\n{}", s.log);
    let offer = s.offer("e.bin", 1200);
    s.server(&offer);
    s.note("four run again; when b.bin ends, f.bin goes out");
    s.deliver(2, 10, false);
    assert_eq!(s.log.matches("> download_file f.bin").count(), 1, "{}", s.log);
    let offer = s.offer("f.bin", 1200);
    s.server(&offer);
    for id in 3..=6 {
        s.deliver(id, 10, false);
    }
    for f in files {
        assert_eq!(s.disk[f], s.served[f], "{f}");
    }
    insta::assert_snapshot!(s.log);
}

/// A runtime keeps verified files on a thread of its own: the session may end (here the server
/// closes) between a file's keep and its answer. The file is on disk, so it is reported saved, and
/// the session finishes once it is; before, it was reported interrupted while it was being saved.
#[test]
fn a_session_that_ends_while_a_file_is_kept_reports_it_saved() {
    let mut s = Script::new(Mode::get("hello.c"), 1200);
    s.keeps_later = true;
    s.join();
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(1, 10, false);
    assert!(s.log.contains("keep #1"), "{}", s.log);
    s.server_closes();
    assert!(s.finished.is_none(), "finished before the keep was answered:\n{}", s.log);
    s.answer_keeps();
    assert!(matches!(&s.finished, Some(Some(Ok(r))) if r.path == "Downloads/hello.c"), "{}", s.log);
    assert!(!s.log.contains("interrupted"), "{}", s.log);
}

/// A line gather (`LINE_GATHER`) that meets a refusal and its retry leaves no timer in the past:
/// before, the gather's time stayed due while the retry waited, and a runtime woke without end
/// for 50 ms.
#[test]
fn a_gather_that_meets_a_cap_retry_leaves_no_timer_due() {
    let mut s = first_of_three_ends_on_a_20_ms_path();
    s.wait(Duration::from_millis(3));
    s.note("b.bin ends while c.bin runs: e.bin's line waits to go out with others");
    s.deliver(2, 10, false);
    assert!(!s.log.contains("> download_file e.bin"), "{}", s.log);
    s.note("d.bin's line overtook a.bin's FINISHED: refused, asked again after the retry's wait");
    s.server("ERROR too many transfers: at most 3 at once");
    s.now += Duration::from_millis(3);
    s.d.handle_timeout(s.now);
    s.drain();
    let due = s.d.poll_timeout().is_some_and(|at| at <= s.now);
    assert!(!due, "a timer is due at once, past the gather's time:\n{}", s.log);
    s.wait(CAP_RETRY_AFTER);
    assert!(s.log.contains("> download_file e.bin"), "{}", s.log);
}

/// `natter get` of a.bin to e.bin (2000 bytes each), three at once, on a path whose round trip
/// the connect measured (20 ms): the first three are offered and run, then a.bin ends while the
/// other two run, and d.bin's line waits for company (`LINE_GATHER`).
fn first_of_three_ends_on_a_20_ms_path() -> Script {
    let files = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"];
    let now = Instant::now();
    let wanted = files.iter().map(|f| (*f).to_owned()).collect();
    let mut config = ClientConfig::new("alice", Mode::Get { files: wanted }, SERVER, 1200);
    config.awaits_connected = true;
    config.max_transfers = 3;
    let mut s = Script::new(Mode::Interactive, 1200);
    for (i, f) in files.iter().enumerate() {
        s.serve_file(f, vec![i as u8; 2000]);
    }
    s.d = ClientDriver::new(config, now);
    (s.t0, s.now) = (now, now);
    s.log.clear();
    let connected = Input::Connected { handshake: Duration::from_millis(20), early_socket: None };
    s.d.handle_input(now, connected);
    s.drain();
    s.wait(Duration::from_millis(20));
    s.join();
    for f in &files[..3] {
        let offer = s.offer(f, 1200);
        s.server(&offer);
    }
    s.wait(Duration::from_millis(20));
    s.note("a.bin ends while b.bin and c.bin run: d.bin's line waits");
    s.deliver(1, 10, false);
    assert!(!s.log.contains("download_file d.bin"), "{}", s.log);
    s
}

/// When the server keeps counting a transfer of ours that no longer runs (an offer the client did
/// not take, FINISHED copies all lost) for longer than the retries last, a file is not failed
/// while other downloads of ours run: it waits for one of them to end.
#[test]
fn a_server_that_keeps_counting_an_ended_transfer_delays_the_line_but_fails_nothing() {
    let files = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"];
    // b, c and d run all along: large enough to last the retries, a part at a time.
    let sizes =
        files.map(|f| (f, if matches!(f, "b.bin" | "c.bin" | "d.bin") { 240_000 } else { 2000 }));
    let mut s = Script::four_running_and_a_done(&sizes);
    for _ in 0..=MAX_CAP_RETRIES {
        s.server("ERROR too many transfers: at most 4 at once");
        for id in 2..=4 {
            s.deliver(id, 1, false);
        }
        s.wait(CAP_RETRY_AFTER);
    }
    let asked = s.log.matches("> download_file e.bin").count();
    assert_eq!(asked as u32, 1 + MAX_CAP_RETRIES, "asked again until the retries ran out");
    assert!(s.log.contains("the server counts more of our downloads than run"), "{}", s.log);
    assert!(s.finished.is_none());
    for _ in 0..1000 {
        if !s.open.contains_key(&2) {
            break;
        }
        s.deliver(2, 300, false);
        s.wait(Duration::from_millis(10));
    }
    assert_eq!(s.log.matches("> download_file e.bin").count() as u32, 2 + MAX_CAP_RETRIES);
    let offer = s.offer("e.bin", 1200);
    s.server(&offer);
    for _ in 0..1000 {
        if (3..=5).all(|id| !s.open.contains_key(&id)) {
            break;
        }
        for id in 3..=5 {
            s.deliver(id, 300, false);
        }
        s.wait(Duration::from_millis(10));
    }
    for f in files {
        assert_eq!(s.disk[f], s.served[f], "{f}");
    }
}

/// PROTOCOL 2.1, the early flight: with the round trip and an early-flight socket known from the
/// connect, `natter get` asks for the first flight in its `download_file` line (FirstFlight at
/// 20 ms: 834 parts of 1200 bytes at 50 MB/s). The offer opens the download on that socket, the
/// five parts of the file come with it, and the file is saved without a single REQUEST.
#[test]
fn an_early_flight_is_asked_with_the_line_and_needs_no_request() {
    let mut s = Script::get_with_early_socket("hello.c", 1200);
    // A round trip later: the join, the offer and the flight sent with it.
    s.wait(Duration::from_millis(20));
    s.join();
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver_early(1, 0..5);
    s.server_closes();
    assert!(matches!(&s.finished, Some(Some(Ok(r))) if r.size == 5000));
    assert!(!s.log.contains("REQUEST"), "{}", s.log);
    insta::assert_snapshot!(s.log);
}

/// PROTOCOL 2.1: every `download_file` line asks for an early flight, not only the session's
/// first: the flights all come to the one early-flight socket, each from its transfer's port,
/// and the runtime hands each to its download (`Output::Open` says which asked for one).
#[test]
fn every_download_line_asks_for_an_early_flight() {
    let now = Instant::now();
    let files = vec!["a.bin".to_owned(), "b.bin".to_owned(), "c.bin".to_owned()];
    let mut config = ClientConfig::new("alice", Mode::Get { files }, SERVER, 1200);
    config.awaits_connected = true;
    let mut d = ClientDriver::new(config, now);
    let early_socket = Some(SocketAddr::new(CLIENT, 50_123));
    d.handle_input(now, Input::Connected { handshake: Duration::from_millis(20), early_socket });
    let mut sent = Vec::new();
    while let Some(output) = d.poll_output() {
        if let Output::Send(bytes) = output {
            sent.extend_from_slice(&bytes);
        }
    }
    let sent = String::from_utf8(sent).unwrap();
    let lines: Vec<&str> = sent.lines().filter(|l| l.starts_with("download_file")).collect();
    assert_eq!(
        lines,
        [
            "download_file a.bin 1200 834 50000000",
            "download_file b.bin 1200 834 50000000",
            "download_file c.bin 1200 834 50000000"
        ]
    );
}

/// PROTOCOL 2.1: a flight that goes nowhere before any flight of the session came (a firewall, a
/// NAT the client did not see) means no later line asks for one; a flight that came means they do.
#[test]
fn flights_that_never_come_are_not_asked_for_again() {
    for flight_comes in [false, true] {
        let now = Instant::now();
        let files = vec!["hello.c".to_owned(), "b.c".to_owned()];
        let mut config = ClientConfig::new("alice", Mode::Get { files }, SERVER, 1200);
        config.awaits_connected = true;
        config.max_transfers = 1;
        let mut s = Script::new(Mode::Interactive, 1200);
        s.serve_file("b.c", content(3000, 2));
        s.d = ClientDriver::new(config, now);
        s.now = now;
        let early_socket = Some(SocketAddr::new(CLIENT, 50_123));
        let connected = Input::Connected { handshake: Duration::from_millis(20), early_socket };
        s.d.handle_input(now, connected);
        s.drain();
        s.wait(Duration::from_millis(20));
        s.join();
        let offer = s.offer("hello.c", 1200);
        s.server(&offer);
        if flight_comes {
            s.deliver_early(1, 0..5);
        } else {
            // Past the flight's check: its parts are asked for in a REQUEST and come.
            s.wait(Duration::from_millis(10));
            s.deliver(1, usize::MAX, false);
        }
        s.wait(Duration::from_millis(10));
        let line = s.log.lines().rfind(|l| l.contains("download_file b.c")).unwrap();
        assert_eq!(line.ends_with("1200 834 50000000"), flight_comes, "{line}");
    }
}

/// PROTOCOL 2.1: the flights of downloads asked for together wait in the one early-flight socket,
/// which the runtime reads a batch at a time. While it holds datagrams not yet read, no flight's
/// check concludes that nothing came. Before, the check of a download whose flight was still
/// unread behind another's came first, and the whole flight was asked for again while it sat in
/// the socket (issue 11, 100 small files).
#[test]
fn a_flight_still_unread_behind_another_is_not_asked_for_again() {
    let now = Instant::now();
    let files = vec!["a.bin".to_owned(), "b.bin".to_owned()];
    let mut config = ClientConfig::new("alice", Mode::Get { files }, SERVER, 1200);
    config.awaits_connected = true;
    let mut s = Script::new(Mode::Interactive, 1200);
    s.serve_file("a.bin", content(6000, 1));
    s.serve_file("b.bin", content(6000, 2));
    s.d = ClientDriver::new(config, now);
    (s.t0, s.now) = (now, now);
    s.log.clear();
    let early_socket = Some(SocketAddr::new(CLIENT, 50_123));
    let connected = Input::Connected { handshake: Duration::from_millis(20), early_socket };
    s.d.handle_input(now, connected);
    s.drain();
    s.wait(Duration::from_millis(20));
    s.join();
    let offers = [s.offer("a.bin", 1200), s.offer("b.bin", 1200)];
    s.server(&offers.join("\n"));
    // Each flight's check is a quarter of the round trip (5 ms) after its offer.
    s.wait(Duration::from_millis(4));
    s.read_early(1, 0..5, false);
    // Past the second flight's check, while its parts still wait in the socket.
    s.wait(Duration::from_millis(4));
    s.read_early(2, 0..5, true);
    s.wait(Duration::from_millis(30));
    assert!(!s.log.contains("#2 > REQUEST"), "{}", s.log);
    assert_eq!(s.disk.get("b.bin"), s.served.get("b.bin"), "{}", s.log);
    insta::assert_snapshot!(s.log);
}

/// A server from before early flights answers the longer line with a usage error: the client
/// asks again as that server understands, never asks it for an early flight again, and the
/// download runs on a socket of its own.
#[test]
fn a_server_without_early_flights_gets_the_plain_line() {
    let mut s = Script::get_with_early_socket("hello.c", 1200);
    s.wait(Duration::from_millis(20));
    s.join();
    s.server("ERROR usage: download_file <file> [<part_size>] (too many words)");
    s.wait(Duration::from_millis(20));
    let offer = s.offer("hello.c", 1200);
    s.server(&offer);
    s.deliver(1, 10, false);
    s.server_closes();
    assert!(matches!(&s.finished, Some(Some(Ok(r))) if r.size == 5000));
    insta::assert_snapshot!(s.log);
}

/// No early flight is asked for from behind a NAT (a private address, a server with a global
/// one: the port the client binds is not the one the server would send to), nor without a
/// socket for it.
#[test]
fn no_early_flight_from_behind_a_nat_or_without_a_socket() {
    use natter_core::driver::client::likely_behind_nat;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(likely_behind_nat(ip("192.168.1.20"), ip("203.0.113.5")));
    assert!(likely_behind_nat(ip("10.1.2.3"), ip("2001:db8::1")));
    assert!(likely_behind_nat(ip("100.64.0.9"), ip("198.51.100.1")));
    assert!(likely_behind_nat(ip("fd00::5"), ip("2001:db8::1")));
    assert!(!likely_behind_nat(ip("192.168.1.20"), ip("192.168.1.1")), "one LAN");
    assert!(!likely_behind_nat(ip("127.0.0.1"), ip("127.0.0.1")), "one machine");
    assert!(!likely_behind_nat(ip("198.51.100.7"), ip("203.0.113.5")), "both global");
    assert!(likely_behind_nat(ip("::ffff:192.168.1.20"), ip("::ffff:203.0.113.5")), "mapped");
    for early_socket in [None, Some(SocketAddr::new(ip("192.168.1.20"), 40_000))] {
        let sent =
            sent_after_connect(ip("203.0.113.5"), 1200, Duration::from_millis(20), early_socket);
        assert_eq!(sent, "download_file hello.c 1200\n");
    }
}

/// A connect that took a second or more lost its SYN or SYN-ACK (TCP's initial RTO): its time is
/// not the path's round trip, and with no other measure yet no early flight is asked for. Before,
/// the flight was paced over that second: 1 MiB at 1 MB/s on a path of 0.1 ms.
#[test]
fn a_connect_that_waited_for_a_retransmission_sizes_no_early_flight() {
    let early_socket = Some(SocketAddr::new(CLIENT, 50_123));
    let sent_after = |handshake| sent_after_connect(SERVER, 1446, handshake, early_socket);
    assert_eq!(sent_after(Duration::from_millis(1000)), "download_file hello.c 1446\n");
    assert_eq!(sent_after(Duration::from_millis(3000)), "download_file hello.c 1446\n");
    assert_eq!(sent_after(Duration::from_millis(20)), "download_file hello.c 1446 692 50000000\n");
}

/// What `natter get hello.c` writes once its runtime reports the connect (after `handshake`,
/// with `early_socket`) to a server at `server`: nothing goes out before but its name.
fn sent_after_connect(
    server: IpAddr,
    part_size: u16,
    handshake: Duration,
    early_socket: Option<SocketAddr>,
) -> String {
    let now = Instant::now();
    let mut config = ClientConfig::new("alice", Mode::get("hello.c"), server, part_size);
    config.awaits_connected = true;
    let mut d = ClientDriver::new(config, now);
    let sent = |d: &mut ClientDriver| -> String {
        let bytes: Vec<u8> = std::iter::from_fn(|| d.poll_output())
            .filter_map(|o| if let Output::Send(b) = o { Some(b) } else { None })
            .flatten()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    assert_eq!(sent(&mut d), "alice\n", "only the name before the connect");
    d.handle_input(now + handshake, Input::Connected { handshake, early_socket });
    sent(&mut d)
}
