//! End-to-end relay tests: the real `p2pchat` binary, real TCP on 127.0.0.1, ports
//! chosen by the OS, piped stdin/stdout.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Proc, join, port_in, server};

#[test]
fn the_original_three_client_session() {
    let (mut srv, port) = server(&["--max-clients", "3"]);
    let mut c0 = join(port, "ann", 0);
    let mut c1 = join(port, "bob", 1);
    c0.expect_out_shown("* 1 bob joined");
    let mut c2 = join(port, "cy", 2);
    c2.expect_out_shown("* online: 0 ann, 1 bob, 2 cy (you)");
    c1.expect_out_shown("* 2 cy joined");

    c0.send("1 hello");
    c1.expect_out_line("0 hello");
    c2.send("0 hi ann, from cy with spaces");
    c0.expect_out_line("2 hi ann, from cy with spaces");
    c1.send("/all hello everyone");
    c0.expect_out_line("1 hello everyone");
    c2.expect_out_line("1 hello everyone");

    // Everyone says exit; each keeps receiving until the last one has.
    c0.send("exit");
    c1.expect_out_line("* 0 said exit");
    c1.send("0 you can still read this");
    c0.expect_out_line("1 you can still read this");
    c1.close_stdin(); // end of input means exit
    c2.send("exit");
    for c in [&mut c0, &mut c1, &mut c2] {
        c.expect_out_line("* everyone has said exit; leaving");
        assert_eq!(c.wait_exit(), 0);
    }
    // The server logged joins and leaves but never what was said.
    srv.expect_err("a leave", |l| l.contains("left: client"));
    srv.terminate();
    assert_eq!(srv.wait_exit(), 0);
    assert!(
        srv.err_seen.iter().all(|l| !l.contains("hello")),
        "{:?}",
        srv.err_seen
    );
}

#[test]
fn a_fourth_client_is_refused_with_the_reason() {
    let (_srv, port) = server(&["--max-clients", "3"]);
    let _clients: Vec<Proc> = (0..3).map(|i| join(port, "", i)).collect();
    let mut fourth = Proc::start(&["join", &format!("127.0.0.1:{port}")]);
    let line = fourth.expect_err("refusal", |l| l.contains("refused"));
    assert!(
        line.contains("server full: 3 of 3 clients connected"),
        "{line}"
    );
    assert_eq!(fourth.wait_exit(), 1);
}

#[test]
fn a_chat_to_an_unknown_id_says_who_is_online_and_the_client_stays() {
    let (_srv, port) = server(&[]);
    let mut a = join(port, "a", 0);
    let mut b = join(port, "b", 1);
    a.send("7 anyone there?");
    let line = a.expect_err("unknown recipient", |l| l.starts_with("error:"));
    assert!(
        line.contains("no client with ID 7 is online; online: 0, 1"),
        "{line}"
    );
    a.send("1 still connected");
    b.expect_out_line("0 still connected");
    a.send("hello without an id");
    a.expect_err("usage", |l| l.contains("start the line with the ID"));
}

#[test]
fn a_client_killed_mid_conversation_is_reported_and_the_rest_go_on() {
    // Its ID is held for it to come back for 1 s, then it is gone for good.
    let (_srv, port) = server(&["--resume-grace", "1"]);
    let mut a = join(port, "a", 0);
    let mut b = join(port, "b", 1);
    let mut c = join(port, "c", 2);
    a.send("1 before");
    b.expect_out_line("0 before");
    b.kill();
    a.expect_out_line("* 1 left (connection lost)");
    a.send("1 after");
    a.expect_err("departed ID", |l| {
        l.contains("no client with ID 1 is online")
    });
    a.send("2 still here");
    c.expect_out_line("0 still here");
}

#[test]
fn a_killed_client_is_seen_away_at_once_and_a_message_to_it_is_answered() {
    // The default grace: 60 s. Every expectation below comes long before it ends,
    // so a relay that said nothing until then would fail them all.
    let (_srv, port) = server(&[]);
    let mut a = join(port, "a", 0);
    let mut b = join(port, "b", 1);
    let mut c = join(port, "c", 2);
    // A plain-text client (nc) joins too, as client 3.
    let mut nc = TcpStream::connect(("127.0.0.1", port)).unwrap();
    nc.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    nc.write_all(b"\n").unwrap();
    let mut nc_lines = std::io::BufReader::new(nc.try_clone().unwrap());
    let mut nc_expect = |what: &str| {
        let mut line = String::new();
        loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut nc_lines, &mut line).unwrap();
            assert!(
                n > 0,
                "the relay closed the plain-text client before {what:?}"
            );
            // A wait counted down may read 59 s instead of 60 s.
            if line.trim_end().replace("59 s", "60 s") == what {
                return;
            }
        }
    };
    nc_expect(
        "* you are client 3 (at most 256 online); ID MESSAGE sends to client ID; /all MESSAGE to everyone; /who lists who is online; exit stops your sending; /quit leaves",
    );
    c.expect_out_shown("* 3 joined");
    b.expect_out_shown("* 3 joined");

    b.kill(); // SIGKILL: no goodbye
    c.expect_out_line("* 1 is away (connection lost); messages to it wait up to 60 s");
    nc_expect("* 1 is away (connection lost); messages to it wait up to 60 s");
    a.expect_out_line("* 1 is away (connection lost); messages to it wait up to 60 s");
    a.send("1 are you there");
    let held = a.expect_out("the held notice", |l| {
        l.starts_with("* 1 is away: your message 1 ")
    });
    assert!(
        held.contains("waits up to") && held.contains("s for it to come back"),
        "{held}"
    );
    c.send("/who");
    c.expect_out_shown("* online: 0 a, 1 b (away), 2 c (you), 3");
    nc.write_all(b"1 anyone?\n").unwrap();
    nc_expect("* 1 is away; your messages to it wait up to 60 s more for it to come back");
    nc.write_all(b"/who\n").unwrap();
    nc_expect("* online: 0 a, 1 b (away), 2 c, 3");
}

#[test]
fn garbage_and_an_endless_line_are_cut_off_and_others_keep_chatting() {
    let (mut srv, port) = server(&[]);
    let mut a = join(port, "a", 0);
    let mut b = join(port, "b", 1);

    // A client that sends one endless line of text, no newline.
    let mut endless = TcpStream::connect(("127.0.0.1", port)).unwrap();
    endless
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = endless.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        answer
    });
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..160 {
        // 10 MiB at most; the server cuts the stream off long before.
        if endless.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = endless.shutdown(std::net::Shutdown::Write);
    let answer = answer.join().unwrap();
    // It is taken for a plain-text client, admitted, then cut off with the reason.
    if !String::from_utf8_lossy(&answer).contains("longer than 16384 bytes; disconnected") {
        srv.terminate();
        srv.wait_exit();
        panic!(
            "no plain-text answer: {answer:?}; server log: {:?}",
            srv.err_seen
        );
    }

    // A framed client that sends a frame far over the size limit.
    let mut huge = TcpStream::connect(("127.0.0.1", port)).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    huge.write_all(&p2pchat_core::MAGIC).unwrap();
    huge.write_all(&[0x7f, 0, 0, 0, 0x10]).unwrap();
    let mut answer = Vec::new();
    let _ = huge.read_to_end(&mut answer);
    assert!(answer.starts_with(&p2pchat_core::MAGIC), "{answer:?}");
    let reason = String::from_utf8_lossy(&answer);
    assert!(reason.contains("exceeds the maximum"), "{reason}");
    srv.expect_err("the cut-off is logged", |l| l.contains("frame-too-large"));

    a.send("1 still fine");
    b.expect_out_line("0 still fine");
}

#[test]
fn nothing_listening_gives_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut p = Proc::start(&["join", &format!("127.0.0.1:{port}")]);
    let line = p.expect_err("connection refused", |l| l.starts_with("p2pchat:"));
    assert!(
        line.contains(&format!("could not connect to 127.0.0.1:{port}: connection refused; is `p2pchat server` running there?")),
        "{line}"
    );
    assert_eq!(p.wait_exit(), 1);
}

#[test]
fn a_port_in_use_gives_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut p = Proc::start(&["server", "--bind", "127.0.0.1", "--port", &port]);
    let line = p.expect_err("port in use", |l| l.starts_with("p2pchat:"));
    assert!(line.contains("already in use"), "{line}");
    assert_eq!(p.wait_exit(), 1);
    let mut bad = Proc::start(&["server", "--bind", "not-an-ip"]);
    bad.expect_err("bad address", |l| l.contains("not an IP address"));
    assert_eq!(bad.wait_exit(), 2);
}

#[test]
fn server_shutdown_tells_clients_why() {
    let (mut srv, port) = server(&[]);
    let mut a = join(port, "a", 0);
    srv.terminate();
    let line = a.expect_err("shutdown notice", |l| l.contains("disconnected"));
    assert!(line.contains("shutting down"), "{line}");
    assert_eq!(a.wait_exit(), 1);
    assert_eq!(srv.wait_exit(), 0);
}

#[test]
fn a_server_out_of_file_descriptors_keeps_serving_and_recovers() {
    // At most 40 open files: the listener, the reactor and a few more leave room
    // for about 30 connections.
    let mut srv = Proc::start_with_fd_limit(40, &["server", "--bind", "127.0.0.1", "--port", "0"]);
    let line = srv.expect_err("listening line", |l| l.contains("listening on"));
    let port = port_in(&line);
    let mut a = join(port, "a", 0);
    let mut b = join(port, "b", 1);
    // Sixty connections that say nothing: the server runs out of descriptors.
    let idle: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    a.send("1 still here?");
    b.expect_out_line("0 still here?");
    b.send("0 yes");
    a.expect_out_line("1 yes");
    // Once they go, the server accepts again: a newcomer is admitted.
    drop(idle);
    let mut c = join(port, "c", 2);
    c.send("0 hello from c");
    a.expect_out_line("2 hello from c");
}

#[test]
fn clients_reconnect_by_themselves_when_the_server_is_killed_and_restarted() {
    // A port the restarted server can take again.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    // The restarted server is the same installation: the same key.
    let data = support::fresh_data_dir();
    let start = || {
        let mut s = Proc::start_in(&["server", "--bind", "127.0.0.1", "--port", &port], &data);
        s.expect_err("listening line", |l| l.contains("listening on"));
        s
    };
    let mut srv = start();
    let port_n: u16 = port.parse().unwrap();
    let mut a = join(port_n, "a", 0);
    let mut b = join(port_n, "b", 1);
    a.send("1 before the crash");
    b.expect_out_line("0 before the crash");

    srv.kill(); // SIGKILL: no goodbye
    a.expect_out("connection lost", |l| l.contains("connection-lost"));
    b.expect_out("connection lost", |l| l.contains("connection-lost"));
    // Typed while away: kept for when the session is back...
    a.send("1 while the relay is down");

    let _srv = start();
    // ... but the restarted relay knows nothing of the session: the client says
    // what may not have arrived, and joins again as a new client.
    let gap = a.expect_err("the gap", |l| l.contains("not confirmed delivered"));
    assert!(gap.contains("(to 1)"), "{gap}");
    let new_id = |p: &mut Proc| {
        let line = p.expect_out("reconnected", |l| {
            l.starts_with("* reconnected: you are a new client")
        });
        line.split("new client, ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no ID in {line:?}"))
    };
    let (a_id, b_id) = (new_id(&mut a), new_id(&mut b));
    assert_ne!(a_id, b_id);
    a.send(&format!("{b_id} after the restart"));
    b.expect_out_line(&format!("{a_id} after the restart"));
    for p in [&mut a, &mut b] {
        p.send("/quit");
        assert_eq!(p.wait_exit(), 0);
    }
}

#[test]
fn a_client_whose_connection_is_cut_comes_back_with_its_id_and_nothing_lost_or_repeated() {
    let (_srv, port) = server(&[]);
    let proxy = support::CuttableProxy::start(port);
    let mut a = join(port, "a", 0);
    let mut b = join(proxy.port, "b", 1);
    a.expect_out_shown("* 1 b joined");
    // a writes to b; b's connection is cut while messages are on their way, and a
    // goes on writing while b is away; b writes to a while away too.
    for i in 0..100 {
        a.send(&format!("1 m{i}"));
    }
    b.expect_out_line("0 m3");
    proxy.cut();
    b.send("0 written while away");
    for i in 100..200 {
        a.send(&format!("1 m{i}"));
    }
    b.expect_out("lost", |l| l.contains("getting back to the relay"));
    b.expect_out_line("* back: you are still client 1; nothing was lost, nothing repeated");
    a.expect_out_line("1 written while away");
    b.expect_out_line("0 m199");
    assert!(proxy.connections() >= 2, "b dialled again");
    // Every message exactly once, in order.
    assert_each_once_in_order(&b.out_seen, "0 m", 200);
    assert_eq!(
        a.out_seen
            .iter()
            .filter(|l| *l == "1 written while away")
            .count(),
        1
    );
    // And the conversation goes on, with the same IDs.
    a.send("1 after");
    b.expect_out_line("0 after");
}

#[test]
fn broadcasts_to_a_client_whose_connection_is_cut_arrive_once_each_in_order() {
    // The relay keeps a broadcast batch once for all its recipients (shared, not
    // copied into each one's session stream); a recipient that loses its link must
    // still get every one of them resent, once, in order, beside one that did not.
    let (_srv, port) = server(&[]);
    let proxy = support::CuttableProxy::start(port);
    let mut a = join(port, "a", 0);
    let mut b = join(proxy.port, "b", 1);
    a.expect_out_shown("* 1 b joined");
    let mut c = join(port, "c", 2);
    b.expect_out_shown("* 2 c joined");
    // Many, so that the cut finds some of them between the relay and b (the relay
    // resends those from the batches it kept).
    for i in 0..2000 {
        a.send(&format!("/all m{i}"));
    }
    b.expect_out_line("0 m3");
    proxy.cut();
    for i in 2000..2100 {
        a.send(&format!("/all m{i}"));
    }
    b.expect_out_line("* back: you are still client 1; nothing was lost, nothing repeated");
    b.expect_out_line("0 m2099");
    c.expect_out_line("0 m2099");
    assert!(proxy.connections() >= 2, "b dialled again");
    for seen in [&b.out_seen, &c.out_seen] {
        assert_each_once_in_order(seen, "0 m", 2100);
    }
}

/// The lines of `seen` that start with `prefix` are `prefix0` .. `prefix{count-1}`,
/// each once, in order.
fn assert_each_once_in_order(seen: &[String], prefix: &str, count: usize) {
    let shown: Vec<&str> = seen
        .iter()
        .filter(|l| l.starts_with(prefix))
        .map(String::as_str)
        .collect();
    let expected: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    assert_eq!(
        shown,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
}
