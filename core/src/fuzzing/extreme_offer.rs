//! Offers with extreme numbers: huge sizes, tiny or huge parts, empty files, `u64::MAX` (S3,
//! P1; PROTOCOL 2.1, 2.4). A client must refuse an offer whose state it could not hold before it
//! allocates any of it: the part map (one bit a part) and its resume record grow with
//! `size / part_size`, so 4 TiB in 1-byte parts would be a 512 MiB bitmap.

use core::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::driver::client::{ClientConfig, ClientDriver, Input, Mode, Output};
use crate::transfer::parts::Layout;
use crate::wire::chat::{ServerLine, UdpOffer};
use crate::wire::datagram::{self, Datagram, MAX_REQUEST_LEN, MAX_REQUEST_PAYLOAD};

use super::chat_client::{check_one_line, check_printable};
use super::file_bytes::file_bytes;
use super::input::Choices;

/// The most bytes of download state (part bitmap, resume record) a client may take on for one
/// accepted offer. 64 MiB is 2^29 parts: 256 GiB in the smallest parts a server grants (512
/// bytes), 600 GiB in the default 1200-byte ones. An offer needing more must be refused before
/// anything is allocated for it.
pub const MAX_ACCEPTED_STATE: u64 = 64 << 20;

/// The part sizes a conforming server offers (PROTOCOL 2.1 clamps every wish to this range); an
/// offer outside it comes from a broken or hostile server.
pub const OFFERED_PART_SIZES: RangeInclusive<u16> = 512..=65_000;

/// Offers at or below this size, in conforming parts, must be taken: refusing everything would
/// satisfy the bounds trivially.
const SURELY_ACCEPTABLE: u64 = 1 << 30;

/// Accepted offers whose state is larger than this are not downloaded further: the bound is what
/// matters for them, and their half-second resume checkpoints (a record as large as the state)
/// would slow the search a hundredfold without reaching other code.
const EXERCISE_UP_TO: u64 = 4 << 20;

/// What to do when an input breaks an invariant whose fix is known to be under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownBugs {
    /// Panic, as for any other broken invariant: the default, and the corpus replay's.
    Fail,
    /// End the session quietly, so a campaign explores past a bug already reported (the fuzz
    /// target chooses this when `NATTER_FUZZ_SKIP_KNOWN_BUGS` is set).
    Skip,
}

/// Bytes of the resume record for an offer: its header, one bit a part, its CRC. The part map in
/// memory is the same bitmap.
pub fn resume_state_bytes(size: u64, part_size: u16) -> u64 {
    47 + u64::from(Layout::new(size, part_size).n_parts()).div_ceil(8) + 4
}

/// One offer of `big.bin` with fuzzer-chosen size and part size (extremes favoured), answered as a
/// runtime would, then a few parts, time and requests. Invariants: the client accepts only
/// offers whose part size a server may offer and whose state fits [`MAX_ACCEPTED_STATE`], checked
/// when it asks to open the file, before any state is built; it takes every small conforming
/// offer; an accepted empty file is kept at once; its resume records, accepted parts and
/// requests stay inside the offered file; no arithmetic overflows.
pub fn extreme_offer(data: &[u8], start: Instant, known: KnownBugs) {
    let mut c = Choices::new(data);
    let size = pick_size(&mut c);
    let part_size = pick_part_size(&mut c);
    let port = c.pick(&[55000, 0, 1, u16::MAX]);
    let flags = c.byte();
    let layout = Layout::new(size, part_size);
    let content = file_bytes;
    // The true digest for files small enough to hash here, so a download can complete.
    let blake3 = if size <= 1 << 16 && flags & 1 == 0 {
        *blake3::hash(&content(0, size as usize)).as_bytes()
    } else {
        [0xab; 32]
    };
    let token = 0x5c1e_0f3a_9b2d_4e71;
    let server_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let config = ClientConfig::new("fuzz", Mode::Interactive, server_ip, 1200);
    let mut driver = ClientDriver::new(config, start);
    let mut now = start;
    driver.handle_input(now, Input::Received(b"fuzz has joined the chat!\n"));
    driver.handle_input(now, Input::Typed(&format!("download_file big.bin {part_size}")));
    let offer = UdpOffer {
        port,
        transfer_id: 0,
        file: "big.bin".into(),
        size,
        part_size,
        blake3,
        token,
        key: None,
    };
    driver.handle_input(now, Input::Received(ServerLine::Udp(offer).encode().as_bytes()));

    let outputs = drain(&mut driver);
    let Some((id, max_datagram)) = outputs.iter().find_map(|o| match o {
        Output::Open { id, size: s, max_datagram, .. } => {
            assert_eq!(*s, size, "opened with another size than offered");
            Some((*id, *max_datagram))
        }
        _ => None,
    }) else {
        let conforming = OFFERED_PART_SIZES.contains(&part_size) && port != 0;
        assert!(!(conforming && size <= SURELY_ACCEPTABLE), "refused a sane offer: {outputs:?}");
        return;
    };
    // Checked before the runtime is told the file is open: that is when the state is built.
    let state = resume_state_bytes(size, part_size);
    let oversized = state > MAX_ACCEPTED_STATE;
    let odd_parts = !OFFERED_PART_SIZES.contains(&part_size);
    if oversized || odd_parts {
        if known == KnownBugs::Skip {
            return;
        }
        panic!(
            "accepted an offer of {size} bytes in {part_size}-byte parts: {state} bytes of \
             state (bound {MAX_ACCEPTED_STATE}), part size {} the range a server offers",
            if odd_parts { "outside" } else { "inside" }
        );
    }
    assert!(port != 0, "accepted an offer on port 0");
    assert!(max_datagram <= datagram::PART_HEADER_LEN + usize::from(part_size));
    if state > EXERCISE_UP_TO {
        return;
    }

    let resume = (flags & 2 != 0).then(|| c.chunk().to_vec());
    driver.handle_input(now, Input::Opened { id, resume });
    let mut buf = [0u8; MAX_REQUEST_LEN];
    let mut kept = false;
    for round in 0..8 {
        for output in drain(&mut driver) {
            match output {
                Output::SaveRecord { record, .. } => {
                    assert!(record.len() as u64 == state, "a record of the wrong length");
                }
                Output::Keep { .. } => kept = true,
                Output::Progress { progress, .. } => {
                    assert!(progress.bytes_received <= size && progress.size == size);
                }
                _ => {}
            }
        }
        if round == 0 && size == 0 && flags & 1 == 0 {
            assert!(kept, "an accepted empty file was not kept at once");
        }
        while let Some((_, n)) = driver.poll_transmit(now, &mut buf) {
            if let Ok(Datagram::Request(request)) = datagram::parse(&buf[..n]) {
                let mut bytes = 0u64;
                for &(first, last) in &request.ranges {
                    assert!(last < layout.n_parts(), "asked for part {last} past the end");
                    bytes += (first..=last).map(|p| layout.part_len(p) as u64).sum::<u64>();
                }
                assert!(bytes <= MAX_REQUEST_PAYLOAD, "asked for {bytes} bytes at once");
            }
        }
        // A part: the last, the first, or any index, with its true length or any length.
        let part = match c.byte() % 3 {
            0 => layout.n_parts().saturating_sub(1),
            1 => 0,
            _ => c.u32(),
        };
        let len = match c.byte() % 2 {
            0 => layout.part_len(part),
            _ => usize::from(c.u16()),
        };
        let offset = layout.offset(part);
        let mut dgram = datagram::encode_part(token, c.u32() % 4, part, &content(offset, len));
        if let Some(accept) = driver.handle_datagram(now, id, &mut dgram) {
            let got = accept.payload.len() as u64;
            assert_eq!(accept.offset, offset, "accepted at the wrong offset");
            assert!(accept.offset.checked_add(got).is_some_and(|end| end <= size));
            assert_eq!(got, layout.part_len(accept.part) as u64, "accepted a part of wrong size");
            while let Some((at, n)) = driver.next_to_hash(id) {
                assert!(at.checked_add(n as u64).is_some_and(|end| end <= size));
                driver.hash(id, at, &content(at, n));
            }
        }
        now += Duration::from_millis(u64::from(c.byte()) * 20);
        if driver.poll_timeout().is_some_and(|at| at <= now) {
            driver.handle_timeout(now);
        }
    }
}

/// A file size, extremes favoured.
fn pick_size(c: &mut Choices<'_>) -> u64 {
    let k = u32::from(c.byte() % 64);
    match c.byte() % 8 {
        0 => c.pick(&[0, 1, 511, 512, 513, 65_000, 65_001, 1 << 20]),
        1 => c.pick(&[u64::MAX, u64::MAX - 1, u64::from(u32::MAX), 4 << 40, 1 << 40, 1 << 30]),
        2 => 1 << k,
        3 => (1 << k) - 1,
        4 => (1 << k) + 1,
        5 => u64::from(c.u16()),
        _ => c.u64(),
    }
}

/// A part size, extremes favoured.
fn pick_part_size(c: &mut Choices<'_>) -> u16 {
    match c.byte() % 2 {
        0 => c.pick(&[0, 1, 2, 511, 512, 513, 1200, 65_000, 65_001, u16::MAX]),
        _ => c.u16(),
    }
}

/// Every output until none is left, with the checks that hold for any session.
fn drain(driver: &mut ClientDriver) -> Vec<Output> {
    let mut outputs = Vec::new();
    while let Some(output) = driver.poll_output() {
        match &output {
            Output::Send(bytes) => check_one_line(bytes),
            Output::Notice(text) | Output::Disconnected(text) => check_printable(text),
            _ => {}
        }
        outputs.push(output);
    }
    outputs
}
