//! The joined connections in join order (1.3): who a public line goes to, and the order of an
//! `ALL` line.

use super::ConnId;

/// Joined connections by join sequence number, in one sorted vector.
///
/// Why not a `BTreeMap`: every public line walks the whole room, and a vector is walked faster
/// than a tree's nodes; its one allocation is not scattered among a join storm's short-lived
/// buffers either (issue 12). A leave moves the later entries down by one: 16 bytes each, far
/// less than the leave line the same leave queues for every one of them.
#[derive(Debug, Default)]
pub(super) struct Room(Vec<(u64, ConnId)>);

impl Room {
    /// `conn` joined with sequence number `seq`; numbers come in rising order, so this is a push.
    pub(super) fn join(&mut self, seq: u64, conn: ConnId) {
        match self.0.last() {
            Some(&(last, _)) if last >= seq => {
                let at = self.0.partition_point(|&(s, _)| s < seq);
                self.0.insert(at, (seq, conn));
            }
            _ => self.0.push((seq, conn)),
        }
    }

    /// The member who joined with `seq` left.
    pub(super) fn leave(&mut self, seq: u64) {
        let Ok(at) = self.0.binary_search_by_key(&seq, |&(s, _)| s) else {
            return;
        };
        self.0.remove(at);
        // A crowd that left gives most of the vector back.
        if self.0.capacity() > 64 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to(self.0.len() * 2);
        }
    }

    /// How many have joined.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Members and their sequence numbers, in join order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, ConnId)> + Clone + '_ {
        self.0.iter().copied()
    }

    /// Members in join order.
    pub(super) fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.0.iter().map(|&(_, conn)| conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_stay_in_join_order_through_leaves_and_late_numbers() {
        let mut room = Room::default();
        for seq in [1, 2, 3, 5, 8] {
            room.join(seq, seq * 10);
        }
        room.join(4, 40); // a number lower than the last still lands in order
        room.leave(2);
        room.leave(7); // never joined: nothing changes
        assert_eq!(room.iter().collect::<Vec<_>>(), [(1, 10), (3, 30), (4, 40), (5, 50), (8, 80)]);
        assert_eq!(room.conns().collect::<Vec<_>>(), [10, 30, 40, 50, 80]);
        assert_eq!(room.len(), 5);
    }

    #[test]
    fn a_room_that_empties_gives_its_memory_back() {
        let mut room = Room::default();
        for seq in 0..10_000 {
            room.join(seq, seq);
        }
        for seq in 0..9_990 {
            room.leave(seq);
        }
        assert!(room.0.capacity() < 100, "{}", room.0.capacity());
        assert_eq!(room.conns().collect::<Vec<_>>(), (9_990..10_000).collect::<Vec<_>>());
    }
}
