//! Bytes to typed values and back, one module per framing.

pub mod chat;
pub mod datagram;
pub mod line;
