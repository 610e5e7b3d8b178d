//! Unit tests of `transfer/receiver/requests.rs`, kept beside the other unit tests: they read the
//! clock for a starting instant, which the core itself never does.

// PROTOCOL 2.7: a sealed transfer's req_seq never wraps under one key.
use std::time::{Duration, Instant};

use super::super::{Receiver, ReceiverConfig, ReceiverState, TRANSMIT_BUF_LEN, TransferError};
use crate::wire::datagram::Datagram;
use crate::wire::sealed::{self, SealKey};

#[test]
fn a_sealed_receiver_fails_rather_than_wrap_its_req_seq() {
    let t0 = Instant::now();
    let key = SealKey::new(&[9; 32]);
    let mut config = ReceiverConfig::new(1, 1 << 20, 1000, [0; 32]);
    config.seal = Some(key.clone());
    config.request_copies = 1;
    let mut r = Receiver::new(config, t0);
    // As if 2^32 - 1 requests had gone out already.
    r.next_req_seq = u32::MAX;
    r.req_times_base = u32::MAX;
    r.progress.requests_sent = u64::from(u32::MAX);
    let mut buf = [0u8; TRANSMIT_BUF_LEN];
    let n = r.poll_transmit(t0, &mut buf).expect("the last req_seq is used");
    match sealed::open(&key, 1, &mut buf[..n]) {
        Ok(Datagram::Request(req)) => assert_eq!(req.req_seq, u32::MAX),
        other => panic!("{other:?}"),
    }
    let mut t = t0;
    while r.state() == ReceiverState::Running {
        t += Duration::from_millis(10);
        r.handle_timeout(t);
        let _ = r.poll_transmit(t, &mut buf);
        assert!(t < t0 + Duration::from_secs(5), "never tried another request");
    }
    assert_eq!(r.state(), ReceiverState::Failed(TransferError::RequestsExhausted));
    // FINISHED still goes out, so the server frees its port: sealed, with no req_seq in it.
    let n = r.poll_transmit(t, &mut buf).expect("FINISHED copies");
    assert_eq!(n, sealed::FINISHED_LEN);
}

#[test]
fn a_sealed_tail_repair_is_not_asked_again_past_the_last_req_seq() {
    // The first asking of a tail repair takes the last req_seq: a second one would wrap and
    // repeat a nonce (PROTOCOL 2.7), so there is none.
    let t0 = Instant::now();
    let key = SealKey::new(&[9; 32]);
    let mut config = ReceiverConfig::new(1, 10_000, 1000, [0; 32]);
    config.seal = Some(key.clone());
    config.request_copies = 1;
    config.controller = crate::transfer::congestion::ControllerKind::NewReno;
    let mut r = Receiver::new(config, t0);
    let mut buf = [0u8; TRANSMIT_BUF_LEN];
    let n = r.poll_transmit(t0, &mut buf).expect("the first request");
    assert!(matches!(sealed::open(&key, 1, &mut buf[..n]), Ok(Datagram::Request(_))));
    // As if the first asking of a tail repair had just taken req_seq 2^32 - 1.
    r.progress.requests_sent = u64::from(u32::MAX);
    r.next_req_seq = 0;
    r.tail_repair = vec![(6, 6)];
    assert_eq!(r.tail_repair_again(t0, &mut buf), None, "req_seq 0 would repeat a nonce");
    assert!(r.tail_repair.is_empty());
}
