//! Unit tests of `transfer/congestion/bbr.rs`, kept out of `core/src`
//! because they take their base instant from the clock (the core never reads one).
//! Compiled as that module's `tests` child module.
use super::super::RateSample;
use super::*;

/// Feeds a steady path: every round `per_round` parts are delivered at `rate` bytes/s with RTT
/// `rtt`, and `lost` parts of each round are reported lost.
fn drive(bbr: &mut Bbr, t0: Instant, rounds: u64, rate: f64, rtt: Duration, lost: u64) {
    for round in 0..rounds {
        let now = t0 + rtt * (round as u32 + 1);
        for i in 0..20u64 {
            bbr.on_delivered(&Delivery {
                now,
                bytes: 1000,
                sent: now - rtt,
                rtt: Some(rtt),
                rate: Some(RateSample {
                    delivered: (rate * rtt.as_secs_f64()) as u64,
                    interval: rtt,
                    app_limited: false,
                }),
                round_start: i == 0,
                in_flight: 10_000,
                srtt: rtt,
                rttvar: Duration::ZERO,
            });
        }
        for _ in 0..lost {
            bbr.on_lost(now, 1000, now - rtt, false);
        }
    }
}

#[test]
fn leaves_startup_when_bandwidth_plateaus() {
    let t0 = Instant::now();
    let mut bbr = Bbr::new(1000);
    drive(&mut bbr, t0, 10, 1e6, Duration::from_millis(20), 0);
    assert!(bbr.filled_pipe);
    assert!(matches!(bbr.mode, Mode::ProbeBw { .. } | Mode::Drain));
    // cwnd = 2 * 1e6 B/s * 20 ms = 40 kB.
    assert_eq!(bbr.window(), 40_000);
}

#[test]
fn random_loss_is_compensated_not_obeyed() {
    let t0 = Instant::now();
    let mut bbr = Bbr::new(1000);
    // 20 delivered + 5 lost per round: 20% loss, no queue.
    drive(&mut bbr, t0, 40, 1e6, Duration::from_millis(20), 5);
    assert!((bbr.loss_rate() - 0.2).abs() < 0.02, "{}", bbr.loss_rate());
    let pacing = bbr.pacing_rate(Duration::from_millis(20)).unwrap_or(0.0);
    assert!(pacing >= 1e6 * 0.75 / 0.8 * 0.99, "pacing {pacing}");
}

#[test]
fn loss_with_a_standing_queue_is_not_compensated() {
    let t0 = Instant::now();
    let mut bbr = Bbr::new(1000);
    drive(&mut bbr, t0, 10, 1e6, Duration::from_millis(20), 0);
    // RTT doubled (queue) and heavy loss: congestion, so no compensation is learnt.
    drive(&mut bbr, t0 + Duration::from_secs(1), 20, 1e6, Duration::from_millis(40), 10);
    assert_eq!(bbr.loss_rate(), 0.0);
}

/// A compensation learnt too high (or right, on a path that since got busier) measures itself
/// back: asking for `1 / (1 - loss)` more makes a full queue drop exactly the excess. Rounds that
/// lose parts behind a standing queue must therefore turn it down, not leave it where it was.
#[test]
fn losses_behind_a_standing_queue_back_the_compensation_off() {
    let t0 = Instant::now();
    let mut bbr = Bbr::new(1000);
    drive(&mut bbr, t0, 40, 1e6, Duration::from_millis(20), 5);
    assert!(bbr.loss_rate() > 0.15, "{}", bbr.loss_rate());
    // 6 ms of standing queue on a 20 ms path, and the same losses.
    drive(&mut bbr, t0 + Duration::from_secs(1), 20, 1e6, Duration::from_millis(26), 5);
    assert!(bbr.loss_rate() < 0.01, "{}", bbr.loss_rate());
}

/// A queue of a fifth of the round trip is a standing queue: its losses are not learnt (the
/// harness's 10 ms queue on a 50 ms path hid under the old 25% allowance).
#[test]
fn a_queue_of_a_fifth_of_the_round_trip_is_not_queue_free() {
    let t0 = Instant::now();
    let mut bbr = Bbr::new(1000);
    drive(&mut bbr, t0, 10, 1e6, Duration::from_millis(50), 0);
    drive(&mut bbr, t0 + Duration::from_secs(1), 20, 1e6, Duration::from_millis(60), 5);
    assert_eq!(bbr.loss_rate(), 0.0);
}
