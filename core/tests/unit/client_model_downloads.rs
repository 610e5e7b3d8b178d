//! Unit tests of `client_model/downloads.rs`, kept beside the other unit tests: they read the
//! clock for a starting instant, which the core itself never does.

use super::*;

// Issue 13 (download rate, ETA); PROTOCOL 2.3
#[test]
fn rate_and_eta_come_from_recent_progress() {
    let t0 = Instant::now();
    let mut d = Download::requested("big.iso");
    assert_eq!((d.rate(), d.eta(), d.fraction()), (None, None, 0.0));
    d.offered(10_000_000);
    d.progress(t0, 0, 10_000_000);
    assert_eq!(d.rate(), None, "one sample gives no rate");
    d.progress(t0 + Duration::from_secs(1), 1_000_000, 10_000_000);
    assert_eq!(d.rate(), Some(1_000_000.0));
    assert_eq!(d.eta(), Some(Duration::from_secs(9)));
    assert!((d.fraction() - 0.1).abs() < 1e-9);
    // Samples older than the window no longer count: the rate follows a slowdown.
    d.progress(t0 + Duration::from_secs(5), 2_000_000, 10_000_000);
    d.progress(t0 + Duration::from_secs(6), 2_100_000, 10_000_000);
    assert_eq!(d.rate(), Some(100_000.0));
}

// Issue 13 (download end state)
#[test]
fn end_states() {
    let mut d = Download::requested("a");
    assert!(d.is_active());
    d.verified("Downloads/a".into(), 5, Duration::from_millis(20));
    assert!(!d.is_active());
    assert_eq!((d.fraction(), d.elapsed()), (1.0, Some(Duration::from_millis(20))));
    let mut d = Download::requested("b");
    d.failed("no such file: b".into());
    assert_eq!(d.state, DownloadState::Failed { reason: "no such file: b".into() });
}

// Issue 13
#[test]
fn human_units() {
    assert_eq!(human_bytes(512.0), "512 B");
    assert_eq!(human_bytes(1841.0), "1.8 KB");
    assert_eq!(human_bytes(23_400_000.0), "23.4 MB");
    assert_eq!(human_duration(Duration::from_secs(42)), "42s");
    assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
    assert_eq!(human_duration(Duration::from_secs(3720)), "1h02m");
}
