//! The shell's clock: the only place production time enters the engine.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

    /// The tokio instant at which to act on engine deadline `mono_ms`: the deadline
    /// rounded up to the process-wide [`WAKE_GRID`], so the timers of many databases
    /// (ticks, looks) that fall due within one grid step are served by one wake-up of
    /// the runtime instead of one each. The engine takes late timers in its stride.
    pub fn instant_at(&self, mono_ms: u64) -> tokio::time::Instant {
        let due = self.start + Duration::from_millis(mono_ms);
        tokio::time::Instant::from_std(on_grid(*grid_origin(), due))
    }
}

/// The spacing of the instants timers fire at (see [`Clock::instant_at`]): a deadline
/// waits at most this long more, a few percent of the shortest timer that recurs (a
/// look, a quarter of a second at the default).
pub const WAKE_GRID: Duration = Duration::from_millis(10);

fn grid_origin() -> &'static Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now)
}

/// `due` rounded up to `origin` plus a whole number of [`WAKE_GRID`] steps.
fn on_grid(origin: Instant, due: Instant) -> Instant {
    let Some(since) = due.checked_duration_since(origin) else {
        return due;
    };
    let step = WAKE_GRID.as_nanos();
    let steps = since.as_nanos().div_ceil(step);
    let rounded = Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX));
    origin.checked_add(rounded).unwrap_or(due)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_the_grid() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        assert_eq!(on_grid(origin, at(0)), at(0));
        assert_eq!(on_grid(origin, at(1)), at(10));
        assert_eq!(on_grid(origin, at(10)), at(10));
        assert_eq!(on_grid(origin, at(1_234)), at(1_240));
        let just_after = at(20) + Duration::from_nanos(1);
        assert_eq!(on_grid(origin, just_after), at(30));
        // Deadlines of two clocks started apart land on the same instant.
        let (a, b) = (at(3), at(7));
        assert_eq!(
            on_grid(origin, a + Duration::from_millis(995)),
            on_grid(origin, b + Duration::from_millis(991))
        );
        // Before the origin (cannot happen in use): left alone.
        if let Some(before) = origin.checked_sub(Duration::from_millis(5)) {
            assert_eq!(on_grid(origin, before), before);
        }
    }
}
