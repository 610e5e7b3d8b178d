//! What a running session reports, and what the model makes of it: the server's lines become
//! conversation lines, people, files and download states; the end of a session becomes the
//! connection state and the next try (reconnect with back-off).

use std::time::Duration;

use super::{
    Action, ClientModel, Clock, Connection, Download, DownloadState, LineKind, SessionEvent,
    backoff, human_bytes, human_duration, mentions,
};
use crate::chat::client::ClientEvent;
use crate::driver::client::DownloadReport;

impl ClientModel {
    /// The running session reported something.
    pub fn handle_event(&mut self, clock: Clock, event: SessionEvent) {
        match event {
            SessionEvent::Server(event) => self.on_server(clock, event),
            SessionEvent::Progress { file, progress } => {
                let download = self.active_download(&file);
                download.progress(clock.now, progress.bytes_received, progress.size);
            }
            SessionEvent::DownloadDone { file, result } => self.download_done(clock, &file, result),
            SessionEvent::Notice(text) => self.system(clock, text),
            // Said once the session has ended, with when the next try comes.
            SessionEvent::Disconnected(reason) => self.lost_reason = Some(reason),
            SessionEvent::Ended { error } => self.session_ended(clock, error),
        }
    }

    fn on_server(&mut self, clock: Clock, event: ClientEvent) {
        match event {
            // Before our join the server sends us no one else's (1.1): the first join we see
            // is ours.
            ClientEvent::Joined(name)
                if matches!(
                    self.connection,
                    Connection::Connecting { .. } | Connection::NameRefused { .. }
                ) =>
            {
                self.joined(clock, name);
            }
            ClientEvent::Joined(name) => {
                if !self.others.contains(&name) && !self.is_me(&name) {
                    self.others.push(name.clone());
                }
                self.push(clock, LineKind::Presence, format!("{name} joined"), false);
            }
            ClientEvent::Left(name) => {
                self.others.retain(|o| *o != name);
                self.push(clock, LineKind::Presence, format!("{name} left"), false);
            }
            ClientEvent::Presence(names) => {
                self.others = names.into_iter().filter(|n| !self.is_me(n)).collect();
            }
            ClientEvent::Public { from, text } => {
                let own = self.is_me(&from);
                let mention = !own && mentions(&text, &self.name);
                self.push(clock, LineKind::Public { from, own }, text, mention);
            }
            ClientEvent::Private { from, text } => {
                self.push(clock, LineKind::Private { with: from, incoming: true }, text, true);
            }
            ClientEvent::PrivateSent { to, text } => {
                self.push(clock, LineKind::Private { with: to, incoming: false }, text, false);
            }
            ClientEvent::Files(files) => {
                self.files = files;
                if self.list_requests.pop_front() == Some(true) {
                    self.show_files(clock);
                }
            }
            ClientEvent::Offer(offer) => {
                let size = offer.size;
                self.active_download(&offer.file).offered(size);
                let text = format!("downloading {} ({})", offer.file, human_bytes(size as f64));
                self.system(clock, text);
            }
            ClientEvent::Error(reason) => {
                if let Some(file) = reason.strip_prefix("no such file: ") {
                    self.fail_requested(file, &reason);
                    self.request_files(clock, false);
                }
                self.error(clock, reason);
            }
            ClientEvent::NameRefused(reason) => {
                let text = format!(
                    "the name {} was refused: {reason}. Type another name and press Enter.",
                    self.name
                );
                self.connection = Connection::NameRefused { reason };
                self.error(clock, text);
            }
            ClientEvent::OfferRefused(reason) => {
                if let Some(d) = self
                    .downloads
                    .iter_mut()
                    .find(|d| d.state == DownloadState::Requested && reason.contains(&d.file))
                {
                    d.failed(reason.clone());
                }
                self.error(clock, reason);
            }
            ClientEvent::Rejected(reason) => self.error(clock, reason),
        }
    }

    /// Our own join: we are in. The file list is fetched, and what was typed meanwhile is sent.
    fn joined(&mut self, clock: Clock, name: String) {
        self.name = name;
        self.connection = Connection::Joined;
        self.attempt = 0;
        self.lost_reason = None;
        let text = format!("you joined as {}", self.name);
        self.push(clock, LineKind::Presence, text, false);
        self.request_files(clock, false);
        for line in std::mem::take(&mut self.held) {
            self.actions.push_back(Action::Send(line));
        }
    }

    fn download_done(&mut self, clock: Clock, file: &str, result: Result<DownloadReport, String>) {
        let download = self.active_download(file);
        match result {
            Ok(report) => {
                download.verified(report.path.clone(), report.size, report.elapsed);
                let text = format!(
                    "saved {} ({} in {}), checked byte for byte",
                    report.path,
                    human_bytes(report.size as f64),
                    human_duration_precise(report.elapsed)
                );
                self.system(clock, text);
            }
            Err(reason) => {
                download.failed(reason.clone());
                self.error(clock, format!("download of {file} failed: {reason}"));
            }
        }
    }

    fn session_ended(&mut self, clock: Clock, error: Option<String>) {
        self.list_requests.clear();
        self.next_files_refresh = None;
        let reason = error.or_else(|| self.lost_reason.take());
        if matches!(self.connection, Connection::Quitting | Connection::Closed) {
            self.connection = Connection::Closed;
            return;
        }
        // Downloads asked for while not connected are still to be asked for.
        let held = &self.held;
        let waiting = |d: &Download| held.iter().any(|l| *l == format!("download_file {}", d.file));
        for d in self.downloads.iter_mut().filter(|d| d.is_active() && !waiting(d)) {
            d.failed("the connection was lost; /get it again to resume".into());
        }
        self.others.clear();
        let was_in = self.attempt == 0;
        self.attempt += 1;
        let wait = backoff(self.attempt);
        let reason = reason.unwrap_or_else(|| "the session ended".into());
        let text = if was_in {
            format!(
                "lost the server: {reason}; trying again in {} (/reconnect: now, /quit: leave)",
                human_duration(wait)
            )
        } else {
            format!("still no server: {reason}; next try in {}", human_duration(wait))
        };
        self.error(clock, text);
        self.connection =
            Connection::Lost { reason, retry_at: clock.now + wait, attempt: self.attempt };
    }

    pub(super) fn reconnect(&mut self, clock: Clock) {
        let attempt = self.attempt + 1;
        self.connection = Connection::Connecting { attempt };
        self.system(clock, format!("connecting again as {} (try {attempt})", self.name));
        self.actions.push_back(Action::Connect { name: self.name.clone() });
    }
}

/// A download's duration: milliseconds for the quick ones a chat client mostly sees.
fn human_duration_precise(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        human_duration(d)
    }
}
