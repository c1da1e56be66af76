//! When a shell may close an idle database's SQLite connection, and when it must take
//! it again (decision 21). The shells own the connection and the clock; this owns the
//! decisions, so the production shell and the simulator follow the same policy:
//!
//! - release once the engine is quiescent: at once the first time (right after start-up),
//!   then only after the configured quiet period;
//! - while released, a WAL read may reach the engine only if it shows exactly what the
//!   last read under the lock showed ([`ReadSignature`]); anything else takes the lock
//!   again and reads again first, so the engine only consumes reads made under the lock;
//! - a wake that had to ship a whole-database file (the WAL restarted or vanished while
//!   released) in a database over [`PIN_ABOVE_BYTES`] keeps its connection from then on.

use std::hash::{DefaultHasher, Hash, Hasher};

/// A wake that finds the WAL restarted unseen reads the whole database to find the
/// pages that changed (decision 23); past this size that read costs more than the
/// connection saves, so such a database keeps its connection from then on.
pub const PIN_ABOVE_BYTES: u64 = 64 << 20;

/// One WAL read's answer, reduced to what tells two answers apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadSignature {
    offset: u64,
    max_len: u64,
    file_len: u64,
    db_len: u64,
    digest: u64,
}

/// What one WAL read returned: the answer to `Command::ReadWal`, before it becomes an
/// `Input::WalRead`. Both shells read into this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalChunk {
    pub header: Option<[u8; 32]>,
    pub file_len: u64,
    pub db_len: u64,
    pub data: Vec<u8>,
}

impl ReadSignature {
    /// The signature of the answer `chunk` to a read of up to `max_len` at `offset`.
    pub fn of(offset: u64, max_len: u64, chunk: &WalChunk) -> ReadSignature {
        // A fixed-key hash (the same in every run): it tells a changed header or frame
        // apart from the one read under the lock, with no adversary to defend against.
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

/// One database's release state. Times are the shell's monotonic milliseconds.
#[derive(Clone, Debug)]
pub struct Release {
    /// Quiescent this long (after the first quiescence) means released; `None`: never.
    after_ms: Option<u64>,
    /// The last read answered under the read lock, if it left the engine quiescent.
    last_locked_read: Option<ReadSignature>,
    quiet_since_ms: Option<u64>,
    /// Released at least once (the first time needs no quiet period).
    released_before: bool,
    /// Taken again after a release, until the engine is quiescent again.
    woke: bool,
    /// Keeps its connection for good (see [`PIN_ABOVE_BYTES`]).
    pinned: bool,
    /// The pin threshold: [`PIN_ABOVE_BYTES`] unless [`Release::with_pin_above`].
    pin_above_bytes: u64,
}

impl Release {
    pub fn new(after_ms: Option<u64>) -> Release {
        Release {
            after_ms,
            last_locked_read: None,
            quiet_since_ms: None,
            released_before: false,
            woke: false,
            pinned: false,
            pin_above_bytes: PIN_ABOVE_BYTES,
        }
    }

    /// The same policy with another pin threshold (the simulator's databases are far
    /// smaller than [`PIN_ABOVE_BYTES`], so it draws small ones to reach the pin).
    pub fn with_pin_above(self, bytes: u64) -> Release {
        Release {
            pin_above_bytes: bytes,
            ..self
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
        self.quiet_since_ms = None;
    }

    /// A whole-database file of `db_bytes` was started. `None` unless it answers a wake
    /// (the WAL restarted or vanished while released); then whether it pinned the
    /// database just now.
    pub fn on_whole_file(&mut self, db_bytes: u64) -> Option<bool> {
        if !self.woke || self.pinned {
            return None;
        }
        self.pinned = db_bytes > self.pin_above_bytes;
        Some(self.pinned)
    }

    /// Whether the database should be released now, given whether the engine is
    /// quiescent (asked after a comparable read under the lock).
    pub fn should_release(&mut self, quiescent: bool, now_ms: u64) -> bool {
        if !quiescent {
            self.quiet_since_ms = None;
            return false;
        }
        self.woke = false;
        let since = *self.quiet_since_ms.get_or_insert(now_ms);
        let Some(after) = self.after_ms else {
            return false;
        };
        !self.pinned && (!self.released_before || now_ms.saturating_sub(since) >= after)
    }

    pub fn released(&mut self) {
        self.released_before = true;
        self.quiet_since_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(offset: u64, header: Option<[u8; 32]>, data: &[u8], lens: (u64, u64)) -> ReadSignature {
        let chunk = WalChunk {
            header,
            file_len: lens.0,
            db_len: lens.1,
            data: data.to_vec(),
        };
        ReadSignature::of(offset, 100, &chunk)
    }

    #[test]
    fn signatures_differ_on_any_part_of_the_answer() {
        let h = Some([7u8; 32]);
        let base = sig(32, h, b"", (32, 4096));
        assert_eq!(base, sig(32, h, b"", (32, 4096)));
        assert_ne!(base, sig(32, h, b"x", (32, 4096)));
        assert_ne!(base, sig(32, h, b"", (64, 4096)));
        assert_ne!(base, sig(64, h, b"", (32, 4096)));
        assert_ne!(base, sig(32, Some([8; 32]), b"", (32, 4096)));
        assert_ne!(base, sig(32, None, b"", (32, 4096)));
        assert_ne!(base, sig(32, h, b"", (32, 8192)));
        let chunk = WalChunk {
            header: h,
            file_len: 32,
            db_len: 4096,
            data: Vec::new(),
        };
        assert_ne!(base, ReadSignature::of(32, 200, &chunk));
    }

    #[test]
    fn first_quiescence_releases_then_only_after_the_quiet_period() {
        let mut s = Release::new(Some(60_000));
        assert!(!s.should_release(false, 0));
        assert!(s.should_release(true, 0), "first quiescence after start");
        s.released();
        s.woke();
        assert!(!s.should_release(false, 0));
        assert!(!s.should_release(true, 1_000));
        assert!(!s.should_release(true, 60_000));
        assert!(s.should_release(true, 61_000));
    }

    #[test]
    fn never_releases_without_a_period_or_once_pinned() {
        let mut s = Release::new(None);
        assert!(!s.should_release(true, 0));
        let mut s = Release::new(Some(0));
        s.released();
        s.woke();
        assert_eq!(
            s.on_whole_file(PIN_ABOVE_BYTES),
            Some(false),
            "small: stays"
        );
        assert!(s.should_release(true, 0));
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
        assert!(!s.should_release(true, 0));
    }

    #[test]
    fn the_pin_threshold_can_be_lowered() {
        let mut s = Release::new(Some(0)).with_pin_above(4096);
        s.released();
        s.woke();
        assert_eq!(
            s.on_whole_file(4096),
            Some(false),
            "at the threshold: stays"
        );
        assert!(s.should_release(true, 0));
        s.released();
        s.woke();
        assert_eq!(s.on_whole_file(8192), Some(true), "above it: pinned");
        assert!(!s.should_release(true, 0));
    }

    #[test]
    fn reads_compare_only_with_a_quiescent_read_of_the_same_request() {
        let mut s = Release::new(Some(0));
        let a = sig(32, None, b"", (0, 4096));
        assert!(!s.unchanged(&a) && !s.last_read_was((32, 100)));
        s.set_locked_read(Some(a));
        assert!(s.unchanged(&a) && s.last_read_was((32, 100)));
        assert!(!s.last_read_was((32, 200)));
        s.set_locked_read(None);
        assert!(!s.unchanged(&a));
    }
}
