//! Making untrusted text safe to print (S4).
//!
//! Names cannot contain anything odd, but messages and file names can hold characters that move
//! the cursor or fake a new line on a terminal or in a log: control characters, the Unicode line
//! and paragraph separators, and the bidirectional overrides that reorder what a reader sees.
//! [`escape_for_display`] replaces each with a visible `\u{..}` escape; every log line and every
//! error that echoes input goes through it.
//!
//! Spec: `docs/PROTOCOL.md` [§1.3] (What the server sends: what a client escapes before printing)
//! and [§1.2] (What a client sends: names quoted in `ERROR` reasons, at most 64 characters, then
//! `…`).
//!
//! [§1.3]: ../../../docs/PROTOCOL.md#13-what-the-server-sends
//! [§1.2]: ../../../docs/PROTOCOL.md#12-what-a-client-sends

use std::borrow::Cow;

/// Characters that must not reach a terminal or log unescaped.
pub fn is_display_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `s` with every unsafe character written as `\u{XXXX}`; borrowed when nothing needed escaping.
pub fn escape_for_display(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_display_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_display_unsafe(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`escape_for_display`] but also cut to at most `max_chars` characters (marked with `…`),
/// for echoing a possibly huge input inside a one-line reply that must stay under the line limit.
pub fn escape_truncated(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max_chars {
            out.push('…');
            break;
        }
        if is_display_unsafe(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on purpose
mod tests {
    use super::*;

    #[test]
    fn escapes_line_forging_characters() {
        // S4
        assert_eq!(escape_for_display("plain"), Cow::Borrowed("plain"));
        assert_eq!(escape_for_display("a\r\nb"), "a\\u{000d}\\u{000a}b");
        assert_eq!(escape_for_display("\u{1b}[2J"), "\\u{001b}[2J");
        assert_eq!(escape_for_display("x\u{2028}y\u{202e}"), "x\\u{2028}y\\u{202e}");
        assert_eq!(escape_for_display("\u{85}"), "\\u{0085}");
    }

    #[test]
    fn truncates_by_characters() {
        assert_eq!(escape_truncated("abcdef", 3), "abc…");
        assert_eq!(escape_truncated("ab", 3), "ab");
        assert_eq!(escape_truncated("\0x", 5), "\\u{0000}x");
    }
}
