//! Performs the server driver's outputs the way the real adapters do: writes, closes, read
//! pauses, accepting again, and the transfer endpoint's file work (serve, check, transmit parts
//! sealed from the folder as it is now).

use super::{Ev, World};
use crate::chat::catalogue::FileKey;
use crate::driver::server::{Input, Output};
use crate::transfer::endpoint::Transmit;

/// What a port serves: the file and its identity when opened.
#[derive(Debug)]
pub(super) struct Serving {
    pub(super) file: String,
    pub(super) key: FileKey,
}

impl World {
    /// Performs the driver's outputs until it asks nothing more.
    pub(super) fn perform(&mut self) {
        while let Some(output) = self.driver.poll_output() {
            let now = self.now();
            match output {
                Output::Write { conn } => self.flush(conn),
                Output::Close { conn } => {
                    let at = self.elapsed();
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.gone = true;
                        c.paused = false;
                        let (client, report) = (c.client, c.report);
                        if let Some(r) = self.clients[client].report.conns.get_mut(report) {
                            r.closed_by_server.get_or_insert(at);
                        }
                        self.schedule_tcp(Ev::FinToClient { conn });
                    }
                }
                Output::PauseReading { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if !c.paused {
                            let (client, report) = (c.client, c.report);
                            if let Some(r) = self.clients[client].report.conns.get_mut(report) {
                                r.pauses += 1;
                            }
                        }
                        c.paused = true;
                    }
                }
                Output::ResumeReading { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.paused = false;
                    }
                }
                Output::AcceptAgain => {
                    self.accepting = true;
                    self.accept_all();
                }
                Output::Serve { port, file, identity, .. } => {
                    let key = self.folder.get(&file).map(|f| f.key);
                    match key.filter(|k| Some(*k) == identity) {
                        Some(key) => {
                            self.serving.insert(port, Serving { file, key });
                        }
                        None => {
                            self.serving.remove(&port);
                            self.driver.handle_input(now, Input::FileChanged { port });
                        }
                    }
                }
                Output::CheckFile { port } => {
                    let same = self
                        .serving
                        .get(&port)
                        .is_some_and(|s| self.folder.get(&s.file).is_some_and(|f| f.key == s.key));
                    if !same {
                        self.serving.remove(&port);
                        self.driver.handle_input(now, Input::FileChanged { port });
                    }
                }
                Output::StopServing { port } => {
                    self.serving.remove(&port);
                }
                Output::Transmit { port } => self.transmit(port),
                // A lone server: the cluster runs in `sim::cluster`.
                Output::Cluster(_) => {}
                // The simulated server has no allocator of its own to trim.
                Output::ReleaseMemory => {}
                Output::Log(event) => {
                    let at = self.elapsed();
                    self.note(|| format!("[log] {event}"));
                    self.log.push((at, event));
                }
            }
        }
    }

    /// Sends every datagram due on `port`, reading parts from the folder as they are now.
    pub(super) fn transmit(&mut self, port: u16) {
        let now = self.now();
        while let Some(transmit) = self.driver.poll_transmit(now, port) {
            match transmit {
                Transmit::Part(order) => {
                    let (offset, len) = (order.offset, order.len);
                    let content = self
                        .serving
                        .get(&port)
                        .and_then(|s| self.folder.get(&s.file))
                        .map(|f| &f.content);
                    let at = usize::try_from(offset).unwrap_or(usize::MAX);
                    let Some(payload) = content.and_then(|c| c.get(at..at.saturating_add(len)))
                    else {
                        // Shorter than offered, or not open: it changed under us (U7).
                        self.serving.remove(&port);
                        self.driver.handle_input(now, Input::FileChanged { port });
                        continue;
                    };
                    let mut buf = std::mem::take(&mut self.buf);
                    if buf.len() < order.datagram_len() {
                        buf.resize(order.datagram_len(), 0);
                    }
                    buf[order.payload()].copy_from_slice(payload);
                    let n = order.seal(&mut buf);
                    self.send_down(port, order.to, &buf[..n]);
                    self.buf = buf;
                }
                Transmit::Datagram { to, bytes } => self.send_down(port, to, &bytes),
            }
        }
    }
}
