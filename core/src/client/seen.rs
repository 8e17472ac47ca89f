//! Which messages a client has already been given, so that one delivered twice is
//! shown once.
//!
//! Why a client must check: when its session moves to another relay of a cluster
//! (its relay died), the new relay knows neither what the old one delivered nor what
//! the client had sent it. So the client resends everything the old relay had not
//! acknowledged (some of which the old relay had already routed), and a mailbox
//! letter the old relay showed but never saw acknowledged comes again. Each
//! message is named by its sender's ID (never reused) and the sender's sequence
//! number, so a repeat is recognisable. Messages of one sender may arrive out of
//! order across relays (an addressed message through a mailbox, a broadcast through
//! the broadcast stream), so this is a set per sender, not a high-water mark: a
//! mark would drop the later-arriving earlier message.

use std::collections::{BTreeSet, HashMap};

use crate::id::ClientId;

/// How many sequence numbers are remembered per sender. A message older than all
/// of them counts as seen: a repeat that late is far likelier than a first copy
/// overtaken by that many of its sender's later messages.
const WINDOW: usize = 4096;

/// The messages seen, per sender.
#[derive(Debug, Default)]
pub(super) struct Seen {
    by_sender: HashMap<ClientId, BTreeSet<u64>>,
}

impl Seen {
    /// Records `from`'s message `seq`; `false` if it was seen before.
    pub(super) fn first_time(&mut self, from: ClientId, seq: u64) -> bool {
        let seen = self.by_sender.entry(from).or_default();
        if seen.len() >= WINDOW && seen.first().is_some_and(|&oldest| seq < oldest) {
            return false;
        }
        if !seen.insert(seq) {
            return false;
        }
        while seen.len() > WINDOW {
            seen.pop_first();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_caught_and_an_overtaken_message_is_not() {
        let mut seen = Seen::default();
        let (a, b) = (ClientId(1), ClientId(2));
        assert!(seen.first_time(a, 5));
        assert!(
            seen.first_time(a, 3),
            "an earlier message arriving later is new"
        );
        assert!(!seen.first_time(a, 5));
        assert!(!seen.first_time(a, 3));
        assert!(seen.first_time(b, 5), "per sender");
    }

    #[test]
    fn the_window_is_bounded_and_what_fell_out_counts_as_seen() {
        let mut seen = Seen::default();
        let a = ClientId(1);
        for seq in 1..=(WINDOW as u64 + 10) {
            assert!(seen.first_time(a, seq));
        }
        assert_eq!(seen.by_sender.get(&a).map(BTreeSet::len), Some(WINDOW));
        assert!(!seen.first_time(a, 1));
        assert!(seen.first_time(a, WINDOW as u64 + 11));
    }
}
