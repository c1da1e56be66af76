//! walvault-engine: the sans-IO core of walvault.
//!
//! Pure logic over bytes and caller-supplied time: the LTX codec, WAL parsing, the
//! replication state machine, restore planning and the object key layout. No files,
//! no clocks, no threads, no ambient randomness: the production shell and the
//! simulator drive exactly this code.

pub mod backoff;
pub mod dbsum;
pub mod keys;
pub mod ltx;
pub mod release;
pub mod replicator;
pub mod restore_plan;
pub mod spec;
pub mod time;
pub mod wal;
