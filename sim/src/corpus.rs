//! The regression corpus (`chaos-seeds/*.json`): seeds and plans that once failed, each
//! with a line on what it found and what it must do now. `cargo test -p walvault-sim`
//! replays every entry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::invariant::Inv;
use crate::mutation::Mutation;
use crate::plan::{Expect, Plan};
use crate::world::{RunOptions, run_plan};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// What this seed found.
    pub note: String,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub mutation: Option<Mutation>,
    #[serde(default)]
    pub strict: bool,
    /// An explicit plan (otherwise the seed's).
    #[serde(default)]
    pub plan: Option<Plan>,
    pub expect: Expect,
}

impl Entry {
    pub fn plan(&self) -> Result<Plan, String> {
        match (&self.plan, self.seed) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(s)) => Ok(crate::seed_plan(s, self.mutation)),
            (None, None) => Err("an entry needs a seed or a plan".into()),
        }
    }

    /// Runs the entry; `Ok` when it behaves as expected.
    pub fn check(&self) -> Result<(), String> {
        let plan = self.plan()?;
        let opts = RunOptions {
            tag: "corpus".into(),
            strict: self.strict,
            ..RunOptions::default()
        };
        let r = run_plan(plan, &opts);
        let got = r.violation.as_ref().map(|v| v.inv);
        match (&self.expect, got) {
            (Expect::Pass, None) => Ok(()),
            (Expect::Pass, Some(_)) => Err(format!(
                "expected to pass, failed: {}",
                r.violation.map(|v| v.to_string()).unwrap_or_default()
            )),
            (Expect::Fail { invariant }, Some(inv)) if Inv::parse(invariant) == Some(inv) => Ok(()),
            (Expect::Fail { invariant }, other) => Err(format!(
                "expected a failure of {invariant}, got {:?}",
                other.map(|i| i.name())
            )),
        }
    }
}

/// Every entry of the corpus directory, sorted by file name.
pub fn load(dir: &Path) -> Result<Vec<(PathBuf, Entry)>, String> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in rd.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let e: Entry =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            out.push((p, e));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
