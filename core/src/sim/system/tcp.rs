//! The simulated chat connections: a byte stream each way with a one-way delay and a window,
//! the listener's backlog and accept back-off, the server's read rounds and writes, and what a
//! client does to its connection ([`ClientAction`]).

use core::net::SocketAddr;
use std::collections::VecDeque;
use std::time::Duration;

use super::udp::{conn_port, early_socket_id, udp_addr};
use super::{ClientAction, ClientInput, ConnReport, Ev, World};
use crate::chat::client::MAX_SERVER_LINE;
use crate::chat::server::ConnId;
use crate::driver::server::{Input, READ_CHUNK};
use crate::wire::line::{Framed, LineFramer};

/// How the client end of a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientSide {
    Open,
    /// A FIN follows once the pending bytes are out.
    Closing,
    Closed,
    Reset,
    Vanished,
}

/// How the client ended a connection, as the server's kernel learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerEnd {
    Fin,
    Reset,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) client: usize,
    /// Index into the client's `conns` report.
    pub(super) report: usize,
    pub(super) peer: SocketAddr,
    // Client side.
    pub(super) side: ClientSide,
    /// Bytes the client program wrote that do not fit the upload window yet.
    pub(super) c_pending: VecDeque<u8>,
    /// Bytes sent and not yet read by the server.
    pub(super) c_unacked: usize,
    pub(super) reading: bool,
    /// Bytes arrived at the client and not read.
    pub(super) c_rx: VecDeque<u8>,
    /// The server's FIN arrived (after every byte before it).
    pub(super) c_fin: bool,
    // Server side.
    pub(super) accepted: bool,
    pub(super) s_rx: VecDeque<u8>,
    pub(super) s_end: Option<PeerEnd>,
    pub(super) paused: bool,
    /// The driver forgot it (it closed it, or was told the peer closed).
    pub(super) gone: bool,
    /// Bytes written and not yet read by the client.
    pub(super) s_unacked: usize,
}

impl World {
    pub(super) fn accept_all(&mut self) {
        while self.accepting && !self.backlog.is_empty() {
            let now = self.now();
            if self.failing_accepts > 0 {
                self.failing_accepts -= 1;
                self.accepting = false;
                self.note(|| "[accept failed]".to_owned());
                self.driver.handle_input(now, Input::AcceptFailed);
                self.perform();
                return;
            }
            let Some(conn) = self.backlog.pop_front() else {
                return;
            };
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.accepted = true;
            let (peer, client) = (c.peer, c.client);
            self.driver.handle_input(now, Input::Accepted { conn, peer });
            if self.clients.get(client).is_some_and(|c| c.secure) {
                // What a TLS runtime does right after the accept (PROTOCOL 2.7).
                self.driver.set_secure(conn, true);
            }
            self.perform();
        }
    }

    /// One chunk from every readable connection per round, until none is readable (the mio
    /// adapter's `read_round`, run to quiescence: the simulated server has all the CPU it wants).
    pub(super) fn read_rounds(&mut self) {
        loop {
            let readable: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.accepted && !c.gone && !c.paused && (!c.s_rx.is_empty() || c.s_end.is_some())
                })
                .map(|(&id, _)| id)
                .collect();
            if readable.is_empty() {
                return;
            }
            for conn in readable {
                self.read_one(conn);
            }
        }
    }

    pub(super) fn read_one(&mut self, conn: ConnId) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.gone || c.paused {
            return;
        }
        if c.s_rx.is_empty() {
            if c.s_end.is_some() {
                c.gone = true;
                self.driver.handle_input(now, Input::PeerClosed { conn });
                self.perform();
            }
            return;
        }
        let n = c.s_rx.len().min(READ_CHUNK);
        let bytes: Vec<u8> = c.s_rx.drain(..n).collect();
        let (client, report) = (c.client, c.report);
        if let Some(r) = self.clients[client].report.conns.get_mut(report) {
            r.server_reads.push((Duration::from_nanos(self.now_ns), n));
        }
        self.schedule_tcp(Ev::AckToClient { conn, n });
        self.driver.handle_input(now, Input::Received { conn, bytes: &bytes });
        self.perform();
    }

    /// Writes what `conn` is owed into its socket, as far as the window allows.
    pub(super) fn flush(&mut self, conn: ConnId) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.gone {
            return;
        }
        if c.s_end == Some(PeerEnd::Reset) {
            // The write fails: the connection was reset.
            c.gone = true;
            self.driver.handle_input(now, Input::PeerClosed { conn });
            return;
        }
        let window = self.tcp.window;
        while self.driver.has_unsent(conn) {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let room = window.saturating_sub(c.s_unacked);
            if room == 0 {
                return;
            }
            let mut bytes = Vec::new();
            for b in self.driver.unsent(conn) {
                let take = b.len().min(room - bytes.len());
                bytes.extend_from_slice(&b[..take]);
                if bytes.len() == room {
                    break;
                }
            }
            if bytes.is_empty() {
                return;
            }
            c.s_unacked += bytes.len();
            let len = bytes.len();
            self.schedule_tcp(Ev::ToClient { conn, bytes });
            self.driver.handle_input(now, Input::Written { conn, len });
        }
    }

    pub(super) fn client_action(&mut self, client: usize, action: ClientAction) {
        let label = self.clients[client].label.clone();
        if matches!(
            action,
            ClientAction::Reset
                | ClientAction::Close
                | ClientAction::Vanish
                | ClientAction::Connect
        ) && !self.clients[client].sent_partial.is_empty()
        {
            let partial = std::mem::take(&mut self.clients[client].sent_partial);
            let text = String::from_utf8_lossy(&partial).into_owned();
            self.note(|| format!("{label} -> {text} [no newline]"));
        }
        let conn = self.clients[client].conn;
        match action {
            ClientAction::Connect => {
                let id = self.next_conn;
                self.next_conn += 1;
                let c = &mut self.clients[client];
                let peer = SocketAddr::new(c.ip, conn_port(id));
                c.report.conns.push(ConnReport {
                    conn: id,
                    opened_at: Duration::from_nanos(self.now_ns),
                    ..ConnReport::default()
                });
                let report = c.report.conns.len() - 1;
                c.conn = Some(id);
                c.framer = LineFramer::with_limit(MAX_SERVER_LINE);
                c.sent_partial.clear();
                self.conns.insert(
                    id,
                    Conn {
                        client,
                        report,
                        peer,
                        side: ClientSide::Open,
                        c_pending: VecDeque::new(),
                        c_unacked: 0,
                        reading: true,
                        c_rx: VecDeque::new(),
                        c_fin: false,
                        accepted: false,
                        s_rx: VecDeque::new(),
                        s_end: None,
                        paused: false,
                        gone: false,
                        s_unacked: 0,
                    },
                );
                self.note(|| format!("{label} [connect]"));
                self.schedule_tcp(Ev::Syn { conn: id });
                self.bind_early_socket(client, id, peer);
            }
            ClientAction::Send(bytes) => {
                self.record_sent(client, &bytes);
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn)
                    && c.side == ClientSide::Open
                {
                    c.c_pending.extend(bytes);
                }
                self.pump(conn);
            }
            ClientAction::StopReading => {
                if let Some(c) = conn.and_then(|id| self.conns.get_mut(&id)) {
                    c.reading = false;
                }
                self.note(|| format!("{label} [stops reading]"));
            }
            ClientAction::ResumeReading => {
                if let Some(c) = conn.and_then(|id| self.conns.get_mut(&id)) {
                    c.reading = true;
                }
                self.note(|| format!("{label} [reads again]"));
                if let Some(conn) = conn {
                    self.deliver(conn);
                }
            }
            ClientAction::Reset => {
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.side = ClientSide::Reset;
                    c.c_pending.clear();
                    c.reading = false;
                }
                self.clients[client].conn = None;
                self.drop_early_socket(client);
                self.note(|| format!("{label} [reset]"));
                self.schedule_tcp(Ev::EndToServer { conn, end: PeerEnd::Reset });
            }
            ClientAction::Close => {
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.side = ClientSide::Closing;
                }
                self.clients[client].conn = None;
                self.drop_early_socket(client);
                self.note(|| format!("{label} [close]"));
                self.pump(conn);
            }
            ClientAction::Vanish => {
                let Some(conn) = conn else { return };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.side = ClientSide::Vanished;
                    c.c_pending.clear();
                    c.reading = false;
                }
                self.clients[client].conn = None;
                self.drop_early_socket(client);
                self.note(|| format!("{label} [vanishes: half-open]"));
            }
            ClientAction::Note(text) => self.note(|| format!("{label} [{text}]")),
            ClientAction::OpenDownload { id, port } => {
                let c = &mut self.clients[client];
                c.downloads.insert(id, port);
                let addr = udp_addr(c.ip, id);
                self.routes.insert(addr, (client, id));
            }
            ClientAction::CloseDownload { id } => {
                let c = &mut self.clients[client];
                c.downloads.remove(&id);
                let addr = udp_addr(c.ip, id);
                self.routes.remove(&addr);
            }
        }
    }

    /// Binds the early-flight socket of a new chat connection `conn` (PROTOCOL 2.1) on the
    /// connection's own address, `peer` as the server sees it, and tells the client.
    fn bind_early_socket(&mut self, client: usize, conn: ConnId, peer: SocketAddr) {
        self.drop_early_socket(client);
        let id = early_socket_id(conn);
        let c = &mut self.clients[client];
        c.early = Some(id);
        self.routes.insert(peer, (client, id));
        let now = self.now();
        let handshake = self.tcp.delay * 2;
        let c = &mut self.clients[client];
        let connected = ClientInput::Connected { early_socket: id, local: peer, handshake };
        c.client.handle_input(now, connected);
        c.dirty = true;
    }

    /// Closes the client's early-flight socket: the connection it was bound for is over.
    fn drop_early_socket(&mut self, client: usize) {
        let c = &mut self.clients[client];
        if let Some(id) = c.early.take() {
            self.routes.remove(&udp_addr(c.ip, id));
        }
    }

    pub(super) fn record_sent(&mut self, client: usize, bytes: &[u8]) {
        let at = self.elapsed();
        let c = &mut self.clients[client];
        c.sent_partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(nl) = c.sent_partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = c.sent_partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..nl]).into_owned();
            c.report.sent.push((at, text.clone()));
            lines.push(text);
        }
        if self.timeline.is_some() {
            let label = c.label.clone();
            for line in lines {
                self.note(|| format!("{label} -> {line}"));
            }
        }
    }

    /// Moves the client's pending bytes into the network as far as the upload window allows.
    pub(super) fn pump(&mut self, conn: ConnId) {
        let window = self.tcp.upload_window;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !matches!(c.side, ClientSide::Open | ClientSide::Closing) {
            return;
        }
        let n = window.saturating_sub(c.c_unacked).min(c.c_pending.len());
        let bytes: Vec<u8> = c.c_pending.drain(..n).collect();
        c.c_unacked += n;
        let fin = c.side == ClientSide::Closing && c.c_pending.is_empty();
        if fin {
            c.side = ClientSide::Closed;
            c.reading = false;
        }
        if n > 0 {
            self.schedule_tcp(Ev::ToServer { conn, bytes });
        }
        if fin {
            self.schedule_tcp(Ev::EndToServer { conn, end: PeerEnd::Fin });
        }
    }

    /// The client reads what arrived, if it reads.
    pub(super) fn deliver(&mut self, conn: ConnId) {
        let now = self.now();
        let at = self.elapsed();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.reading || !matches!(c.side, ClientSide::Open | ClientSide::Closing) {
            return;
        }
        let client = c.client;
        let report = c.report;
        if !c.c_rx.is_empty() {
            let bytes: Vec<u8> = c.c_rx.drain(..).collect();
            let n = bytes.len();
            self.schedule_tcp(Ev::AckToServer { conn, n });
            let cs = &mut self.clients[client];
            cs.client.handle_input(now, ClientInput::Received(&bytes));
            cs.dirty = true;
            cs.framer.push(&bytes);
            let mut lines = Vec::new();
            while let Some(framed) = cs.framer.next() {
                let line = match framed {
                    Framed::Line(l) => l,
                    Framed::TooLong => "<line too long>".to_owned(),
                    Framed::InvalidUtf8 => "<invalid UTF-8>".to_owned(),
                };
                cs.report.received.push((at, line.clone()));
                lines.push(line);
            }
            if self.timeline.is_some() {
                let label = self.clients[client].label.clone();
                for line in lines {
                    self.note(|| format!("{label} <- {line}"));
                }
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.c_fin && c.c_rx.is_empty() {
            c.c_fin = false;
            c.side = ClientSide::Closed;
            let cs = &mut self.clients[client];
            if let Some(r) = cs.report.conns.get_mut(report) {
                r.end_read = Some(at);
            }
            if cs.conn == Some(conn) {
                cs.conn = None;
            }
            cs.client.handle_input(now, ClientInput::ConnectionEnded);
            cs.dirty = true;
            let label = cs.label.clone();
            self.note(|| format!("{label} [connection closed by the server]"));
        }
    }
}
