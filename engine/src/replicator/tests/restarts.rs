//! Targeted scenarios of restarts: resuming the store's chain from the same WAL, a
//! WAL whose salts changed meanwhile, an empty store, a store behind the persisted
//! position, and crashes with uploads outstanding.

use super::harness::{Harness, Outcome, config};
use super::source::Source;
use crate::keys::FileId;
use crate::replicator::{Event, SnapshotReason};

fn l0(min: u64, max: u64) -> FileId {
    FileId {
        level: 0,
        min_txid: min,
        max_txid: max,
    }
}

/// A harness that has shipped a few files and then stopped cleanly.
fn shipped(seed: u64) -> Harness {
    let mut h = Harness::new(config(), Source::new(4, seed));
    h.start();
    for p in 1..=3 {
        h.commit_ok(&[p], 4 + p);
        h.tick();
    }
    h.check();
    h
}

/// The first file after a crash: it starts right after `chain_end` and ends past the
/// fence of TXIDs the dead process may still have had in flight.
fn fenced_first_cut(h: &Harness, chain_end: u64) -> FileId {
    let first = *h.cuts().first().expect("a file after the restart");
    assert_eq!(first.min_txid, chain_end + 1, "{first}");
    assert!(
        first.max_txid > chain_end + 1024,
        "{first}: a crashed run's TXIDs must be fenced off"
    );
    assert!(
        h.events()
            .any(|e| matches!(e, Event::TxidsFenced { next, .. } if *next == first.max_txid))
    );
    first
}

#[test]
fn restart_on_the_same_wal_continues_the_chain() {
    let mut h = shipped(31);
    let max = h.store.max_txid();
    h.crash(&|_, _| false);
    // The application writes while walvault is down.
    h.commit_ok(&[2], 7);
    h.start();
    h.check();
    assert!(
        h.events()
            .any(|e| matches!(e, Event::Resumed { txid, .. } if *txid == max))
    );
    assert_eq!(h.snapshots(), []);
    // The application's transaction and the shell's `_walvault_seq` write are the
    // first incremental file, cut as soon as the scan ends: it continues the chain
    // at max+1 and, after a crash, spans the fence.
    let first = fenced_first_cut(&h, max);
    assert_eq!(h.cuts(), [first]);
    let next = first.max_txid + 1;
    h.assert_restores(first.max_txid, h.src.pos());
    let k = h.commit_ok(&[3], 7);
    h.tick();
    h.check();
    assert_eq!(h.cuts(), [first, l0(next, next)]);
    h.assert_restores(next, k);
    h.assert_latest_is_source();
    // A clean stop, then a start without the `_walvault_seq` write and nothing new:
    // nothing to ship, no fence.
    h.shutdown(false);
    h.crash(&|_, _| false);
    h.seq_write = false;
    h.start();
    h.tick();
    assert_eq!(h.cuts(), []);
    assert_eq!(h.engine.next_txid(), next + 1);
    assert_eq!(h.engine.durable().txid, next);
    h.check();
}

#[test]
fn restart_after_a_clean_stop_continues_without_a_fence() {
    let mut h = shipped(37);
    h.shutdown(false);
    let max = h.store.max_txid();
    h.crash(&|_, _| false);
    h.commit_ok(&[2], 7);
    h.start();
    h.check();
    assert_eq!(h.cuts(), [l0(max + 1, max + 1)]);
    assert!(!h.events().any(|e| matches!(e, Event::TxidsFenced { .. })));
    h.assert_restores(max + 1, h.src.pos());
    h.assert_latest_is_source();
}

#[test]
fn late_writes_of_a_crashed_run_never_collide_with_the_next() {
    // The dead process's PUT lands after the next one listed the store (a zombie
    // write): its key and TXID are not reused, and the chain restores either way.
    let mut h = shipped(38);
    h.deferred = true;
    let max = h.store.max_txid();
    h.commit_ok(&[1], 7);
    h.tick();
    let zombie = h.inflight[0].file();
    let zombie_bytes = h.sending[&zombie].clone();
    h.crash(&|_, _| false);
    h.deferred = false;
    h.commit_ok(&[2], 7);
    h.start();
    h.check();
    let first = fenced_first_cut(&h, max);
    assert!(first.max_txid > zombie.max_txid);
    // Now the zombie lands: under its own key, below the new file.
    assert!(h.store.put_if_absent(zombie, &zombie_bytes));
    let k = h.commit_ok(&[3], 7);
    h.tick();
    h.check();
    h.assert_restores(first.max_txid + 1, k);
    h.assert_latest_is_source();
}

#[test]
fn restart_on_a_new_wal_generation_writes_one_full_file() {
    let mut h = shipped(32);
    let max = h.store.max_txid();
    h.crash(&|_, _| false);
    // Down: the application checkpoints and restarts the WAL.
    h.commit_ok(&[1, 8], 8);
    h.src.external_checkpoint_and_restart(&[2], 8);
    h.commit_ok(&[3], 8);
    h.start();
    h.check();
    let first = fenced_first_cut(&h, max);
    assert_eq!(h.cuts(), [first]);
    assert_eq!(
        h.snapshots(),
        [(first.max_txid, SnapshotReason::NoResumePoint)]
    );
    assert_eq!(h.store.pages(first).unwrap().len(), 8);
    h.assert_latest_is_source();
    let k = h.commit_ok(&[4], 8);
    h.tick();
    let next = first.max_txid + 1;
    assert_eq!(h.cuts().last(), Some(&l0(next, next)));
    h.assert_restores(next, k);
    h.check();
}

#[test]
fn restart_with_an_empty_store_writes_a_snapshot_from_txid_1() {
    let mut h = shipped(33);
    h.crash(&|_, _| false);
    // The replica was wiped (a new bucket), the local position remains.
    h.store = super::store::Store::default();
    h.claims.clear();
    h.reset_durable_floor();
    let acknowledged = h.persisted.map_or(0, |p| p.txid);
    h.start();
    // A snapshot from TXID 1, its end above every TXID the local position knows was
    // used (the listing may only lag) and above the crash's fence.
    let first = fenced_first_cut(&h, 0);
    assert_eq!(h.snapshots(), [(first.max_txid, SnapshotReason::Initial)]);
    assert_eq!(h.cuts(), [first]);
    assert!(first.max_txid > acknowledged + 1024);
    assert!(h.events().any(|e| matches!(e, Event::RemoteBehind { .. })));
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn restart_with_the_store_behind_the_persisted_position() {
    // The store lost the newest acknowledged file.
    let mut h = shipped(34);
    let max = h.store.max_txid();
    h.crash(&|_, _| false);
    let mut kept = super::store::Store::default();
    for id in h.store.ids() {
        if id.max_txid < max {
            assert!(kept.put_if_absent(id, h.store.get(id).unwrap()));
        }
    }
    h.store = kept;
    h.claims.remove(&max);
    h.reset_durable_floor();
    h.start();
    assert!(h.events().any(|e| matches!(
        e,
        Event::RemoteBehind { local_txid, remote_txid } if *local_txid == max && *remote_txid == max - 1
    )));
    // TXID max is not reused (the listing may lag a file that exists): one full
    // file from the store's chain end bridges whatever is missing.
    h.check();
    let first = fenced_first_cut(&h, max - 1);
    assert!(first.max_txid > max);
    assert!(
        h.snapshots()
            .iter()
            .any(|&(t, r)| t == first.max_txid && r == SnapshotReason::NoResumePoint)
    );
    h.assert_latest_is_source();
}

#[test]
fn crash_after_upload_before_persist_resumes_after_the_stored_file() {
    let mut h = shipped(35);
    h.deferred = true;
    h.commit_ok(&[1], 7);
    h.tick();
    let f = h.inflight[0].file();
    // The PUT lands, the process dies before hearing of it.
    h.crash(&|_, _| true);
    assert!(h.store.get(f).is_some());
    assert!(h.persisted.unwrap().txid < f.max_txid);
    h.deferred = false;
    h.start();
    h.check();
    assert!(
        h.events()
            .any(|e| matches!(e, Event::Resumed { txid, .. } if *txid == f.max_txid))
    );
    assert_eq!(h.snapshots(), []);
    h.tick();
    h.check();
    assert!(h.store.level0_holes(h.store.max_txid()).is_empty());
    h.assert_latest_is_source();
}

#[test]
fn crash_with_a_hole_below_the_tip_does_not_resume_over_it() {
    let mut h = shipped(36);
    h.deferred = true;
    let base = h.store.max_txid();
    h.commit_ok(&[1], 7);
    h.tick();
    h.commit_ok(&[2], 7);
    h.tick();
    // base+1 fails transiently, base+2 is stored; then the process dies.
    h.complete(0, Outcome::Transient, super::harness::CheckOutcome::Real);
    h.complete(0, Outcome::Ok, super::harness::CheckOutcome::Real);
    assert!(h.store.get(l0(base + 2, base + 2)).is_some());
    assert!(h.store.get(l0(base + 1, base + 1)).is_none());
    h.crash(&|_, _| false);
    h.deferred = false;
    h.reset_durable_floor();
    h.start();
    h.tick();
    // The chain must not go on over the hole at base+1.
    assert!(
        h.store.level0_holes(h.store.max_txid()).is_empty(),
        "hole at {:?}; store {:?}",
        h.store.level0_holes(h.store.max_txid()),
        h.store.ids()
    );
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn crash_before_the_initial_snapshot_landed() {
    // Minimized by the model (model_with_holes): max_in_flight 2, checkpoint_frames 3.
    let mut cfg = config();
    cfg.max_in_flight = 2;
    cfg.checkpoint_frames = 3;
    let mut h = Harness::new(cfg, Source::new(3, 0));
    h.deferred = true;
    h.start(); // TXID 1 (full) is uploading
    h.commit_ok(&[1], 1);
    h.commit_ok(&[1], 1);
    h.advance(1_000); // TXID 2 is uploading
    // The process dies; only TXID 2's PUT had reached the store.
    h.crash(&|_, f| f.max_txid == 2);
    h.reset_durable_floor();
    h.start();
    h.complete_all();
    h.tick();
    h.complete_all();
    assert!(
        h.restore(crate::restore_plan::Target::Latest).is_ok(),
        "nothing restores: store {:?}, durable {}",
        h.store.ids(),
        h.engine.durable().txid
    );
    h.check();
}
