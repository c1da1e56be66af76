//! The invariants catch real bugs: for each invariant, a deliberately broken behaviour
//! (mutation.rs) is caught, by that invariant, within the stated number of seeds
//! (seeds 0, 1, 2, ... with the sweep's own swarm parameters). BATTLE_TESTING.md
//! reports the same numbers; raising a bound here means the invariant got weaker, or
//! that the seeds now draw other scenarios (the idle-release parameter, added later,
//! changed the plans of most seeds and moved four bounds by one or two seeds; the
//! ship-when-quiet parameter changed every seed's timing and moved the two I5 bounds,
//! whose mutations were caught in few seeds, from 4 to 16 and 9; looks due a
//! quiet period after the last write, decision 24 amended, moved the second to 12; the
//! store outage and the torn append, each drawn in a quarter of the seeds, moved none;
//! duplicating half of all completions in a fifth of the seeds brought both I5 bounds
//! down to 2 and moved release-ignores-change from 3 to 7).
//! Two tables: mutations of the simulated shell, and mutations of the real engine at
//! its decision points (walvault-engine's `mutations` feature).

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
    (Mutation::DiffAgainstOwnState, &[Inv::Restore], 2),
    (Mutation::TipSkipsTxid, &[Inv::Chain], 1),
    (
        Mutation::SkipSaltCheck,
        &[Inv::Checkpoint, Inv::Chain, Inv::Liveness],
        1,
    ),
    (Mutation::CheckpointOnLock, &[Inv::Checkpoint], 3),
    (Mutation::DuplicateResend, &[Inv::Duplicate], 2),
    (Mutation::DoublePut, &[Inv::Bounds], 2),
    (Mutation::PanicInShell, &[Inv::Panic], 1),
    (Mutation::LostCompletion, &[Inv::Liveness], 2),
    // Caught by I8's bound on commands at one instant (a busy loop), the only check
    // that sees it: no byte is lost, the replicator just never waits again.
    (Mutation::ReleaseIgnoresChange, &[Inv::Liveness], 7),
];

/// The same for the engine's own mutation points (engine/src/replicator/mutation.rs):
/// a deliberately broken engine, not a broken shell.
const ENGINE_TABLE: &[(Mutation, &[Inv], u64)] = &[
    (Mutation::EngineDropFailedUpload, &[Inv::Durability], 2),
    (Mutation::EngineDurablePastHole, &[Inv::Durability], 2),
    (Mutation::EngineSkipSaltCheck, &[Inv::Restore], 3),
    (Mutation::EngineReuseTxids, &[Inv::Chain], 1),
    (
        Mutation::EngineCheckpointBeforeDurable,
        &[Inv::Checkpoint],
        1,
    ),
    (Mutation::EngineAcceptAnyCompletion, &[Inv::Duplicate], 2),
    (Mutation::EngineIgnoreWindow, &[Inv::Bounds], 2),
    (Mutation::EnginePanicOnUnknownCompletion, &[Inv::Panic], 2),
    (Mutation::EngineNeverRetry, &[Inv::Liveness], 2),
    (Mutation::EngineNeverCheckpoint, &[Inv::Liveness], 1),
    (Mutation::EngineRetryWithoutBackoff, &[Inv::Bounds], 6),
    (Mutation::EngineStaleFrameIndex, &[Inv::Restore], 1),
    (Mutation::EngineCheckAbsentAsStored, &[Inv::Durability], 2),
    (Mutation::EnginePersistNewestCut, &[Inv::Durability], 2),
    (Mutation::EngineSkipFrameChecksum, &[Inv::Restore], 10),
    // Caught by I6's spacing check on quiet cuts (decision 24's cost bound).
    (Mutation::EngineQuietShipUnspaced, &[Inv::Bounds], 1),
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

fn check_table(table: &[(Mutation, &[Inv], u64)]) {
    let mut problems = Vec::new();
    for &(m, invs, within) in table {
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
fn every_shell_mutation_is_caught_by_its_invariant() {
    check_table(TABLE);
}

#[test]
fn every_engine_mutation_is_caught_by_its_invariant() {
    check_table(ENGINE_TABLE);
}

#[test]
fn every_invariant_has_a_shell_and_an_engine_mutation() {
    // The eight safety and liveness invariants; Detection (lossy stores) and Harness
    // (the simulator itself) are not things an engine or shell mutation can break.
    let checked = Inv::ALL
        .iter()
        .filter(|i| !matches!(i, Inv::Detection | Inv::Harness));
    for &inv in checked {
        for (kind, table) in [("shell", TABLE), ("engine", ENGINE_TABLE)] {
            assert!(
                table.iter().any(|(_, invs, _)| invs[0] == inv),
                "no {kind} mutation targets {}",
                inv.name()
            );
        }
    }
}

#[test]
fn every_mutation_is_in_a_table() {
    for &m in Mutation::ALL {
        let engine = ENGINE_TABLE.iter().any(|(e, ..)| *e == m);
        let shell = TABLE.iter().any(|(s, ..)| *s == m);
        assert!(engine ^ shell, "{m}: in no table or in both");
        assert_eq!(engine, m.engine().is_some(), "{m}: in the wrong table");
    }
}
