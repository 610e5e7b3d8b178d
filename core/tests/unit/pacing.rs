//! Unit tests of `transfer/pacing.rs`, kept out of `core/src`
//! because they take their base instant from the clock (the core never reads one).
//! Compiled as that module's `tests` child module.
use super::*;

#[test]
fn spaces_requests_by_size_over_rate() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    assert!(p.can_send(t0));
    p.on_send(t0, 10_000, Some(1e6));
    assert_eq!(p.next_send(), Some(t0 + Duration::from_millis(10)));
    assert!(!p.can_send(t0 + Duration::from_millis(9)));
    // Sent on time: the next slot follows the scheduled one.
    let t1 = t0 + Duration::from_millis(10);
    p.on_send(t1 + Duration::from_micros(300), 10_000, Some(1e6));
    assert_eq!(p.next_send(), Some(t1 + Duration::from_millis(10)));
    // Late by 3 ms (a slow event loop): counted from the slot, so the next one is due already
    // and the average rate holds.
    let t3 = t1 + Duration::from_millis(10);
    p.on_send(t3 + Duration::from_millis(3), 1_000, Some(1e6));
    assert_eq!(p.next_send(), Some(t3 + Duration::from_millis(1)));
    assert!(p.can_send(t3 + Duration::from_millis(3)));
    // After an idle second no credit is banked.
    let t2 = t0 + Duration::from_secs(1);
    p.on_send(t2, 10_000, Some(1e6));
    assert_eq!(p.next_send(), Some(t2 + Duration::from_millis(10)));
    p.on_send(t2, 1, None);
    assert!(p.can_send(t2));
}

#[test]
fn batch_size_bounds() {
    // 12.5 MB/s: 12.5 kB per ms.
    assert_eq!(Pacer::batch_bytes(Some(12.5e6), 1200, 1 << 20), 12_500);
    assert_eq!(Pacer::batch_bytes(Some(12.5e6), 1200, 8_000), 2_000);
    assert_eq!(Pacer::batch_bytes(Some(1.0), 1200, 8_000), 1200);
    assert_eq!(Pacer::batch_bytes(None, 1200, 4_800), 4_800);
    assert_eq!(Pacer::batch_bytes(None, 1200, 100), 1200);
}
