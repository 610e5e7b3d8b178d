//! Unit tests of `transfer/congestion/newreno.rs`, kept out of `core/src`
//! because they take their base instant from the clock (the core never reads one).
//! Compiled as that module's `tests` child module.
use super::*;

fn delivery(now: Instant, sent: Instant) -> Delivery {
    Delivery {
        now,
        bytes: 1000,
        sent,
        rtt: None,
        rate: None,
        round_start: false,
        in_flight: 0,
        srtt: Duration::from_millis(10),
        rttvar: Duration::ZERO,
    }
}

#[test]
fn slow_start_then_one_halving_per_round() {
    let t0 = Instant::now();
    let mut c = NewReno::new(1000);
    assert_eq!(c.window(), 10_000);
    c.on_delivered(&delivery(t0, t0));
    assert_eq!(c.window(), 11_000);
    let t1 = t0 + Duration::from_millis(10);
    c.on_lost(t1, 1000, t0, false);
    assert_eq!(c.window(), 5500);
    // A second loss from the same flight does not halve again.
    c.on_lost(t1, 1000, t0, false);
    assert_eq!(c.window(), 5500);
    // Deliveries of the old flight do not grow the window during recovery.
    c.on_delivered(&delivery(t1, t0));
    assert_eq!(c.window(), 5500);
    // Congestion avoidance: + part * bytes / cwnd.
    let t2 = t1 + Duration::from_millis(10);
    c.on_delivered(&delivery(t2, t2));
    assert_eq!(c.window(), 5500 + 1000 * 1000 / 5500);
    c.on_lost(t2, 1000, t2, true);
    assert_eq!(c.window(), 2000);
}
