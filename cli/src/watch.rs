//! `walvault watch` and `walvault snapshot`: open every database, start one task per
//! database against one shared store, and stop them cleanly on Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};
use walvault_engine::replicator::Config;

use crate::database::{self, Database};
use crate::idle::IdleRelease;
use crate::replicate_task::{DbTask, check_unique_names};
use crate::storage::Store;

pub struct WatchOptions {
    pub config: Config,
    pub shutdown_timeout: Duration,
    pub max_uploads: usize,
    /// Stop as soon as everything is shipped, after writing a level-9 snapshot.
    pub snapshot_and_exit: bool,
    /// When idle databases give up their connection (decision 21).
    pub idle: IdleRelease,
}

/// Replicates `dbs` until `stop` completes (or, for snapshots, until done).
pub async fn watch(
    dbs: &[PathBuf],
    store: Store,
    opts: WatchOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stop);
    let names = dbs
        .iter()
        .map(|p| database::db_name(p))
        .collect::<Result<Vec<_>>>()?;
    check_unique_names(&names)?;
    let opened = dbs
        .iter()
        .map(|p| {
            let mut db = Database::open(p)?;
            if opts.idle.after.is_some() {
                // Checked; each task takes its connection back when its start-up turn
                // comes, so a thousand databases never hold a thousand connections.
                db.release()?;
            }
            Ok(db)
        })
        .collect::<Result<Vec<_>>>()?;
    store.check().await.context("the replica is not usable")?;
    let store = Arc::new(store);
    let uploads = Arc::new(Semaphore::new(opts.max_uploads.max(1)));
    let (stop_tx, stop_rx) = watch::channel(opts.snapshot_and_exit);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, db) in opened.into_iter().enumerate() {
        let mut cfg = opts.config.clone();
        cfg.seed = crate::clock::seed(&names[i]);
        let task = DbTask::new(
            db,
            Arc::clone(&store),
            cfg,
            Arc::clone(&uploads),
            opts.snapshot_and_exit,
            opts.idle.clone(),
        )?;
        tasks.spawn(task.run(stop_rx.clone()));
    }
    info!(databases = names.len(), "watching");
    let mut failures = Vec::new();
    tokio::select! {
        _ = &mut stop => {
            info!("shutting down: shipping what is committed and finishing uploads");
            let _ = stop_tx.send(true);
        }
        Some(r) = tasks.join_next() => record(r, &mut failures),
    }
    if failures.is_empty() && !*stop_tx.borrow() {
        // One task ended on its own (halted or done): keep the others until a signal.
        tokio::select! {
            _ = &mut stop => { let _ = stop_tx.send(true); }
            _ = async { while let Some(r) = tasks.join_next().await { record(r, &mut failures); } } => {}
        }
    }
    let _ = stop_tx.send(true);
    let deadline = tokio::time::sleep(if opts.snapshot_and_exit {
        Duration::from_secs(3600)
    } else {
        opts.shutdown_timeout
    });
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => record(r, &mut failures),
                None => break,
            },
            _ = &mut deadline => {
                warn!("shutdown timeout: {} database(s) still had uploads in flight; they resume from the WAL on the next start", tasks.len());
                tasks.abort_all();
                break;
            }
        }
    }
    if let Some(first) = failures.into_iter().next() {
        return Err(first);
    }
    Ok(())
}

fn record(r: Result<Result<()>, tokio::task::JoinError>, failures: &mut Vec<anyhow::Error>) {
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            failures.push(e);
        }
        Err(e) if e.is_cancelled() => {}
        Err(e) => failures.push(anyhow::anyhow!("a replication task crashed: {e}")),
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
