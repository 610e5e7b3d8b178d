//! What is owed to one connection, and how it is held so that writing it is cheap.
//!
//! A line to **many** (the room) is copied once, into the [`Feed`]: each recipient's outbox holds
//! a run of it (a range), and when the turn is written each reader gets its runs as slices of one
//! shared buffer. A line to n people costs n range checks, not n copies: the copies, the growing
//! of hundreds of tails and the page faults that came with them were a third of the server's CPU
//! per delivery in a room of 500 (issue 12).
//!
//! A line to **one** reader (a private line, a presence line, a reply) is copied into the
//! reader's own contiguous buffer, its tail, as long as the reader keeps up: a handle would cost
//! about what such a line does. A connection that lags (its tail filled up) gets **shared
//! handles** for long lines instead, so that a long line that waits for many slow readers is held
//! once, not once per reader; short lines are still copied then (C5).
//!
//! A drained tail goes back to a small pool shared by all connections, so an idle connection
//! holds no buffer at all, and a busy one does not allocate on every turn.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::chat::server::ConnId;

/// Lines shorter than this are always copied into the tail, even for a lagging reader: here a
/// handle and its share of the deque cost about as much as the line.
const COALESCE_BELOW: usize = 64;

/// The most bytes a tail holds. A connection with a full tail is lagging: longer lines wait as
/// shared handles. 16 KiB is about two hundred chat lines.
const TAIL_MAX: usize = 16 << 10;

/// The capacity of a new tail: a few lines' worth, so that most turns of a quiet connection
/// need one allocation; a busy one grows it by doubling, once, and reuses it from the pool.
const FIRST_TAIL: usize = 1 << 10;

/// How many drained tails the pool keeps for reuse: enough to spare most turns an allocation,
/// few enough that an idle server holds next to nothing; past it a drained tail is freed.
const SPARE_TAILS: usize = 64;

/// Drained tails, kept for the next connection that needs one.
#[derive(Debug, Default)]
pub(super) struct SpareTails(Vec<Vec<u8>>);

impl SpareTails {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Frees every spare tail: the server has been quiet, keep nothing for the next turn.
    pub(super) fn clear(&mut self) {
        self.0 = Vec::new();
    }

    /// A tail grown by earlier turns if there is one; else an empty one that grows as lines
    /// come. Why not a whole `TAIL_MAX` at once: a join in a room of a thousand owes a presence
    /// line to a thousand outboxes before any is written, and a thousand 16 KiB buffers, freed a
    /// moment later, would stay in the process's memory as free heap.
    fn take(&mut self) -> Vec<u8> {
        self.0.pop().unwrap_or_else(|| Vec::with_capacity(FIRST_TAIL))
    }

    fn give(&mut self, mut tail: Vec<u8>) {
        // A tail that once held a big line (a thousand names) is not kept: the pool stays at
        // most SPARE_TAILS * TAIL_MAX = 1 MiB in all.
        if self.0.len() < SPARE_TAILS && tail.capacity() > 0 && tail.capacity() <= TAIL_MAX {
            tail.clear();
            self.0.push(tail);
        }
    }
}

/// The lines to many connections since the feed was last frozen, each copied here once; the
/// outboxes of their recipients hold runs of it ([`Outbox::push_run`]). Before anything is
/// written the driver freezes it ([`Feed::freeze`]) and every run becomes a handle to the one
/// shared buffer ([`Outbox::resolve`]): a handle per reader per turn, not a copy per line.
#[derive(Debug, Default)]
pub(super) struct Feed {
    lines: BytesMut,
    /// The connections whose outboxes hold runs of `lines` not yet resolved, each once.
    holders: Vec<ConnId>,
}

impl Feed {
    /// Appends `line`; the run to queue for each recipient.
    pub(super) fn append(&mut self, line: &[u8]) -> Range<usize> {
        let start = self.lines.len();
        self.lines.extend_from_slice(line);
        start..self.lines.len()
    }

    /// Whether an outbox holds an unresolved run: the feed must be frozen before a write.
    pub(super) fn is_held(&self) -> bool {
        !self.holders.is_empty()
    }

    /// Whether it holds a buffer, to be freed once the server is quiet.
    pub(super) fn has_buffer(&self) -> bool {
        self.lines.capacity() > 0
    }

    /// The lines so far, shared, and the connections whose outboxes must resolve their runs with
    /// them ([`Outbox::resolve`]); the feed starts again empty. Its buffer is reused once every
    /// reader has written its slice of it.
    pub(super) fn freeze(&mut self) -> (Bytes, impl Iterator<Item = ConnId> + '_) {
        (self.lines.split().freeze(), self.holders.drain(..))
    }
}

/// What is owed to one connection. Its state is boxed and held only while something is owed or
/// the connection is closing: most people of a big room are idle most of the time, and the box
/// (with the map entry, about a hundred bytes) would be theirs for nothing (issue 12).
#[derive(Debug, Default)]
pub(super) struct Outbox(Option<Box<Owed>>);

impl Outbox {
    pub(super) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|o| o.is_empty())
    }

    /// When the server closed it: it ends when everything is written or then.
    pub(super) fn close_by(&self) -> Option<Instant> {
        self.0.as_ref().and_then(|o| o.close_by)
    }

    /// The server closes it: it ends when everything is written or at `at`.
    pub(super) fn close(&mut self, at: Instant) {
        self.0.get_or_insert_default().close_by = Some(at);
    }

    /// Queues `line` (see [`Owed::push`]).
    pub(super) fn push(&mut self, line: &Bytes, spare: &mut SpareTails) {
        self.0.get_or_insert_default().push(line, spare);
    }

    /// Queues `run`, lines of `feed` (see [`Feed`]), for connection `conn`: it continues the run
    /// queued last when it follows it in the feed and nothing came between.
    pub(super) fn push_run(&mut self, conn: ConnId, run: Range<usize>, feed: &mut Feed) {
        if self.0.get_or_insert_default().push_run(run) {
            feed.holders.push(conn);
        }
    }

    /// The feed was frozen into `lines`: this outbox's runs become slices of it. Called on every
    /// outbox that holds a run ([`Feed::freeze`]) before any is written.
    pub(super) fn resolve(&mut self, lines: &Bytes) {
        if let Some(owed) = &mut self.0 {
            owed.resolve(lines);
        }
    }

    /// The unsent buffers, oldest first, the first one without its written prefix.
    pub(super) fn unsent(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.0.iter().flat_map(|o| o.unsent())
    }

    /// `len` more bytes were written; a drained tail goes back to the pool, and an outbox that
    /// owes nothing and is not closing frees its state.
    pub(super) fn written(&mut self, len: usize, spare: &mut SpareTails) {
        if let Some(o) = &mut self.0 {
            o.written(len, spare);
            if o.is_empty()
                && o.close_by.is_none()
                && let Some(o) = self.0.take()
            {
                // Its tail may be empty but kept (see `Owed::seal_tail`): back to the pool.
                spare.give(o.tail);
            }
        }
    }

    /// Frees what it holds, the tail back to the pool (the connection is gone).
    pub(super) fn release(self, spare: &mut SpareTails) {
        if let Some(o) = self.0 {
            spare.give(o.tail);
        }
    }
}

/// A buffer owed before the tail.
#[derive(Debug)]
enum Piece {
    /// Its own or shared with others: a long line for a lagging reader, a sealed tail, a
    /// resolved run of the feed.
    Shared(Bytes),
    /// Lines of the [`Feed`] not yet frozen: `start..end` of it.
    Run(Range<usize>),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Shared(bytes) => bytes.len(),
            Piece::Run(run) => run.len(),
        }
    }

    /// Its bytes. A run has none until it is resolved, which the driver does before any write
    /// ([`Feed::freeze`]); writing around it would lose a reader's lines or misplace them, so a
    /// driver that forgot stops loudly instead.
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Shared(bytes) => bytes,
            Piece::Run(_) => unreachable!("a run of the feed is written before the feed is frozen"),
        }
    }
}

/// The state of an [`Outbox`] that owes something: pieces first, then the tail.
#[derive(Debug, Default)]
struct Owed {
    /// Buffers owed before the tail, oldest first: long lines for a lagging reader, as shared
    /// handles, tails that filled up, and runs of the feed.
    queue: VecDeque<Piece>,
    /// Lines copied together, owed after `queue`. Capacity 0 while nothing is owed.
    tail: Vec<u8>,
    /// How much of the first unsent buffer (the front of `queue`, or `tail` when `queue` is
    /// empty) is already written.
    front_done: usize,
    /// Where in `queue` the runs of the feed not yet resolved start, if any.
    first_run: Option<usize>,
    /// A tail filled up since the queue was last drained: the reader lags, and long lines to it
    /// wait as shared handles.
    lagging: bool,
    /// The server closed it: it ends when everything is written or at this instant.
    close_by: Option<Instant>,
}

impl Owed {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.tail.is_empty()
    }

    /// Queues `line`: copied while the tail has room and the reader keeps up (or when it is
    /// short), shared otherwise.
    fn push(&mut self, line: &Bytes, spare: &mut SpareTails) {
        let fits = self.tail.len() + line.len() <= TAIL_MAX;
        self.lagging |= !fits;
        if line.len() < COALESCE_BELOW || !self.lagging {
            if !fits {
                self.seal_tail();
            }
            if self.tail.capacity() == 0 {
                self.tail = spare.take();
            }
            self.tail.extend_from_slice(line);
        } else {
            self.seal_tail();
            self.queue.push_back(Piece::Shared(line.clone()));
        }
    }

    /// Queues `run` of the feed, continuing the last one when it follows it; `true` when this is
    /// the first run since the feed was last frozen (the feed must then list this outbox).
    fn push_run(&mut self, run: Range<usize>) -> bool {
        if self.tail.is_empty()
            && let Some(Piece::Run(last)) = self.queue.back_mut()
            && last.end == run.start
        {
            last.end = run.end;
            return false;
        }
        self.seal_tail();
        let first = self.first_run.is_none();
        if first {
            self.first_run = Some(self.queue.len());
        }
        self.queue.push_back(Piece::Run(run));
        first
    }

    /// Makes the runs slices of the frozen feed, `lines`.
    fn resolve(&mut self, lines: &Bytes) {
        let Some(first) = self.first_run.take() else { return };
        for piece in self.queue.range_mut(first..) {
            if let Piece::Run(run) = piece {
                *piece = Piece::Shared(lines.slice(run.clone()));
            }
        }
    }

    /// Moves the tail into the queue as one buffer (its written prefix, if it was the front,
    /// stays counted in `front_done`: it is still the first unsent buffer). A tail that holds a
    /// few lines (a private line between two room lines) is copied out and kept for the next
    /// ones: handed over whole, its capacity would be held for a few bytes, once per switch
    /// between lines to one and lines to many.
    fn seal_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        if self.tail.len() >= self.tail.capacity() / 2 {
            self.queue.push_back(Piece::Shared(Bytes::from(std::mem::take(&mut self.tail))));
        } else {
            self.queue.push_back(Piece::Shared(Bytes::copy_from_slice(&self.tail)));
            self.tail.clear();
        }
    }

    /// The unsent buffers, oldest first, the first one without its written prefix.
    fn unsent(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let tail = Some(&self.tail[..]).filter(|t| !t.is_empty());
        self.queue
            .iter()
            .map(Piece::bytes)
            .chain(tail)
            .enumerate()
            .map(|(i, b)| if i == 0 { &b[self.front_done..] } else { b })
    }

    /// `len` more bytes were written; a drained tail goes back to the pool.
    fn written(&mut self, mut len: usize, spare: &mut SpareTails) {
        while len > 0 {
            let front_len = match self.queue.front() {
                Some(front) => front.len(),
                None if !self.tail.is_empty() => self.tail.len(),
                None => break,
            };
            let left = front_len - self.front_done;
            if len < left {
                self.front_done += len;
                return;
            }
            len -= left;
            self.front_done = 0;
            if self.queue.pop_front().is_some() {
                // Runs are resolved before any write, so none is popped; the index follows.
                self.first_run = self.first_run.map(|i| i.saturating_sub(1));
            } else {
                spare.give(std::mem::take(&mut self.tail));
            }
        }
        if self.queue.is_empty() {
            // A lag is over: an idle connection keeps no deque either.
            self.lagging = false;
            if self.queue.capacity() > 0 {
                self.queue = VecDeque::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsent(o: &Outbox) -> Vec<u8> {
        o.unsent().flatten().copied().collect()
    }

    /// C5: a keeping-up reader gets one buffer; past the tail, long lines stay shared handles
    /// and short ones are still copied; partial writes across all of it keep every byte in order.
    #[test]
    fn lines_are_copied_until_the_tail_is_full_then_shared() {
        let mut spare = SpareTails::default();
        let mut o = Outbox::default();
        let mut expected = Vec::new();
        let long = Bytes::from(vec![b'L'; 700]);
        for i in 0..2000u32 {
            let line = if i % 97 == 0 {
                long.clone()
            } else {
                Bytes::from(format!("ann: {i} and some more text to pass the copy limit\n"))
            };
            expected.extend_from_slice(&line);
            o.push(&line, &mut spare);
        }
        // Tails of 16 KiB and the long lines after the first tail filled: tens, not 2000.
        let Some(owed) = &o.0 else { panic!("a lagging reader's outbox owes") };
        let queue = &owed.queue;
        assert!(queue.len() < 60, "{}", queue.len());
        let shared = queue
            .iter()
            .filter(|p| matches!(p, Piece::Shared(b) if b.as_ptr() == long.as_ptr()))
            .count();
        assert!(shared > 10, "long lines of a lagging reader are shared: {shared}");
        assert_eq!(unsent(&o), expected);
        let mut done = 0;
        for step in [1, 5, 700, 3, 4096, 13, 9000, 1] {
            o.written(step, &mut spare);
            done += step;
            assert_eq!(unsent(&o), expected[done..]);
        }
        o.written(expected.len() - done, &mut spare);
        assert!(o.is_empty());
        assert_eq!(unsent(&o), Vec::<u8>::new());
    }

    #[test]
    fn a_reader_that_keeps_up_gets_one_slice_and_holds_nothing_after() {
        let mut spare = SpareTails::default();
        let mut o = Outbox::default();
        for _ in 0..100 {
            o.push(&Bytes::from(vec![b'x'; 99]), &mut spare);
        }
        assert_eq!(o.unsent().count(), 1, "one contiguous slice");
        o.written(9900, &mut spare);
        assert!(o.is_empty());
        assert!(o.0.is_none(), "an idle outbox holds nothing");
        assert_eq!(spare.0.len(), 1, "its tail went back to the pool");
        o.push(&Bytes::from_static(b"again\n"), &mut spare);
        assert!(spare.0.is_empty(), "and is taken from it again");
    }

    #[test]
    fn a_partly_written_tail_stays_the_front_when_sealed() {
        let mut spare = SpareTails::default();
        let mut o = Outbox::default();
        o.push(&Bytes::from_static(b"hello\n"), &mut spare);
        o.written(2, &mut spare);
        o.push(&Bytes::from(vec![b'x'; TAIL_MAX]), &mut spare); // does not fit: seals the tail
        let mut expected = b"llo\n".to_vec();
        expected.extend_from_slice(&[b'x'; TAIL_MAX]);
        assert_eq!(unsent(&o), expected);
    }

    /// Freezes `feed` and resolves the runs of `outboxes`, as the driver does before a write.
    fn freeze(feed: &mut Feed, outboxes: &mut [&mut Outbox]) -> Bytes {
        let (lines, holders) = feed.freeze();
        let holders: Vec<ConnId> = holders.collect();
        for &conn in &holders {
            outboxes[conn as usize].resolve(&lines);
        }
        lines
    }

    /// Issue 12: a line to many is held once; a turn of them reaches each reader as one slice of
    /// the same buffer, whoever else reads it.
    #[test]
    fn a_turn_of_room_lines_is_one_shared_slice_per_reader() {
        let mut spare = SpareTails::default();
        let mut feed = Feed::default();
        let (mut a, mut b) = (Outbox::default(), Outbox::default());
        let lines = ["p1: hello\n", "p2: and hello to you\n", "p1: how are things?\n"];
        for line in lines {
            let run = feed.append(line.as_bytes());
            a.push_run(0, run.clone(), &mut feed);
            b.push_run(1, run, &mut feed);
        }
        assert!(feed.is_held());
        let shared = freeze(&mut feed, &mut [&mut a, &mut b]);
        assert!(!feed.is_held(), "every run is resolved");
        for o in [&a, &b] {
            let slices: Vec<&[u8]> = o.unsent().collect();
            assert_eq!(slices.len(), 1, "one slice for the turn");
            assert_eq!(slices[0].as_ptr(), shared.as_ptr(), "of the one shared buffer");
            assert_eq!(unsent(o), lines.concat().into_bytes());
        }
        a.written(shared.len(), &mut spare);
        assert!(a.0.is_none(), "a reader that wrote it all holds nothing");
        assert_eq!(unsent(&b), lines.concat().into_bytes(), "the other still has its slice");
    }

    /// Issue 12: lines to one reader (short ones copied, long ones shared) between lines to many
    /// keep their order, across freezes and partial writes, for a reader that skipped a line of
    /// the room (a join or leave between two lines) too.
    #[test]
    fn lines_to_one_between_lines_to_many_keep_their_order() {
        let mut spare = SpareTails::default();
        let mut feed = Feed::default();
        let mut o = Outbox::default();
        let mut other = Outbox::default();
        let mut expected = Vec::new();
        let long = Bytes::from(format!("{}\n", "L".repeat(300)));
        for turn in 0..3 {
            for i in 0..20 {
                let room = format!("p{turn}: room line {i} with some text\n");
                let run = feed.append(room.as_bytes());
                other.push_run(1, run.clone(), &mut feed);
                if i % 7 == 3 {
                    continue; // `o` was not in the room for this one
                }
                o.push_run(0, run, &mut feed);
                expected.extend_from_slice(room.as_bytes());
                if i % 5 == 0 {
                    let private = Bytes::from(format!("q: (PRIVATE) {turn} {i}\n"));
                    o.push(&private, &mut spare);
                    expected.extend_from_slice(&private);
                }
                if i % 9 == 4 {
                    o.push(&long, &mut spare);
                    expected.extend_from_slice(&long);
                }
            }
            freeze(&mut feed, &mut [&mut o, &mut other]);
            assert_eq!(unsent(&o), expected, "turn {turn}");
            // A partial write: the reader lags by what is left.
            let done = expected.len() / 3;
            o.written(done, &mut spare);
            expected.drain(..done);
            assert_eq!(unsent(&o), expected, "turn {turn}, after a partial write");
        }
        o.written(expected.len(), &mut spare);
        assert!(o.is_empty());
    }

    /// Issue 12: a reader whose write lands after new room lines were queued for it (a TLS
    /// batch, a mid-turn write when the socket had room): the written front goes, the runs
    /// queued meanwhile are resolved at the next freeze, and nothing moves out of order.
    #[test]
    fn a_write_that_lands_after_new_runs_keeps_the_order() {
        let mut spare = SpareTails::default();
        let mut feed = Feed::default();
        let mut o = Outbox::default();
        let room = |n: usize| format!("p{n}: a line to the room\n");
        o.push_run(0, feed.append(room(1).as_bytes()), &mut feed);
        freeze(&mut feed, &mut [&mut o]);
        let first: Vec<u8> = unsent(&o);
        o.push_run(0, feed.append(room(2).as_bytes()), &mut feed);
        o.push(&Bytes::from_static(b"q: (PRIVATE) hi\n"), &mut spare);
        o.written(first.len(), &mut spare);
        o.push_run(0, feed.append(room(3).as_bytes()), &mut feed);
        freeze(&mut feed, &mut [&mut o]);
        let expected = format!("{}q: (PRIVATE) hi\n{}", room(2), room(3));
        assert_eq!(unsent(&o), expected.into_bytes());
    }

    /// Issue 12: a private line between room lines is copied out of the tail, which the reader
    /// keeps for the next one: switching between lines to one and to many does not hand a tail's
    /// whole capacity over for each few bytes (a reader that never reads, sent both in turn).
    #[test]
    fn a_few_private_bytes_between_room_lines_keep_the_tail() {
        let mut spare = SpareTails::default();
        let mut feed = Feed::default();
        let mut o = Outbox::default();
        for i in 0..100 {
            o.push(&Bytes::from(format!("q: (PRIVATE) {i}\n")), &mut spare);
            o.push_run(0, feed.append(b"p: room\n"), &mut feed);
        }
        let Some(owed) = &o.0 else { panic!("owes") };
        assert_eq!(owed.tail.capacity(), FIRST_TAIL, "one tail, kept and reused");
        let copied = owed.queue.iter().filter(|p| matches!(p, Piece::Shared(b) if b.len() < 20));
        assert_eq!(copied.count(), 100, "each private line copied out at its size");
    }
}
