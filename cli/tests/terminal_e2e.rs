//! `p2pchat join` in a real (pseudo-)terminal: file progress is a progress bar
//! redrawn in place on the line above the prompt, not a stream of lines.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Proc, fresh_data_dir, server};

#[test]
fn file_progress_on_a_terminal_is_a_bar_redrawn_in_place() {
    let (_relay, port) = server(&[]);
    let relay = format!("127.0.0.1:{port}");
    let downloads = fresh_data_dir();
    let mut receiver = Proc::start(&[
        "join",
        &relay,
        "--name",
        "r",
        "--auto-accept",
        "--download-dir",
        downloads.to_str().expect("a UTF-8 path"),
    ]);
    receiver.expect_out("admitted as 0", |l| l.starts_with("* you are client 0 "));

    let dir = fresh_data_dir();
    let file = dir.join("big.bin");
    let contents: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &contents).expect("a file");
    let mut sender = Proc::start_in_terminal(&["join", &relay, "--name", "s"], &dir);
    sender.expect_out("admitted as 1", |l| l.contains("* you are client 1 "));
    sender.send(&format!("/send 0 {}", file.display()));
    sender.expect_out("the accept", |l| l.contains("accepted big.bin; sending"));

    // The receiver stops reading for a while, as a slow link would: the transfer
    // lasts over a second, so progress is reported (at most once a second).
    let pid = receiver.child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_millis(1_500));
    signal("-CONT");

    let first = sender.expect_out("a bar", |l| {
        l.contains("sending big.bin: ") && l.contains("% of 32.00 MiB")
    });
    assert!(first.contains('[') && first.contains(']'), "{first:?}");
    // Each later frame first moves up over the previous one and clears it.
    let full = sender.expect_out("the full bar", |l| {
        l.contains("\x1b[1A\x1b[2Ksending big.bin: ")
            && l.contains("[==============================] 100%")
    });
    assert!(!full.contains("\n"), "{full:?}");
    sender.expect_out("the delivery", |l| {
        l.contains("* big.bin delivered to client 0")
    });
    let received = receiver.expect_out("the file", |l| l.starts_with("* received big.bin"));
    let path = received.rsplit(": ").next().expect("a path");
    assert_eq!(std::fs::read(path).expect("the received file"), contents);
    // Pipes keep the sparse lines: the receiver's output has no bar.
    assert!(
        !receiver.out_seen.iter().any(|l| l.contains('\x1b')),
        "{:?}",
        receiver.out_seen
    );
    sender.send("/quit");
    receiver.send("/quit");
}
