//! natter on `smol`: the same core, driven by tasks on a single-threaded executor.
//!
//! Each connection has a reader and a writer task, each transfer port a task, and one timer task;
//! they meet in a shared hub that owns the chat core. No protocol decisions live here.

mod client;
mod server;

pub use client::client;
pub use server::serve;
