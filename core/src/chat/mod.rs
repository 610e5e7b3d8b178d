//! The chat half of the protocol (PROTOCOL.md section 1).

pub mod catalogue;
pub mod client;
pub mod display;
pub mod flood;
pub mod names;
pub mod server;
