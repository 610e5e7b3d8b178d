//! Tab completion of the word being typed, in the habit of irssi and weechat: the first Tab puts
//! in the first match, each further Tab the next one, round and round.
//!
//! What is completed depends on where the word stands: a command after a leading `/`, a file
//! after `/get`, a name after `/msg` or `~`, and a name anywhere else (at the start of a line as
//! `name: `, the way one addresses someone in a channel).

use super::command::{COMMANDS, find_command};

/// The completion in progress, so that the next Tab moves on to the next match.
#[derive(Debug, Clone, Default)]
pub struct Completer {
    cycle: Option<Cycle>,
}

#[derive(Debug, Clone)]
struct Cycle {
    /// The input as the last Tab left it: a Tab on anything else starts afresh.
    shown: String,
    /// The input before the completed word.
    head: String,
    candidates: Vec<String>,
    suffix: &'static str,
    index: usize,
}

impl Completer {
    /// The input with its last word completed from `names` (the people here) and `files` (on
    /// offer); `None` when nothing matches.
    pub fn complete(&mut self, input: &str, names: &[String], files: &[String]) -> Option<String> {
        if let Some(cycle) = self.cycle.as_mut().filter(|c| c.shown == input) {
            cycle.index = (cycle.index + 1) % cycle.candidates.len();
            cycle.shown =
                format!("{}{}{}", cycle.head, cycle.candidates[cycle.index], cycle.suffix);
            return Some(cycle.shown.clone());
        }
        self.cycle = None;
        let split = input.rfind(' ').map_or(0, |i| i + 1);
        let (head, word) = input.split_at(split);
        let (pool, prefix, suffix) = what_to_complete(head, word, names, files)?;
        let mut candidates: Vec<String> = pool
            .into_iter()
            .filter(|c| matches(c, word, prefix))
            .map(|c| format!("{prefix}{c}"))
            .collect();
        candidates.sort_by_key(|c| c.to_lowercase());
        candidates.dedup();
        let first = candidates.first()?;
        let shown = format!("{head}{first}{suffix}");
        self.cycle = Some(Cycle {
            shown: shown.clone(),
            head: head.to_owned(),
            candidates,
            suffix,
            index: 0,
        });
        Some(shown)
    }
}

/// What may complete `word` after `head`: the candidates, the prefix the word carries before
/// them (`/`, `~`) and what follows a completed word. `None` when there is nothing to complete.
fn what_to_complete(
    head: &str,
    word: &str,
    names: &[String],
    files: &[String],
) -> Option<(Vec<String>, &'static str, &'static str)> {
    let position = head.split_whitespace().count();
    let command = head
        .split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix('/'))
        .and_then(find_command)
        .map(|c| c.name);
    let commands = || COMMANDS.iter().map(|c| c.name.to_owned()).collect();
    let found = match (position, command) {
        (0, _) if word.starts_with('/') => (commands(), "/", " "),
        (0, _) if word.starts_with('~') => (names.to_vec(), "~", " "),
        (0, _) if word.is_empty() => return None,
        (0, _) => (names.to_vec(), "", ": "),
        (1, Some("get")) => (files.to_vec(), "", ""),
        (1, Some("help")) => (commands(), "", ""),
        _ => (names.to_vec(), "", " "),
    };
    Some(found)
}

/// Does `candidate` start with `word` (less its `prefix`), ignoring case?
fn matches(candidate: &str, word: &str, prefix: &str) -> bool {
    let word = word.strip_prefix(prefix).unwrap_or(word);
    candidate.to_lowercase().starts_with(&word.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    // Issue 13 (completion)
    #[test]
    fn commands_files_and_names_by_position() {
        let names = strings(&["bob", "Carol", "carl"]);
        let files = strings(&["hello.c", "photo.png"]);
        let mut c = Completer::default();
        assert_eq!(c.complete("/g", &names, &files).as_deref(), Some("/get "));
        assert_eq!(c.complete("/get ph", &names, &files).as_deref(), Some("/get photo.png"));
        assert_eq!(c.complete("/msg b", &names, &files).as_deref(), Some("/msg bob "));
        assert_eq!(c.complete("~b", &names, &files).as_deref(), Some("~bob "));
        assert_eq!(c.complete("b", &names, &files).as_deref(), Some("bob: "), "addressing");
        assert_eq!(c.complete("hi B", &names, &files).as_deref(), Some("hi bob "));
        assert_eq!(c.complete("/help q", &names, &files).as_deref(), Some("/help quit"));
        assert_eq!(c.complete("zz", &names, &files), None);
        assert_eq!(c.complete("", &names, &files), None, "an empty line completes nothing");
    }

    // Issue 13 (completion)
    #[test]
    fn tab_again_cycles_through_the_matches() {
        let names = strings(&["bob", "Carol", "carl"]);
        let mut c = Completer::default();
        let first = c.complete("hi ca", &names, &[]);
        assert_eq!(first.as_deref(), Some("hi carl "));
        let second = c.complete("hi carl ", &names, &[]);
        assert_eq!(second.as_deref(), Some("hi Carol "));
        let third = c.complete("hi Carol ", &names, &[]);
        assert_eq!(third.as_deref(), Some("hi carl "), "round and round");
        // Typing something else starts afresh.
        assert_eq!(c.complete("hi b", &names, &[]).as_deref(), Some("hi bob "));
    }
}
