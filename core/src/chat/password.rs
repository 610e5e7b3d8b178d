//! The room password: a secret that is never printed, compared in constant time.
//!
//! Spec: `docs/PROTOCOL.md` [§1.6] (TLS, pinning and the room password).
//!
//! [§1.6]: ../../../docs/PROTOCOL.md#16-tls-pinning-and-the-room-password

use std::fmt;

/// A room password. Its `Debug` form hides it, so that no log line or error can print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A password; surrounding whitespace (a file's final newline) is not part of it.
    pub fn new(text: &str) -> Self {
        Self(text.trim().to_owned())
    }

    /// The password as it is sent (only the client's `PASS` line needs it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this password, in time that depends on neither: both are hashed
    /// (BLAKE3) and the digests compared in constant time, so neither a length nor a matching
    /// prefix shows in how long the answer takes.
    pub fn matches(&self, given: &str) -> bool {
        // blake3::Hash's equality is constant-time.
        blake3::hash(self.0.as_bytes()) == blake3::hash(given.as_bytes())
    }

    /// Whether it is empty (no password at all).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // PROTOCOL 1.6: the password is matched whole, never printed.
    #[test]
    fn matches_only_the_whole_password_and_never_prints_it() {
        let p = Password::new("correct horse\n");
        assert!(p.matches("correct horse"));
        assert!(!p.matches("correct hors"));
        assert!(!p.matches("correct horse "));
        assert!(!p.matches(""));
        assert!(!format!("{p:?}").contains("horse"));
    }
}
