//! `natter tui`: the chat in a terminal, in the habit of irssi and weechat. Timestamps, a colour
//! per name, highlights and a bell for mentions and private messages, slash commands with
//! completion and history, a file pane to download from, scrollback, and a lost server shown and
//! tried again.
//!
//! The decisions are the client model's ([`natter_core::client_model`], shared with
//! `natter gui`); this module only draws it ([`render`]), turns keys into its calls ([`view`]),
//! and runs its sessions ([`SessionRunner`]). One loop on the main thread owns the model: a
//! keyboard thread and the session's thread send it their events through one channel.

mod render;
mod terminal;
mod view;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use natter_core::client_model::{ClientModel, SessionEvent};
use natter_runtime_common::{ClientOptions, RunClient, SessionRunner};
use ratatui::crossterm::event::{self, Event};

use crate::local_time::clock;
use terminal::TerminalGuard;
use view::View;

/// The screen is drawn again at least this often (the status line's clock, a retry countdown),
/// and a stop signal is noticed within it.
const REDRAW_EVERY: Duration = Duration::from_secs(1);
/// At most this many queued events are handled before the next frame is drawn.
const EVENTS_PER_FRAME: usize = 1000;

/// What the loop waits for.
enum UiEvent {
    Terminal(Event),
    Session(SessionEvent),
    /// The keyboard could not be read any more.
    TerminalGone(String),
}

/// Runs `natter tui` until the person leaves. `Err` when the terminal could not be used.
pub fn run(run: RunClient, options: ClientOptions) -> std::io::Result<()> {
    let (tx, events) = mpsc::channel();
    let sessions = tx.clone();
    let mut runner = SessionRunner::new(run, options.clone(), move |event| {
        let _ = sessions.send(UiEvent::Session(event));
    });
    let mut model = ClientModel::new(&options.name, &options.addr.to_string(), clock());
    model.set_ui_help(&[
        "F2: pick a file with Up/Down, Enter downloads it.  F3: pick a person, Enter writes to them.",
        "PgUp/PgDn or the mouse wheel scroll back; Esc returns.  Ctrl-C leaves (twice: at once).",
    ]);
    let mut view = View::new(options.addr.to_string());
    // `kill` or a closed terminal window: leave through the loop, which gives the terminal back
    // (Ctrl-C does not raise SIGINT in raw mode; it arrives as a key).
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        if let Err(err) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            tracing::warn!("cannot catch signal {signal}: {err}");
        }
    }
    let mut guard = TerminalGuard::enter()?;
    std::thread::Builder::new().name("natter-keyboard".into()).spawn(move || {
        loop {
            let event = match event::read() {
                Ok(event) => UiEvent::Terminal(event),
                Err(err) => UiEvent::TerminalGone(err.to_string()),
            };
            let gone = matches!(event, UiEvent::TerminalGone(_));
            if tx.send(event).is_err() || gone {
                return;
            }
        }
    })?;
    runner.perform(&mut model, clock());
    let mut result = Ok(());
    loop {
        guard.screen.draw(|frame| render::render(frame, &model, &view, clock()))?;
        if model.is_closed() || view.exit_now || stop.load(Ordering::Relaxed) {
            break;
        }
        let now = clock().now;
        let wake = model.poll_timeout().map_or(now + REDRAW_EVERY, |at| at.min(now + REDRAW_EVERY));
        let mut next = events.recv_timeout(wake.saturating_duration_since(now)).ok();
        let mut handled = 0;
        let before = model.conversation().last_seq();
        while let Some(event) = next.take() {
            match event {
                UiEvent::Terminal(event) => view.on_event(&mut model, clock(), event),
                UiEvent::Session(event) => model.handle_event(clock(), event),
                UiEvent::TerminalGone(err) => {
                    result = Err(std::io::Error::other(format!("the terminal went away: {err}")));
                    view.exit_now = true;
                }
            }
            runner.perform(&mut model, clock());
            handled += 1;
            if handled < EVENTS_PER_FRAME {
                next = events.try_recv().ok();
            }
        }
        model.handle_timeout(clock());
        runner.perform(&mut model, clock());
        view.keep_place(before, model.conversation().last_seq());
        if model.take_bell() {
            terminal::bell();
        }
    }
    drop(guard);
    result
}
