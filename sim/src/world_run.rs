//! Running one plan from start to report: the world built, the event loop run, the
//! verdict, coverage and trace hash collected, and the run's files let go.

use crate::app;
use crate::coverage::{Cov, Coverage};
use crate::invariant::{Inv, Violation};
use crate::memfs;
use crate::plan::Plan;
use crate::world::*;

/// Runs one plan to completion (or its first violation).
pub fn run_plan(plan: Plan, opts: &RunOptions) -> RunReport {
    let _turn = crate::process_lock();
    let seed = plan.seed;
    // Files written while the world is built are stamped at time zero, not at the
    // previous run's last instant.
    memfs::set_time(0);
    let mut world = match World::new(plan.clone(), opts) {
        Ok(w) => w,
        Err(e) => {
            memfs::remove_dir(&app::run_dir(seed, &opts.tag));
            return RunReport {
                seed,
                violation: Some(Violation {
                    inv: Inv::Harness,
                    at_ms: 0,
                    detail: e,
                }),
                warnings: Vec::new(),
                trace_hash: String::new(),
                events: 0,
                trace_records: 0,
                sim_ms: 0,
                coverage: Coverage::default(),
                plan,
                dir: None,
                files: 0,
            };
        }
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    if let Err(payload) = r {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        let loc = crate::panics::take_location().unwrap_or_default();
        world.violation = Some(Violation {
            inv: Inv::Panic,
            at_ms: world.now,
            detail: format!("panic: {msg} {loc}"),
        });
    }
    let mut cov = std::mem::take(&mut world.cov);
    cov.add(Cov::RestoreCheck, world.checker.restore_checks);
    cov.add(Cov::OrphanFile, world.checker.orphans);
    let mut out_plan = world.plan.clone();
    if !out_plan.replay_faults {
        out_plan.faults = std::mem::take(&mut world.recorded);
        out_plan.replay_faults = true;
    }
    let failed = world.violation.is_some();
    let dir = world.app.dir.clone();
    let report = RunReport {
        seed,
        violation: world.violation.take(),
        warnings: std::mem::take(&mut world.warnings),
        trace_hash: world.trace.hash_hex(),
        events: world.events,
        trace_records: world.trace.records(),
        sim_ms: world.now,
        coverage: cov,
        plan: out_plan,
        dir: (failed && opts.keep_dir_on_failure).then(|| dir.clone()),
        files: world.files_cut,
    };
    if let Proc::Running(r) = std::mem::replace(&mut world.proc, Proc::Down) {
        let Running { engine, db, .. } = *r;
        drop(engine);
        if let Some(db) = db {
            db.close();
        }
    }
    if let Proc::Starting(s) = std::mem::replace(&mut world.proc, Proc::Down) {
        s.db.close();
    }
    world.oracle_conn = None;
    world.app.close();
    drop(world);
    if failed && opts.keep_dir_on_failure {
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = memfs::dump_dir(&dir) {
            eprintln!(
                "keeping the files of the failed run in {}: {e}",
                dir.display()
            );
        }
    }
    memfs::remove_dir(&dir);
    report
}
