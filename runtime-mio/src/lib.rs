//! natter on `mio`: one poll loop per server or client drives `natter-core` with real sockets.
//!
//! No constant, limit or policy of the protocol lives here: the loop reads what the kernel has,
//! feeds it to the core's server or client driver, and performs what the driver asks.

mod client;
mod server;

pub use client::client;
pub use server::serve;
