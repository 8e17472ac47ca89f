//! Which messages a client has already been given, so that one delivered twice is
//! shown once.
//!
//! Why a client must check: when its session moves to another relay of a cluster
//! (its relay died), the new relay knows neither what the old one delivered nor what
//! the client had sent it. So the client resends everything the old relay had not
//! acknowledged (some of which the old relay had already routed), and a mailbox
//! letter the old relay showed but never saw acknowledged comes again. Each message
//! is named by its sender's ID (never reused) and the sender's sequence number, so a
//! repeat is recognisable; a window per sender ([`SeqWindow`]) keeps the numbers.

use std::collections::HashMap;

use crate::id::ClientId;
use crate::seq_window::SeqWindow;

/// The messages seen, per sender.
#[derive(Debug, Default)]
pub(super) struct Seen {
    by_sender: HashMap<ClientId, SeqWindow>,
}

impl Seen {
    /// Records `from`'s message `seq`; `false` if it was seen before.
    pub(super) fn first_time(&mut self, from: ClientId, seq: u64) -> bool {
        self.by_sender.entry(from).or_default().take(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_caught_per_sender_and_an_overtaken_message_is_not() {
        let mut seen = Seen::default();
        let (a, b) = (ClientId(1), ClientId(2));
        assert!(seen.first_time(a, 5));
        assert!(
            seen.first_time(a, 3),
            "an earlier message arriving later is new"
        );
        assert!(!seen.first_time(a, 5));
        assert!(seen.first_time(b, 5), "per sender");
    }
}
