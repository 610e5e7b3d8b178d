//! natter-core: the whole natter protocol as pure state machines (sans-IO).
//!
//! Nothing in this crate touches a socket, a file, a clock, a thread or the OS random source.
//! Time comes in as an [`std::time::Instant`] argument, bytes come in as inputs, and what must be
//! done to the world goes out as outputs that a runtime performs. See `../shared/PROTOCOL.md` for
//! the wire contract and `ARCHITECTURE.md` for the seams.

pub mod chat;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod sim;
pub mod transfer;
pub mod wire;
