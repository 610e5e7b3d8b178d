//! Unit tests of `chat/flood.rs`, kept out of `core/src`
//! because they take their base instant from the clock (the core never reads one).
//! Compiled as that module's `tests` child module.
use super::*;

#[test]
fn a_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut b = InputBudget::new(t0, 1000, 4000);
    assert_eq!(b.paused_until(t0), None);
    b.spend(t0, 3000);
    assert_eq!(b.paused_until(t0), None, "within the burst");
    b.spend(t0, 3000);
    let resume = b.paused_until(t0).expect("over the burst: paused");
    // 2000 bytes of debt at 1000 bytes/s: two seconds (and a millisecond for the next byte).
    assert!(resume >= t0 + Duration::from_secs(2) && resume <= t0 + Duration::from_millis(2002));
    assert_eq!(b.paused_until(resume), None);
    // Never more than the burst saved up, however long the silence.
    let later = resume + Duration::from_secs(3600);
    b.spend(later, 4000);
    assert!(b.paused_until(later).is_some());
}

#[test]
fn zero_rate_is_unlimited() {
    let t0 = Instant::now();
    let mut b = InputBudget::new(t0, 0, 0);
    b.spend(t0, 10_000_000);
    assert_eq!(b.paused_until(t0), None);
}
