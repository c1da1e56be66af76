//! walvault: the production shell around walvault-engine. Storage backends, the
//! SQLite side, one replication task per database, and the commands built on them.

pub mod args;
pub mod clock;
pub mod compare;
pub mod completion_queue;
pub mod database;
pub mod demo;
pub mod idle;
pub mod integrity;
pub mod list;
pub mod litestream_guard;
pub mod memory;
pub mod position;
pub mod remote;
pub mod replicate_task;
pub mod restore;
pub mod storage;
pub mod verify;
pub mod watch;
