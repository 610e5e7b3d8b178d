//! The line client's face: server lines printed as they come, downloads as progress bars.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressDrawTarget, ProgressStyle};
use natter_core::chat::client::ClientEvent;
use natter_core::transfer::receiver::Progress;
use natter_runtime_common::{ClientUi, DownloadError, DownloadReport};

pub const HELP: &str = "\
Type a line and press Enter to say it to everyone. Commands:
  show                         who else is here
  get_list_file                which files you can download
  download_file <file> [size]  download a file into Downloads/ (size: bytes per part)
  ~<name> <text>               a private message
  {quit}                       leave";

const BAR_TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}";

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Prints what the server says and shows a bar per download.
pub struct LineUi {
    bars: MultiProgress,
    active: HashMap<String, indicatif::ProgressBar>,
    failed: bool,
}

impl LineUi {
    pub fn new() -> Self {
        Self { bars: MultiProgress::new(), active: HashMap::new(), failed: false }
    }

    pub fn all_downloads_ok(&self) -> bool {
        !self.failed
    }

    fn say(&self, line: &str) {
        // Printed through the bars so a line never tears a bar in half; when there are no bars
        // (output is not a terminal) indicatif would swallow the line, so it is printed plainly.
        if self.bars.is_hidden() {
            println!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }
}

impl ClientUi for LineUi {
    fn event(&mut self, event: &ClientEvent) {
        self.say(&display_line(event));
    }

    fn progress(&mut self, file: &str, progress: &Progress) {
        let bars = &self.bars;
        let bar = self.active.entry(file.to_owned()).or_insert_with(|| {
            let bar = bars.add(indicatif::ProgressBar::new(progress.size));
            bar.set_style(bar_style());
            bar.set_message(file.to_owned());
            bar
        });
        bar.set_position(progress.bytes_received);
    }

    fn download_done(&mut self, file: &str, result: &Result<DownloadReport, DownloadError>) {
        if let Some(bar) = self.active.remove(file) {
            bar.finish_and_clear();
        }
        match result {
            Ok(report) => self.say(&report.to_string()),
            Err(err) => {
                self.failed = true;
                self.say(&format!("download of {file} failed: {err}"));
            }
        }
    }

    fn notice(&mut self, text: &str) {
        self.say(&format!("({text})"));
    }

    fn disconnected(&mut self, reason: &str) {
        self.say(&format!("disconnected: {reason}"));
    }
}

/// An event as the line the server sent (the person reads the protocol as it is), or the
/// client's own warning for what it refused.
fn display_line(event: &ClientEvent) -> String {
    fn list(head: &str, items: &[String]) -> String {
        std::iter::once(head).chain(items.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }
    match event {
        ClientEvent::Joined(name) => format!("{name} has joined the chat!"),
        ClientEvent::Left(name) => format!("{name} left the chat..."),
        ClientEvent::Presence(names) => list("ALL", names),
        ClientEvent::Public { from, text } => format!("{from}: {text}"),
        ClientEvent::Private { from, text } => format!("{from}: (PRIVATE) {text}"),
        ClientEvent::PrivateSent { to, text } => format!("from you to {to}: (PRIVATE) {text}"),
        ClientEvent::Files(files) => list("CHOOSE_FILE", files),
        ClientEvent::Offer(offer) => {
            let line = natter_core::wire::chat::ServerLine::Udp((**offer).clone()).encode();
            line.trim_end().to_owned()
        }
        ClientEvent::Error(reason) => format!("ERROR {reason}"),
        ClientEvent::NameRefused(reason) => format!("ERROR {reason} (type another name)"),
        ClientEvent::Rejected(why) | ClientEvent::OfferRefused(why) => {
            format!("(refused by this client: {why})")
        }
    }
}

/// The one bar of `natter get`.
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
}

impl ProgressBar {
    pub fn hidden_until_known(file: &str, quiet: bool) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
        );
        bar.set_style(bar_style());
        bar.set_message(file.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        Self { bar }
    }

    pub fn update(&mut self, progress: &Progress) {
        self.bar.set_length(progress.size);
        self.bar.set_position(progress.bytes_received);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
