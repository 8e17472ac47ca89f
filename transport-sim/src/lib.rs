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
//! - [`check`]: the invariant checker that judges a transcript; [`Checker`] judges a
//!   run entry by entry as it happens, so that big runs keep no transcript;
//! - [`run_judged`]: one random run judged as it goes, with its workload figures and
//!   its transcript's hash; [`run_swarm`]: many seeds on every core;
//! - [`run_plain_text`]: plain-text senders against a relay or listener whose driver
//!   runs seconds behind its sockets (the proof that a pause never splits a line);
//! - [`run_cluster`]: relays of a cluster on a simulated bus, with bus delays and
//!   relay deaths, checked as it goes.

mod check;
mod cluster;
mod judged;
mod plain_text;
mod random;
mod rng;
mod scenario;
mod sim;
mod swarm;
mod transcript;

pub use check::{
    COLLAPSE_MIN_MESSAGES, Checker, RunInfo, Verdict, Violation, Workload, check, judge,
};
pub use cluster::{ClusterRun, ClusterSpec, run_cluster};
pub use judged::{Corruption, JudgedRun, run_corrupted, run_judged};
pub use plain_text::{TextLineSeen, TextRun, TextSpec, run_plain_text};
pub use random::{FaultSet, RandomSpec, Traffic, random_scenario};
pub use rng::Rng;
pub use scenario::{Action, ClientPlan, NetworkConfig, Scenario, Target, Topology, ms};
pub use sim::{RunStats, run, run_info, run_observed};
pub use swarm::{SwarmReport, parse_seeds, run_swarm, swarm_spec};
pub use transcript::{Entry, Observer, Record, Transcript, TranscriptHash};
