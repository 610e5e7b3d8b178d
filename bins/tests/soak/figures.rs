//! The figures a campaign prints (seen with `--nocapture`): tables of descriptors and memory
//! before and after, latency percentiles.

use std::time::Duration;

use super::child::Usage;

/// A table with a title, one header line and aligned columns.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = format!("\n{title}\n{}\n", line(header.to_vec()));
    out.push_str(&line(widths.iter().map(|_| "---").collect()));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    // One write, so that the table is not cut by another test's output.
    print!("{out}");
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// A signed difference of KiB, as MiB.
pub fn growth_mib(before: u64, after: u64) -> String {
    format!("{:+.2}", (after as f64 - before as f64) / 1024.0)
}

/// The rows `before` and `after` of one process: descriptors, resident memory, peak, threads.
pub fn usage_rows(who: &str, before: Usage, after: Usage) -> Vec<String> {
    vec![
        who.to_owned(),
        format!("{} -> {}", before.fds, after.fds),
        format!("{} -> {}", mib(before.rss_kib), mib(after.rss_kib)),
        growth_mib(before.rss_kib, after.rss_kib),
        mib(after.peak_kib),
        format!("{} -> {}", before.threads, after.threads),
    ]
}

/// The header that goes with [`usage_rows`].
pub const USAGE_HEADER: [&str; 6] =
    ["process", "fds", "RSS MiB", "growth MiB", "peak MiB", "threads"];

/// The `p`-th percentile (0 to 100) of `samples`, nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in microseconds, for tables.
pub fn micros(d: Duration) -> String {
    format!("{}", d.as_micros())
}
