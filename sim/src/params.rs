//! Swarm parameters: everything about a run that is not an individual decision,
//! drawn once per seed from its own stream. Each fault class is switched on or off per
//! seed and gets its own rate, so that a sweep explores many different mixes (swarm
//! testing) instead of one average mix where every fault is diluted by the others.
//! Rates are integers in parts per million. Printed at the start of every run.

use serde::{Deserialize, Serialize};
use walvault_engine::backoff::BackoffConfig;
use walvault_engine::replicator::Config;

use crate::rng::{Purpose, Stream};

/// Relative weights of the application's operations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    pub insert: u32,
    pub update: u32,
    pub delete: u32,
    pub large: u32,
    pub vacuum: u32,
    pub ddl: u32,
    pub long_txn: u32,
    pub ckpt_passive: u32,
    pub ckpt_full: u32,
    pub ckpt_restart: u32,
    pub ckpt_truncate: u32,
}

/// Object-store faults (each 0 when the class is off for this seed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFaults {
    /// 5xx before the write happened.
    pub put_transient: u32,
    /// 403 (clock skew, expired credentials): nothing written.
    pub put_permanent: u32,
    /// The write happened, then the response failed (timeout, reset, 500).
    pub put_ambiguous_after: u32,
    /// The request timed out before the write happened.
    pub put_ambiguous_before: u32,
    /// The write happened; the response never came (the client times out).
    pub put_lost_response: u32,
    /// The write lands after the client already gave up on it.
    pub put_late_write: u32,
    /// The request is delivered to the store twice (a second, delayed copy).
    pub put_duplicate: u32,
    /// Chance per request that a throttling burst (503 SlowDown on everything) starts.
    pub throttle_burst: u32,
    pub throttle_ms: u64,
    pub get_transient: u32,
    /// Read-after-write lag: a GET of a key written less than `stale_ms` ago says 404.
    pub get_stale: u32,
    pub stale_ms: u64,
    /// Short body that the client detects (content-length mismatch): an error.
    pub get_truncated: u32,
    /// Silent corruption of a GET body (bit flip or silent truncation).
    pub get_corrupt: u32,
    /// LIST shows the store as it was this long ago.
    pub list_lag_ms: u64,
    pub list_transient: u32,
    /// An outage: every request fails fast (503) for `outage_ms` from `outage_at_ms`
    /// (a regional outage, or a proxy in front of the store answering 503). What a
    /// retry without backoff turns into a storm (I6).
    #[serde(default)]
    pub outage_at_ms: u64,
    #[serde(default)]
    pub outage_ms: u64,
}

/// Latency of every store request (two legs: to the store, back to the client).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub base_ms: u64,
    pub jitter_ms: u64,
    /// Long tail: an extra delay of up to `tail_ms`.
    pub tail: u32,
    pub tail_ms: u64,
    /// Stalls on the response leg.
    pub stall: u32,
    pub stall_ms: u64,
    /// How long the client waits for a response it never gets.
    pub timeout_ms: u64,
}

/// Faults of the replicator's host: its view of the database and its local disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFaults {
    /// A WAL read that catches the application mid-append (torn tail).
    pub torn_read: u32,
    /// An application operation runs between two commands of the replicator, or
    /// between the steps of one (the application is another process).
    pub interleave: u32,
    /// A completion delivered twice to the engine (a duplicate or late delivery).
    pub dup_completion: u32,
    /// Building a file into the staging area fails (ENOSPC, EIO, short read).
    pub staging_fail: u32,
    /// fsync reports success but the position write is not durable.
    pub fsync_lie: u32,
    /// A crash tears the position write (garbage on the next start).
    pub torn_write: u32,
    /// Persisting the position fails (ENOSPC, EIO): the process exits.
    pub persist_fail: u32,
    /// Chance per application operation that the application then dies while
    /// appending its next transaction: frames after the last commit, the commit frame
    /// half written (torn_append.rs).
    #[serde(default)]
    pub torn_append: u32,
}

/// The host's view of the WAL's modification time, which a look (`Command::StatWal`)
/// reads: production's stat gives the file system's mtime, in its granularity, by a
/// clock that may have stepped since the write. Both zero: exact (the stamp changes
/// with every write, the idle time is true).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatClock {
    /// Modification times are whole multiples of this (coarse file systems: 1-2 s;
    /// ext4's are a clock tick). Writes within one step leave the stamp unchanged.
    pub granularity_ms: u64,
    /// Modification times read this far ahead of the clock the idle time is measured
    /// with (positive: a write "in the future" after the clock stepped back, which
    /// production's stat takes as just now) or behind it (negative: the clock stepped
    /// forward, the WAL looks idle for longer than it was).
    pub skew_ms: i64,
}

impl StatClock {
    pub fn exact(&self) -> bool {
        self.granularity_ms == 0 && self.skew_ms == 0
    }
}

/// Crashes and restarts of the replicator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crashes {
    /// Crashes at event boundaries, drawn up front.
    pub count: u32,
    /// Chance per executed command of a kill right before it (inside a drain).
    pub in_drain: u32,
    /// Share (ppm) of stops that are clean (Shutdown, maybe with a snapshot).
    pub clean: u32,
    pub down_min_ms: u64,
    pub down_max_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub page_size: u32,
    pub sync_interval_ms: u64,
    pub max_in_flight: usize,
    pub checkpoint_frames: u64,
    pub checkpoint_lock_ms: u64,
    pub truncate_bytes: u64,
    pub read_chunk_bytes: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub engine_seed: u64,
    /// The application's `wal_autocheckpoint` (0: off).
    pub app_autocheckpoint: u32,
    pub auto_vacuum: bool,
    /// Length of the chaotic phase; faults and crashes stop at its end.
    pub chaos_ms: u64,
    pub workload_ops: u32,
    pub mix: Mix,
    pub store: StoreFaults,
    pub latency: Latency,
    pub host: HostFaults,
    pub crashes: Crashes,
    /// The store loses acknowledged writes (detection is required, not recovery).
    pub lossy: bool,
    /// Number of loss events (each removes one stored object) when lossy.
    pub losses: u32,
    /// The shell releases a quiescent database's connection after this long (and at
    /// once after start-up), as `watch --release-idle-after` does; `None`: never.
    #[serde(default)]
    pub release_idle_ms: Option<u64>,
    /// The engine ships a batch once the writer has been quiet this long
    /// (`watch --ship-when-quiet`; 0: at ticks only).
    #[serde(default)]
    pub quiet_ship_ms: u64,
    /// A wake that ships a whole-database file pins a database above this many bytes
    /// (`walvault_engine::release::PIN_ABOVE_BYTES` when `None`: 64 MiB, which no
    /// simulated database reaches).
    #[serde(default)]
    pub release_pin_above: Option<u64>,
    /// What the WAL's stat reports (exact when `StatClock::exact`).
    #[serde(default)]
    pub stat_clock: StatClock,
}

fn maybe(r: &mut Stream, on_ppm: u32, rates: &[u32]) -> u32 {
    if r.chance(on_ppm) { r.pick(rates) } else { 0 }
}

impl Params {
    /// Draws the swarm parameters of `seed`. `size` scales the workload (1 = a sweep
    /// seed of about a thousand events).
    pub fn draw(seed: u64) -> Params {
        let r = &mut Stream::new(seed, Purpose::Params);
        let page_size = r.pick(&[512, 1024, 1024, 2048, 4096, 4096]);
        let sync_interval_ms = r.pick(&[10, 50, 100, 100, 250, 1000]);
        let chaos_ms = (sync_interval_ms * r.range(40, 200)).clamp(3_000, 30_000);
        let mix = Mix {
            insert: r.range(20, 60) as u32,
            update: r.range(5, 40) as u32,
            delete: r.range(0, 20) as u32,
            large: r.pick(&[0, 2, 5, 10]),
            vacuum: r.pick(&[0, 0, 1, 2]),
            ddl: r.pick(&[0, 1, 2]),
            long_txn: r.pick(&[0, 0, 2, 5]),
            ckpt_passive: r.pick(&[0, 1, 3]),
            ckpt_full: r.pick(&[0, 1, 2]),
            ckpt_restart: r.pick(&[0, 1, 2]),
            ckpt_truncate: r.pick(&[0, 1, 2]),
        };
        let store = StoreFaults {
            put_transient: maybe(r, 500_000, &[10_000, 50_000, 200_000]),
            put_permanent: maybe(r, 200_000, &[5_000, 20_000]),
            put_ambiguous_after: maybe(r, 500_000, &[10_000, 50_000, 150_000]),
            put_ambiguous_before: maybe(r, 300_000, &[10_000, 50_000]),
            put_lost_response: maybe(r, 300_000, &[10_000, 30_000]),
            put_late_write: maybe(r, 300_000, &[10_000, 30_000]),
            put_duplicate: maybe(r, 300_000, &[10_000, 50_000]),
            throttle_burst: maybe(r, 250_000, &[2_000, 10_000]),
            throttle_ms: r.pick(&[200, 1_000, 3_000]),
            get_transient: maybe(r, 400_000, &[20_000, 100_000]),
            get_stale: maybe(r, 300_000, &[100_000, 300_000]),
            stale_ms: r.pick(&[50, 500, 2_000]),
            get_truncated: maybe(r, 300_000, &[20_000, 100_000]),
            get_corrupt: 0,
            list_lag_ms: if r.chance(300_000) {
                r.pick(&[100, 1_000, 5_000])
            } else {
                0
            },
            list_transient: maybe(r, 300_000, &[50_000, 200_000]),
            outage_at_ms: 0,
            outage_ms: 0, // drawn last, below
        };
        let latency = Latency {
            base_ms: r.pick(&[1, 5, 20, 50]),
            jitter_ms: r.pick(&[0, 5, 30, 100]),
            tail: maybe(r, 500_000, &[10_000, 50_000]),
            tail_ms: r.pick(&[500, 2_000]),
            stall: maybe(r, 300_000, &[2_000, 10_000]),
            stall_ms: r.pick(&[5_000, 15_000]),
            timeout_ms: r.pick(&[2_000, 10_000, 30_000]),
        };
        let host = HostFaults {
            torn_read: maybe(r, 400_000, &[50_000, 200_000]),
            interleave: maybe(r, 400_000, &[20_000, 100_000]),
            dup_completion: maybe(r, 400_000, &[20_000, 100_000]),
            staging_fail: maybe(r, 200_000, &[5_000, 20_000]),
            fsync_lie: maybe(r, 300_000, &[100_000, 500_000]),
            torn_write: maybe(r, 300_000, &[100_000, 500_000]),
            persist_fail: maybe(r, 200_000, &[2_000, 10_000]),
            torn_append: 0, // drawn last, below
        };
        let crashes = Crashes {
            count: r.pick(&[0, 1, 2, 4, 8]),
            in_drain: maybe(r, 400_000, &[1_000, 5_000]),
            clean: r.pick(&[0, 200_000, 500_000]),
            down_min_ms: r.pick(&[10, 200, 1_000]),
            down_max_ms: r.pick(&[1_000, 5_000, 20_000]),
        };
        let lossy = r.chance(50_000);
        let mut p = Params {
            page_size,
            sync_interval_ms,
            max_in_flight: r.pick(&[1, 2, 4, 4, 6]),
            checkpoint_frames: r.pick(&[10, 30, 100, 300, 1_000]),
            checkpoint_lock_ms: r.pick(&[20, 200, 2_000]),
            truncate_bytes: 0, // set below, relative to the checkpoint threshold
            read_chunk_bytes: r.pick(&[u64::from(page_size) + 24, 4096, 65_536, 4 * 1024 * 1024]),
            backoff_base_ms: r.pick(&[10, 50, 100]),
            backoff_max_ms: r.pick(&[500, 2_000, 10_000, 30_000]),
            engine_seed: r.u64(),
            app_autocheckpoint: r.pick(&[0, 0, 100, 1_000]),
            auto_vacuum: r.coin(),
            chaos_ms,
            workload_ops: r.range(150, 400) as u32,
            mix,
            store,
            latency,
            host,
            crashes,
            lossy,
            losses: if lossy { r.range(1, 3) as u32 } else { 0 },
            release_idle_ms: None,
            quiet_ship_ms: 0,
            release_pin_above: None,
            stat_clock: StatClock::default(),
        };
        // TRUNCATE is the brake for a WAL that PASSIVE checkpoints cannot keep short.
        let frame = u64::from(page_size) + 24;
        p.truncate_bytes = r.pick(&[2, 4, 1_000_000]) * p.checkpoint_frames * frame;
        // Drawn last, so every earlier parameter of a seed is what it was before.
        p.release_idle_ms = r
            .chance(600_000)
            .then(|| r.pick(&[0, 0, 200, 1_000, 5_000]));
        // Drawn after it for the same reason: a quarter or an eighth of the sync
        // interval (the CLI's 250 ms at 1 s), or off.
        let quiet = p.sync_interval_ms / r.pick(&[4, 4, 8, u64::MAX]);
        p.quiet_ship_ms = if quiet >= 10 { quiet } else { 0 };
        // And after that: a store outage in a quarter of the seeds, within the faults.
        if r.chance(250_000) {
            p.store.outage_ms = r.pick(&[2_000, 5_000, 15_000]);
            p.store.outage_at_ms = r.range(0, p.chaos_ms);
        }
        p.host.torn_append = maybe(r, 250_000, &[20_000, 100_000]);
        // And last: a third of the seeds that release pin a database after a costly
        // wake, at sizes the simulated databases reach.
        if p.release_idle_ms.is_some() && r.chance(333_333) {
            p.release_pin_above = Some(r.pick(&[0, 16 << 10, 64 << 10, 256 << 10]));
        }
        // And last: half the seeds with duplicate completions duplicate half of them.
        // I5's mutations are only caught when a copy of a failure lands while the
        // retry of the same file is in flight; at 2-10 % few seeds ever see that
        // (delays of seconds instead were tried: the copies then land after the file is
        // done and catch fewer).
        if p.host.dup_completion > 0 && r.chance(500_000) {
            p.host.dup_completion = 500_000;
        }
        // And last: a third of the seeds see the WAL's modification time coarse or off
        // by a clock step, or both (only looks read it, so only seeds that ship when
        // quiet can notice).
        if r.chance(333_333) {
            p.stat_clock = StatClock {
                granularity_ms: r.pick(&[0, 10, 1_000, 2_000]),
                skew_ms: r.pick(&[-5_000, -300, 0, 300, 5_000, 60_000]),
            };
        }
        p
    }

    /// The engine configuration of one incarnation.
    pub fn engine_config(&self, incarnation: u64) -> Config {
        Config {
            sync_interval_ms: self.sync_interval_ms,
            max_in_flight: self.max_in_flight,
            backoff: BackoffConfig {
                base_ms: self.backoff_base_ms,
                max_ms: self.backoff_max_ms,
            },
            checkpoint_frames: self.checkpoint_frames,
            checkpoint_lock_ms: self.checkpoint_lock_ms,
            truncate_bytes: self.truncate_bytes,
            read_chunk_bytes: self.read_chunk_bytes,
            quiet_ship_ms: self.quiet_ship_ms,
            seed: self.engine_seed ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            node_id: 0,
        }
    }

    /// Upper bound on the time from the end of the faults to zero lag: the longest
    /// backoff twice, a stalled request, a restart, checkpoint attempts and a margin.
    pub fn liveness_bound_ms(&self) -> u64 {
        2 * self.backoff_max_ms
            + 2 * (self.latency.stall_ms + self.latency.tail_ms + self.latency.timeout_ms)
            + self.crashes.down_max_ms
            + self.checkpoint_lock_ms
            + 40 * self.sync_interval_ms
            + 10_000
    }

    /// The retry-storm bound of I6: at most `.1` requests of one kind (uploads, or
    /// checks) for one file within any `.0` ms. Full-jitter backoff waits a uniform
    /// delay in `[1, min(max, base * 2^(n-1))]` after the n-th failure, so only the
    /// attempts whose ceiling is still below `max` can come quickly (about
    /// log2(max / base) + 1 of them); after that, k more attempts fit in one window of
    /// `max` ms only if k uniform draws sum below it, with probability at most 1/k!
    /// (12 more: 2e-9). A retry without backoff during a throttling burst sends one
    /// request per round trip.
    pub fn storm_bound(&self) -> (u64, usize) {
        let base = self.backoff_base_ms.max(1);
        let max = self.backoff_max_ms.max(base);
        let ramp = (max / base).ilog2() as usize + 1;
        (max, ramp + 12)
    }

    /// Switches every fault class off (used by `--calm` and the shrinker).
    pub fn without_faults(&mut self) {
        self.store = StoreFaults::default();
        self.host = HostFaults::default();
        self.crashes.count = 0;
        self.crashes.in_drain = 0;
        self.latency.tail = 0;
        self.latency.stall = 0;
        self.lossy = false;
        self.losses = 0;
    }

    /// Multi-line description printed at the start of a run.
    pub fn describe(&self) -> String {
        let on = |name: &str, ppm: u32| {
            if ppm > 0 {
                format!(" {name}={}", ppm_str(ppm))
            } else {
                String::new()
            }
        };
        let s = &self.store;
        let h = &self.host;
        let l = &self.latency;
        let c = &self.crashes;
        let m = &self.mix;
        let mut out = String::new();
        out.push_str(&format!(
            "engine: page_size={} sync={}ms window={} ckpt_frames={} ckpt_lock={}ms truncate={}B chunk={}B backoff={}..{}ms\n",
            self.page_size,
            self.sync_interval_ms,
            self.max_in_flight,
            self.checkpoint_frames,
            self.checkpoint_lock_ms,
            self.truncate_bytes,
            self.read_chunk_bytes,
            self.backoff_base_ms,
            self.backoff_max_ms
        ));
        out.push_str(&format!(
            "workload: ops={} chaos={}ms autocheckpoint={} auto_vacuum={} mix: ins={} upd={} del={} large={} vacuum={} ddl={} long={} ckpt p/f/r/t={}/{}/{}/{}\n",
            self.workload_ops,
            self.chaos_ms,
            self.app_autocheckpoint,
            self.auto_vacuum,
            m.insert,
            m.update,
            m.delete,
            m.large,
            m.vacuum,
            m.ddl,
            m.long_txn,
            m.ckpt_passive,
            m.ckpt_full,
            m.ckpt_restart,
            m.ckpt_truncate
        ));
        let mut f = String::new();
        f.push_str(&on("put_transient", s.put_transient));
        f.push_str(&on("put_permanent", s.put_permanent));
        f.push_str(&on("put_ambiguous_after", s.put_ambiguous_after));
        f.push_str(&on("put_ambiguous_before", s.put_ambiguous_before));
        f.push_str(&on("put_lost_response", s.put_lost_response));
        f.push_str(&on("put_late_write", s.put_late_write));
        f.push_str(&on("put_duplicate", s.put_duplicate));
        if s.throttle_burst > 0 {
            f.push_str(&format!(
                " throttle={}x{}ms",
                ppm_str(s.throttle_burst),
                s.throttle_ms
            ));
        }
        f.push_str(&on("get_transient", s.get_transient));
        if s.get_stale > 0 {
            f.push_str(&format!(
                " get_stale={}@{}ms",
                ppm_str(s.get_stale),
                s.stale_ms
            ));
        }
        f.push_str(&on("get_truncated", s.get_truncated));
        f.push_str(&on("get_corrupt", s.get_corrupt));
        if s.list_lag_ms > 0 {
            f.push_str(&format!(" list_lag={}ms", s.list_lag_ms));
        }
        f.push_str(&on("list_transient", s.list_transient));
        if s.outage_ms > 0 {
            f.push_str(&format!(" outage={}ms@{}ms", s.outage_ms, s.outage_at_ms));
        }
        out.push_str(&format!(
            "store faults:{}\n",
            if f.is_empty() { " none".into() } else { f }
        ));
        out.push_str(&format!(
            "latency: base={}ms jitter={}ms{}{} timeout={}ms\n",
            l.base_ms,
            l.jitter_ms,
            if l.tail > 0 {
                format!(" tail={}x{}ms", ppm_str(l.tail), l.tail_ms)
            } else {
                String::new()
            },
            if l.stall > 0 {
                format!(" stall={}x{}ms", ppm_str(l.stall), l.stall_ms)
            } else {
                String::new()
            },
            l.timeout_ms
        ));
        let mut hf = String::new();
        hf.push_str(&on("torn_read", h.torn_read));
        hf.push_str(&on("interleave", h.interleave));
        hf.push_str(&on("dup_completion", h.dup_completion));
        hf.push_str(&on("staging_fail", h.staging_fail));
        hf.push_str(&on("fsync_lie", h.fsync_lie));
        hf.push_str(&on("torn_write", h.torn_write));
        hf.push_str(&on("persist_fail", h.persist_fail));
        hf.push_str(&on("torn_append", h.torn_append));
        out.push_str(&format!(
            "host faults:{}\n",
            if hf.is_empty() { " none".into() } else { hf }
        ));
        out.push_str(&match (self.release_idle_ms, self.release_pin_above) {
            (Some(ms), Some(b)) => format!("idle release: after {ms}ms, pinned above {b}B\n"),
            (Some(ms), None) => format!("idle release: after {ms}ms\n"),
            (None, _) => "idle release: never\n".to_string(),
        });
        out.push_str(&format!("ship when quiet: {}ms\n", self.quiet_ship_ms));
        if !self.stat_clock.exact() {
            out.push_str(&format!(
                "WAL stat: mtime granularity {}ms, skew {}ms\n",
                self.stat_clock.granularity_ms, self.stat_clock.skew_ms
            ));
        }
        out.push_str(&format!(
            "crashes: {} at boundaries, in_drain={}, clean={}, down {}..{}ms; lossy={}{}",
            c.count,
            ppm_str(c.in_drain),
            ppm_str(c.clean),
            c.down_min_ms,
            c.down_max_ms,
            self.lossy,
            if self.lossy {
                format!(" ({} losses)", self.losses)
            } else {
                String::new()
            }
        ));
        out
    }
}

/// `25000` ppm → `2.5%`.
pub fn ppm_str(ppm: u32) -> String {
    let tenths = (u64::from(ppm) + 500) / 1_000; // tenths of a percent
    format!("{}.{}%", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_varied() {
        assert_eq!(Params::draw(1), Params::draw(1));
        let distinct: std::collections::BTreeSet<u32> =
            (0..50).map(|s| Params::draw(s).page_size).collect();
        assert!(distinct.len() > 2);
        assert_eq!(ppm_str(25_000), "2.5%");
        assert!(Params::draw(3).describe().contains("engine: page_size="));
    }
}
