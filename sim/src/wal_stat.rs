//! What a stat of the WAL tells the engine (`Command::StatWal`): its modification stamp
//! and how long ago it was written, as production's `stat_wal` (cli/src/database.rs)
//! computes them from the file system's mtime and the wall clock, under the seed's
//! `StatClock`: a coarse mtime (writes within one step leave the stamp as it was) and a
//! clock step between the write and the stat (an mtime in the future counts as just
//! now, as production's stat takes it).

use crate::params::StatClock;
use crate::world::EPOCH_MS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalStat {
    pub stamp: u64,
    pub idle_ms: u64,
    /// The mtime read as later than now (a clock step back since the write).
    pub future: bool,
}

/// The stat of a WAL last written at `modified_ms` (simulated time), after `writes`
/// writes, seen at `now_ms`.
pub fn stat(clock: &StatClock, now_ms: u64, modified_ms: u64, writes: u64) -> WalStat {
    if clock.exact() {
        return WalStat {
            stamp: writes,
            idle_ms: now_ms.saturating_sub(modified_ms),
            future: false,
        };
    }
    let mut mtime = EPOCH_MS + modified_ms as i64 + clock.skew_ms;
    if clock.granularity_ms > 0 {
        mtime -= mtime.rem_euclid(clock.granularity_ms as i64);
    }
    let wall_now = EPOCH_MS + now_ms as i64;
    WalStat {
        // Nanoseconds since the Unix epoch, as production's stamp.
        stamp: (mtime.max(0) as u64).saturating_mul(1_000_000),
        idle_ms: u64::try_from(wall_now - mtime).unwrap_or(0),
        future: mtime > wall_now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(granularity_ms: u64, skew_ms: i64) -> StatClock {
        StatClock {
            granularity_ms,
            skew_ms,
        }
    }

    #[test]
    fn exact_stat_changes_with_every_write() {
        let c = clock(0, 0);
        assert_eq!(
            stat(&c, 1_500, 1_000, 7),
            WalStat {
                stamp: 7,
                idle_ms: 500,
                future: false
            }
        );
    }

    #[test]
    fn coarse_mtimes_hide_writes_within_a_step_and_read_older() {
        let c = clock(1_000, 0);
        // EPOCH_MS is a whole second: writes at 2.1 s and 2.9 s share a stamp.
        let a = stat(&c, 2_950, 2_100, 1);
        let b = stat(&c, 2_950, 2_900, 2);
        assert_eq!(a.stamp, b.stamp);
        assert_eq!(b.idle_ms, 950, "the mtime reads 2.0 s");
        assert_ne!(stat(&c, 3_100, 3_000, 3).stamp, b.stamp);
    }

    #[test]
    fn clock_steps_read_as_just_now_or_as_long_idle() {
        let ahead = clock(0, 5_000);
        let s = stat(&ahead, 2_000, 1_000, 1);
        assert!(s.future);
        assert_eq!(s.idle_ms, 0);
        let behind = clock(0, -5_000);
        let s = stat(&behind, 2_000, 1_000, 1);
        assert!(!s.future);
        assert_eq!(s.idle_ms, 6_000);
    }
}
