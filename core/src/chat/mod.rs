//! The chat half of the protocol (PROTOCOL.md section 1).
//!
//! [`server`] and [`client`] are the two state machines; [`names`], [`catalogue`], [`display`] and
//! [`flood`] are the pure rules they share with the runtimes.
//!
//! Spec: `docs/PROTOCOL.md` [§1] (Chat over TCP), and [§2.1] (The offer) for the reply to
//! `download_file`.
//!
//! [§1]: ../../../docs/PROTOCOL.md#1-chat-over-tcp
//! [§2.1]: ../../../docs/PROTOCOL.md#21-the-offer

pub mod catalogue;
pub mod client;
pub mod display;
pub mod flood;
pub mod names;
pub mod password;
pub mod server;
