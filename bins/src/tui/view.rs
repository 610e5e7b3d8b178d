//! What the terminal client keeps beside the client model: the cursor in the input line, how far
//! the conversation is scrolled back, which pane has the keyboard, a paste waiting for
//! confirmation. And what each key, paste and mouse wheel turn does to it and to the model.
//!
//! Keys, in the habit of irssi and weechat: Enter sends, Up/Down recall, Tab completes, PgUp/PgDn
//! (and the wheel) scroll, F2 picks a file to download, F3 a person to write to, Ctrl-C leaves
//! (twice: at once).

use natter_core::client_model::{ClientModel, Clock};
use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

/// Lines scrolled by PgUp/PgDn.
pub const PAGE: usize = 10;
/// Lines scrolled by a turn of the mouse wheel.
pub const WHEEL: usize = 3;

/// Which pane the keys go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    /// The input line (the usual).
    #[default]
    Input,
    /// The file list: Up/Down pick, Enter downloads.
    Files,
    /// The people list: Up/Down pick, Enter starts a private message.
    People,
}

/// The terminal client's own state.
#[derive(Debug, Default)]
pub struct View {
    /// The server's address, for the title.
    pub server: String,
    /// The cursor in the input line, in characters.
    pub cursor: usize,
    /// How many lines the conversation is scrolled back from the newest.
    pub scroll: usize,
    pub focus: Focus,
    pub selected_file: usize,
    pub selected_person: usize,
    /// A pasted block of several lines, sent only once the person confirms it.
    pub paste: Option<String>,
    /// Ctrl-C pressed once already: the next one leaves without waiting for the server.
    pub quitting: bool,
    /// Leave now.
    pub exit_now: bool,
}

impl View {
    pub fn new(server: String) -> Self {
        Self { server, ..Self::default() }
    }

    /// Something happened at the terminal.
    pub fn on_event(&mut self, model: &mut ClientModel, clock: Clock, event: Event) {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(model, clock, key),
            Event::Paste(text) => self.on_paste(model, text),
            Event::Mouse(mouse) => self.on_mouse(model, mouse),
            _ => {}
        }
    }

    fn on_paste(&mut self, model: &mut ClientModel, text: String) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let text = text.trim_end_matches('\n');
        if text.contains('\n') {
            // Several lines would be several messages: ask first.
            self.paste = Some(text.to_owned());
        } else {
            self.insert(model, text);
        }
    }

    fn on_mouse(&mut self, model: &ClientModel, mouse: MouseEvent) {
        match mouse.kind {
            MouseEventKind::ScrollUp => self.scroll_by(model, WHEEL as isize),
            MouseEventKind::ScrollDown => self.scroll_by(model, -(WHEEL as isize)),
            _ => {}
        }
    }

    fn on_key(&mut self, model: &mut ClientModel, clock: Clock, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c')
            || ctrl && key.code == KeyCode::Char('d') && model.input().is_empty()
        {
            if self.quitting {
                self.exit_now = true;
            } else {
                self.quitting = true;
                model.quit(clock);
            }
            return;
        }
        if let Some(paste) = self.paste.take() {
            match key.code {
                KeyCode::Enter | KeyCode::Char('y' | 'Y') => {
                    model.submit(clock, &paste);
                    self.scroll = 0;
                }
                KeyCode::Esc | KeyCode::Char('n' | 'N') => {}
                _ => self.paste = Some(paste),
            }
            return;
        }
        match key.code {
            KeyCode::PageUp => return self.scroll_by(model, PAGE as isize),
            KeyCode::PageDown => return self.scroll_by(model, -(PAGE as isize)),
            KeyCode::F(2) => return self.toggle(Focus::Files),
            KeyCode::F(3) => return self.toggle(Focus::People),
            KeyCode::Esc => {
                if self.focus != Focus::Input {
                    self.focus = Focus::Input;
                } else {
                    self.scroll = 0;
                }
                return;
            }
            _ => {}
        }
        match self.focus {
            Focus::Input => self.on_input_key(model, clock, key, ctrl),
            Focus::Files => self.on_files_key(model, clock, key),
            Focus::People => self.on_people_key(model, key),
        }
    }

    fn toggle(&mut self, pane: Focus) {
        self.focus = if self.focus == pane { Focus::Input } else { pane };
    }

    fn on_files_key(&mut self, model: &mut ClientModel, clock: Clock, key: KeyEvent) {
        let count = model.files().len();
        match key.code {
            KeyCode::Up => self.selected_file = self.selected_file.saturating_sub(1),
            KeyCode::Down => {
                self.selected_file = (self.selected_file + 1).min(count.saturating_sub(1))
            }
            KeyCode::Enter => {
                if let Some(file) = model.files().get(self.selected_file).cloned() {
                    model.download(clock, &file);
                    // Back to the conversation, where the download's progress and end show
                    // (on a narrow screen the file pane hides it).
                    self.scroll = 0;
                    self.focus = Focus::Input;
                }
            }
            KeyCode::Tab => self.focus = Focus::Input,
            KeyCode::Char(c) => {
                // Typing goes back to the input line.
                self.focus = Focus::Input;
                self.insert(model, &c.to_string());
            }
            _ => {}
        }
    }

    fn on_people_key(&mut self, model: &mut ClientModel, key: KeyEvent) {
        let people: Vec<String> = model.people().into_iter().map(str::to_owned).collect();
        match key.code {
            KeyCode::Up => self.selected_person = self.selected_person.saturating_sub(1),
            KeyCode::Down => {
                self.selected_person =
                    (self.selected_person + 1).min(people.len().saturating_sub(1));
            }
            KeyCode::Enter => {
                if let Some(name) = people.get(self.selected_person) {
                    *model.input_mut() = format!("/msg {name} ");
                    self.cursor_to_end(model);
                    self.focus = Focus::Input;
                }
            }
            KeyCode::Tab => self.focus = Focus::Input,
            KeyCode::Char(c) => {
                self.focus = Focus::Input;
                self.insert(model, &c.to_string());
            }
            _ => {}
        }
    }

    fn on_input_key(&mut self, model: &mut ClientModel, clock: Clock, key: KeyEvent, ctrl: bool) {
        let len = model.input().chars().count();
        self.cursor = self.cursor.min(len);
        match key.code {
            KeyCode::Enter => {
                model.submit_input(clock);
                self.cursor = 0;
                self.scroll = 0;
            }
            KeyCode::Up => {
                model.history_older();
                self.cursor_to_end(model);
            }
            KeyCode::Down => {
                model.history_newer();
                self.cursor_to_end(model);
            }
            KeyCode::Tab => {
                model.complete_input();
                self.cursor_to_end(model);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(len),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = len,
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = len,
            KeyCode::Char('u') if ctrl => {
                let rest: String = model.input().chars().skip(self.cursor).collect();
                *model.input_mut() = rest;
                self.cursor = 0;
            }
            KeyCode::Char('w') if ctrl => {
                let chars: Vec<char> = model.input().chars().collect();
                let mut start = self.cursor;
                while start > 0 && chars[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && chars[start - 1] != ' ' {
                    start -= 1;
                }
                let kept: String = chars[..start].iter().chain(&chars[self.cursor..]).collect();
                *model.input_mut() = kept;
                self.cursor = start;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                self.remove_at(model, self.cursor);
            }
            KeyCode::Delete if self.cursor < len => self.remove_at(model, self.cursor),
            KeyCode::Char(c) if !ctrl => self.insert(model, &c.to_string()),
            _ => {}
        }
    }

    /// Types `text` at the cursor.
    fn insert(&mut self, model: &mut ClientModel, text: &str) {
        let at = byte_index(model.input(), self.cursor);
        model.input_mut().insert_str(at, text);
        self.cursor += text.chars().count();
    }

    fn remove_at(&mut self, model: &mut ClientModel, char_index: usize) {
        let at = byte_index(model.input(), char_index);
        if at < model.input().len() {
            model.input_mut().remove(at);
        }
    }

    fn cursor_to_end(&mut self, model: &ClientModel) {
        self.cursor = model.input().chars().count();
    }

    /// Lines arrived (the newest is now `last_seq`, it was `before`): a view scrolled back stays on
    /// the lines it shows, as irssi's does, instead of drifting with each new line.
    pub fn keep_place(&mut self, before: u64, last_seq: u64) {
        if self.scroll > 0 {
            self.scroll += (last_seq - before.min(last_seq)) as usize;
        }
    }

    fn scroll_by(&mut self, model: &ClientModel, lines: isize) {
        let most = model.conversation().lines().len().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(lines).min(most);
    }
}

/// The byte offset of character `chars` of `s` (its length past the end).
fn byte_index(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i)
}
