//! Targeted scenarios of store faults: transient failures and backoff, unknown
//! outcomes and the check that follows, duplicate and late completions, and a file
//! whose source changed while it was built.

use super::harness::{CheckOutcome, Harness, Outcome, Req, config};
use super::source::{PosKey, Source};
use crate::backoff::Backoff;
use crate::keys::FileId;
use crate::replicator::{
    CheckResult, Command, Event, Input, Position, SnapshotReason, UploadResult,
};

fn l0(min: u64, max: u64) -> FileId {
    FileId {
        level: 0,
        min_txid: min,
        max_txid: max,
    }
}

fn commit(h: &mut Harness, pages: &[u32], commit: u32) -> PosKey {
    h.commit(pages, commit).expect("writers are not blocked")
}

fn persists(h: &Harness) -> Vec<Position> {
    h.commands()
        .filter_map(|c| match c {
            Command::Persist(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn uploads_of(h: &Harness, file: FileId) -> Vec<(u64, u32)> {
    h.trace
        .iter()
        .filter_map(|(t, c)| match c {
            Command::Upload {
                file: f, attempt, ..
            } if *f == file => Some((*t, *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn transient_failure_retries_after_backoff_without_a_hole() {
    let mut h = Harness::new(config(), Source::new(4, 11));
    h.deferred = true;
    h.start();
    h.complete_all();
    commit(&mut h, &[1], 4);
    h.tick();
    let k3 = commit(&mut h, &[2], 4);
    h.tick();
    assert_eq!(
        h.inflight,
        [
            Req::Upload {
                file: l0(2, 2),
                attempt: 1
            },
            Req::Upload {
                file: l0(3, 3),
                attempt: 1
            }
        ]
    );
    // 2 fails, 3 succeeds: 3 is stored but nothing is durable past 1.
    let failed_at = h.now;
    let sent = uploads_of(&h, l0(2, 2));
    assert_eq!(sent.len(), 1);
    h.complete(0, Outcome::Transient, CheckOutcome::Real);
    h.complete(0, Outcome::Ok, CheckOutcome::Real);
    assert_eq!(h.engine.durable().txid, 1);
    assert!(h.store.get(l0(3, 3)).is_some());
    h.check();

    let retry = h
        .events()
        .find_map(|e| match e {
            Event::UploadRetry {
                file,
                attempt,
                delay_ms,
                ..
            } if *file == l0(2, 2) => Some((*attempt, *delay_ms)),
            _ => None,
        })
        .expect("an UploadRetry event");
    assert_eq!(retry.0, 1);
    let ceiling = Backoff::new(h.cfg.backoff, 0).ceiling(1);
    assert!(
        (1..=ceiling).contains(&retry.1),
        "delay {} outside [1, {ceiling}]",
        retry.1
    );
    let due = failed_at + retry.1;
    assert!(h.engine.poll_timeout().is_some_and(|t| t <= due));
    assert_eq!(h.engine.poll_timeout(), Some(due.min(failed_at + 1_000)));

    // Not before the delay; at the delay, attempt 2 of the same file.
    h.advance(retry.1 - 1);
    assert_eq!(uploads_of(&h, l0(2, 2)), sent);
    h.advance(1);
    assert_eq!(uploads_of(&h, l0(2, 2)), [sent[0], (due, 2)]);
    // Fails again: the ceiling doubles.
    let failed2 = h.now;
    h.complete(0, Outcome::Transient, CheckOutcome::Real);
    let d2 = h
        .events()
        .filter_map(|e| match e {
            Event::UploadRetry {
                attempt: 2,
                delay_ms,
                ..
            } => Some(*delay_ms),
            _ => None,
        })
        .next()
        .expect("second retry");
    assert!((1..=Backoff::new(h.cfg.backoff, 0).ceiling(2)).contains(&d2));
    h.advance(d2);
    assert_eq!(uploads_of(&h, l0(2, 2)).last(), Some(&(failed2 + d2, 3)));
    h.complete(0, Outcome::Ok, CheckOutcome::Real);
    h.check();

    // Durable jumps to 3 at once; TXIDs unchanged, no hole.
    assert_eq!(h.engine.durable().txid, 3);
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), k3);
    assert_eq!(h.store.ids(), [l0(1, 1), l0(2, 2), l0(3, 3)]);
    let p = persists(&h);
    assert_eq!(p.iter().map(|p| p.txid).collect::<Vec<_>>(), [1, 3]);
    assert!(p.windows(2).all(|w| w[0].txid < w[1].txid));
    h.assert_latest_is_source();
}

#[test]
fn permanent_failures_are_retried_too() {
    let mut h = Harness::new(config(), Source::new(4, 12));
    h.start();
    commit(&mut h, &[1], 4);
    h.uploads.extend([Outcome::Permanent, Outcome::Transient]);
    h.tick();
    assert_eq!(h.engine.durable().txid, 1);
    for _ in 0..3 {
        h.advance(200);
    }
    assert_eq!(h.engine.durable().txid, 2);
    assert_eq!(uploads_of(&h, l0(2, 2)).len(), 3);
    h.check();
}

#[test]
fn unknown_outcome_is_checked() {
    // Unknown, stored after all: CheckUpload says Matches, the file is durable.
    let mut h = Harness::new(config(), Source::new(4, 13));
    h.start();
    let k = commit(&mut h, &[3], 4);
    h.uploads.push_back(Outcome::UnknownStored);
    h.tick();
    assert_eq!(
        h.count(|c| matches!(c, Command::CheckUpload { file, .. } if *file == l0(2, 2))),
        1
    );
    assert_eq!(uploads_of(&h, l0(2, 2)).len(), 1);
    assert_eq!(h.engine.durable().txid, 2);
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), k);
    h.check();

    // Unknown, not stored: Absent, then uploaded again (after a backoff delay).
    commit(&mut h, &[1], 4);
    h.uploads.push_back(Outcome::UnknownLost);
    h.tick();
    assert_eq!(h.engine.durable().txid, 2);
    assert_eq!(
        h.count(|c| matches!(c, Command::CheckUpload { file, .. } if *file == l0(3, 3))),
        1
    );
    h.advance(150);
    assert_eq!(uploads_of(&h, l0(3, 3)).len(), 2);
    assert_eq!(h.engine.durable().txid, 3);
    h.check();

    // Our own earlier attempt took the key: AlreadyExists, check, Matches.
    commit(&mut h, &[2], 4);
    h.uploads.push_back(Outcome::ExistsOurs);
    h.tick();
    assert_eq!(h.engine.durable().txid, 4);

    // The check itself fails: asked again after a backoff delay.
    commit(&mut h, &[2], 5);
    h.uploads.push_back(Outcome::UnknownStored);
    h.checks.push_back(CheckOutcome::Failed);
    h.tick();
    h.advance(150);
    assert_eq!(h.engine.durable().txid, 5);
    let seq: Vec<&str> = h
        .commands()
        .filter_map(|c| match c {
            Command::CheckUpload { file, .. } if *file == l0(5, 5) => Some("check"),
            Command::Event(Event::UploadRetry { file, error, .. })
                if *file == l0(5, 5) && error == "GET 500" =>
            {
                Some("retry")
            }
            Command::Persist(p) if p.txid == 5 => Some("persist"),
            _ => None,
        })
        .collect();
    assert_eq!(seq, ["check", "retry", "check", "persist"]);
    assert_eq!(uploads_of(&h, l0(5, 5)).len(), 1);
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn another_writers_object_halts() {
    let mut h = Harness::new(config(), Source::new(4, 14));
    h.start();
    commit(&mut h, &[3], 4);
    // Someone else's file already sits under TXID 2.
    let mut other = Source::new(2, 99);
    other.commit_txn(&[1], 2);
    let mut other_h = Harness::new(config(), other);
    other_h.start();
    other_h.commit(&[2], 2);
    other_h.tick();
    let foreign = other_h.store.get(l0(2, 2)).unwrap().to_vec();
    assert!(h.store.put_if_absent(l0(2, 2), &foreign));
    h.tick();
    assert!(
        h.halted
            .as_deref()
            .is_some_and(|r| r.contains("another writer")),
        "{:?}",
        h.halted
    );
    assert!(matches!(h.trace.last(), Some((_, Command::Halt { .. }))));
    assert!(h.engine.is_stopped());
    assert_eq!(h.engine.durable().txid, 1);
    // A halted engine does nothing more.
    let n = h.trace.len();
    h.advance(10_000);
    assert_eq!(h.trace.len(), n);
}

#[test]
fn duplicate_and_late_completions_change_nothing() {
    let mut h = Harness::new(config(), Source::new(4, 15));
    h.deferred = true;
    h.start();
    h.complete_all();
    commit(&mut h, &[1], 4);
    h.tick();
    let before = h.trace.len();
    let durable = h.engine.durable();
    let pending = h.engine.pending_files();
    let timeout = h.engine.poll_timeout();
    let t = h.t();
    let stray: Vec<Input<'static>> = vec![
        // File 1 is durable already.
        Input::UploadDone {
            file: l0(1, 1),
            attempt: 1,
            result: UploadResult::Stored,
        },
        Input::UploadDone {
            file: l0(1, 1),
            attempt: 1,
            result: UploadResult::Transient("late".into()),
        },
        Input::UploadDone {
            file: l0(1, 1),
            attempt: 1,
            result: UploadResult::SourceChanged("late".into()),
        },
        Input::CheckDone {
            file: l0(1, 1),
            attempt: 1,
            result: CheckResult::Differs,
        },
        // File 2 is uploading, not being checked.
        Input::CheckDone {
            file: l0(2, 2),
            attempt: 1,
            result: CheckResult::Matches,
        },
        Input::CheckDone {
            file: l0(2, 2),
            attempt: 1,
            result: CheckResult::Differs,
        },
        // An attempt of file 2 that was never sent (a late answer to an older one).
        Input::UploadDone {
            file: l0(2, 2),
            attempt: 7,
            result: UploadResult::Transient("older attempt".into()),
        },
        // Never cut.
        Input::UploadDone {
            file: l0(9, 9),
            attempt: 1,
            result: UploadResult::Stored,
        },
        Input::CheckDone {
            file: l0(9, 9),
            attempt: 1,
            result: CheckResult::Matches,
        },
        // No checkpoint is running; no lock was asked for.
        Input::CheckpointDone {
            mode: crate::replicator::CheckpointMode::Passive,
            result: Err("late".into()),
        },
        Input::WritersLocked { ok: false },
        // A WAL read nobody asked for.
        Input::WalRead {
            header: None,
            file_len: 0,
            db_len: 0,
            offset: 0,
            data: &[],
        },
    ];
    for input in stray {
        h.engine.handle(t, input);
    }
    assert_eq!(h.engine.poll_command(), None);
    assert_eq!(h.trace.len(), before);
    assert_eq!(h.engine.durable(), durable);
    assert_eq!(h.engine.pending_files(), pending);
    assert_eq!(h.engine.poll_timeout(), timeout);

    // The real completion still works, and a duplicate of it is ignored.
    h.complete(0, Outcome::Ok, CheckOutcome::Real);
    assert_eq!(h.engine.durable().txid, 2);
    let n = h.trace.len();
    h.engine.handle(
        h.t(),
        Input::UploadDone {
            file: l0(2, 2),
            attempt: 1,
            result: UploadResult::Stored,
        },
    );
    assert_eq!(h.engine.poll_command(), None);
    assert_eq!(h.trace.len(), n);
    h.check();
}

#[test]
fn source_changed_replaces_pending_files_with_one_full_file() {
    let mut h = Harness::new(config(), Source::new(4, 16));
    h.deferred = true;
    h.start();
    h.complete_all();
    for p in 1..=3 {
        commit(&mut h, &[p], 4 + p);
        h.tick();
    }
    // Files 2, 3, 4 are out; 3 lands, then 2 cannot be built.
    assert_eq!(h.inflight.len(), 3);
    h.complete(1, Outcome::Ok, CheckOutcome::Real);
    let key = commit(&mut h, &[6], 8);
    h.complete(0, Outcome::BuildFails, CheckOutcome::Real);
    // 2..=4 are dropped (Forget), one full file 2..=5 replaces them.
    for f in [l0(2, 2), l0(3, 3), l0(4, 4)] {
        assert!(
            h.commands().any(|c| *c == Command::Forget { file: f }),
            "no Forget for {f}"
        );
    }
    assert!(h.events().any(|e| matches!(
        e,
        Event::SnapshotStarted {
            txid: 5,
            reason: SnapshotReason::SourceChanged,
            ..
        }
    )));
    assert_eq!(h.cuts().last(), Some(&l0(2, 5)));
    // The old request for 4 is still out at the store; it finishes.
    h.complete_all();
    h.check();
    assert!(h.store.get(l0(2, 5)).is_some());
    assert_eq!(h.engine.durable().txid, 5);
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), key);
    let hdr = h.store.header(l0(2, 5)).unwrap();
    assert_eq!(hdr.commit, 8);
    assert_eq!(h.store.pages(l0(2, 5)).unwrap().len(), 8);
    h.assert_restores(5, key);
    h.assert_latest_is_source();
    // Then streaming goes on incrementally.
    let k6 = commit(&mut h, &[1], 8);
    h.tick();
    h.complete_all();
    assert_eq!(h.cuts().last(), Some(&l0(6, 6)));
    h.assert_restores(6, k6);
    h.check();
}

#[test]
fn persist_only_carries_durable_positions_in_order() {
    let mut h = Harness::new(config(), Source::new(4, 17));
    h.deferred = true;
    h.start();
    h.complete_all();
    for i in 0..6u32 {
        commit(&mut h, &[1 + i % 4], 4);
        h.tick();
    }
    // Complete in reverse order with some failures.
    while !h.inflight.is_empty() {
        let i = h.inflight.len() - 1;
        let o = if h.now.is_multiple_of(3) {
            Outcome::Transient
        } else {
            Outcome::Ok
        };
        h.complete(i, o, CheckOutcome::Real);
        h.check();
        h.advance(37);
    }
    for _ in 0..20 {
        h.advance(500);
        h.complete_all();
    }
    h.check();
    let p = persists(&h);
    assert!(!p.is_empty());
    assert!(p.windows(2).all(|w| w[0].txid < w[1].txid), "{p:?}");
    assert_eq!(p.last().map(|p| p.txid), Some(7));
}

#[test]
fn dropped_uploads_still_count_against_the_window() {
    // Minimized by the model: the shell reports SourceChanged for file 2 (staging
    // failed) while file 3's PUT, sent in the same dispatch, is already out.
    let mut cfg = config();
    cfg.max_in_flight = 2;
    let mut h = Harness::new(cfg, Source::new(4, 18));
    h.deferred = true;
    h.start();
    h.complete_all();
    commit(&mut h, &[1], 4);
    h.tick();
    commit(&mut h, &[2], 4);
    h.tick();
    assert_eq!(h.inflight.len(), 2);
    h.complete(0, Outcome::BuildFails, CheckOutcome::Real);
    commit(&mut h, &[3], 4);
    h.tick();
    assert!(
        h.max_at_store <= 2,
        "{} requests at the store with a window of 2: {:?}",
        h.max_at_store,
        h.inflight
    );
}

#[test]
fn a_file_that_cannot_be_built_during_shutdown_does_not_hang_the_stop() {
    // Found by the simulator (seed 1626): the final read of a shutdown was done, the
    // last file's staging failed, and the full file that replaces it waited for a read
    // that never came.
    let mut h = Harness::new(config(), Source::new(4, 21));
    h.start();
    commit(&mut h, &[1], 4);
    h.tick();
    commit(&mut h, &[2], 5);
    h.uploads.push_back(Outcome::BuildFails);
    h.shutdown(false);
    assert!(h.stopped);
    h.check();
    h.assert_latest_is_source();
}
