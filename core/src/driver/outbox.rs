//! What is owed to one connection, and how it is held so that writing it is cheap.
//!
//! A connection that keeps up gets its lines **copied** into one contiguous buffer, its tail:
//! a turn's lines go out in one single-slice write, and a line to a room of n costs n small copies
//! rather than n reference counts taken and dropped (the copy of a line of a hundred bytes is
//! cheaper than the atomic pair, and the kernel copies one slice faster than dozens).
//!
//! A connection that lags (its tail is full) gets **shared handles** instead: a long line that
//! waits for many slow readers is held once, not once per reader. Short lines are still copied
//! then, because a handle costs about what such a line does (C5).
//!
//! A drained tail goes back to a small pool shared by all connections, so an idle connection
//! holds no buffer at all, and a busy one does not allocate on every turn.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

/// Lines shorter than this are always copied into the tail, even for a lagging reader: here a
/// handle and its share of the deque cost about as much as the line.
const COALESCE_BELOW: usize = 64;

/// The most bytes a tail holds. A connection with a full tail is lagging: longer lines wait as
/// shared handles. 16 KiB is about two hundred chat lines, a busy room's turn for one reader.
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
    /// come. Why not a whole `TAIL_MAX` at once: a join in a room of a thousand puts one short
    /// line in a thousand outboxes before any is written, and a thousand 16 KiB buffers, freed a
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

    /// The unsent buffers, oldest first, the first one without its written prefix.
    pub(super) fn unsent(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.0.iter().flat_map(|o| o.unsent())
    }

    /// `len` more bytes were written; a drained tail goes back to the pool, and an outbox that
    /// owes nothing and is not closing frees its state.
    pub(super) fn written(&mut self, len: usize, spare: &mut SpareTails) {
        if let Some(o) = &mut self.0 {
            o.written(len, spare);
            if o.is_empty() && o.close_by.is_none() {
                self.0 = None;
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

/// The state of an [`Outbox`] that owes something: handles first, then the tail.
#[derive(Debug, Default)]
struct Owed {
    /// Buffers owed before the tail, oldest first: long lines for a lagging reader, as shared
    /// handles, and tails that filled up.
    queue: VecDeque<Bytes>,
    /// Lines copied together, owed after `queue`. Capacity 0 while nothing is owed.
    tail: Vec<u8>,
    /// How much of the first unsent buffer (the front of `queue`, or `tail` when `queue` is
    /// empty) is already written.
    front_done: usize,
    /// The server closed it: it ends when everything is written or at this instant.
    close_by: Option<Instant>,
}

impl Owed {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.tail.is_empty()
    }

    /// Queues `line`: copied while the tail has room (or when it is short), shared otherwise.
    fn push(&mut self, line: &Bytes, spare: &mut SpareTails) {
        let fits = self.tail.len() + line.len() <= TAIL_MAX;
        if line.len() < COALESCE_BELOW || (fits && self.queue.is_empty()) {
            if !fits {
                self.seal_tail();
            }
            if self.tail.capacity() == 0 {
                self.tail = spare.take();
            }
            self.tail.extend_from_slice(line);
        } else {
            self.seal_tail();
            self.queue.push_back(line.clone());
        }
    }

    /// Moves the tail into the queue as one buffer (its written prefix, if it was the front,
    /// stays counted in `front_done`: it is still the first unsent buffer).
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.queue.push_back(Bytes::from(std::mem::take(&mut self.tail)));
        }
    }

    /// The unsent buffers, oldest first, the first one without its written prefix.
    fn unsent(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let tail = Some(&self.tail[..]).filter(|t| !t.is_empty());
        self.queue
            .iter()
            .map(|b| &b[..])
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
            if self.queue.pop_front().is_none() {
                spare.give(std::mem::take(&mut self.tail));
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            // A lag is over: an idle connection keeps no deque either.
            self.queue = VecDeque::new();
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
        let shared = queue.iter().filter(|b| b.as_ptr() == long.as_ptr()).count();
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
}
