//! Targeted scenarios of normal streaming: the initial snapshot, one level-0 file per
//! sync interval, only committed frames shipped, growth and shrink, the upload window,
//! and shutdown with and without a level-9 snapshot.

use super::harness::{Harness, Req, config};
use super::source::{PS, PosKey, Source};
use crate::keys::{FileId, SNAPSHOT_LEVEL};
use crate::replicator::{Command, Event, SnapshotReason};
use crate::restore_plan::Target;

fn l0(min: u64, max: u64) -> FileId {
    FileId {
        level: 0,
        min_txid: min,
        max_txid: max,
    }
}

fn pgnos(h: &Harness, f: FileId) -> Vec<u32> {
    h.store
        .pages(f)
        .expect("stored")
        .iter()
        .map(|(p, _)| *p)
        .collect()
}

fn commit(h: &mut Harness, pages: &[u32], commit: u32) -> PosKey {
    h.commit(pages, commit).expect("writers are not blocked")
}

#[test]
fn fresh_start_snapshots_then_one_file_per_interval() {
    let mut src = Source::new(3, 1);
    src.commit_txn(&[2, 3], 4);
    let mut h = Harness::new(config(), src);
    h.start();
    h.check();

    // TXID 1: a full file of every page, the first thing in the store.
    assert_eq!(h.cuts(), [l0(1, 1)]);
    assert!(h.events().any(|e| matches!(
        e,
        Event::SnapshotStarted {
            txid: 1,
            reason: SnapshotReason::Initial,
            pages: 4
        }
    )));
    let hdr = *h.store.header(l0(1, 1)).unwrap();
    assert_eq!((hdr.min_txid, hdr.max_txid, hdr.commit), (1, 1, 4));
    assert_eq!(pgnos(&h, l0(1, 1)), [1, 2, 3, 4]);
    assert_eq!(h.engine.durable().txid, 1);
    let mut at: Vec<(u64, PosKey)> = vec![(1, h.src.pos())];

    // Each interval's committed transactions become the next level-0 file.
    let txns: [(&[u32], u32); 6] = [
        (&[1], 4),
        (&[4, 2], 4),
        (&[5], 5),
        (&[1, 3, 5], 5),
        (&[2], 5),
        (&[6, 7], 7),
    ];
    for (i, (pages, c)) in txns.into_iter().enumerate() {
        let key = commit(&mut h, pages, c);
        h.tick();
        h.check();
        let txid = i as u64 + 2;
        assert_eq!(h.engine.durable().txid, txid);
        at.push((txid, key));
    }
    // Two transactions in one interval: one file.
    commit(&mut h, &[1], 7);
    let key = commit(&mut h, &[2], 7);
    h.tick();
    h.check();
    at.push((8, key));
    assert!(h.events().any(|e| matches!(
        e,
        Event::FileCut { file, txns: 2, .. } if *file == l0(8, 8)
    )));
    // An idle interval cuts nothing.
    h.tick();
    h.tick();

    let expect: Vec<FileId> = (1..=8).map(|t| l0(t, t)).collect();
    assert_eq!(h.cuts(), expect);
    assert_eq!(h.store.ids(), expect);
    for (txid, key) in at {
        h.assert_restores(txid, key);
    }
    h.assert_latest_is_source();
}

#[test]
fn only_committed_frames_are_shipped() {
    let mut h = Harness::new(config(), Source::new(4, 2));
    h.start();
    let before = h.store.len();

    // Frames of a transaction in progress: nothing to ship.
    assert!(h.src.write_uncommitted(&[2, 3]));
    h.tick();
    h.tick();
    assert_eq!(h.store.len(), before, "uncommitted frames were shipped");
    assert_eq!(h.engine.unshipped_txns(), 0);

    // Its commit frame arrives: all of its pages ship together.
    let key = commit(&mut h, &[4], 4);
    h.tick();
    h.check();
    let f = *h.cuts().last().unwrap();
    assert_eq!(pgnos(&h, f), [2, 3, 4]);
    h.assert_restores(f.max_txid, key);

    // A committed transaction followed by an open one in the same interval: only the
    // committed one is in the file, and the open one's frames follow later.
    let key = commit(&mut h, &[1], 4);
    assert!(h.src.write_uncommitted(&[3]));
    h.tick();
    h.check();
    let f = *h.cuts().last().unwrap();
    assert_eq!(pgnos(&h, f), [1]);
    h.assert_restores(f.max_txid, key);

    // Rolled back: its frames stay in the file but are never shipped; a later
    // transaction overwrites them.
    h.src.rollback();
    h.tick();
    assert_eq!(h.cuts().last(), Some(&f));
    let key = commit(&mut h, &[2], 4);
    h.tick();
    h.check();
    let g = *h.cuts().last().unwrap();
    assert_eq!(g.max_txid, f.max_txid + 1);
    assert_eq!(pgnos(&h, g), [2]);
    h.assert_restores(g.max_txid, key);
    h.assert_latest_is_source();
}

#[test]
fn growth_includes_every_new_page_and_shrink_restores() {
    // Growth that does not write the new pages: the engine must add them itself.
    let mut src = Source::new(3, 3);
    src.raw_growth = true;
    let mut h = Harness::new(config(), src);
    h.start();

    // Grow 3 -> 8 writing only page 1: pages 4..=8 (never written, zeros) still ship.
    let k1 = commit(&mut h, &[1], 8);
    h.tick();
    let f1 = *h.cuts().last().unwrap();
    assert_eq!(pgnos(&h, f1), [1, 4, 5, 6, 7, 8]);
    assert_eq!(h.store.header(f1).unwrap().commit, 8);

    // Grow 8 -> 10 writing page 10 only: page 9 comes along.
    let k2 = commit(&mut h, &[10], 10);
    h.tick();
    let f2 = *h.cuts().last().unwrap();
    assert_eq!(pgnos(&h, f2), [9, 10]);

    // Shrink to 4.
    let k3 = commit(&mut h, &[2], 4);
    h.tick();
    let f3 = *h.cuts().last().unwrap();
    assert_eq!(pgnos(&h, f3), [2]);
    assert_eq!(h.store.header(f3).unwrap().commit, 4);

    // Grow again to 7 writing page 7 only: pages 5 and 6 are what SQLite reads for
    // them now (their newest frames from before the shrink).
    let k4 = commit(&mut h, &[7], 7);
    h.tick();
    let f4 = *h.cuts().last().unwrap();
    assert_eq!(pgnos(&h, f4), [5, 6, 7]);

    // Within one interval: grow to 12 (page 12), then shrink to 9 (page 1): the file
    // holds page 1 and growth pages 8, 9 only.
    commit(&mut h, &[12], 12);
    let k5 = commit(&mut h, &[1], 9);
    h.tick();
    let f5 = *h.cuts().last().unwrap();
    assert_eq!(pgnos(&h, f5), [1, 8, 9]);
    h.check();

    for (f, k) in [(f1, k1), (f2, k2), (f3, k3), (f4, k4), (f5, k5)] {
        h.assert_restores(f.max_txid, k);
    }
    h.assert_latest_is_source();
}

#[test]
fn uploads_in_flight_never_exceed_the_window() {
    let mut cfg = config();
    cfg.max_in_flight = 2;
    let mut h = Harness::new(cfg, Source::new(4, 4));
    h.deferred = true;
    h.start();
    let mut last = None;
    for i in 0..20u32 {
        last = Some(commit(&mut h, &[1 + i % 4], 4));
        h.tick();
        assert!(h.inflight.len() <= 2);
        // Files cut but not durable stay bounded (4 × the window).
        assert!(
            h.engine.pending_files() <= 8,
            "{}",
            h.engine.pending_files()
        );
        if i % 5 == 4 {
            // Complete the newest first: durability still advances only in order.
            let n = h.inflight.len();
            h.complete(
                n - 1,
                super::harness::Outcome::Ok,
                super::harness::CheckOutcome::Real,
            );
            h.check();
        }
    }
    assert_eq!(h.max_outstanding, 2);
    h.complete_all();
    for _ in 0..30 {
        h.tick();
        h.complete_all();
    }
    h.check();
    assert_eq!(h.engine.pending_files(), 0);
    assert!(h.store.level0_holes(h.store.max_txid()).is_empty());
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), last.unwrap());
    h.assert_latest_is_source();
}

#[test]
fn shutdown_ships_everything_then_stops() {
    let mut h = Harness::new(config(), Source::new(4, 5));
    h.start();
    commit(&mut h, &[1], 4);
    h.tick();
    // Committed but not read yet when the shutdown comes.
    commit(&mut h, &[2, 5], 5);
    let key = commit(&mut h, &[3], 6);
    h.shutdown(false);
    assert!(h.stopped);
    assert_eq!(h.trace.last().map(|(_, c)| c), Some(&Command::Stopped));
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), key);
    assert!(h.engine.is_stopped());
    h.check();
    h.assert_latest_is_source();
    assert!(h.store.ids().iter().all(|f| f.level == 0));
    // A stopped engine ignores everything.
    let n = h.trace.len();
    commit(&mut h, &[1], 6);
    h.advance(10_000);
    assert_eq!(h.trace.len(), n);
    assert_eq!(h.engine.poll_timeout(), None);
}

#[test]
fn shutdown_with_snapshot_writes_a_level9_file() {
    let mut h = Harness::new(config(), Source::new(4, 6));
    h.start();
    for i in 0..3 {
        commit(&mut h, &[1 + i], 4 + i);
        h.tick();
    }
    let key = commit(&mut h, &[2], 8);
    h.shutdown(true);
    assert!(h.stopped);
    h.check();
    let d = h.engine.durable();
    assert_eq!((d.salt1, d.salt2, d.wal_end), key);
    let snap = FileId {
        level: SNAPSHOT_LEVEL,
        min_txid: 1,
        max_txid: d.txid,
    };
    let hdr = *h
        .store
        .header(snap)
        .expect("a level-9 snapshot 1..=durable");
    assert_eq!(hdr.commit, 8);
    assert_eq!(pgnos(&h, snap), (1..=8).collect::<Vec<u32>>());
    // It alone restores the final state.
    let mut only = super::store::Store::default();
    assert!(only.put_if_absent(snap, h.store.get(snap).unwrap()));
    let (txid, image) = only.restore(Target::Latest).unwrap();
    assert_eq!(txid, d.txid);
    assert_eq!(image, h.src.image());
    assert_eq!(image.len(), 8 * PS as usize);
    h.assert_latest_is_source();
    assert_eq!(h.trace.last().map(|(_, c)| c), Some(&Command::Stopped));
}

#[test]
fn outstanding_requests_carry_distinct_files() {
    // Sanity of the harness itself: in deferred mode requests wait, and the files
    // named by outstanding requests are those cut.
    let mut h = Harness::new(config(), Source::new(2, 8));
    h.deferred = true;
    h.start();
    assert_eq!(
        h.inflight,
        [Req::Upload {
            file: l0(1, 1),
            attempt: 1
        }]
    );
    assert_eq!(h.engine.durable().txid, 0);
    h.complete_all();
    assert_eq!(h.engine.durable().txid, 1);
    h.check();
}

#[test]
fn full_window_does_not_report_a_past_deadline() {
    let mut cfg = config();
    cfg.max_in_flight = 1;
    let mut h = Harness::new(cfg, Source::new(4, 9));
    h.deferred = true;
    h.start(); // TXID 1 in flight
    commit(&mut h, &[1], 4);
    h.tick(); // TXID 2 cut; the window is full
    assert_eq!(h.inflight.len(), 1);
    assert_eq!(h.engine.pending_files(), 2);
    h.engine.handle_timeout(h.t());
    assert_eq!(
        h.engine.poll_command(),
        None,
        "nothing to do until an upload ends"
    );
    let t = h.engine.poll_timeout().expect("the sync timer");
    assert!(t > h.now, "poll_timeout {t} is not after now {}", h.now);
}

#[test]
fn start_without_a_wal_file_snapshots_the_database_file() {
    // No `_walvault_seq` write: the WAL file does not exist when replication starts.
    let mut h = Harness::new(config(), Source::new(5, 10));
    h.seq_write = false;
    h.start();
    h.check();
    assert_eq!(h.cuts(), [l0(1, 1)]);
    let hdr = *h.store.header(l0(1, 1)).unwrap();
    assert_eq!((hdr.commit, hdr.wal_offset, hdr.wal_salt1), (5, 0, 0));
    h.assert_latest_is_source();
    // The first write creates the WAL.
    let k = commit(&mut h, &[2, 6], 6);
    h.tick();
    h.check();
    let last = *h.cuts().last().unwrap();
    h.assert_restores(last.max_txid, k);
    let fulls = h
        .events()
        .filter(|e| matches!(e, Event::SnapshotStarted { .. }))
        .count();
    assert!(fulls <= 2, "{fulls} full files");
    h.assert_latest_is_source();
}
