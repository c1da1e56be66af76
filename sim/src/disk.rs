//! The replicator's local state area (`.<db>-walvault/position.json`), modelled as what
//! is visible now and what would survive a crash. production writes it atomically
//! (temp file, fsync, rename, fsync dir); the faults are a lying fsync (the write is
//! visible but not durable: a crash reverts it), a torn write (a crash leaves garbage,
//! as a file system that reorders the rename before the data can), and a failed write
//! (ENOSPC/EIO: production's task exits with the error). Contents are the JSON
//! production writes and are parsed the same way: garbage reads as "no position".

use serde::{Deserialize, Serialize};
use walvault_engine::replicator::Position;

#[derive(Serialize, Deserialize)]
struct Stored {
    txid: u64,
    salt1: u32,
    salt2: u32,
    wal_end: u64,
    commit: u32,
}

pub fn encode(p: &Position) -> Vec<u8> {
    serde_json::to_vec(&Stored {
        txid: p.txid,
        salt1: p.salt1,
        salt2: p.salt2,
        wal_end: p.wal_end,
        commit: p.commit,
    })
    .unwrap_or_default()
}

/// `StateDir::load`: a damaged file is not fatal, it reads as no position.
pub fn decode(b: &[u8]) -> Option<Position> {
    serde_json::from_slice::<Stored>(b).ok().map(|s| Position {
        txid: s.txid,
        salt1: s.salt1,
        salt2: s.salt2,
        wal_end: s.wal_end,
        commit: s.commit,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    None,
    FsyncLie,
    Torn,
}

#[derive(Default)]
pub struct Disk {
    visible: Option<Vec<u8>>,
    durable: Option<Vec<u8>>,
    /// A crash before the next honest write leaves this torn content.
    torn: Option<Vec<u8>>,
    /// The run mark (`running`): the run's first TXID, written before its first
    /// upload, removed only at a clean stop. Written honestly (once per run).
    running: Option<u64>,
}

impl Disk {
    pub fn save(&mut self, bytes: Vec<u8>, fault: WriteFault) {
        match fault {
            WriteFault::None => {
                self.durable = Some(bytes.clone());
                self.torn = None;
            }
            WriteFault::FsyncLie => {}
            WriteFault::Torn => {
                let half = bytes.len() / 2;
                let mut t = bytes[..half].to_vec();
                t.extend(std::iter::repeat_n(0u8, bytes.len() - half));
                self.torn = Some(t);
            }
        }
        self.visible = Some(bytes);
    }

    /// What the next start reads after a crash.
    pub fn crash(&mut self) {
        if let Some(t) = self.torn.take() {
            self.durable = Some(t);
        }
        self.visible = self.durable.clone();
    }

    /// `StateDir::unfinished_run`.
    pub fn unfinished_run(&self) -> Option<u64> {
        self.running
    }

    /// `StateDir::begin_run`.
    pub fn begin_run(&mut self, first_txid: u64) {
        self.running = Some(first_txid);
    }

    /// A clean exit: everything written is on disk, and the run mark is removed.
    pub fn clean_exit(&mut self) {
        self.running = None;
        if self.visible.is_some() {
            self.durable = self.visible.clone();
        }
        self.torn = None;
    }

    pub fn load(&self) -> Option<Position> {
        self.visible.as_deref().and_then(decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lying_fsync_and_torn_writes_show_after_a_crash() {
        let p = |txid| Position {
            txid,
            ..Position::default()
        };
        let mut d = Disk::default();
        d.save(encode(&p(1)), WriteFault::None);
        d.save(encode(&p(2)), WriteFault::FsyncLie);
        assert_eq!(d.load().map(|p| p.txid), Some(2));
        d.crash();
        assert_eq!(d.load().map(|p| p.txid), Some(1));
        d.save(encode(&p(3)), WriteFault::Torn);
        d.crash();
        assert_eq!(d.load(), None);
    }
}
