//! Image snapshots of the main states, rendered by wgpu on a software adapter (Mesa's lavapipe
//! where there is no GPU) with egui's embedded fonts, a fixed window size and a fixed clock, so
//! the pictures are the same on every machine. `egui_kittest` compares each with the PNG under
//! `tests/snapshots/` and fails when more pixels differ than allowed (`kittest.toml`);
//! `UPDATE_SNAPSHOTS=1 cargo test -p natter-gui --test snapshots` writes new ones after a
//! change that is meant. Issue 13, must-have 3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use natter_core::chat::client::ClientEvent;
use natter_core::client_model::SessionEvent;
use natter_gui::GuiApp;

use support::*;

// Issue 13 (snapshot: the empty state, the connect form)
#[test]
fn snapshot_connect_form() {
    let script = Script::default();
    let mut harness = harness(GuiApp::new(options(&script, None)));
    harness.snapshot("connect_form");
}

/// A room with talk, a mention, presence, a private exchange, a system line and an error.
fn busy() -> (egui_kittest::Harness<'static, GuiApp>, Script) {
    let (mut harness, script) = joined();
    script.server(ClientEvent::Joined("dave".into()));
    script.server(public("bob", "morning all"));
    script.server(public("carol", "hi bob, did the build pass?"));
    script.server(public("alice", "it did, 3 minutes"));
    script.server(public("bob", "alice: can you send me the log?"));
    script.server(ClientEvent::Private { from: "carol".into(), text: "lunch at 12?".into() });
    script.server(ClientEvent::PrivateSent { to: "carol".into(), text: "yes!".into() });
    script.server(ClientEvent::Left("dave".into()));
    script.server(ClientEvent::Error("no such user: zed".into()));
    harness.run_steps(2);
    harness.get_by_role(Role::TextInput).type_text("/get pho");
    harness.run_steps(2);
    (harness, script)
}

// Issue 13 (snapshot: a busy chat)
#[test]
fn snapshot_busy_chat() {
    let (mut harness, _script) = busy();
    harness.snapshot("busy_chat");
}

// Issue 13 (snapshot: a download in progress, one finished, one failed)
#[test]
fn snapshot_download_in_progress() {
    let (mut harness, script) = busy();
    harness.get_by_label("Download hello.c").click();
    harness.get_by_label("Download photo.png").click();
    harness.run_steps(2);
    script.server(offer("hello.c", 48_213));
    script.feed(saved("hello.c", 48_213));
    script.server(offer("photo.png", 23_400_000));
    script.feed(progress("photo.png", 9_100_000, 23_400_000));
    harness.run_steps(2);
    harness.snapshot("download_in_progress");
}

// Issue 13 (snapshot: an error state, the connection lost and tried again)
#[test]
fn snapshot_connection_lost() {
    let (mut harness, script) = busy();
    script.feed(SessionEvent::Disconnected("the server closed the connection".into()));
    script.feed(SessionEvent::Ended { error: None });
    harness.run_steps(2);
    harness.snapshot("connection_lost");
}

// Issue 13 (snapshot: the refused name)
#[test]
fn snapshot_name_refused() {
    let (mut harness, script) = connected();
    script.server(ClientEvent::NameRefused("name taken: alice".into()));
    harness.run_steps(2);
    harness.snapshot("name_refused");
}
