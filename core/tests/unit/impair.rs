//! Unit tests of `impair/mod.rs`, kept out of `core/src`
//! because they take their base instant from the clock (the core never reads one).
//! Compiled as that module's `tests` child module.
use super::*;
use crate::sim::damage::DamageMix;

fn clean() -> LinkConfig {
    LinkConfig::clean(0, Duration::ZERO, 0)
}

fn drain(imp: &mut Impairer, now: Instant) -> Vec<Delivery> {
    std::iter::from_fn(|| imp.poll_transmit(now)).collect()
}

#[test]
fn a_clean_link_delivers_everything_at_once_in_order() {
    let t0 = Instant::now();
    let mut imp = Impairer::new(ImpairConfig::new(clean(), clean()), 1, t0);
    for i in 0..10u8 {
        imp.handle_datagram(t0, Way::ToServer, 3, &[i; 20]);
    }
    let out = drain(&mut imp, t0);
    assert_eq!(out.len(), 10);
    for (i, d) in out.iter().enumerate() {
        assert_eq!(d.bytes, vec![i as u8; 20]);
        assert_eq!((d.way, d.flow), (Way::ToServer, 3));
    }
    assert_eq!(imp.poll_timeout(), None);
    assert_eq!(imp.held_bytes(), 0);
    let c = imp.counters(Way::ToServer);
    assert_eq!((c.received, c.delivered, c.received_bytes, c.delivered_bytes), (10, 10, 200, 200));
    assert_eq!(imp.counters(Way::ToClient), WayCounters::default());
}

#[test]
fn delay_holds_copies_until_due() {
    let t0 = Instant::now();
    let delayed = LinkConfig::clean(0, Duration::from_millis(30), 0);
    let mut imp = Impairer::new(ImpairConfig::new(clean(), delayed), 1, t0);
    imp.handle_datagram(t0, Way::ToClient, 1, b"x");
    assert!(imp.poll_transmit(t0 + Duration::from_millis(29)).is_none());
    assert_eq!(imp.poll_timeout(), Some(t0 + Duration::from_millis(30)));
    assert_eq!(drain(&mut imp, t0 + Duration::from_millis(30)).len(), 1);
}

#[test]
fn each_way_has_its_own_conditions() {
    let t0 = Instant::now();
    let mut lossy = clean();
    lossy.loss = 1.0;
    let mut imp = Impairer::new(ImpairConfig::new(lossy, clean()), 1, t0);
    for _ in 0..50 {
        imp.handle_datagram(t0, Way::ToServer, 1, b"request");
        imp.handle_datagram(t0, Way::ToClient, 1, b"part");
    }
    let out = drain(&mut imp, t0);
    assert!(out.iter().all(|d| d.way == Way::ToClient));
    assert_eq!(out.len(), 50);
    assert_eq!(imp.counters(Way::ToServer).lost, 50);
    assert_eq!(imp.counters(Way::ToClient).lost, 0);
}

#[test]
fn jitter_reorders() {
    let t0 = Instant::now();
    let mut jittery = clean();
    jittery.jitter = Duration::from_millis(10);
    let mut imp = Impairer::new(ImpairConfig::new(clean(), jittery), 4, t0);
    for i in 0..100u8 {
        imp.handle_datagram(t0 + Duration::from_micros(u64::from(i) * 50), Way::ToClient, 1, &[i]);
    }
    let order: Vec<u8> =
        drain(&mut imp, t0 + Duration::from_secs(1)).iter().map(|d| d.bytes[0]).collect();
    assert_eq!(order.len(), 100);
    let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions > 20, "{inversions} inversions in {order:?}");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<u8>>(), "every datagram exactly once");
}

#[test]
fn damage_is_counted_by_kind() {
    let t0 = Instant::now();
    let mut bad = clean();
    bad.corrupt = 1.0;
    bad.damage = DamageMix::ALL;
    let mut imp = Impairer::new(ImpairConfig::new(clean(), bad), 9, t0);
    let part = crate::wire::datagram::encode_part(7, 1, 2, &[0xAB; 300]);
    for _ in 0..500 {
        imp.handle_datagram(t0, Way::ToClient, 1, &part);
    }
    let out = drain(&mut imp, t0);
    assert_eq!(out.len(), 500);
    assert!(out.iter().all(|d| d.bytes != part), "every copy was changed");
    let d = imp.counters(Way::ToClient).damaged;
    assert_eq!(d.total(), 500);
    for (kind, n) in [
        ("bit", d.bit_flip),
        ("many", d.many_bits),
        ("burst", d.burst),
        ("truncate", d.truncate),
        ("forged", d.forged),
    ] {
        assert!(n > 50, "{kind}: {n} of 500");
    }
    let truncated = out.iter().filter(|d| d.bytes.len() < part.len()).count() as u64;
    assert_eq!(truncated, d.truncate);
}

#[test]
fn held_bytes_are_bounded() {
    let t0 = Instant::now();
    let slow = LinkConfig::clean(0, Duration::from_secs(1), 0);
    let mut config = ImpairConfig::new(slow, clean());
    config.max_held_bytes = 1000;
    let mut imp = Impairer::new(config, 1, t0);
    for _ in 0..20 {
        imp.handle_datagram(t0, Way::ToServer, 1, &[0; 100]);
    }
    assert_eq!(imp.held_bytes(), 1000);
    assert_eq!(imp.counters(Way::ToServer).overflow_drops, 10);
    assert_eq!(drain(&mut imp, t0 + Duration::from_secs(1)).len(), 10);
    assert_eq!(imp.held_bytes(), 0);
}

#[test]
fn a_forgotten_flow_loses_its_held_copies_only() {
    let t0 = Instant::now();
    let slow = LinkConfig::clean(0, Duration::from_millis(5), 0);
    let mut imp = Impairer::new(ImpairConfig::new(slow.clone(), slow), 1, t0);
    for flow in [1, 2, 1, 2] {
        imp.handle_datagram(t0, Way::ToServer, flow, &[flow as u8; 10]);
        imp.handle_datagram(t0, Way::ToClient, flow, &[flow as u8; 10]);
    }
    imp.forget_flow(1);
    assert_eq!(imp.held_bytes(), 40);
    let out = drain(&mut imp, t0 + Duration::from_millis(5));
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|d| d.flow == 2));
    assert_eq!(imp.counters(Way::ToServer).orphaned, 2);
    assert_eq!(imp.counters(Way::ToClient).orphaned, 2);
}

#[test]
fn the_rate_limit_spaces_copies_and_drops_at_the_queue_bound() {
    // 8 Mbit/s = one byte per microsecond; a queue of 3000 bytes.
    let t0 = Instant::now();
    let limited = LinkConfig::clean(8_000_000, Duration::ZERO, 3000);
    let mut imp = Impairer::new(ImpairConfig::new(clean(), limited), 1, t0);
    for _ in 0..5 {
        imp.handle_datagram(t0, Way::ToClient, 1, &[0; 1000]);
    }
    assert_eq!(imp.counters(Way::ToClient).queue_drops, 2);
    let mut dues = Vec::new();
    while let Some(due) = imp.poll_timeout() {
        assert_eq!(drain(&mut imp, due).len(), 1);
        dues.push(due.duration_since(t0));
    }
    assert_eq!(dues, [1, 2, 3].map(Duration::from_millis));
}
