//! Shared helpers for walvault's integration tests (`mod support;`).
pub mod s3_server;
