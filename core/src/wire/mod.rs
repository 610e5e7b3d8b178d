//! Bytes to typed values and back, one module per framing.
//!
//! [`line`](mod@line) frames the TCP byte stream into lines, [`chat`] gives those lines their
//! meaning and [`datagram`] lays out the UDP datagrams of a download; [`sealed`] is their encrypted
//! form (version 3) for a transfer whose offer carried a key. Nothing here keeps protocol state.
//!
//! Spec: `docs/PROTOCOL.md` [§0] (Conventions), [§1.2] and [§1.3] (chat lines), [§2.2] (Datagrams),
//! [§2.7] (Sealed datagrams).
//!
//! [§0]: ../../../docs/PROTOCOL.md#0-conventions
//! [§1.2]: ../../../docs/PROTOCOL.md#12-what-a-client-sends
//! [§1.3]: ../../../docs/PROTOCOL.md#13-what-the-server-sends
//! [§2.2]: ../../../docs/PROTOCOL.md#22-datagrams
//! [§2.7]: ../../../docs/PROTOCOL.md#27-sealed-datagrams

pub mod chat;
pub mod datagram;
pub mod line;
pub mod sealed;
