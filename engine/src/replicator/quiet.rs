//! Shipping when the writer goes quiet (decision 24). Between ticks, while the WAL keeps
//! growing or holds commits not yet cut, the engine looks at it. A look is a stat of the
//! WAL (length, modification stamp, and how long ago it was last written), not a read.
//! The next look is due a quiet period after the last write the stat reports, not before
//! a cut is allowed again (half an interval after the last file), and not just before the
//! tick: a steady writer costs a stat per quiet period in the second half of each
//! interval and still gets one file per tick. Once a stat shows no write for the quiet
//! period, a read fetches what the WAL holds and its end cuts the batch without waiting
//! for the tick, if the WAL is still the length the stat saw; at most once per half sync
//! interval, and the next tick then comes a full interval later. So the last commits of a
//! writer that stops are shipped a quiet period after it stopped instead of up to a whole
//! interval later.

use super::*;

#[derive(Debug, Default)]
pub(super) struct QuietShip {
    /// When the next look is due.
    pub next_look: Option<u64>,
    /// A [`Command::StatWal`] awaits its answer.
    pub stat_pending: bool,
    /// The WAL's (length, stamp) at the last stat.
    pub last_stat: Option<(u64, u64)>,
    /// The WAL's length at the end of the last read, and when that read was answered.
    pub read_len: u64,
    pub read_at_ms: u64,
    /// A stat saw the WAL change since the last read (a reused WAL is overwritten in
    /// place: its length stays, only its stamp moves).
    pub changed_since_read: bool,
    /// The read chain in flight was started by a look: its end cuts only when quiet.
    pub looking: bool,
    /// The WAL's length when the stats found it quiet (the look's read then cuts only
    /// if it ends at that length: nothing was appended meanwhile).
    pub quiet_len: Option<u64>,
    /// The read chain in flight found new commits.
    pub chain_grew: bool,
    /// When the WAL was last written (as a stat reported it, or when a read found it
    /// grown), and when a file was last cut.
    pub last_growth_ms: u64,
    /// When the last stat was answered.
    pub last_stat_ms: u64,
    pub last_cut_ms: u64,
}

impl Replicator {
    /// Looks happen only if a quiet period fits twice in a sync interval.
    fn quiet_ship_on(&self) -> bool {
        let q = self.cfg.quiet_ship_ms;
        q > 0 && q.saturating_mul(2) <= self.cfg.sync_interval_ms
    }

    /// How long after a file a quiet spell may ship the next one: half an interval, so
    /// a writer with pauses costs about one file per interval, not one per pause.
    fn quiet_spacing_ms(&self) -> u64 {
        if self.mutated(M::QuietShipUnspaced) {
            return 0;
        }
        self.cfg.sync_interval_ms / 2
    }

    fn may_look(&self) -> bool {
        self.phase == Phase::Streaming && !self.shutdown && self.reading.is_none()
    }

    /// The timer found a look due: ask for a stat of the WAL.
    pub(super) fn look(&mut self) {
        self.quiet.next_look = None;
        if !self.may_look() || self.quiet.stat_pending {
            return;
        }
        self.quiet.stat_pending = true;
        self.out.push_back(Command::StatWal);
    }

    /// A stat answered a look. `idle_ms` is how long ago the WAL was last written, as
    /// the caller's stat tells it (0 when it cannot). No write for a quiet period: read,
    /// and let the read's end decide. Otherwise look again a quiet period after the last
    /// write.
    pub(super) fn on_wal_stat(&mut self, len: u64, stamp: u64, idle_ms: u64) {
        if !std::mem::take(&mut self.quiet.stat_pending) {
            return;
        }
        let now = self.now.mono_ms;
        let changed = self.quiet.last_stat != Some((len, stamp));
        let previous_stat_ms = std::mem::replace(&mut self.quiet.last_stat_ms, now);
        self.quiet.last_stat = Some((len, stamp));
        // A read that started meanwhile (a tick) schedules the next look at its end.
        if !self.quiet_ship_on() || !self.may_look() {
            return;
        }
        if changed {
            // The write the stat shows came after the previous stat, and after the last
            // read if the length moved since: an idle time that says otherwise (a clock
            // step) is not believed, and the write counts as just now.
            let mut after = previous_stat_ms;
            if len != self.quiet.read_len {
                after = after.max(self.quiet.read_at_ms);
            }
            let claimed = now.saturating_sub(idle_ms);
            let written = if claimed < after { now } else { claimed };
            self.quiet.last_growth_ms = self.quiet.last_growth_ms.max(written);
            self.quiet.changed_since_read = true;
        }
        if now.saturating_sub(self.quiet.last_growth_ms) >= self.cfg.quiet_ship_ms {
            if len == self.quiet.read_len && !self.quiet.changed_since_read {
                if self.follow.batch.is_empty() {
                    // Nothing was written since the last read and nothing waits to be
                    // cut: stop looking until a read finds commits again.
                    return;
                }
                let spaced_at = self.quiet.last_cut_ms + self.quiet_spacing_ms();
                if now < spaced_at {
                    // Nothing new to read, and too soon after the last file to cut.
                    self.quiet.next_look = Some(spaced_at);
                    return;
                }
            }
            self.quiet.looking = true;
            self.quiet.quiet_len = Some(len);
            self.start_read();
            if self.reading.is_some() {
                return;
            }
            self.quiet.looking = false;
            self.quiet.quiet_len = None;
        }
        self.quiet.next_look = self.next_look_after_growth();
    }

    /// A quiet period after the last write, but not before a look's read may cut (half
    /// an interval after the last file: a look before that could only learn when the
    /// WAL was last written, which the stat then tells anyway), and never sooner than an
    /// eighth of a quiet period from now (a stat that keeps reporting a write just now
    /// is a writer still going). `None` when that is within a quarter of a quiet period
    /// of the tick, whose read ships anyway.
    fn next_look_after_growth(&self) -> Option<u64> {
        let q = self.cfg.quiet_ship_ms;
        let now = self.now.mono_ms;
        let at = (self.quiet.last_growth_ms + q)
            .max(self.quiet.last_cut_ms + self.quiet_spacing_ms())
            .max(now + (q / 8).max(1));
        match self.next_tick {
            Some(tick) if at.saturating_add(q / 4) >= tick => None,
            _ => Some(at),
        }
    }

    /// A read found new commits. A look's read finds those the stats already saw
    /// written before the quiet period: they do not restart it.
    pub(super) fn note_new_commits(&mut self) {
        if self.quiet.quiet_len.is_none() {
            self.quiet.last_growth_ms = self.now.mono_ms;
        }
        self.quiet.chain_grew = true;
    }

    /// Called once at the end of a read chain, before anything else: whether that end
    /// may cut the batch. Always, except at the end of a look's read that found the WAL
    /// grown since the stats called it quiet, or that comes too soon after the last file
    /// (a checkpoint shipping its tail and a shutdown always cut).
    pub(super) fn end_of_chain_may_cut(&mut self) -> bool {
        let looked = std::mem::take(&mut self.quiet.looking);
        let quiet_len = self.quiet.quiet_len.take();
        if !looked || self.shutdown || matches!(self.ckpt, Ckpt::Locked { .. }) {
            return true;
        }
        let now = self.now.mono_ms;
        let quiet = quiet_len == Some(self.quiet.read_len);
        let spaced = now.saturating_sub(self.quiet.last_cut_ms) >= self.quiet_spacing_ms();
        if quiet && spaced && !self.follow.batch.is_empty() {
            self.emit(Event::ShippedWhenQuiet {
                quiet_ms: now.saturating_sub(self.quiet.last_growth_ms),
                txns: self.follow.batch.txns,
            });
            // The next tick is a full interval after this file.
            self.next_tick = Some(now + self.cfg.sync_interval_ms);
            return true;
        }
        false
    }

    pub(super) fn note_cut(&mut self) {
        self.quiet.last_cut_ms = self.now.mono_ms;
    }

    /// Called last at the end of a read chain: look again soon while the writer may
    /// still be going (the chain found commits, or some are not cut yet).
    pub(super) fn schedule_look(&mut self) {
        let grew = std::mem::take(&mut self.quiet.chain_grew);
        let wanted = self.quiet_ship_on()
            && self.phase == Phase::Streaming
            && !self.shutdown
            && (grew || !self.follow.batch.is_empty());
        self.quiet.next_look = if wanted {
            self.next_look_after_growth()
        } else {
            None
        };
    }
}
