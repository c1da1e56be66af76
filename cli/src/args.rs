//! The command line: every subcommand and flag, with the help text users see.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "walvault",
    version,
    about = "Continuous replication of SQLite databases to S3-compatible storage or a directory, Litestream 0.5 compatible"
)]
#[command(
    after_help = "Exit codes: 0 success, 1 failure (the message says what to do), 2 invalid usage; verify: 1 problems found, 2 cannot verify.\n\
Replica URLs: file:///path/to/dir (no server needed) or s3://bucket/prefix (endpoint from --endpoint or AWS_ENDPOINT_URL_S3, credentials from the standard AWS chain)."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "WALVAULT_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// More detail in logs (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Replica URL: file:///dir or s3://bucket/prefix.
    #[arg(
        short = 'b',
        long = "replica",
        value_name = "URL",
        env = "WALVAULT_REPLICA"
    )]
    pub replica: String,
    /// S3 endpoint for S3-compatible servers (MinIO, R2, ...); path-style addressing is used with it.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3 region (default: from the AWS configuration, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Replicate databases continuously until Ctrl-C / SIGTERM (then finish uploads and exit 0).
    Watch {
        /// Database files (WAL mode). Each is stored under its file stem.
        #[arg(required = true, value_name = "DB")]
        dbs: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// How often committed transactions are shipped as one file (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        sync_interval: Duration,
        /// Ship a database's pending transactions once its writer has been quiet this
        /// long, without waiting for the next sync tick: the last commits of a writer that
        /// stops go out this long after them instead of up to a whole interval later. An
        /// active database's WAL is `stat`ed about once per quiet period in the second half
        /// of each interval; files are never closer than half a sync interval, so a bursty
        /// writer gets at most two files (PUTs) per interval, a steady one still one. Takes
        /// effect only if at most half the sync interval (set it with a short
        /// --sync-interval); 0 ships at ticks only.
        #[arg(long, default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
        ship_when_quiet: Duration,
        /// Longest wait for in-flight uploads on shutdown.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        shutdown_timeout: Duration,
        /// Uploads in flight per database. At 1 (the default) each database's files land
        /// in TXID order, so a reader that does not wait out gaps (`litestream restore`)
        /// never sees a later file before an earlier one; more overlaps the uploads of a
        /// busy database on a high-latency store, and a restore taken at the wrong moment
        /// can then find a gap (`walvault restore` lists again for up to 3 s).
        #[arg(long, default_value_t = 1, value_name = "N")]
        max_in_flight: usize,
        /// Uploads in flight across all databases.
        #[arg(long, default_value_t = 32)]
        max_uploads: usize,
        /// Checkpoint (PASSIVE) once this many WAL frames are safely replicated.
        #[arg(long, default_value_t = 1000)]
        checkpoint_frames: u64,
        /// WAL size in bytes past which the checkpoint is TRUNCATE (followed by a full snapshot).
        #[arg(long, default_value_t = 256 * 1024 * 1024)]
        truncate_bytes: u64,
        /// Close an idle database's SQLite connection once everything is shipped and
        /// nothing changed for this long (0 keeps every connection open). A released
        /// database costs no SQLite memory, -shm mapping or file descriptor; its WAL is
        /// still looked at every sync interval, and the first change takes the connection
        /// back before anything is read. Right after start-up a database is released as
        /// soon as it has caught up. If the application checkpoints the WAL away while it
        /// is released, walvault ships one file of the pages that changed (and a
        /// database over 64 MiB keeps its connection from then on).
        #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
        release_idle_after: Duration,
    },
    /// Write a snapshot (level 9) of a database's current state and exit.
    Snapshot {
        #[arg(value_name = "DB")]
        db: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rebuild a database from the replica (latest state unless --txid/--timestamp).
    ///
    /// With `watch --max-in-flight` above 1, a later file can land before an earlier one
    /// still in flight: a gap in the TXID chain is listed again for up to 3 s before the
    /// restore fails (exit 1, naming the --txid that restores the state before the gap).
    Restore {
        /// Database name in the replica (the file stem it was replicated from).
        name: String,
        /// Where to write the restored database.
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Restore the state at this TXID (hex, as in file names).
        #[arg(long, value_name = "HEX", conflicts_with = "timestamp")]
        txid: Option<String>,
        /// Restore the newest TXID written at or before this time (RFC 3339, to the
        /// millisecond): a file whose timestamp equals the time is included (Litestream
        /// leaves it out).
        #[arg(long, value_name = "RFC3339")]
        timestamp: Option<String>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
        /// Exit 0 without doing anything when the output exists (for start-up scripts).
        #[arg(long, conflicts_with = "force")]
        if_not_exists: bool,
        /// Print the files that would be applied and exit.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a database's backup without restoring it: snapshot, headers, TXID chain,
    /// hash chain, restorability. Exit 0 ok, 1 problems found, 2 cannot verify.
    ///
    /// A gap in the TXID chain is listed again for up to 3 s before it counts (while
    /// walvault watch runs with --max-in-flight above 1, a file can land before an
    /// earlier one still in flight).
    Verify {
        /// Database name in the replica (the file stem it was replicated from).
        name: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Print a machine-readable JSON report on stdout.
        #[arg(long)]
        json: bool,
        /// Download every object, decode every page, check SHA-256 digests and that the
        /// newest state's restore plan rebuilds the database checksum walvault recorded
        /// (default: headers, indexes, trailers and metadata only).
        #[arg(long)]
        full: bool,
    },
    /// List the databases in a replica, or one database's files and restorable window.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Show this database's files.
        name: Option<String>,
    },
    /// Demonstrate the main job end to end in a temporary directory: write to a database
    /// while it is watched into a file:// replica, restore it, compare page for page.
    Demo {
        /// Directory to work in (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How long the writer runs.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
    },
}

/// `1s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': use e.g. 1s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in '{s}': use ms, s, m or h")),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration '{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
