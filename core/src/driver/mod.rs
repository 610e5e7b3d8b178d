//! Drivers: the sans-IO owners of a whole server or a whole client.
//!
//! The state machines of [`crate::chat`] and [`crate::transfer`] are small on purpose; a driver
//! owns them together with everything a program decides around them, so that an event loop only
//! waits, reads, feeds and performs:
//!
//! - [`server::ServerDriver`]: the [`crate::chat::server::ChatServer`], the transfer endpoint
//!   (every [`crate::transfer::Sender`] by port), each connection's outbox, the read pauses of
//!   flood protection, the close grace and the accept back-off.
//! - [`client::ClientDriver`]: the [`crate::chat::client::ChatClient`], its downloads
//!   ([`crate::transfer::Receiver`]s), which reply answers which request, the `{quit}` grace, the
//!   small-part fallback (U5), resume and the keep-or-discard rule, and `natter get`'s auto-quit.
//!
//! Both speak the same four verbs as every state machine in this crate: `handle_input(now,
//! input)`, `poll_output()`, `poll_timeout()` and `handle_timeout(now)`. Their outputs are I/O
//! operations (write to this connection, send on this port, read these bytes of this file, save
//! this record, rename, close), which a runtime performs with whatever event loop it has. The
//! file work that is the same on every runtime lives once, in `natter-runtime-common`.
//!
//! See `docs/PROTOCOL.md` for which rule of the protocol lives where.
//!
//! Spec: `docs/PROTOCOL.md` [§6] (Who implements what: the policies a driver owns) and [§4]
//! (Behaviour a client can rely on).
//!
//! [§6]: ../../../docs/PROTOCOL.md#6-who-implements-what
//! [§4]: ../../../docs/PROTOCOL.md#4-behaviour-a-client-can-rely-on

pub mod client;
mod client_tls;
mod outbox;
pub mod server;
mod tls;
