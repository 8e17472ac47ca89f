//! The fuzz targets under bolero. `cargo test` runs each on random inputs for a
//! short while (CI's smoke run); `cargo bolero test -p p2pchat-fuzz --test targets
//! <name>` runs one coverage-guided (docs/RELIABILITY.md says how).

use std::time::Duration;

/// How long each target runs under `cargo test`.
const SMOKE: Duration = Duration::from_secs(3);

#[test]
fn decoder() {
    bolero::check!()
        .with_test_time(SMOKE)
        .for_each(|input: &[u8]| p2pchat_fuzz::targets::decoder(input));
}

#[test]
fn relay_server() {
    bolero::check!()
        .with_test_time(SMOKE)
        .for_each(|input: &[u8]| p2pchat_fuzz::targets::relay_server(input));
}

#[test]
fn relay_client() {
    bolero::check!()
        .with_test_time(SMOKE)
        .for_each(|input: &[u8]| p2pchat_fuzz::targets::relay_client(input));
}

#[test]
fn peer() {
    bolero::check!()
        .with_test_time(SMOKE)
        .for_each(|input: &[u8]| p2pchat_fuzz::targets::peer(input));
}
