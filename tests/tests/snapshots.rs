//! Snapshot tests: transcripts of the canonical scenarios, stored in `snapshots/` at
//! the repository root. A change in behaviour shows up as a reviewed diff
//! (`cargo insta review`), never as a silent change.

use p2pchat_sim::{Transcript, check, run};
use p2pchat_tests as canon;

fn snapshot(name: &str, transcript: &Transcript) {
    let violations = check(transcript);
    assert!(
        violations.is_empty(),
        "{name}: {violations:?}\n{transcript}"
    );
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, transcript.to_string());
    });
}

#[test]
fn original_three_clients() {
    let t = run(&canon::original_three_clients(), 1);
    snapshot("original_three_clients", &t);
    let text = t.to_string();
    assert!(
        text.contains("c1 got from=0 seq=1 e2e \"hello\""),
        "1 hello from 0 arrives at 1 as 0 hello, sealed end to end"
    );
}

#[test]
fn fourth_client_refused() {
    let t = run(&canon::fourth_client_refused(), 1);
    snapshot("fourth_client_refused", &t);
    assert!(
        t.to_string()
            .contains("c3 refused (server-full): server full: 3 of 3 clients connected")
    );
}

#[test]
fn direct_exit_listener_first() {
    snapshot(
        "direct_exit_listener_first",
        &run(&canon::direct_exit(true), 1),
    );
}

#[test]
fn direct_exit_connector_first() {
    snapshot(
        "direct_exit_connector_first",
        &run(&canon::direct_exit(false), 1),
    );
}

#[test]
fn client_vanishes_mid_conversation() {
    let t = run(&canon::client_vanishes(), 1);
    snapshot("client_vanishes_mid_conversation", &t);
    assert!(t.to_string().contains("left (peer-timeout)"));
}

#[test]
fn message_to_departed_id() {
    let t = run(&canon::message_to_departed_id(), 1);
    snapshot("message_to_departed_id", &t);
    assert!(
        t.to_string()
            .contains("c0 error unknown-recipient seq=2 subject=1")
    );
}

#[test]
fn connection_reset_and_resumed() {
    let t = run(&canon::connection_reset_and_resumed(), 1);
    snapshot("connection_reset_and_resumed", &t);
    let text = t.to_string();
    assert!(text.contains("c1 resumed as 1"), "{text}");
    for line in [
        "c1 got from=0 seq=2 e2e \"on its way during the reset\"",
        "c1 got from=0 seq=3 e2e \"written while b is away\"",
        "c0 got from=1 seq=1 e2e \"written while away\"",
    ] {
        assert_eq!(text.matches(line).count(), 1, "{line} once: {text}");
    }
}

#[test]
fn relay_restarts() {
    let t = run(&canon::relay_restarts(), 1);
    snapshot("relay_restarts", &t);
    let text = t.to_string();
    assert!(text.contains("c0 unconfirmed: seq [2]"), "{text}");
    assert!(text.contains("c0 session over; joins again as"), "{text}");
}

#[test]
fn direct_reset_and_resumed() {
    let t = run(&canon::direct_reset_and_resumed(), 1);
    snapshot("direct_reset_and_resumed", &t);
    let text = t.to_string();
    for line in [
        "c0 got from=- seq=1 \"on its way during the reset\"",
        "c1 got from=- seq=2 \"written while away\"",
    ] {
        assert_eq!(text.matches(line).count(), 1, "{line} once: {text}");
    }
    assert!(
        text.contains("c0 finished") && text.contains("c1 finished"),
        "{text}"
    );
}
