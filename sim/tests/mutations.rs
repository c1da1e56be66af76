//! The invariants catch real bugs: for each invariant, a deliberately broken behaviour
//! (mutation.rs) is caught, by that invariant, within the stated number of seeds
//! (seeds 0, 1, 2, ... with the sweep's own swarm parameters). BATTLE_TESTING.md
//! reports the same numbers; raising a bound here means the invariant got weaker.

use walvault_sim::invariant::Inv;
use walvault_sim::mutation::Mutation;
use walvault_sim::{RunOptions, run_plan, seed_plan};

/// (mutation, invariants that may catch it, the first one listed being the one it
/// targets, and the number of seeds within which it must be caught).
const TABLE: &[(Mutation, &[Inv], u64)] = &[
    (Mutation::AckBeforeStore, &[Inv::Durability], 1),
    (Mutation::DropFailedUpload, &[Inv::Durability], 2),
    (Mutation::PersistAhead, &[Inv::Durability], 1),
    (Mutation::StalePageRead, &[Inv::Restore], 1),
    (Mutation::TipSkipsTxid, &[Inv::Chain], 1),
    (
        Mutation::SkipSaltCheck,
        &[Inv::Checkpoint, Inv::Chain, Inv::Liveness],
        1,
    ),
    (Mutation::CheckpointOnLock, &[Inv::Checkpoint], 1),
    (Mutation::DuplicateResend, &[Inv::Duplicate], 3),
    (Mutation::DoublePut, &[Inv::Bounds], 2),
    (Mutation::PanicInShell, &[Inv::Panic], 1),
    (Mutation::LostCompletion, &[Inv::Liveness], 2),
];

fn first_catch(m: Mutation, within: u64) -> Option<(u64, Inv, String)> {
    walvault_sim::panics::install(true);
    (0..within).find_map(|seed| {
        let opts = RunOptions {
            tag: format!("mut-{}", m.name()),
            ..RunOptions::default()
        };
        let r = run_plan(seed_plan(seed, Some(m)), &opts);
        r.violation.map(|v| (seed, v.inv, v.detail))
    })
}

#[test]
fn every_mutation_is_caught_by_its_invariant() {
    let mut problems = Vec::new();
    for &(m, invs, within) in TABLE {
        match first_catch(m, within) {
            None => problems.push(format!("{m}: not caught within {within} seeds")),
            Some((seed, inv, detail)) if !invs.contains(&inv) => problems.push(format!(
                "{m}: caught at seed {seed} by {} instead of {:?}: {detail}",
                inv.name(),
                invs.iter().map(|i| i.name()).collect::<Vec<_>>()
            )),
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_invariant_has_a_mutation() {
    for inv in [
        Inv::Durability,
        Inv::Restore,
        Inv::Chain,
        Inv::Checkpoint,
        Inv::Duplicate,
        Inv::Bounds,
        Inv::Panic,
        Inv::Liveness,
    ] {
        assert!(
            TABLE.iter().any(|(_, invs, _)| invs[0] == inv),
            "no mutation targets {}",
            inv.name()
        );
    }
}
