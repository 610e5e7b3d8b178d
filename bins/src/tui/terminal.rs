//! Taking the terminal over and giving it back: raw mode, the alternate screen, mouse reports
//! (for the wheel) and bracketed paste (so a pasted block arrives whole and can be confirmed).
//! The terminal is given back on every way out: a normal exit, an error (the guard's `Drop`) and
//! a panic (a hook that restores before the panic message is printed, so it is readable).

use std::io::{self, Write};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// The terminal `natter tui` draws on.
pub type Screen = Terminal<CrosstermBackend<io::Stdout>>;

/// Holds the terminal; dropping it gives the terminal back.
pub struct TerminalGuard {
    pub screen: Screen,
}

impl TerminalGuard {
    /// Takes the terminal over, and installs the panic hook that gives it back.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        let mut stdout = io::stdout();
        if let Err(err) =
            execute!(stdout, EnterAlternateScreen, EnableMouseCapture, EnableBracketedPaste)
        {
            restore();
            return Err(err);
        }
        let screen = Terminal::new(CrosstermBackend::new(stdout))?;
        Ok(Self { screen })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.screen.show_cursor();
        restore();
    }
}

/// Gives the terminal back as it was; harmless when it was not taken.
pub fn restore() {
    let _ =
        execute!(io::stdout(), DisableBracketedPaste, DisableMouseCapture, LeaveAlternateScreen);
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), ratatui::crossterm::cursor::Show);
}

/// Rings the terminal's bell (a mention, a private message).
pub fn bell() {
    let mut stdout = io::stdout();
    let _ = stdout.write_all(b"\x07");
    let _ = stdout.flush();
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}
