//! The model driven as a UI drives it: typed lines in, session events in, actions out.
//! Issue 13 (the client model); PROTOCOL 1.1 (names, presence), 1.2 (what a client sends), 1.4
//! (files), 2 (downloads), 4.5 (answers in request order).

use std::time::{Duration, Instant};

use super::*;
use crate::chat::client::ClientEvent;
use crate::driver::client::DownloadReport;
use crate::transfer::receiver::Progress;

struct Ui {
    model: ClientModel,
    start: Instant,
    now: Instant,
}

impl Ui {
    /// A model for alice that has started its session (the first Connect taken).
    fn new() -> Self {
        let start = Instant::now();
        let clock = Clock { now: start, time: TimeOfDay { hour: 9, minute: 30, second: 0 } };
        let mut model = ClientModel::new("alice", "127.0.0.1:4000", clock);
        assert_eq!(model.poll_action(), Some(Action::Connect { name: "alice".into() }));
        assert_eq!(model.poll_action(), None);
        Self { model, start, now: start }
    }

    /// Alice is in, with bob and carol, and the files listed.
    fn joined() -> Self {
        let mut ui = Self::new();
        ui.server(ClientEvent::Joined("alice".into()));
        ui.server(ClientEvent::Presence(vec!["bob".into(), "carol".into()]));
        assert_eq!(ui.actions(), ["get_list_file"], "files fetched on join");
        ui.server(ClientEvent::Files(vec!["hello.c".into(), "photo.png".into()]));
        ui
    }

    fn clock(&self) -> Clock {
        let secs = self.now.duration_since(self.start).as_secs();
        Clock { now: self.now, time: TimeOfDay::from_seconds(9 * 3600 + 30 * 60 + secs) }
    }

    fn wait(&mut self, d: Duration) {
        self.now += d;
        if self.model.poll_timeout().is_some_and(|at| at <= self.now) {
            let clock = self.clock();
            self.model.handle_timeout(clock);
        }
    }

    fn type_line(&mut self, line: &str) {
        *self.model.input_mut() = line.to_owned();
        let clock = self.clock();
        self.model.submit_input(clock);
    }

    fn server(&mut self, event: ClientEvent) {
        self.event(SessionEvent::Server(event));
    }

    fn event(&mut self, event: SessionEvent) {
        let clock = self.clock();
        self.model.handle_event(clock, event);
    }

    /// The lines the model asked to send (Connects are written as `CONNECT name`).
    fn actions(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.model.poll_action())
            .map(|a| match a {
                Action::Send(line) => line,
                Action::Connect { name } => format!("CONNECT {name}"),
            })
            .collect()
    }

    fn last_line(&self) -> &ChatLine {
        self.model.conversation().lines().back().expect("a line")
    }

    fn texts(&self) -> Vec<String> {
        self.model.conversation().lines().iter().map(|l| l.text.clone()).collect()
    }
}

// Issue 13 (files fetched on join); PROTOCOL 1.1, 1.4
#[test]
fn starts_by_connecting_and_fetches_files_on_join() {
    let mut ui = Ui::new();
    assert_eq!(ui.model.connection(), &Connection::Connecting { attempt: 1 });
    ui.server(ClientEvent::Joined("alice".into()));
    assert_eq!(ui.model.connection(), &Connection::Joined);
    assert_eq!(ui.actions(), ["get_list_file"]);
    ui.server(ClientEvent::Files(vec!["a.txt".into()]));
    assert_eq!(ui.model.files(), ["a.txt"]);
    assert_eq!(ui.last_line().text, "you joined as alice", "a refresh is not printed");
    assert_eq!(ui.last_line().time.to_string(), "09:30", "timestamped");
}

// Issue 13 (timestamps); PROTOCOL 1.2
#[test]
fn text_is_said_to_everyone_and_timestamped() {
    let mut ui = Ui::joined();
    ui.wait(Duration::from_secs(65));
    assert_eq!(ui.actions(), ["get_list_file"], "the list's refresh came due meanwhile");
    ui.type_line("hello all");
    assert_eq!(ui.actions(), ["hello all"]);
    ui.server(ClientEvent::Public { from: "alice".into(), text: "hello all".into() });
    let line = ui.last_line();
    assert_eq!(line.kind, LineKind::Public { from: "alice".into(), own: true });
    assert_eq!(line.time.to_string(), "09:31");
    assert!(!line.mention);
}

// Issue 13 (the /help and /files bug); PROTOCOL 1.2, 1.4
#[test]
fn help_and_files_are_never_sent_as_messages() {
    // The bug the issue reports: `/help` and `/files` went to everyone.
    let mut ui = Ui::joined();
    ui.type_line("/help");
    assert_eq!(ui.actions(), Vec::<String>::new(), "help is local");
    assert!(ui.texts().iter().any(|t| t.contains("/get FILE")), "{:?}", ui.texts());
    ui.model.set_ui_help(&["F2 picks a file"]);
    ui.type_line("/help");
    assert_eq!(ui.last_line().text, "F2 picks a file", "the UI's own keys come last");
    ui.type_line("/help get");
    assert!(ui.last_line().text.starts_with("/get FILE: download"), "{}", ui.last_line().text);
    ui.type_line("/files");
    assert_eq!(ui.actions(), ["get_list_file"]);
    ui.server(ClientEvent::Files(vec!["hello.c".into(), "photo.png".into()]));
    assert!(ui.last_line().text.starts_with("2 files on offer: hello.c, photo.png"));
}

// Issue 13 (/msg, ~NAME); PROTOCOL 1.2, 1.3
#[test]
fn msg_and_tilde_send_privately() {
    let mut ui = Ui::joined();
    ui.type_line("/msg bob hi bob");
    ui.type_line("~carol psst");
    assert_eq!(ui.actions(), ["~bob hi bob", "~carol psst"]);
    ui.server(ClientEvent::PrivateSent { to: "bob".into(), text: "hi bob".into() });
    assert_eq!(ui.last_line().kind, LineKind::Private { with: "bob".into(), incoming: false });
    ui.type_line("/msg bob");
    assert_eq!(ui.actions(), Vec::<String>::new());
    assert_eq!(ui.last_line().kind, LineKind::Error);
}

// Issue 13 (/who); PROTOCOL 1.1
#[test]
fn who_lists_the_people_here() {
    let mut ui = Ui::joined();
    ui.type_line("/who");
    assert_eq!(ui.actions(), ["show"], "refreshed quietly");
    assert_eq!(ui.last_line().text, "3 here: alice (you), bob, carol");
    ui.server(ClientEvent::Left("carol".into()));
    ui.server(ClientEvent::Joined("dave".into()));
    assert_eq!(ui.model.people(), ["alice", "bob", "dave"]);
    assert_eq!(ui.last_line().kind, LineKind::Presence);
}

// Issue 13 (downloads: progress, rate, ETA, end state); PROTOCOL 2.1, 2.3
#[test]
fn get_follows_a_download_to_its_end() {
    let mut ui = Ui::joined();
    ui.type_line("/get hello.c");
    assert_eq!(ui.actions(), ["download_file hello.c"]);
    assert_eq!(ui.model.downloads()[0].state, DownloadState::Requested);
    ui.type_line("/get hello.c");
    assert_eq!(ui.actions(), Vec::<String>::new(), "already downloading");
    let progress = |bytes| SessionEvent::Progress {
        file: "hello.c".into(),
        progress: Progress { bytes_received: bytes, size: 10_000, ..Progress::default() },
    };
    ui.event(progress(1000));
    ui.wait(Duration::from_secs(1));
    ui.event(progress(3000));
    let d = &ui.model.downloads()[0];
    assert_eq!(
        (d.state.clone(), d.rate(), d.eta()),
        (DownloadState::Running, Some(2000.0), Some(Duration::from_millis(3500)))
    );
    let report = DownloadReport {
        path: "Downloads/hello.c".into(),
        size: 10_000,
        resumed: 0,
        elapsed: Duration::from_millis(1500),
        parts_retransmitted: 0,
    };
    ui.event(SessionEvent::DownloadDone { file: "hello.c".into(), result: Ok(report) });
    assert_eq!(
        ui.model.downloads()[0].state,
        DownloadState::Verified { path: "Downloads/hello.c".into() }
    );
    assert!(ui.last_line().text.starts_with("saved Downloads/hello.c (10.0 KB in 1.50 s)"));
    // A failure keeps its reason.
    ui.model.download(ui.clock(), "photo.png");
    ui.event(SessionEvent::DownloadDone {
        file: "photo.png".into(),
        result: Err("download failed: stalled".into()),
    });
    assert_eq!(
        ui.model.downloads()[1].state,
        DownloadState::Failed { reason: "download failed: stalled".into() }
    );
    ui.model.clear_finished_downloads();
    assert!(ui.model.downloads().is_empty());
}

// S1 (no such file, as the client sees it); PROTOCOL 1.4, 4.5
#[test]
fn a_missing_file_fails_its_download_and_refreshes_the_list() {
    let mut ui = Ui::joined();
    ui.type_line("/get gone.txt");
    assert_eq!(ui.actions(), ["download_file gone.txt"]);
    ui.server(ClientEvent::Error("no such file: gone.txt".into()));
    assert_eq!(
        ui.model.downloads()[0].state,
        DownloadState::Failed { reason: "no such file: gone.txt".into() }
    );
    assert_eq!(ui.actions(), ["get_list_file"]);
}

// Issue 13 (/quit); PROTOCOL 4.1
#[test]
fn quit_says_quit_and_closes_when_the_session_ends() {
    let mut ui = Ui::joined();
    ui.type_line("/quit");
    assert_eq!(ui.actions(), ["{quit}"]);
    assert_eq!(ui.model.connection(), &Connection::Quitting);
    ui.type_line("too late");
    assert_eq!(ui.actions(), Vec::<String>::new());
    ui.event(SessionEvent::Ended { error: None });
    assert!(ui.model.is_closed());
}

// Issue 13 (no protocol keyword needed); PROTOCOL 1.2
#[test]
fn protocol_keywords_typed_out_of_habit_run_their_command() {
    let mut ui = Ui::joined();
    ui.type_line("show");
    ui.type_line("get_list_file");
    ui.type_line("download_file hello.c");
    assert_eq!(ui.actions(), ["show", "get_list_file", "download_file hello.c"]);
    ui.type_line("{quit}");
    assert_eq!(ui.actions(), ["{quit}"]);
}

// Issue 13 (commands); PROTOCOL 1.2
#[test]
fn unknown_commands_are_explained_not_sent() {
    let mut ui = Ui::joined();
    ui.type_line("/frobnicate now");
    assert_eq!(ui.actions(), Vec::<String>::new());
    assert_eq!(ui.last_line().kind, LineKind::Error);
    assert!(ui.last_line().text.contains("/help"));
    ui.type_line("//slash at the start");
    assert_eq!(ui.actions(), ["/slash at the start"]);
}

// Issue 13 (commands)
#[test]
fn clear_empties_the_view() {
    let mut ui = Ui::joined();
    ui.type_line("/clear");
    assert!(ui.model.conversation().lines().is_empty());
}

// Issue 13 (mentions, bell); PROTOCOL 1.3
#[test]
fn mentions_and_private_messages_ring_the_bell() {
    let mut ui = Ui::joined();
    assert!(!ui.model.take_bell());
    ui.server(ClientEvent::Public { from: "bob".into(), text: "nothing for you".into() });
    assert!(!ui.model.take_bell());
    ui.server(ClientEvent::Public { from: "bob".into(), text: "Alice: look at this".into() });
    assert!(ui.last_line().mention);
    assert!(ui.model.take_bell());
    assert!(!ui.model.take_bell(), "rung once");
    ui.server(ClientEvent::Private { from: "bob".into(), text: "psst".into() });
    assert!(ui.last_line().mention);
    assert!(ui.model.take_bell());
    ui.server(ClientEvent::Public { from: "alice".into(), text: "I am alice".into() });
    assert!(!ui.last_line().mention, "our own lines never");
}

// Issue 13 (input history)
#[test]
fn history_recalls_sent_lines() {
    let mut ui = Ui::joined();
    ui.type_line("first");
    ui.type_line("/who");
    *ui.model.input_mut() = "draft".into();
    ui.model.history_older();
    assert_eq!(ui.model.input(), "/who");
    ui.model.history_older();
    assert_eq!(ui.model.input(), "first");
    ui.model.history_newer();
    ui.model.history_newer();
    assert_eq!(ui.model.input(), "draft");
}

// Issue 13 (completion); PROTOCOL 1.1, 1.4
#[test]
fn tab_completes_names_files_and_commands() {
    let mut ui = Ui::joined();
    *ui.model.input_mut() = "/ge".into();
    assert!(ui.model.complete_input());
    assert_eq!(ui.model.input(), "/get ");
    ui.model.input_mut().push_str("ph");
    ui.model.complete_input();
    assert_eq!(ui.model.input(), "/get photo.png");
    *ui.model.input_mut() = "ca".into();
    ui.model.complete_input();
    assert_eq!(ui.model.input(), "carol: ");
    *ui.model.input_mut() = "xyz".into();
    assert!(!ui.model.complete_input());
}

// C1 (a refused name, as the client sees it); PROTOCOL 1.1
#[test]
fn a_refused_name_is_typed_again() {
    let mut ui = Ui::new();
    ui.server(ClientEvent::NameRefused("name taken: alice".into()));
    assert!(matches!(ui.model.connection(), Connection::NameRefused { .. }));
    ui.type_line("alice2");
    assert_eq!(ui.actions(), ["alice2"], "the raw name, as PROTOCOL 1.1 wants");
    ui.server(ClientEvent::Joined("alice2".into()));
    assert_eq!(ui.model.name(), "alice2");
    assert_eq!(ui.model.connection(), &Connection::Joined);
}

// Issue 13; PROTOCOL 1.1, 4.6 (lines before the join are read as names)
#[test]
fn lines_typed_before_the_join_wait_for_it() {
    let mut ui = Ui::new();
    ui.type_line("early bird");
    assert_eq!(ui.actions(), Vec::<String>::new(), "not sent: the server would read a name");
    ui.server(ClientEvent::Joined("alice".into()));
    assert_eq!(ui.actions(), ["get_list_file", "early bird"]);
}

// Issue 13 (reconnect); PROTOCOL 4.3
#[test]
fn a_lost_server_is_tried_again_with_backoff() {
    let mut ui = Ui::joined();
    ui.type_line("/get hello.c");
    ui.actions();
    ui.event(SessionEvent::Disconnected("the server closed the connection".into()));
    ui.event(SessionEvent::Ended { error: None });
    let Connection::Lost { reason, attempt, .. } = ui.model.connection().clone() else {
        panic!("{:?}", ui.model.connection());
    };
    assert_eq!((reason.as_str(), attempt), ("the server closed the connection", 1));
    assert!(ui.model.people().is_empty());
    assert!(
        ui.last_line()
            .text
            .starts_with("lost the server: the server closed the connection; trying again in 1s"),
        "{}",
        ui.last_line().text
    );
    assert!(!ui.model.downloads()[0].is_active(), "the download ended with the session");
    ui.wait(Duration::from_millis(900));
    assert_eq!(ui.actions(), Vec::<String>::new(), "not before a second");
    ui.wait(Duration::from_millis(100));
    assert_eq!(ui.actions(), ["CONNECT alice"]);
    // The server is still down: the next wait doubles.
    ui.event(SessionEvent::Ended { error: Some("cannot reach the server: refused".into()) });
    assert!(
        ui.last_line().text.starts_with("still no server: cannot reach"),
        "{}",
        ui.last_line().text
    );
    ui.wait(Duration::from_millis(1999));
    assert_eq!(ui.actions(), Vec::<String>::new());
    ui.wait(Duration::from_millis(1));
    assert_eq!(ui.actions(), ["CONNECT alice"]);
    ui.event(SessionEvent::Ended { error: Some("cannot reach the server: refused".into()) });
    // /reconnect does not wait.
    ui.type_line("/reconnect");
    assert_eq!(ui.actions(), ["CONNECT alice"]);
    ui.server(ClientEvent::Joined("alice".into()));
    assert_eq!(ui.model.connection(), &Connection::Joined);
    assert_eq!(ui.actions(), ["get_list_file"]);
    // Back in: the next loss starts from a second again.
    ui.event(SessionEvent::Ended { error: None });
    let Connection::Lost { retry_at, .. } = ui.model.connection().clone() else { panic!() };
    assert_eq!(retry_at, ui.now + Duration::from_secs(1));
}

// Issue 13 (reconnect, /quit)
#[test]
fn quitting_while_disconnected_closes_at_once() {
    let mut ui = Ui::joined();
    ui.event(SessionEvent::Ended { error: None });
    ui.type_line("/quit");
    assert!(ui.model.is_closed());
    assert_eq!(ui.actions(), Vec::<String>::new());
}

// Issue 13 (/quit); PROTOCOL 1.1
#[test]
fn quitting_before_the_join_closes_at_once() {
    // A `{quit}` before the join would be read as a name (PROTOCOL 1.1).
    let mut ui = Ui::new();
    ui.type_line("/quit");
    assert!(ui.model.is_closed());
    assert_eq!(ui.actions(), Vec::<String>::new());
}

// Issue 13; PROTOCOL 1.1, 4.1
#[test]
fn someone_joining_while_we_leave_is_not_our_join() {
    let mut ui = Ui::joined();
    ui.type_line("/quit");
    ui.actions();
    ui.server(ClientEvent::Joined("dave".into()));
    assert_eq!((ui.model.name(), ui.model.connection()), ("alice", &Connection::Quitting));
}

// Issue 13 (reconnect); PROTOCOL 2.4
#[test]
fn a_download_asked_for_while_disconnected_waits_for_the_next_session() {
    let mut ui = Ui::joined();
    ui.event(SessionEvent::Ended { error: None });
    ui.type_line("/get hello.c");
    ui.event(SessionEvent::Ended { error: Some("refused".into()) });
    assert!(ui.model.downloads()[0].is_active(), "not asked for yet: not failed");
    ui.type_line("/reconnect");
    ui.server(ClientEvent::Joined("alice".into()));
    assert_eq!(ui.actions(), ["CONNECT alice", "get_list_file", "download_file hello.c"]);
}

// Issue 13 (files refetched after changes); PROTOCOL 1.4
#[test]
fn the_file_list_is_refreshed_now_and_then() {
    let mut ui = Ui::joined();
    ui.wait(FILES_REFRESH);
    assert_eq!(ui.actions(), ["get_list_file"]);
    ui.server(ClientEvent::Files(vec!["new.txt".into()]));
    assert_eq!(ui.model.files(), ["new.txt"]);
    assert_eq!(ui.last_line().text, "you joined as alice", "silently");
}

// Issue 13 (multi-line paste); PROTOCOL 1.2
#[test]
fn a_pasted_block_is_sent_line_by_line() {
    let mut ui = Ui::joined();
    ui.model.submit(ui.clock(), "one\ntwo\n\nthree");
    assert_eq!(ui.actions(), ["one", "two", "three"]);
}

// Issue 13 (the model is Send for egui)
#[test]
fn the_model_can_cross_threads() {
    fn is_send<T: Send + Sync>() {}
    is_send::<ClientModel>();
    is_send::<SessionEvent>();
}
