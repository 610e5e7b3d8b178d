//! The client model of `natter tui` and `natter gui` against a real server, through the session
//! runner both UIs use: the seed session (PROTOCOL 3) done with slash commands only, and a lost
//! server tried again. Issue 13; PROTOCOL 1.1, 1.2, 1.4, 2, 4.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use natter_core::client_model::{
    ClientModel, Clock, Connection, DownloadState, LineKind, SessionEvent, TimeOfDay,
};
use natter_runtime_common::SessionRunner;
use support::*;

/// A UI without a screen: the model, the runner, and the channel the sessions report into.
struct Headless {
    model: ClientModel,
    runner: SessionRunner,
    events: mpsc::Receiver<SessionEvent>,
}

fn clock() -> Clock {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Clock { now: Instant::now(), time: TimeOfDay::from_seconds(secs) }
}

impl Headless {
    fn start(rt: Rt, server: &TestServer, out: &std::path::Path, name: &str) -> Self {
        let (tx, events) = mpsc::channel();
        let options = client_opts(server, out, name);
        let runner = SessionRunner::new(rt.client(), options, move |event| {
            let _ = tx.send(event);
        });
        let model = ClientModel::new(name, &server.addr.to_string(), clock());
        let mut ui = Self { model, runner, events };
        ui.runner.perform(&mut ui.model, clock());
        ui
    }

    fn type_line(&mut self, line: &str) {
        *self.model.input_mut() = line.to_owned();
        self.model.submit_input(clock());
        self.runner.perform(&mut self.model, clock());
    }

    /// Runs the UI loop until `done` holds (bounded by the suite's reply timeout).
    fn until(&mut self, what: &str, mut done: impl FnMut(&ClientModel) -> bool) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !done(&self.model) {
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}; saw {:#?}", self.texts());
            let wait = self.model.poll_timeout().map_or(deadline, |at| at.min(deadline));
            if let Ok(event) = self
                .events
                .recv_timeout(wait.saturating_duration_since(now).max(Duration::from_millis(1)))
            {
                self.model.handle_event(clock(), event);
            }
            self.model.handle_timeout(clock());
            self.runner.perform(&mut self.model, clock());
        }
    }

    fn texts(&self) -> Vec<String> {
        self.model
            .conversation()
            .lines()
            .iter()
            .map(|l| format!("{:?} {}", l.kind, l.text))
            .collect()
    }

    fn has_line(&self, kind: &LineKind, text: &str) -> bool {
        self.model.conversation().lines().iter().any(|l| l.kind == *kind && l.text.contains(text))
    }
}

// Issue 13 must-have 4; PROTOCOL 3 (the example session), 1.2, 2.
#[test]
fn the_seed_session_with_slash_commands_only() {
    for rt in [Rt::Mio, Rt::Smol] {
        let content = pattern(50_000, 13);
        let server = start(
            rt,
            folder_with(&[("hello.c", content.clone()), ("notes.txt", b"n".to_vec())]),
            |_| {},
        );
        let out = tempfile::tempdir().unwrap();
        let mut bob = Raw::join(server.addr, "bob");
        let mut alice = Headless::start(rt, &server, out.path(), "alice");
        alice.until("the join and the file list", |m| {
            *m.connection() == Connection::Joined && m.files().len() == 2 && m.others() == ["bob"]
        });
        bob.sees("alice has joined the chat!");

        alice.type_line("hello bob");
        bob.sees("alice: hello bob");

        bob.send("~alice hi alice");
        let private = LineKind::Private { with: "bob".into(), incoming: true };
        alice.until("bob's private message", |m| {
            m.conversation().lines().iter().any(|l| l.kind == private)
        });
        assert!(alice.has_line(&private, "hi alice"));

        alice.type_line("/msg bob psst");
        bob.sees("alice: (PRIVATE) psst");

        alice.type_line("/who");
        assert!(
            alice.has_line(&LineKind::System, "2 here: alice (you), bob"),
            "{:#?}",
            alice.texts()
        );

        alice.type_line("/files");
        alice.until("the file list", |m| {
            m.conversation()
                .lines()
                .iter()
                .any(|l| l.text.starts_with("2 files on offer: hello.c, notes.txt"))
        });

        alice.type_line("/get hello.c");
        alice.until("the download", |m| m.downloads().iter().any(|d| !d.is_active()));
        let download = &alice.model.downloads()[0];
        let DownloadState::Verified { path } = &download.state else {
            panic!("{download:?} {:#?}", alice.texts());
        };
        assert_eq!(std::fs::read(path).unwrap(), content, "byte-exact");

        alice.type_line("/quit");
        alice.until("the end of the session", ClientModel::is_closed);
        bob.sees("alice left the chat...");
        // Nothing alice typed reached bob as a public message but "hello bob".
        bob.send("show");
        let rest = bob.sync();
        assert!(rest.iter().all(|l| !l.starts_with("alice:")), "{rest:?}");
    }
}

// Issue 13 (connection state with reconnect); PROTOCOL 4.3.
#[test]
fn a_lost_server_is_found_again() {
    let server = start(Rt::Mio, folder_with(&[("a.txt", b"a".to_vec())]), |_| {});
    let addr = server.addr;
    let out = tempfile::tempdir().unwrap();
    let mut alice = Headless::start(Rt::Mio, &server, out.path(), "alice");
    alice.until("the join", |m| *m.connection() == Connection::Joined);
    let files = server.stop();
    alice.until("the loss", |m| matches!(m.connection(), Connection::Lost { .. }));
    // The same address again, as after a server restart.
    let mut options = natter_runtime_common::ServerOptions::new(addr, files.path().to_owned());
    options.chat.udp_ports = {
        let b = free_udp_range(16);
        b..=b + 15
    };
    let _again = natter_runtime_common::serve::BoundServer::bind(options)
        .unwrap()
        .spawn(Rt::Mio.serve())
        .unwrap();
    alice.until("the rejoin", |m| *m.connection() == Connection::Joined && m.files() == ["a.txt"]);
    assert!(alice.has_line(&LineKind::System, "connecting again as alice"));
}
