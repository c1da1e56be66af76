//! The shell's clock: the only place production time enters the engine.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use walvault_engine::time::Now;

#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> Now {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Now {
            mono_ms: self.start.elapsed().as_millis() as u64,
            wall_ms: wall,
        }
    }

    /// The tokio instant at which engine deadline `mono_ms` falls due.
    pub fn instant_at(&self, mono_ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + std::time::Duration::from_millis(mono_ms))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A seed for the engine's retry jitter, different per process and database.
pub fn seed(salt: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(salt.as_bytes());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
