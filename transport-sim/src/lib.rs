//! Placeholder: the simulated network arrives with its own issue.
