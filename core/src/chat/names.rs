//! Name rules (PROTOCOL.md 1.1): what a valid name is, and when two names are "the same".
//!
//! Two comparisons matter and they are deliberately different:
//! - *ignoring case* ([`fold`]): full Unicode case folding, so `STRASSE` and `straße` are one
//!   name. Used for "taken", for reserved words, and for finding the recipient of `~name`.
//! - *confusable* ([`skeleton_key`]): the UTS #39 skeleton of the case-folded name, so a Cyrillic
//!   `а` in `аlice` collides with `alice` and with `ALICE`. Used only to refuse a new name; a
//!   private message must name its recipient exactly up to case.
//!
//! [`NameRegistry`] holds the connected names under both keys so both checks are O(name length).
//!
//! Spec: `docs/PROTOCOL.md` [§1.1] (Joining, names and presence: the table of checks, their order
//! and their refusal texts).
//!
//! [§1.1]: ../../../docs/PROTOCOL.md#11-joining-names-and-presence

use std::collections::HashMap;
use std::sync::Arc;

/// The most code points a name may have.
pub const MAX_NAME_CHARS: usize = 32;

/// Words no name may equal, ignoring case: they are the first words of server lines (1.3).
pub const RESERVED: [&str; 6] = ["ALL", "CHOOSE_FILE", "UDP", "ERROR", "from", "show"];

/// Why a name was refused. The `Display` text follows `ERROR ` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty line: a name needs at least one character.
    #[error("a name is required: 1 to 32 letters, digits, _ - or .")]
    Empty,
    /// More than [`MAX_NAME_CHARS`] code points.
    #[error("name too long: {chars} characters, at most 32")]
    TooLong {
        /// The name's length in Unicode code points (not bytes).
        chars: usize,
    },
    /// A character that fails [`is_name_char`].
    #[error("a name may only contain letters, digits, _ - and . (not U+{code:04X})")]
    BadChar {
        /// The first such character's Unicode scalar value, shown as `U+XXXX`.
        code: u32,
    },
    /// Equal to one of [`RESERVED`] ignoring case; carries the reserved word as listed there.
    #[error("name is reserved: {0}")]
    Reserved(&'static str),
    /// Equal to a connected name ignoring case; carries that name as its holder registered it.
    #[error("name already taken: {0}")]
    Taken(String),
    /// Same UTS #39 skeleton as a connected name; carries that name as its holder registered it.
    #[error("name looks too much like {0}, who is here")]
    Confusable(String),
}

/// PROTOCOL 1.1: "a Unicode letter or digit, or one of `_ - .`". Letters are the general
/// categories L* and digits Nd: `char::is_alphanumeric` would also let in combining marks and
/// numerals such as `½` or `Ⅻ`. The Hangul fillers are letters (Lo) that draw nothing, so a name
/// made of them would be invisible on every screen: they are refused too.
pub fn is_name_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
    const INVISIBLE_LETTERS: [char; 4] = ['\u{115f}', '\u{1160}', '\u{3164}', '\u{ffa0}'];
    match c.general_category_group() {
        GeneralCategoryGroup::Letter => !INVISIBLE_LETTERS.contains(&c),
        GeneralCategoryGroup::Number => c.general_category() == GeneralCategory::DecimalNumber,
        _ => matches!(c, '_' | '-' | '.'),
    }
}

/// Length and character rules, independent of who is connected.
pub fn check_syntax(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong { chars });
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(NameError::BadChar { code: u32::from(c) });
    }
    let folded = fold(name);
    if let Some(word) = RESERVED.iter().find(|w| fold(w) == folded) {
        return Err(NameError::Reserved(word));
    }
    Ok(())
}

/// Full Unicode case folding: the key for "ignoring case".
pub fn fold(name: &str) -> String {
    caseless::default_case_fold_str(name)
}

/// The UTS #39 skeleton of the case-folded name: the key for "confusable".
pub fn skeleton_key(name: &str) -> String {
    unicode_security::skeleton(&fold(name)).collect()
}

/// The names connected right now, indexed for both comparisons.
///
/// Each name is kept once, in an `Arc<str>` that the server's connection state shares
/// ([`NameRegistry::registered`]), and a key equal to the name (a name already in folded form,
/// the usual case) is that same `Arc`: in a room of thousands of idle people, every copy of a
/// name is a heap block of its own (issue 12: memory per idle person).
#[derive(Debug, Default)]
pub struct NameRegistry<Id> {
    /// Folded name to its holder and the name as registered.
    by_fold: HashMap<Arc<str>, (Id, Arc<str>)>,
    /// Skeleton to the name as registered.
    by_skeleton: HashMap<Arc<str>, Arc<str>>,
}

impl<Id: Copy> NameRegistry<Id> {
    /// An empty registry: nobody connected.
    pub fn new() -> Self {
        Self { by_fold: HashMap::new(), by_skeleton: HashMap::new() }
    }

    /// Would `name` be accepted now? Syntax first, then taken, then confusable.
    pub fn check(&self, name: &str) -> Result<(), NameError> {
        check_syntax(name)?;
        if let Some((_, existing)) = self.by_fold.get(fold(name).as_str()) {
            return Err(NameError::Taken(existing.to_string()));
        }
        if let Some(existing) = self.by_skeleton.get(skeleton_key(name).as_str()) {
            return Err(NameError::Confusable(existing.to_string()));
        }
        Ok(())
    }

    /// Checks and registers `name` for `id`.
    pub fn claim(&mut self, name: &str, id: Id) -> Result<(), NameError> {
        self.check(name)?;
        let shared: Arc<str> = Arc::from(name);
        let key = |k: String| if *k == *shared { Arc::clone(&shared) } else { Arc::from(k) };
        let (by_fold, by_skeleton) = (key(fold(name)), key(skeleton_key(name)));
        self.by_fold.insert(by_fold, (id, Arc::clone(&shared)));
        self.by_skeleton.insert(by_skeleton, shared);
        Ok(())
    }

    /// The registered name `name` (as registered), shared: what the server keeps with the
    /// connection that holds it, so that the name is stored once.
    pub fn registered(&self, name: &str) -> Option<Arc<str>> {
        self.by_fold.get(fold(name).as_str()).map(|(_, n)| Arc::clone(n))
    }

    /// Forgets `name` (as it was registered).
    pub fn release(&mut self, name: &str) {
        self.by_fold.remove(fold(name).as_str());
        self.by_skeleton.remove(skeleton_key(name).as_str());
    }

    /// Forgets `name` only if `id` holds it: a remote member's leave must not free a name that
    /// a local person holds after a split (PROTOCOL 8.3).
    pub fn release_if(&mut self, name: &str, id: Id)
    where
        Id: PartialEq,
    {
        if self.by_fold.get(fold(name).as_str()).is_some_and(|(holder, _)| *holder == id) {
            self.release(name);
        }
    }

    /// The holder of `name` ignoring case, with the name as registered.
    pub fn lookup(&self, name: &str) -> Option<(Id, &str)> {
        self.by_fold.get(fold(name).as_str()).map(|(id, n)| (*id, &**n))
    }

    /// How many names are registered (members who have joined).
    pub fn len(&self) -> usize {
        self.by_fold.len()
    }

    /// Whether no name is registered.
    pub fn is_empty(&self) -> bool {
        self.by_fold.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on purpose
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        // C1, PROTOCOL 1.1
        assert_eq!(check_syntax(""), Err(NameError::Empty));
        assert!(check_syntax(&"é".repeat(32)).is_ok(), "32 code points, 64 bytes");
        assert_eq!(check_syntax(&"a".repeat(33)), Err(NameError::TooLong { chars: 33 }));
        assert_eq!(check_syntax("a b"), Err(NameError::BadChar { code: 0x20 }));
        assert_eq!(check_syntax("a:b"), Err(NameError::BadChar { code: 0x3a }));
        assert_eq!(check_syntax("a\u{1b}b"), Err(NameError::BadChar { code: 0x1b }));
        assert_eq!(check_syntax("a\u{2028}"), Err(NameError::BadChar { code: 0x2028 }));
        assert!(check_syntax("Zoë_2.0-x").is_ok());
        assert!(check_syntax("東京").is_ok());
        assert!(check_syntax("٣").is_ok(), "Arabic-Indic digit");
        // Numerals that are not decimal digits, combining marks, invisible letters: refused.
        for bad in ["½", "①", "Ⅻ", "a\u{0345}", "x\u{0903}", "\u{3164}", "\u{115f}\u{1160}"] {
            assert!(matches!(check_syntax(bad), Err(NameError::BadChar { .. })), "{bad:?}");
        }
    }

    #[test]
    fn reserved_ignoring_case() {
        for w in ["all", "All", "choose_file", "udp", "Error", "FROM", "SHOW", "show"] {
            assert!(matches!(check_syntax(w), Err(NameError::Reserved(_))), "{w}");
        }
        assert!(check_syntax("shows").is_ok());
    }

    #[test]
    fn taken_ignoring_case_with_full_folding() {
        // C1: full case folding, ß folds to ss.
        let mut r = NameRegistry::new();
        r.claim("straße", 1u64).unwrap();
        assert_eq!(r.check("STRASSE"), Err(NameError::Taken("straße".into())));
        r.claim("alice", 2).unwrap();
        assert_eq!(r.check("ALICE"), Err(NameError::Taken("alice".into())));
        assert_eq!(r.lookup("Alice"), Some((2, "alice")));
        assert_eq!(r.lookup("bob"), None);
    }

    #[test]
    fn confusables_collide() {
        // C1: Cyrillic а (U+0430) in "аlice"; also upper-case Cyrillic А against "alice".
        let mut r = NameRegistry::new();
        r.claim("alice", 1u64).unwrap();
        assert_eq!(r.check("\u{430}lice"), Err(NameError::Confusable("alice".into())));
        assert_eq!(r.check("\u{410}LICE"), Err(NameError::Confusable("alice".into())));
        // but a private message to the look-alike finds nobody
        assert_eq!(r.lookup("\u{430}lice"), None);
        // released names are free again
        r.release("alice");
        assert!(r.check("\u{430}lice").is_ok());
        assert!(r.is_empty());
    }
}
