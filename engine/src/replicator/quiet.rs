//! Shipping when the writer goes quiet (decision 24). Between ticks, while the WAL keeps
//! growing or holds commits not yet cut, the engine looks again every half quiet period
//! (a WAL read like any other). Once no commit has arrived for `quiet_ship_ms`, the end
//! of such a look cuts the batch without waiting for the tick, at most once per half
//! sync interval, and the next tick comes a full interval later. A steady writer never
//! goes quiet, so it still gets one file per tick; the last commits of a writer that
//! stops are shipped about a quiet period after it stopped instead of up to a whole
//! interval later.

use super::*;

#[derive(Debug, Default)]
pub(super) struct QuietShip {
    /// When the next look is due.
    pub next_look: Option<u64>,
    /// The read chain in flight was started by a look: its end cuts only when quiet.
    pub looking: bool,
    /// The read chain in flight found new commits.
    pub chain_grew: bool,
    /// When a read last found new commits, and when a file was last cut.
    pub last_growth_ms: u64,
    pub last_cut_ms: u64,
}

impl Replicator {
    /// Looks happen only if a quiet period fits twice in a sync interval.
    fn quiet_ship_on(&self) -> bool {
        let q = self.cfg.quiet_ship_ms;
        q > 0 && q.saturating_mul(2) <= self.cfg.sync_interval_ms
    }

    /// The timer found a look due: read what the WAL holds now.
    pub(super) fn look(&mut self) {
        self.quiet.next_look = None;
        if self.phase != Phase::Streaming || self.shutdown || self.reading.is_some() {
            return;
        }
        self.quiet.looking = true;
        self.start_read();
        if self.reading.is_none() {
            self.quiet.looking = false;
        }
    }

    /// A read found new commits.
    pub(super) fn note_new_commits(&mut self) {
        self.quiet.last_growth_ms = self.now.mono_ms;
        self.quiet.chain_grew = true;
    }

    /// Called once at the end of a read chain, before anything else: whether that end
    /// may cut the batch. Always, except at the end of a look that is not yet quiet or
    /// comes too soon after the last file (a checkpoint shipping its tail and a
    /// shutdown always cut).
    pub(super) fn end_of_chain_may_cut(&mut self) -> bool {
        let looked = std::mem::take(&mut self.quiet.looking);
        if !looked || self.shutdown || matches!(self.ckpt, Ckpt::Locked { .. }) {
            return true;
        }
        let now = self.now.mono_ms;
        let quiet = now.saturating_sub(self.quiet.last_growth_ms) >= self.cfg.quiet_ship_ms;
        let spaced = now.saturating_sub(self.quiet.last_cut_ms) >= self.cfg.sync_interval_ms / 2;
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
        self.quiet.next_look =
            wanted.then(|| self.now.mono_ms + (self.cfg.quiet_ship_ms / 2).max(1));
    }
}
