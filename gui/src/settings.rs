//! What the connect form remembers between runs: the last address and name, in a small file in
//! the person's config folder (`$XDG_CONFIG_HOME/natter/gui.toml`, else `~/.config/natter/`).
//!
//! The file is a tiny subset of TOML, so a person can read and edit it:
//!
//! ```toml
//! # natter gui: the connect form's last values
//! addr = "127.0.0.1:55000"
//! name = "alice"
//! ```
//!
//! Lines are `key = "value"`, blank, or `#` comments; values are basic strings with the escapes
//! `\"`, `\\`, `\n`, `\t`, `\r` and `\uXXXX`. Unknown keys are kept out of the way (ignored), so
//! a newer natter's file still loads.

use std::path::{Path, PathBuf};

/// The remembered values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remembered {
    /// The server's address as typed (`host:port`, or `natters://host:port`).
    pub addr: Option<String>,
    /// The name to join with.
    pub name: Option<String>,
}

/// Why the file could not be read; the message names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A line that is not `key = "value"`, a comment or blank.
    #[error("line {line}: {what}")]
    Syntax {
        /// 1-based.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The same key twice.
    #[error("line {line}: {key} is set twice")]
    Duplicate {
        /// 1-based.
        line: usize,
        /// The key.
        key: String,
    },
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The system's reason.
        error: String,
    },
}

impl Remembered {
    /// Reads the file's text.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        let mut out = Remembered::default();
        for (at, raw) in text.lines().enumerate() {
            let line = at + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let syntax = |what| SettingsError::Syntax { line, what };
            let (key, value) = trimmed.split_once('=').ok_or(syntax("expected key = \"value\""))?;
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(syntax("a key is letters, digits and _"));
            }
            let value = parse_string(value.trim()).map_err(syntax)?;
            let slot = match key {
                "addr" => &mut out.addr,
                "name" => &mut out.name,
                _ => continue,
            };
            if slot.is_some() {
                return Err(SettingsError::Duplicate { line, key: key.to_owned() });
            }
            *slot = Some(value);
        }
        Ok(out)
    }

    /// The file's text.
    pub fn format(&self) -> String {
        let mut out = String::from("# natter gui: the connect form's last values\n");
        for (key, value) in [("addr", &self.addr), ("name", &self.name)] {
            if let Some(value) = value {
                out.push_str(&format!("{key} = \"{}\"\n", escape(value)));
            }
        }
        out
    }

    /// Reads `path`; a missing file is nothing remembered yet.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(io_error(path, &err)),
        }
    }

    /// Writes `path` (and its folder), through a temporary file and a rename so a crash leaves
    /// the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        }
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, self.format()).map_err(|e| io_error(&tmp, &e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, &e))
    }
}

/// Where the file lives: `$XDG_CONFIG_HOME/natter/gui.toml`, else `$HOME/.config/natter/gui.toml`;
/// `None` when neither variable is set.
pub fn default_path() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let config = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|home| home.join(".config")))?;
    Some(config.join("natter").join("gui.toml"))
}

fn io_error(path: &Path, err: &std::io::Error) -> SettingsError {
    SettingsError::Io { path: path.display().to_string(), error: err.to_string() }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A quoted basic string, alone on the rest of its line (a `#` comment may follow).
fn parse_string(text: &str) -> Result<String, &'static str> {
    let mut chars = text.strip_prefix('"').ok_or("a value is a \"quoted string\"")?.chars();
    let mut out = String::new();
    loop {
        match chars.next().ok_or("the string is not closed")? {
            '"' => break,
            '\\' => out.push(match chars.next().ok_or("the string is not closed")? {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 4);
                    code.and_then(char::from_u32).ok_or("\\u takes four hex digits")?
                }
                _ => return Err("unknown escape"),
            }),
            c if c.is_control() && c != '\t' => return Err("a control character in a string"),
            c => out.push(c),
        }
    }
    let rest = chars.as_str().trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(out)
    } else {
        Err("text after the closing quote")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(addr: &str, name: &str) -> Remembered {
        Remembered { addr: Some(addr.into()), name: Some(name.into()) }
    }

    // Issue 13 (natter gui: the connect form remembers): the file round-trips.
    #[test]
    fn round_trip() {
        for r in [
            Remembered::default(),
            both("127.0.0.1:55000", "alice"),
            both("natters://chat.example:55443", "bob"),
            both("odd \"quoted\" \\ back\tslash\nnew line \u{1} \u{7f}", "émile ☃"),
            Remembered { addr: None, name: Some("only a name".into()) },
        ] {
            let text = r.format();
            assert_eq!(Remembered::parse(&text), Ok(r.clone()), "{text}");
        }
    }

    #[test]
    fn comments_blank_lines_unknown_keys_and_spacing() {
        let text = "# hi\n\n  name=\"al\"   # trailing\naddr = \"h:1\"\ntheme = \"dark\"\n";
        assert_eq!(Remembered::parse(text), Ok(both("h:1", "al")));
        assert_eq!(
            Remembered::parse("addr = \"\\u00e9\""),
            Ok(Remembered { addr: Some("é".into()), name: None })
        );
    }

    #[test]
    fn malformed_files_say_which_line() {
        let cases = [
            ("name", 1, "expected key"),
            ("\nname = alice", 2, "quoted string"),
            ("name = \"alice", 1, "not closed"),
            ("name = \"a\\", 1, "not closed"),
            ("name = \"a\\q\"", 1, "unknown escape"),
            ("name = \"a\\u12\"", 1, "four hex digits"),
            ("name = \"a\\uD800\"", 1, "four hex digits"),
            ("name = \"a\" b", 1, "after the closing quote"),
            ("na me = \"a\"", 1, "letters, digits"),
            (" = \"a\"", 1, "letters, digits"),
            ("name = \"a\u{1}\"", 1, "control character"),
        ];
        for (text, line, what) in cases {
            let err = Remembered::parse(text).expect_err(text).to_string();
            assert!(err.starts_with(&format!("line {line}:")), "{text:?}: {err}");
            assert!(err.contains(what), "{text:?}: {err}");
        }
        let dup = Remembered::parse("name = \"a\"\nname = \"b\"");
        assert_eq!(dup, Err(SettingsError::Duplicate { line: 2, key: "name".into() }));
    }

    #[test]
    fn load_and_save_through_a_file() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("deeper").join("gui.toml");
        assert_eq!(Remembered::load(&path), Ok(Remembered::default()), "missing: nothing yet");
        both("h:2", "carol").save(&path).expect("saved");
        assert_eq!(Remembered::load(&path), Ok(both("h:2", "carol")));
        std::fs::write(&path, "name = oops").expect("written");
        let err = Remembered::load(&path).expect_err("malformed");
        assert!(err.to_string().contains("line 1"), "{err}");
        let not_a_file = Remembered::load(dir.path());
        assert!(matches!(not_a_file, Err(SettingsError::Io { .. })), "{not_a_file:?}");
    }
}
