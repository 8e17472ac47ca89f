//! End-to-end direct chat tests: `p2pchat listen` and `p2pchat connect` as real
//! processes over 127.0.0.1.

mod support;

use support::{Proc, port_in};

fn pair() -> (Proc, Proc) {
    pair_with(&[], |port| port)
}

/// A listener (with `extra` options) and a connector that dials the port `route`
/// gives for the listener's port (a proxy's, say).
fn pair_with(extra: &[&str], route: impl FnOnce(u16) -> u16) -> (Proc, Proc) {
    let mut args = vec![
        "listen",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--name",
        "lis",
    ];
    args.extend_from_slice(extra);
    let mut listener = Proc::start(&args);
    let line = listener.expect_out("listening line", |l| l.starts_with("* listening on"));
    let port = route(port_in(&line));
    let mut connector = Proc::start(&["connect", &format!("127.0.0.1:{port}"), "--name", "con"]);
    connector.expect_out_line("* connected to lis");
    listener.expect_out_line("* connected to con");
    (listener, connector)
}

#[test]
fn both_chat_and_exit_in_either_order_ends_both_with_status_zero() {
    for listener_first in [true, false] {
        let (mut l, mut c) = pair();
        l.send("hello from the listener");
        c.send("hello from the connector");
        c.expect_out_line("peer: hello from the listener");
        l.expect_out_line("peer: hello from the connector");
        let (first, second) = if listener_first {
            (&mut l, &mut c)
        } else {
            (&mut c, &mut l)
        };
        first.send("exit");
        second.expect_out("peer exit", |x| x.starts_with("* peer said exit"));
        second.send("you still hear me");
        first.expect_out_line("peer: you still hear me");
        first.send("this is not sent");
        first.expect_err("no sending after exit", |x| x.contains("already said exit"));
        second.close_stdin(); // end of input means exit
        for p in [&mut l, &mut c] {
            p.expect_out_line("* both sides said exit; conversation over");
            assert_eq!(p.wait_exit(), 0);
        }
    }
}

#[test]
fn a_peer_killed_mid_conversation_is_reported_without_hanging() {
    // The conversation waits 1 s for it to come back.
    let (mut l, mut c) = pair_with(&["--resume-grace", "1"], |port| port);
    c.send("about to vanish");
    l.expect_out_line("peer: about to vanish");
    c.kill();
    let line = l.expect_err("peer vanished", |x| x.contains("peer vanished"));
    assert!(line.contains("connection"), "{line}");
    assert_eq!(l.wait_exit(), 1);
}

#[test]
fn a_vanished_peer_is_waited_for_with_quit_offered_unless_input_has_ended() {
    // The default grace (60 s): a side that waited it out would fail `wait_exit`.
    let (mut l, mut c) = pair();
    c.send("hi");
    l.expect_out_line("peer: hi");
    c.kill();
    l.expect_out("how long, and /quit", |x| {
        x.contains("the conversation waits up to 60 s for the peer to come back")
            && x.ends_with("/quit ends it now")
    });
    l.send("/quit");
    assert_eq!(l.wait_exit(), 0);

    // Input ended (a script's stdin), everything sent confirmed: no wait at all.
    let (mut l, mut c) = pair();
    l.send("last words");
    c.expect_out_line("peer: last words");
    // The answer carries the acknowledgement of "last words": once l shows it,
    // nothing of l's is unconfirmed.
    c.send("noted");
    l.expect_out_line("peer: noted");
    l.close_stdin();
    c.expect_out("peer exit", |x| x.starts_with("* peer said exit"));
    c.kill();
    l.expect_out("no wait", |x| {
        x.contains("your input has ended and everything you sent was confirmed delivered")
    });
    assert_eq!(l.wait_exit(), 0);
}

#[test]
fn connecting_to_nothing_names_the_listener_to_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Proc::start(&["connect", &format!("127.0.0.1:{port}")]);
    let line = c.expect_err("refused", |x| x.starts_with("p2pchat:"));
    assert!(
        line.contains("is `p2pchat listen` running there?"),
        "{line}"
    );
    assert_eq!(c.wait_exit(), 1);
}

#[test]
fn a_relay_client_that_dials_a_listener_is_told_to_use_connect() {
    let mut l = Proc::start(&["listen", "--bind", "127.0.0.1", "--port", "0"]);
    let line = l.expect_out("listening line", |x| x.starts_with("* listening on"));
    let mut j = Proc::start(&["join", &format!("127.0.0.1:{}", port_in(&line))]);
    let err = j.expect_err("wrong role", |x| x.contains("disconnected"));
    assert!(err.contains("p2pchat connect"), "{err}");
    assert_eq!(j.wait_exit(), 1);
    assert_eq!(l.wait_exit(), 1);
}

#[test]
fn a_cut_connection_resumes_the_conversation_with_nothing_lost_or_repeated() {
    let mut proxy = None;
    let (mut l, mut c) = pair_with(&[], |port| {
        let p = support::CuttableProxy::start(port);
        let port = p.port;
        proxy = Some(p);
        port
    });
    let proxy = proxy.unwrap();
    for i in 0..50 {
        l.send(&format!("to con {i}"));
        c.send(&format!("to lis {i}"));
    }
    c.expect_out_line("peer: to con 2");
    proxy.cut();
    for i in 50..100 {
        l.send(&format!("to con {i}"));
        c.send(&format!("to lis {i}"));
    }
    for p in [&mut l, &mut c] {
        p.expect_out("lost", |x| {
            x.contains("waits up to") && x.contains("for the peer to come back")
        });
        p.expect_out_line("* back: the conversation goes on; nothing was lost, nothing repeated");
    }
    c.expect_out_line("peer: to con 99");
    l.expect_out_line("peer: to lis 99");
    assert!(proxy.connections() >= 2, "the connector dialled again");
    for (p, to) in [(&c, "con"), (&l, "lis")] {
        let shown: Vec<&str> = p
            .out_seen
            .iter()
            .filter(|x| x.starts_with("peer: to "))
            .map(String::as_str)
            .collect();
        let expected: Vec<String> = (0..100).map(|i| format!("peer: to {to} {i}")).collect();
        assert_eq!(
            shown,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
    l.send("exit");
    c.send("exit");
    for p in [&mut l, &mut c] {
        p.expect_out_line("* both sides said exit; conversation over");
        assert_eq!(p.wait_exit(), 0);
    }
}
