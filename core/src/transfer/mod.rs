//! The UDP download engine (PROTOCOL.md section 2).
//!
//! - [`sender::Sender`]: one transfer, server side. Validates (token, client IP, first source
//!   address, `req_seq` freshness, 256 parts / 2 MiB per request) and answers with
//!   [`sender::SenderOutput::SendPart`] orders that the runtime fulfils with `pread` +
//!   [`endpoint::PartOrder::seal`] (a CRC, or AES-256-GCM for a sealed transfer, PROTOCOL 2.7) +
//!   `sendto`.
//! - [`receiver::Receiver`]: one transfer, client side. The active end: a congestion-controlled,
//!   paced window of requested parts, RFC 9002 loss detection, resume, in-order BLAKE3.
//! - [`congestion`]: the controllers (delivery-rate BBR-like by default, NewReno, stop-and-wait).
//! - [`pacing`], [`rtt`], [`parts`]: the pieces the receiver is built from.
//!
//! Everything takes time as an argument; timers are `poll_timeout` / `handle_timeout`.
//!
//! Spec: `docs/PROTOCOL.md` [§2] (Downloads over UDP), chiefly [§2.2] (Datagrams: the server's
//! rules), [§2.3] (The client's side of a download), [§2.4] (Resume) and [§2.6] (Timeouts and how a
//! transfer ends).
//!
//! [§2]: ../../../docs/PROTOCOL.md#2-downloads-over-udp
//! [§2.2]: ../../../docs/PROTOCOL.md#22-datagrams
//! [§2.3]: ../../../docs/PROTOCOL.md#23-the-clients-side-of-a-download
//! [§2.4]: ../../../docs/PROTOCOL.md#24-resume
//! [§2.6]: ../../../docs/PROTOCOL.md#26-timeouts-and-how-a-transfer-ends
//!
//! Runtime loop, client side (every input and timeout is followed by the same drain):
//!
//! ```text
//! recv(buf)      -> if let Some(a) = rx.handle_datagram(now, &mut buf) { pwrite(a.offset, &buf[a.payload]) }
//!                   while let Some((off, len)) = rx.next_to_hash() { rx.hash(off, bytes_at(off, len)) }
//! timer fired    -> rx.handle_timeout(now)
//! then always    -> while let Some(n) = rx.poll_transmit(now, &mut out) { send(&out[..n]) }
//!                   while let Some(event) = rx.poll_event() { act on Complete, Failed, U5, Checkpoint }
//!                   arm a timer at rx.poll_timeout(); after Complete, keep the socket until
//!                   rx.is_finishing() is false (FINISHED has been sent)
//! ```

pub mod congestion;
pub mod endpoint;
pub mod pacing;
pub mod parts;
pub mod receiver;
pub mod rtt;
pub mod sender;

pub use congestion::ControllerKind;
pub use parts::ResumeError;
pub use receiver::{
    Accept, Progress, Receiver, ReceiverConfig, ReceiverEvent, ReceiverState, TransferError,
};
pub use sender::{Sender, SenderConfig, SenderEnd, SenderInput, SenderOutput};
