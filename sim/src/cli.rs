//! The command line: `run`, `sweep`, `replay`, `shrink`, `params`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::invariant::Inv;
use crate::mutation::Mutation;
use crate::plan::Plan;
use crate::sweep::{SweepArgs, WorkerArgs};
use crate::world::{RunOptions, RunReport, run_plan};

#[derive(Parser)]
#[command(
    name = "walvault-sim",
    about = "Deterministic simulator: the real walvault engine, real SQLite, a faulty store, crashes",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Switch on a deliberately broken behaviour (see BATTLE_TESTING.md).
    #[arg(long, value_parser = parse_mutation)]
    mutation: Option<Mutation>,
    /// Treat warnings (e.g. a busy-looping timer) as failures.
    #[arg(long)]
    strict: bool,
    /// Check the oracle against SQLite's own view after every commit (slow).
    #[arg(long)]
    paranoid: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one seed: parameters, one line per event, the verdict.
    Run {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        common: Common,
        /// Only the parameters and the verdict, no event lines.
        #[arg(long, short)]
        quiet: bool,
        /// Run twice and compare the trace hashes.
        #[arg(long)]
        check_determinism: bool,
        /// Where to write the plan (with its fault decisions) when the run fails.
        #[arg(long)]
        save_plan: Option<PathBuf>,
        /// Keep the run's SQLite directory when it fails.
        #[arg(long)]
        keep: bool,
    },
    /// Run a range of seeds on several processes and summarize.
    Sweep {
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        jobs: u64,
        /// Stop starting seeds after this long (e.g. 10m, 90s).
        #[arg(long)]
        budget: Option<String>,
        #[command(flatten)]
        common: Common,
        /// Write each failing seed's plan into this directory.
        #[arg(long)]
        save_failures: Option<PathBuf>,
        /// Fail when a rare coverage counter stays at zero.
        #[arg(long)]
        require_coverage: bool,
        /// Succeed even when seeds fail (the canary: failures are the point).
        #[arg(long)]
        expect_failures: bool,
    },
    #[command(hide = true)]
    SweepWorker {
        #[arg(long)]
        start: u64,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        stride: u64,
        #[arg(long)]
        offset: u64,
        #[arg(long)]
        budget_ms: Option<u64>,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        save_failures: Option<PathBuf>,
    },
    /// Run a plan (JSON) exactly.
    Replay {
        plan: PathBuf,
        #[arg(long, short)]
        quiet: bool,
        #[arg(long)]
        check_determinism: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Reduce a failing seed or plan to a smaller plan that fails the same way.
    Shrink {
        /// A plan file (or use --seed).
        plan: Option<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        common: Common,
        /// Where to write the shrunk plan.
        #[arg(long)]
        out: Option<PathBuf>,
        /// At most this many runs.
        #[arg(long, default_value_t = 2000)]
        budget: u64,
    },
    /// Print a seed's swarm parameters.
    Params {
        #[arg(long)]
        seed: u64,
    },
    /// Run seeds twice each and print one `seed hash` line per seed (exit 1 if a seed
    /// disagrees with itself). Diff the output of a debug and a release build.
    Hashes {
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value_t = 3)]
        count: u64,
    },
}

fn parse_mutation(s: &str) -> Result<Mutation, String> {
    Mutation::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
        format!("unknown mutation '{s}' (one of: {})", names.join(", "))
    })
}

fn reproduce_line(plan: &Plan, from_file: Option<&PathBuf>) -> String {
    match from_file {
        Some(p) => format!("walvault-sim replay {}", p.display()),
        None => format!(
            "walvault-sim run --seed {}{}",
            plan.seed,
            plan.mutation
                .map(|m| format!(" --mutation {m}"))
                .unwrap_or_default(),
        ),
    }
}

fn print_verdict(r: &RunReport, reproduce: &str, save: Option<&PathBuf>) {
    println!(
        "events: {} ({} trace records), simulated time: {} ms, files cut: {}, trace: {}",
        r.events, r.trace_records, r.sim_ms, r.files, r.trace_hash
    );
    for w in &r.warnings {
        println!("warning: {w}");
    }
    let counters: Vec<String> = r
        .coverage
        .counts
        .iter()
        .map(|(k, v)| format!("{}={v}", k.name()))
        .collect();
    println!("coverage: {}", counters.join(", "));
    match &r.violation {
        None => println!("result: ok"),
        Some(v) => {
            println!("result: FAILED");
            println!("broken invariant: {v}");
            println!("reproduce: {reproduce}");
            let path = save.cloned().unwrap_or_else(|| {
                PathBuf::from(format!("target/sim-failures/seed-{}.json", r.seed))
            });
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if std::fs::write(&path, r.plan.to_json()).is_ok() {
                println!(
                    "plan: {} (replay: walvault-sim replay {0}; shrink: walvault-sim shrink {0})",
                    path.display()
                );
            }
            if let Some(d) = &r.dir {
                println!("sqlite files kept in {}", d.display());
            }
        }
    }
}

fn run_one(plan: Plan, quiet: bool, common: &Common, check: bool, keep: bool) -> (RunReport, bool) {
    let strict = common.strict;
    println!(
        "seed {}{}",
        plan.seed,
        plan.mutation
            .map(|m| format!(" (mutation {m})"))
            .unwrap_or_default()
    );
    println!("{}", plan.params.describe());
    let opts = RunOptions {
        print: !quiet,
        keep_dir_on_failure: keep,
        tag: "run".into(),
        strict,
        paranoid: common.paranoid,
    };
    let r = run_plan(plan.clone(), &opts);
    let mut same = true;
    if check {
        let again = run_plan(
            plan,
            &RunOptions {
                print: false,
                keep_dir_on_failure: false,
                tag: "det".into(),
                strict,
                paranoid: common.paranoid,
            },
        );
        same = again.trace_hash == r.trace_hash;
        if same {
            println!("determinism: ok ({} twice)", r.trace_hash);
        } else {
            println!(
                "determinism: MISMATCH {} vs {} ({} vs {} events)",
                r.trace_hash, again.trace_hash, r.events, again.events
            );
        }
    }
    (r, same)
}

/// A reader that goes away (`walvault-sim params --seed 3 | grep -q ...`) ends the
/// process quietly, as it does other Unix tools, instead of a panic with a backtrace
/// from `println!` (Rust starts with SIGPIPE ignored).
fn exit_quietly_on_closed_stdout() {
    #[cfg(unix)]
    {
        use std::ffi::c_int;
        unsafe extern "C" {
            fn signal(signum: c_int, handler: usize) -> usize;
        }
        const SIGPIPE: c_int = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: restores the default disposition of one signal, before any other
        // thread or child process exists.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}

pub fn main() -> ExitCode {
    crate::malloc::keep_freed_memory();
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            seed,
            common,
            quiet,
            check_determinism,
            save_plan,
            keep,
        } => {
            crate::panics::install(false);
            let plan = crate::seed_plan(seed, common.mutation);
            let (r, same) = run_one(plan.clone(), quiet, &common, check_determinism, keep);
            print_verdict(&r, &reproduce_line(&plan, None), save_plan.as_ref());
            if r.violation.is_some() || !same {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Replay {
            plan,
            quiet,
            check_determinism,
            common,
        } => {
            crate::panics::install(false);
            let text = match std::fs::read_to_string(&plan) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("reading {}: {e}", plan.display());
                    return ExitCode::from(2);
                }
            };
            let p = match Plan::from_json(&text) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{} is not a plan: {e}", plan.display());
                    return ExitCode::from(2);
                }
            };
            let (r, same) = run_one(p.clone(), quiet, &common, check_determinism, true);
            print_verdict(&r, &reproduce_line(&p, Some(&plan)), None);
            if r.violation.is_some() || !same {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Sweep {
            start,
            count,
            jobs,
            budget,
            common,
            save_failures,
            require_coverage,
            expect_failures,
        } => {
            let budget_ms = match budget.as_deref().map(crate::wallclock::parse_duration_ms) {
                Some(None) => {
                    eprintln!("--budget: expected e.g. 10m, 90s or 2h");
                    return ExitCode::from(2);
                }
                Some(Some(b)) => Some(b),
                None => None,
            };
            let args = SweepArgs {
                start,
                count,
                jobs,
                budget_ms,
                mutation: common.mutation,
                strict: common.strict,
                save_dir: save_failures,
                require_coverage,
            };
            match crate::sweep::sweep(&args) {
                Err(e) => {
                    eprintln!("sweep failed: {e}");
                    ExitCode::from(2)
                }
                Ok(s) => {
                    print!("{}", s.render(common.mutation));
                    let failed = !s.failures().is_empty();
                    let uncovered = require_coverage && !s.missing_rare().is_empty();
                    if expect_failures {
                        if failed {
                            println!("canary: the sweep reported the failures it was meant to");
                            ExitCode::SUCCESS
                        } else {
                            println!("canary: NO failure reported");
                            ExitCode::from(1)
                        }
                    } else if failed || uncovered {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
            }
        }
        Cmd::SweepWorker {
            start,
            count,
            stride,
            offset,
            budget_ms,
            common,
            save_failures,
        } => {
            let code = crate::sweep::worker(&WorkerArgs {
                start,
                count,
                stride: stride.max(1),
                offset,
                budget_ms,
                mutation: common.mutation,
                strict: common.strict,
                save_dir: save_failures,
            });
            ExitCode::from(code as u8)
        }
        Cmd::Shrink {
            plan,
            seed,
            common,
            out,
            budget,
        } => {
            crate::panics::install(true);
            let start = match (plan, seed) {
                (Some(p), _) => match std::fs::read_to_string(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|t| Plan::from_json(&t))
                {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("reading the plan: {e}");
                        return ExitCode::from(2);
                    }
                },
                (None, Some(s)) => crate::seed_plan(s, common.mutation),
                (None, None) => {
                    eprintln!("shrink: give a plan file or --seed");
                    return ExitCode::from(2);
                }
            };
            // Record the fault decisions of a seed-generated plan first.
            let first = run_plan(start.clone(), &RunOptions::default());
            let Some(v) = first.violation else {
                eprintln!("shrink: the plan passes; nothing to shrink");
                return ExitCode::from(2);
            };
            let inv: Inv = v.inv;
            println!("shrinking: {v}");
            let before = (
                first.plan.faults.len(),
                first.plan.crashes.len(),
                first.plan.workload.len(),
            );
            match crate::shrink::shrink(first.plan, inv, budget) {
                Err(e) => {
                    eprintln!("shrink: {e}");
                    ExitCode::from(2)
                }
                Ok(s) => {
                    let path = out.unwrap_or_else(|| {
                        PathBuf::from(format!(
                            "target/sim-failures/seed-{}-shrunk.json",
                            s.plan.seed
                        ))
                    });
                    if let Some(d) = path.parent() {
                        let _ = std::fs::create_dir_all(d);
                    }
                    if let Err(e) = std::fs::write(&path, s.plan.to_json()) {
                        eprintln!("writing {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                    println!(
                        "shrunk in {} runs: faults {} -> {}, crashes {} -> {}, workload {} -> {}",
                        s.runs,
                        before.0,
                        s.plan.faults.len(),
                        before.1,
                        s.plan.crashes.len(),
                        before.2,
                        s.plan.workload.len()
                    );
                    println!("still fails: {}", s.detail);
                    println!("plan: {} (walvault-sim replay {0})", path.display());
                    ExitCode::SUCCESS
                }
            }
        }
        Cmd::Hashes { start, count } => {
            crate::panics::install(true);
            let mut ok = true;
            for seed in start..start + count {
                let run = |tag: &str| {
                    let opts = RunOptions {
                        tag: tag.into(),
                        ..RunOptions::default()
                    };
                    run_plan(crate::seed_plan(seed, None), &opts)
                };
                let (a, b) = (run("hash-a"), run("hash-b"));
                let verdict = match &a.violation {
                    None => "ok".to_string(),
                    Some(v) => v.inv.name().to_string(),
                };
                if a.trace_hash == b.trace_hash {
                    println!("{seed} {} {verdict}", a.trace_hash);
                } else {
                    ok = false;
                    println!("{seed} MISMATCH {} {}", a.trace_hash, b.trace_hash);
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Params { seed } => {
            println!("{}", crate::params::Params::draw(seed).describe());
            ExitCode::SUCCESS
        }
    }
}
