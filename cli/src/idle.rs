//! Letting go of an idle database (decision 21). Once the engine has been quiescent for
//! the configured time, the task closes the database's SQLite connection (no read
//! lock, no `-shm` mapping, no descriptors). While released, every WAL read is compared
//! with the last read made under the lock; anything different takes the lock again and
//! reads again before the engine sees a byte, so the engine only ever consumes reads
//! made under the lock. Those decisions are the engine's (`walvault_engine::release`,
//! which the simulator drives too); this module adds the start-up gate, so that a
//! thousand databases do not all hold a connection at once while they find their
//! resume points.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use walvault_engine::release::Release;

/// Databases finding their resume point at once when idle ones are released.
pub const CONCURRENT_STARTS: usize = 16;

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

/// One database's release state: the engine's [`Release`] decisions plus the
/// start-up gate.
pub struct IdleState {
    policy: IdleRelease,
    release: Release,
    /// The start-up's place in the gate, and when it was taken.
    start_slot: Option<(OwnedSemaphorePermit, Instant)>,
}

impl IdleState {
    pub fn new(policy: IdleRelease) -> IdleState {
        let after_ms = policy
            .after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        IdleState {
            policy,
            release: Release::new(after_ms),
            start_slot: None,
        }
    }

    /// The release decisions.
    pub fn release(&mut self) -> &mut Release {
        &mut self.release
    }

    /// Waits for a place in the start-up gate (no wait when nothing is released).
    pub async fn enter_start(&mut self) {
        if let Some(gate) = self.policy.starts.clone()
            && let Ok(permit) = gate.acquire_owned().await
        {
            self.start_slot = Some((permit, Instant::now()));
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_start_slot_is_held_until_caught_up_or_timed_out() {
        let policy = IdleRelease::new(Some(Duration::from_secs(60)));
        let gate = policy.starts.clone().unwrap();
        let mut a = IdleState::new(policy.clone());
        a.enter_start().await;
        assert_eq!(gate.available_permits(), CONCURRENT_STARTS - 1);
        let t0 = Instant::now();
        a.note_progress(false, t0);
        assert_eq!(gate.available_permits(), CONCURRENT_STARTS - 1);
        a.note_progress(true, t0);
        assert_eq!(gate.available_permits(), CONCURRENT_STARTS);
        let mut b = IdleState::new(policy);
        b.enter_start().await;
        b.note_progress(false, Instant::now() + START_SLOT);
        assert_eq!(gate.available_permits(), CONCURRENT_STARTS);
        assert!(IdleRelease::never().starts.is_none());
    }
}
