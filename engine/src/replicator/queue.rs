//! The upload queue: files cut but not yet durable, in TXID order, with their attempt
//! counts and retry deadlines. Durability advances only over a contiguous prefix.

use std::collections::VecDeque;
use std::sync::Arc;

use super::types::Position;
use crate::keys::FileId;
use crate::spec::FileSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting to be sent (first attempt or a retry) once `not_before` has passed.
    Ready {
        not_before: u64,
    },
    InFlight,
    /// The outcome is unknown: waiting to ask the store.
    NeedsCheck {
        not_before: u64,
    },
    Checking,
    Stored,
}

#[derive(Debug)]
pub struct Entry {
    pub file: FileId,
    pub spec: Arc<FileSpec>,
    /// Position the chain reaches once this file is durable.
    pub position: Position,
    pub attempt: u32,
    pub check_attempt: u32,
    pub state: State,
}

/// One file of the upload window, as [`super::Replicator::window`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowEntry {
    pub file: FileId,
    pub state: State,
    pub attempt: u32,
    pub check_attempt: u32,
}

#[derive(Debug, Default)]
pub struct Queue {
    entries: VecDeque<Entry>,
}

impl Queue {
    pub fn push(&mut self, e: Entry) {
        self.entries.push_back(e);
    }

    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Requests outstanding at the store (uploads and checks).
    pub fn outstanding(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::InFlight | State::Checking))
            .count()
    }

    pub fn view(&self) -> Vec<WindowEntry> {
        self.entries
            .iter()
            .map(|e| WindowEntry {
                file: e.file,
                state: e.state,
                attempt: e.attempt,
                check_attempt: e.check_attempt,
            })
            .collect()
    }

    pub fn get_mut(&mut self, file: FileId) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.file == file)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.entries.iter_mut()
    }

    /// Pops the stored prefix.
    pub fn pop_durable(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        while self
            .entries
            .front()
            .is_some_and(|e| e.state == State::Stored)
        {
            if let Some(e) = self.entries.pop_front() {
                out.push(e);
            }
        }
        out
    }

    /// Pops every stored entry, wherever it is: the `durable-past-hole` mutation.
    #[cfg(feature = "mutations")]
    pub fn pop_stored(&mut self) -> Vec<Entry> {
        let (stored, rest): (VecDeque<Entry>, VecDeque<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.state == State::Stored);
        self.entries = rest;
        stored.into()
    }

    #[cfg(not(feature = "mutations"))]
    pub fn pop_stored(&mut self) -> Vec<Entry> {
        self.pop_durable()
    }

    /// Removes every entry from `min_txid` on (they are being replaced).
    pub fn drain_from(&mut self, min_txid: u64) -> Vec<Entry> {
        let keep = self
            .entries
            .iter()
            .take_while(|e| e.file.min_txid < min_txid)
            .count();
        self.entries.drain(keep..).collect()
    }

    /// Earliest deadline of an entry waiting on a timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::Ready { not_before } | State::NeedsCheck { not_before } => Some(not_before),
                _ => None,
            })
            .min()
    }
}
