//! Shrinking a failing plan: remove what is not needed for the same invariant to
//! break. Faults first (fault decisions, then crashes, then store losses), then the
//! workload, each by halving chunks down to single entries (a simple ddmin). Every
//! candidate is a full deterministic run; a candidate is kept when it still fails
//! with the same invariant.

use crate::invariant::Inv;
use crate::plan::Plan;
use crate::world::{RunOptions, run_plan};

pub struct Shrunk {
    pub plan: Plan,
    pub runs: u64,
    pub detail: String,
}

fn fails_with(plan: &Plan, inv: Inv, runs: &mut u64) -> Option<String> {
    *runs += 1;
    let opts = RunOptions {
        tag: "shrink".into(),
        ..RunOptions::default()
    };
    let r = run_plan(plan.clone(), &opts);
    r.violation.filter(|v| v.inv == inv).map(|v| v.to_string())
}

/// Removes chunks of `get(plan)` while the plan still fails with `inv`.
fn reduce<T: Clone>(
    plan: &mut Plan,
    inv: Inv,
    runs: &mut u64,
    detail: &mut String,
    budget: u64,
    get: fn(&mut Plan) -> &mut Vec<T>,
) {
    let mut chunk = get(plan).len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < get(plan).len() {
            if *runs >= budget {
                return;
            }
            let mut candidate = plan.clone();
            let v = get(&mut candidate);
            let end = (i + chunk).min(v.len());
            v.drain(i..end);
            match fails_with(&candidate, inv, runs) {
                Some(d) => {
                    *plan = candidate;
                    *detail = d;
                }
                None => i += chunk,
            }
        }
        if chunk == 1 {
            return;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// Shrinks `plan`, which must fail with `inv` (a plan with recorded faults, as a failing
/// run reports it). `budget` caps the number of runs.
pub fn shrink(plan: Plan, inv: Inv, budget: u64) -> Result<Shrunk, String> {
    let mut runs = 0;
    let mut detail = fails_with(&plan, inv, &mut runs)
        .ok_or_else(|| format!("the plan does not fail with {}", inv.name()))?;
    let mut plan = plan;
    plan.replay_faults = true;
    reduce(&mut plan, inv, &mut runs, &mut detail, budget, |p| {
        &mut p.faults
    });
    reduce(&mut plan, inv, &mut runs, &mut detail, budget, |p| {
        &mut p.crashes
    });
    reduce(&mut plan, inv, &mut runs, &mut detail, budget, |p| {
        &mut p.losses
    });
    reduce(&mut plan, inv, &mut runs, &mut detail, budget, |p| {
        &mut p.workload
    });
    Ok(Shrunk { plan, runs, detail })
}
