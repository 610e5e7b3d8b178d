//! Several servers sharing one room through a real `redis-server` (PROTOCOL.md section 8):
//! the seed's session across two nodes, three nodes with people on each, a name claimed on two
//! nodes at once, a node killed with SIGKILL, and the broker stopped and started again.
//!
//! Each test starts its own `redis-server` on a free loopback port (no persistence, its own temp
//! folder) and stops it by PID when dropped, also when the test panics. Every wait is on a line
//! and bounded by a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use natter_core::cluster::ClusterConfig;
use support::*;

/// A short lease, so that a dead node is noticed within a test's patience (8.3, 8.4).
const LEASE: Duration = Duration::from_millis(1200);

/// A `redis-server` of this test's own, stopped (by its PID) when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Redis { child: None, port, dir: tempfile::tempdir().unwrap() };
        redis.run();
        redis
    }

    /// Starts the server on its port (again) and waits until it answers.
    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        eventually("redis-server answers", REPLY_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Kills the server (the broker goes away at once, as when its machine dies).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node of the cluster on `rt`, in this process, serving `files`.
fn node(rt: Rt, redis: &Redis, name: &str, files: &[(&str, Vec<u8>)]) -> TestServer {
    let url = redis.url();
    start(rt, folder_with(files), |options| {
        let mut cluster = ClusterConfig::new(name, 0);
        cluster.lease = LEASE;
        options.chat.cluster = Some(cluster);
        options.broker = Some(url);
    })
}

/// Sends `show` until the answer lists exactly `names` (in any order): the nodes have synced.
fn wait_for_room(raw: &mut Raw, names: &[&str]) -> Vec<String> {
    let mut want: Vec<&str> = names.to_vec();
    want.sort_unstable();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let lines = raw.sync();
        let all = lines.last().unwrap().clone();
        let mut got: Vec<&str> = all.split(' ').skip(1).collect();
        got.sort_unstable();
        seen.extend(lines.iter().cloned());
        if got == want {
            return seen;
        }
        assert!(Instant::now() < deadline, "{}: room never became {want:?}: {all}", raw.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines until one equal to `want` (which is returned last); panics on timeout.
fn until_line(raw: &mut Raw, want: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = raw.line();
        let done = line == want;
        lines.push(line);
        if done {
            return lines;
        }
    }
}

#[test]
fn bob_and_alice_on_two_nodes() {
    // The seed's session (PROTOCOL 3) with Alice and Bob on different nodes: 8.1, 8.2, 1.1, 1.2.
    let redis = Redis::start();
    let a = node(Rt::Mio, &redis, "north", &[("alice.jpg", pattern(300, 1))]);
    let b = node(Rt::Smol, &redis, "south", &[("bob.txt", pattern(20, 2))]);
    let mut alice = Raw::join(a.addr, "alice");
    // Bob's node knows Alice once the nodes have exchanged rosters.
    let mut probe = Raw::join(b.addr, "probe");
    wait_for_room(&mut probe, &["alice"]);
    probe.send("{quit}");
    until_line(&mut alice, "probe left the chat...");
    let mut bob = Raw::connect(b.addr);
    bob.name = "bob".into();
    bob.send("bob");
    assert_eq!(bob.line(), "bob has joined the chat!");
    assert_eq!(bob.line(), "ALL alice");
    until_line(&mut alice, "bob has joined the chat!");
    bob.send("~Alice hi alice");
    assert_eq!(bob.line(), "from you to alice: (PRIVATE) hi alice");
    until_line(&mut alice, "bob: (PRIVATE) hi alice");
    // Each node offers its own files.
    alice.send("get_list_file");
    until_line(&mut alice, "CHOOSE_FILE alice.jpg");
    bob.send("get_list_file");
    assert_eq!(bob.line(), "CHOOSE_FILE bob.txt");
    alice.send("hello bob");
    assert_eq!(bob.line(), "alice: hello bob");
    bob.send("{quit}");
    let lines = until_line(&mut alice, "bob left the chat...");
    assert!(!lines.iter().any(|l| l.starts_with("ERROR")), "{lines:?}");
    assert_eq!(wait_for_room(&mut alice, &[]).last().unwrap(), "ALL");
}

#[test]
fn three_nodes_each_message_once_in_sender_order() {
    // 8.1, 8.4: every public line reaches every person on every node once, in its sender's order.
    let redis = Redis::start();
    let nodes = [
        node(Rt::Mio, &redis, "n1", &[]),
        node(Rt::Smol, &redis, "n2", &[]),
        node(Rt::Mio, &redis, "n3", &[]),
    ];
    let names = ["a1", "a2", "b1", "b2", "c1", "c2"];
    let mut people: Vec<Raw> =
        names.iter().enumerate().map(|(i, name)| Raw::join(nodes[i / 2].addr, name)).collect();
    for person in &mut people {
        wait_for_room(
            person,
            &names.iter().copied().filter(|n| *n != person.name).collect::<Vec<_>>(),
        );
    }
    const LINES: usize = 30;
    for i in 0..LINES {
        for person in &mut people {
            person.send(&format!("line {i}"));
        }
    }
    for person in &mut people {
        person.send("done");
    }
    for person in &mut people {
        let mut next = std::collections::HashMap::new();
        let mut done = 0;
        while done < names.len() {
            let line = person.line();
            let Some((from, text)) = line.split_once(": ") else { continue };
            if text == "done" {
                done += 1;
                assert_eq!(
                    next.get(from).copied(),
                    Some(LINES),
                    "{}: {from} said done early",
                    person.name
                );
                continue;
            }
            let Some(i) = text.strip_prefix("line ").and_then(|i| i.parse::<usize>().ok()) else {
                continue;
            };
            let expected = next.entry(from.to_owned()).or_insert(0);
            assert_eq!(i, *expected, "{}: from {from}, out of order or twice", person.name);
            *expected += 1;
        }
        assert_eq!(next.len(), names.len(), "{}: {next:?}", person.name);
    }
}

#[test]
fn a_name_claimed_on_two_nodes_at_once_goes_to_one() {
    // 8.3, 1.1: a name (ignoring case, and its confusables) is held once in the whole cluster.
    let redis = Redis::start();
    let a = node(Rt::Mio, &redis, "east", &[]);
    let b = node(Rt::Smol, &redis, "west", &[]);
    // Both nodes are up once a person on one sees a person on the other.
    let mut x = Raw::join(a.addr, "x");
    let mut y = Raw::join(b.addr, "y");
    wait_for_room(&mut x, &["y"]);
    wait_for_room(&mut y, &["x"]);
    for (round, (one, other)) in
        [("carol", "carol"), ("dave", "DAVE"), ("erin", "\u{435}rin")].into_iter().enumerate()
    {
        let mut p = Raw::connect(a.addr);
        let mut q = Raw::connect(b.addr);
        p.send_bytes(format!("{one}\n").as_bytes());
        q.send_bytes(format!("{other}\n").as_bytes());
        let (p_line, q_line) = (p.line(), q.line());
        let joined =
            [&p_line, &q_line].iter().filter(|l| l.ends_with("has joined the chat!")).count();
        let refused = [&p_line, &q_line]
            .iter()
            .filter(|l| {
                l.starts_with("ERROR name already taken")
                    || l.starts_with("ERROR name looks too much like")
            })
            .count();
        assert_eq!((joined, refused), (1, 1), "round {round}: {p_line:?} / {q_line:?}");
    }
}

/// A node as its own `natter server` process, so that it can be killed.
struct NodeProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_process(redis: &Redis, name: &str) -> NodeProcess {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let files = tempfile::tempdir().unwrap();
    let udp = free_udp_range(2);
    let child = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["server", "--addr", &addr.to_string(), "--cluster", &redis.url(), "--node", name])
        .args(["--udp-ports", &format!("{udp}-{}", udp + 1)])
        .args(["--cluster-lease-ms", &LEASE.as_millis().to_string()])
        .arg("--files")
        .arg(files.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = NodeProcess { child, addr };
    eventually("the node listens", REPLY_TIMEOUT, || TcpStream::connect(addr).is_ok());
    node
}

#[test]
fn a_killed_node_s_people_leave_within_the_lease() {
    // 8.4: SIGKILL leaves no goodbye; the heartbeat runs out and the others announce the leave.
    let redis = Redis::start();
    let a = node(Rt::Mio, &redis, "stays", &[]);
    let mut killed = node_process(&redis, "doomed");
    let mut alice = Raw::join(a.addr, "alice");
    let _dave = Raw::join(killed.addr, "dave");
    wait_for_room(&mut alice, &["dave"]);
    killed.child.kill().unwrap(); // SIGKILL
    let _ = killed.child.wait();
    let killed_at = Instant::now();
    let lines = until_line(&mut alice, "dave left the chat...");
    let took = killed_at.elapsed();
    // The heartbeat lives a lease after its last renewal; the survivors look every third of one
    // (and a shared CI machine may be slow to run them: 1.5 s of slack).
    let bound = LEASE + LEASE / 3 + Duration::from_millis(1500);
    assert!(took <= bound, "took {took:?}, more than {bound:?}: {lines:?}");
    // Dave's name is free again in the cluster once his claim ran out too.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let mut again = Raw::connect(a.addr);
        again.send("dave");
        if again.line() == "dave has joined the chat!" {
            break;
        }
        assert!(Instant::now() < deadline, "dave's name was never freed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn broker_stop_splits_the_room_and_restart_heals_it() {
    // 8.5: without the broker each node serves its own people and says the room is split; when
    // the broker is back, presence is synced again, and nothing is delivered twice.
    let mut redis = Redis::start();
    let a = node(Rt::Mio, &redis, "left", &[]);
    let b = node(Rt::Smol, &redis, "right", &[]);
    let mut alice = Raw::join(a.addr, "alice");
    let mut bob = Raw::join(b.addr, "bob");
    wait_for_room(&mut alice, &["bob"]);
    wait_for_room(&mut bob, &["alice"]);
    alice.send("before");
    until_line(&mut bob, "alice: before");

    redis.stop();
    let split = until_line(&mut alice, &format!("ERROR {SPLIT}"));
    assert!(!split.iter().any(|l| l.contains("left the chat")), "{split:?}");
    until_line(&mut bob, &format!("ERROR {SPLIT}"));
    // Each node goes on serving its own people: a join and a message, on one node only.
    alice.send("during");
    assert_eq!(alice.line(), "alice: during");
    let mut erin = Raw::join(b.addr, "erin");
    until_line(&mut bob, "erin has joined the chat!");
    bob.send("~alice psst");
    let answer = loop {
        let line = bob.line();
        if !line.starts_with("ALL") {
            break line;
        }
    };
    assert!(answer.starts_with("ERROR the room is split: alice"), "{answer}");

    redis.run();
    // Healed both ways: Alice learns of Erin only from the roster Bob's node appends once its
    // link is back, and Bob of Fred only from what Alice's node appends once its link is back
    // (each node's reader and writer reconnect on their own).
    wait_for_room(&mut alice, &["bob", "erin"]);
    let _fred = Raw::join(a.addr, "fred");
    wait_for_room(&mut bob, &["alice", "erin", "fred"]);
    wait_for_room(&mut erin, &["alice", "bob", "fred"]);
    alice.send("after");
    let lines = until_line(&mut erin, "alice: after");
    assert!(
        !lines.iter().any(|l| l == "alice: during"),
        "a line of the split came through: {lines:?}"
    );
    let lines = until_line(&mut bob, "alice: after");
    let befores = lines.iter().filter(|l| *l == "alice: before").count();
    assert_eq!(befores, 0, "delivered twice: {lines:?}");
    assert!(!lines.iter().any(|l| l == "alice: during"), "{lines:?}");
}

/// What a node's people are told when its link to the broker fails (PROTOCOL 8.5).
const SPLIT: &str =
    "the room is split: people on other nodes cannot hear you until the link to the broker is back";
