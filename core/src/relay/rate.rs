//! How fast one client may send: a token bucket, in explicit time.
//!
//! A client that sends faster than `Limits::message_rate` is not cut off and loses
//! nothing: the relay asks its driver to stop reading from that client until the
//! bucket has refilled ([`RelayServer::read_paused_until`]), so TCP pushes back on the
//! client, and everyone else is served as before. The client is told why, at most
//! once every [`NOTICE_INTERVAL`] (a notice per message would itself be a flood).

use core::time::Duration;

use super::RelayServer;
use crate::id::ConnId;
use crate::time::Timestamp;

/// Least time between two "you are rate-limited" notices to one client.
pub(super) const NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// Millionths of a message: the bucket's unit, so that refills need no floats.
const UNIT: i64 = 1_000_000;

/// One client's bucket.
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    /// Messages the client may still send at once, in millionths; below zero, how far
    /// it is over.
    credit: i64,
    /// When `credit` was last brought up to date.
    at: Timestamp,
    /// When the client was last told it is limited.
    noticed: Option<Timestamp>,
}

impl TokenBucket {
    /// A full bucket.
    pub(super) fn new(burst: u32, now: Timestamp) -> Self {
        TokenBucket {
            credit: i64::from(burst) * UNIT,
            at: now,
            noticed: None,
        }
    }

    /// Spends one message at `now`; `false` when that leaves the bucket overdrawn.
    pub(super) fn take(&mut self, now: Timestamp, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_micros();
        // `rate` messages a second is `rate` millionths of a message a microsecond.
        let refill = i64::try_from(elapsed)
            .unwrap_or(i64::MAX)
            .saturating_mul(i64::from(rate));
        self.credit = self
            .credit
            .saturating_add(refill)
            .min(i64::from(burst) * UNIT)
            - UNIT;
        self.at = self.at.max(now);
        self.credit >= 0
    }

    /// When the bucket is back to zero, while it is overdrawn.
    pub(super) fn refilled_at(&self, rate: u32) -> Option<Timestamp> {
        if self.credit >= 0 || rate == 0 {
            return None;
        }
        let debt = self.credit.unsigned_abs();
        let micros = debt.div_ceil(u64::from(rate));
        Some(self.at + Duration::from_micros(micros))
    }

    /// Whether to tell the client now (and notes that it was told).
    pub(super) fn notice_due(&mut self, now: Timestamp) -> bool {
        let due = self.noticed.is_none_or(|t| t + NOTICE_INTERVAL <= now);
        if due {
            self.noticed = Some(now);
        }
        due
    }
}

impl RelayServer {
    /// Until when the driver should not read from `conn`: set while the client sends
    /// faster than the relay's message rate. Reading anyway loses nothing; the
    /// client's bucket only goes further into debt.
    pub fn read_paused_until(&self, conn: ConnId) -> Option<Timestamp> {
        self.admitted(conn)?
            .bucket
            .refilled_at(self.limits.message_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_the_rate() {
        let t0 = Timestamp::ZERO;
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.take(t0, 10, 3)), "the burst");
        assert_eq!(b.refilled_at(10), None);
        assert!(!b.take(t0, 10, 3), "the fourth at once is over");
        // 10 a second: back to zero after 100 ms.
        assert_eq!(b.refilled_at(10), Some(Timestamp::from_millis(100)));
        assert!(
            b.take(Timestamp::from_millis(200), 10, 3),
            "refilled by then"
        );
        // Long idle refills to the burst, no further.
        let later = Timestamp::from_millis(60_000);
        assert!((0..3).all(|_| b.take(later, 10, 3)));
        assert!(!b.take(later, 10, 3));
    }

    #[test]
    fn notices_are_spaced() {
        let mut b = TokenBucket::new(1, Timestamp::ZERO);
        assert!(b.notice_due(Timestamp::ZERO));
        assert!(!b.notice_due(Timestamp::from_millis(9_999)));
        assert!(b.notice_due(Timestamp::from_millis(10_000)));
    }
}
