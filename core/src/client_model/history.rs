//! Up/Down input history, as in a shell: Up walks back through what was sent, Down forward, and
//! the line being typed when Up was first pressed comes back at the bottom.

use std::collections::VecDeque;

/// Lines kept; older ones are forgotten (bounded memory).
pub const HISTORY_LINES: usize = 500;

/// What was typed before, and where Up/Down stand in it.
#[derive(Debug, Clone, Default)]
pub struct InputHistory {
    lines: VecDeque<String>,
    /// The entry shown, counted back from the newest (0 = the newest); `None` when not browsing.
    at: Option<usize>,
    /// What was being typed when browsing began.
    draft: String,
}

impl InputHistory {
    /// Remembers a sent line (not an empty one, nor the same line twice in a row); browsing ends.
    pub fn push(&mut self, line: &str) {
        self.at = None;
        if line.trim().is_empty() || self.lines.back().is_some_and(|last| last == line) {
            return;
        }
        if self.lines.len() == HISTORY_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_owned());
    }

    /// Up: the line before the one shown; `current` is the input now. `None` at the oldest.
    pub fn older(&mut self, current: &str) -> Option<String> {
        let next = match self.at {
            None => {
                if self.lines.is_empty() {
                    return None;
                }
                current.clone_into(&mut self.draft);
                0
            }
            Some(at) if at + 1 < self.lines.len() => at + 1,
            Some(_) => return None,
        };
        self.at = Some(next);
        self.lines.get(self.lines.len() - 1 - next).cloned()
    }

    /// Down: the line after the one shown, then the draft; `None` when not browsing.
    pub fn newer(&mut self) -> Option<String> {
        match self.at? {
            0 => {
                self.at = None;
                Some(std::mem::take(&mut self.draft))
            }
            at => {
                self.at = Some(at - 1);
                self.lines.get(self.lines.len() - at).cloned()
            }
        }
    }

    /// How many lines are kept.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Nothing sent yet.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 13 (input history)
    #[test]
    fn up_and_down_walk_the_history_and_keep_the_draft() {
        let mut h = InputHistory::default();
        assert_eq!(h.older("x"), None, "nothing sent yet");
        h.push("one");
        h.push("two");
        h.push("two");
        h.push("");
        assert_eq!(h.len(), 2, "no repeats, no empty lines");
        assert_eq!(h.older("draft").as_deref(), Some("two"));
        assert_eq!(h.older("two").as_deref(), Some("one"));
        assert_eq!(h.older("one"), None, "the oldest");
        assert_eq!(h.newer().as_deref(), Some("two"));
        assert_eq!(h.newer().as_deref(), Some("draft"));
        assert_eq!(h.newer(), None, "not browsing any more");
    }

    // Issue 13 (input history, bounded memory)
    #[test]
    fn bounded() {
        let mut h = InputHistory::default();
        for i in 0..HISTORY_LINES + 10 {
            h.push(&i.to_string());
        }
        assert_eq!(h.len(), HISTORY_LINES);
    }
}
