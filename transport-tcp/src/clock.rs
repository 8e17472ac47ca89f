//! Maps the machine's monotonic clock onto the core's [`Timestamp`].
//!
//! The core never reads a clock; the driver does, once per input, and passes the value in.

use std::time::{Duration, Instant};

use p2pchat_core::Timestamp;

/// A monotonic clock whose origin is the moment it was created.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current time as the core sees it.
    pub fn now(&self) -> Timestamp {
        let micros = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Timestamp::from_micros(micros)
    }

    /// The real instant a core timestamp stands for, for arming timers.
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.origin + Duration::from_micros(t.as_micros())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
