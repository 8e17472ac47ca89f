//! # p2pchat-sim
//!
//! A deterministic, in-memory network that drives the real core machines
//! (`RelayServer`, `RelayClient`, `Peer`) through scripted or random scenarios with
//! faults: latency and jitter, writes split down to single bytes and merged reads,
//! bounded buffers with backpressure, connection resets, stalled readers, cut links
//! and clients that vanish. A run is a pure function of (scenario, seed).
//!
//! - [`Scenario`]: the script (built by hand or by [`random_scenario`]);
//! - [`run`]: plays it and returns a [`Transcript`], one line per event;
//! - [`check`]: the invariant checker that judges a transcript;
//! - [`run_plain_text`]: plain-text senders against a relay or listener whose driver
//!   runs seconds behind its sockets (the proof that a pause never splits a line).

mod check;
mod plain_text;
mod random;
mod rng;
mod scenario;
mod sim;
mod transcript;

pub use check::{Violation, check};
pub use plain_text::{TextLineSeen, TextRun, TextSpec, run_plain_text};
pub use random::{FaultSet, RandomSpec, random_scenario};
pub use rng::Rng;
pub use scenario::{Action, ClientPlan, NetworkConfig, Scenario, Target, Topology, ms};
pub use sim::{run, run_counting};
pub use transcript::{Entry, Record, Transcript};
