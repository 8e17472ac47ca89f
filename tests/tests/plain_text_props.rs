//! Property tests of the plain-text line rule (docs/PROTOCOL.md, section 10): senders
//! that end their lines with `\n` never see a line split or merged, and the original
//! app's newline-less messages are never split, however far behind its sockets the
//! receiver's driver runs and however the reads cut the bytes. A failure prints the
//! `p2pchat sim --plain-text ...` command that replays the exact run.

use core::time::Duration;

use p2pchat_sim::{TextSpec, run_plain_text};
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn holds(spec: &TextSpec) -> Result<(), TestCaseError> {
    let run = run_plain_text(spec);
    prop_assert!(
        run.violations.is_empty(),
        "a line was split or merged; replay with:\n    {}\n{}",
        spec.command(),
        run.violations
            .iter()
            .map(|v| format!("  {v}\n"))
            .collect::<String>()
    );
    prop_assert!(
        run.seen.len() as u64 >= run.sent_lines,
        "fewer lines arrived than were sent; replay with:\n    {}",
        spec.command()
    );
    Ok(())
}

/// Reads of one byte, of a few bytes, or of everything waiting.
fn arb_max_read() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(1usize), 2usize..64]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn relay_lines_are_never_split_or_merged_by_a_lagging_driver(
        seed in any::<u64>(),
        senders in 1u32..8,
        lines in 1u32..40,
        lag_ms in 0u64..5_000,
        max_read in arb_max_read(),
        original_app in any::<bool>(),
    ) {
        holds(&TextSpec {
            seed,
            senders,
            lines,
            original_app,
            max_lag: Duration::from_millis(lag_ms),
            max_read,
            direct: false,
        })?;
    }

    #[test]
    fn direct_lines_are_never_split_or_merged_by_a_lagging_driver(
        seed in any::<u64>(),
        lines in 1u32..60,
        lag_ms in 0u64..5_000,
        max_read in arb_max_read(),
        original_app in any::<bool>(),
    ) {
        holds(&TextSpec {
            seed,
            senders: 1,
            lines,
            original_app,
            max_lag: Duration::from_millis(lag_ms),
            max_read,
            direct: true,
        })?;
    }
}

#[test]
fn with_no_lag_each_newline_less_message_is_one_line() {
    // The checker refuses a merge when the driver never lags: here, each of the
    // original app's messages must arrive as a line of its own, even read byte by byte.
    for (seed, direct, max_read) in [(1, false, 0), (2, false, 1), (3, true, 0), (4, true, 1)] {
        let spec = TextSpec {
            seed,
            senders: 2,
            lines: 30,
            original_app: true,
            max_lag: Duration::ZERO,
            max_read,
            direct,
        };
        let run = run_plain_text(&spec);
        assert!(run.violations.is_empty(), "{run}");
        assert_eq!(run.sent_messages, 30);
        assert!(
            run.idle_reports >= 30,
            "each message ended by a pause: {run}"
        );
    }
}

#[test]
fn a_plain_text_run_is_a_pure_function_of_its_spec() {
    let spec = TextSpec {
        seed: 9,
        senders: 4,
        lines: 25,
        original_app: true,
        max_lag: Duration::from_millis(1_500),
        max_read: 5,
        direct: false,
    };
    let first = run_plain_text(&spec).to_string();
    assert_eq!(first, run_plain_text(&spec).to_string());
    let other = TextSpec { seed: 10, ..spec };
    assert_ne!(first, run_plain_text(&other).to_string());
}
