//! Letting go of an idle database (decision 21). Once the engine has been quiescent for
//! the configured time, the task closes the database's SQLite connection (no read
//! lock, no `-shm` mapping, no descriptors). While released, every WAL read is compared
//! with the last read made under the lock; anything different takes the lock again and
//! reads again before the engine sees a byte, so the engine only ever consumes reads
//! made under the lock. Start-ups are gated so that a thousand databases do not all
//! hold a connection at once while they find their resume points.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::database::WalChunk;

/// Databases finding their resume point at once when idle ones are released.
pub const CONCURRENT_STARTS: usize = 16;

/// A wake that finds the WAL restarted unseen reads the whole database to find the
/// pages that changed (decision 23); past this size that read costs more than the
/// connection saves, so such a database keeps its connection from then on.
pub const PIN_ABOVE_BYTES: u64 = 64 << 20;

/// Longest a start-up holds its place in the start-up gate.
const START_SLOT: Duration = Duration::from_secs(5);

/// How a watch releases idle databases; shared by its tasks.
#[derive(Clone)]
pub struct IdleRelease {
    /// Quiescent this long (after the first quiescence) means released; `None`: never.
    pub after: Option<Duration>,
    /// The start-up gate ([`CONCURRENT_STARTS`] places), when releasing at all.
    pub starts: Option<Arc<Semaphore>>,
}

impl IdleRelease {
    pub fn new(after: Option<Duration>) -> IdleRelease {
        IdleRelease {
            after,
            starts: after.map(|_| Arc::new(Semaphore::new(CONCURRENT_STARTS))),
        }
    }

    pub fn never() -> IdleRelease {
        IdleRelease::new(None)
    }
}

/// One WAL read's answer, reduced to what tells two answers apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadSignature {
    offset: u64,
    max_len: u64,
    file_len: u64,
    db_len: u64,
    digest: u64,
}

impl ReadSignature {
    pub fn of(offset: u64, max_len: u64, chunk: &WalChunk) -> ReadSignature {
        // A fixed-key hash: it tells a changed header or frame apart from the one read
        // under the lock, with no adversary to defend against.
        let mut h = DefaultHasher::new();
        chunk.header.hash(&mut h);
        chunk.data.hash(&mut h);
        ReadSignature {
            offset,
            max_len,
            file_len: chunk.file_len,
            db_len: chunk.db_len,
            digest: h.finish(),
        }
    }
}

/// One database's release state.
pub struct IdleState {
    policy: IdleRelease,
    /// The last read answered under the read lock.
    last_locked_read: Option<ReadSignature>,
    quiet_since: Option<Instant>,
    /// The start-up's place in the gate, and when it was taken.
    start_slot: Option<(OwnedSemaphorePermit, Instant)>,
    /// Released at least once (the first time needs no quiet period).
    released_before: bool,
    /// Taken again after a release, until the engine is quiescent again.
    woke: bool,
    /// A wake found the WAL restarted or folded away (an application that checkpoints
    /// while walvault is away) in a database over [`PIN_ABOVE_BYTES`]: it keeps its
    /// connection from now on.
    pinned: bool,
}

impl IdleState {
    pub fn new(policy: IdleRelease) -> IdleState {
        IdleState {
            policy,
            last_locked_read: None,
            quiet_since: None,
            start_slot: None,
            released_before: false,
            woke: false,
            pinned: false,
        }
    }

    /// Waits for a place in the start-up gate (no wait when nothing is released).
    pub async fn enter_start(&mut self) {
        if let Some(gate) = self.policy.starts.clone()
            && let Ok(permit) = gate.acquire_owned().await
        {
            self.start_slot = Some((permit, Instant::now()));
        }
    }

    /// Records the last read made under the lock: its signature if it left the engine
    /// quiescent, else `None` (no release until a quiescent read).
    pub fn set_locked_read(&mut self, sig: Option<ReadSignature>) {
        self.last_locked_read = sig;
    }

    /// Whether a read made while released shows exactly what the last locked read did.
    pub fn unchanged(&self, sig: &ReadSignature) -> bool {
        self.last_locked_read.as_ref() == Some(sig)
    }

    /// Whether the last read under the lock asked for `(offset, max_len)`: only then
    /// can the reads made while released be compared with it. (Right after a file is
    /// cut the last read was a longer one; the next tick's read settles it.)
    pub fn last_read_was(&self, next: (u64, u64)) -> bool {
        self.last_locked_read
            .is_some_and(|s| (s.offset, s.max_len) == next)
    }

    /// Taken again after a release.
    pub fn woke(&mut self) {
        self.woke = true;
        self.quiet_since = None;
    }

    /// A whole-database file of `db_bytes` was started. `None` unless it answers a wake
    /// (the WAL restarted or vanished while released); then whether it pinned the
    /// database just now (databases over [`PIN_ABOVE_BYTES`]).
    pub fn on_whole_file(&mut self, db_bytes: u64) -> Option<bool> {
        if !self.woke || self.pinned {
            return None;
        }
        self.pinned = db_bytes > PIN_ABOVE_BYTES;
        Some(self.pinned)
    }

    /// Called after every step: gives up the start-up slot once the engine has caught
    /// up (or after [`START_SLOT`]), so the next database can start.
    pub fn note_progress(&mut self, quiescent: bool, now: Instant) {
        if let Some((_, at)) = &self.start_slot
            && (quiescent || now.duration_since(*at) >= START_SLOT)
        {
            self.start_slot = None;
        }
    }

    /// Whether the database should be released now, given whether the engine is
    /// quiescent (called when a comparable read under the lock was made).
    pub fn should_release(&mut self, quiescent: bool, now: Instant) -> bool {
        self.note_progress(quiescent, now);
        if !quiescent {
            self.quiet_since = None;
            return false;
        }
        self.woke = false;
        let since = *self.quiet_since.get_or_insert(now);
        let Some(after) = self.policy.after else {
            return false;
        };
        !self.pinned && (!self.released_before || now.duration_since(since) >= after)
    }

    pub fn released(&mut self) {
        self.released_before = true;
        self.quiet_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &[u8], file_len: u64) -> WalChunk {
        WalChunk {
            header: Some([7; 32]),
            file_len,
            db_len: 4096,
            data: data.to_vec(),
        }
    }

    #[test]
    fn signatures_differ_on_any_part_of_the_answer() {
        let base = ReadSignature::of(32, 100, &chunk(b"", 32));
        assert_eq!(base, ReadSignature::of(32, 100, &chunk(b"", 32)));
        assert_ne!(base, ReadSignature::of(32, 100, &chunk(b"x", 32)));
        assert_ne!(base, ReadSignature::of(32, 100, &chunk(b"", 64)));
        assert_ne!(base, ReadSignature::of(64, 100, &chunk(b"", 32)));
        let mut other_header = chunk(b"", 32);
        other_header.header = Some([8; 32]);
        assert_ne!(base, ReadSignature::of(32, 100, &other_header));
        let mut no_wal = chunk(b"", 32);
        no_wal.header = None;
        assert_ne!(base, ReadSignature::of(32, 100, &no_wal));
        let mut grown_db = chunk(b"", 32);
        grown_db.db_len = 8192;
        assert_ne!(base, ReadSignature::of(32, 100, &grown_db));
    }

    #[test]
    fn first_quiescence_releases_then_only_after_the_quiet_period() {
        let mut s = IdleState::new(IdleRelease::new(Some(Duration::from_secs(60))));
        let t0 = Instant::now();
        assert!(!s.should_release(false, t0));
        assert!(s.should_release(true, t0), "first quiescence after start");
        s.released();
        s.woke();
        assert!(!s.should_release(false, t0));
        assert!(!s.should_release(true, t0 + Duration::from_secs(1)));
        assert!(!s.should_release(true, t0 + Duration::from_secs(60)));
        assert!(s.should_release(true, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn never_releases_without_a_policy_or_once_pinned() {
        let mut s = IdleState::new(IdleRelease::never());
        assert!(!s.should_release(true, Instant::now()));
        let mut s = IdleState::new(IdleRelease::new(Some(Duration::ZERO)));
        s.released();
        s.woke();
        assert_eq!(
            s.on_whole_file(PIN_ABOVE_BYTES),
            Some(false),
            "small: stays"
        );
        assert!(s.should_release(true, Instant::now()));
        s.released();
        assert_eq!(
            s.on_whole_file(PIN_ABOVE_BYTES + 1),
            None,
            "not after a wake"
        );
        s.woke();
        assert_eq!(
            s.on_whole_file(PIN_ABOVE_BYTES + 1),
            Some(true),
            "large: pinned"
        );
        assert_eq!(s.on_whole_file(PIN_ABOVE_BYTES + 1), None, "reported once");
        assert!(!s.should_release(true, Instant::now()));
    }
}
