//! The downloads a person asked for, as a UI shows them: how far each is, how fast it goes, when
//! it should end, and how it ended.
//!
//! The rate is measured here from the progress reports and the times the UI hands in (bytes
//! fetched over the last few seconds), not taken from the transfer's congestion estimate: it is
//! what the person gets, resumed bytes excluded.

use std::time::{Duration, Instant};

/// Progress samples older than this are dropped from the rate.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// How a download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadState {
    /// Asked for; the server has not offered it yet (or it waits for a free transfer).
    Requested,
    /// Parts are arriving.
    Running,
    /// Saved and BLAKE3-verified at `path`.
    Verified {
        /// Where the file is.
        path: String,
    },
    /// No file; `reason` says why.
    Failed {
        /// For the person.
        reason: String,
    },
}

/// One download.
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    /// The file's name on the server.
    pub file: String,
    /// Where it stands.
    pub state: DownloadState,
    /// Bytes on disk so far.
    pub received: u64,
    /// The file's size, once offered.
    pub size: Option<u64>,
    /// Recent samples (time, bytes): the rate is measured over them.
    samples: Vec<(Instant, u64)>,
    /// When the download ended, for how long it took.
    elapsed: Option<Duration>,
}

impl Download {
    /// A download just asked for.
    pub fn requested(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            state: DownloadState::Requested,
            received: 0,
            size: None,
            samples: Vec::new(),
            elapsed: None,
        }
    }

    /// Still going (asked for or running).
    pub fn is_active(&self) -> bool {
        matches!(self.state, DownloadState::Requested | DownloadState::Running)
    }

    /// The share done, 0.0 to 1.0 (0 before the size is known).
    pub fn fraction(&self) -> f64 {
        match self.size {
            Some(0) => 1.0,
            Some(size) => (self.received as f64 / size as f64).clamp(0.0, 1.0),
            None => 0.0,
        }
    }

    /// Bytes per second over the last few seconds, once two samples exist.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, b0), &(t1, b1)) = (self.samples.first()?, self.samples.last()?);
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        (secs > 0.0).then(|| b1.saturating_sub(b0) as f64 / secs)
    }

    /// How long the rest should take at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate().filter(|r| *r > 0.0)?;
        let left = self.size?.saturating_sub(self.received);
        Some(Duration::from_secs_f64(left as f64 / rate))
    }

    /// The folder the verified file is in (`.` for a bare file name), for a "show in folder"
    /// action; `None` until the file is verified.
    pub fn folder(&self) -> Option<String> {
        let DownloadState::Verified { path } = &self.state else { return None };
        let parent = std::path::Path::new(path).parent().map(|p| p.to_string_lossy().into_owned());
        Some(parent.filter(|p| !p.is_empty()).unwrap_or_else(|| ".".to_owned()))
    }

    /// How long it took, once ended with a file.
    pub fn elapsed(&self) -> Option<Duration> {
        self.elapsed
    }

    pub(super) fn offered(&mut self, size: u64) {
        self.state = DownloadState::Running;
        self.size = Some(size);
    }

    pub(super) fn progress(&mut self, now: Instant, received: u64, size: u64) {
        self.state = DownloadState::Running;
        self.size = Some(size);
        self.received = received;
        self.samples.push((now, received));
        let keep_from = self
            .samples
            .iter()
            .position(|&(t, _)| now.saturating_duration_since(t) <= RATE_WINDOW)
            .unwrap_or(self.samples.len() - 1);
        self.samples.drain(..keep_from);
    }

    pub(super) fn verified(&mut self, path: String, size: u64, elapsed: Duration) {
        self.state = DownloadState::Verified { path };
        self.size = Some(size);
        self.received = size;
        self.elapsed = Some(elapsed);
        self.samples.clear();
    }

    pub(super) fn failed(&mut self, reason: String) {
        self.state = DownloadState::Failed { reason };
        self.samples.clear();
    }
}

/// `bytes` as a person reads it: `512 B`, `1.8 KB`, `23.4 MB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration as `42s`, `3m05s` or `1h02m`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
#[path = "../../tests/unit/client_model_downloads.rs"]
mod tests;
