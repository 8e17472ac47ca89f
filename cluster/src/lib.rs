//! # p2pchat-cluster
//!
//! Relays that act as one, over NATS (an existing engine, never a home-made cluster
//! protocol; see docs/SCALING.md for the design and its limits). This crate is the
//! relays' side of the bus; what each relay decides stays in the sans-IO core.
//!
//! - [`bus`]: a NATS connection used from smol (async-nats on a thread of its own).
//! - [`admission`]: cluster-wide IDs in join order and the cluster-wide client limit,
//!   by compare-and-set on one JetStream key-value entry.
//! - [`mailbox`]: what is held for a client, in JetStream, so that it survives the
//!   relay that held it.
//! - [`node`]: a relay's node: the core's cluster requests carried out on NATS, and
//!   what NATS delivers turned into the core's cluster inputs.
//! - [`nats_server`]: a `nats-server -js` of our own for tests and benchmarks.

pub mod admission;
pub mod bus;
pub mod mailbox;
pub mod nats_server;
pub mod node;
mod pull;

pub use admission::{Admission, Admitted};
pub use bus::{Bus, BusError, BusMessage};
pub use mailbox::{Letter, Mail, MailReader};
pub use nats_server::NatsServer;
pub use node::{NodeOptions, valid_cluster_name};
