//! Per-sensor sequence bookkeeping: which frames are applied, which are in flight.
//!
//! `through` is the highest sequence number such that every frame `<= through` is applied
//! (durable). Frames can complete out of order (different tables flush independently), so
//! applied numbers above `through` are kept in a sparse set until the gap closes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What to do with an incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// New: process it.
    New,
    /// Already applied: drop it and acknowledge again.
    Applied,
    /// Being processed right now (a replay raced the original): drop it; the original's
    /// completion acknowledges it.
    InFlight,
    /// More than [`SEQ_WINDOW`] ahead of `through`: refused, nothing recorded (a sensor sending
    /// sparse numbers would otherwise grow its state without bound). The sensor keeps the
    /// frame and sends it again once the frames before it are acknowledged.
    TooFar {
        /// Highest sequence number accepted now.
        max: u64,
    },
}

/// How far ahead of `through` a sequence number may be.
pub const SEQ_WINDOW: u64 = 65_536;

/// Durable part of a sensor's sequence state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqState {
    /// Every frame `<= through` is applied.
    pub through: u64,
    /// Applied frames above `through`.
    pub above: BTreeSet<u64>,
}

impl SeqState {
    /// Highest sequence number ever applied.
    pub fn highest(&self) -> u64 {
        self.above.last().copied().unwrap_or(self.through)
    }

    /// Whether `seq` was applied.
    pub fn is_applied(&self, seq: u64) -> bool {
        seq <= self.through || self.above.contains(&seq)
    }

    /// Marks `seq` applied and advances `through` over closed gaps.
    pub fn mark_applied(&mut self, seq: u64) {
        if seq <= self.through {
            return;
        }
        self.above.insert(seq);
        self.advance();
    }

    /// The sensor declared it will never send anything below `low`: treat it as done.
    pub fn abandon_below(&mut self, low: u64) {
        if low > self.through.saturating_add(1) {
            self.through = low - 1;
            self.above = self.above.split_off(&low);
        }
        self.advance();
    }

    fn advance(&mut self) {
        while self.through < u64::MAX && self.above.first() == Some(&(self.through + 1)) {
            self.above.pop_first();
            self.through += 1;
        }
    }
}

/// Sequence state plus the frames currently in flight (not persisted: in-flight work is lost
/// on a crash, and the sensor resends it).
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// Durable state.
    pub state: SeqState,
    inflight: BTreeSet<u64>,
}

impl SeqTracker {
    /// Resumes from durable state.
    pub fn new(state: SeqState) -> Self {
        Self { state, inflight: BTreeSet::new() }
    }

    /// Classifies an incoming frame and, if new, records it as in flight.
    pub fn admit(&mut self, seq: u64) -> Admit {
        let max = self.state.through.saturating_add(SEQ_WINDOW);
        if self.state.is_applied(seq) {
            Admit::Applied
        } else if seq > max {
            Admit::TooFar { max }
        } else if !self.inflight.insert(seq) {
            Admit::InFlight
        } else {
            Admit::New
        }
    }

    /// A frame's effects are durable.
    pub fn complete(&mut self, seq: u64) {
        self.inflight.remove(&seq);
        self.state.mark_applied(seq);
    }

    /// A frame failed before its effects were durable; a resend will be processed again.
    pub fn abort(&mut self, seq: u64) {
        self.inflight.remove(&seq);
    }

    /// Frames in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_completion_advances_through_when_gaps_close() {
        let mut t = SeqTracker::default();
        for s in 1..=4 {
            assert_eq!(t.admit(s), Admit::New);
        }
        t.complete(2);
        t.complete(4);
        assert_eq!(t.state.through, 0);
        assert_eq!(t.admit(2), Admit::Applied);
        assert_eq!(t.admit(3), Admit::InFlight);
        t.complete(1);
        assert_eq!(t.state.through, 2);
        t.complete(3);
        assert_eq!((t.state.through, t.state.above.len(), t.state.highest()), (4, 0, 4));
    }

    #[test]
    fn numbers_far_ahead_are_refused_without_growing_state() {
        let mut t = SeqTracker::default();
        assert_eq!(t.admit(SEQ_WINDOW + 1), Admit::TooFar { max: SEQ_WINDOW });
        assert_eq!(t.admit(u64::MAX), Admit::TooFar { max: SEQ_WINDOW });
        assert_eq!((t.inflight(), t.state.above.len()), (0, 0));
        assert_eq!(t.admit(SEQ_WINDOW), Admit::New);
        t.complete(SEQ_WINDOW);
        assert_eq!(t.state.highest(), SEQ_WINDOW);
        let mut s = SeqState::default();
        s.abandon_below(u64::MAX);
        s.mark_applied(u64::MAX);
        assert_eq!(s.through, u64::MAX, "no overflow at the top");
    }

    #[test]
    fn aborted_frames_are_new_again() {
        let mut t = SeqTracker::default();
        t.admit(1);
        t.abort(1);
        assert_eq!(t.admit(1), Admit::New);
    }

    #[test]
    fn abandon_below_closes_permanent_gaps() {
        let mut s = SeqState::default();
        s.mark_applied(1);
        s.mark_applied(5);
        s.mark_applied(9);
        s.abandon_below(6);
        assert_eq!(s.through, 5);
        assert_eq!(s.above.iter().copied().collect::<Vec<_>>(), [9]);
        s.abandon_below(3);
        assert_eq!(s.through, 5);
    }
}
