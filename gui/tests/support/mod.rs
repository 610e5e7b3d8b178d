//! The window driven with no network: a [`Script`] stands for the sessions (it records what the
//! model asks for and hands the window the events a test scripts), the clock is fixed, and
//! `egui_kittest` clicks and types through AccessKit as a person (or a screen reader) would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use natter_core::chat::client::{ClientEvent, Offer};
use natter_core::client_model::{Action, ClientModel, Clock, SessionEvent, TimeOfDay};
use natter_core::driver::client::DownloadReport;
use natter_core::transfer::receiver::Progress;
use natter_core::wire::chat::UdpOffer;
use natter_gui::{Connector, GuiApp, GuiOptions, Performer, Report, WINDOW_SIZE};

/// The sessions, scripted.
#[derive(Clone, Default)]
pub struct Script {
    /// What the model asked for, in order.
    pub actions: Arc<Mutex<Vec<Action>>>,
    /// The addresses the form connected to.
    pub opened: Arc<Mutex<Vec<String>>>,
    pub report: Arc<Mutex<Option<Report>>>,
    /// `open` fails with this.
    pub refuse: Option<String>,
}

impl Connector for Script {
    fn open(&mut self, addr: &str, report: Report) -> Result<Box<dyn Performer>, String> {
        if let Some(reason) = &self.refuse {
            return Err(reason.clone());
        }
        self.opened.lock().unwrap().push(addr.to_owned());
        *self.report.lock().unwrap() = Some(report);
        Ok(Box::new(self.clone()))
    }
}

impl Performer for Script {
    fn perform(&mut self, model: &mut ClientModel, _clock: Clock) {
        while let Some(action) = model.poll_action() {
            self.actions.lock().unwrap().push(action);
        }
    }
}

impl Script {
    /// The session reports `event` (from "its thread", through the window's queue).
    pub fn feed(&self, event: SessionEvent) {
        let report = self.report.lock().unwrap();
        (report.as_ref().expect("connected"))(event);
    }

    pub fn server(&self, event: ClientEvent) {
        self.feed(SessionEvent::Server(event));
    }

    /// The lines sent since the last call.
    pub fn sent(&self) -> Vec<String> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Send(line) => Some(line),
                Action::Connect { .. } => None,
            })
            .collect()
    }

    /// Every action since the last call.
    pub fn take(&self) -> Vec<Action> {
        std::mem::take(&mut *self.actions.lock().unwrap())
    }
}

/// The fixed instant every test's clock reads (times of day are fixed too: snapshots are
/// stable).
pub fn fixed_clock() -> Box<dyn Fn() -> Clock> {
    let now = Instant::now();
    Box::new(move || Clock { now, time: TimeOfDay { hour: 10, minute: 42, second: 0 } })
}

pub fn options(script: &Script, settings: Option<PathBuf>) -> GuiOptions {
    GuiOptions {
        addr: None,
        name: None,
        connect_now: false,
        settings,
        downloads: PathBuf::from("Downloads"),
        opener: "/nonexistent/natter-test-opener".into(),
        trace: None,
        connector: Box::new(script.clone()),
        clock: fixed_clock(),
    }
}

pub fn harness(app: GuiApp) -> Harness<'static, GuiApp> {
    let mut harness = Harness::builder()
        .with_size(WINDOW_SIZE)
        .wgpu()
        .build_ui_state(|ui, app: &mut GuiApp| app.show(ui), app);
    harness.run_steps(2);
    harness
}

/// A window connected as alice (no form), with the Connect taken.
pub fn connected() -> (Harness<'static, GuiApp>, Script) {
    let script = Script::default();
    let mut opts = options(&script, None);
    opts.addr = Some("127.0.0.1:55000".into());
    opts.name = Some("alice".into());
    opts.connect_now = true;
    let harness = harness(GuiApp::new(opts));
    assert_eq!(script.take(), [Action::Connect { name: "alice".into() }]);
    (harness, script)
}

/// Alice in, with bob and carol, and two files on offer.
pub fn joined() -> (Harness<'static, GuiApp>, Script) {
    let (mut harness, script) = connected();
    script.server(ClientEvent::Joined("alice".into()));
    script.server(ClientEvent::Presence(vec!["bob".into(), "carol".into()]));
    script.server(ClientEvent::Files(vec!["hello.c".into(), "photo.png".into()]));
    harness.run_steps(2);
    assert_eq!(script.sent(), ["get_list_file"], "files fetched on join");
    (harness, script)
}

pub fn public(from: &str, text: &str) -> ClientEvent {
    ClientEvent::Public { from: from.into(), text: text.into() }
}

pub fn offer(file: &str, size: u64) -> ClientEvent {
    let udp = UdpOffer {
        port: 40001,
        transfer_id: 1,
        file: file.into(),
        size,
        part_size: 1200,
        blake3: [7; 32],
        token: 1,
        key: None,
    };
    ClientEvent::Offer(Offer::checked(udp).expect("a sound offer"))
}

pub fn progress(file: &str, received: u64, size: u64) -> SessionEvent {
    let progress = Progress { bytes_received: received, size, ..Progress::default() };
    SessionEvent::Progress { file: file.into(), progress }
}

pub fn saved(file: &str, size: u64) -> SessionEvent {
    SessionEvent::DownloadDone {
        file: file.into(),
        result: Ok(DownloadReport {
            path: format!("Downloads/{file}"),
            size,
            resumed: 0,
            elapsed: Duration::from_millis(120),
            parts_retransmitted: 0,
        }),
    }
}
