//! The cost floor of sweep seeds: each seed's application workload alone, on the same
//! SQLite setup as a run (the in-memory VFS, the seed's page size, auto-vacuum and
//! autocheckpoint, SQLite's PRNG pinned), with no replicator, store, oracle or checks.
//! No simulated run of a seed can cost less than this; BATTLE_TESTING.md sets it
//! beside the sweep's figure.
//!
//! `cargo run --release -p walvault-sim --example workload_floor -- [START] [COUNT]`
//! (run it under `/usr/bin/time` for the CPU time; the figure printed is wall time).

use walvault_sim::app::{self, App};
use walvault_sim::params::Params;
use walvault_sim::plan::Plan;
use walvault_sim::{memfs, wallclock::Stopwatch};

fn main() -> Result<(), String> {
    let args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("usage: workload_floor [START] [COUNT]: {e}"))?;
    let start = args.first().copied().unwrap_or(0);
    let count = args.get(1).copied().unwrap_or(1_000);
    walvault_sim::malloc::keep_freed_memory();
    let clock = Stopwatch::start();
    let (mut ops, mut wal_bytes) = (0u64, 0u64);
    for seed in start..start + count {
        let params = Params::draw(seed);
        let plan = Plan::generate(seed, params.clone());
        app::pin_sqlite_prng(seed);
        let dir = app::run_dir(seed, "floor");
        let mut a = App::create(
            dir.clone(),
            params.page_size,
            params.auto_vacuum,
            params.app_autocheckpoint,
        )?;
        let wal = memfs::open(&a.wal_path);
        for op in &plan.workload {
            a.run(&op.op)?;
            ops += 1;
        }
        wal_bytes += wal.map_or(0, |w| w.stamp());
        a.close();
        memfs::remove_dir(&dir);
    }
    let ms = clock.elapsed_ms().max(1);
    println!(
        "{count} seeds, {ops} application operations ({:.0} per seed), {wal_bytes} WAL writes, \
         in {ms} ms wall: {:.1} seeds/s",
        ops as f64 / count as f64,
        count as f64 * 1000.0 / ms as f64
    );
    Ok(())
}
