//! The client driver under a hostile server: chat bytes, offers it did or did not ask for,
//! datagrams on its download sockets, resume records from disk (S3, U1-U6, P1; PROTOCOL 1.2,
//! 2.1-2.4).

use core::net::{IpAddr, Ipv4Addr};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::chat::client::is_safe_file_name;
use crate::driver::client::{ClientConfig, ClientDriver, DownloadId, Input, Mode, Output};
use crate::transfer::parts::{Layout, PartMap};
use crate::wire::chat::{ClientLine, ServerLine};
use crate::wire::datagram::{self, AbortCode, Datagram, MAX_REQUEST_LEN};

use super::chat_client::{check_event, check_one_line, check_printable, offer};
use super::file_bytes::file_bytes;
use super::input::Choices;

/// The files a session asks for and is offered (the fuzzer names others through raw lines).
const FILES: [&str; 3] = ["hello.c", "big.bin", "a.txt"];
const NAME: &str = "fuzz";

/// What the server offered for a file: enough to build its parts and check its records.
#[derive(Debug, Clone)]
struct Offered {
    token: u64,
    layout: Layout,
    blake3: [u8; 32],
}

/// One download as the runtime sees it.
#[derive(Debug)]
struct Download {
    file: String,
    offered: Option<Offered>,
    opened: bool,
    keeping: bool,
    ended: bool,
    released: bool,
}

/// The runtime's side: the disk (`.part` files and records survive a download, as on a real
/// disk), the downloads, and what the client asked for.
struct Runtime {
    driver: ClientDriver,
    server_ip: IpAddr,
    now: Instant,
    parts: HashMap<String, Vec<u8>>,
    records: HashMap<String, Vec<u8>>,
    downloads: BTreeMap<DownloadId, Download>,
    /// Files named by `download_file` lines sent and not yet answered by an Open.
    asked: Vec<String>,
    /// The offer just fed (cleared after each drain): an Open in the same turn is for it.
    just_offered: Option<(String, Offered)>,
    finished: bool,
}

/// A session chosen by the fuzzer's bytes: the first byte picks the mode (a person's chat or
/// `natter get`) and the configured part size; then each byte is an operation. Invariants: no
/// panic; only offers of files the client asked for are opened, with safe names, on the server's
/// address, one download per file at a time; every line sent is one line; everything shown is
/// safe to print; resume records load back for their offer; accepted parts lie inside the file
/// and what is kept hashes to the offered digest; requests name only parts of the file; a
/// download ends once and is released once; the session finishes once.
pub fn client_driver_session(data: &[u8], start: Instant) {
    let mut c = Choices::new(data);
    let setup = c.byte();
    let mode = if setup & 1 == 0 { Mode::Interactive } else { Mode::get(FILES[0]) };
    let part_size = [1200, 512, 65_000, 0][usize::from(setup >> 1) % 4];
    let server_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut config = ClientConfig::new(NAME, mode, server_ip, part_size);
    config.give_up_after = Duration::from_secs(1 + u64::from(setup >> 4));
    let mut rt = Runtime {
        driver: ClientDriver::new(config, start),
        server_ip,
        now: start,
        parts: HashMap::new(),
        records: HashMap::new(),
        downloads: BTreeMap::new(),
        asked: Vec::new(),
        just_offered: None,
        finished: false,
    };
    rt.drain();
    while !c.is_empty() {
        rt.step(&mut c);
        rt.drain();
    }
}

impl Runtime {
    fn step(&mut self, c: &mut Choices<'_>) {
        let now = self.now;
        let op = c.byte();
        match op % 12 {
            0 => self.driver.handle_input(now, Input::Received(c.chunk())),
            1 => {
                let line = super::chat_client::server_line(c, NAME);
                self.driver.handle_input(now, Input::Received(line.as_bytes()));
            }
            2 => self.offer(c),
            3 => {
                let file = FILES[usize::from(op >> 4) % FILES.len()];
                let typed = match op >> 6 {
                    0 => format!("download_file {file}"),
                    1 => format!("download_file {file} {}", c.u16()),
                    2 => c.text(),
                    _ => c.pick(&["show", "get_list_file", "{quit}", "~bob hi", "", "hi"]).into(),
                };
                self.driver.handle_input(now, Input::Typed(&typed));
            }
            4 => self.open(c),
            5 | 6 => self.datagram(c),
            7 => {
                self.now += Duration::from_millis(u64::from(op >> 4) * 50);
                if op & 0x10 != 0
                    && let Some(at) = self.driver.poll_timeout()
                {
                    self.now = self.now.max(at);
                }
                if self.driver.poll_timeout().is_some_and(|at| at <= self.now) {
                    self.driver.handle_timeout(self.now);
                }
            }
            8 => {
                let Some(id) = self.pick_download(c) else { return };
                let input = if op & 0x10 == 0 {
                    Input::Saved { id, path: format!("Downloads/{id}") }
                } else {
                    Input::IoFailed { id, error: "disk full".into() }
                };
                self.driver.handle_input(now, input);
            }
            9 if op >> 4 == 0 => self.driver.handle_input(now, Input::ServerClosed),
            9 => self.driver.handle_input(now, Input::InputEnded),
            10 => {
                // Our own join, then whatever the fuzzer adds on the same read.
                let mut bytes = format!("{NAME} has joined the chat!\n").into_bytes();
                bytes.extend_from_slice(c.chunk());
                self.driver.handle_input(now, Input::Received(&bytes));
            }
            _ => {
                let id = DownloadId::from(c.byte() % 4);
                let _ = self.driver.handle_datagram(now, id, &mut c.chunk().to_vec());
            }
        }
    }

    /// A well-formed offer of one of the files, with any numbers; sizes stay small enough to hash
    /// here (`extreme_offer` covers the rest).
    fn offer(&mut self, c: &mut Choices<'_>) {
        let file = c.pick(&FILES);
        let mut o = offer(c, Some(file));
        o.size %= 1 << 16;
        if c.byte() & 1 == 0 {
            o.blake3 = *blake3::hash(&file_bytes(0, o.size as usize)).as_bytes();
        }
        let layout = Layout::new(o.size, o.part_size);
        let offered = Offered { token: o.token, layout, blake3: o.blake3 };
        self.just_offered = Some((file.into(), offered));
        let line = ServerLine::Udp(o).encode();
        self.driver.handle_input(self.now, Input::Received(line.as_bytes()));
    }

    /// Answers the oldest download waiting for its files: opened (with the record on disk, none,
    /// or bytes from the fuzzer) or failed.
    fn open(&mut self, c: &mut Choices<'_>) {
        let Some((&id, d)) = self.downloads.iter().find(|(_, d)| !d.opened && !d.released) else {
            return;
        };
        let input = match c.byte() % 4 {
            0 => Input::Opened { id, resume: self.records.get(&d.file).cloned() },
            1 => Input::Opened { id, resume: None },
            2 => Input::Opened { id, resume: Some(c.chunk().to_vec()) },
            _ => Input::IoFailed { id, error: "permission denied".into() },
        };
        if let Some(d) = self.downloads.get_mut(&id) {
            d.opened = true;
        }
        self.driver.handle_input(self.now, input);
    }

    /// A datagram on a download's socket: a part with the true bytes or forged ones (valid CRC),
    /// an ABORT, a FINISHED or REQUEST (wrong direction), or raw bytes; most carry the token.
    fn datagram(&mut self, c: &mut Choices<'_>) {
        let Some(id) = self.pick_download(c) else { return };
        let Some(offered) = self.downloads.get(&id).and_then(|d| d.offered.clone()) else {
            return;
        };
        let layout = offered.layout;
        let token = offered.token;
        let kind = c.byte();
        let part = match kind >> 4 {
            0..=11 => u32::from(c.byte()) % layout.n_parts().saturating_add(1),
            _ => c.u32(),
        };
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let dgram = match kind % 6 {
            0..=2 => {
                let offset = layout.offset(part);
                let mut payload = file_bytes(offset, layout.part_len(part));
                if kind % 6 == 2 {
                    match payload.first_mut() {
                        Some(b) => *b ^= 0x55,
                        None => payload.push(0),
                    }
                }
                datagram::encode_part(token, u32::from(c.byte()), part, &payload)
            }
            3 => {
                let reason = c.text();
                let n = datagram::abort_len(&reason);
                let mut out = vec![0u8; n];
                datagram::encode_abort(token, AbortCode::from(c.u16()), &reason, &mut out);
                out
            }
            4 => {
                let n = datagram::encode_request(token, c.u32(), &[(part, part)], &mut buf);
                buf[..n].to_vec()
            }
            _ => c.chunk().to_vec(),
        };
        let mut dgram = dgram;
        let Some(accept) = self.driver.handle_datagram(self.now, id, &mut dgram) else {
            return;
        };
        let file = self.downloads[&id].file.clone();
        let payload = dgram.get(accept.payload.clone());
        let payload = payload.unwrap_or_else(|| panic!("accepted {accept:?} outside the datagram"));
        assert_eq!(payload.len(), layout.part_len(accept.part), "accepted a part of wrong size");
        assert_eq!(accept.offset, layout.offset(accept.part), "accepted at the wrong offset");
        let at = accept.offset as usize;
        let disk = self.parts.entry(file.clone()).or_default();
        if disk.len() < at + payload.len() {
            disk.resize(at + payload.len(), 0);
        }
        disk[at..at + payload.len()].copy_from_slice(payload);
        while let Some((offset, len)) = self.driver.next_to_hash(id) {
            let end = offset + len as u64;
            assert!(end <= layout.size, "asked to hash past the end of the file");
            let disk = self.parts.entry(file.clone()).or_default();
            if disk.len() < end as usize {
                disk.resize(end as usize, 0);
            }
            let bytes = disk[offset as usize..end as usize].to_vec();
            self.driver.hash(id, offset, &bytes);
        }
    }

    /// A download the runtime knows (mostly a live one), or an id it never saw.
    fn pick_download(&self, c: &mut Choices<'_>) -> Option<DownloadId> {
        let ids: Vec<DownloadId> = self.downloads.keys().copied().collect();
        let b = usize::from(c.byte());
        if ids.is_empty() || b == 0xff {
            return Some(1000);
        }
        Some(ids[b % ids.len()])
    }

    /// Performs every output and sends every datagram, checking each.
    fn drain(&mut self) {
        self.drain_all();
        self.just_offered = None;
    }

    fn drain_all(&mut self) {
        for _ in 0..64 {
            let mut any = false;
            while let Some(output) = self.driver.poll_output() {
                any = true;
                self.perform(output);
            }
            let mut buf = [0u8; MAX_REQUEST_LEN];
            while let Some((id, n)) = self.driver.poll_transmit(self.now, &mut buf) {
                any = true;
                self.check_transmit(id, &buf[..n]);
            }
            if !any {
                return;
            }
        }
        panic!("the driver never runs out of things to do");
    }

    fn check_transmit(&self, id: DownloadId, bytes: &[u8]) {
        let d = self.downloads.get(&id);
        let d = d.unwrap_or_else(|| panic!("a datagram for download {id}, never opened"));
        assert!(d.opened && !d.released, "a datagram on a socket not open");
        let parsed = datagram::parse(bytes);
        let parsed =
            parsed.unwrap_or_else(|e| panic!("the client sent a datagram it cannot parse: {e}"));
        let Some(o) = &d.offered else { return };
        assert_eq!(parsed.token(), o.token, "a datagram with another download's token");
        match parsed {
            Datagram::Request(r) => {
                for (_, last) in r.ranges {
                    assert!(last < o.layout.n_parts(), "asked for part {last} past the end");
                }
            }
            // FINISHED follows a kept file, and any failure but an ABORT (PROTOCOL 2.3): for
            // the server it only means "free the port".
            Datagram::Finished { .. } => {}
            other => panic!("the client sent {other:?}"),
        }
    }

    fn perform(&mut self, output: Output) {
        // Once the session is over the client acts no more: it may still show what the server
        // said on the read that ended it (a refused name in `natter get` ends the session while
        // the rest of that read is still being parsed; the fuzzer found this), but it opens,
        // sends, saves and keeps nothing.
        assert!(
            !self.finished
                || matches!(output, Output::Release { .. } | Output::Event(_) | Output::Notice(_)),
            "{output:?} after the session finished"
        );
        match output {
            Output::Send(bytes) => {
                check_one_line(&bytes);
                let line = std::str::from_utf8(&bytes[..bytes.len() - 1]).ok();
                if let Some(Ok(ClientLine::Download { file, .. })) = line.map(ClientLine::parse) {
                    self.asked.push(file);
                }
            }
            Output::Event(event) => check_event(&event),
            Output::Notice(text) | Output::Disconnected(text) => check_printable(&text),
            Output::Progress { id, progress, .. } => {
                assert!(self.downloads.contains_key(&id), "progress of an unknown download");
                assert!(progress.bytes_received <= progress.size, "more bytes than the file");
                assert!(progress.parts_received <= progress.n_parts, "more parts than the file");
            }
            Output::Open { id, file, size, peer, max_datagram, .. } => {
                assert!(is_safe_file_name(&file), "opened an unsafe name: {file:?}");
                assert_eq!(peer.ip(), self.server_ip, "a download from another host");
                assert_ne!(peer.port(), 0, "a download from port 0");
                let asked = self.asked.iter().position(|f| *f == file);
                let asked = asked.unwrap_or_else(|| panic!("opened {file}, never asked for"));
                self.asked.remove(asked);
                // A download is over once ended, or released without an end (the U5 fallback
                // releases one and asks for the file again in small parts).
                assert!(
                    !self.downloads.values().any(|d| d.file == file && !d.ended && !d.released),
                    "two downloads of {file} at once"
                );
                assert!(!self.downloads.contains_key(&id), "download id {id} used twice");
                let offered = self.just_offered.take().filter(|(f, _)| *f == file).map(|(_, o)| o);
                if let Some(o) = &offered {
                    assert_eq!(size, o.layout.size, "opened with another size than offered");
                    let part = usize::from(o.layout.part_size);
                    assert_eq!(
                        max_datagram,
                        datagram::PART_HEADER_LEN + part,
                        "wrong datagram size"
                    );
                }
                let d = Download {
                    file,
                    offered,
                    opened: false,
                    keeping: false,
                    ended: false,
                    released: false,
                };
                self.downloads.insert(id, d);
            }
            Output::SaveRecord { id, record } => {
                let d = self
                    .downloads
                    .get(&id)
                    .unwrap_or_else(|| panic!("a record for an unknown download"));
                if let Some(o) = &d.offered {
                    let loaded = PartMap::load(o.layout, &o.blake3, &record);
                    assert!(loaded.is_ok(), "a record that does not load back: {loaded:?}");
                }
                self.records.insert(d.file.clone(), record);
            }
            Output::Keep { id } => {
                let d = self
                    .downloads
                    .get_mut(&id)
                    .unwrap_or_else(|| panic!("keep an unknown download"));
                assert!(d.opened && !d.ended && !d.keeping, "keep out of turn");
                d.keeping = true;
                if let Some(o) = &d.offered {
                    let disk = self.parts.get(&d.file).map_or(&[][..], Vec::as_slice);
                    let disk = disk.get(..o.layout.size as usize).unwrap_or(disk);
                    assert_eq!(blake3::hash(disk).as_bytes(), &o.blake3, "kept wrong bytes");
                }
            }
            Output::Discard { id } => {
                let d = self
                    .downloads
                    .get(&id)
                    .unwrap_or_else(|| panic!("discard an unknown download"));
                self.parts.remove(&d.file);
                self.records.remove(&d.file);
            }
            Output::Release { id } => {
                if let Some(d) = self.downloads.get_mut(&id) {
                    assert!(!d.released, "download {id} released twice");
                    d.released = true;
                    if d.keeping {
                        // Kept: the file was renamed and its record removed.
                        self.parts.remove(&d.file);
                        self.records.remove(&d.file);
                    }
                }
            }
            Output::Ended { id, result, .. } => {
                let d = self
                    .downloads
                    .get_mut(&id)
                    .unwrap_or_else(|| panic!("end of an unknown download"));
                assert!(!d.ended, "download {id} ended twice");
                d.ended = true;
                if let Ok(report) = result {
                    assert!(d.keeping, "a report for a download never kept");
                    if let Some(o) = &d.offered {
                        assert_eq!(report.size, o.layout.size);
                    }
                }
            }
            Output::FileDone { .. } => assert!(!self.finished, "a file done after the finish"),
            Output::Finish(_) => self.finished = true,
        }
    }
}
