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
                ClientEvent::Error(reason)
                | ClientEvent::NameRefused(reason)
                | ClientEvent::OfferRefused(reason) => {
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

/// What a line typed into an interactive client amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// These bytes go to the server.
    Send(Vec<u8>),
    /// `{quit}`: say goodbye and stop.
    Quit,
    /// Not sendable; the reason is for the person.
    Invalid(String),
}

/// An interactive chat session as both runtimes drive it: typed lines in, wire lines out; server
/// bytes in, events out. It also counts the downloads asked for whose offer (or refusal) has not
/// come yet, so that a client whose input ends (a script piping lines in) waits for them.
#[derive(Debug)]
pub struct ChatSession {
    client: ChatClient,
    part_size: u16,
    awaiting_offers: usize,
}

impl ChatSession {
    pub fn new(name: &str, part_size: u16) -> Self {
        Self {
            client: ChatClient::new(name),
            part_size,
            awaiting_offers: 0,
        }
    }

    /// The first bytes to send: the name line.
    pub fn hello(&self) -> Vec<u8> {
        self.client.hello()
    }

    pub fn typed(&mut self, line: &str) -> Typed {
        if line.trim() == "{quit}" {
            return Typed::Quit;
        }
        match self.client.line_for(&with_part_size(line, self.part_size)) {
            Ok(bytes) => {
                // (A name never contains a space, so a name line never looks like this.)
                if bytes.starts_with(b"download_file ") {
                    self.awaiting_offers += 1;
                }
                Typed::Send(bytes)
            }
            Err(err) => Typed::Invalid(err.to_string()),
        }
    }

    /// Asks again for a file whose large parts never arrived (U5); the notice is for the person.
    pub fn retry_with_small_parts(&mut self, file: &str) -> (String, Vec<u8>) {
        self.awaiting_offers += 1;
        retry_with_small_parts(file)
    }

    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.client.handle_bytes(bytes);
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let event = self.client.poll_event()?;
        if matches!(
            event,
            ClientEvent::Offer(_) | ClientEvent::OfferRefused(_) | ClientEvent::Error(_)
        ) {
            // An ERROR may answer another request; counting it keeps a piped client from waiting
            // forever for an offer that was refused.
            self.awaiting_offers = self.awaiting_offers.saturating_sub(1);
        }
        Some(event)
    }

    pub fn awaiting_offers(&self) -> usize {
        self.awaiting_offers
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
