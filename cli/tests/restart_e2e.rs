//! A client process that dies (`kill -9`) and is started again comes back to its
//! session: the real binary, real TCP on 127.0.0.1, a real data folder.

mod support;

use support::{Proc, fresh_data_dir, join, server};

/// The chat lines `prefix0`, `prefix1`, ... that `seen` holds, as numbers, in order.
fn numbered(seen: &[String], prefix: &str) -> Vec<u32> {
    seen.iter()
        .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
        .collect()
}

#[test]
fn a_killed_join_started_again_resumes_with_its_id_and_nothing_lost_or_repeated() {
    let (_srv, port) = server(&[]);
    let addr = format!("127.0.0.1:{port}");
    let mut a = join(port, "a", 0);
    let home = fresh_data_dir();
    let start_b = || Proc::start_in(&["join", &addr, "--name", "b"], &home);
    let mut b = start_b();
    b.expect_out("admitted as 1", |l| l.starts_with("* you are client 1 "));
    a.expect_out_shown("* 1 b joined");
    // Messages flow both ways, and b is killed while they do.
    for i in 0..100 {
        a.send(&format!("1 a{i}"));
        b.send(&format!("0 b{i}"));
    }
    b.expect_out_line("0 a60");
    b.kill(); // SIGKILL: no goodbye, nothing flushed
    b.drain(); // what it showed before it died
    a.expect_out_line("* 1 is away (connection lost); messages to it wait up to 60 s");
    // While b is dead, a writes on.
    for i in 100..150 {
        a.send(&format!("1 a{i}"));
    }
    a.expect_out("held", |l| l.starts_with("* 1 is away: your message "));
    let mut b2 = start_b();
    b2.expect_out("resuming", |l| {
        l.starts_with(
            "* resuming the session this command left when its process ended, as client 1",
        )
    });
    b2.expect_out_line("* back: you are still client 1; nothing was lost, nothing repeated");
    a.expect_out_line("* 1 is back");
    b2.expect_out_line("0 a149");
    b2.send("0 after the restart");
    a.expect_out_line("1 after the restart");
    a.send("1 and to you");
    b2.expect_out_line("0 and to you");
    // Every message to b, before and while it was dead, shown once, in order.
    let mut shown = numbered(&b.out_seen, "0 a");
    shown.extend(numbered(&b2.out_seen, "0 a"));
    assert_eq!(shown, (0..150).collect::<Vec<_>>());
    // And b's: those its process had taken from its input before it died (all
    // of them, or the first ones: the rest died in the pipe), once each, in order.
    let from_b = numbered(&a.out_seen, "1 b");
    assert_eq!(from_b, (0..from_b.len() as u32).collect::<Vec<_>>());
    assert!(!from_b.is_empty());
}

#[test]
fn two_joins_from_one_home_at_once_both_chat_with_their_own_ids() {
    let (_srv, port) = server(&[]);
    let addr = format!("127.0.0.1:{port}");
    let home = fresh_data_dir();
    let mut x = Proc::start_in(&["join", &addr, "--name", "x"], &home);
    x.expect_out("admitted as 0", |l| l.starts_with("* you are client 0 "));
    let mut y = Proc::start_in(&["join", &addr, "--name", "y"], &home);
    y.expect_out("admitted as 1", |l| l.starts_with("* you are client 1 "));
    x.send("1 hello y");
    y.expect_out_line("0 hello y");
    y.send("0 hello x");
    x.expect_out_line("1 hello x");
    // Each keeps its own saved session.
    let sessions = home.join("p2pchat/sessions");
    for n in [0, 1] {
        let file = sessions.join(format!("join-127.0.0.1_{port}-{n}.session"));
        assert!(file.exists(), "{} is saved", file.display());
    }
}

#[test]
fn a_torn_or_garbage_session_file_is_set_aside_with_a_note_and_a_new_session_starts() {
    let (_srv, port) = server(&[]);
    let addr = format!("127.0.0.1:{port}");
    let mut other = join(port, "other", 0);
    let mut next_id = 1;
    for damage in ["torn", "garbage"] {
        let home = fresh_data_dir();
        let file = home.join(format!("p2pchat/sessions/join-127.0.0.1_{port}-0.session"));
        let mut b = Proc::start_in(&["join", &addr, "--name", "b"], &home);
        b.expect_out("admitted", |l| {
            l.starts_with(&format!("* you are client {next_id} "))
        });
        other.send(&format!("{next_id} saved soon"));
        b.expect_out_line("0 saved soon");
        b.kill();
        let saved = std::fs::read(&file).expect("a saved session");
        let damaged = match damage {
            "torn" => saved[..saved.len() / 2].to_vec(),
            _ => b"\x00garbage\xff not a session at all".to_vec(),
        };
        std::fs::write(&file, damaged).unwrap();
        next_id += 1;
        let mut b = Proc::start_in(&["join", &addr, "--name", "b"], &home);
        let note = b.expect_err("the note", |l| l.starts_with("note: "));
        assert!(
            note.contains(&file.display().to_string())
                && note.contains("damaged or incomplete")
                && note.contains("a new session starts"),
            "{note}"
        );
        b.expect_out("a new ID", |l| {
            l.starts_with(&format!("* you are client {next_id} "))
        });
        other.send(&format!("{next_id} works"));
        b.expect_out_line("0 works");
        next_id += 1;
    }
}
