//! natter on `mio`: one poll loop per server or client drives `natter-core` with real sockets.
//!
//! No protocol decisions live here: the loop reads what the kernel has, hands it to the core,
//! and performs what the core asks (write, close, bind a transfer port, send a part).

mod client;
mod server;

pub use client::client;
pub use server::serve;
