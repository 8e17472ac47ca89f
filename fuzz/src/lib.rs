//! Fuzz targets for the p2pchat core: each takes arbitrary bytes and drives one part
//! of the core with them, asserting only what must hold for any input (no panic,
//! memory within its bound). The harnesses in `tests/targets.rs` run them under
//! bolero: a short random run in `cargo test`, coverage-guided with
//! `cargo bolero test` (see docs/RELIABILITY.md).

pub mod script;
pub mod targets;
