//! Shipping when the writer goes quiet (`Config::quiet_ship_ms`): a steady writer gets
//! one file per tick, a writer that stops has its last commits cut about a quiet period
//! later, never more often than twice per sync interval, and nothing is looked at while
//! the database is idle.

use super::harness::{Harness, config};
use super::source::Source;
use crate::replicator::{Command, Config, Event};

fn quiet_config(quiet_ship_ms: u64) -> Config {
    Config {
        quiet_ship_ms,
        ..config()
    }
}

fn files(h: &Harness) -> Vec<u64> {
    h.trace
        .iter()
        .filter_map(|(t, c)| matches!(c, Command::Event(Event::FileCut { .. })).then_some(*t))
        .collect()
}

fn reads(h: &Harness) -> usize {
    h.count(|c| matches!(c, Command::ReadWal { .. }))
}

/// Commits one transaction every `every_ms` for `for_ms`.
fn write(h: &mut Harness, every_ms: u64, for_ms: u64) {
    let mut t = 0;
    while t < for_ms {
        h.commit_ok(&[2, 3], 4);
        h.advance(every_ms);
        t += every_ms;
    }
}

#[test]
fn a_writer_that_stops_is_shipped_a_quiet_period_later() {
    let mut h = Harness::new(quiet_config(250), Source::new(4, 41));
    h.start();
    h.tick();
    // Writes for 1.4 s after a tick: the next tick (at +1 s) ships, then the writer
    // stops 400 ms later.
    let t0 = h.t().mono_ms;
    write(&mut h, 20, 1_400);
    let stop = h.t().mono_ms;
    let before = files(&h).len();
    h.advance(2_000);
    let after: Vec<u64> = files(&h)[before..].to_vec();
    assert_eq!(after.len(), 1, "one file for the last commits: {after:?}");
    // Half a sync interval after the tick's file at the earliest, and a quiet period
    // after the last commit: the look is due then, not at the next look after it.
    let shipped = after[0];
    assert!(
        shipped >= t0 + 1_000 + 500,
        "spaced from the tick's file: {shipped}"
    );
    assert!(shipped <= stop + 250, "{shipped} vs stop {stop}");
    assert!(shipped < t0 + 2_000, "before the next tick");
    assert!(
        h.trace
            .iter()
            .any(|(_, c)| matches!(c, Command::Event(Event::ShippedWhenQuiet { .. })))
    );
    h.complete_all();
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn a_steady_writer_gets_one_file_per_tick() {
    let mut with = Harness::new(quiet_config(250), Source::new(4, 42));
    let mut without = Harness::new(config(), Source::new(4, 42));
    for h in [&mut with, &mut without] {
        h.start();
        h.tick();
        write(h, 50, 5_000);
        h.complete_all();
    }
    let (a, b) = (files(&with), files(&without));
    assert_eq!(a.len(), b.len(), "same files: {a:?} vs {b:?}");
    // The looks are stats, one per quiet period in the second half of each interval
    // while the writer is active (each is due a quiet period after the last write the
    // previous one saw, and none before a cut is allowed): no more reads (but one, once
    // the writer stops and the stats find the WAL quiet).
    assert!(
        reads(&with) <= reads(&without) + 1,
        "{} vs {}",
        reads(&with),
        reads(&without)
    );
    let stats = with.count(|c| matches!(c, Command::StatWal));
    let when: Vec<u64> = with
        .trace
        .iter()
        .filter(|(_, c)| matches!(c, Command::StatWal))
        .map(|(t, _)| *t)
        .collect();
    // Commits every 50 ms and looks due 250 ms after the last: at +500, +700 and +900.
    assert!(
        (5 * 2..=5 * 3).contains(&stats),
        "{stats} stats in 5 s: {when:?}"
    );
    with.check();
    with.assert_latest_is_source();
}

#[test]
fn bursts_get_at_most_two_files_per_interval() {
    let mut h = Harness::new(quiet_config(100), Source::new(4, 43));
    h.start();
    h.tick();
    let first = files(&h).len();
    // One commit every 300 ms: quiet after each, for 6 s.
    write(&mut h, 300, 6_000);
    let cut = &files(&h)[first..];
    for w in cut.windows(2) {
        assert!(w[1] - w[0] >= 500, "files {} and {} too close", w[0], w[1]);
    }
    assert!(cut.len() <= 13, "{} files in 6 s", cut.len());
    // The last commit waits at most for the spacing, then a quiet period.
    h.advance(500 + 100 + 50);
    h.complete_all();
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn an_idle_database_is_not_looked_at_between_ticks() {
    let mut h = Harness::new(quiet_config(250), Source::new(4, 44));
    h.start();
    h.commit_ok(&[2], 4);
    h.tick();
    h.advance(1_000); // the looks after the last growth find nothing more
    h.complete_all();
    let before = reads(&h);
    h.advance(10_000);
    assert_eq!(reads(&h) - before, 10, "one read per tick, no looks");
}

#[test]
fn more_than_half_the_interval_means_ticks_only() {
    let mut h = Harness::new(quiet_config(600), Source::new(4, 45));
    let mut plain = Harness::new(config(), Source::new(4, 45));
    for h in [&mut h, &mut plain] {
        h.start();
        h.tick();
        write(h, 100, 3_000);
        h.advance(3_000);
    }
    assert_eq!(reads(&h), reads(&plain));
    assert_eq!(files(&h), files(&plain));
}

#[test]
fn looks_at_a_reused_wal_read_about_what_is_new() {
    // Checkpoints restart the WAL, which keeps its old frames past the live ones: a look
    // peeks at one frame and doubles from there, instead of reading a whole chunk of
    // stale frames every time.
    let cfg = Config {
        checkpoint_frames: 30,
        read_chunk_bytes: 1 << 20,
        ..quiet_config(250)
    };
    let mut h = Harness::new(cfg, Source::new(4, 46));
    h.start();
    h.tick();
    write(&mut h, 50, 6_000);
    h.complete_all();
    let checkpoints = h.count(|c| matches!(c, Command::Checkpoint { .. }));
    let whole_chunks =
        h.count(|c| matches!(c, Command::ReadWal { max_len, .. } if *max_len == 1 << 20));
    assert!(checkpoints >= 3, "{checkpoints} checkpoints");
    assert!(reads(&h) > 40, "{} reads", reads(&h));
    // Whole chunks only where a checkpoint reads the tail and the restarted WAL.
    assert!(
        whole_chunks <= 3 * checkpoints + 4,
        "{whole_chunks} whole-chunk reads for {checkpoints} checkpoints"
    );
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn a_writer_that_stops_on_a_reused_wal_is_shipped_when_quiet() {
    // After a checkpoint restarts the WAL, commits overwrite old frames: the file keeps
    // its length, and only the stat's stamp shows the writer going on.
    let cfg = Config {
        checkpoint_frames: 30,
        ..quiet_config(250)
    };
    let mut h = Harness::new(cfg, Source::new(4, 47));
    h.start();
    h.tick();
    write(&mut h, 50, 3_000);
    let len = h.src.wal_bytes().len();
    write(&mut h, 50, 300);
    assert_eq!(
        h.src.wal_bytes().len(),
        len,
        "the last commits went into the reused WAL"
    );
    let stop = h.t().mono_ms;
    h.advance(700);
    let quiet_cuts: Vec<u64> = h
        .trace
        .iter()
        .filter(|(t, c)| *t > stop && matches!(c, Command::Event(Event::ShippedWhenQuiet { .. })))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        quiet_cuts.len(),
        1,
        "one quiet cut after the stop: {quiet_cuts:?}"
    );
    h.complete_all();
    h.check();
    h.assert_latest_is_source();
}

#[test]
fn a_stat_that_says_long_ago_while_the_wal_changes_is_not_believed() {
    // The caller's clock stepped: every stat says the last write was an hour ago. The
    // WAL changed since the previous stat, so the write came after it: a steady writer
    // is still a writer, and gets the files it gets without looks.
    let mut lying = Harness::new(quiet_config(250), Source::new(4, 48));
    lying.stat_idle_override = Some(3_600_000);
    let mut plain = Harness::new(config(), Source::new(4, 48));
    for h in [&mut lying, &mut plain] {
        h.start();
        h.tick();
        write(h, 50, 5_000);
        h.complete_all();
    }
    assert_eq!(files(&lying), files(&plain));
    assert!(
        !lying
            .trace
            .iter()
            .any(|(_, c)| matches!(c, Command::Event(Event::ShippedWhenQuiet { .. })))
    );
    lying.check();
    lying.assert_latest_is_source();
}
