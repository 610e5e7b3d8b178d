//! The link to the cluster's broker (Redis), the same for every runtime: two threads with
//! blocking connections that perform the server driver's [`ClusterCommand`]s and report
//! [`ClusterEvent`]s (PROTOCOL.md section 8). The core decides everything; this only moves bytes.
//!
//! Why threads and blocking clients: the driver lives on one runtime thread (mio or smol), and
//! the broker's answers must reach it however that thread waits. Both runtimes already have a way
//! to be woken from another thread with a value (the folder watcher uses it); the cluster uses the
//! same `deliver` function, so each runtime needed no new code but the type of that value.
//!
//! Why two connections: a stream read blocks (`XREAD BLOCK`) while commands must go out at once.
//! - The **writer** owns the link's state: it connects with back-off, says [`ClusterEvent::Up`],
//!   and sends every batch of commands waiting as one pipeline (one round trip for a turn's worth
//!   of messages). When a batch fails it says [`ClusterEvent::Down`], drops what was queued (the
//!   core already counts it lost, 8.5) and reconnects.
//! - The **reader** reads the room's stream from the last id it saw, forever: after its own link
//!   fails it goes on from that id, so no entry is delivered twice and none the broker still holds
//!   is skipped. Its first id is the stream's end when the writer first connected, taken before
//!   the node's first `hello`, so the others' answers to it are read.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use bytes::Bytes;
use natter_core::chat::password::Password;
use natter_core::cluster::{ClusterCommand, ClusterEvent, ROOM_STREAM, STREAM_KEEP, parse_epoch};
use redis::{
    Client, ClientTlsConfig, Connection, ConnectionInfo, IntoConnectionInfo, TlsCertificates, Value,
};

/// The first wait before connecting again; doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a connect or a command may take before the link counts as down.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the writer waits for the answers to one pipeline before the link counts as down.
/// Longer than [`IO_TIMEOUT`]: a pipeline of [`BATCH`] claims is more work for the broker than one
/// command, and a slow answer is better than a split. Without it, a broker or path that went
/// silent (a dropped route, a frozen host) stalled the writer forever instead of splitting the
/// room.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one stream read blocks in the broker before it is asked again (and `stop` looked at).
const READ_BLOCK_MS: u64 = 500;
/// The most entries one stream read takes.
const READ_COUNT: usize = 512;
/// The most commands in one pipeline.
const BATCH: usize = 1024;

/// Claim or renew a name atomically: set it if free or already ours, else say who holds it.
const CLAIM: &str = "local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
return v";

/// Release a name only if it is still ours (another node may hold it after a split).
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Where the server driver's cluster commands go: to the writer thread.
#[derive(Debug)]
pub struct ClusterLink {
    commands: Sender<ClusterCommand>,
}

impl ClusterLink {
    /// Hands a command to the writer thread (dropped if the thread is gone: the link is down).
    pub fn send(&self, command: ClusterCommand) {
        let _ = self.commands.send(command);
    }
}

/// Where the cluster's broker is and how this node proves itself to it and trusts it
/// (PROTOCOL.md 8.2). Its `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Broker {
    /// `redis://[[user]:password@]host:port[/db]`, or `rediss://...` for TLS. A password or user
    /// holding `@ : / % ? #` is percent-encoded, as in any URL.
    pub url: String,
    /// PEM certificates of the CAs that may sign the broker's certificate, instead of the
    /// built-in web roots: a private CA (`rediss://` only).
    pub ca: Option<PathBuf>,
    /// A PEM client certificate chain and its key, for a broker that asks for one
    /// (`tls-auth-clients yes`; `rediss://` only).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The AUTH password, when it comes from a file (`--cluster-password-file`) rather than from
    /// `url`, where `ps` and a shell's history would show it. It replaces any password in `url`;
    /// a user name stays in `url` (`redis://natter@host:6379`).
    pub password: Option<Password>,
}

impl Broker {
    /// A broker at `url`, trusted through the built-in roots when it speaks TLS.
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned(), ..Self::default() }
    }

    /// The address as it may be printed: the password replaced by `***`.
    pub fn shown(&self) -> String {
        redact_url(&self.url)
    }

    /// The Redis client for this broker; every error says what is wrong without the password.
    fn client(&self) -> io::Result<Client> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let info = self
            .connection_info()
            .map_err(|e| bad(format!("bad broker address {}: {}", self.shown(), self.scrub(&e))))?;
        let client = if self.ca.is_none() && self.client_cert.is_none() {
            Client::open(info)
        } else {
            if !self.url.starts_with("rediss://") {
                return Err(bad(format!(
                    "broker {}: a CA or client certificate needs a rediss:// (TLS) address",
                    self.shown()
                )));
            }
            let read = |what: &str, path: &PathBuf| {
                std::fs::read(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot read the {what} {}: {e}", path.display()),
                    )
                })
            };
            let root_cert = self.ca.as_ref().map(|ca| read("broker CA", ca)).transpose()?;
            let client_tls = match &self.client_cert {
                Some((cert, key)) => Some(ClientTlsConfig {
                    client_cert: read("broker client certificate", cert)?,
                    client_key: read("broker client key", key)?,
                }),
                None => None,
            };
            Client::build_with_tls(info, TlsCertificates { client_tls, root_cert })
        };
        client.map_err(|e| bad(format!("bad broker address {}: {}", self.shown(), self.scrub(&e))))
    }

    /// `url` as the redis client takes it, with the password of the file, if any.
    fn connection_info(&self) -> redis::RedisResult<ConnectionInfo> {
        let mut info = self.url.as_str().into_connection_info()?;
        if let Some(password) = &self.password {
            info.redis.password = Some(password.expose().to_owned());
        }
        Ok(info)
    }

    /// `err` as text, with the password (as written and as decoded, from the URL or the file)
    /// replaced by `***`, in case an error ever quotes it.
    fn scrub(&self, err: &dyn std::fmt::Display) -> String {
        let mut text = err.to_string();
        let decoded = self.url.as_str().into_connection_info().ok().and_then(|i| i.redis.password);
        let from_file = self.password.as_ref().map(|p| p.expose().to_owned());
        let written = password_in(&self.url).map(str::to_owned);
        for secret in [written, decoded, from_file].into_iter().flatten() {
            if !secret.is_empty() {
                text = text.replace(&secret, "***");
            }
        }
        text
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.shown())
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Where the password of a broker URL lies: after the first `:` of what comes between `://` and
/// the last `@` (a password may hold an unencoded `@` or `/`, so the last `@` ends it).
fn password_span(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let at = start + url[start..].rfind('@')?;
    let colon = start + url[start..at].find(':')?;
    Some(colon + 1..at)
}

fn password_in(url: &str) -> Option<&str> {
    password_span(url).map(|span| &url[span])
}

/// `url` with its password, if any, replaced by `***` (the user name is kept: it says which
/// ACL user was tried).
pub fn redact_url(url: &str) -> String {
    match password_span(url) {
        Some(span) => format!("{}***{}", &url[..span.start], &url[span.end..]),
        None => url.to_owned(),
    }
}

/// Starts the two threads for `broker`. Events go to `deliver` until it returns `false` or
/// `stop` is set.
pub fn start<D>(broker: &Broker, deliver: D, stop: Arc<AtomicBool>) -> io::Result<ClusterLink>
where
    D: FnMut(ClusterEvent) -> bool + Send + Clone + 'static,
{
    let client = broker.client()?;
    let (commands, queue) = mpsc::channel();
    let (start_at, first_id) = mpsc::channel();
    let reader = Reader {
        client: client.clone(),
        broker: broker.clone(),
        deliver: deliver.clone(),
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name("natter-cluster-read".into())
        .spawn(move || reader.run(first_id))?;
    let writer =
        Writer { client, broker: broker.clone(), deliver, stop, queue, start_at: Some(start_at) };
    std::thread::Builder::new().name("natter-cluster-write".into()).spawn(move || writer.run())?;
    Ok(ClusterLink { commands })
}

/// Sleeps `wait` in small steps; `false` when `stop` was set meanwhile.
fn nap(wait: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(50);
    let mut left = wait;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(left.min(step));
        left = left.saturating_sub(step);
    }
    !stop.load(Ordering::Relaxed)
}

/// A connection that answered a `PING`: the TLS handshake, AUTH and the broker's own checks
/// (a broker that wants a password and got none answers `NOAUTH`) all passed, so the link is up.
fn connect(client: &Client) -> redis::RedisResult<Connection> {
    let mut con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    redis::cmd("PING").query::<()>(&mut con)?;
    con.set_read_timeout(Some(PIPELINE_TIMEOUT))?;
    Ok(con)
}

/// Why the broker could not be reached, as the operator needs it: a refused password is said
/// to be one (it will not fix itself by waiting, unlike a broker that is down).
fn why_unreachable(err: &redis::RedisError) -> &'static str {
    let refused = err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
    if refused {
        "the broker refused this node's user or password"
    } else {
        "cannot reach the broker"
    }
}

struct Writer<D> {
    client: Client,
    /// For the log: the address (without its password) and the scrubbing of errors.
    broker: Broker,
    deliver: D,
    stop: Arc<AtomicBool>,
    queue: Receiver<ClusterCommand>,
    /// Where the reader starts, sent on the first connection only.
    start_at: Option<Sender<String>>,
}

impl<D: FnMut(ClusterEvent) -> bool> Writer<D> {
    fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        // The node was told the link is down, and the last reason logged in this outage: a
        // reason is logged once, and again only when it changes (a broker that came back with
        // another password), not at every attempt.
        let mut told_down = false;
        let mut told_why = None;
        while !self.stop.load(Ordering::Relaxed) {
            let mut con = match connect(&self.client) {
                Ok(con) => con,
                Err(err) => {
                    let why = why_unreachable(&err);
                    if told_why != Some(why) {
                        let (address, err) = (self.broker.shown(), self.broker.scrub(&err));
                        tracing::warn!(
                            "cluster: {why} at {address} ({err}); the room is split, retrying"
                        );
                        told_why = Some(why);
                    }
                    if !told_down {
                        told_down = true;
                        if !(self.deliver)(ClusterEvent::Down) {
                            return;
                        }
                    }
                    while self.queue.try_recv().is_ok() {} // lost, as the core counts them
                    if !nap(backoff, &self.stop) {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if let Some(start_at) = self.start_at.take() {
                let last = last_id(&mut con).unwrap_or_else(|_| "0-0".to_owned());
                let _ = start_at.send(last);
            }
            while self.queue.try_recv().is_ok() {} // left from before the link failed
            backoff = MIN_BACKOFF;
            told_why = None;
            tracing::info!("cluster: broker reachable at {}", self.broker.shown());
            if !(self.deliver)(ClusterEvent::Up) {
                return;
            }
            match self.serve(&mut con) {
                Ok(()) => return,
                Err(err) => {
                    let err = self.broker.scrub(&err);
                    tracing::warn!("cluster: the link to the broker failed ({err}); reconnecting");
                    told_down = true;
                    if !(self.deliver)(ClusterEvent::Down) {
                        return;
                    }
                }
            }
        }
    }

    /// Sends every command as it comes, a batch per round trip, until the link fails (`Err`) or
    /// the server is gone (`Ok`).
    fn serve(&mut self, con: &mut Connection) -> redis::RedisResult<()> {
        let mut batch = Vec::new();
        loop {
            match self.queue.recv_timeout(Duration::from_millis(200)) {
                Ok(command) => batch.push(command),
                Err(RecvTimeoutError::Timeout) if !self.stop.load(Ordering::Relaxed) => continue,
                Err(_) => return Ok(()),
            }
            while batch.len() < BATCH {
                match self.queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let events = perform(con, &batch)?;
            batch.clear();
            for event in events {
                if !(self.deliver)(event) {
                    return Ok(());
                }
            }
        }
    }
}

/// The stream's last id now, so the reader starts after what was said before this node came.
fn last_id(con: &mut Connection) -> redis::RedisResult<String> {
    let last: Value = redis::cmd("XREVRANGE")
        .arg(ROOM_STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(con)?;
    let id = match last {
        Value::Array(entries) => entries.into_iter().next().and_then(|entry| match entry {
            Value::Array(parts) => parts.into_iter().next().and_then(|id| text(&id)),
            _ => None,
        }),
        _ => None,
    };
    Ok(id.unwrap_or_else(|| "0-0".to_owned()))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

fn millis(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Performs a batch as one pipeline and turns the answers that the core waits for into events.
fn perform(
    con: &mut Connection,
    batch: &[ClusterCommand],
) -> redis::RedisResult<Vec<ClusterEvent>> {
    let mut pipe = redis::pipe();
    for command in batch {
        match command {
            ClusterCommand::Publish(entry) => {
                pipe.cmd("XADD").arg(ROOM_STREAM).arg("MAXLEN").arg("~").arg(STREAM_KEEP);
                pipe.arg("*").arg("m").arg(&entry[..]);
            }
            ClusterCommand::Claim(claims) => {
                for claim in claims {
                    pipe.cmd("EVAL").arg(CLAIM).arg(1).arg(&claim.key).arg(&claim.value);
                    pipe.arg(millis(claim.lease));
                }
            }
            ClusterCommand::Release { key, value } => {
                pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(key).arg(value);
            }
            ClusterCommand::Heartbeat { key, value, lease } => {
                pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(millis(*lease));
            }
            ClusterCommand::ReadHeartbeats(nodes) => {
                pipe.cmd("MGET");
                for node in nodes {
                    pipe.arg(natter_core::cluster::heartbeat_key(node));
                }
            }
        }
    }
    let answers: Vec<Value> = pipe.query(con)?;
    let mut answers = answers.into_iter();
    let mut events = Vec::new();
    for command in batch {
        match command {
            ClusterCommand::Claim(claims) => {
                for claim in claims {
                    let holder = answers.next().as_ref().and_then(text);
                    events.push(ClusterEvent::Claimed { key: claim.key.clone(), holder });
                }
            }
            ClusterCommand::ReadHeartbeats(nodes) => {
                let values = match answers.next() {
                    Some(Value::Array(values)) => values,
                    _ => Vec::new(),
                };
                let read = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| (node.clone(), parse_epoch(values.get(i).and_then(bytes_of))))
                    .collect();
                events.push(ClusterEvent::Heartbeats(read));
            }
            _ => {
                answers.next();
            }
        }
    }
    Ok(events)
}

struct Reader<D> {
    client: Client,
    /// For scrubbing the password out of a logged error.
    broker: Broker,
    deliver: D,
    stop: Arc<AtomicBool>,
}

impl<D: FnMut(ClusterEvent) -> bool> Reader<D> {
    fn run(mut self, first_id: Receiver<String>) {
        let mut last = loop {
            match first_id.recv_timeout(Duration::from_millis(200)) {
                Ok(id) => break id,
                Err(RecvTimeoutError::Timeout) if !self.stop.load(Ordering::Relaxed) => {}
                Err(_) => return,
            }
        };
        let mut backoff = MIN_BACKOFF;
        while !self.stop.load(Ordering::Relaxed) {
            let mut con = match connect(&self.client) {
                Ok(con) => con,
                Err(_) => {
                    if !nap(backoff, &self.stop) {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            if con
                .set_read_timeout(Some(IO_TIMEOUT + Duration::from_millis(READ_BLOCK_MS)))
                .is_err()
            {
                continue;
            }
            match self.read(&mut con, &mut last) {
                Ok(()) => return,
                Err(err) => {
                    let err = self.broker.scrub(&err);
                    tracing::debug!(
                        "cluster: the stream read failed ({err}); reading on from {last}"
                    );
                    if !nap(backoff, &self.stop) {
                        return;
                    }
                }
            }
        }
    }

    /// Reads entries after `last` until the link fails (`Err`) or the server is gone (`Ok`).
    fn read(&mut self, con: &mut Connection, last: &mut String) -> redis::RedisResult<()> {
        while !self.stop.load(Ordering::Relaxed) {
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("STREAMS")
                .arg(ROOM_STREAM)
                .arg(last.as_str())
                .query(con)?;
            for (id, entry) in stream_entries(reply) {
                *last = id;
                if let Some(entry) = entry
                    && !(self.deliver)(ClusterEvent::Entry(entry))
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The (id, `m` field) of each entry of an `XREAD` reply (RESP2 arrays or a RESP3 map).
fn stream_entries(reply: Value) -> Vec<(String, Option<Bytes>)> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else { continue };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let mut parts = parts.into_iter();
            let Some(id) = parts.next().as_ref().and_then(text) else { continue };
            let field = match parts.next() {
                Some(Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|kv| kv.first().and_then(bytes_of) == Some(b"m"))
                    .and_then(|kv| kv.get(1).and_then(bytes_of))
                    .map(Bytes::copy_from_slice),
                _ => None,
            };
            out.push((id, field));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on purpose
mod tests {
    use super::*;

    /// A broker that answers the link check and then goes silent, as a frozen host or a dropped
    /// route does: the writer must give up on its pipeline and tell the node the link is down,
    /// not wait forever with the room silently cut in two.
    #[test]
    fn a_broker_gone_silent_splits_the_room() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                std::thread::spawn(move || {
                    // RESP arrays of bulk strings: answer PING (and the client's own setup), then
                    // read on without a word.
                    let mut out = stream.try_clone().unwrap();
                    let mut lines = BufReader::new(stream).lines();
                    while let Some(Ok(line)) = lines.next() {
                        let Some(n) = line.strip_prefix('*').and_then(|n| n.parse::<usize>().ok())
                        else {
                            continue;
                        };
                        let words: Vec<String> = (0..2 * n)
                            .filter_map(|_| lines.next()?.ok())
                            .skip(1)
                            .step_by(2)
                            .collect();
                        let answer = match words.first().map(String::as_str) {
                            Some("PING") => "+PONG\r\n",
                            Some("CLIENT") | Some("HELLO") => "+OK\r\n",
                            _ => continue,
                        };
                        let _ = out.write_all(answer.as_bytes());
                    }
                });
            }
        });
        let (events, seen) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let deliver = move |event: ClusterEvent| events.send(format!("{event:?}")).is_ok();
        let link = start(&Broker::new(&format!("redis://{addr}")), deliver, stop.clone()).unwrap();
        // Up after the writer's first read (the stream's last id) went unanswered too.
        let first = seen.recv_timeout(PIPELINE_TIMEOUT + Duration::from_secs(10)).unwrap();
        assert_eq!(first, "Up");
        // The node's heartbeat, as the core sends one every few seconds.
        let lease = Duration::from_secs(3);
        link.send(ClusterCommand::Heartbeat { key: "k".into(), value: "v".into(), lease });
        let next = seen.recv_timeout(PIPELINE_TIMEOUT + Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(next.as_deref(), Ok("Down"), "the node was never told the link is down");
    }

    #[test]
    fn a_password_from_a_file_is_never_shown() {
        let mut broker = Broker::new("redis://natter@127.0.0.1:6379");
        broker.password = Some(Password::new("s3cret-from-file"));
        assert!(!format!("{broker:?}").contains("s3cret"), "{broker:?}");
        let scrubbed = broker.scrub(&"WRONGPASS s3cret-from-file is not it");
        assert_eq!(scrubbed, "WRONGPASS *** is not it");
        let info = broker.connection_info().unwrap();
        assert_eq!(info.redis.username.as_deref(), Some("natter"));
        assert_eq!(info.redis.password.as_deref(), Some("s3cret-from-file"));
    }

    #[test]
    fn the_password_is_never_shown() {
        // PROTOCOL 8.2: a node prints its broker's address, never its password.
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@host:6379/2", "redis://:***@host:6379/2"),
            ("redis://natter:s3cret@host:6379", "redis://natter:***@host:6379"),
            ("rediss://u:p%40ss@host:6380", "rediss://u:***@host:6380"),
            // Unencoded `@` and `/` in a password: the last `@` ends it.
            ("redis://u:a@b/c@host", "redis://u:***@host"),
            ("redis://user@host", "redis://user@host"),
            ("redis://u:@host", "redis://u:***@host"),
            ("host:6379", "host:6379"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            let debug = format!("{:?}", Broker::new(url));
            assert!(debug.contains(shown), "{debug}");
            assert!(!debug.contains("s3cret") && !debug.contains("p%40ss"), "{debug}");
        }
    }

    #[test]
    fn errors_are_scrubbed_of_the_password_as_written_and_decoded() {
        let broker = Broker::new("redis://u:p%40ss@host:6379");
        let scrubbed = broker.scrub(&"failed with p%40ss and p@ss");
        assert_eq!(scrubbed, "failed with *** and ***");
        assert_eq!(Broker::new("redis://host").scrub(&"no secret"), "no secret");
    }

    #[test]
    fn a_bad_address_is_refused_without_its_password() {
        let err = Broker::new("redis://u:s3cret@host:notaport").client().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let text = err.to_string();
        assert!(text.starts_with("bad broker address redis://u:***@host:notaport: "), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn tls_files_need_a_tls_address_and_must_be_readable() {
        let mut broker = Broker::new("redis://:s3cret@host:6379");
        broker.ca = Some(PathBuf::from("/nonexistent/ca.pem"));
        let text = broker.client().unwrap_err().to_string();
        assert!(text.contains("needs a rediss:// (TLS) address"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        broker.url = "rediss://:s3cret@host:6379".into();
        let text = broker.client().unwrap_err().to_string();
        assert!(text.contains("cannot read the broker CA /nonexistent/ca.pem"), "{text}");
        broker.ca = None;
        broker.client_cert = Some((PathBuf::from("/nonexistent/c.pem"), PathBuf::from("k")));
        let text = broker.client().unwrap_err().to_string();
        assert!(text.contains("cannot read the broker client certificate"), "{text}");
    }

    #[test]
    fn a_refused_password_is_told_from_a_broker_that_is_down() {
        let refused = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "x"));
        assert_eq!(why_unreachable(&refused), "the broker refused this node's user or password");
        let down = redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(why_unreachable(&down), "cannot reach the broker");
    }
}
