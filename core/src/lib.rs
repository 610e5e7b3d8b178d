//! natter-core: the whole natter protocol as pure state machines (sans-IO).
//!
//! Nothing in this crate touches a socket, a file, a clock, a thread or the OS random source.
//! Time comes in as an [`std::time::Instant`] argument, bytes come in as inputs, and what must be
//! done to the world goes out as outputs that a runtime performs. The wire contract is
//! `docs/PROTOCOL.md` (its section 6 says which module implements each rule); the two
//! [`driver`]s own the state machines together and are what a runtime runs.

#![warn(missing_docs)]

pub mod chat;
pub mod client_model;
pub mod cluster;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod impair;
pub mod sim;
pub mod transfer;
pub mod wire;
