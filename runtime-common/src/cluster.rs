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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use bytes::Bytes;
use natter_core::cluster::{ClusterCommand, ClusterEvent, ROOM_STREAM, STREAM_KEEP, parse_epoch};
use redis::{Client, Connection, Value};

/// The first wait before connecting again; doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a connect or a command may take before the link counts as down.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
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

/// Starts the two threads for the broker at `url` (`redis://[user:password@]host:port[/db]`,
/// or `rediss://` for TLS: both are the `redis` crate's, passed through as given). Events go to
/// `deliver` until it returns `false` or `stop` is set.
pub fn start<D>(url: &str, deliver: D, stop: Arc<AtomicBool>) -> io::Result<ClusterLink>
where
    D: FnMut(ClusterEvent) -> bool + Send + Clone + 'static,
{
    let client = Client::open(url).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("bad broker address {url}: {e}"))
    })?;
    let (commands, queue) = mpsc::channel();
    let (start_at, first_id) = mpsc::channel();
    let reader = Reader { client: client.clone(), deliver: deliver.clone(), stop: stop.clone() };
    std::thread::Builder::new()
        .name("natter-cluster-read".into())
        .spawn(move || reader.run(first_id))?;
    let writer = Writer { client, deliver, stop, queue, start_at: Some(start_at) };
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

fn connect(client: &Client) -> redis::RedisResult<Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

struct Writer<D> {
    client: Client,
    deliver: D,
    stop: Arc<AtomicBool>,
    queue: Receiver<ClusterCommand>,
    /// Where the reader starts, sent on the first connection only.
    start_at: Option<Sender<String>>,
}

impl<D: FnMut(ClusterEvent) -> bool> Writer<D> {
    fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut told_down = false;
        while !self.stop.load(Ordering::Relaxed) {
            let mut con = match connect(&self.client) {
                Ok(con) => con,
                Err(err) => {
                    if !told_down {
                        tracing::warn!("cluster: cannot reach the broker ({err}); retrying");
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
            tracing::info!("cluster: broker reachable");
            if !(self.deliver)(ClusterEvent::Up) {
                return;
            }
            match self.serve(&mut con) {
                Ok(()) => return,
                Err(err) => {
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
