//! Drawing: the connect form, and the chat (status and banner, tabs, the conversation, people
//! and files, downloads, the input line). Every text that came from the network is shown through
//! a plain [`LayoutJob`] after [`escape_for_display`]: never markdown, links or markup.

use eframe::egui::{
    self, Align, Color32, FontId, Key, Layout, Modifiers, RichText, TextFormat, accesskit::Role,
    text::LayoutJob,
};
use natter_core::chat::display::escape_for_display;
use natter_core::client_model::{
    Channel, ChatLine, Connection, Download, DownloadState, LineKind, human_bytes, human_duration,
};

use crate::app::GuiApp;

const TIME: Color32 = Color32::from_rgb(0x80, 0x80, 0x88);
const PRESENCE: Color32 = Color32::from_rgb(0x8c, 0x9a, 0xa8);
const SYSTEM: Color32 = Color32::from_rgb(0x6f, 0xa8, 0xdc);
const ERROR: Color32 = Color32::from_rgb(0xf0, 0x5a, 0x5a);
const PRIVATE: Color32 = Color32::from_rgb(0xd0, 0x7c, 0xe8);
const MENTION_BG: Color32 = Color32::from_rgb(0x5a, 0x4a, 0x10);
const GOOD: Color32 = Color32::from_rgb(0x6c, 0xc6, 0x6c);
const WAIT: Color32 = Color32::from_rgb(0xe6, 0xb4, 0x3c);
/// The people and files panel's width, in points.
const SIDE_WIDTH: f32 = 210.0;
/// Names get one of these, always the same for a name.
const NAME_COLOURS: [Color32; 6] = [
    Color32::from_rgb(0x4e, 0xc9, 0xb0),
    Color32::from_rgb(0xe0, 0x9b, 0x5a),
    Color32::from_rgb(0x7a, 0xa2, 0xf7),
    Color32::from_rgb(0xc3, 0xd8, 0x5a),
    Color32::from_rgb(0xf0, 0x8a, 0xb4),
    Color32::from_rgb(0x5a, 0xc8, 0xe6),
];

/// A one-line field of the connect form, `width` wide, under its label, which names it for
/// screen readers and for the tests.
fn form_field(
    ui: &mut egui::Ui,
    label: &str,
    text: &mut String,
    (id, hint): (egui::Id, &str),
    width: f32,
) -> egui::Response {
    let label = ui.label(label);
    let field = egui::TextEdit::singleline(text).id(id).hint_text(hint).desired_width(width);
    ui.add(field).labelled_by(label.id)
}

fn form_addr_id() -> egui::Id {
    egui::Id::unique("natter-form-addr")
}

fn form_name_id() -> egui::Id {
    egui::Id::unique("natter-form-name")
}

/// The input line's id (its focus is kept and traced).
pub fn input_id() -> egui::Id {
    egui::Id::unique("natter-input")
}

fn name_colour(name: &str) -> Color32 {
    let hash = name.to_lowercase().bytes().fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    NAME_COLOURS[hash as usize % NAME_COLOURS.len()]
}

/// The connect form, centred.
pub fn form(app: &mut GuiApp, ui: &mut egui::Ui) {
    let mut connect = false;
    egui::CentralPanel::default().show(ui, |ui| {
        ui.vertical_centered(|ui| {
            ui.add_space(ui.available_height() * 0.2);
            ui.heading("natter");
            ui.label("Join a chat: the server's address and the name others will see.");
            ui.add_space(12.0);
        });
        let width = 320.0_f32.min(ui.available_width());
        let margin = ((ui.available_width() - width) / 2.0).max(0.0);
        ui.horizontal(|ui| {
            ui.add_space(margin);
            ui.vertical(|ui| {
                ui.set_width(width);
                // Enter in either field connects (taken before the fields see it).
                let (addr_id, name_id) = (form_addr_id(), form_name_id());
                let in_form = ui.ctx().memory(|m| m.has_focus(addr_id) || m.has_focus(name_id));
                let enter = in_form && ui.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Enter));
                let addr_hint = (addr_id, "host:port, or natters://host:port for TLS");
                let addr = form_field(ui, "Server address", &mut app.form.addr, addr_hint, width);
                ui.add_space(6.0);
                let name_hint = (name_id, "letters and digits");
                let name = form_field(ui, "Your name", &mut app.form.name, name_hint, width);
                let nothing_focused = ui.ctx().memory(|m| m.focused().is_none());
                if nothing_focused {
                    let empty = app.form.name.is_empty();
                    if empty { name.request_focus() } else { addr.request_focus() }
                }
                ui.add_space(10.0);
                let button = ui.add_sized([width, 28.0], egui::Button::new("Connect"));
                connect = enter || button.clicked();
                if let Some(err) = &app.form.error {
                    ui.colored_label(ERROR, format!("Could not connect: {err}"));
                }
                if let Some(note) = &app.form.settings_note {
                    ui.colored_label(WAIT, note);
                }
                ui.add_space(6.0);
                ui.weak("Enter connects. Ctrl+Q quits.");
            });
        });
    });
    if connect {
        let ctx = ui.ctx().clone();
        app.connect(&ctx);
    }
}

/// What a click asked for, done by the app ([`GuiApp::on_clicks`]) once the chat is drawn (the
/// model is borrowed while drawing).
pub(crate) enum Click {
    Download(String),
    WriteTo(String),
    ShowFolder(String),
    Select(Channel),
    Close(Channel),
    Reconnect,
    BackToForm,
    ClearFinished,
    Send,
}

/// The chat window.
pub fn chat(app: &mut GuiApp, ui: &mut egui::Ui) {
    let mut clicks = Vec::new();
    let clock = (app.clock)();
    let downloads_dir = app.downloads.display().to_string();
    let Some(chat) = &mut app.chat else { return };

    egui::Panel::top("natter-status").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.strong(format!("{} at {}", chat.model.name(), chat.server));
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                let (text, colour) = status(chat.model.connection(), clock.now);
                ui.colored_label(colour, text);
            });
        });
        let connection = chat.model.connection();
        if let Some((text, colour, retry)) = banner(connection, chat.model.name(), chat.joined_once)
        {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(colour, RichText::new(text).strong());
                if retry && ui.button("Reconnect now").clicked() {
                    clicks.push(Click::Reconnect);
                }
                // A wrong address or a name to change: back to the form.
                let stuck =
                    matches!(connection, Connection::Lost { .. } | Connection::NameRefused { .. });
                if stuck && ui.button("Change server").clicked() {
                    clicks.push(Click::BackToForm);
                }
            });
        }
    });

    egui::Panel::bottom("natter-input-panel").show(ui, |ui| {
        ui.add_space(4.0);
        let active: Vec<&Download> = chat.model.downloads().iter().collect();
        if !active.is_empty() {
            ui.horizontal(|ui| {
                ui.strong(format!("Downloads ({}), saved in {downloads_dir}", active.len()));
                if active.iter().any(|d| !d.is_active())
                    && ui.small_button("Clear finished").clicked()
                {
                    clicks.push(Click::ClearFinished);
                }
            });
            egui::ScrollArea::vertical().id_salt("natter-downloads").max_height(110.0).show(
                ui,
                |ui| {
                    for d in active {
                        download_row(ui, d, &mut clicks);
                    }
                },
            );
            ui.separator();
        }
        ui.horizontal(|ui| {
            input_line(ui, chat, clock, &mut clicks);
        });
        ui.add_space(4.0);
    });

    egui::Panel::left("natter-side").resizable(false).exact_size(SIDE_WIDTH).show(ui, |ui| {
        egui::ScrollArea::vertical().id_salt("natter-side-scroll").show(ui, |ui| {
            let people = chat.model.people();
            ui.strong(format!("People ({})", people.len()));
            if people.is_empty() {
                ui.weak("nobody yet");
            }
            for name in people {
                let me = chat.model.is_me(name);
                let text = if me { format!("{name} (you)") } else { name.to_owned() };
                let label = RichText::new(escape_for_display(&text)).color(name_colour(name));
                if me {
                    ui.label(label);
                } else {
                    let button = ui
                        .add(egui::Button::new(label).frame(false))
                        .on_hover_text(format!("write to {name} privately"));
                    if button.clicked() {
                        clicks.push(Click::WriteTo(name.to_owned()));
                    }
                }
            }
            ui.add_space(10.0);
            let files = chat.model.files();
            ui.strong(format!("Files ({})", files.len()));
            if files.is_empty() {
                ui.weak("none on offer");
            }
            for file in files {
                // The name, cut with … when long, then its button.
                ui.horizontal(|ui| {
                    let room = egui::vec2((ui.available_width() - 84.0).max(20.0), 18.0);
                    ui.allocate_ui_with_layout(room, Layout::left_to_right(Align::Center), |ui| {
                        ui.set_min_width(room.x);
                        let name = escape_for_display(file).into_owned();
                        ui.add(egui::Label::new(name).truncate());
                    });
                    let button = ui.small_button("Download");
                    let accessible = format!("Download {file}");
                    button.widget_info(|| {
                        egui::WidgetInfo::labeled(Role::Button, true, accessible.clone())
                    });
                    if button.clicked() {
                        clicks.push(Click::Download(file.clone()));
                    }
                });
            }
        });
    });

    egui::CentralPanel::default().show(ui, |ui| {
        tabs(ui, chat, &mut clicks);
        ui.separator();
        conversation(ui, chat);
    });

    app.on_clicks(clicks);
}

/// The status on the right of the top bar.
fn status(connection: &Connection, now: std::time::Instant) -> (String, Color32) {
    match connection {
        Connection::Joined => ("connected".into(), GOOD),
        Connection::Connecting { attempt: 1 } => ("connecting…".into(), WAIT),
        Connection::Connecting { attempt } => (format!("reconnecting (try {attempt})…"), WAIT),
        Connection::NameRefused { .. } => ("name refused".into(), ERROR),
        Connection::Lost { retry_at, .. } => {
            let wait = human_duration(retry_at.saturating_duration_since(now));
            (format!("disconnected, next try in {wait}"), ERROR)
        }
        Connection::Quitting => ("leaving…".into(), WAIT),
        Connection::Closed => ("closed".into(), ERROR),
    }
}

/// The banner under the top bar for the states that need the person: the text, its colour, and
/// whether a Reconnect button goes with it.
fn banner(
    connection: &Connection,
    name: &str,
    joined_once: bool,
) -> Option<(String, Color32, bool)> {
    match connection {
        Connection::NameRefused { reason } => Some((
            format!(
                "The name {name} was refused: {}. Type another name below and press Enter.",
                escape_for_display(reason)
            ),
            ERROR,
            false,
        )),
        Connection::Lost { reason, .. } => {
            let what = if joined_once { "Lost the connection" } else { "Cannot reach the server" };
            Some((
                format!("{what}: {}. Trying again by itself.", escape_for_display(reason)),
                ERROR,
                true,
            ))
        }
        Connection::Connecting { attempt } if *attempt > 1 => {
            Some((format!("Reconnecting as {name}…"), WAIT, false))
        }
        Connection::Connecting { .. } => Some((format!("Connecting as {name}…"), WAIT, false)),
        _ => None,
    }
}

fn tabs(ui: &mut egui::Ui, chat: &crate::app::Chat, clicks: &mut Vec<Click>) {
    ui.horizontal_wrapped(|ui| {
        for channel in chat.channels.list() {
            let unread = chat.channels.unread(channel, chat.model.conversation());
            let mention = chat.channels.unread_mention(channel, chat.model.conversation());
            let name = match channel {
                Channel::Room => "Room".to_owned(),
                Channel::Private(with) => format!("@{}", escape_for_display(with)),
            };
            let text = match unread {
                0 => name,
                n => format!("{name} ({n})"),
            };
            let mut text = RichText::new(text);
            if mention {
                text = text.color(PRIVATE).strong();
            } else if unread > 0 {
                text = text.strong();
            }
            let selected = chat.channels.current().is(channel);
            if ui.selectable_label(selected, text).clicked() {
                clicks.push(Click::Select(channel.clone()));
            }
            if let Channel::Private(with) = channel {
                let close = ui.small_button("×").on_hover_text("close this conversation");
                let accessible = format!("Close {with}");
                close.widget_info(|| egui::WidgetInfo::labeled(Role::Button, true, &accessible));
                if close.clicked() {
                    clicks.push(Click::Close(channel.clone()));
                }
            }
            ui.add_space(6.0);
        }
    });
}

fn conversation(ui: &mut egui::Ui, chat: &crate::app::Chat) {
    let current = chat.channels.current();
    let marker = chat.channels.marker();
    let me = chat.model.name();
    let wrap = ui.available_width();
    egui::ScrollArea::vertical()
        .id_salt("natter-conversation")
        .auto_shrink([false, false])
        .stick_to_bottom(true)
        .show(ui, |ui| {
            let mut marked = false;
            for line in chat.model.conversation().lines().iter().filter(|l| current.shows(l)) {
                if !marked && marker.is_some_and(|m| line.seq > m) {
                    marked = true;
                    ui.horizontal(|ui| {
                        ui.colored_label(ERROR, "—— new since you last looked ——");
                    });
                }
                ui.add(egui::Label::new(line_job(line, me, wrap)).wrap());
            }
            if matches!(current, Channel::Private(_)) {
                ui.add_space(4.0);
                ui.weak("Lines typed here go to this person only. The Room tab shows everything.");
            }
        });
}

/// One conversation line as styled text: time, who, what. The text is never parsed.
pub fn line_job(line: &ChatLine, me: &str, wrap: f32) -> LayoutJob {
    let body = FontId::proportional(14.0);
    let mono = FontId::monospace(12.0);
    let mut job = LayoutJob::default();
    job.wrap.max_width = wrap;
    let fmt = |colour: Color32, font: &FontId| TextFormat::simple(font.clone(), colour);
    job.append(&format!("{} ", line.time), 0.0, fmt(TIME, &mono));
    let text = escape_for_display(&line.text);
    let plain = Color32::from_gray(0xdc);
    let mut text_format = fmt(plain, &body);
    if line.mention {
        text_format.background = MENTION_BG;
    }
    match &line.kind {
        LineKind::Public { from, own } => {
            let colour = if *own { Color32::from_gray(0xb4) } else { name_colour(from) };
            let mut who = fmt(colour, &body);
            who.underline = egui::Stroke::NONE;
            job.append(&format!("<{}> ", escape_for_display(from)), 0.0, who);
            if *own {
                text_format.color = Color32::from_gray(0xb4);
            }
            job.append(&text, 0.0, text_format);
        }
        LineKind::Private { with, incoming } => {
            let who = match incoming {
                true => format!("*{}* ", escape_for_display(with)),
                false => format!("-> *{}* ", escape_for_display(with)),
            };
            job.append(&who, 0.0, fmt(PRIVATE, &body));
            text_format.color = PRIVATE;
            text_format.italics = true;
            job.append(&text, 0.0, text_format);
        }
        LineKind::Presence => {
            let mut f = fmt(PRESENCE, &body);
            f.italics = true;
            job.append(&format!("— {text}"), 0.0, f);
        }
        LineKind::System => job.append(&format!("· {text}"), 0.0, fmt(SYSTEM, &body)),
        LineKind::Error => job.append(&format!("! {text}"), 0.0, fmt(ERROR, &body)),
    }
    let _ = me;
    job
}

fn download_row(ui: &mut egui::Ui, d: &Download, clicks: &mut Vec<Click>) {
    ui.horizontal(|ui| {
        let file = escape_for_display(&d.file).into_owned();
        let cell = egui::vec2(160.0, 18.0);
        ui.allocate_ui_with_layout(cell, Layout::left_to_right(Align::Center), |ui| {
            ui.set_min_width(cell.x);
            ui.add(egui::Label::new(file).truncate());
        });
        match &d.state {
            DownloadState::Requested => {
                ui.add(
                    egui::ProgressBar::new(0.0)
                        .desired_width(260.0)
                        .text(bar_text("asked for, waiting for the server")),
                );
            }
            DownloadState::Running => {
                let mut text = format!("{:.0}%", d.fraction() * 100.0);
                if let Some(size) = d.size {
                    text.push_str(&format!(
                        " · {} of {}",
                        human_bytes(d.received as f64),
                        human_bytes(size as f64)
                    ));
                }
                if let Some(rate) = d.rate() {
                    text.push_str(&format!(" · {}/s", human_bytes(rate)));
                }
                if let Some(eta) = d.eta() {
                    text.push_str(&format!(" · {} left", human_duration(eta)));
                }
                let bar = egui::ProgressBar::new(d.fraction() as f32).desired_width(300.0);
                ui.add(bar.text(bar_text(&text)));
            }
            DownloadState::Verified { .. } => {
                let took = d.elapsed().map(|e| format!(" in {:.2} s", e.as_secs_f64()));
                let size = d.size.map(|s| human_bytes(s as f64)).unwrap_or_default();
                ui.colored_label(
                    GOOD,
                    format!("saved, checked byte for byte ({size}{})", took.unwrap_or_default()),
                );
                if let Some(folder) = d.folder()
                    && ui.small_button("Show in folder").clicked()
                {
                    clicks.push(Click::ShowFolder(folder));
                }
            }
            DownloadState::Failed { reason } => {
                ui.colored_label(ERROR, format!("failed: {}", escape_for_display(reason)));
            }
        }
    });
}

/// If the frame's input has an Enter: the text typed before it, taken out of the input with the
/// Enter, so the field sees only what came after.
fn take_until_enter(input: &mut egui::InputState) -> Option<String> {
    let is_enter = |e: &egui::Event| {
        matches!(e, egui::Event::Key { key: Key::Enter, pressed: true, modifiers, .. }
            if modifiers.is_none())
    };
    let at = input.events.iter().position(is_enter)?;
    let mut typed = String::new();
    let mut kept = Vec::with_capacity(input.events.len());
    for (i, event) in input.events.drain(..).enumerate() {
        match event {
            egui::Event::Text(text) if i < at => typed.push_str(&text),
            _ if i == at => {}
            // The Enter's release, and anything else, stay.
            other => kept.push(other),
        }
    }
    input.events = kept;
    Some(typed)
}

/// A progress bar's words, light on both its filled and its empty part.
fn bar_text(text: &str) -> RichText {
    RichText::new(text).color(Color32::from_gray(0xf0))
}

fn input_line(
    ui: &mut egui::Ui,
    chat: &mut crate::app::Chat,
    clock: natter_core::client_model::Clock,
    clicks: &mut Vec<Click>,
) {
    let id = input_id();
    // Focus is asked for before the field is drawn, so that the field sets this very frame which
    // keys it keeps (Up, Down, Tab): asked for after, egui's default would let the next arrow key
    // move the focus away.
    let nothing_focused = ui.ctx().memory(|m| m.focused().is_none());
    if chat.focus_input || nothing_focused {
        chat.focus_input = false;
        ui.memory_mut(|m| m.request_focus(id));
    }
    let has_focus = ui.ctx().memory(|m| m.has_focus(id));
    if has_focus {
        // Enter sends what was typed before it, at once; what was typed after it in the same
        // frame (fast typing, a slow frame) stays for the field, so it begins the next line.
        if let Some(typed) = ui.input_mut(take_until_enter) {
            chat.model.input_mut().push_str(&typed);
            let channel = chat.channels.current().clone();
            chat.model.submit_input_in(clock, &channel);
            chat.runner.perform(&mut chat.model, clock);
            chat.cursor_to_end = true;
        }
        let (up, down, tab) = ui.input_mut(|i| {
            (
                i.consume_key(Modifiers::NONE, Key::ArrowUp),
                i.consume_key(Modifiers::NONE, Key::ArrowDown),
                i.consume_key(Modifiers::NONE, Key::Tab),
            )
        });
        if up {
            chat.model.history_older();
            chat.cursor_to_end = true;
        }
        if down {
            chat.model.history_newer();
            chat.cursor_to_end = true;
        }
        if tab {
            chat.model.complete_input();
            chat.cursor_to_end = true;
        }
    }
    let hint = match (chat.model.connection(), chat.channels.current()) {
        (Connection::NameRefused { .. }, _) => "another name, then Enter".to_owned(),
        (_, Channel::Private(with)) => format!("a private message to {with}"),
        _ => "a message for everyone, or /help".to_owned(),
    };
    let send_width = 60.0;
    let edit = egui::TextEdit::singleline(chat.model.input_mut())
        .id(id)
        .hint_text(hint)
        .desired_width(ui.available_width() - send_width - 8.0)
        // Up, Down and Tab stay in the input (history, completion), not move the focus.
        .event_filter(egui::EventFilter {
            tab: true,
            horizontal_arrows: true,
            vertical_arrows: true,
            escape: false,
        });
    ui.add(edit);
    if chat.cursor_to_end {
        chat.cursor_to_end = false;
        if let Some(mut state) = egui::TextEdit::load_state(ui.ctx(), id) {
            let end = egui::text::CCursor::new(chat.model.input().chars().count());
            state.cursor.set_char_range(Some(egui::text::CCursorRange::one(end)));
            state.store(ui.ctx(), id);
        }
    }
    if ui.add_sized([send_width, 20.0], egui::Button::new("Send")).clicked() {
        clicks.push(Click::Send);
    }
}
