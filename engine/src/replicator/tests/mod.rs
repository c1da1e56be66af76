//! Tests of the replication state machine against a simulated SQLite database and
//! object store.
//!
//! - `source`: the database file and WAL, changed as SQLite changes them, with the
//!   history of every committed state.
//! - `store`: the object store, its tip, and restore.
//! - `harness`: the driver that carries out the engine's commands like the shell, with
//!   a fake clock, scripted outcomes and the invariant checks.
//! - `streaming`, `faults`, `checkpoints`, `restarts`, `detach`, `quiet`: targeted
//!   scenarios.
//! - `model`: a model-based proptest over random operation sequences.

mod harness;
mod source;
mod store;

mod checkpoints;
mod detach;
mod faults;
mod model;
mod quiet;
mod restarts;
mod streaming;
