//! Model-based proptest: random sequences of application transactions (growth,
//! shrink, partial and rolled-back ones), time, upload and check outcomes completed in
//! any order, checkpoint answers, application checkpoints (within the read lock, and
//! with a WAL restart while walvault's lock is released or walvault is down) and
//! crashes with a restart from the store's tip. After every step the harness checks:
//! no panic, no hole at level 0 below durable, every stored TXID restores to exactly
//! the state its file claims, durable only moves forward (except across a crash) and
//! never past the store, Persist only names durable positions, checkpoints only run
//! with writers blocked and everything durable, the window is respected. At the end
//! faults stop: replication catches up within a bound, and after a shutdown the
//! latest restore equals the source.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::harness::{CheckOutcome, CkptAnswer, Harness, Outcome, config};
use super::source::Source;
use crate::backoff::BackoffConfig;
use crate::keys::{FileId, SNAPSHOT_LEVEL};
use crate::replicator::Config;
use crate::restore_plan::Target;

const MAX_PAGE: u32 = 14;

/// While walvault is down.
#[derive(Clone, Debug)]
enum Down {
    Commit(Vec<u32>, u32),
    /// The application checkpoints everything and its next write restarts the WAL.
    CheckpointRestart(Vec<u32>, u32),
}

#[derive(Clone, Debug)]
enum Op {
    Commit(Vec<u32>, u32),
    /// Frames of a transaction not committed yet (the next `Commit` finishes it).
    Partial(Vec<u32>),
    Rollback,
    Advance(u64),
    /// Completes outstanding request `n % len` with this outcome (or a failed check).
    Complete(usize, Outcome, bool),
    /// The application's PASSIVE checkpoint while walvault holds its read lock.
    AppCheckpoint,
    /// How the next checkpoint command goes.
    Answer(CkptAnswer),
    LockRefused,
    /// During the next checkpoint command's window the application writes,
    /// checkpoints everything and restarts the WAL.
    WindowRestart(Vec<u32>, u32),
    /// Crash: in-flight uploads selected by the mask land; then `Down` happens; then
    /// walvault starts again from the store's tip.
    Crash(u8, Vec<Down>),
}

#[derive(Clone, Debug)]
struct Params {
    max_in_flight: usize,
    checkpoint_frames: u64,
    truncate: bool,
    small_reads: bool,
    seed: u64,
    /// Looks between ticks and cuts when quiet (0: only at ticks).
    quiet_ship_ms: u64,
}

fn txn() -> impl Strategy<Value = (Vec<u32>, u32)> {
    (1..=MAX_PAGE, prop::collection::vec(1..=MAX_PAGE, 1..4)).prop_map(|(commit, pages)| {
        let pages = pages.into_iter().map(|p| p.min(commit)).collect();
        (pages, commit)
    })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        8 => Just(Outcome::Ok),
        3 => Just(Outcome::Transient),
        2 => Just(Outcome::UnknownStored),
        2 => Just(Outcome::UnknownLost),
        1 => Just(Outcome::ExistsOurs),
        1 => Just(Outcome::Permanent),
        1 => Just(Outcome::BuildFails),
    ]
}

fn down() -> impl Strategy<Value = Down> {
    prop_oneof![
        3 => txn().prop_map(|(p, c)| Down::Commit(p, c)),
        1 => txn().prop_map(|(p, c)| Down::CheckpointRestart(p, c)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => txn().prop_map(|(p, c)| Op::Commit(p, c)),
        2 => prop::collection::vec(1..=MAX_PAGE, 1..3).prop_map(Op::Partial),
        1 => Just(Op::Rollback),
        8 => (1u64..2_500).prop_map(Op::Advance),
        1 => (5_000u64..25_000).prop_map(Op::Advance),
        12 => (any::<usize>(), outcome(), prop::bool::weighted(0.1))
            .prop_map(|(n, o, f)| Op::Complete(n, o, f)),
        2 => Just(Op::AppCheckpoint),
        1 => prop_oneof![
            Just(CkptAnswer::AppReader),
            Just(CkptAnswer::Busy),
            Just(CkptAnswer::Fail)
        ]
        .prop_map(Op::Answer),
        1 => Just(Op::LockRefused),
        1 => txn().prop_map(|(p, c)| Op::WindowRestart(p, c)),
        1 => (any::<u8>(), prop::collection::vec(down(), 0..3)).prop_map(|(m, d)| Op::Crash(m, d)),
    ]
}

fn params() -> impl Strategy<Value = Params> {
    (
        1usize..=4,
        3u64..12,
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        prop_oneof![Just(0u64), Just(100), Just(250), Just(500)],
    )
        .prop_map(
            |(max_in_flight, checkpoint_frames, truncate, small_reads, seed, quiet_ship_ms)| {
                Params {
                    max_in_flight,
                    checkpoint_frames,
                    truncate,
                    small_reads,
                    seed,
                    quiet_ship_ms,
                }
            },
        )
}

fn cfg(p: &Params) -> Config {
    let frame = 24 + u64::from(super::source::PS);
    Config {
        max_in_flight: p.max_in_flight,
        checkpoint_frames: p.checkpoint_frames,
        truncate_bytes: if p.truncate {
            32 + 2 * p.checkpoint_frames * frame
        } else {
            u64::MAX
        },
        read_chunk_bytes: if p.small_reads { 700 } else { 1 << 20 },
        backoff: BackoffConfig {
            base_ms: 50,
            max_ms: 2_000,
        },
        seed: p.seed,
        quiet_ship_ms: p.quiet_ship_ms,
        ..config()
    }
}

/// Level-0 holes the store would have if `extra` landed too.
fn holes_with(h: &Harness, extra: &[FileId]) -> bool {
    let mut ranges: Vec<(u64, u64)> = h
        .store
        .level0()
        .iter()
        .chain(extra.iter().filter(|f| f.level == 0))
        .map(|f| (f.min_txid, f.max_txid))
        .collect();
    ranges.sort_unstable();
    let mut covered = 0;
    for (min, max) in ranges {
        if min > covered + 1 {
            return true;
        }
        covered = covered.max(max);
    }
    false
}

fn apply(h: &mut Harness, op: &Op, allow_holes: bool) {
    match op {
        Op::Commit(pages, commit) => {
            h.commit(pages, *commit);
        }
        Op::Partial(pages) => {
            h.src.write_uncommitted(pages);
        }
        Op::Rollback => h.src.rollback(),
        Op::Advance(ms) => h.advance(*ms),
        Op::Complete(n, o, check_fails) => {
            if !h.inflight.is_empty() {
                let i = n % h.inflight.len();
                let c = if *check_fails {
                    CheckOutcome::Failed
                } else {
                    CheckOutcome::Real
                };
                h.complete(i, *o, c);
            }
        }
        Op::AppCheckpoint => {
            if h.src.read_mark.is_some() {
                h.src.checkpoint();
            }
        }
        Op::Answer(a) => {
            if h.ckpt_answers.len() < 2 {
                h.ckpt_answers.push_back(*a);
            }
        }
        Op::LockRefused => {
            if h.lock_answers.len() < 2 {
                h.lock_answers.push_back(false);
            }
        }
        Op::WindowRestart(pages, commit) => {
            if h.ckpt_window.len() < 2 {
                let (pages, commit) = (pages.clone(), *commit);
                h.ckpt_window.push_back(Box::new(move |s: &mut Source| {
                    s.commit_txn(&pages, commit);
                    s.external_checkpoint_and_restart(&[1], commit);
                }));
            }
        }
        Op::Crash(mask, down) => {
            let inflight: Vec<(usize, FileId)> = h
                .inflight
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r, super::harness::Req::Upload { .. }))
                .map(|(i, r)| (i, r.file()))
                .collect();
            let picked: Vec<FileId> = inflight
                .iter()
                .filter(|(i, _)| mask >> (i % 8) & 1 == 1)
                .map(|(_, f)| *f)
                .collect();
            let mask = if allow_holes {
                *mask
            } else if holes_with(h, &[]) {
                // A hole below the tip: a restart now would resume over it (a known
                // engine bug, see restarts.rs); leave this crash to `model_with_holes`.
                return;
            } else if holes_with(h, &picked) {
                0
            } else {
                *mask
            };
            h.crash(&|i, _| mask >> (i % 8) & 1 == 1);
            h.reset_durable_floor();
            // The application's open transaction does not survive either.
            h.src.rollback();
            for d in down {
                h.src.rollback();
                match d {
                    Down::Commit(p, c) => {
                        h.src.commit_txn(p, *c);
                    }
                    Down::CheckpointRestart(p, c) => h.src.external_checkpoint_and_restart(p, *c),
                }
            }
            h.start();
        }
    }
}

fn run(p: &Params, ops: &[Op], allow_holes: bool) {
    let mut h = Harness::new(cfg(p), Source::new(3, p.seed));
    h.deferred = true;
    h.start();
    h.check();
    for op in ops {
        apply(&mut h, op, allow_holes);
        assert!(h.halted.is_none(), "halted: {:?}", h.halted);
        h.check();
    }

    // Faults stop, the application stops writing: replication catches up.
    h.ckpt_answers.clear();
    h.lock_answers.clear();
    h.ckpt_window.clear();
    h.src.rollback();
    let mut caught_up = false;
    for _ in 0..40 {
        h.complete_all();
        let d = h.engine.durable();
        if h.inflight.is_empty()
            && h.engine.pending_files() == 0
            && (d.salt1, d.salt2, d.wal_end) == h.src.pos()
        {
            caught_up = true;
            break;
        }
        h.advance(1_000);
    }
    assert!(
        caught_up,
        "replication did not catch up after faults stopped"
    );
    h.check();
    h.assert_latest_is_source();

    let snapshot = p.seed.is_multiple_of(2);
    h.shutdown(snapshot);
    assert!(h.halted.is_none(), "halted: {:?}", h.halted);
    assert!(h.stopped);
    h.check();
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), h.src.pos());
    h.assert_latest_is_source();
    assert!(h.store.level0_holes(h.store.max_txid()).is_empty());
    let snap = FileId {
        level: SNAPSHOT_LEVEL,
        min_txid: 1,
        max_txid: d.txid,
    };
    if let Some(bytes) = h.store.get(snap) {
        assert!(snapshot);
        let mut only = super::store::Store::default();
        only.put_if_absent(snap, bytes);
        let (_, image) = only.restore(Target::Latest).expect("restores");
        assert!(image == h.src.image(), "the level-9 snapshot differs");
    }
}

fn pt_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5741_4c56),
        max_shrink_iters: 4_096,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(pt_config(1_000))]

    #[test]
    fn model(p in params(), ops in prop::collection::vec(op(), 1..120)) {
        run(&p, &ops, false);
    }
}

proptest! {
    #![proptest_config(pt_config(256))]

    #[test]
    fn model_with_holes(p in params(), ops in prop::collection::vec(op(), 1..120)) {
        run(&p, &ops, true);
    }
}

#[test]
fn model_smoke_sequence() {
    // A fixed sequence touching every operation once, as a readable example.
    let p = Params {
        max_in_flight: 2,
        checkpoint_frames: 4,
        truncate: true,
        small_reads: true,
        seed: 4,
        quiet_ship_ms: 250,
    };
    let ops = vec![
        Op::Commit(vec![1, 4], 5),
        Op::Advance(1_000),
        Op::Partial(vec![2]),
        Op::Complete(0, Outcome::UnknownStored, false),
        Op::Commit(vec![3], 6),
        Op::Advance(1_000),
        Op::Complete(1, Outcome::Transient, false),
        Op::Complete(0, Outcome::Ok, false),
        Op::AppCheckpoint,
        Op::Answer(CkptAnswer::AppReader),
        Op::WindowRestart(vec![2], 7),
        Op::Commit(vec![5, 6, 7], 7),
        Op::Advance(2_000),
        Op::Complete(0, Outcome::Ok, true),
        Op::Advance(2_000),
        Op::Complete(0, Outcome::Ok, false),
        Op::Crash(
            0xff,
            vec![
                Down::Commit(vec![1], 3),
                Down::CheckpointRestart(vec![2], 9),
            ],
        ),
        Op::Commit(vec![9], 9),
        Op::LockRefused,
        Op::Advance(1_500),
        Op::Complete(0, Outcome::BuildFails, false),
        Op::Advance(1_500),
        Op::Rollback,
    ];
    run(&p, &ops, false);
}
