//! `p2pchat sim` from the command line: a swarm seed's printed command replays that
//! exact run (the same transcript hash), a swarm reports its seed range and its
//! failures, and a run's output states how much of its workload happened.

use std::process::Command;

use p2pchat_sim::{run_judged, swarm_spec};

fn sim(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pchat"))
        .arg("sim")
        .args(args)
        .output()
        .expect("p2pchat runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_swarm_seeds_printed_command_replays_the_same_transcript() {
    for seed in [3, 17, 40] {
        let run = run_judged(&swarm_spec(seed), None);
        let command = run.spec.command();
        let args: Vec<&str> = command.split_whitespace().skip(2).collect();
        let (_, stdout, _) = sim(&[&args[..], &["--quiet"]].concat());
        assert!(
            stdout.contains(&format!("hash {}", run.hash)),
            "`{command}` printed another transcript than the swarm ran:\n{stdout}"
        );
    }
}

#[test]
fn a_swarm_runs_its_seed_range_and_says_what_it_did() {
    let (ok, stdout, stderr) = sim(&["--seeds", "1..9", "--jobs", "2"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("swarm: seeds 1..9 (8 runs)"), "{stdout}");
    assert!(stdout.contains("swarm: 8 runs, 0 failed"), "{stdout}");
    let (ok, _, stderr) = sim(&["--seeds", "9..3"]);
    assert!(!ok && stderr.contains("holds no seed"), "{stderr}");
}

#[test]
fn a_run_prints_its_workload_hash_and_figures() {
    let (ok, stdout, stderr) = sim(&["--clients", "6", "--messages", "40", "--quiet"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("# messages: 40 scripted, 40 sent"),
        "{stdout}"
    );
    assert!(stdout.contains("# transcript: "), "{stdout}");
    assert!(stdout.contains("verdict: ok"), "{stdout}");
    assert!(
        stderr.contains("s simulated, in ") && stderr.contains("events/s"),
        "{stderr}"
    );
}

#[test]
fn a_cluster_seed_replays_its_run_and_verdict() {
    let (ok, out, _) = sim(&["--cluster", "--seed", "3"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("# p2pchat sim --cluster --seed 3: "),
        "{out}"
    );
    assert!(
        out.contains(" relays, ") && out.contains("verdict: ok"),
        "{out}"
    );
    let (_, again, _) = sim(&["--cluster", "--seed", "3"]);
    assert_eq!(out, again, "a seed is its run");
}
