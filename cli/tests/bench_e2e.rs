//! The benchmark's command line over 127.0.0.1, kept small so that it runs in CI: a
//! sweep starts the real relay and the reference relay as child processes, drives
//! both, and writes its table and chart. It asserts what was delivered, never times.

use std::process::Command;

#[test]
fn a_small_sweep_measures_both_relays_and_draws_its_chart() {
    let dir = std::env::temp_dir().join(format!("p2pchat-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("sweep.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_p2pchat"))
        .args([
            "bench",
            "--sweep",
            "2,3",
            "--messages",
            "300",
            "--rate",
            "200",
        ])
        .args(["--paced-seconds", "1", "--plot"])
        .arg(&chart)
        .output()
        .expect("p2pchat runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // A header, a separator and one row per number of clients.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(
        rows[1].starts_with("| 2 |") && rows[2].starts_with("| 3 |"),
        "{stdout}"
    );
    // Every run delivered everything: four runs per row, each summary says so.
    let summaries: Vec<&str> = stderr.lines().filter(|l| l.contains("delivered")).collect();
    assert_eq!(summaries.len(), 8, "{stderr}");
    for s in &summaries {
        assert!(s.contains("errors 0"), "{s}");
        let delivered = s
            .split("delivered ")
            .nth(1)
            .and_then(|r| r.split(' ').next());
        let (got, expected) = delivered.and_then(|d| d.split_once('/')).unwrap();
        assert_eq!(got, expected, "{s}");
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert_eq!(
        svg.matches("<polyline").count(),
        4,
        "two lines in each of two panels"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sweep_lists_are_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pchat"))
        .args(["bench", "--sweep", "2,x"])
        .output()
        .expect("p2pchat runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected numbers of clients"));
}

#[test]
fn sealed_frames_load_an_encrypted_relay_and_every_message_arrives() {
    // Enough messages that acknowledgements go out sealed, not only the chat.
    let out = Command::new(env!("CARGO_BIN_EXE_p2pchat"))
        .args([
            "bench",
            "--clients",
            "4",
            "--messages",
            "4000",
            "--sealed-frames",
        ])
        .output()
        .expect("p2pchat runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("delivered 4000/4000") && stdout.contains("errors 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ns a message"),
        "the relay's CPU is measured: {stdout}"
    );
}

#[test]
fn sealed_frames_with_another_kind_of_client_is_refused_with_a_reason() {
    for other in ["--raw-frames", "--insecure", "--text"] {
        let out = Command::new(env!("CARGO_BIN_EXE_p2pchat"))
            .args(["bench", "--sealed-frames", other])
            .output()
            .expect("p2pchat runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{other}: {stderr}");
        assert!(stderr.contains("--sealed-frames"), "{other}: {stderr}");
    }
}
