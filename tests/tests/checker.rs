//! The invariant checker must be able to fail: every kind of corruption of a correct
//! transcript (a duplicated, a lost, a reordered, a misrouted delivery; an invented
//! message; a client over the limit; a stuck run) is caught, under the right rule.

use p2pchat_core::{ClientId, Timestamp};
use p2pchat_sim::{Record, Transcript, check, run};
use p2pchat_tests as canon;

fn clean() -> Transcript {
    let t = run(&canon::original_three_clients(), 1);
    assert!(check(&t).is_empty(), "the clean transcript passes");
    t
}

fn rules(t: &Transcript) -> Vec<&'static str> {
    check(t).into_iter().map(|v| v.rule).collect()
}

fn deliveries(t: &Transcript) -> Vec<usize> {
    t.entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.record, Record::Delivered { .. }))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_duplicated_delivery_is_caught() {
    let mut t = clean();
    let i = deliveries(&t)[0];
    let dup = t.entries[i].clone();
    t.entries.insert(i + 1, dup);
    assert!(rules(&t).contains(&"exactly-once"), "{:?}", check(&t));
}

#[test]
fn a_lost_delivery_is_caught() {
    let mut t = clean();
    let i = deliveries(&t)[0];
    t.entries.remove(i);
    assert!(rules(&t).contains(&"exactly-once"), "{:?}", check(&t));
}

#[test]
fn a_reordered_pair_of_deliveries_is_caught() {
    // ann (c0) gets two messages from bob (c1): seq 1 and seq 2.
    let mut t = clean();
    let from_bob: Vec<usize> = deliveries(&t)
        .into_iter()
        .filter(|&i| {
            matches!(
                t.entries[i].record,
                Record::Delivered {
                    client: 0,
                    from: Some(ClientId(1)),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(from_bob.len(), 2);
    // The first is shown after the second (a delivery cannot move before its own
    // send: that is an invention, and is caught as one).
    let (a, b) = (from_bob[0], from_bob[1]);
    let first = t.entries.remove(a);
    t.entries.insert(b, first);
    assert!(rules(&t).contains(&"per-sender-order"), "{:?}", check(&t));
}

#[test]
fn a_misrouted_delivery_is_caught() {
    // "hello" from 0 was for 1 (c1); show it arriving at c2 instead.
    let mut t = clean();
    let i = deliveries(&t)[0];
    if let Record::Delivered { client, .. } = &mut t.entries[i].record {
        assert_eq!(*client, 1);
        *client = 2;
    }
    let r = rules(&t);
    assert!(r.contains(&"addressee-only"), "{r:?}");
    assert!(r.contains(&"exactly-once"), "and c1 never got it: {r:?}");
}

#[test]
fn an_invented_message_is_caught() {
    let mut t = clean();
    t.entries.insert(
        5,
        p2pchat_sim::Entry {
            at: Timestamp::from_millis(300),
            record: Record::Delivered {
                client: 1,
                from: Some(ClientId(0)),
                broadcast: false,
                seq: 99,
                text: "never sent".into(),
                sealed: true,
            },
        },
    );
    assert!(rules(&t).contains(&"no-invention"), "{:?}", check(&t));
}

#[test]
fn an_unjustified_unknown_recipient_error_is_caught() {
    let mut t = clean();
    let i = deliveries(&t)[0];
    let at = t.entries[i].at;
    t.entries[i] = p2pchat_sim::Entry {
        at,
        record: Record::ErrorReport {
            client: 0,
            code: p2pchat_core::ErrorCode::UnknownRecipient,
            seq: 1,
            subject: Some(ClientId(1)),
        },
    };
    assert!(
        rules(&t).contains(&"unknown-recipient-justified"),
        "{:?}",
        check(&t)
    );
}

#[test]
fn exceeding_the_client_limit_is_caught() {
    let mut t = clean();
    t.max_clients = 2;
    assert!(rules(&t).contains(&"limit"), "{:?}", check(&t));
}

#[test]
fn a_stuck_run_and_an_overfull_queue_are_caught() {
    let mut t = clean();
    if let Some(Record::End {
        stuck, max_queued, ..
    }) = t.entries.last_mut().map(|e| &mut e.record)
    {
        stuck.push(1);
        *max_queued = t.max_outbound_bytes * 2;
    }
    let r = rules(&t);
    assert!(
        r.contains(&"quiescence") && r.contains(&"bounded-queues"),
        "{r:?}"
    );
}

#[test]
fn sending_after_exit_is_caught() {
    let mut t = clean();
    let exit = t
        .entries
        .iter()
        .position(|e| e.record == Record::SaidExit { client: 0 })
        .unwrap();
    let at = t.entries[exit].at;
    t.entries.insert(
        exit + 1,
        p2pchat_sim::Entry {
            at: Timestamp::from_micros(at.as_micros() + 1),
            record: Record::Sent {
                client: 0,
                to: p2pchat_sim::Target::Id(1),
                seq: 5,
                text: "late".into(),
            },
        },
    );
    assert!(rules(&t).contains(&"no-send-after-exit"), "{:?}", check(&t));
}

#[test]
fn a_run_whose_workload_collapsed_is_a_failure_not_ok() {
    // 300 messages scripted, but their sender's machine vanishes before the first:
    // every rule holds (nothing was sent, so nothing was lost), and still the run
    // proves nothing. The checker says so.
    let mut s = p2pchat_sim::Scenario::relay(3);
    let a = s.join("ann", p2pchat_sim::ms(0));
    let b = s.join("bob", p2pchat_sim::ms(10));
    s.at(p2pchat_sim::ms(500), a, p2pchat_sim::Action::Vanish);
    for k in 0..300 {
        s.send(p2pchat_sim::ms(1_000 + k), a, 1, &format!("m{k}"));
    }
    s.send(p2pchat_sim::ms(1_000), b, 0, "hi");
    s.at(p2pchat_sim::ms(2_000), b, p2pchat_sim::Action::Exit);
    let t = run(&s, 1);
    let verdict = p2pchat_sim::judge(&t);
    let w = &verdict.workload;
    assert_eq!((w.scripted, w.sent), (301, 1), "{w}");
    assert_eq!(
        rules(&t),
        vec!["workload-collapsed"],
        "{:?}",
        verdict.violations
    );
    // The same scenario with its first 100 messages only is small enough that one
    // fault may take it all: no verdict on its workload.
    s.clients[a].actions.retain(|(at, action)| {
        !matches!(action, p2pchat_sim::Action::Send { .. }) || *at < p2pchat_sim::ms(1_100)
    });
    assert!(rules(&run(&s, 1)).is_empty());
}

#[test]
fn a_message_a_vanished_machine_held_unshown_is_accounted_for_and_only_then() {
    // Seed 130: client c0's process is killed, resumes, is handed c6's broadcast
    // (before c6's group key) and a later message from c6 (held behind it, to keep
    // c6's order), acknowledges both, and vanishes. c6 was rightly told they were
    // delivered: they reached the machine. The transcript says so, and the run
    // passes; without that record, the same run is a silent loss.
    let spec = p2pchat_sim::RandomSpec {
        seed: 130,
        clients: 8,
        messages: 80,
        max_clients: 8,
        faults: p2pchat_sim::FaultSet::all(),
        direct: false,
        files: 2,
        traffic: p2pchat_sim::Traffic::Uniform,
    };
    let mut t = run(&p2pchat_sim::random_scenario(&spec), spec.seed);
    let verdict = p2pchat_sim::judge(&t);
    assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
    assert_eq!(verdict.workload.lost_with_reader, 1, "{}", verdict.workload);
    let held = t
        .entries
        .iter()
        .position(|e| matches!(e.record, Record::HeldWhenGone { .. }))
        .expect("the machine vanished holding messages");
    t.entries.remove(held);
    assert!(rules(&t).contains(&"no-silent-loss"), "{:?}", check(&t));
}
