//! The UDP download engine (PROTOCOL.md section 2).

pub mod congestion;
pub mod pacing;
pub mod parts;
pub mod receiver;
pub mod rtt;
pub mod sender;
