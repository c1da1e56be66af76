//! Reproduce, shrink, replay, with the real binary as BATTLE_TESTING.md tells a user to:
//! `run --save-plan` writes the failing plan, `shrink` writes a smaller one, and
//! `replay` of the shrunk plan fails with the same invariant. First on the corpus's
//! canary, then on an engine mutation that only fails under a store fault (so the
//! shrinker has to keep the fault that matters and drop the rest).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use walvault_sim::corpus::load;
use walvault_sim::plan::{Expect, Plan};

fn sim(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_walvault-sim"));
    // `replay` writes target/sim-failures/ under the working directory.
    c.current_dir(cwd);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("walvault-sim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

fn read_plan(p: &Path) -> Plan {
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Plan::from_json(&t).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (fault decisions, crashes, losses, workload operations)
fn size(p: &Plan) -> [usize; 4] {
    [
        p.faults.len(),
        p.crashes.len(),
        p.losses.len(),
        p.workload.len(),
    ]
}

/// Runs seed + mutation, shrinks it, replays the shrunk plan; returns the original and
/// the shrunk plan.
fn shrink_and_replay(name: &str, seed: u64, mutation: &str, invariant: &str) -> (Plan, Plan) {
    let dir = scratch(name);
    let seed_s = seed.to_string();
    let original = dir.join("original.json");
    let shrunk = dir.join("shrunk.json");

    let run = sim(&dir)
        .args(["run", "--seed", &seed_s, "--mutation", mutation, "-q"])
        .arg("--save-plan")
        .arg(&original)
        .output()
        .expect("run walvault-sim");
    let out = text(&run);
    assert_eq!(run.status.code(), Some(1), "the seed must fail:\n{out}");
    assert!(
        out.contains(&format!("broken invariant: {invariant}")),
        "{out}"
    );

    let sh = sim(&dir)
        .args(["shrink", "--seed", &seed_s, "--mutation", mutation])
        .args(["--budget", "400", "--out"])
        .arg(&shrunk)
        .output()
        .expect("shrink");
    let out = text(&sh);
    assert!(sh.status.success(), "shrink failed:\n{out}");
    assert!(out.contains(&format!("shrinking: {invariant}")), "{out}");
    assert!(out.contains(&format!("still fails: {invariant}")), "{out}");

    let rp = sim(&dir)
        .args(["replay", "-q", "--check-determinism"])
        .arg(&shrunk)
        .output()
        .expect("replay");
    let out = text(&rp);
    assert_eq!(
        rp.status.code(),
        Some(1),
        "the shrunk plan must fail:\n{out}"
    );
    assert!(
        out.contains(&format!("broken invariant: {invariant}")),
        "the replay fails with another invariant:\n{out}"
    );
    assert!(out.contains("determinism: ok"), "{out}");
    // `replay` keeps a failing run's SQLite directory for inspection: not wanted here.
    for line in out.lines() {
        if let Some(kept) = line.strip_prefix("sqlite files kept in ") {
            let _ = std::fs::remove_dir_all(kept.trim());
        }
    }

    let (a, b) = (read_plan(&original), read_plan(&shrunk));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((a.seed, a.mutation), (b.seed, b.mutation));
    assert!(b.replay_faults, "a shrunk plan replays its recorded faults");
    let (sa, sb) = (size(&a), size(&b));
    assert!(
        sa.iter().zip(&sb).all(|(x, y)| y <= x),
        "the shrunk plan is larger than the original: {sb:?} vs {sa:?} (faults, crashes, losses, workload)"
    );
    (a, b)
}

#[test]
fn the_canary_shrinks_and_replays_to_the_same_invariant() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chaos-seeds");
    let entries = load(&dir).expect("chaos-seeds/ loads");
    let (_, canary) = entries
        .iter()
        .find(|(p, _)| {
            p.file_name()
                .is_some_and(|n| n == "canary-ack-before-store.json")
        })
        .expect("the canary entry");
    let Expect::Fail { invariant } = &canary.expect else {
        panic!("the canary must expect a failure");
    };
    let (seed, mutation) = (
        canary.seed.expect("the canary is a seed"),
        canary.mutation.expect("the canary has a mutation"),
    );
    let (a, b) = shrink_and_replay("canary", seed, mutation.name(), invariant);
    assert!(size(&b).iter().sum::<usize>() < size(&a).iter().sum::<usize>());
}

#[test]
fn a_fault_the_failure_needs_survives_shrinking() {
    // Seed 1 with the engine forgetting failed uploads fails only because a PUT
    // fails: the shrunk plan keeps at least one fault and little else.
    let (a, b) = shrink_and_replay(
        "drop-failed",
        1,
        "engine-drop-failed-upload",
        "I1-durability",
    );
    assert!(
        !b.faults.is_empty(),
        "the failing PUT's fault was shrunk away"
    );
    assert!(
        b.faults.len() < a.faults.len() && b.workload.len() < a.workload.len(),
        "nothing was shrunk: {:?} vs {:?}",
        size(&b),
        size(&a)
    );
}
