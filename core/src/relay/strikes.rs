//! What a client sends that the relay cannot use: lines that are not UTF-8 or not a
//! message or a command, messages after its `exit`, repeated sequence numbers.
//!
//! Each is answered, and the connection stays: a person on `nc` makes typing mistakes.
//! But a connection that keeps doing it (random bytes, a program pointed at the wrong
//! port) would be answered forever, so each one is a strike, and a client with more
//! than `Limits::max_bad_inputs` strikes in `Limits::bad_input_window` is told why
//! and disconnected (`too-many-errors`), as Postfix does with `smtpd_hard_error_limit`
//! (20). Strikes drain at that rate, so a few mistakes an hour never add up.
//!
//! Undecodable frames are not counted here: framing is lost after one, so the
//! connection is closed at once. Nor are messages to an ID that just left, or a full
//! relay's refusals: those are the relay's news, not the client's mistakes.

use core::time::Duration;

use super::{ConnState, RelayServer};
use crate::error::ErrorCode;
use crate::id::ConnId;
use crate::time::Timestamp;

/// Millionths of a strike, so that draining needs no floats.
const UNIT: u128 = 1_000_000;

/// One client's strikes, draining over time.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Strikes {
    /// Strikes outstanding, in millionths.
    level: u128,
    /// When `level` was last brought up to date.
    at: Timestamp,
}

impl Strikes {
    /// One more strike at `now`; `true` when that puts the client over `max` in a
    /// `window` (strikes drain at `max` per `window`).
    fn add(&mut self, now: Timestamp, max: u32, window: Duration) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_micros();
        let window = window.as_micros().max(1);
        let drained = elapsed.saturating_mul(u128::from(max)).saturating_mul(UNIT) / window;
        self.level = self.level.saturating_sub(drained) + UNIT;
        self.at = self.at.max(now);
        self.level > u128::from(max) * UNIT
    }
}

impl RelayServer {
    /// `conn` sent something the relay cannot use (`what`). Past the limit the client
    /// is told why and disconnected (returns `true`: the caller answers nothing
    /// more); everyone else goes on.
    pub(super) fn strike(&mut self, conn: ConnId, what: &str) -> bool {
        let (max, window) = (self.limits.max_bad_inputs, self.limits.bad_input_window);
        let now = self.now;
        let Some(ConnState::Admitted(client)) = self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return false;
        };
        if max == 0 || !client.strikes.add(now, max, window) {
            return false;
        }
        let detail = format!(
            "disconnected: more than {max} lines or messages in {} s could not be used (the last: {what})",
            window.as_secs()
        );
        self.close_client(conn, ErrorCode::TooManyErrors, detail, false);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::ZERO;
    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn the_strike_past_the_limit_within_the_window_is_the_last() {
        let mut s = Strikes::default();
        for _ in 0..20 {
            assert!(!s.add(T, 20, WINDOW));
        }
        assert!(s.add(T, 20, WINDOW));
    }

    #[test]
    fn strikes_drain_so_that_mistakes_now_and_then_never_add_up() {
        let mut s = Strikes::default();
        // One mistake every half second is the limit's rate: never over.
        for k in 0..1_000u64 {
            let now = T + Duration::from_millis(500 * k);
            assert!(!s.add(now, 20, WINDOW), "strike {k}");
        }
        // Twenty at once after a quiet spell are fine; a twenty-first is not.
        let later = T + Duration::from_secs(10_000);
        for _ in 0..20 {
            assert!(!s.add(later, 20, WINDOW));
        }
        assert!(s.add(later, 20, WINDOW));
    }
}
