//! `natter gui` driven through AccessKit, as a person (or a screen reader) would: widgets are
//! found by label and role, clicked and typed into; the sessions are scripted (no network).
//! Issue 13, must-have 2 (the window client) and its tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use natter_core::chat::client::ClientEvent;
use natter_core::client_model::{Action, Channel, Connection, SessionEvent};
use natter_gui::GuiApp;
use natter_gui::settings::Remembered;

use support::*;

fn input_value(harness: &egui_kittest::Harness<'_, GuiApp>) -> String {
    harness.state().model().expect("connected").input().to_owned()
}

// Issue 13 (natter gui: the connect form, which remembers the last values)
#[test]
fn the_connect_form_connects_and_remembers_the_address_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("natter").join("gui.toml");
    let script = Script::default();
    let mut harness = harness(GuiApp::new(options(&script, Some(settings.clone()))));
    let addr = harness.get_by_label("Server address");
    assert_eq!(addr.value().as_deref(), Some("127.0.0.1:55000"), "the default address");
    // Connect with no name: said, nothing opened.
    harness.get_by_label("Connect").click();
    harness.run_steps(2);
    harness.get_by_label_contains("type the server's address and your name");
    assert!(script.opened.lock().unwrap().is_empty());

    harness.get_by_label("Server address").focus();
    harness.run_steps(1);
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    harness.get_by_label("Server address").type_text("natters://chat.example:55443");
    harness.get_by_label("Your name").focus();
    harness.run_steps(1);
    harness.get_by_label("Your name").type_text("alice");
    harness.run_steps(1);
    harness.get_by_label("Connect").click();
    harness.run_steps(2);
    assert_eq!(*script.opened.lock().unwrap(), ["natters://chat.example:55443"]);
    assert_eq!(script.take(), [Action::Connect { name: "alice".into() }]);
    harness.get_by_label_contains("Connecting as alice");

    let remembered = Remembered::load(&settings).unwrap();
    assert_eq!(remembered.addr.as_deref(), Some("natters://chat.example:55443"));
    assert_eq!(remembered.name.as_deref(), Some("alice"));

    // The next run's form shows them.
    let again = harness_for(&script, &settings);
    assert_eq!(
        again.get_by_label("Server address").value().as_deref(),
        Some("natters://chat.example:55443")
    );
    assert_eq!(again.get_by_label("Your name").value().as_deref(), Some("alice"));
}

fn harness_for(
    script: &Script,
    settings: &std::path::Path,
) -> egui_kittest::Harness<'static, GuiApp> {
    harness(GuiApp::new(options(script, Some(settings.to_path_buf()))))
}

// Issue 13 (natter gui: a bad address is said in the form; a bad settings file is not fatal)
#[test]
fn a_refused_address_stays_in_the_form_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("gui.toml");
    std::fs::write(&settings, "name = alice\n").unwrap();
    let script = Script {
        refuse: Some("\"nowhere\" is not a host:port address".into()),
        ..Default::default()
    };
    let mut harness = harness(GuiApp::new(options(&script, Some(settings))));
    harness.get_by_label_contains("the last values could not be read: line 1");
    harness.get_by_label("Your name").focus();
    harness.run_steps(1);
    harness.get_by_label("Your name").type_text("bob");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    harness.get_by_label_contains("is not a host:port address");
    assert!(harness.state().model().is_none(), "still the form");
}

// Issue 13 (natter gui: Enter sends; the line shows with its time and sender)
#[test]
fn a_typed_line_is_sent_and_shown() {
    let (mut harness, script) = joined();
    let input = harness.get_by_role(Role::TextInput);
    assert!(input.is_focused(), "the input has the keyboard from the start");
    input.type_text("hello bob");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert_eq!(script.sent(), ["hello bob"]);
    assert_eq!(input_value(&harness), "");
    script.server(public("alice", "hello bob"));
    script.server(public("bob", "hi alice!"));
    harness.run_steps(2);
    harness.get_by_label("10:42 <alice> hello bob");
    harness.get_by_label("10:42 <bob> hi alice!");
    // The Send button does the same.
    harness.get_by_role(Role::TextInput).type_text("again");
    harness.get_by_label("Send").click();
    harness.run_steps(2);
    assert_eq!(script.sent(), ["again"]);
}

// Issue 13 (natter gui: click a name to write privately; private conversations told apart)
#[test]
fn clicking_a_person_opens_a_private_conversation() {
    let (mut harness, script) = joined();
    harness.get_by_label("bob").click();
    harness.run_steps(2);
    assert_eq!(harness.state().current_channel(), Some(&Channel::Private("bob".into())));
    harness.get_by_label("@bob");
    let input = harness.get_by_role(Role::TextInput);
    assert!(input.is_focused(), "ready to type");
    input.type_text("psst");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert_eq!(script.sent(), ["~bob psst"], "to bob only");
    script.server(ClientEvent::PrivateSent { to: "bob".into(), text: "psst".into() });
    harness.run_steps(2);
    harness.get_by_label("10:42 -> *bob* psst");

    // Carol writes privately while bob's tab is shown: her tab opens with an unread count.
    script.server(ClientEvent::Private { from: "carol".into(), text: "a secret".into() });
    harness.run_steps(2);
    harness.get_by_label("@carol (1)");
    assert!(harness.query_by_label("10:42 *carol* a secret").is_none(), "not in bob's tab");
    harness.get_by_label("@carol (1)").click();
    harness.run_steps(2);
    harness.get_by_label("@carol");
    harness.get_by_label("—— new since you last looked ——");
    harness.get_by_label("10:42 *carol* a secret");
    // The room shows everything.
    harness.get_by_label("Room").click();
    harness.run_steps(2);
    harness.get_by_label("10:42 *carol* a secret");
    harness.get_by_label("10:42 -> *bob* psst");
    harness.get_by_label("Close bob").click();
    harness.run_steps(2);
    assert!(harness.query_by_label("@bob").is_none());
}

// Issue 13 (natter gui: a Download button per file; the downloads panel)
#[test]
fn clicking_download_follows_the_file_to_its_end() {
    let (mut harness, script) = joined();
    harness.get_by_label("Download photo.png").click();
    harness.run_steps(2);
    assert_eq!(script.sent(), ["download_file photo.png"]);
    harness.get_by_label_contains("asked for, waiting for the server");
    script.server(offer("photo.png", 2_000_000));
    script.feed(progress("photo.png", 900_000, 2_000_000));
    harness.run_steps(2);
    harness.get_by_label_contains("45% · 900.0 KB of 2.0 MB");
    script.feed(saved("photo.png", 2_000_000));
    harness.run_steps(2);
    harness.get_by_label_contains("saved, checked byte for byte (2.0 MB in 0.12 s)");
    // The opener cannot run here: an error line says so.
    harness.get_by_label("Show in folder").click();
    harness.run_steps(2);
    harness.get_by_label_contains("could not show Downloads: /nonexistent/natter-test-opener");
    harness.get_by_label("Clear finished").click();
    harness.run_steps(2);
    assert!(harness.query_by_label("Show in folder").is_none());
}

// Issue 13 (natter gui: the refused-name state); PROTOCOL 1.1
#[test]
fn a_refused_name_is_shown_and_the_next_line_is_the_next_name() {
    let (mut harness, script) = connected();
    script.server(ClientEvent::NameRefused("name taken: alice".into()));
    harness.run_steps(2);
    harness.get_by_label_contains("The name alice was refused: name taken: alice.");
    harness.get_by_label("name refused");
    let input = harness.get_by_role(Role::TextInput);
    input.type_text("alice2");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert_eq!(script.sent(), ["alice2"], "the name alone, as PROTOCOL 1.1 wants");
    script.server(ClientEvent::Joined("alice2".into()));
    harness.run_steps(2);
    harness.get_by_label("connected");
    assert!(harness.query_by_label_contains("Type another name below").is_none(), "no banner");
    harness.get_by_label("alice2 (you)");
}

// Issue 13 (natter gui: lost connection and reconnecting states)
#[test]
fn a_lost_connection_is_shown_and_tried_again() {
    let (mut harness, script) = joined();
    script.feed(SessionEvent::Disconnected("the server closed the connection".into()));
    script.feed(SessionEvent::Ended { error: None });
    harness.run_steps(2);
    harness.get_by_label_contains("Lost the connection: the server closed the connection.");
    harness.get_by_label("disconnected, next try in 1s");
    assert!(matches!(harness.state().model().unwrap().connection(), Connection::Lost { .. }));
    // Typed while away: held, and said so.
    harness.get_by_role(Role::TextInput).type_text("anyone?");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    harness.get_by_label_contains("not in the chat yet: sent once connected");
    harness.get_by_label("Reconnect now").click();
    harness.run_steps(2);
    assert_eq!(script.take(), [Action::Connect { name: "alice".into() }]);
    harness.get_by_label("reconnecting (try 2)…");
    harness.get_by_label_contains("Reconnecting as alice");
    script.server(ClientEvent::Joined("alice".into()));
    harness.run_steps(2);
    assert_eq!(script.sent(), ["get_list_file", "anyone?"], "the held line goes once in");
    harness.get_by_label("connected");
}

// Issue 13 (natter gui: Up/Down history and Tab completion from the model)
#[test]
fn history_and_completion_in_the_input() {
    let (mut harness, script) = joined();
    for line in ["first", "second"] {
        harness.get_by_role(Role::TextInput).type_text(line);
        harness.key_press(egui::Key::Enter);
        harness.run_steps(1);
    }
    assert_eq!(script.sent(), ["first", "second"]);
    harness.key_press(egui::Key::ArrowUp);
    harness.run_steps(1);
    assert_eq!(input_value(&harness), "second");
    assert!(harness.get_by_role(Role::TextInput).is_focused(), "Up stays in the input");
    harness.key_press(egui::Key::ArrowUp);
    harness.run_steps(1);
    assert_eq!(input_value(&harness), "first");
    harness.key_press(egui::Key::ArrowDown);
    harness.run_steps(1);
    assert_eq!(input_value(&harness), "second");
    harness.key_press(egui::Key::ArrowDown);
    harness.run_steps(1);
    assert_eq!(input_value(&harness), "");

    harness.get_by_role(Role::TextInput).type_text("/ge");
    harness.key_press(egui::Key::Tab);
    harness.run_steps(1);
    assert_eq!(input_value(&harness), "/get ");
    assert!(harness.get_by_role(Role::TextInput).is_focused(), "Tab stays in the input");
    // The cursor is at the end: typing goes on after the completion.
    harness.get_by_role(Role::TextInput).type_text("ph");
    harness.key_press(egui::Key::Tab);
    harness.run_steps(1);
    assert_eq!(input_value(&harness), "/get photo.png");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(1);
    assert_eq!(script.sent(), ["download_file photo.png"]);
}

// Issue 13 (natter gui: text from the network is text, never markup); S4
#[test]
fn hostile_text_is_shown_literally() {
    let (mut harness, script) = joined();
    let long = "W".repeat(3000);
    let hostile = format!(
        "<b>bold</b> [x](https://evil.example) **strong** `code` \u{1b}[31mred\u{7} \u{202e}abc {long}"
    );
    script.server(public("mallory", &hostile));
    script.server(ClientEvent::Private { from: "mallory".into(), text: "<i>[y](z)</i>".into() });
    harness.run_steps(2);
    let shown = format!(
        "10:42 <mallory> <b>bold</b> [x](https://evil.example) **strong** `code` \
         \\u{{001b}}[31mred\\u{{0007}} \\u{{202e}}abc {long}"
    );
    let node = harness.get_by_label(&shown);
    harness.get_by_label("10:42 *mallory* <i>[y](z)</i>");
    assert!(harness.query_by_role(Role::Link).is_none(), "no link was made");
    let width = node.rect().width();
    assert!(width <= natter_gui::WINDOW_SIZE[0], "a 3000-character word wraps: {width}");
    assert!(node.rect().height() > 100.0, "over many rows: {:?}", node.rect());
    harness.render().expect("it renders");
}

// Issue 13 (natter gui: Ctrl+Q or /quit quits)
#[test]
fn ctrl_q_leaves_and_the_window_closes_when_the_session_ends() {
    let (mut harness, script) = joined();
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Q);
    harness.run_steps(2);
    assert_eq!(script.sent(), ["{quit}"]);
    harness.get_by_label("leaving…");
    assert!(!harness.state().is_closing(), "waits for the server to close");
    script.feed(SessionEvent::Ended { error: None });
    harness.run_steps(2);
    assert!(harness.state().is_closing());
}

#[test]
fn slash_quit_leaves_too() {
    let (mut harness, script) = joined();
    harness.get_by_role(Role::TextInput).type_text("/quit");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert_eq!(script.sent(), ["{quit}"]);
    script.feed(SessionEvent::Ended { error: None });
    harness.run_steps(2);
    assert!(harness.state().is_closing());
}

// Issue 13 (natter gui: a server that cannot be reached at all is said so, and the form is one
// click away to fix the address)
#[test]
fn an_unreachable_server_offers_the_form_again() {
    let (mut harness, script) = connected();
    let reason = "cannot reach the server at 127.0.0.1:2345: Connection refused (os error 111)";
    script.feed(SessionEvent::Ended { error: Some(reason.into()) });
    harness.run_steps(2);
    harness.get_by_label_contains(&format!("Cannot reach the server: {reason}."));
    harness.get_by_label("Change server").click();
    harness.run_steps(2);
    assert!(harness.state().model().is_none(), "the form again");
    assert_eq!(harness.get_by_label("Server address").value().as_deref(), Some("127.0.0.1:55000"));
    assert_eq!(harness.get_by_label("Your name").value().as_deref(), Some("alice"));
    // An event of the old session, late, reaches no one; a new connection starts clean.
    script.feed(SessionEvent::Ended { error: None });
    harness.get_by_label("Connect").click();
    harness.run_steps(2);
    assert_eq!(script.take(), [Action::Connect { name: "alice".into() }]);
    script.server(ClientEvent::Joined("alice".into()));
    harness.run_steps(2);
    harness.get_by_label("connected");
    assert!(harness.query_by_label_contains("Cannot reach").is_none());
}

// Issue 13 (natter gui: Enter in the form connects)
#[test]
fn enter_in_the_form_connects() {
    let script = Script::default();
    let mut opts = options(&script, None);
    opts.name = Some("dora".into());
    let mut harness = harness(GuiApp::new(opts));
    harness.get_by_label("Server address").focus();
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert_eq!(*script.opened.lock().unwrap(), ["127.0.0.1:55000"]);
    assert_eq!(script.take(), [Action::Connect { name: "dora".into() }]);
}

// Issue 13 (natter gui: keys typed fast land in order): found by trying the window, where
// `/who` Enter `/files` typed in one frame sent `/who/` and then `files` to everyone.
#[test]
fn what_is_typed_after_enter_in_the_same_frame_begins_the_next_line() {
    let (mut harness, script) = joined();
    harness.get_by_role(Role::TextInput).focus();
    harness.run_steps(1);
    // One frame's input: text, Enter, more text.
    harness.event(egui::Event::Text("/who".into()));
    harness.key_press(egui::Key::Enter);
    harness.event(egui::Event::Text("/fil".into()));
    harness.run_steps(1);
    assert_eq!(script.sent(), ["show"], "/who alone");
    assert_eq!(input_value(&harness), "/fil", "the rest waits in the input");
    harness.event(egui::Event::Text("es".into()));
    harness.key_press(egui::Key::Enter);
    harness.run_steps(1);
    assert_eq!(script.sent(), ["get_list_file"]);
    assert!(harness.query_by_label_contains("unknown command").is_none());
}
