//! The terminal client without a terminal: keys and session events in, `TestBackend` screens
//! out (insta snapshots), at 80 and at 40 columns. Issue 13 (must-have 3); the lines shown
//! follow PROTOCOL 1.1-1.4 and 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use natter_core::chat::client::ClientEvent;
use natter_core::client_model::{Action, ClientModel, Clock, SessionEvent, TimeOfDay};
use natter_core::transfer::receiver::Progress;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::render::{name_color, render};
use super::view::{Focus, View};

struct Tui {
    model: ClientModel,
    view: View,
    start: Instant,
    now: Instant,
}

impl Tui {
    fn new() -> Self {
        let start = Instant::now();
        let mut tui = Self {
            model: ClientModel::new("alice", "127.0.0.1:7000", fixed(start, 0)),
            view: View::new("127.0.0.1:7000".into()),
            start,
            now: start,
        };
        tui.actions();
        tui
    }

    /// Alice in, with bob and carol; three files on offer.
    fn joined() -> Self {
        let mut tui = Self::new();
        tui.server(ClientEvent::Joined("alice".into()));
        tui.server(ClientEvent::Presence(vec!["bob".into(), "carol".into()]));
        tui.server(ClientEvent::Files(vec![
            "hello.c".into(),
            "photo.png".into(),
            "song.ogg".into(),
        ]));
        tui.actions();
        tui
    }

    fn clock(&self) -> Clock {
        fixed(self.now, self.now.duration_since(self.start).as_secs())
    }

    fn server(&mut self, event: ClientEvent) {
        self.session(SessionEvent::Server(event));
    }

    fn session(&mut self, event: SessionEvent) {
        let clock = self.clock();
        self.model.handle_event(clock, event);
    }

    fn event(&mut self, event: Event) {
        let clock = self.clock();
        self.view.on_event(&mut self.model, clock, event);
    }

    fn key(&mut self, code: KeyCode) {
        self.event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }

    fn ctrl(&mut self, c: char) {
        self.event(Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)));
    }

    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn actions(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.model.poll_action())
            .map(|a| match a {
                Action::Send(line) => line,
                Action::Connect { name } => format!("CONNECT {name}"),
            })
            .collect()
    }

    fn screen(&self, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| render(frame, &self.model, &self.view, self.clock())).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                let row: String = (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect();
                row.trim_end().to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A chat with a bit of everything: messages, a mention, private lines, presence, an error,
    /// and a download half done.
    fn busy() -> Self {
        let mut tui = Self::joined();
        tui.now += Duration::from_secs(60);
        tui.server(ClientEvent::Public { from: "bob".into(), text: "hi all".into() });
        tui.server(ClientEvent::Public {
            from: "carol".into(),
            text: "alice: did you get the photo?".into(),
        });
        tui.type_text("not yet");
        tui.key(KeyCode::Enter);
        tui.server(ClientEvent::Public { from: "alice".into(), text: "not yet".into() });
        tui.server(ClientEvent::Private { from: "bob".into(), text: "psst, try song.ogg".into() });
        tui.server(ClientEvent::PrivateSent { to: "bob".into(), text: "thanks".into() });
        tui.server(ClientEvent::Joined("dave".into()));
        tui.server(ClientEvent::Error("no such user: eve".into()));
        tui.model.download(tui.clock(), "song.ogg");
        let progress = |bytes| SessionEvent::Progress {
            file: "song.ogg".into(),
            progress: Progress { bytes_received: bytes, size: 4_000_000, ..Progress::default() },
        };
        tui.session(progress(1_000_000));
        tui.now += Duration::from_secs(1);
        tui.session(progress(1_800_000));
        tui.type_text("/get pho");
        tui.actions();
        tui
    }
}

fn fixed(now: Instant, secs: u64) -> Clock {
    Clock { now, time: TimeOfDay::from_seconds(14 * 3600 + 5 * 60 + secs) }
}

// Issue 13 (TUI snapshot); PROTOCOL 1.3
#[test]
fn a_busy_chat() {
    insta::assert_snapshot!(Tui::busy().screen(90, 22));
}

// Issue 13 (usable at 40 columns); PROTOCOL 1.3
#[test]
fn a_busy_chat_at_40_columns() {
    insta::assert_snapshot!(Tui::busy().screen(40, 18));
}

// Issue 13 (TUI snapshot, empty); PROTOCOL 1.1
#[test]
fn the_empty_window_while_connecting() {
    insta::assert_snapshot!(Tui::new().screen(80, 12));
}

// Issue 13 (file pane, Enter downloads); PROTOCOL 1.4, 2.1
#[test]
fn enter_in_the_file_pane_downloads() {
    let mut tui = Tui::joined();
    tui.key(KeyCode::F(2));
    assert_eq!(tui.view.focus, Focus::Files);
    tui.key(KeyCode::Down);
    tui.key(KeyCode::Down);
    tui.key(KeyCode::Down); // stops at the last file
    tui.key(KeyCode::Up);
    insta::assert_snapshot!("file_pane_at_40_columns", tui.screen(40, 12));
    tui.key(KeyCode::Enter);
    assert_eq!(tui.actions(), ["download_file photo.png"]);
    assert_eq!(tui.view.focus, Focus::Input, "back to the conversation");
}

// Issue 13; PROTOCOL 1.2
#[test]
fn enter_in_the_people_pane_starts_a_private_message() {
    let mut tui = Tui::joined();
    tui.key(KeyCode::F(3));
    tui.key(KeyCode::Down);
    tui.key(KeyCode::Enter);
    assert_eq!(tui.model.input(), "/msg bob ");
    assert_eq!(tui.view.focus, Focus::Input);
    tui.type_text("hello");
    tui.key(KeyCode::Enter);
    assert_eq!(tui.actions(), ["~bob hello"]);
}

// Issue 13 (paste confirmation); PROTOCOL 1.2
#[test]
fn a_multi_line_paste_is_confirmed_first() {
    let mut tui = Tui::joined();
    tui.event(Event::Paste("one\r\ntwo\nthree\n".into()));
    assert_eq!(tui.actions(), Vec::<String>::new(), "nothing sent before the answer");
    insta::assert_snapshot!("paste_confirmation", tui.screen(60, 10));
    tui.key(KeyCode::Char('x'));
    assert!(tui.view.paste.is_some(), "other keys wait for the answer");
    tui.key(KeyCode::Enter);
    assert_eq!(tui.actions(), ["one", "two", "three"]);
    tui.event(Event::Paste("four\nfive".into()));
    tui.key(KeyCode::Esc);
    assert_eq!(tui.actions(), Vec::<String>::new(), "cancelled");
    tui.event(Event::Paste("one line".into()));
    assert_eq!(tui.model.input(), "one line", "a single line is typed in, not asked about");
}

// Issue 13 (Up/Down history, Tab completion)
#[test]
fn history_completion_and_line_editing_by_key() {
    let mut tui = Tui::joined();
    tui.type_text("first");
    tui.key(KeyCode::Enter);
    tui.type_text("/wh");
    tui.key(KeyCode::Tab);
    assert_eq!(tui.model.input(), "/who ");
    tui.key(KeyCode::Enter);
    tui.key(KeyCode::Up);
    tui.key(KeyCode::Up);
    assert_eq!(tui.model.input(), "first");
    tui.key(KeyCode::Down);
    assert_eq!(tui.model.input(), "/who ");
    tui.key(KeyCode::Down);
    assert_eq!(tui.model.input(), "");
    tui.type_text("helo world");
    for _ in 0..7 {
        tui.key(KeyCode::Left);
    }
    tui.key(KeyCode::Char('l'));
    assert_eq!(tui.model.input(), "hello world");
    tui.key(KeyCode::End);
    tui.ctrl('w');
    assert_eq!(tui.model.input(), "hello ");
    tui.key(KeyCode::Home);
    tui.key(KeyCode::Delete);
    tui.key(KeyCode::Backspace); // nothing before the cursor
    assert_eq!(tui.model.input(), "ello ");
    tui.ctrl('u');
    tui.key(KeyCode::End);
    tui.ctrl('u');
    assert_eq!(tui.model.input(), "");
    assert_eq!(tui.actions(), ["first", "show"]);
}

// Issue 13 (/quit); PROTOCOL 4.1
#[test]
fn ctrl_c_leaves_politely_then_at_once() {
    let mut tui = Tui::joined();
    tui.ctrl('c');
    assert_eq!(tui.actions(), ["{quit}"]);
    assert!(!tui.view.exit_now, "waits for the server's close");
    tui.ctrl('c');
    assert!(tui.view.exit_now);
}

// Issue 13 (scrollback, mouse wheel)
#[test]
fn pgup_and_the_wheel_scroll_back() {
    let mut tui = Tui::joined();
    for i in 0..40 {
        tui.server(ClientEvent::Public { from: "bob".into(), text: format!("line {i}") });
    }
    assert!(tui.screen(80, 12).contains("line 39"));
    tui.key(KeyCode::PageUp);
    let screen = tui.screen(80, 12);
    assert!(!screen.contains("line 39") && screen.contains("line 29"), "{screen}");
    assert!(screen.contains("10 more below"), "{screen}");
    let wheel =
        |kind| Event::Mouse(MouseEvent { kind, column: 5, row: 5, modifiers: KeyModifiers::NONE });
    tui.event(wheel(MouseEventKind::ScrollDown));
    assert_eq!(tui.view.scroll, 7);
    tui.event(wheel(MouseEventKind::ScrollUp));
    tui.event(wheel(MouseEventKind::ScrollUp));
    assert_eq!(tui.view.scroll, 13);
    // New lines do not move what a scrolled-back view shows.
    let shown = tui.screen(80, 12);
    let before = tui.model.conversation().last_seq();
    tui.server(ClientEvent::Public { from: "bob".into(), text: "news".into() });
    tui.view.keep_place(before, tui.model.conversation().last_seq());
    assert_eq!(tui.screen(80, 12).replace("14 more", "13 more"), shown);
    tui.key(KeyCode::Esc);
    assert_eq!(tui.view.scroll, 0);
    for _ in 0..100 {
        tui.key(KeyCode::PageUp);
    }
    assert!(tui.view.scroll < tui.model.conversation().lines().len(), "bounded");
    // At the top, the pane is full of the first lines, not half empty.
    let screen = tui.screen(80, 12);
    assert!(screen.contains("you joined as alice") && screen.contains("line 2"), "{screen}");
}

// Issue 13 (a lost server shown, reconnect); C1; PROTOCOL 1.1, 4.3
#[test]
fn a_lost_server_and_a_refused_name_are_shown() {
    let mut tui = Tui::joined();
    tui.session(SessionEvent::Disconnected("the server closed the connection".into()));
    tui.session(SessionEvent::Ended { error: None });
    insta::assert_snapshot!("lost_server", tui.screen(80, 10));
    tui.now += Duration::from_secs(1);
    let clock = tui.clock();
    tui.model.handle_timeout(clock);
    assert_eq!(tui.actions(), ["CONNECT alice"]);
    tui.server(ClientEvent::NameRefused("name taken: alice".into()));
    insta::assert_snapshot!("name_refused", tui.screen(80, 10));
}

// S4; PROTOCOL 1.3
#[test]
fn text_from_the_network_is_shown_as_text() {
    // S4: the core escapes what could move the cursor; the screen shows the escape.
    let mut tui = Tui::joined();
    tui.server(ClientEvent::Public { from: "bob".into(), text: "a\\u{001b}[2Jb".into() });
    assert!(tui.screen(80, 10).contains("<bob> a\\u{001b}[2Jb"));
}

// Issue 13 (usable at 40 columns)
#[test]
fn long_lines_wrap_at_spaces_under_the_timestamp() {
    use ratatui::text::Line;
    let text = |lines: Vec<Line>| lines.iter().map(ToString::to_string).collect::<Vec<_>>();
    let line = Line::from("12:00 <bob> the quick brown fox jumps over the lazy dog");
    assert_eq!(
        text(super::render::wrap(line, 24, 6)),
        ["12:00 <bob> the quick", "      brown fox jumps", "      over the lazy dog"]
    );
    // A word longer than a row is cut where the row ends.
    let line = Line::from("12:00 abcdefghijklmnopqrstuvwxyz");
    assert_eq!(
        text(super::render::wrap(line, 16, 6)),
        ["12:00 abcdefghij", "      klmnopqrst", "      uvwxyz"]
    );
    assert_eq!(text(super::render::wrap(Line::from(""), 10, 6)), [""]);
}

// Issue 13 (usable at 40 columns): smaller windows do not break it either.
#[test]
fn tiny_windows_draw_without_panicking() {
    let mut tui = Tui::busy();
    tui.event(Event::Paste("a\nb".into()));
    for width in [1, 2, 5, 12, 25, 39] {
        for height in [1, 2, 3, 5, 8] {
            let screen = tui.screen(width, height);
            assert_eq!(screen.split('\n').count(), usize::from(height));
        }
    }
    tui.key(KeyCode::Esc);
    tui.key(KeyCode::F(2));
    for width in [1, 3, 7] {
        tui.screen(width, 4);
    }
}

// Issue 13 (a colour per name)
#[test]
fn names_keep_their_colour() {
    assert_eq!(name_color("bob"), name_color("Bob"));
    let colours: std::collections::HashSet<_> = ["alice", "bob", "carol", "dave", "eve", "frank"]
        .iter()
        .map(|n| format!("{:?}", name_color(n)))
        .collect();
    assert!(colours.len() >= 3, "names get different colours: {colours:?}");
}
