//! The simulator at scale: runs of hundreds and thousands of clients with every fault
//! kind must keep every invariant *and* exercise their workload (a verdict of ok on a
//! run in which nothing happened proves nothing), and the streaming checker must
//! catch one deliberately broken delivery among a thousand clients, naming the seed
//! and the message.
//!
//! These are correctness tests, not benchmarks: nothing here reads a clock. The
//! 1,000 x 100,000 and 10,000 x 1,000,000 runs are in BENCHMARKS.md.

use std::sync::OnceLock;

use p2pchat_sim::{
    Corruption, FaultSet, RandomSpec, Traffic, Violation, run_corrupted, run_judged,
};

fn chat(seed: u64, clients: u32, messages: u32, faults: FaultSet) -> RandomSpec {
    RandomSpec {
        seed,
        clients,
        messages,
        max_clients: clients,
        faults,
        direct: false,
        files: 2,
        traffic: Traffic::Chat,
    }
}

fn rules(v: &[Violation]) -> Vec<&'static str> {
    v.iter().map(|v| v.rule).collect()
}

#[test]
fn two_hundred_clients_and_ten_thousand_messages_with_every_fault() {
    for (seed, traffic) in [(1, Traffic::Chat), (2, Traffic::Uniform)] {
        let spec = RandomSpec {
            traffic,
            ..chat(seed, 200, 10_000, FaultSet::all())
        };
        let run = run_judged(&spec, None);
        assert!(run.ok(), "{}", run.failure_report(20));
        let w = &run.verdict.workload;
        assert!(w.faults >= 5, "faults happened: {w}");
        // Uniform traffic sends 1 in 10 messages to an ID nobody holds.
        let floor = if traffic == Traffic::Chat { 0.9 } else { 0.75 };
        assert!(w.delivered_share() >= floor, "{}: {w}", run.spec.command());
        assert_eq!(
            w.sent,
            w.delivered + w.reported + w.lost_with_sender + w.lost_with_reader,
            "every sent message is accounted for: {w}"
        );
    }
}

#[test]
fn a_thousand_clients_with_every_fault_deliver_nine_messages_in_ten() {
    let run = run_judged(&chat(4, 1_000, 20_000, FaultSet::all()), None);
    assert!(run.ok(), "{}", run.failure_report(20));
    let w = &run.verdict.workload;
    assert!(w.faults >= 20, "faults of every kind happened: {w}");
    assert!(w.sent >= 19_000, "{w}");
    assert!(w.delivered_share() >= 0.9, "{}: {w}", run.spec.command());
    assert_eq!(
        w.sent,
        w.delivered + w.reported + w.lost_with_sender + w.lost_with_reader,
        "{w}"
    );
}

#[test]
fn a_relay_restart_among_a_thousand_clients_costs_its_downtime_and_no_more() {
    // Seed 3 restarts the relay at 1.8 s for 0.24 s: every session ends (a restarted
    // relay knows none), so what was unconfirmed then and what was typed until the
    // clients learnt it is reported to its senders, and everyone joins again
    // (88.8% delivered when this was written).
    let run = run_judged(&chat(3, 1_000, 20_000, FaultSet::all()), None);
    assert!(run.ok(), "{}", run.failure_report(20));
    let w = &run.verdict.workload;
    assert!(
        w.cut_off.get("resume-failed").is_some_and(|&n| n >= 500),
        "{w}"
    );
    assert!(w.delivered_share() >= 0.85, "{}: {w}", run.spec.command());
    assert_eq!(
        w.sent,
        w.delivered + w.reported + w.lost_with_sender + w.lost_with_reader,
        "{w}"
    );
}

/// One run of a thousand clients, its `k`th delivery corrupted: the checker must
/// fail it, and its report must name the seed, the replay command and the message.
/// Returns the report, the first rule broken and the corrupted entry.
fn caught(corruption: Corruption) -> (String, &'static str, String) {
    let spec = chat(11, 1_000, 6_000, FaultSet::default());
    // The clean run, once for all the tests of this kind.
    static CLEAN: OnceLock<String> = OnceLock::new();
    let clean = CLEAN.get_or_init(|| {
        let clean = run_judged(&spec, None);
        assert!(clean.ok(), "{}", clean.failure_report(5));
        clean.hash
    });
    let run = run_corrupted(&spec, corruption);
    assert!(!run.ok(), "{corruption:?} went unnoticed");
    assert_ne!(&run.hash, clean, "the corrupted transcript differs");
    let report = run.failure_report(5);
    assert!(report.contains("seed 11 FAILED"), "{report}");
    assert!(report.contains(&spec.command()), "{report}");
    let first = rules(&run.verdict.violations)[0];
    let entry = run.corrupted.expect("the corruption hit a delivery");
    (report, first, entry)
}

/// `c12 got from=5 seq=7 ...` -> (12, 7).
fn reader_and_seq(entry: &str) -> (String, String) {
    let words: Vec<&str> = entry.split_whitespace().collect();
    let reader = words[1].to_owned();
    let seq = words
        .iter()
        .find_map(|w| w.strip_prefix("seq="))
        .expect("a seq")
        .to_owned();
    (reader, seq)
}

#[test]
fn a_dropped_delivery_among_a_thousand_clients_is_caught_and_named() {
    for k in [1_500, 4_500] {
        let (report, rule, entry) = caught(Corruption::Drop(k));
        let (reader, seq) = reader_and_seq(&entry);
        let named = if entry.contains("(all)") {
            rule == "broadcast-reaches-all"
                && report.contains(&format!("seq {seq} missed {reader}"))
        } else {
            rule == "exactly-once"
                && report.contains(&format!("seq {seq} to"))
                && report.contains(&format!("never reached {reader}"))
        };
        assert!(named, "the report names {entry}:\n{report}");
    }
}

#[test]
fn a_duplicated_delivery_among_a_thousand_clients_is_caught_and_named() {
    let (report, rule, entry) = caught(Corruption::Duplicate(3_000));
    let (reader, seq) = reader_and_seq(&entry);
    assert_eq!(rule, "exactly-once", "{report}");
    assert!(
        report.contains(&format!("{reader} got")) && report.contains(&format!("seq {seq} twice")),
        "the report names {entry}:\n{report}"
    );
}

#[test]
fn a_reordered_delivery_among_a_thousand_clients_is_caught_and_named() {
    let (report, rule, entry) = caught(Corruption::Reorder(3_000));
    let (reader, seq) = reader_and_seq(&entry);
    assert_eq!(rule, "per-sender-order", "{report}");
    assert!(
        report.contains(&format!("{reader} got")) && report.contains(&format!("seq {seq} after")),
        "the report names {entry}:\n{report}"
    );
}
