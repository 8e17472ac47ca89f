//! Placeholder: cross-crate scenario tests arrive with the simulator issue.
