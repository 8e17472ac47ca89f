//! A client process that dies (`kill -9`) and is started again comes back to its
//! session: the real binary, real TCP on 127.0.0.1, a real data folder.

mod support;

use support::{Proc, fresh_data_dir, join, server};

/// What differs between `shown` and `0..n` in order, in words (empty: nothing).
fn differences(shown: &[u32], n: u32) -> String {
    let missing: Vec<u32> = (0..n).filter(|i| !shown.contains(i)).collect();
    let twice: Vec<u32> = (0..n)
        .filter(|i| shown.iter().filter(|&s| s == i).count() > 1)
        .collect();
    let ordered = shown.windows(2).all(|w| w[0] < w[1]);
    if missing.is_empty() && twice.is_empty() && ordered && shown.len() == n as usize {
        String::new()
    } else {
        format!("missing {missing:?}, twice {twice:?}, in order {ordered}")
    }
}

/// What a killed process (`before`) and the one started after it (`after`) showed
/// of messages `0..n`, of which `0..sent_before` were sent before the kill: each
/// process shows them in order; none is lost; those sent after the kill are shown
/// exactly once. Returns the messages shown by both (a process killed in the
/// instant between showing a burst and recording it shows that burst again; the
/// tests report how often).
fn check_restart(before: &[u32], after: &[u32], n: u32, sent_before: u32) -> Vec<u32> {
    for (which, shown) in [("before", before), ("after", after)] {
        assert!(
            shown.windows(2).all(|w| w[0] < w[1]),
            "{which} the kill: out of order: {shown:?}"
        );
    }
    let missing: Vec<u32> = (0..n)
        .filter(|i| !before.contains(i) && !after.contains(i))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let twice: Vec<u32> = before
        .iter()
        .copied()
        .filter(|i| after.contains(i))
        .collect();
    assert!(
        twice.iter().all(|&i| i < sent_before),
        "shown twice, sent after the kill: {twice:?}"
    );
    twice
}

/// The chat lines `prefix0`, `prefix1`, ... that `seen` holds, as numbers, in order.
fn numbered(seen: &[String], prefix: &str) -> Vec<u32> {
    seen.iter()
        .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
        .collect()
}

#[test]
fn a_killed_join_started_again_resumes_with_its_id_and_loses_nothing() {
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
    // Killed at a moment that has nothing to do with what it shows.
    a.expect_out_line("1 b30");
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
    // Every message to b, before and while it was dead: none lost, none sent
    // after the kill shown twice.
    let twice = check_restart(
        &numbered(&b.out_seen, "0 a"),
        &numbered(&b2.out_seen, "0 a"),
        150,
        100,
    );
    if !twice.is_empty() {
        eprintln!("shown again after the restart: {twice:?}");
    }
    // And b's: those its process had taken from its input before it died (all
    // of them, or the first ones: the rest died in the pipe), once each, in order.
    let from_b = numbered(&a.out_seen, "1 b");
    assert_eq!(differences(&from_b, from_b.len() as u32), "");
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

/// A listener on a fixed free port (a restarted one must be found at the same
/// address) and a connector, each with its own data folder.
fn direct_pair(port: u16, lis_home: &std::path::Path, con_home: &std::path::Path) -> (Proc, Proc) {
    let mut l = start_listener(port, lis_home);
    let mut c = start_connector(port, con_home);
    c.expect_out_line("* connected to lis");
    l.expect_out_line("* connected to con");
    (l, c)
}

fn start_listener(port: u16, home: &std::path::Path) -> Proc {
    let port = port.to_string();
    let args = [
        "listen",
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--name",
        "lis",
    ];
    let mut l = Proc::start_in(&args, home);
    l.expect_out("listening", |x| x.starts_with("* listening on"));
    l
}

fn start_connector(port: u16, home: &std::path::Path) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    Proc::start_in(&["connect", &addr, "--name", "con"], home)
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn either_side_of_a_direct_conversation_killed_and_started_again_resumes_it() {
    for killed in ["connect", "listen"] {
        let port = free_port();
        let (lis_home, con_home) = (fresh_data_dir(), fresh_data_dir());
        let (mut l, mut c) = direct_pair(port, &lis_home, &con_home);
        for i in 0..100 {
            l.send(&format!("l{i}"));
            c.send(&format!("c{i}"));
        }
        let (dead, alive) = if killed == "connect" {
            (&mut c, &mut l)
        } else {
            (&mut l, &mut c)
        };
        let (dead_prefix, alive_prefix) = if killed == "connect" {
            ("peer: l", "peer: c")
        } else {
            ("peer: c", "peer: l")
        };
        // Killed at a moment that has nothing to do with what it shows.
        alive.expect_out_line(&format!("{alive_prefix}30"));
        dead.kill();
        dead.drain();
        alive.expect_out("waiting", |x| x.contains("for the peer to come back"));
        // The other side writes on while it is dead.
        for i in 100..150 {
            let own = if killed == "connect" { "l" } else { "c" };
            alive.send(&format!("{own}{i}"));
        }
        let mut again = if killed == "connect" {
            start_connector(port, &con_home)
        } else {
            start_listener(port, &lis_home)
        };
        again.expect_out("resuming", |x| {
            x.starts_with("* resuming the conversation this command left when its process ended")
        });
        again.expect_out_line(
            "* back: the conversation goes on; nothing was lost, nothing repeated",
        );
        alive.expect_out_line(
            "* back: the conversation goes on; nothing was lost, nothing repeated",
        );
        again.expect_out_line(&format!("{dead_prefix}149"));
        again.send("after the restart");
        alive.expect_out_line("peer: after the restart");
        // Everything sent to the killed side: none lost, none sent after the kill
        // shown twice.
        let twice = check_restart(
            &numbered(&dead.out_seen, dead_prefix),
            &numbered(&again.out_seen, dead_prefix),
            150,
            100,
        );
        if !twice.is_empty() {
            eprintln!("{killed} killed: shown again after the restart: {twice:?}");
        }
        // What it sent: those its process took from its input, once each, in order.
        let from_dead = numbered(&alive.out_seen, alive_prefix);
        let n = from_dead.len() as u32;
        assert_eq!(differences(&from_dead, n), "", "{killed} killed: its own");
    }
}
