//! Bad UDP paths drawn from a seed, and which failures a path explains. U4 / PROTOCOL 2.2, 2.3, 2.6.

use std::time::Duration;

use natter_core::sim::damage::DamageMix;
use natter_core::sim::rng::SplitMix64;
use natter_core::sim::{GilbertElliott, LinkConfig, Path};
use natter_core::transfer::receiver::TransferError;
use natter_core::wire::datagram::AbortCode;

/// The longest outage a path draws: shorter than the server's 10 s idle timeout and any give-up
/// time, so an outage alone never explains a failure.
const MAX_BLACKHOLE_MS: u64 = 5000;

/// How a link damages what it corrupts, and how often: both directions draw this, so REQUESTs
/// and FINISHEDs meet many-bit, burst, truncating and forged damage as PARTs do.
fn damage(rng: &mut SplitMix64, link: &mut LinkConfig) {
    link.corrupt = [0.0, 0.0, 0.001, 0.01, 0.03, 0.1][rng.below(6) as usize];
    link.damage =
        [DamageMix::ONE_BIT, DamageMix::ALL, DamageMix::MOSTLY_FORGED][rng.below(3) as usize];
}

/// A path: rate (at least 100 Mbit/s when `big` files cross it), round trip, random and burst
/// loss, jitter up to 20 ms (reordering), duplication, damage each way, sometimes an outage of
/// one direction or both.
pub fn draw(rng: &mut SplitMix64, big: bool) -> Path {
    let rate = if big {
        [100_000_000, 1_000_000_000][rng.below(2) as usize]
    } else {
        [10_000_000, 100_000_000, 1_000_000_000][rng.below(3) as usize]
    };
    let rtt = Duration::from_micros(1000 + rng.below(60_000));
    let loss = [0.0, 0.02, 0.1, 0.2, 0.3][rng.below(5) as usize];
    let max_jitter_us = [1, 3000, 20_000][rng.below(3) as usize];
    let jitter = Duration::from_micros(rng.below(max_jitter_us));
    let duplicate = rng.unit() * 0.05;
    let burst = (rng.below(4) == 0).then_some(GilbertElliott {
        p_enter_bad: 0.01,
        p_leave_bad: 0.2,
        loss_bad: 0.8,
    });
    let mut path = Path::symmetric(rate, rtt, loss).with(|l| {
        l.jitter = jitter;
        l.duplicate = duplicate;
        l.burst = burst;
    });
    damage(rng, &mut path.down);
    damage(rng, &mut path.up);
    if rng.below(8) == 0 {
        let from = Duration::from_millis(rng.below(3000));
        let until = from + Duration::from_millis(100 + rng.below(MAX_BLACKHOLE_MS - 100));
        match rng.below(3) {
            0 => path.down.blackhole = Some((from, until)),
            1 => path.up.blackhole = Some((from, until)),
            _ => path = path.with(|l| l.blackhole = Some((from, until))),
        }
    }
    path
}

/// The down link can deliver a forged PART (its CRC recomputed): only BLAKE3 can catch it.
pub fn down_forges(path: &Path) -> bool {
    path.down.corrupt > 0.0 && path.down.damage.forges()
}

/// REQUESTs and FINISHEDs may arrive altered. In protocol version 1 a REQUEST has no checksum of
/// its own, so any damage may change its req_seq or ranges; once it has one, only forged damage
/// can. Either way a changed REQUEST may legitimately end the transfer, so the rules below hold in
/// both versions.
pub fn up_damaged(path: &Path) -> bool {
    path.up.corrupt > 0.0
}

/// The path can silence a client for the server's idle timeout, or its parts for a give-up time:
/// heavy or bursty loss, or an outage. A transfer on a milder path must not fail for want of
/// progress.
pub fn can_silence(path: &Path) -> bool {
    [&path.down, &path.up]
        .iter()
        .any(|l| l.loss >= 0.2 || l.burst.is_some() || l.blackhole.is_some())
}

/// Whether `path` explains a transfer failing with `error`. `exact`: whether the bytes the
/// client holds are the file's, when known (a download refused by its digest is discarded).
pub fn explains(path: &Path, error: &TransferError, exact: Option<bool>) -> bool {
    match error {
        // A forged part got past its CRC and the digest refused the file. A mismatch over exact
        // bytes would be a false alarm that throws a good download away.
        TransferError::DigestMismatch => exact != Some(true) && down_forges(path),
        // A REQUEST whose ranges were changed on the way asked past the end.
        TransferError::Aborted { code: AbortCode::PastEnd, .. } => up_damaged(path),
        // A REQUEST whose req_seq was raised on the way makes the server ignore every later
        // (lower) one: the client then gets no progress, or the server times out first. Or the
        // path lost every request for the idle timeout, or every part for the give-up time.
        TransferError::NoProgress(_) | TransferError::Aborted { code: AbortCode::TimedOut, .. } => {
            up_damaged(path) || can_silence(path)
        }
        // The server's own ABORT 2 or 3 with its code damaged on the way (an ABORT carries no
        // checksum: seen in the 10,000-seed system campaign, seeds 2146, 6446, 8517, 9627 give
        // codes 34, 1027, 515, 4098, each one bit off), or a PART damaged into an ABORT.
        TransferError::Aborted { .. } => path.down.corrupt > 0.0,
        // Only the client's own file errors stop a download this way; no path does.
        TransferError::Abandoned => false,
        // 2^32 sealed requests: no campaign runs that long.
        TransferError::RequestsExhausted => false,
    }
}
