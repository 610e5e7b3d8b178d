//! `natter gui`: the chat in a desktop window (egui on wgpu). A connect form that remembers the
//! last address and name, the conversation with a style per kind of line, private conversations
//! in tabs with unread counts, the people (a click writes to one) and the files (a Download
//! button each), the downloads with progress, rate, ETA and a "show in folder" action, and the
//! connection's state (connecting, name refused, lost and tried again) always in sight.
//!
//! The decisions are the client model's ([`natter_core::client_model`], shared with
//! `natter tui`): this crate draws it ([`render`]) and turns clicks and keys into its calls
//! ([`app`]). Sessions run on their own threads ([`natter_runtime_common::SessionRunner`]) and
//! wake the window when they report; the model lives on the window's thread.

pub mod app;
mod render;
pub mod settings;

pub use app::{AppEvent, ClockFn, Connector, GuiApp, GuiOptions, Performer, Report};

/// The window's size when it opens, in points.
pub const WINDOW_SIZE: [f32; 2] = [960.0, 640.0];

/// Opens the window and runs `app` until it closes. `Err` when no window could be made (no
/// display, no graphics adapter), with the reason.
pub fn run(app: GuiApp) -> Result<(), String> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("natter")
            .with_app_id("natter")
            .with_inner_size(WINDOW_SIZE)
            .with_min_inner_size([360.0, 240.0]),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native("natter", options, Box::new(|_cc| Ok(Box::new(app))))
        .map_err(|err| format!("cannot open the window: {err}"))
}
