//! Unit tests of `chat/server/password.rs`, kept beside the other unit tests: they read the
//! clock for a starting instant, which the core itself never does.

use super::*;

// PROTOCOL 1.6: three free tries, then waits that double.
#[test]
fn an_address_that_keeps_guessing_waits_longer_each_time() {
    let ip = IpAddr::from([127, 0, 0, 1]);
    let t0 = Instant::now();
    let mut g = Guesses::default();
    for _ in 0..FREE_TRIES {
        g.failed(ip, t0);
        assert_eq!(g.wait_until(ip, t0), None);
    }
    g.failed(ip, t0);
    assert_eq!(g.wait_until(ip, t0), Some(t0 + FIRST_WAIT));
    g.failed(ip, t0);
    assert_eq!(g.wait_until(ip, t0), Some(t0 + FIRST_WAIT * 2));
    assert_eq!(g.wait_until(ip, t0 + FIRST_WAIT * 2), None, "the wait ends");
    for _ in 0..40 {
        g.failed(ip, t0);
    }
    assert_eq!(g.wait_until(ip, t0), Some(t0 + MAX_WAIT));
    g.passed(ip);
    assert_eq!(g.wait_until(ip, t0), None);
}
