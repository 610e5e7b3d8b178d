//! What both runtimes do to the file system, in one place.
//!
//! The core decides (which names are on offer, where a part goes, what the final name is); this
//! crate performs the blocking syscalls those decisions need, so `natter-runtime-mio` and
//! `natter-runtime-smol` differ only in how they wait for sockets and timers, never in what they do
//! to files. Everything here is synchronous: reads and writes hit the page cache and take
//! microseconds, and hashing a newly seen file happens once per file identity (see
//! [`natter_core::chat::catalogue::DigestCache`]).

pub mod client;
pub mod cluster;
pub mod download;
pub mod folder;
pub mod impair;
pub mod log;
pub mod memory;
pub mod net;
pub mod options;
pub mod serve;
pub mod served;
pub mod session;
pub mod tls;
pub mod turn;
pub mod ui;

pub use client::{ClientError, ClientIo, DownloadError, Lines, ProgressUi, RunClient, Sockets};
pub use download::DownloadFiles;
pub use folder::{ScannedFolder, initial_scan, scan_folder, watch_folder};
pub use natter_core::driver::client::{DownloadFailure, DownloadReport};
pub use options::{ClientOptions, DownloadOptions, Runtime, ServerOptions, default_part_size};
pub use serve::ServedFiles;
pub use served::ServedFile;
pub use session::{Session, SessionRunner};
pub use ui::ClientUi;
