//! Which of one sender's sequence numbers have been taken, so that a message that
//! comes again is recognised, while one that comes late (overtaken by later ones) is
//! still taken.
//!
//! Why a window and not a high-water mark: messages of one sender may arrive out of
//! order when a session moves between relays of a cluster (what the old relay had
//! routed, what the new relay routes, and mailbox letters delivered again), or when
//! its addressed and broadcast messages cross relays by different ways. A mark would
//! refuse the late ones. This is the anti-replay window of IPsec (RFC 4303, 3.4.3):
//! the highest number taken and a bitmap of the [`WINDOW`] numbers below it, so each
//! check is a shift and a bit test, on the hot path of every message a client reads.
//! Anything below the window counts as taken (a repeat that late is far likelier than
//! a first copy overtaken by that many of its sender's later messages). A saved
//! session keeps the highest number; after a restart everything up to it counts as
//! taken.

/// How many sequence numbers below the highest one a window remembers.
pub(crate) const WINDOW: u64 = 512;

/// 64-bit words in the bitmap.
const WORDS: usize = (WINDOW / 64) as usize;

/// The sequence numbers taken from one sender (or on one key).
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqWindow {
    /// The highest number taken.
    top: u64,
    /// Bit `d` (word `d / 64`, bit `d % 64`): whether `top - d` was taken.
    taken: [u64; WORDS],
}

impl SeqWindow {
    /// A window where everything up to `last` counts as taken (a restored one).
    pub(crate) fn after(last: u64) -> SeqWindow {
        SeqWindow {
            top: last,
            taken: [u64::MAX; WORDS],
        }
    }

    /// Takes `seq`; `false` if it was taken before (or is below the window).
    pub(crate) fn take(&mut self, seq: u64) -> bool {
        if seq > self.top {
            self.shift(seq - self.top);
            self.top = seq;
            self.set(0);
            return true;
        }
        let d = self.top - seq;
        if d >= WINDOW || self.is_set(d) {
            return false;
        }
        self.set(d);
        true
    }

    /// The highest number taken (what a saved session keeps).
    pub(crate) fn last(&self) -> u64 {
        self.top
    }

    fn is_set(&self, d: u64) -> bool {
        let (word, bit) = ((d / 64) as usize, d % 64);
        self.taken.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    fn set(&mut self, d: u64) {
        let (word, bit) = ((d / 64) as usize, d % 64);
        if let Some(w) = self.taken.get_mut(word) {
            *w |= 1 << bit;
        }
    }

    /// Moves every bit `by` places further from the top (older).
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.taken = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        for i in (0..WORDS).rev() {
            let from = i.checked_sub(words);
            let high = from.and_then(|f| self.taken.get(f)).copied().unwrap_or(0);
            let low = from
                .and_then(|f| f.checked_sub(1))
                .and_then(|f| self.taken.get(f))
                .copied()
                .unwrap_or(0);
            let word = if bits == 0 {
                high
            } else {
                (high << bits) | (low >> (64 - bits))
            };
            if let Some(w) = self.taken.get_mut(i) {
                *w = word;
            }
        }
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
        assert!(w.take(4));
        assert_eq!(w.last(), 5);
    }

    #[test]
    fn the_window_remembers_its_width_and_what_fell_below_counts_as_taken() {
        let mut w = SeqWindow::default();
        for seq in (1..=1_000).step_by(2) {
            assert!(w.take(seq));
        }
        // Within the window: the odd ones are taken, the even ones are not.
        assert!(!w.take(999 - 2 * 100));
        assert!(w.take(998 - 2 * 100));
        // Below it: taken, whatever they were.
        assert!(!w.take(999 - WINDOW));
        assert!(!w.take(998 - WINDOW));
        // Shifts of every size keep what is inside the window.
        let mut w = SeqWindow::default();
        let mut seq = 0;
        for step in [1, 63, 64, 65, 127, 128, 200, 511] {
            seq += step;
            assert!(w.take(seq));
            assert!(!w.take(seq));
        }
        assert!(!w.take(seq - 511));
        assert!(w.take(seq - 510));
        assert!(w.take(seq + WINDOW + 5), "a jump past the window clears it");
        assert!(!w.take(seq + 5), "now below it");
    }

    #[test]
    fn a_restored_window_refuses_everything_up_to_its_last() {
        let mut w = SeqWindow::after(7);
        assert!(!w.take(7));
        assert!(!w.take(2));
        assert!(w.take(8));
        assert!(!w.take(7));
        assert_eq!(w.last(), 8);
    }
}
