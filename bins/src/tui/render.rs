//! Drawing the client model and the view on a terminal frame: the conversation with timestamps
//! and a colour per name, the people and the files beside it (or one at a time, on F2/F3, when
//! the window is narrow), a gauge per download, the input line and a status line.
//!
//! All text from the network reaches the screen as text: ratatui prints it cell by cell, and the
//! core has already escaped every character that could move the cursor (S4).

use natter_core::client_model::{
    ChatLine, ClientModel, Clock, Connection, DownloadState, LineKind, human_bytes, human_duration,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, List, ListItem, ListState, Paragraph};

use super::view::{Focus, View};

/// Below this width the people and files are shown one pane at a time (F2, F3).
pub const NARROW: u16 = 64;
/// The width of the side panes when there is room for them.
const SIDE_WIDTH: u16 = 26;
/// At most this many download gauges.
const MAX_GAUGES: usize = 3;

/// A name's colour: the same name always gets the same one (irssi's and weechat's nick colours).
/// Red is kept for errors and magenta for private messages.
pub fn name_color(name: &str) -> Color {
    const PALETTE: [Color; 8] = [
        Color::Cyan,
        Color::Green,
        Color::Yellow,
        Color::Blue,
        Color::LightCyan,
        Color::LightGreen,
        Color::LightBlue,
        Color::LightYellow,
    ];
    // FNV-1a over the name as the server folds it (case does not change the colour).
    let hash = name
        .to_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// Draws everything.
pub fn render(frame: &mut Frame, model: &ClientModel, view: &View, clock: Clock) {
    let area = frame.area();
    let active: Vec<_> = model.downloads().iter().filter(|d| d.is_active()).collect();
    let gauges = active.len().min(MAX_GAUGES) as u16;
    let [main, downloads, input, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(gauges),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(area);
    if area.width < NARROW {
        match view.focus {
            Focus::Files => render_files(frame, model, view, main),
            Focus::People => render_people(frame, model, view, main),
            Focus::Input => render_conversation(frame, model, view, main),
        }
    } else {
        let [chat, side] =
            Layout::horizontal([Constraint::Min(20), Constraint::Length(SIDE_WIDTH)]).areas(main);
        render_conversation(frame, model, view, chat);
        let [people, files] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(side);
        render_people(frame, model, view, people);
        render_files(frame, model, view, files);
    }
    let rows = Layout::vertical(vec![Constraint::Length(1); gauges as usize]).split(downloads);
    for (row, download) in rows.iter().zip(active) {
        let label = match download.state {
            DownloadState::Requested => format!("{}: asked for", download.file),
            _ => {
                let mut label = format!("{} {:.0}%", download.file, download.fraction() * 100.0);
                if let Some(rate) = download.rate() {
                    label += &format!(" {}/s", human_bytes(rate));
                }
                if let Some(eta) = download.eta() {
                    label += &format!(" ETA {}", human_duration(eta));
                }
                label
            }
        };
        let gauge = Gauge::default()
            .gauge_style(Style::new().fg(Color::Green).bg(Color::Black))
            .ratio(download.fraction())
            .label(label);
        frame.render_widget(gauge, *row);
    }
    render_input(frame, model, view, input);
    render_status(frame, model, view, clock, status);
}

fn render_conversation(frame: &mut Frame, model: &ClientModel, view: &View, area: Rect) {
    let lines = model.conversation().lines();
    // Wrapped here rather than by the paragraph, so that the rows are counted exactly and the
    // newest line is always on screen when not scrolled back.
    let rows = area.height.saturating_sub(2) as usize;
    let width = area.width.saturating_sub(2).max(1) as usize;
    let end = lines.len().saturating_sub(view.scroll);
    // Newest first, until the pane is full; the oldest line shown may show only its end.
    let mut shown: Vec<Line<'static>> = Vec::new();
    for line in lines.range(..end).rev() {
        if shown.len() >= rows {
            break;
        }
        shown.extend(wrap(chat_line(model, line), width, INDENT).into_iter().rev());
    }
    shown.truncate(rows);
    shown.reverse();
    // Scrolled back to the first line with room to spare: the pane is filled with the lines
    // after it rather than left half empty.
    let mut next = end;
    while shown.len() < rows && next < lines.len() {
        let room = rows - shown.len();
        shown.extend(wrap(chat_line(model, &lines[next]), width, INDENT).into_iter().take(room));
        next += 1;
    }
    let below = lines.len() - next;
    let title = if below > 0 {
        format!(" {below} more below: PgDn ")
    } else {
        format!(" {} @ {} ", model.name(), view.server)
    };
    let block = Block::bordered().title(title);
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

/// How far the rows after a line's first are indented: past the `HH:MM ` timestamp, so a
/// wrapped message reads as one block (irssi's indent).
const INDENT: usize = 6;

/// `line` cut into rows of at most `width` cells, at spaces where possible, the rows after the
/// first indented by `indent`.
pub fn wrap(line: Line<'static>, width: usize, indent: usize) -> Vec<Line<'static>> {
    let indent = if width > indent * 2 { indent } else { 0 };
    let cells: Vec<(char, Style, usize)> = line
        .spans
        .iter()
        .flat_map(|span| {
            let style = line.style.patch(span.style);
            span.content.chars().map(move |c| (c, style, char_width(c)))
        })
        .collect();
    let mut rows: Vec<Vec<(char, Style, usize)>> = vec![Vec::new()];
    let mut used = 0;
    for cell in cells {
        let limit = if rows.len() == 1 { width } else { width - indent };
        if used + cell.2 > limit && used > 0 {
            // A space at the end of a row is where it is cut; otherwise the word being cut moves
            // to the next row, unless it would not fit there either (then it is cut here).
            let carried = match rows.last_mut() {
                Some(_) if cell.0 == ' ' => Vec::new(),
                Some(row) => match row.iter().rposition(|(c, _, _)| *c == ' ') {
                    Some(space)
                        if space + 1 < row.len()
                            && row[space + 1..].iter().map(|c| c.2).sum::<usize>() + cell.2
                                <= width - indent =>
                    {
                        let word = row.split_off(space + 1);
                        row.truncate(space);
                        word
                    }
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            used = carried.iter().map(|c| c.2).sum();
            rows.push(carried);
        }
        if rows.len() > 1 && used == 0 && cell.0 == ' ' {
            continue; // no row starts with the space it was cut at
        }
        used += cell.2;
        if let Some(row) = rows.last_mut() {
            row.push(cell);
        }
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut spans: Vec<Span<'static>> = Vec::new();
            if i > 0 && indent > 0 {
                spans.push(Span::from(" ".repeat(indent)));
            }
            for (c, style, _) in row {
                match spans.last_mut() {
                    Some(last) if last.style == style => last.content.to_mut().push(c),
                    _ => spans.push(Span::styled(c.to_string(), style)),
                }
            }
            Line::from(spans)
        })
        .collect()
}

/// The cells a character takes on a terminal (0 to 2).
fn char_width(c: char) -> usize {
    let mut buf = [0; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

/// One line of the conversation, styled by its kind.
pub fn chat_line(model: &ClientModel, line: &ChatLine) -> Line<'static> {
    let time = Span::from(format!("{} ", line.time)).dark_gray();
    let text = line.text.clone();
    let mut spans = vec![time];
    match &line.kind {
        LineKind::Public { from, own } => {
            let mut name = Style::new().fg(name_color(from));
            if *own {
                name = name.add_modifier(Modifier::BOLD);
            }
            spans.push(Span::from("<"));
            spans.push(Span::styled(from.clone(), name));
            spans.push(Span::from("> "));
            if line.mention {
                spans.push(Span::from(text).light_yellow().bold());
            } else {
                spans.push(Span::from(text));
            }
        }
        LineKind::Private { with, incoming: true } => {
            spans.push(Span::from(format!("*{with}* ")).magenta().bold());
            spans.push(Span::from(text).magenta());
        }
        LineKind::Private { with, incoming: false } => {
            spans.push(Span::from(format!("-> *{with}* ")).magenta());
            spans.push(Span::from(text).magenta());
        }
        LineKind::Presence => {
            spans.push(Span::from("-- ").dark_gray());
            spans.push(Span::from(text).dark_gray());
        }
        LineKind::System => {
            spans.push(Span::from("-- ").cyan());
            spans.push(Span::from(text));
        }
        LineKind::Error => {
            spans.push(Span::from("!! ").red().bold());
            spans.push(Span::from(text).red());
        }
    }
    let _ = model;
    Line::from(spans)
}

fn render_people(frame: &mut Frame, model: &ClientModel, view: &View, area: Rect) {
    let people = model.people();
    let items: Vec<ListItem> = people
        .iter()
        .map(|name| {
            let style = Style::new().fg(name_color(name));
            let label =
                if model.is_me(name) { format!("{name} (you)") } else { (*name).to_owned() };
            ListItem::new(label).style(style)
        })
        .collect();
    let focused = view.focus == Focus::People;
    let title = if focused {
        " people: Enter writes ".to_owned()
    } else {
        format!(" here ({}): F3 writes ", people.len())
    };
    let list = List::new(items)
        .block(pane(title, focused))
        .highlight_style(Style::new().reversed())
        .highlight_symbol("> ");
    let mut state = ListState::default();
    if focused {
        state.select(Some(view.selected_person.min(people.len().saturating_sub(1))));
    }
    frame.render_stateful_widget(list, area, &mut state);
}

fn render_files(frame: &mut Frame, model: &ClientModel, view: &View, area: Rect) {
    let items: Vec<ListItem> = model
        .files()
        .iter()
        .map(|file| {
            let last = model.downloads().iter().rev().find(|d| d.file == *file);
            let mark = match last.map(|d| &d.state) {
                Some(DownloadState::Verified { .. }) => Span::from("✓ ").green(),
                Some(DownloadState::Running | DownloadState::Requested) => {
                    Span::from("↓ ").yellow()
                }
                Some(DownloadState::Failed { .. }) => Span::from("✗ ").red(),
                None => Span::from("  "),
            };
            ListItem::new(Line::from(vec![mark, Span::from(file.clone())]))
        })
        .collect();
    let focused = view.focus == Focus::Files;
    let title = if focused {
        " files: Enter downloads ".to_owned()
    } else {
        format!(" files ({}): F2 gets ", model.files().len())
    };
    let list = List::new(items)
        .block(pane(title, focused))
        .highlight_style(Style::new().reversed())
        .highlight_symbol("> ");
    let mut state = ListState::default();
    if focused {
        state.select(Some(view.selected_file.min(model.files().len().saturating_sub(1))));
    }
    frame.render_stateful_widget(list, area, &mut state);
}

fn pane(title: String, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused { block.border_style(Style::new().cyan().bold()) } else { block }
}

fn render_input(frame: &mut Frame, model: &ClientModel, view: &View, area: Rect) {
    let inner_width = area.width.saturating_sub(2) as usize;
    if let Some(paste) = &view.paste {
        let count = paste.lines().count();
        let first = paste.lines().next().unwrap_or_default();
        let block = Block::bordered()
            .title(format!(" send {count} pasted lines? Enter: yes, Esc: no "))
            .border_style(Style::new().yellow().bold());
        let text = format!("{first} (+{} more)", count.saturating_sub(1));
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let title = match model.connection() {
        Connection::NameRefused { .. } => " name refused: type another name ",
        _ => match view.focus {
            Focus::Input => " say (/help) ",
            Focus::Files => " Up/Down, Enter: download, Esc: back ",
            Focus::People => " Up/Down, Enter: write to, Esc: back ",
        },
    };
    let border = match model.connection() {
        Connection::NameRefused { .. } => Style::new().red().bold(),
        _ => Style::new().cyan(),
    };
    // The part of the line around the cursor that fits.
    let chars: Vec<char> = model.input().chars().collect();
    let cursor = view.cursor.min(chars.len());
    let room = inner_width.saturating_sub(3).max(1);
    let first = cursor.saturating_sub(room);
    let shown: String = chars[first..].iter().take(room + 1).collect();
    let paragraph = Paragraph::new(format!("> {shown}"))
        .block(Block::bordered().title(title).border_style(border));
    frame.render_widget(paragraph, area);
    if view.focus == Focus::Input {
        let x = area.x + 1 + 2 + (cursor - first) as u16;
        frame.set_cursor_position(Position {
            x: x.min(area.right().saturating_sub(2)),
            y: area.y + 1,
        });
    }
}

fn render_status(frame: &mut Frame, model: &ClientModel, view: &View, clock: Clock, area: Rect) {
    let narrow = area.width < NARROW;
    let (state, style) = match model.connection() {
        Connection::Joined => ("connected".to_owned(), Style::new().green()),
        Connection::Connecting { attempt: 1 } => ("connecting".to_owned(), Style::new().yellow()),
        Connection::Connecting { attempt } => {
            (format!("reconnecting (try {attempt})"), Style::new().yellow())
        }
        Connection::NameRefused { .. } => ("name refused".to_owned(), Style::new().red()),
        Connection::Lost { retry_at, .. } => {
            // Rounded up: "retry in 0s" would be a second too early.
            let wait = retry_at.saturating_duration_since(clock.now);
            let wait =
                std::time::Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
            (format!("disconnected, retry in {}", human_duration(wait)), Style::new().red().bold())
        }
        Connection::Quitting => ("leaving".to_owned(), Style::new().yellow()),
        Connection::Closed => ("closed".to_owned(), Style::new().red()),
    };
    let mut spans = vec![Span::from(format!(" {} ", clock.time)), Span::styled(state, style)];
    if narrow {
        spans.push(Span::from(format!(
            " F2:{} files F3:{} here",
            model.files().len(),
            model.people().len()
        )));
    } else {
        spans.push(Span::from(format!(
            " | {} here | {} files | F2 files  F3 people  /help  Ctrl-C quits",
            model.people().len(),
            model.files().len()
        )));
    }
    if view.quitting && !model.is_closed() {
        spans.push(Span::from(" (Ctrl-C again: leave now)").yellow());
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(Style::new().on_dark_gray()), area);
}
