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

/// Issue 11: during the first flight's round the controller keeps the flight's window, and
/// paces the flight's repairs at the rate the flight arrives, never above the flight's own: the
/// model's first samples span the round trip before the flight and read far below the path.
#[test]
fn the_first_flights_repairs_keep_its_window_and_go_at_its_arrival_rate() {
    let t0 = Instant::now();
    let rtt = Duration::from_millis(50);
    let first = FirstFlight { window: 1 << 20, rate: 21_000_000.0 };
    let mut bbr = Bbr::new(1446).with_first_flight(Some(first));
    let part = |at: Duration, round_start: bool, delivered: u64| Delivery {
        now: t0 + at,
        bytes: 1446,
        // Asked for with the offer, a round trip before the first arrival.
        sent: t0 - rtt,
        rtt: Some(rtt),
        rate: Some(RateSample { delivered, interval: rtt + at, app_limited: false }),
        round_start,
        in_flight: 600_000,
        srtt: rtt,
        rttvar: Duration::ZERO,
    };
    bbr.on_delivered(&part(Duration::ZERO, true, 1446));
    assert_eq!(bbr.pacing_rate(rtt), Some(first.rate), "no span of arrivals yet");
    // 12.5 MB/s arriving (100 Mbit/s): a part every 115.68 us, for 10 ms.
    let every = Duration::from_nanos(115_680);
    for i in 1..=86u32 {
        bbr.on_delivered(&part(every * i, false, 1446 * u64::from(i)));
    }
    let rate = bbr.pacing_rate(rtt).expect("a rate");
    // 87 parts over 86 gaps: the first part is counted too (`Bbr::on_delivered`).
    let arrived = 87.0 * 1446.0 / (86.0 * every.as_secs_f64());
    assert!((rate - arrived).abs() < 1.0, "the arrival rate: {rate}, not {arrived}");
    assert_eq!(bbr.window(), 1 << 20, "the flight's window, not the model's");
    let model = bbr.bw().expect("samples were taken");
    assert!(model < 3e6, "the model's samples read low: {model}");
    // A part asked for after the first arrival came back: the controller's own round, its model
    // (STARTUP: the startup gain on its own low estimate, a window of that over the round trip).
    bbr.on_delivered(&part(rtt + Duration::from_millis(11), true, 1446 * 300));
    let model = bbr.bw().expect("an estimate");
    assert_eq!(bbr.pacing_rate(rtt), Some(STARTUP_GAIN * model));
    assert_eq!(bbr.window(), (STARTUP_GAIN * model * rtt.as_secs_f64()) as u64);

    // Arrivals faster than the flight was asked at do not raise its pace.
    let mut bbr = Bbr::new(1446).with_first_flight(Some(first));
    for i in 0..=40u32 {
        bbr.on_delivered(&part(Duration::from_micros(50) * i, i == 0, 1446));
    }
    assert_eq!(bbr.pacing_rate(rtt), Some(first.rate));
}

/// Issue 11 (review): a probe timeout during the first flight ends it; a late part of the flight
/// then brings back the model's window, not the flight's.
#[test]
fn a_probe_timeout_ends_the_first_flight() {
    let t0 = Instant::now();
    let rtt = Duration::from_millis(50);
    let first = FirstFlight { window: 1 << 20, rate: 21_000_000.0 };
    let mut bbr = Bbr::new(1446).with_first_flight(Some(first));
    let late = |at: Duration, round_start: bool| Delivery {
        now: t0 + at,
        bytes: 1446,
        sent: t0,
        rtt: None,
        rate: None,
        round_start,
        in_flight: 0,
        srtt: rtt,
        rttvar: Duration::ZERO,
    };
    bbr.on_delivered(&late(rtt, true));
    assert_eq!(bbr.window(), 1 << 20);
    bbr.on_lost(t0 + rtt * 4, 1446 * 100, t0, true);
    assert_eq!(bbr.window(), 4 * 1446, "collapsed");
    bbr.on_delivered(&late(rtt * 5, false));
    assert_eq!(bbr.window(), initial_window(1446), "no estimate yet: the initial window");
    assert_ne!(bbr.pacing_rate(rtt), Some(first.rate));
}
