//! The `walvault` binary: parses the command line, sets up logging, runs the command,
//! and maps the outcome to an exit code (0 ok, 1 failure, 2 usage; `verify`: 2 cannot verify).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use walvault::args::{Cli, Cmd, LogFormat, StoreArgs};
use walvault::restore::{Outcome, RestoreOptions};
use walvault::storage::{ReplicaUrl, Store, StoreOptions};
use walvault::watch::WatchOptions;
use walvault_engine::replicator::Config;
use walvault_engine::restore_plan::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    walvault::memory::return_freed_memory();
    walvault::memory::small_sqlite_connections();
    // One database keeps one thread busy at most (its file work runs on its task); more
    // databases spread over two. Each extra thread costs a stack and an allocator arena.
    let workers = match &cli.command {
        Cmd::Watch { dbs, .. } if dbs.len() <= 1 => 1,
        _ => 2,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        // Large WAL reads and files, checkpoints run in `block_in_place`; with many databases
        // an unbounded pool grows to hundreds of threads, each with a stack and an arena.
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // `Targets` takes RUST_LOG's `target=level,...` form without a regex engine (the
    // env-filter feature's regex code was ~0.3 MB of resident machine code).
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok());
    let filter = from_env.unwrap_or_else(|| {
        format!("warn,walvault={default}")
            .parse()
            .expect("the default filter parses")
    });
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Human => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter))
            .init(),
    }
}

async fn open_store(args: &StoreArgs) -> Result<Store> {
    let url = ReplicaUrl::parse(&args.replica)?;
    let opts = StoreOptions {
        endpoint: args.endpoint.clone(),
        region: args.region.clone(),
        force_path_style: None,
    };
    Store::open(&url, &opts)
        .await
        .with_context(|| format!("opening replica {url}"))
}

/// Largest WAL read at once. A tick at 100 commits/s reads ~400 kB; a read right after
/// a WAL restart would otherwise pull in the reused file's whole stale tail (4 MB) before
/// the engine learns where the live frames end. Every byte read is a transient
/// allocation, so this bounds that part of the peak RSS.
const WAL_READ_CHUNK: u64 = 256 * 1024;

async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Watch {
            dbs,
            store,
            sync_interval,
            ship_when_quiet,
            shutdown_timeout,
            max_in_flight,
            max_uploads,
            checkpoint_frames,
            truncate_bytes,
            release_idle_after,
        } => {
            let store = open_store(&store).await?;
            let config = Config {
                sync_interval_ms: sync_interval.as_millis().max(1) as u64,
                max_in_flight: max_in_flight.max(1),
                checkpoint_frames: checkpoint_frames.max(1),
                truncate_bytes,
                read_chunk_bytes: WAL_READ_CHUNK,
                quiet_ship_ms: ship_when_quiet.as_millis() as u64,
                ..Config::default()
            };
            let opts = WatchOptions {
                config,
                shutdown_timeout,
                max_uploads,
                snapshot_and_exit: false,
                idle: walvault::idle::IdleRelease::new(
                    Some(release_idle_after).filter(|d| !d.is_zero()),
                ),
            };
            walvault::watch::watch(&dbs, store, opts, walvault::watch::shutdown_signal()).await?;
        }
        Cmd::Snapshot { db, store } => {
            let store = open_store(&store).await?;
            let opts = WatchOptions {
                config: Config::default(),
                shutdown_timeout: std::time::Duration::from_secs(3600),
                max_uploads: 8,
                snapshot_and_exit: true,
                idle: walvault::idle::IdleRelease::never(),
            };
            walvault::watch::watch(
                std::slice::from_ref(&db),
                store,
                opts,
                walvault::watch::shutdown_signal(),
            )
            .await?;
        }
        Cmd::Restore {
            name,
            output,
            store,
            txid,
            timestamp,
            force,
            if_not_exists,
            dry_run,
        } => {
            let target = match (txid, timestamp) {
                (Some(t), _) => Target::Txid(
                    u64::from_str_radix(t.trim_start_matches("0x"), 16).with_context(|| {
                        format!("--txid '{t}' is not a hexadecimal TXID (e.g. 00000000000004d2)")
                    })?,
                ),
                (None, Some(ts)) => Target::Timestamp(
                    walvault_engine::time::parse_rfc3339_ms(&ts).with_context(|| {
                        format!("--timestamp '{ts}' is not RFC 3339 (e.g. 2026-11-21T12:00:00Z)")
                    })?,
                ),
                (None, None) => Target::Latest,
            };
            let store = open_store(&store).await?;
            let opts = RestoreOptions {
                name,
                output,
                target,
                force,
                if_not_exists,
                dry_run,
                integrity_check: true,
            };
            match walvault::restore::restore(&store, &opts).await? {
                Outcome::Restored { txid, files, pages } => {
                    eprintln!(
                        "restored {} to TXID {txid:016x} ({files} files, {pages} pages written)",
                        opts.output.display()
                    );
                }
                Outcome::Skipped => eprintln!("{} exists; nothing to do", opts.output.display()),
                Outcome::DryRun(plan) => {
                    println!(
                        "would restore TXID {:016x} from {} files:",
                        plan.txid,
                        plan.files.len()
                    );
                    for f in &plan.files {
                        println!("  {} ({} bytes)", f.id, f.size);
                    }
                }
            }
        }
        Cmd::Verify {
            name,
            store,
            json,
            full,
        } => {
            let opts = walvault::verify::VerifyOptions { name, full, json };
            // Exit 2 when the backup cannot be verified (bad URL included), 1 on problems.
            return Ok(walvault::verify::command(open_store(&store).await, &opts).await);
        }
        Cmd::List { store, name } => {
            let store = open_store(&store).await?;
            match name {
                Some(n) => print!("{}", walvault::list::describe(&store, &n).await?),
                None => {
                    for n in walvault::list::list_databases(&store).await? {
                        println!("{n}");
                    }
                }
            }
        }
        Cmd::Demo { dir, duration } => walvault::demo::run(dir, duration).await?,
    }
    Ok(ExitCode::SUCCESS)
}
