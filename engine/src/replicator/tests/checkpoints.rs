//! Targeted scenarios of the checkpoint protocol: writers are blocked only when
//! everything read is durable, the tail is shipped before the checkpoint, a stalled
//! store releases the writers, and what follows a WAL restart (the engine's own
//! complete checkpoint continues the chain; any other restart gets a full file).

use super::harness::{CheckOutcome, CkptAnswer, Harness, Outcome, config};
use super::source::Source;
use crate::keys::FileId;
use crate::replicator::{CheckpointMode, Command, Config, Event, SnapshotReason};
use crate::wal::WalChange;

fn cfg(frames: u64) -> Config {
    let mut c = config();
    c.checkpoint_frames = frames;
    c
}

/// Index in the trace of the first command matching `f` at or after `from`.
fn find(h: &Harness, from: usize, f: impl Fn(&Command) -> bool) -> Option<usize> {
    h.trace
        .iter()
        .skip(from)
        .position(|(_, c)| f(c))
        .map(|i| i + from)
}

#[test]
fn locks_only_when_durable_ships_the_tail_then_checkpoints() {
    let mut h = Harness::new(cfg(4), Source::new(4, 21));
    h.deferred = true;
    h.start();
    h.complete_all();
    for p in 1..=4 {
        h.commit_ok(&[p], 4);
    }
    h.tick();
    // Enough frames, but file 2 is not durable: no lock yet.
    assert_eq!(h.count(|c| *c == Command::LockWriters), 0);
    h.advance(5_000);
    assert_eq!(h.count(|c| *c == Command::LockWriters), 0);
    // A transaction the engine has not read yet (the tail).
    let tail = h.commit_ok(&[2, 5], 5);
    let mark = h.trace.len();
    h.complete(0, Outcome::Ok, CheckOutcome::Real);
    let lock = find(&h, mark, |c| *c == Command::LockWriters).expect("LockWriters");
    assert!(h.src.writers_locked);
    assert_eq!(h.commit(&[1], 5), None, "writers must be blocked");
    let read = find(&h, lock, |c| matches!(c, Command::ReadWal { .. })).expect("tail read");
    let up = find(&h, read, |c| matches!(c, Command::Upload { .. })).expect("tail upload");
    assert_eq!(
        find(&h, lock, |c| matches!(c, Command::Checkpoint { .. })),
        None
    );
    // The tail is durable: only now the checkpoint.
    h.complete_all();
    let persist = find(
        &h,
        up,
        |c| matches!(c, Command::Persist(p) if p.wal_end == tail.2),
    )
    .expect("tail persisted");
    let ck = find(&h, persist, |c| {
        *c == Command::Checkpoint {
            mode: CheckpointMode::Passive,
        }
    })
    .expect("Checkpoint");
    assert!(ck > persist);
    assert_eq!(find(&h, lock, |c| *c == Command::UnlockWriters), None);
    assert!(!h.src.writers_locked);
    assert!(
        h.events()
            .any(|e| matches!(e, Event::CheckpointDone { busy: false, .. }))
    );
    h.complete_all();
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn stalled_store_releases_writers() {
    let mut h = Harness::new(cfg(3), Source::new(4, 22));
    h.deferred = true;
    h.start();
    h.complete_all();
    for p in 1..=3 {
        h.commit_ok(&[p], 4);
    }
    h.tick();
    h.commit_ok(&[4], 4);
    h.complete(0, Outcome::Ok, CheckOutcome::Real);
    assert!(h.src.writers_locked);
    let locked_at = h.now;
    assert_eq!(h.inflight.len(), 1, "the tail is uploading");
    assert_eq!(h.engine.poll_timeout(), Some(locked_at + 1_000));
    // The store stalls: past checkpoint_lock_ms writers go, no checkpoint.
    h.advance(1_999);
    assert!(h.src.writers_locked);
    h.advance(1);
    assert!(
        !h.src.writers_locked,
        "writers still blocked after checkpoint_lock_ms"
    );
    let unlock = h
        .trace
        .iter()
        .position(|(_, c)| *c == Command::UnlockWriters)
        .expect("UnlockWriters");
    assert_eq!(h.trace[unlock].0, locked_at + 2_000);
    assert_eq!(h.count(|c| matches!(c, Command::Checkpoint { .. })), 0);
    // Writers write again; the tail becomes durable; no checkpoint for a while.
    let k = h.commit_ok(&[1], 4);
    h.complete_all();
    h.tick();
    h.complete_all();
    h.check();
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), k);
    assert_eq!(h.count(|c| *c == Command::LockWriters), 1);
    // Ten sync intervals later it tries again and succeeds.
    for _ in 0..12 {
        h.tick();
        h.complete_all();
    }
    assert_eq!(h.count(|c| *c == Command::LockWriters), 2);
    assert_eq!(h.count(|c| matches!(c, Command::Checkpoint { .. })), 1);
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn own_complete_checkpoint_then_restart_continues_incrementally() {
    let mut h = Harness::new(cfg(4), Source::new(4, 23));
    h.start();
    let seq0 = h.src.checkpoint_seq().unwrap();
    let (salt1, _) = h.src.salts().unwrap();
    let mut keys = vec![];
    for p in 1..=4 {
        keys.push(h.commit_ok(&[p], 4));
    }
    h.tick();
    // Checkpointed, and the shell's `_walvault_seq` write restarted the WAL the way
    // SQLite does (checkpoint_seq + 1, salt-1 + 1).
    assert_eq!(h.count(|c| matches!(c, Command::Checkpoint { .. })), 1);
    assert_eq!(h.src.checkpoint_seq(), Some(seq0 + 1));
    assert_eq!(h.src.salts().unwrap().0, salt1.wrapping_add(1));
    assert!(h.events().any(|e| matches!(
        e,
        Event::WalChanged {
            change: WalChange::Reset,
            continues: true
        }
    )));
    // More transactions in the new generation, then a growth.
    keys.push(h.commit_ok(&[2], 4));
    h.tick();
    keys.push(h.commit_ok(&[6], 6));
    h.tick();
    h.check();
    // Only one full file ever: TXID 1.
    assert_eq!(h.snapshots(), [(1, SnapshotReason::Initial)]);
    assert!(
        h.store
            .ids()
            .iter()
            .all(|f| f.min_txid == f.max_txid && f.level == 0)
    );
    let n = h.store.max_txid();
    assert!(h.store.level0_holes(n).is_empty());
    // Every state restores, through the restart.
    for t in 1..=n {
        let hdr = *h
            .store
            .header(FileId {
                level: 0,
                min_txid: t,
                max_txid: t,
            })
            .unwrap();
        h.assert_restores(
            t,
            (hdr.wal_salt1, hdr.wal_salt2, hdr.wal_offset + hdr.wal_size),
        );
    }
    h.assert_latest_is_source();
    // A second round: checkpoint again, restart again, still incremental.
    for p in 1..=4 {
        h.commit_ok(&[p], 6);
    }
    h.tick();
    h.tick();
    let n = h.count(|c| matches!(c, Command::Checkpoint { .. })) as u32;
    assert!(n >= 2);
    assert_eq!(h.src.checkpoint_seq(), Some(seq0 + n));
    assert_eq!(h.snapshots(), [(1, SnapshotReason::Initial)]);
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn restart_after_own_checkpoint_with_app_writes_first() {
    // Writers go before the read lock is taken again: the application's write restarts
    // the WAL (still one restart after our complete checkpoint): continues.
    let mut h = Harness::new(cfg(4), Source::new(4, 24));
    h.start();
    for p in 1..=4 {
        h.commit_ok(&[p], 4);
    }
    h.ckpt_window.push_back(Box::new(|s: &mut Source| {
        s.commit_txn(&[3, 7], 7);
        s.commit_txn(&[1], 7);
    }));
    h.tick();
    h.tick();
    h.check();
    assert_eq!(h.snapshots(), [(1, SnapshotReason::Initial)]);
    h.assert_latest_is_source();
}

#[test]
fn foreign_restart_after_our_checkpoint_gets_a_full_file() {
    // In the window, the application writes (restart 1), checkpoints everything and
    // writes again (restart 2): frames we never saw are gone.
    let mut h = Harness::new(cfg(4), Source::new(4, 25));
    h.start();
    for p in 1..=4 {
        h.commit_ok(&[p], 4);
    }
    h.ckpt_window.push_back(Box::new(|s: &mut Source| {
        s.commit_txn(&[2, 6], 6);
        s.external_checkpoint_and_restart(&[5], 6);
    }));
    h.tick();
    h.check();
    assert!(h.events().any(|e| matches!(
        e,
        Event::WalChanged {
            change: WalChange::Reset,
            continues: false
        }
    )));
    // TXID 2 was the last incremental file before the checkpoint.
    let next = 3;
    assert_eq!(
        h.snapshots(),
        [
            (1, SnapshotReason::Initial),
            (next, SnapshotReason::WalReset)
        ]
    );
    let f = FileId {
        level: 0,
        min_txid: next,
        max_txid: next,
    };
    assert_eq!(h.store.header(f).unwrap().commit, 6);
    assert_eq!(h.store.pages(f).unwrap().len(), 6);
    h.assert_latest_is_source();
}

#[test]
fn restart_without_our_checkpoint_gets_a_full_file() {
    let mut h = Harness::new(config(), Source::new(4, 26));
    h.start();
    h.commit_ok(&[1], 4);
    h.tick();
    // Committed, never read by the engine, then checkpointed and the WAL restarted
    // behind its back (its read lock lost, say).
    h.commit_ok(&[2, 5], 5);
    h.src.external_checkpoint_and_restart(&[3], 5);
    let k = h.src.pos();
    let next = h.engine.next_txid();
    h.tick();
    h.check();
    assert_eq!(
        h.snapshots(),
        [
            (1, SnapshotReason::Initial),
            (next, SnapshotReason::WalReset)
        ]
    );
    h.assert_restores(next, k);
    let k2 = h.commit_ok(&[4], 5);
    h.tick();
    h.assert_restores(next + 1, k2);
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn partial_busy_or_failed_checkpoints_do_not_continue_a_restart() {
    for answer in [CkptAnswer::AppReader, CkptAnswer::Busy, CkptAnswer::Fail] {
        let mut h = Harness::new(cfg(4), Source::new(4, 27));
        h.start();
        for p in 1..=4 {
            h.commit_ok(&[p], 4);
        }
        // While our read lock is released the application checkpoints and restarts
        // the WAL itself: our checkpoint did not complete, so this is not ours.
        h.ckpt_answers.push_back(answer);
        h.ckpt_window.push_back(Box::new(|s: &mut Source| {
            s.external_checkpoint_and_restart(&[2], 4);
        }));
        h.tick();
        h.check();
        assert_eq!(h.count(|c| matches!(c, Command::Checkpoint { .. })), 1);
        assert!(
            h.events().any(|e| matches!(
                e,
                Event::WalChanged {
                    change: WalChange::Reset,
                    continues: false
                }
            )),
            "{answer:?}"
        );
        assert_eq!(
            h.snapshots().last(),
            Some(&(3, SnapshotReason::WalReset)),
            "{answer:?}"
        );
        h.assert_latest_is_source();
    }
}

#[test]
fn busy_checkpoint_is_not_retried_in_a_storm() {
    let mut h = Harness::new(cfg(4), Source::new(4, 31));
    h.start();
    for p in 1..=4 {
        h.commit_ok(&[p], 4);
    }
    // An application reader pins the WAL for the next 50 attempts.
    h.ckpt_answers.extend([CkptAnswer::AppReader; 50]);
    h.tick();
    let attempts = h.count(|c| matches!(c, Command::Checkpoint { .. }));
    let files = h.store.len();
    assert!(
        attempts <= 2,
        "{attempts} checkpoints and {files} files within one sync interval"
    );
}

#[test]
fn writers_not_lockable_retries_later() {
    let mut h = Harness::new(cfg(4), Source::new(4, 28));
    h.start();
    for p in 1..=4 {
        h.commit_ok(&[p], 4);
    }
    h.lock_answers.push_back(false);
    h.tick();
    assert_eq!(h.count(|c| *c == Command::LockWriters), 1);
    assert!(!h.src.writers_locked);
    assert!(
        h.events()
            .any(|e| matches!(e, Event::CheckpointDone { busy: true, .. }))
    );
    // An application transaction holds the write lock meanwhile.
    assert!(h.src.write_uncommitted(&[2]));
    for _ in 0..12 {
        h.tick();
    }
    assert_eq!(h.count(|c| matches!(c, Command::Checkpoint { .. })), 0);
    let k = h.commit_ok(&[3], 4);
    for _ in 0..12 {
        h.tick();
    }
    assert_eq!(h.count(|c| matches!(c, Command::Checkpoint { .. })), 1);
    h.check();
    let f = h.store.max_txid();
    assert!(f > 0);
    let _ = k;
    h.assert_latest_is_source();
}

#[test]
fn truncate_checkpoint_is_followed_by_a_full_file() {
    let mut c = cfg(u64::MAX);
    c.truncate_bytes = 32 + 4 * (24 + 512);
    let mut h = Harness::new(c, Source::new(4, 29));
    h.start();
    for p in 1..=4 {
        h.commit_ok(&[p], 4);
    }
    h.ckpt_window.push_back(Box::new(|s: &mut Source| {
        s.commit_txn(&[6], 6);
    }));
    h.tick();
    assert!(h.commands().any(|c| *c
        == Command::Checkpoint {
            mode: CheckpointMode::Truncate
        }));
    h.tick();
    h.check();
    assert!(
        h.snapshots()
            .iter()
            .any(|(_, r)| *r == SnapshotReason::AfterTruncate)
    );
    h.assert_latest_is_source();
    h.commit_ok(&[1], 6);
    h.tick();
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn shutdown_while_writers_locked_releases_them() {
    let mut h = Harness::new(cfg(3), Source::new(4, 30));
    h.deferred = true;
    h.start();
    h.complete_all();
    for p in 1..=3 {
        h.commit_ok(&[p], 4);
    }
    h.tick();
    h.commit_ok(&[4], 4);
    h.complete(0, Outcome::Ok, CheckOutcome::Real);
    assert!(h.src.writers_locked);
    h.shutdown(false);
    assert!(!h.src.writers_locked);
    assert!(h.stopped);
    assert_eq!(h.count(|c| matches!(c, Command::Checkpoint { .. })), 0);
    h.check();
    h.assert_latest_is_source();
}
