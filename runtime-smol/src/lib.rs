//! natter on `smol`: the core's drivers on a single-threaded executor. A server runs reader and
//! writer tasks per connection, receive and transmit tasks per port and a timer task, around a hub
//! that owns the server driver; a client is one task. No constant, limit or policy lives here.

mod client;
mod server;

pub use client::client;
pub use server::serve;
