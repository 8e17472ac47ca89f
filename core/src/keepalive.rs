//! Keepalive and dead-peer detection for one connection.
//!
//! TCP can stay "established" for hours after the other machine lost power. Each side
//! sends a `Ping` when it has been quiet for `keepalive_interval`, answers every `Ping`
//! with a `Pong`, and gives the other side up after `idle_timeout` without hearing
//! anything. All of it runs on the timestamps the driver passes in.

use crate::limits::Limits;
use crate::time::Timestamp;
use core::time::Duration;

/// What the keepalive wants done at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepaliveAction {
    /// Nothing is due.
    Nothing,
    /// Send a `Ping` with this nonce.
    SendPing(u64),
    /// Nothing heard for too long: the other side is gone.
    Expired,
}

/// Keepalive state of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Keepalive {
    interval: Duration,
    idle_timeout: Duration,
    last_sent: Timestamp,
    last_received: Timestamp,
    next_nonce: u64,
}

impl Keepalive {
    pub(crate) fn new(limits: &Limits, now: Timestamp) -> Self {
        Keepalive {
            interval: limits.keepalive_interval,
            idle_timeout: limits.idle_timeout,
            last_sent: now,
            last_received: now,
            next_nonce: 1,
        }
    }

    pub(crate) fn on_sent(&mut self, now: Timestamp) {
        self.last_sent = self.last_sent.max(now);
    }

    pub(crate) fn on_received(&mut self, now: Timestamp) {
        self.last_received = self.last_received.max(now);
    }

    /// The next moment [`Keepalive::poll`] may have something to do.
    pub(crate) fn deadline(&self) -> Timestamp {
        (self.last_sent + self.interval).min(self.last_received + self.idle_timeout)
    }

    pub(crate) fn poll(&mut self, now: Timestamp) -> KeepaliveAction {
        if now >= self.last_received + self.idle_timeout {
            return KeepaliveAction::Expired;
        }
        if now >= self.last_sent + self.interval {
            let nonce = self.next_nonce;
            self.next_nonce = self.next_nonce.wrapping_add(1);
            self.last_sent = now;
            return KeepaliveAction::SendPing(nonce);
        }
        KeepaliveAction::Nothing
    }

    /// The idle timeout, for messages that say how long the silence lasted.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ..Limits::default()
        }
    }

    #[test]
    fn pings_when_quiet_and_expires_when_nothing_comes_back() {
        let t0 = Timestamp::ZERO;
        let mut k = Keepalive::new(&limits(), t0);
        assert_eq!(
            k.poll(t0 + Duration::from_secs(9)),
            KeepaliveAction::Nothing
        );
        assert_eq!(k.deadline(), t0 + Duration::from_secs(10));
        assert_eq!(
            k.poll(t0 + Duration::from_secs(10)),
            KeepaliveAction::SendPing(1)
        );
        assert_eq!(
            k.poll(t0 + Duration::from_secs(20)),
            KeepaliveAction::SendPing(2)
        );
        assert_eq!(
            k.poll(t0 + Duration::from_secs(30)),
            KeepaliveAction::Expired
        );
    }

    #[test]
    fn hearing_from_the_other_side_postpones_expiry() {
        let t0 = Timestamp::ZERO;
        let mut k = Keepalive::new(&limits(), t0);
        k.on_sent(t0 + Duration::from_secs(25));
        k.on_received(t0 + Duration::from_secs(25));
        assert_eq!(
            k.poll(t0 + Duration::from_secs(30)),
            KeepaliveAction::Nothing
        );
        assert_eq!(k.deadline(), t0 + Duration::from_secs(35));
    }
}
