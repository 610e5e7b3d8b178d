//! Unit tests of `impair/flows.rs`, kept out of `core/src`
//! because they take their base instant from the clock (the core never reads one).
//! Compiled as that module's `tests` child module.
use super::*;

fn key(port: u16, client_port: u16) -> FlowKey {
    FlowKey { client: SocketAddr::from(([127, 0, 0, 1], client_port)), port }
}

#[test]
fn one_flow_per_client_and_port() {
    let t0 = Instant::now();
    let mut flows = Flows::new(FlowLimits::default());
    let Lookup::New { id: a, evicted: None } = flows.from_client(t0, key(5000, 40000)) else {
        panic!("first datagram opens a flow");
    };
    assert_eq!(flows.from_client(t0, key(5000, 40000)), Lookup::Known(a));
    let Lookup::New { id: b, .. } = flows.from_client(t0, key(5001, 40000)) else {
        panic!("another port is another flow");
    };
    let Lookup::New { id: c, .. } = flows.from_client(t0, key(5000, 40001)) else {
        panic!("another client is another flow");
    };
    assert!(a != b && b != c && a != c);
    assert_eq!(flows.from_server(t0, b), Some(key(5001, 40000)));
    assert_eq!(flows.counters().open, 3);
}

#[test]
fn idle_flows_expire_and_traffic_either_way_keeps_them() {
    let t0 = Instant::now();
    let limits = FlowLimits { max_flows: 10, idle_timeout: Duration::from_secs(5) };
    let mut flows = Flows::new(limits);
    let Lookup::New { id: quiet, .. } = flows.from_client(t0, key(1, 1)) else { panic!() };
    let Lookup::New { id: busy, .. } = flows.from_client(t0, key(1, 2)) else { panic!() };
    flows.from_server(t0 + Duration::from_secs(3), busy);
    assert_eq!(flows.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(flows.poll_expired(t0 + Duration::from_secs(4)), None);
    assert_eq!(flows.poll_expired(t0 + Duration::from_secs(5)), Some(quiet));
    assert_eq!(flows.poll_expired(t0 + Duration::from_secs(5)), None);
    assert_eq!(flows.poll_timeout(), Some(t0 + Duration::from_secs(8)));
    assert_eq!(flows.from_server(t0, quiet), None, "an expired flow is gone");
    // The same client again gets a new flow (and so a new upstream socket).
    let Lookup::New { id, .. } = flows.from_client(t0 + Duration::from_secs(6), key(1, 1)) else {
        panic!()
    };
    assert_ne!(id, quiet);
    assert_eq!(flows.counters().expired, 1);
}

#[test]
fn a_full_table_evicts_the_least_recently_active() {
    let t0 = Instant::now();
    let mut flows =
        Flows::new(FlowLimits { max_flows: 2, idle_timeout: Duration::from_secs(1000) });
    let Lookup::New { id: a, .. } = flows.from_client(t0, key(1, 1)) else { panic!() };
    let Lookup::New { id: b, .. } = flows.from_client(t0, key(1, 2)) else { panic!() };
    flows.from_client(t0 + Duration::from_secs(1), key(1, 1));
    let Lookup::New { evicted, .. } = flows.from_client(t0 + Duration::from_secs(2), key(1, 3))
    else {
        panic!()
    };
    assert_eq!(evicted, Some(b));
    assert_eq!(flows.key(a), Some(key(1, 1)));
    assert_eq!(flows.key(b), None);
    let c = flows.counters();
    assert_eq!((c.open, c.opened, c.evicted), (2, 3, 1));
}
