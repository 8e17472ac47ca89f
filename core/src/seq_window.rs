//! Which of one sender's sequence numbers have been taken, so that a message that
//! comes again is recognised, while one that comes late (overtaken by later ones) is
//! still taken.
//!
//! Why a window and not a high-water mark: messages of one sender may arrive out of
//! order when a session moves between relays of a cluster (what the old relay had
//! routed, what the new relay routes, and mailbox letters delivered again), or when
//! its addressed and broadcast messages cross relays by different ways. A mark would
//! refuse the late ones. The window keeps the last [`WINDOW`] numbers taken; anything
//! below them counts as taken (a repeat that late is far likelier than a first copy
//! overtaken by that many of its sender's later messages). Its floor is also what a
//! saved session keeps: after a restart everything at or below it counts as taken.

use std::collections::BTreeSet;

/// How many sequence numbers a window keeps (8 bytes and a tree node's share each).
pub(crate) const WINDOW: usize = 512;

/// The sequence numbers taken from one sender (or on one key).
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqWindow {
    /// Everything at or below this counts as taken.
    floor: u64,
    /// Numbers above `floor` taken, at most [`WINDOW`].
    taken: BTreeSet<u64>,
}

impl SeqWindow {
    /// A window where everything up to `last` counts as taken (a restored one).
    pub(crate) fn after(last: u64) -> SeqWindow {
        SeqWindow {
            floor: last,
            taken: BTreeSet::new(),
        }
    }

    /// Takes `seq`; `false` if it was taken before (or is below the window).
    pub(crate) fn take(&mut self, seq: u64) -> bool {
        if seq <= self.floor || !self.taken.insert(seq) {
            return false;
        }
        while self.taken.len() > WINDOW {
            if let Some(oldest) = self.taken.pop_first() {
                self.floor = oldest;
            }
        }
        true
    }

    /// The highest number taken (what a saved session keeps).
    pub(crate) fn last(&self) -> u64 {
        self.taken
            .last()
            .copied()
            .unwrap_or(self.floor)
            .max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_refused_and_a_late_message_is_taken() {
        let mut w = SeqWindow::default();
        assert!(w.take(5));
        assert!(w.take(3), "overtaken, not repeated");
        assert!(!w.take(5));
        assert!(!w.take(3));
        assert_eq!(w.last(), 5);
    }

    #[test]
    fn the_window_is_bounded_and_what_fell_out_counts_as_taken() {
        let mut w = SeqWindow::default();
        for seq in 1..=(WINDOW as u64 + 10) {
            assert!(w.take(seq));
        }
        assert_eq!(w.taken.len(), WINDOW);
        assert!(!w.take(1));
        assert!(w.take(WINDOW as u64 + 11));
    }

    #[test]
    fn a_restored_window_refuses_everything_up_to_its_last() {
        let mut w = SeqWindow::after(7);
        assert!(!w.take(7));
        assert!(!w.take(2));
        assert!(w.take(8));
        assert_eq!(w.last(), 8);
    }
}
