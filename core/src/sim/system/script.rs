//! A scripted client for the system simulator: timed steps on the chat connection (connect, send
//! a line or raw bytes, stop reading, reset, close, vanish), byte for byte as written.
//!
//! It is the tool for what a well-behaved client never does: half lines, floods, resets,
//! half-open connections, never reading. It does not download: downloads are the client
//! driver's, run by [`super::driven::DrivenClient`].

use core::net::SocketAddr;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{ClientAction, ClientInput, SimClient};

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Open a chat connection.
    Connect,
    /// Send this text as one line (the `\n` is added).
    Line(String),
    /// Send these bytes as they are (half a line, many lines at once).
    Raw(Vec<u8>),
    /// Stop reading the connection.
    StopReading,
    /// Read it again.
    ResumeReading,
    /// Reset the connection.
    Reset,
    /// Close it (FIN).
    Close,
    /// Vanish: half-open TCP.
    Vanish,
}

/// A client following a timed script. See the module documentation.
#[derive(Debug, Default)]
pub struct ScriptedClient {
    script: VecDeque<(Duration, Step)>,
    base: Option<Instant>,
    actions: VecDeque<ClientAction>,
}

impl ScriptedClient {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client that connects at `at` and sends `name` as its first line.
    pub fn joining(at: Duration, name: &str) -> Self {
        Self::new().at(at, Step::Connect).at(at, Step::Line(name.to_owned()))
    }

    /// Adds `step` at `at` after the start (steps at the same time run in the order added).
    pub fn at(mut self, at: Duration, step: Step) -> Self {
        let i = self.script.partition_point(|(t, _)| *t <= at);
        self.script.insert(i, (at, step));
        self
    }

    /// Adds a line `text` at `at`.
    pub fn line(self, at: Duration, text: impl Into<String>) -> Self {
        self.at(at, Step::Line(text.into()))
    }

    fn step(&mut self, step: Step) {
        let action = match step {
            Step::Connect => ClientAction::Connect,
            Step::Line(text) => {
                let mut bytes = text.into_bytes();
                bytes.push(b'\n');
                ClientAction::Send(bytes)
            }
            Step::Raw(bytes) => ClientAction::Send(bytes),
            Step::StopReading => ClientAction::StopReading,
            Step::ResumeReading => ClientAction::ResumeReading,
            Step::Reset => ClientAction::Reset,
            Step::Close => ClientAction::Close,
            Step::Vanish => ClientAction::Vanish,
        };
        self.actions.push_back(action);
    }
}

impl SimClient for ScriptedClient {
    fn start(&mut self, now: Instant) {
        self.base = Some(now);
    }

    fn handle_input(&mut self, _now: Instant, _input: ClientInput<'_>) {}

    fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.base.zip(self.script.front()).map(|(base, (at, _))| base + *at)
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(base) = self.base {
            match self.script.front() {
                Some((at, _)) if base + *at <= now => {}
                _ => break,
            }
            if let Some((_, step)) = self.script.pop_front() {
                self.step(step);
            }
        }
    }

    fn handle_datagram(&mut self, _: Instant, _: u64, _: SocketAddr, _: &mut [u8]) {}

    fn poll_transmit(&mut self, _now: Instant, _buf: &mut [u8]) -> Option<(u64, usize)> {
        None
    }
}
