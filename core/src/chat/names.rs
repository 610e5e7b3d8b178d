//! Name rules (PROTOCOL.md 1.1): what a valid name is, and when two names are "the same".
//!
//! Two comparisons matter and they are deliberately different:
//! - *ignoring case* ([`fold`]): full Unicode case folding, so `STRASSE` and `straße` are one
//!   name. Used for "taken", for reserved words, and for finding the recipient of `~name`.
//! - *confusable* ([`skeleton_key`]): the UTS #39 skeleton of the case-folded name, so a Cyrillic
//!   `а` in `аlice` collides with `alice` and with `ALICE`. Used only to refuse a new name; a
//!   private message must name its recipient exactly up to case.
//!
//! [`NameRegistry`] holds a digest of each connected name under both keys, so both checks are
//! O(name length); the names themselves are kept by their holders ([`HeldName`]).
//!
//! Spec: `docs/PROTOCOL.md` [§1.1] (Joining, names and presence: the table of checks, their order
//! and their refusal texts).
//!
//! [§1.1]: ../../../docs/PROTOCOL.md#11-joining-names-and-presence

use std::collections::HashMap;

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
    if c.is_ascii() {
        // The ASCII letters and digits are all the ASCII members of L* and Nd. See
        // [`fold`] for why ASCII does not consult the tables.
        return c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    }
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
///
/// An ASCII name, nearly every name, folds without the Unicode tables (the fold of an ASCII
/// letter is its lower case). That is faster, and the tables are pages of code and data that a
/// server whose people all have ASCII names never has to read into memory: 64 KB each, about a
/// quarter of what a room of a thousand idle people cost (issue 12). `is_name_char` and
/// [`skeleton_key`] take the same shortcut; a test holds all three to the tables.
pub fn fold(name: &str) -> String {
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    caseless::default_case_fold_str(name)
}

/// The UTS #39 skeleton of the case-folded name: the key for "confusable".
pub fn skeleton_key(name: &str) -> String {
    if name.is_ascii() {
        // An ASCII string is its own decomposition, so its skeleton is that of each character
        // in turn (see `fold` for why).
        let mut key = String::with_capacity(name.len());
        for c in name.chars().map(|c| c.to_ascii_lowercase()) {
            match ascii_confusable(c) {
                Some(skeleton) => key.push_str(skeleton),
                None => key.push(c),
            }
        }
        return key;
    }
    unicode_security::skeleton(&fold(name)).collect()
}

/// The skeleton of an ASCII character that is not its own, as the confusables table of UTS #39
/// (through `unicode-security`) gives it: `ascii_shortcuts_agree_with_the_unicode_tables` checks
/// all 128 characters against it.
fn ascii_confusable(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "''",
        '%' => "\u{b0}/\u{2080}",
        '0' => "O",
        '1' | 'I' | '|' => "l",
        '`' => "'",
        'm' => "rn",
        _ => return None,
    })
}

/// A name kept in 64 bits: the first eight bytes of its key's BLAKE3 hash.
///
/// The registry keeps digests, not the keys: a room of thousands of idle people would otherwise
/// hold two or three heap blocks per person (the name, its folded key, its skeleton), each one
/// small and long-lived, and such blocks pin the pages a join storm leaves behind (issue 12:
/// memory per idle person).
///
/// Two different keys share a digest with odds of 2^-64 per pair (about 10^-11 for a room of ten
/// thousand). Finding a name whose digest equals a given person's costs 2^64 hashes, so nobody
/// can aim one at another; a pair of one's own names that collide costs about 2^32, so only the
/// person who made such a pair meets it. What a collision does: the second name is refused as
/// taken (or, in a cluster, a node keeps the other node's holder out of its registry, so that
/// name cannot be written to from there). It never admits two people under one name, and a
/// private line never reaches the holder of another name: the server compares the names before
/// it delivers (`ChatServer::recipient`).
type Digest = u64;

fn digest(key: &str) -> Digest {
    let [a, b, c, d, e, f, g, h, ..] = *blake3::hash(key.as_bytes()).as_bytes();
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// Why the registry refused a name: its syntax, or a name that someone (`Id`) already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clash<Id> {
    /// Broke one of the rules of [`check_syntax`].
    Invalid(NameError),
    /// Equal, ignoring case, to the name `Id` holds.
    Taken(Id),
    /// Confusable with the name `Id` holds.
    Confusable(Id),
}

impl<Id> Clash<Id> {
    /// The refusal to show, with the holder's name as registered (`name_of`).
    pub fn into_error(self, name_of: impl FnOnce(Id) -> String) -> NameError {
        match self {
            Clash::Invalid(e) => e,
            Clash::Taken(id) => NameError::Taken(name_of(id)),
            Clash::Confusable(id) => NameError::Confusable(name_of(id)),
        }
    }
}

/// The names connected right now, indexed for both comparisons: who holds each folded name and
/// each skeleton. The names themselves are kept by their holders ([`HeldName`]); the registry
/// keeps [`Digest`]s.
#[derive(Debug, Default)]
pub struct NameRegistry<Id> {
    /// Folded name to its holder.
    by_fold: HashMap<Digest, Id>,
    /// Skeleton to its holder.
    by_skeleton: HashMap<Digest, Id>,
}

impl<Id: Copy + PartialEq> NameRegistry<Id> {
    /// An empty registry: nobody connected.
    pub fn new() -> Self {
        Self { by_fold: HashMap::new(), by_skeleton: HashMap::new() }
    }

    /// Would `name` be accepted now? Syntax first, then taken, then confusable.
    pub fn check(&self, name: &str) -> Result<(), Clash<Id>> {
        check_syntax(name).map_err(Clash::Invalid)?;
        if let Some(&holder) = self.by_fold.get(&digest(&fold(name))) {
            return Err(Clash::Taken(holder));
        }
        if let Some(&holder) = self.by_skeleton.get(&digest(&skeleton_key(name))) {
            return Err(Clash::Confusable(holder));
        }
        Ok(())
    }

    /// Checks and registers `name` for `id`.
    pub fn claim(&mut self, name: &str, id: Id) -> Result<(), Clash<Id>> {
        self.check(name)?;
        self.by_fold.insert(digest(&fold(name)), id);
        self.by_skeleton.insert(digest(&skeleton_key(name)), id);
        Ok(())
    }

    /// Forgets `name` only if `id` holds it: a remote member's leave must not free a name that
    /// a local person holds after a split (PROTOCOL 8.3).
    pub fn release_if(&mut self, name: &str, id: Id) {
        for (table, key) in
            [(&mut self.by_fold, fold(name)), (&mut self.by_skeleton, skeleton_key(name))]
        {
            let key = digest(&key);
            if table.get(&key) == Some(&id) {
                table.remove(&key);
            }
        }
    }

    /// The holder of `name`, ignoring case.
    pub fn lookup(&self, name: &str) -> Option<Id> {
        self.lookup_folded(&fold(name))
    }

    /// The holder of the name whose [`fold`] is `folded`: for a caller that needs the folded
    /// name anyway (to compare it with the holder's), so that it is made once.
    pub fn lookup_folded(&self, folded: &str) -> Option<Id> {
        self.by_fold.get(&digest(folded)).copied()
    }

    /// Makes `name` look, to the registry, like the name `as_if` that someone holds: a digest
    /// collision, which tests cannot find by search (it takes 2^32 hashes).
    #[cfg(test)]
    pub(crate) fn collide(&mut self, name: &str, as_if: &str) {
        if let Some(&holder) = self.by_fold.get(&digest(&fold(as_if))) {
            self.by_fold.insert(digest(&fold(name)), holder);
        }
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

/// How many bytes of a name [`HeldName`] keeps without a heap block: nearly every name fits.
const INLINE_NAME: usize = 22;

/// A name as its holder registered it, kept where the holder's state is: inline when it fits in
/// [`INLINE_NAME`] bytes, boxed otherwise (issue 12: no heap block per idle person). 24 bytes,
/// the size of a `String`.
#[derive(Clone, PartialEq, Eq)]
pub enum HeldName {
    /// Up to [`INLINE_NAME`] bytes of UTF-8, the first `len` of `bytes`.
    Inline {
        /// How many of `bytes` are the name.
        len: u8,
        /// The name, then zeros.
        bytes: [u8; INLINE_NAME],
    },
    /// A longer name (up to 32 code points, so up to 128 bytes).
    Boxed(Box<str>),
}

impl HeldName {
    /// Keeps `name`.
    pub fn new(name: &str) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE_NAME => {
                let mut bytes = [0; INLINE_NAME];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                HeldName::Inline { len, bytes }
            }
            _ => HeldName::Boxed(name.into()),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match self {
            // Always valid: the bytes were copied from a `str`, whole.
            HeldName::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            HeldName::Boxed(name) => name,
        }
    }
}

impl std::fmt::Debug for HeldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for HeldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

    /// The ASCII shortcuts of `is_name_char`, `fold` and `skeleton_key` give what the Unicode
    /// tables give: for every ASCII character alone, and for strings of them (a skeleton is made
    /// character by character only because ASCII needs no decomposition).
    #[test]
    fn ascii_shortcuts_agree_with_the_unicode_tables() {
        use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
        for c in (0u8..128).map(char::from) {
            let by_table = match c.general_category_group() {
                GeneralCategoryGroup::Letter => true,
                GeneralCategoryGroup::Number => {
                    c.general_category() == GeneralCategory::DecimalNumber
                }
                _ => matches!(c, '_' | '-' | '.'),
            };
            assert_eq!(is_name_char(c), by_table, "{c:?}");
            let one = c.to_string();
            assert_eq!(fold(&one), caseless::default_case_fold_str(&one), "{c:?}");
            let by_table: String = unicode_security::skeleton(&fold(&one)).collect();
            assert_eq!(skeleton_key(&one), by_table, "{c:?}");
        }
        let all: String = (0u8..128).map(char::from).collect();
        for text in [all.as_str(), "Mallory", "rnallory", "I0|1%`\"m\"", "Bob.2-x_Y"] {
            assert_eq!(fold(text), caseless::default_case_fold_str(text), "{text:?}");
            let by_table: String =
                unicode_security::skeleton(&caseless::default_case_fold_str(text)).collect();
            assert_eq!(skeleton_key(text), by_table, "{text:?}");
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
        assert_eq!(r.check("STRASSE"), Err(Clash::Taken(1)));
        r.claim("alice", 2).unwrap();
        assert_eq!(r.check("ALICE"), Err(Clash::Taken(2)));
        assert_eq!(r.lookup("Alice"), Some(2));
        assert_eq!(r.lookup("bob"), None);
        let shown = r.check("ALICE").unwrap_err().into_error(|id| format!("holder {id}"));
        assert_eq!(shown, NameError::Taken("holder 2".into()));
        assert_eq!(r.check("a b"), Err(Clash::Invalid(NameError::BadChar { code: 0x20 })));
    }

    #[test]
    fn a_held_name_is_inline_when_short_and_boxed_when_long() {
        for name in ["a", "alice", "Zoë_2.0-x", "東京", &"x".repeat(22), &"é".repeat(11)] {
            let held = HeldName::new(name);
            assert!(matches!(held, HeldName::Inline { .. }), "{name}");
            assert_eq!(held.as_str(), name);
        }
        for name in [&"x".repeat(23), &"é".repeat(32), &"東".repeat(32)] {
            let held = HeldName::new(name);
            assert!(matches!(held, HeldName::Boxed(_)), "{name}");
            assert_eq!(held.as_str(), name);
            assert_eq!(held.to_string(), *name);
        }
        assert_eq!(std::mem::size_of::<HeldName>(), 24);
    }

    #[test]
    fn confusables_collide() {
        // C1: Cyrillic а (U+0430) in "аlice"; also upper-case Cyrillic А against "alice".
        let mut r = NameRegistry::new();
        r.claim("alice", 1u64).unwrap();
        assert_eq!(r.check("\u{430}lice"), Err(Clash::Confusable(1)));
        assert_eq!(r.check("\u{410}LICE"), Err(Clash::Confusable(1)));
        // but a private message to the look-alike finds nobody
        assert_eq!(r.lookup("\u{430}lice"), None);
        // only the holder's release frees a name
        r.release_if("alice", 2);
        assert_eq!(r.check("ALICE"), Err(Clash::Taken(1)));
        // released names are free again
        r.release_if("alice", 1);
        assert!(r.check("\u{430}lice").is_ok());
        assert!(r.is_empty());
    }
}
