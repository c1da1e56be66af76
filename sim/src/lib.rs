//! walvault-sim: the deterministic simulator. It drives the very `Replicator` that
//! production runs, in simulated time, with real SQLite in the loop, a fault-injecting
//! object store and crashes at any event, and checks the failure catalog's invariants
//! after every event. A run is a pure function of its plan (seed → plan); a failing
//! seed reproduces with one command. See BATTLE_TESTING.md.
//!
//! Modules, from the bottom up:
//! - [`rng`] seeded ChaCha streams, [`params`] swarm parameters, [`plan`] plans,
//!   [`queue`] the event queue, [`trace`] the trace hash, [`coverage`] counters;
//! - [`memfs`] the in-memory local files and [`memvfs`] the SQLite VFS over them;
//! - [`app`] the application on SQLite, [`replica_db`] the replicator's SQLite side,
//!   [`oracle`] the independent record of every source state, [`pagesum`] its page
//!   checksums, [`image`] its database images, [`torn_append`] an application that
//!   died mid-append;
//! - [`store`] the object store, [`disk`] the local state area, [`wal_stat`] what a
//!   stat of the WAL reports;
//! - [`world`] the event loop (with `world_*`: faults, application, process life, final
//!   checks), [`shell`] command execution, [`requests`] store traffic (with `startup`
//!   and `completions`);
//! - [`restore`] and [`checker`] the invariants, [`invariant`] their names;
//! - [`mutation`] deliberately broken behaviours; [`sweep`], [`shrink`], [`cli`],
//!   [`malloc`] the allocator settings of the binary.

pub mod app;
pub mod checker;
pub mod cli;
mod completions;
pub mod corpus;
pub mod coverage;
pub mod disk;
pub mod image;
pub mod invariant;
pub mod malloc;
pub mod memfs;
pub mod memvfs;
pub mod mutation;
pub mod oracle;
pub mod pagesum;
pub mod panics;
pub mod params;
pub mod plan;
pub mod queue;
pub mod release;
pub mod replica_db;
pub mod requests;
pub mod restore;
pub mod rng;
pub mod shell;
mod shell_checkpoint;
mod shell_events;
pub mod shrink;
mod startup;
pub mod store;
pub mod sweep;
pub mod torn_append;
pub mod trace;
pub mod wal_stat;
pub mod wallclock;
pub mod world;
mod world_app;
mod world_faults;
mod world_final;
mod world_process;
mod world_run;

pub use world::{RunOptions, RunReport, run_plan};

/// SQLite's PRNG and the panic hook are process-wide, so runs in one process (say,
/// tests on several threads) take turns: `run_plan` holds this for a whole run.
pub fn process_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The plan of `seed`, optionally with a mutation switched on.
pub fn seed_plan(seed: u64, mutation: Option<mutation::Mutation>) -> plan::Plan {
    let mut p = plan::Plan::generate(seed, params::Params::draw(seed));
    p.mutation = mutation;
    p
}
