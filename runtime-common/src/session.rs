//! The chat steps of a one-shot download, shared by both runtimes: join, ask, wait for the offer.

use natter_core::chat::client::{ChatClient, ClientEvent, Offer};

use crate::DownloadError;

/// Where a one-shot download stands in its chat conversation.
#[derive(Debug)]
pub struct GetSession {
    client: ChatClient,
    file: String,
    part_size: u16,
    joined: bool,
}

impl GetSession {
    pub fn new(name: &str, file: &str, part_size: u16) -> Self {
        Self {
            client: ChatClient::new(name),
            file: file.to_owned(),
            part_size,
            joined: false,
        }
    }

    /// The first bytes to send: the name line.
    pub fn hello(&self) -> Vec<u8> {
        self.client.hello()
    }

    /// Bytes from the server. Returns the bytes to send next (the download request, once joined)
    /// and the offer once it arrived.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(Vec<u8>, Option<Offer>), DownloadError> {
        self.client.handle_bytes(bytes);
        let mut reply = Vec::new();
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Joined(_) if !self.joined && self.client.is_joined() => {
                    self.joined = true;
                    reply.extend_from_slice(
                        format!("download_file {} {}\n", self.file, self.part_size).as_bytes(),
                    );
                }
                // The server's refusal, or an offer this client will not take (S3). A line it
                // could not read (say, a presence line of a kind it does not know) is no reason
                // to give up the download.
                ClientEvent::Error(reason) | ClientEvent::OfferRefused(reason) => {
                    return Err(DownloadError::Refused(reason));
                }
                ClientEvent::Offer(offer) if self.joined && offer.file == self.file => {
                    return Ok((reply, Some(offer)));
                }
                _ => {}
            }
        }
        Ok((reply, None))
    }

    /// The line that asks for the same file again with another part size (U5: the path dropped
    /// the larger parts). The next offer for the file comes out of [`GetSession::on_bytes`].
    pub fn ask_again(&mut self, part_size: u16) -> Vec<u8> {
        self.part_size = part_size;
        format!("download_file {} {}\n", self.file, part_size).into_bytes()
    }

    /// The line that says goodbye.
    pub fn quit() -> &'static [u8] {
        b"{quit}\n"
    }
}

/// What an interactive client says and sends when a download's large parts never arrive (U5):
/// the notice for the person and the line that asks for the file again with small parts.
pub fn retry_with_small_parts(file: &str) -> (String, Vec<u8>) {
    let part_size = natter_core::transfer::receiver::SAFE_PART_SIZE;
    (
        format!(
            "no part of {file} got through: the path drops large datagrams; asking again with {part_size}-byte parts"
        ),
        format!("download_file {file} {part_size}\n").into_bytes(),
    )
}

/// Adds the runtime's part size to a typed `download_file <file>` that names none, so a person on
/// loopback gets large parts without knowing about them.
pub fn with_part_size(typed: &str, part_size: u16) -> String {
    // A space left after the file name (a completion, a habit) is not an extra word.
    let mut words = typed.trim_end_matches(' ').split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("download_file"), Some(file), None) if !file.is_empty() => {
            format!("download_file {file} {part_size}")
        }
        _ => typed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::with_part_size;

    #[test]
    fn adds_a_part_size_only_where_none_is_given() {
        assert_eq!(
            with_part_size("download_file a.c", 65000),
            "download_file a.c 65000"
        );
        assert_eq!(
            with_part_size("download_file a.c 600", 65000),
            "download_file a.c 600"
        );
        assert_eq!(with_part_size("download_file", 65000), "download_file");
        assert_eq!(with_part_size("hello there", 65000), "hello there");
    }
}
