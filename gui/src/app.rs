//! The window's state beside the client model, and what each click and key does to it.
//!
//! [`GuiApp::show`] is the whole frame: it takes in what the sessions reported, lets the model
//! act (start a session, send a line, retry), then draws ([`crate::render`]) and turns what the
//! person did into model calls. The tests drive the same function through `egui_kittest`, with a
//! [`Connector`] of their own that scripts the sessions.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use eframe::egui;
use natter_core::client_model::{Channel, Channels, ClientModel, Clock, SessionEvent};
use natter_runtime_common::SessionRunner;
use natter_runtime_common::options::DEFAULT_SERVER_ADDR;

use crate::render::Click;
use crate::settings::Remembered;

/// Where a session's events go (on its thread): into the window's queue, waking the window.
pub type Report = Box<dyn Fn(SessionEvent) + Send + Sync>;

/// The clock the model is handed (the window's own, or a test's fixed one).
pub type ClockFn = Box<dyn Fn() -> Clock>;

/// Performs what the model asks for: starts sessions and hands them lines.
pub trait Performer {
    /// Takes every [`natter_core::client_model::Action`] the model has now.
    fn perform(&mut self, model: &mut ClientModel, clock: Clock);
}

impl Performer for SessionRunner {
    fn perform(&mut self, model: &mut ClientModel, clock: Clock) {
        SessionRunner::perform(self, model, clock);
    }
}

/// Turns the connect form's address into the runner of its sessions.
pub trait Connector {
    /// Checks `addr` (as typed: `host:port` or `natters://host:port`) and returns what will run
    /// its sessions, reporting to `report`; `Err` with a message for the person.
    fn open(&mut self, addr: &str, report: Report) -> Result<Box<dyn Performer>, String>;
}

/// What reaches the window from other threads.
#[derive(Debug)]
pub enum AppEvent {
    /// A session reported.
    Session(SessionEvent),
    /// Showing a folder failed; the reason.
    OpenFailed(String),
}

/// How the window starts.
pub struct GuiOptions {
    /// The form's address: from the command line, else remembered, else this default.
    pub addr: Option<String>,
    /// The form's name: from the command line, else remembered.
    pub name: Option<String>,
    /// Skip the form and connect at once (a name was given on the command line).
    pub connect_now: bool,
    /// The file the form's values are remembered in; `None` remembers nothing.
    pub settings: Option<PathBuf>,
    /// Where downloads go (the folder "Show in folder" opens before a file is saved).
    pub downloads: PathBuf,
    /// The program that shows a folder (`xdg-open`).
    pub opener: String,
    /// For tests: a file the window appends a line to whenever its state changes (see
    /// [`GuiApp::trace_line`]).
    pub trace: Option<PathBuf>,
    /// Starts sessions.
    pub connector: Box<dyn Connector>,
    /// Reads the time.
    pub clock: ClockFn,
}

impl std::fmt::Debug for GuiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuiOptions")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("downloads", &self.downloads)
            .finish_non_exhaustive()
    }
}

/// What `/help` adds about the window.
const UI_HELP: &[&str] = &[
    "Click a name to write to that person in a tab of your own; click Download beside a file.",
    "Ctrl+Q leaves. In a private tab, a line without / goes to that person only.",
];

/// The connect form.
#[derive(Debug, Default)]
pub struct Form {
    pub addr: String,
    pub name: String,
    /// Why the last try did not start.
    pub error: Option<String>,
    /// Why the remembered values could not be read or written (shown, not fatal).
    pub settings_note: Option<String>,
}

/// A chat under way: the model and what runs its sessions.
pub(crate) struct Chat {
    pub model: ClientModel,
    pub runner: Box<dyn Performer>,
    pub channels: Channels,
    /// The address, for the title.
    pub server: String,
    /// Put the cursor at the end of the input (after the model changed it).
    pub cursor_to_end: bool,
    /// Give the input the keyboard focus.
    pub focus_input: bool,
    /// We were in the chat at least once (a failed first try is "cannot reach", not "lost").
    pub joined_once: bool,
}

/// See the module documentation.
pub struct GuiApp {
    pub(crate) form: Form,
    pub(crate) chat: Option<Chat>,
    pub(crate) clock: ClockFn,
    connector: Box<dyn Connector>,
    settings: Option<PathBuf>,
    pub(crate) downloads: PathBuf,
    opener: String,
    tx: mpsc::Sender<AppEvent>,
    rx: mpsc::Receiver<AppEvent>,
    connect_now: bool,
    trace: Option<PathBuf>,
    last_trace: String,
    last_title: String,
    closing: bool,
}

impl std::fmt::Debug for GuiApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuiApp").field("form", &self.form).finish_non_exhaustive()
    }
}

impl GuiApp {
    /// The window's state before its first frame: the form filled in from the options and what
    /// was remembered.
    pub fn new(options: GuiOptions) -> Self {
        let mut form = Form::default();
        let remembered = match options.settings.as_deref().map(Remembered::load) {
            Some(Ok(r)) => r,
            Some(Err(err)) => {
                form.settings_note = Some(format!("the last values could not be read: {err}"));
                Remembered::default()
            }
            None => Remembered::default(),
        };
        form.addr =
            options.addr.or(remembered.addr).unwrap_or_else(|| DEFAULT_SERVER_ADDR.to_owned());
        form.name = options.name.or(remembered.name).unwrap_or_default();
        let (tx, rx) = mpsc::channel();
        Self {
            form,
            chat: None,
            clock: options.clock,
            connector: options.connector,
            settings: options.settings,
            downloads: options.downloads,
            opener: options.opener,
            tx,
            rx,
            connect_now: options.connect_now,
            trace: options.trace,
            last_trace: String::new(),
            last_title: String::new(),
            closing: false,
        }
    }

    /// The model, once connected (for tests and the trace).
    pub fn model(&self) -> Option<&ClientModel> {
        self.chat.as_ref().map(|c| &c.model)
    }

    /// The connect form's values and error.
    pub fn form(&self) -> &Form {
        &self.form
    }

    /// The conversation shown.
    pub fn current_channel(&self) -> Option<&Channel> {
        self.chat.as_ref().map(|c| c.channels.current())
    }

    /// The window asked to close (the person left).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// A sender for events from other threads (a test's scripted session uses it too).
    pub fn events(&self) -> mpsc::Sender<AppEvent> {
        self.tx.clone()
    }

    /// One frame: take in events, let the model act, draw, handle what the person did.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        if self.connect_now && self.chat.is_none() {
            self.connect_now = false;
            self.connect(&ctx);
        }
        self.take_events(&ctx);
        if ctx.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::Q)) {
            self.quit(&ctx);
        }
        match self.chat.is_some() {
            true => crate::render::chat(self, ui),
            false => crate::render::form(self, ui),
        }
        self.after_frame(&ctx);
    }

    /// The form's Connect: starts the chat, remembers the values.
    pub(crate) fn connect(&mut self, ctx: &egui::Context) {
        let (addr, name) = (self.form.addr.trim().to_owned(), self.form.name.trim().to_owned());
        if addr.is_empty() || name.is_empty() {
            self.form.error = Some("type the server's address and your name".into());
            return;
        }
        let tx = self.tx.clone();
        let wake = ctx.clone();
        let report: Report = Box::new(move |event| {
            let _ = tx.send(AppEvent::Session(event));
            wake.request_repaint();
        });
        let runner = match self.connector.open(&addr, report) {
            Ok(runner) => runner,
            Err(err) => {
                self.form.error = Some(err);
                return;
            }
        };
        self.form.error = None;
        let clock = (self.clock)();
        let mut model = ClientModel::new(&name, &addr, clock);
        model.set_ui_help(UI_HELP);
        if let Some(path) = &self.settings {
            let remembered = Remembered { addr: Some(addr.clone()), name: Some(name) };
            if let Err(err) = remembered.save(path) {
                model.ui_error(clock, format!("could not remember the address and name: {err}"));
            }
        }
        let mut chat = Chat {
            model,
            runner,
            channels: Channels::default(),
            server: addr,
            cursor_to_end: false,
            focus_input: true,
            joined_once: false,
        };
        chat.runner.perform(&mut chat.model, clock);
        self.chat = Some(chat);
    }

    fn take_events(&mut self, ctx: &egui::Context) {
        let clock = (self.clock)();
        let Some(chat) = &mut self.chat else { return };
        while let Ok(event) = self.rx.try_recv() {
            match event {
                AppEvent::Session(event) => chat.model.handle_event(clock, event),
                AppEvent::OpenFailed(reason) => chat.model.ui_error(clock, reason),
            }
            chat.runner.perform(&mut chat.model, clock);
        }
        chat.model.handle_timeout(clock);
        chat.runner.perform(&mut chat.model, clock);
        chat.joined_once |=
            chat.model.connection() == &natter_core::client_model::Connection::Joined;
        let attending = ctx.input(|i| i.viewport().focused.unwrap_or(true));
        chat.channels.update(chat.model.conversation(), attending);
    }

    /// Ctrl+Q: leave (once more while leaving: at once).
    pub(crate) fn quit(&mut self, ctx: &egui::Context) {
        let clock = (self.clock)();
        match &mut self.chat {
            Some(chat) if !chat.model.is_closed() && !self.closing => {
                if chat.model.connection() == &natter_core::client_model::Connection::Quitting {
                    self.close(ctx);
                } else {
                    chat.model.quit(clock);
                    chat.runner.perform(&mut chat.model, clock);
                }
            }
            _ => self.close(ctx),
        }
    }

    fn close(&mut self, ctx: &egui::Context) {
        self.closing = true;
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
    }

    /// Does what the clicks of one frame asked for.
    pub(crate) fn on_clicks(&mut self, clicks: Vec<Click>) {
        for click in clicks {
            let clock = (self.clock)();
            match click {
                Click::Download(file) => {
                    if let Some(chat) = &mut self.chat {
                        chat.model.download(clock, &file);
                        chat.runner.perform(&mut chat.model, clock);
                        chat.focus_input = true;
                    }
                }
                Click::WriteTo(name) => self.write_to(&name),
                Click::ShowFolder(folder) => self.show_folder(folder),
                Click::Select(channel) => {
                    if let Some(chat) = &mut self.chat {
                        chat.channels.select(&channel, chat.model.conversation());
                        chat.focus_input = true;
                    }
                }
                Click::Close(channel) => {
                    if let Some(chat) = &mut self.chat {
                        chat.channels.close(&channel);
                    }
                }
                Click::Reconnect => {
                    if let Some(chat) = &mut self.chat {
                        chat.model.run(clock, natter_core::client_model::Command::Reconnect);
                        chat.runner.perform(&mut chat.model, clock);
                    }
                }
                Click::BackToForm => self.back_to_form(),
                Click::ClearFinished => {
                    if let Some(chat) = &mut self.chat {
                        chat.model.clear_finished_downloads();
                    }
                }
                Click::Send => {
                    if let Some(chat) = &mut self.chat {
                        let channel = chat.channels.current().clone();
                        chat.model.submit_input_in(clock, &channel);
                        chat.runner.perform(&mut chat.model, clock);
                        chat.focus_input = true;
                    }
                }
            }
        }
    }

    /// "Change server": back to the form with this chat's address and name. The chat's session
    /// is dropped (it leaves), and its events, still on their way, go nowhere: the next chat
    /// gets a queue of its own.
    pub(crate) fn back_to_form(&mut self) {
        if let Some(chat) = self.chat.take() {
            self.form.addr = chat.server;
            self.form.name = chat.model.name().to_owned();
            self.form.error = None;
            (self.tx, self.rx) = mpsc::channel();
        }
    }

    /// A click on a name: that person's conversation, the input ready.
    pub(crate) fn write_to(&mut self, name: &str) {
        if let Some(chat) = &mut self.chat {
            chat.channels.select(&Channel::Private(name.to_owned()), chat.model.conversation());
            chat.focus_input = true;
        }
    }

    /// "Show in folder": `folder` opened by the opener program; a failure becomes an error line
    /// (reported from a thread, as the program may fail after it started).
    pub(crate) fn show_folder(&mut self, folder: String) {
        let tx = self.tx.clone();
        let opener = self.opener.clone();
        let spawned = std::process::Command::new(&opener)
            .arg(&folder)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                let waiter = std::thread::Builder::new().name("natter-open".into()).spawn(
                    move || match child.wait() {
                        Ok(status) if status.success() => {}
                        Ok(status) => {
                            let _ = tx.send(AppEvent::OpenFailed(format!(
                                "could not show {folder}: {opener} {status}"
                            )));
                        }
                        Err(err) => {
                            let _ = tx.send(AppEvent::OpenFailed(format!(
                                "could not show {folder}: {err}"
                            )));
                        }
                    },
                );
                if let Err(err) = waiter {
                    self.open_failed(format!("could not follow {}: {err}", self.opener));
                }
            }
            Err(err) => self.open_failed(format!("could not show {folder}: {opener}: {err}")),
        }
    }

    fn open_failed(&mut self, text: String) {
        let clock = (self.clock)();
        if let Some(chat) = &mut self.chat {
            chat.model.ui_error(clock, text);
        }
    }

    fn after_frame(&mut self, ctx: &egui::Context) {
        let clock = (self.clock)();
        let mut title = "natter".to_owned();
        if let Some(chat) = &mut self.chat {
            if chat.model.is_closed() && !self.closing {
                self.closing = true;
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            let focused = ctx.input(|i| i.viewport().focused.unwrap_or(true));
            if chat.model.take_bell() && !focused {
                ctx.send_viewport_cmd(egui::ViewportCommand::RequestUserAttention(
                    egui::UserAttentionType::Informational,
                ));
            }
            let unread: usize = chat
                .channels
                .list()
                .iter()
                .map(|c| chat.channels.unread(c, chat.model.conversation()))
                .sum();
            title = match unread {
                0 => format!("natter: {} at {}", chat.model.name(), chat.server),
                n => format!("({n}) natter: {} at {}", chat.model.name(), chat.server),
            };
            // The retry countdown and the rates move each second; the model's own timers
            // (back-off, file refresh) may come sooner.
            let wait = chat
                .model
                .poll_timeout()
                .map_or(Duration::from_secs(1), |at| at.saturating_duration_since(clock.now))
                .min(Duration::from_secs(1));
            ctx.request_repaint_after(wait);
        }
        if title != self.last_title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.last_title = title;
        }
        self.write_trace(ctx);
    }

    /// The state the trace file records: the connection, whether the window has the keyboard
    /// and the input has the focus, and the input line.
    pub fn trace_line(&self, ctx: &egui::Context) -> String {
        let focused = ctx.input(|i| i.viewport().focused.unwrap_or(false));
        match &self.chat {
            None => format!("form focused={focused}"),
            Some(chat) => {
                let input_focus = ctx.memory(|m| m.has_focus(crate::render::input_id()));
                format!(
                    "state={} focused={focused} input_focus={input_focus} input={:?}",
                    chat.model.connection().label(),
                    chat.model.input()
                )
            }
        }
    }

    fn write_trace(&mut self, ctx: &egui::Context) {
        let Some(path) = &self.trace else { return };
        let line = self.trace_line(ctx);
        if line == self.last_trace {
            return;
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(err) = written {
            eprintln!("natter gui: cannot write the trace file {}: {err}", path.display());
            self.trace = None;
        }
        self.last_trace = line;
    }
}

impl eframe::App for GuiApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}
