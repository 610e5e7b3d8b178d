//! natter on `smol`: the core's drivers on smol's reactor. A server runs its turn as one future
//! over a poller of every socket; a client is one task. No constant, limit or policy lives here.

mod client;
mod server;

pub use client::client;
pub use server::serve;
