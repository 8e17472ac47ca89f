//! Placeholder: the TCP driver arrives with its own issue (real TCP on smol).
