//! One chat session for an interactive UI (`natter tui`, `natter gui`), run on a thread of its
//! own: lines go in through [`Session::send`], and everything the session shows comes out as
//! owned [`SessionEvent`]s through a callback, which can push them into the UI's channel and
//! wake it (egui's `request_repaint`, a terminal loop's queue).
//!
//! A session is one connection. Reconnecting is the client model's decision
//! ([`natter_core::client_model`]): when it asks, the UI starts a new `Session` once the previous
//! one has reported [`SessionEvent::Ended`].

use std::sync::{Arc, mpsc};
use std::thread;

use natter_core::chat::client::ClientEvent;
use natter_core::client_model::{Action, ClientModel, Clock, SessionEvent};
use natter_core::transfer::receiver::Progress;

use crate::client::{RunClient, run_client};
use crate::options::ClientOptions;
use crate::ui::ClientUi;
use crate::{DownloadError, DownloadReport};

/// Where a session's events go: called on the session's thread.
pub type Report = Box<dyn FnMut(SessionEvent) + Send>;

/// A running session. Dropping it ends the person's input: the session then leaves once no
/// download runs (send `{quit}` first to leave at once).
#[derive(Debug)]
pub struct Session {
    lines: mpsc::Sender<String>,
}

impl Session {
    /// Starts a session on a new thread: connects to `options.addr` as `options.name` with the
    /// runtime's client loop `run`. Every event goes to `report`, the last one being
    /// [`SessionEvent::Ended`] (also when the server cannot be reached).
    pub fn start(
        run: RunClient,
        options: ClientOptions,
        mut report: Report,
    ) -> std::io::Result<Self> {
        let (lines, typed) = mpsc::channel::<String>();
        thread::Builder::new().name("natter-session".into()).spawn(move || {
            let input = std::iter::from_fn(move || typed.recv().ok());
            let result = run_client(run, options, &mut Reporter(&mut report), input);
            let error = result.err().map(|err| err.to_string());
            report(SessionEvent::Ended { error });
        })?;
        Ok(Self { lines })
    }

    /// Hands a protocol line (an [`natter_core::client_model::Action::Send`]) to the session;
    /// `false` when the session is over.
    pub fn send(&self, line: String) -> bool {
        self.lines.send(line).is_ok()
    }
}

/// Performs what a [`ClientModel`] asks for: starts sessions (the first, and each reconnect)
/// and hands them the lines to send. Both UIs use it the same way: feed the model the events
/// `report` received, then call [`SessionRunner::perform`]. Dropping the runner ends the person's
/// input to its session, which then leaves (what a UI does once the model is closed).
pub struct SessionRunner {
    run: RunClient,
    options: ClientOptions,
    report: Arc<dyn Fn(SessionEvent) + Send + Sync>,
    session: Option<Session>,
}

impl std::fmt::Debug for SessionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRunner").field("options", &self.options).finish_non_exhaustive()
    }
}

impl SessionRunner {
    /// Sessions with runtime loop `run` to `options.addr` (the name comes from the model); their
    /// events go to `report`, on the sessions' threads.
    pub fn new(
        run: RunClient,
        options: ClientOptions,
        report: impl Fn(SessionEvent) + Send + Sync + 'static,
    ) -> Self {
        Self { run, options, report: Arc::new(report), session: None }
    }

    /// Performs every action `model` asks for now. A session that cannot start is reported to
    /// the model at once as ended, so it counts as a failed try.
    pub fn perform(&mut self, model: &mut ClientModel, clock: Clock) {
        while let Some(action) = model.poll_action() {
            match action {
                Action::Connect { name } => {
                    self.options.name = name;
                    let report = Arc::clone(&self.report);
                    let started = Session::start(
                        self.run,
                        self.options.clone(),
                        Box::new(move |event| report(event)),
                    );
                    match started {
                        Ok(session) => self.session = Some(session),
                        Err(err) => {
                            self.session = None;
                            let error = Some(format!("cannot start a session: {err}"));
                            model.handle_event(clock, SessionEvent::Ended { error });
                        }
                    }
                }
                Action::Send(line) => {
                    // A session that is over has reported (or will report) its end to the
                    // model: the line is moot.
                    if let Some(session) = &self.session {
                        session.send(line);
                    }
                }
            }
        }
    }
}

/// The [`ClientUi`] of a session: each call becomes an owned event.
struct Reporter<'a>(&'a mut Report);

impl ClientUi for Reporter<'_> {
    fn event(&mut self, event: &ClientEvent) {
        (self.0)(SessionEvent::Server(event.clone()));
    }

    fn progress(&mut self, file: &str, progress: &Progress) {
        (self.0)(SessionEvent::Progress { file: file.to_owned(), progress: progress.clone() });
    }

    fn download_done(&mut self, file: &str, result: &Result<DownloadReport, DownloadError>) {
        let result = match result {
            Ok(report) => Ok(report.clone()),
            Err(err) => Err(err.to_string()),
        };
        (self.0)(SessionEvent::DownloadDone { file: file.to_owned(), result });
    }

    fn notice(&mut self, text: &str) {
        (self.0)(SessionEvent::Notice(text.to_owned()));
    }

    fn disconnected(&mut self, reason: &str) {
        (self.0)(SessionEvent::Disconnected(reason.to_owned()));
    }
}
