//! The event queue in simulated time: a min-heap on (time, insertion sequence), so
//! events at the same millisecond run in the order they were scheduled. Nothing else
//! orders events, which is what makes a run a pure function of its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    slots: std::collections::BTreeMap<u64, E>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: std::collections::BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    pub fn push(&mut self, at: u64, e: E) {
        let s = self.seq;
        self.seq += 1;
        self.heap.push(Reverse((at, s)));
        self.slots.insert(s, e);
    }

    /// Time of the next event.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    pub fn pop(&mut self) -> Option<(u64, E)> {
        let Reverse((t, s)) = self.heap.pop()?;
        let e = self.slots.remove(&s)?;
        Some((t, e))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_insertion() {
        let mut q = EventQueue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        q.push(3, "x");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (3, "x"), (5, "b"), (5, "c")]);
        assert!(q.is_empty());
    }
}
