//! `natter tui`: the chat in a terminal window. Messages on the left, who is here and what can be
//! downloaded on the right, a gauge per download, and a line to type in.
//!
//! [`TuiState`] is plain data with pure transitions (server events in, key presses in, lines to
//! send out) and a `render` function, so both are tested without a terminal. [`TuiUi`] puts it
//! behind a mutex with the terminal: the runtime's thread calls it for server events and download
//! progress, the keyboard thread (the runtime's input iterator) for key presses, and whichever
//! changed the state draws the frame.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use natter_core::chat::client::ClientEvent;
use natter_core::transfer::receiver::Progress;
use natter_runtime_common::{ClientUi, DownloadError, DownloadReport};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, List, ListItem, Paragraph, Wrap};

/// Messages kept for scrolling back; older ones are dropped (bounded memory).
const HISTORY: usize = 2000;

/// Everything the window shows.
#[derive(Debug, Default)]
pub struct TuiState {
    messages: VecDeque<Line<'static>>,
    online: Vec<String>,
    files: Vec<String>,
    downloads: BTreeMap<String, (u64, u64)>,
    input: String,
    /// How many lines the message pane is scrolled up from the newest.
    scroll: usize,
    connected: bool,
}

/// What a key press asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyAction {
    Nothing,
    Send(String),
    Quit,
}

impl TuiState {
    pub fn new() -> Self {
        let mut state = Self { connected: true, ..Self::default() };
        state.say(Line::from(
            "Type and press Enter to talk. show, get_list_file, download_file <file>, ~name text. \
             Tab completes files and names; PgUp/PgDn scroll; Esc quits."
                .dark_gray(),
        ));
        state
    }

    fn say(&mut self, line: Line<'static>) {
        if self.messages.len() == HISTORY {
            self.messages.pop_front();
        }
        self.messages.push_back(line);
    }

    pub fn on_event(&mut self, event: &ClientEvent) {
        let line = match event {
            ClientEvent::Joined(name) => format!("{name} has joined the chat!").green().into(),
            ClientEvent::Left(name) => {
                self.online.retain(|n| n != name);
                format!("{name} left the chat...").dark_gray().into()
            }
            ClientEvent::Presence(names) => {
                self.online = names.clone();
                return;
            }
            ClientEvent::Public { from, text } => {
                Line::from(vec![Span::from(format!("{from}: ")).bold(), Span::from(text.clone())])
            }
            ClientEvent::Private { from, text } => Line::from(vec![
                Span::from(format!("{from} (private): ")).magenta().bold(),
                Span::from(text.clone()).magenta(),
            ]),
            ClientEvent::PrivateSent { to, text } => Line::from(vec![
                Span::from(format!("you to {to} (private): ")).magenta(),
                Span::from(text.clone()).magenta(),
            ]),
            ClientEvent::Files(files) => {
                self.files = files.clone();
                format!("{} files on offer (right); download_file <file> fetches one", files.len())
                    .dark_gray()
                    .into()
            }
            ClientEvent::Offer(offer) => {
                self.downloads.insert(offer.file.clone(), (0, offer.size));
                format!("downloading {} ({} bytes)", offer.file, offer.size).cyan().into()
            }
            ClientEvent::Error(reason) => format!("ERROR {reason}").red().into(),
            ClientEvent::NameRefused(reason) => {
                format!("ERROR {reason}: type another name").red().into()
            }
            ClientEvent::Rejected(why) | ClientEvent::OfferRefused(why) => {
                format!("(refused by this client: {why})").yellow().into()
            }
        };
        self.say(line);
    }

    pub fn on_progress(&mut self, file: &str, progress: &Progress) {
        self.downloads.insert(file.to_owned(), (progress.bytes_received, progress.size));
    }

    pub fn on_download_done(&mut self, file: &str, result: &Result<DownloadReport, DownloadError>) {
        self.downloads.remove(file);
        let line = match result {
            Ok(report) => report.to_string().green().into(),
            Err(err) => format!("download of {file} failed: {err}").red().into(),
        };
        self.say(line);
    }

    pub fn on_notice(&mut self, text: &str) {
        self.say(format!("({text})").yellow().into());
    }

    pub fn on_disconnected(&mut self, reason: &str) {
        self.connected = false;
        self.say(format!("disconnected: {reason}").red().into());
    }

    pub fn on_key(&mut self, key: KeyEvent) -> KeyAction {
        if key.kind == KeyEventKind::Release {
            return KeyAction::Nothing;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Esc => return KeyAction::Quit,
            KeyCode::Char('c' | 'd') if ctrl => return KeyAction::Quit,
            KeyCode::Char('u') if ctrl => self.input.clear(),
            KeyCode::Char(c) if !ctrl => self.input.push(c),
            KeyCode::Backspace => {
                self.input.pop();
            }
            KeyCode::Tab => self.complete(),
            KeyCode::PageUp => self.scroll = (self.scroll + 10).min(self.messages.len()),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::Enter if !self.input.trim().is_empty() => {
                self.scroll = 0;
                let line = std::mem::take(&mut self.input);
                // A completion leaves a space after the word; it is not part of the line.
                return KeyAction::Send(line.trim_end_matches(' ').to_owned());
            }
            _ => {}
        }
        KeyAction::Nothing
    }

    /// Completes the word being typed: a file name after `download_file `, a person's name
    /// after `~`. Only a unique match is completed.
    fn complete(&mut self) {
        let (prefix, candidates): (&str, &[String]) =
            if let Some(rest) = self.input.strip_prefix("download_file ") {
                (rest, &self.files)
            } else if let Some(rest) = self.input.strip_prefix('~') {
                (rest, &self.online)
            } else {
                return;
            };
        if prefix.contains(' ') {
            return;
        }
        let mut matches = candidates.iter().filter(|c| c.starts_with(prefix));
        if let (Some(only), None) = (matches.next(), matches.next()) {
            let completed = only[prefix.len()..].to_owned();
            self.input.push_str(&completed);
            self.input.push(' ');
        }
    }

    pub fn render(&self, frame: &mut Frame) {
        let [main, gauges, input] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(self.downloads.len() as u16),
            Constraint::Length(3),
        ])
        .areas(frame.area());
        let [messages, side] =
            Layout::horizontal([Constraint::Min(20), Constraint::Length(28)]).areas(main);
        self.render_messages(frame, messages);
        self.render_side(frame, side);
        self.render_downloads(frame, gauges);
        let title = if self.connected { " say " } else { " disconnected: Esc quits " };
        let prompt = Paragraph::new(format!("{}_", self.input))
            .block(Block::bordered().title(title).border_style(Style::new().cyan()));
        frame.render_widget(prompt, input);
    }

    fn render_messages(&self, frame: &mut Frame, area: Rect) {
        // The newest lines that fit, counting the rows each takes once wrapped, so the last
        // message is always on screen.
        let rows = area.height.saturating_sub(2) as usize;
        let width = area.width.saturating_sub(2).max(1) as usize;
        let end = self.messages.len().saturating_sub(self.scroll);
        let mut start = end;
        let mut used = 0;
        while start > 0 {
            let height = self.messages[start - 1].width().div_ceil(width).max(1);
            if used + height > rows {
                break;
            }
            used += height;
            start -= 1;
        }
        let lines: Vec<Line> = self.messages.range(start..end).cloned().collect();
        let title = if self.scroll > 0 { " natter (scrolled) " } else { " natter " };
        let text =
            Paragraph::new(lines).block(Block::bordered().title(title)).wrap(Wrap { trim: false });
        frame.render_widget(text, area);
    }

    fn render_side(&self, frame: &mut Frame, area: Rect) {
        let [people, files] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
        let online: Vec<ListItem> = self.online.iter().map(|n| ListItem::new(n.as_str())).collect();
        let title = format!(" here ({}) ", self.online.len());
        frame.render_widget(List::new(online).block(Block::bordered().title(title)), people);
        let files_list: Vec<ListItem> = self
            .files
            .iter()
            .map(|f| ListItem::new(f.as_str()).style(Style::new().cyan()))
            .collect();
        let title = " files (get_list_file) ";
        frame.render_widget(List::new(files_list).block(Block::bordered().title(title)), files);
    }

    fn render_downloads(&self, frame: &mut Frame, area: Rect) {
        let rows = Layout::vertical(vec![Constraint::Length(1); self.downloads.len()]).split(area);
        for (row, (file, &(received, size))) in rows.iter().zip(&self.downloads) {
            let ratio = if size == 0 { 1.0 } else { received as f64 / size as f64 };
            let gauge = Gauge::default()
                .gauge_style(Style::new().fg(Color::Green).add_modifier(Modifier::BOLD))
                .ratio(ratio.clamp(0.0, 1.0))
                .label(format!("{file}: {received} of {size} bytes"));
            frame.render_widget(gauge, *row);
        }
    }
}

/// The state and the terminal, shared by the runtime's thread and the keyboard thread.
struct Screen {
    state: TuiState,
    terminal: ratatui::DefaultTerminal,
}

impl Screen {
    fn draw(&mut self) {
        let Screen { state, terminal } = self;
        let _ = terminal.draw(|frame| state.render(frame));
    }
}

/// The [`ClientUi`] of `natter tui`; clones share one screen.
#[derive(Clone)]
pub struct TuiUi {
    screen: Arc<Mutex<Screen>>,
}

impl TuiUi {
    /// Takes over the terminal (raw mode, alternate screen) until [`TuiUi::restore`].
    pub fn start() -> Self {
        let terminal = ratatui::init();
        let mut screen = Screen { state: TuiState::new(), terminal };
        screen.draw();
        Self { screen: Arc::new(Mutex::new(screen)) }
    }

    fn with(&self, change: impl FnOnce(&mut TuiState)) {
        let mut screen = self.lock();
        change(&mut screen.state);
        screen.draw();
    }

    fn lock(&self) -> MutexGuard<'_, Screen> {
        // A panic while drawing leaves the state usable; keep going with it.
        self.screen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lines the person types, for the runtime's input thread: reads the keyboard, redraws
    /// the input line, and yields a line on Enter. Ends after `{quit}` (Esc or Ctrl-C).
    pub fn keyboard(&self) -> impl Iterator<Item = String> + Send + 'static {
        let ui = self.clone();
        let mut quit_sent = false;
        std::iter::from_fn(move || {
            if quit_sent {
                return None;
            }
            loop {
                let Ok(Event::Key(key)) = event::read() else {
                    ui.with(|_| {}); // a resize or a focus change: redraw
                    continue;
                };
                let mut action = KeyAction::Nothing;
                ui.with(|state| action = state.on_key(key));
                match action {
                    KeyAction::Nothing => {}
                    KeyAction::Send(line) => return Some(line),
                    KeyAction::Quit => {
                        quit_sent = true;
                        return Some("{quit}".to_owned());
                    }
                }
            }
        })
    }

    /// Gives the terminal back as it was.
    pub fn restore(&self) {
        ratatui::restore();
    }
}

impl ClientUi for TuiUi {
    fn event(&mut self, event: &ClientEvent) {
        self.with(|state| state.on_event(event));
    }

    fn progress(&mut self, file: &str, progress: &Progress) {
        self.with(|state| state.on_progress(file, progress));
    }

    fn download_done(&mut self, file: &str, result: &Result<DownloadReport, DownloadError>) {
        self.with(|state| state.on_download_done(file, result));
    }

    fn notice(&mut self, text: &str) {
        self.with(|state| state.on_notice(text));
    }

    fn disconnected(&mut self, reason: &str) {
        self.with(|state| state.on_disconnected(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(state: &mut TuiState, text: &str) {
        for c in text.chars() {
            assert_eq!(state.on_key(key(KeyCode::Char(c))), KeyAction::Nothing);
        }
    }

    fn screen(state: &TuiState) -> String {
        let mut terminal = Terminal::new(TestBackend::new(80, 16)).expect("test backend");
        terminal.draw(|frame| state.render(frame)).expect("draw");
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                let row: String = (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect();
                row.trim_end().to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn typing_sends_lines_and_escape_quits() {
        let mut state = TuiState::new();
        typed(&mut state, "hello");
        state.on_key(key(KeyCode::Backspace));
        assert_eq!(state.on_key(key(KeyCode::Enter)), KeyAction::Send("hell".into()));
        assert_eq!(state.on_key(key(KeyCode::Enter)), KeyAction::Nothing, "empty line");
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(state.on_key(ctrl_c), KeyAction::Quit);
        assert_eq!(state.on_key(key(KeyCode::Esc)), KeyAction::Quit);
    }

    #[test]
    fn tab_completes_a_unique_file_or_name() {
        let mut state = TuiState::new();
        state.on_event(&ClientEvent::Files(vec![
            "hello.c".into(),
            "help.txt".into(),
            "photo.png".into(),
        ]));
        state.on_event(&ClientEvent::Presence(vec!["bob".into(), "carol".into()]));
        typed(&mut state, "download_file ph");
        state.on_key(key(KeyCode::Tab));
        assert_eq!(state.input, "download_file photo.png ");
        state.input.clear();
        typed(&mut state, "download_file hel");
        state.on_key(key(KeyCode::Tab));
        assert_eq!(state.input, "download_file hel", "two matches: nothing completed");
        state.input.clear();
        typed(&mut state, "~ca");
        state.on_key(key(KeyCode::Tab));
        assert_eq!(state.input, "~carol ");
    }

    #[test]
    fn a_session_on_screen() {
        let mut state = TuiState::new();
        state.on_event(&ClientEvent::Joined("alice".into()));
        state.on_event(&ClientEvent::Presence(vec![]));
        state.on_event(&ClientEvent::Joined("bob".into()));
        state.on_event(&ClientEvent::Presence(vec!["bob".into()]));
        state.on_event(&ClientEvent::Public { from: "bob".into(), text: "hi all".into() });
        state.on_event(&ClientEvent::Private { from: "bob".into(), text: "psst".into() });
        state.on_event(&ClientEvent::Files(vec!["hello.c".into(), "photo.png".into()]));
        state.on_event(&ClientEvent::Error("no such user: carol".into()));
        let progress = Progress { bytes_received: 600, size: 1841, ..Progress::default() };
        state.on_progress("hello.c", &progress);
        typed(&mut state, "download_file pho");
        insta::assert_snapshot!(screen(&state));
    }

    #[test]
    fn the_newest_message_is_always_on_screen() {
        let mut state = TuiState::new();
        for i in 0..40 {
            let text = format!("message {i} {}", "long ".repeat(i % 3 * 8));
            state.on_event(&ClientEvent::Public { from: "x".into(), text });
        }
        let shown = screen(&state);
        assert!(shown.contains("message 39"), "{shown}");
    }

    #[test]
    fn history_is_bounded() {
        let mut state = TuiState::new();
        for i in 0..HISTORY + 50 {
            state.on_event(&ClientEvent::Public { from: "x".into(), text: i.to_string() });
        }
        assert_eq!(state.messages.len(), HISTORY);
    }
}
