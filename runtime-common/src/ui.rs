//! What an interactive client shows a person; the binary implements it, the runtimes call it.

use natter_core::chat::client::ClientEvent;
use natter_core::transfer::receiver::Progress;

use crate::{DownloadError, DownloadReport};

/// Not `Send`: the runtimes call it on the thread that runs the client.
pub trait ClientUi {
    /// A line from the server, parsed.
    fn event(&mut self, event: &ClientEvent);
    /// A download moved on (called a few times a second at most).
    fn progress(&mut self, file: &str, progress: &Progress);
    /// A download ended.
    fn download_done(&mut self, file: &str, result: &Result<DownloadReport, DownloadError>);
    /// Something the client did on its own that the person should know about.
    fn notice(&mut self, text: &str);
    /// The connection to the server ended.
    fn disconnected(&mut self, reason: &str);
}
