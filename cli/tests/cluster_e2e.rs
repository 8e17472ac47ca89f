//! `p2pchat server --cluster`: three relays on one NATS (Debian's nats-server,
//! started here with JetStream on a free loopback port) act as one: IDs unique and
//! in join order across relays, addressed messages, `/all` and a file cross relays,
//! `/who` lists the same clients everywhere, and a departure is told everywhere.

mod support;

use p2pchat_cluster::NatsServer;
use support::{Proc, fresh_data_dir, port_in, without_key_tags};

/// A relay of cluster `e2e` on NATS at `nats`; returns it and its port.
fn relay(nats: &str) -> (Proc, u16) {
    relay_in(nats, "e2e", &fresh_data_dir())
}

/// A relay of cluster `cluster` on NATS at `nats`, with its key in the data folder
/// `data`; returns it and its port.
fn relay_in(nats: &str, cluster: &str, data: &std::path::Path) -> (Proc, u16) {
    let args = [
        "server",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--cluster",
        nats,
        "--cluster-name",
        cluster,
    ];
    let mut p = Proc::start_in(&args, data);
    let line = p.expect_err("listening line", |l| l.contains("listening on"));
    (p, port_in(&line))
}

/// A client on the relay at `port`, admitted as `id`.
fn join(port: u16, name: &str, id: u32, downloads: &std::path::Path) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    let dir = downloads.to_str().expect("a UTF-8 path");
    let mut p = Proc::start(&[
        "join",
        &addr,
        "--name",
        name,
        "--download-dir",
        dir,
        "--auto-accept",
    ]);
    p.expect_out(&format!("{name} admitted as {id}"), |l| {
        l.starts_with(&format!("* you are client {id} "))
    });
    p
}

#[test]
fn three_relays_act_as_one() {
    let nats = NatsServer::start().expect("nats-server starts (apt-get install -y nats-server)");
    let url = nats.url();
    let relays: Vec<(Proc, u16)> = (0..3).map(|_| relay(&url)).collect();
    let ports: Vec<u16> = relays.iter().map(|(_, p)| *p).collect();

    // One client on each relay, then a second on the first: IDs in join order.
    let downloads: Vec<_> = (0..4).map(|_| fresh_data_dir()).collect();
    let mut ann = join(ports[0], "ann", 0, &downloads[0]);
    let mut bob = join(ports[1], "bob", 1, &downloads[1]);
    let mut cy = join(ports[2], "cy", 2, &downloads[2]);
    let mut dee = join(ports[0], "dee", 3, &downloads[3]);
    for (p, who) in [(&mut ann, "ann"), (&mut bob, "bob"), (&mut cy, "cy")] {
        p.expect_out(&format!("dee joining, seen by {who}"), |l| {
            l.starts_with("* 3 dee joined")
        });
    }

    // /who is the same everywhere (each marks itself "you").
    let everyone = "* online: 0 ann, 1 bob, 2 cy, 3 dee";
    for (p, me) in [
        (&mut ann, "0 ann"),
        (&mut bob, "1 bob"),
        (&mut cy, "2 cy"),
        (&mut dee, "3 dee"),
    ] {
        p.send("/who");
        let line = p.expect_out("the roster", |l| {
            l.starts_with("* online:") && l.contains("3 dee")
        });
        assert_eq!(
            without_key_tags(&line).replace(&format!("{me} (you)"), me),
            everyone,
            "{line}"
        );
    }

    // Addressed, across relays, both ways; and on one relay.
    ann.send("2 from ann on relay A");
    cy.expect_out_line("0 from ann on relay A");
    cy.send("0 from cy on relay C");
    ann.expect_out_line("2 from cy on relay C");
    bob.send("3 from bob to dee");
    dee.expect_out_line("1 from bob to dee");

    // To everyone: once each, on every relay, not back to the sender.
    bob.send("/all hello cluster");
    for p in [&mut ann, &mut cy, &mut dee] {
        p.expect_out_line("1 hello cluster");
    }

    // A file from relay C to relay A, byte-identical.
    let contents: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let file = fresh_data_dir().join("across.bin");
    std::fs::write(&file, &contents).expect("a file");
    cy.send(&format!("/send 0 {}", file.display()));
    let received = ann.expect_out("the file", |l| l.starts_with("* received across.bin"));
    let path = received.rsplit(": ").next().expect("a path");
    assert_eq!(std::fs::read(path).expect("the received file"), contents);
    cy.expect_out("its delivery", |l| {
        l.contains("across.bin delivered to client 0")
    });

    // A departure on one relay is told on the others; the ID is never reused.
    bob.send("/quit");
    for p in [&mut ann, &mut cy, &mut dee] {
        p.expect_out("bob leaving", |l| l.starts_with("* 1 left"));
    }
    let _eve = join(ports[1], "eve", 4, &fresh_data_dir());
    drop(relays);
}

#[test]
fn nats_restarted_mid_conversation_delays_messages_between_relays_but_loses_none() {
    let nats = NatsServer::start().expect("nats-server starts (apt-get install -y nats-server)");
    let (url, port) = (nats.url(), nats.port());
    let (_a, port_a) = relay(&url);
    let (_b, port_b) = relay(&url);
    let mut ann = join(port_a, "ann", 0, &fresh_data_dir());
    let mut bob = join(port_b, "bob", 1, &fresh_data_dir());
    ann.expect_out("bob joining", |l| l.starts_with("* 1 bob joined"));
    ann.send("1 before");
    bob.expect_out_line("0 before");

    // NATS dies (SIGKILL); what is said meanwhile waits in the relays.
    let store = nats.kill();
    ann.send("1 while the bus is down");
    bob.send("0 also while it is down");
    // A newcomer cannot be admitted without the bus, and is told why.
    let mut cy = Proc::start(&["join", &format!("127.0.0.1:{port_a}"), "--name", "cy"]);
    cy.expect_err("the refusal", |l| l.contains("bus is unreachable"));

    // NATS is back on its store: everything arrives, once, in order.
    let _nats = NatsServer::start_on(port, Some(store)).expect("restarted");
    bob.expect_out_line("0 while the bus is down");
    ann.expect_out_line("1 also while it is down");
    ann.send("1 after");
    bob.expect_out_line("0 after");
    assert_eq!(
        bob.out_seen
            .iter()
            .filter(|l| *l == "0 while the bus is down")
            .count(),
        1,
        "{:?}",
        bob.out_seen
    );
}

#[test]
fn a_relay_killed_mid_conversation_its_clients_resume_on_another_with_their_ids() {
    let nats = NatsServer::start().expect("nats-server starts (apt-get install -y nats-server)");
    let url = nats.url();
    // The relays of a cluster share one key (one data folder here), so that a client
    // that trusted one on first use trusts the others.
    let shared = fresh_data_dir();
    let (mut relay_a, port_a) = relay_in(&url, "failover", &shared);
    let (mut relay_b, port_b) = relay_in(&url, "failover", &shared);
    let both = format!("127.0.0.1:{port_a},127.0.0.1:{port_b}");
    // ann and carl are on relay A (the first address that answers), bob on B.
    let mut ann = Proc::start(&["join", &both, "--name", "ann"]);
    ann.expect_out("ann admitted", |l| l.starts_with("* you are client 0 "));
    let mut carl = Proc::start(&["join", &both, "--name", "carl"]);
    carl.expect_out("carl admitted", |l| l.starts_with("* you are client 1 "));
    let mut bob = join(port_b, "bob", 2, &fresh_data_dir());
    ann.expect_out("bob joining", |l| l.starts_with("* 2 bob joined"));
    carl.expect_out("bob joining", |l| l.starts_with("* 2 bob joined"));

    // Mid-conversation, relay A is SIGKILLed: messages are on their way both ways.
    for i in 1..=10 {
        bob.send(&format!("0 b{i}"));
        ann.send(&format!("2 a{i}"));
    }
    relay_a.kill();
    for i in 11..=20 {
        bob.send(&format!("0 b{i}"));
    }
    // Within seconds both resume on relay B, with their IDs.
    ann.expect_out("ann back with her ID", |l| {
        l.starts_with("* back on another relay of the cluster") && l.contains("still client 0")
    });
    carl.expect_out("carl back with his ID", |l| {
        l.starts_with("* back on another relay of the cluster") && l.contains("still client 1")
    });
    // Every message of bob's reaches ann exactly once and in order: what relay A had
    // taken from her mailbox and she had not read waited there for relay B.
    ann.expect_out_line("2 b20");
    let got: Vec<&String> = ann
        .out_seen
        .iter()
        .filter(|l| l.starts_with("2 b"))
        .collect();
    let want: Vec<String> = (1..=20).map(|i| format!("2 b{i}")).collect();
    assert_eq!(got, want.iter().collect::<Vec<_>>(), "{:?}", ann.out_seen);
    // Hers reach bob at most once each; any that relay A took and died with were
    // named to her as not confirmed delivered, and she can go on.
    ann.send("2 after the move");
    bob.expect_out_line("0 after the move");
    carl.send("2 carl after the move");
    bob.expect_out_line("1 carl after the move");
    bob.send("1 to carl on his new relay");
    carl.expect_out_line("2 to carl on his new relay");
    for i in 1..=10 {
        let line = format!("0 a{i}");
        let n = bob.out_seen.iter().filter(|l| **l == line).count();
        assert!(n <= 1, "{line} arrived {n} times: {:?}", bob.out_seen);
    }
    // Once relay B takes relay A for dead, nobody leaves: its clients moved.
    relay_b.expect_err("relay A taken for dead", |l| {
        l.contains("taken for dead: 0 client(s) still on it")
    });
    bob.send("/who");
    let roster = bob.expect_out("the roster", |l| l.starts_with("* online:"));
    assert_eq!(
        without_key_tags(&roster),
        "* online: 0 ann, 1 carl, 2 bob (you)"
    );
    assert!(
        !bob.out_seen.iter().any(|l| l.contains(" left")),
        "{:?}",
        bob.out_seen
    );
}

#[test]
fn a_message_read_on_another_relay_is_confirmed_delivered_to_its_sender() {
    let nats = NatsServer::start().expect("nats-server starts (apt-get install -y nats-server)");
    let url = nats.url();
    let (_a, port_a) = relay(&url);
    let (_b, port_b) = relay(&url);
    let mut ann = Proc::start(&[
        "join",
        &format!("127.0.0.1:{port_a}"),
        "--name",
        "ann",
        "--json",
    ]);
    ann.expect_out("admitted", |l| l.contains(r#""event":"welcome","id":0"#));
    let mut bob = join(port_b, "bob", 1, &fresh_data_dir());
    ann.expect_out("bob joining", |l| l.contains(r#""event":"joined","id":1"#));
    ann.send("1 please confirm");
    bob.expect_out_line("0 please confirm");
    // The receipt comes back across the bus once bob's client has read it.
    ann.expect_out("the receipt", |l| {
        l.contains(r#""event":"delivered","seq":"#)
    });
}
