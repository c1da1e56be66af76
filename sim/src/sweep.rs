//! Sweeps: many seeds, one worker process per job (SQLite's PRNG and the panic hook are
//! process-wide, and processes isolate a seed that goes wrong). Each worker runs every
//! `jobs`-th seed of the range and writes one JSON line per seed; the driver waits for
//! all of them and prints the summary: seeds per second (per core), failures grouped by
//! invariant with a reproduction line each, warnings, and every coverage counter.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::coverage::{Cov, Coverage};
use crate::mutation::Mutation;
use crate::wallclock::Stopwatch;
use crate::world::{RunOptions, run_plan};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub ok: bool,
    #[serde(default)]
    pub inv: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    pub events: u64,
    #[serde(default)]
    pub trace_records: u64,
    pub sim_ms: u64,
    pub files: u64,
    pub hash: String,
    #[serde(default)]
    pub warnings: Vec<(String, String)>,
    pub cov: BTreeMap<String, u64>,
}

pub struct WorkerArgs {
    pub start: u64,
    pub count: u64,
    pub stride: u64,
    pub offset: u64,
    pub budget_ms: Option<u64>,
    pub mutation: Option<Mutation>,
    pub strict: bool,
    pub save_dir: Option<PathBuf>,
}

/// Runs one seed the way a sweep does (quiet, directory removed).
pub fn run_seed(
    seed: u64,
    mutation: Option<Mutation>,
    strict: bool,
) -> (SeedResult, crate::RunReport) {
    let plan = crate::seed_plan(seed, mutation);
    let opts = RunOptions {
        print: false,
        keep_dir_on_failure: false,
        tag: "sweep".into(),
        strict,
        paranoid: false,
    };
    let r = run_plan(plan, &opts);
    let res = SeedResult {
        seed,
        ok: r.violation.is_none(),
        inv: r.violation.as_ref().map(|v| v.inv.name().to_string()),
        detail: r.violation.as_ref().map(|v| v.to_string()),
        events: r.events,
        trace_records: r.trace_records,
        sim_ms: r.sim_ms,
        files: r.files,
        hash: r.trace_hash.clone(),
        warnings: r
            .warnings
            .iter()
            .map(|w| (w.inv.name().to_string(), w.detail.clone()))
            .collect(),
        cov: r.coverage.to_named(),
    };
    (res, r)
}

/// A worker: every `stride`-th seed from `start + offset`, one JSON line each.
pub fn worker(a: &WorkerArgs) -> i32 {
    crate::panics::install(true);
    let clock = Stopwatch::start();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut seed = a.start + a.offset;
    let mut done = 0u64;
    while seed < a.start + a.count {
        if a.budget_ms.is_some_and(|b| clock.elapsed_ms() >= b) {
            break;
        }
        let (res, report) = run_seed(seed, a.mutation, a.strict);
        if !res.ok
            && let Some(dir) = &a.save_dir
        {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join(format!("seed-{seed}.json")), report.plan.to_json());
        }
        if let Ok(line) = serde_json::to_string(&res) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        done += 1;
        if done.is_multiple_of(500) {
            eprintln!("  worker {}: {done} seeds", a.offset);
        }
        seed += a.stride;
    }
    0
}

pub struct SweepArgs {
    pub start: u64,
    pub count: u64,
    pub jobs: u64,
    pub budget_ms: Option<u64>,
    pub mutation: Option<Mutation>,
    pub strict: bool,
    pub save_dir: Option<PathBuf>,
    pub require_coverage: bool,
}

#[derive(Default)]
pub struct Summary {
    pub results: Vec<SeedResult>,
    pub wall_ms: u64,
    pub jobs: u64,
}

impl Summary {
    pub fn failures(&self) -> Vec<&SeedResult> {
        self.results.iter().filter(|r| !r.ok).collect()
    }

    pub fn coverage(&self) -> (Coverage, BTreeMap<Cov, u64>) {
        let mut total = Coverage::default();
        let mut seeds: BTreeMap<Cov, u64> = BTreeMap::new();
        for r in &self.results {
            let c = Coverage::from_named(&r.cov);
            for k in c.counts.keys() {
                *seeds.entry(*k).or_insert(0) += 1;
            }
            total.merge(&c);
        }
        (total, seeds)
    }

    pub fn missing_rare(&self) -> Vec<Cov> {
        let (total, _) = self.coverage();
        Cov::ALL
            .iter()
            .copied()
            .filter(|c| c.rare() && total.get(*c) == 0)
            .collect()
    }

    pub fn render(&self, mutation: Option<Mutation>) -> String {
        let mut s = String::new();
        let n = self.results.len() as u64;
        let secs = self.wall_ms as f64 / 1000.0;
        let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let events: u64 = self.results.iter().map(|r| r.events).sum();
        let records: u64 = self.results.iter().map(|r| r.trace_records).sum();
        let files: u64 = self.results.iter().map(|r| r.files).sum();
        s.push_str(&format!(
            "sweep: {n} seeds in {secs:.1} s with {} jobs: {rate:.1} seeds/s, {:.1} seeds/s per core; {} events/seed ({} trace records), {} files/seed on average\n",
            self.jobs,
            rate / self.jobs.max(1) as f64,
            events / n.max(1),
            records / n.max(1),
            files / n.max(1),
        ));
        let fails = self.failures();
        let mflag = mutation
            .map(|m| format!(" --mutation {m}"))
            .unwrap_or_default();
        if fails.is_empty() {
            s.push_str("failures: none\n");
        } else {
            s.push_str(&format!("failures: {}\n", fails.len()));
            let mut by: BTreeMap<&str, Vec<&SeedResult>> = BTreeMap::new();
            for f in &fails {
                by.entry(f.inv.as_deref().unwrap_or("?"))
                    .or_default()
                    .push(f);
            }
            for (inv, v) in by {
                let seeds: Vec<String> = v.iter().take(10).map(|r| r.seed.to_string()).collect();
                s.push_str(&format!(
                    "  {inv}: {} seeds (e.g. {})\n    first: {}\n    reproduce: walvault-sim run --seed {}{mflag}\n",
                    v.len(),
                    seeds.join(", "),
                    v[0].detail.as_deref().unwrap_or(""),
                    v[0].seed
                ));
            }
        }
        let mut warn: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
        for r in &self.results {
            for (inv, d) in &r.warnings {
                warn.entry(inv.as_str())
                    .or_default()
                    .push((r.seed, d.as_str()));
            }
        }
        for (inv, v) in warn {
            s.push_str(&format!(
                "warning {inv}: {} seeds (e.g. seed {}: {})\n",
                v.len(),
                v[0].0,
                v[0].1
            ));
        }
        let (total, seeds) = self.coverage();
        s.push_str("coverage (total / seeds reaching it):\n");
        for c in Cov::ALL {
            s.push_str(&format!(
                "  {:<48} {:>9} / {:>6}{}\n",
                c.name(),
                total.get(*c),
                seeds.get(c).copied().unwrap_or(0),
                if c.rare() && total.get(*c) == 0 {
                    "   <-- never reached"
                } else {
                    ""
                }
            ));
        }
        let missing = self.missing_rare();
        if missing.is_empty() {
            s.push_str("rare events: every one reached\n");
        } else {
            let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
            s.push_str(&format!(
                "rare events never reached: {}\n",
                names.join(", ")
            ));
        }
        s
    }
}

/// The driver: spawns the workers, waits, aggregates.
pub fn sweep(a: &SweepArgs) -> Result<Summary, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding walvault-sim: {e}"))?;
    let clock = Stopwatch::start();
    let jobs = a.jobs.max(1).min(a.count.max(1));
    let mut children = Vec::new();
    for j in 0..jobs {
        let out_path = std::env::temp_dir().join(format!(
            "walvault-sim-sweep-{}-{j}.jsonl",
            std::process::id()
        ));
        let out =
            File::create(&out_path).map_err(|e| format!("creating {}: {e}", out_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("sweep-worker")
            .arg("--start")
            .arg(a.start.to_string())
            .arg("--count")
            .arg(a.count.to_string())
            .arg("--stride")
            .arg(jobs.to_string())
            .arg("--offset")
            .arg(j.to_string());
        if let Some(b) = a.budget_ms {
            cmd.arg("--budget-ms").arg(b.to_string());
        }
        if let Some(m) = a.mutation {
            cmd.arg("--mutation").arg(m.name());
        }
        if a.strict {
            cmd.arg("--strict");
        }
        if let Some(d) = &a.save_dir {
            cmd.arg("--save-failures").arg(d);
        }
        cmd.stdout(Stdio::from(out)).stdin(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("starting a worker: {e}"))?;
        children.push((child, out_path));
    }
    let mut summary = Summary {
        jobs,
        ..Summary::default()
    };
    let mut worker_errors = Vec::new();
    for (mut child, path) in children {
        match child.wait() {
            Ok(st) if st.success() => {}
            Ok(st) => worker_errors.push(format!("a worker exited with {st}")),
            Err(e) => worker_errors.push(format!("waiting for a worker: {e}")),
        }
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                match serde_json::from_str::<SeedResult>(&line) {
                    Ok(r) => summary.results.push(r),
                    Err(e) => worker_errors.push(format!("bad worker line ({e}): {line}")),
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    summary.wall_ms = clock.elapsed_ms();
    summary.results.sort_by_key(|r| r.seed);
    if !worker_errors.is_empty() {
        return Err(worker_errors.join("\n"));
    }
    Ok(summary)
}
