//! Security end to end, with the real binary over 127.0.0.1: identities and
//! fingerprints, trust on first use and a changed key, relay passwords, --insecure,
//! and what an observer of the relay's connections sees (a byte-for-byte capture
//! through a recording proxy).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use support::{Proc, fresh_data_dir, port_in, server};

/// `p2pchat id` in the data folder `data`: the fingerprint it prints.
fn fingerprint_in(data: &std::path::Path) -> String {
    let mut id = Proc::start_in(&["id"], data);
    let line = id.expect_out("fingerprint", |l| l.len() == 39);
    assert_eq!(id.wait_exit(), 0);
    line
}

#[test]
fn an_identity_is_made_once_owner_only_and_shown_as_a_fingerprint() {
    let data = fresh_data_dir();
    let first = fingerprint_in(&data);
    assert_eq!(fingerprint_in(&data), first, "the same key next time");
    assert_eq!(first.split('-').count(), 8, "{first}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("p2pchat/identity"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
    }
    assert_ne!(
        fingerprint_in(&fresh_data_dir()),
        first,
        "another installation"
    );
}

/// `p2pchat listen` on `port` (0: any) with the data folder `data`; returns it and
/// its port.
fn listener_in(data: &std::path::Path, port: u16, extra: &[&str]) -> (Proc, u16) {
    let port_arg = port.to_string();
    let mut args = vec![
        "listen",
        "--bind",
        "127.0.0.1",
        "--port",
        &port_arg,
        "--name",
        "lis",
    ];
    args.extend_from_slice(extra);
    let mut l = Proc::start_in(&args, data);
    let line = l.expect_out("listening", |x| x.starts_with("* listening on"));
    (l, port_in(&line))
}

#[test]
fn a_peer_whose_key_changed_is_refused_with_both_fingerprints() {
    let alice = fresh_data_dir();
    let bob = fresh_data_dir();
    let alice_fp = fingerprint_in(&alice);

    // First contact: bob remembers alice's key for her address.
    let (mut l, port) = listener_in(&alice, 0, &[]);
    let addr = format!("127.0.0.1:{port}");
    let mut c = Proc::start_in(&["connect", &addr, "--name", "bob"], &bob);
    let line = c.expect_out("first contact", |x| x.contains("first contact"));
    assert!(line.contains(&alice_fp), "{line}");
    c.send("/quit");
    assert_eq!(c.wait_exit(), 0);
    l.kill();

    // Someone else now answers on that address: refused, loudly.
    let mallory = fresh_data_dir();
    let mallory_fp = fingerprint_in(&mallory);
    let (_m, _) = listener_in(&mallory, port, &[]);
    let mut c = Proc::start_in(&["connect", &addr, "--name", "bob"], &bob);
    let refusal = c.expect_err("key changed", |x| x.contains("key-changed"));
    assert!(
        refusal.contains(&alice_fp) && refusal.contains(&mallory_fp),
        "{refusal}"
    );
    c.expect_err("what to do", |x| x.contains("known_peers"));
    assert_eq!(c.wait_exit(), 1);
    assert!(
        !c.out_seen.iter().any(|x| x.starts_with("* connected")),
        "{:?}",
        c.out_seen
    );
}

#[test]
fn a_pinned_fingerprint_admits_its_key_only() {
    let alice = fresh_data_dir();
    let alice_fp = fingerprint_in(&alice);
    let (_l, port) = listener_in(&alice, 0, &[]);
    let addr = format!("127.0.0.1:{port}");
    let mut right = Proc::start_in(
        &["connect", &addr, "--expect", &alice_fp],
        &fresh_data_dir(),
    );
    right.expect_out("pinned", |x| x.contains("--expect"));
    right.send("/quit");
    assert_eq!(right.wait_exit(), 0);

    let (_l, port) = listener_in(&alice, 0, &[]);
    let wrong = "0000-0000-0000-0000-0000-0000-0000-0000";
    let addr = format!("127.0.0.1:{port}");
    let mut c = Proc::start_in(&["connect", &addr, "--expect", wrong], &fresh_data_dir());
    c.expect_err("refused", |x| x.contains("key-changed"));
    assert_eq!(c.wait_exit(), 1);
}

#[test]
fn a_relay_password_is_required_and_checked() {
    let (_srv, port) = server(&["--password", "sesame"]);
    let addr = format!("127.0.0.1:{port}");
    let mut ok = Proc::start(&["join", &addr, "--password", "sesame"]);
    ok.expect_out("admitted", |x| x.starts_with("* you are client 0 "));
    let mut wrong = Proc::start(&["join", &addr, "--password", "open"]);
    wrong.expect_err("wrong password", |x| x.contains("wrong password"));
    assert_eq!(wrong.wait_exit(), 1);
    let mut none = Proc::start(&["join", &addr]);
    none.expect_err("password required", |x| x.contains("requires a password"));
    assert_eq!(none.wait_exit(), 1);
    // A plain-text client cannot give one: it is told so, in words.
    let mut nc = TcpStream::connect(("127.0.0.1", port)).unwrap();
    nc.write_all(b"hello\n").unwrap();
    nc.set_read_timeout(Some(support::WAIT)).unwrap();
    let mut reply = String::new();
    let _ = nc.read_to_string(&mut reply);
    assert!(reply.contains("requires a password"), "{reply:?}");
}

#[test]
fn insecure_is_refused_by_default_and_said_out_loud_where_allowed() {
    let (_strict, port) = server(&[]);
    let mut c = Proc::start(&["join", &format!("127.0.0.1:{port}"), "--insecure"]);
    c.expect_err("refused", |x| x.contains("requires encryption"));
    assert_eq!(c.wait_exit(), 1);

    let (_lenient, port) = server(&["--insecure"]);
    let mut c = Proc::start(&["join", &format!("127.0.0.1:{port}"), "--insecure"]);
    c.expect_out("admitted", |x| x.starts_with("* you are client 0 "));
    c.expect_out("warning", |x| x.starts_with("* NOT ENCRYPTED"));
}

/// A proxy between clients and a relay that records every byte, both ways.
fn recording_proxy(relay_port: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(relay) = TcpStream::connect(("127.0.0.1", relay_port)) else {
                return;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), relay.try_clone().unwrap()),
                (relay, client),
            ] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

/// Runs a chat line and a file through a relay behind the recording proxy; returns
/// the capture and whether it contains the text, the file's contents, its name.
fn capture_a_session(insecure: bool) -> (bool, bool, bool) {
    let flag: &[&str] = if insecure { &["--insecure"] } else { &[] };
    let (_srv, relay_port) = server(flag);
    let (port, capture) = recording_proxy(relay_port);
    let addr = format!("127.0.0.1:{port}");
    let downloads = fresh_data_dir();
    let mut args_a = vec!["join", &addr, "--name", "ann"];
    args_a.extend_from_slice(flag);
    let mut a = Proc::start(&args_a);
    a.expect_out("admitted", |x| x.starts_with("* you are client 0 "));
    let mut args_b = vec![
        "join",
        &addr,
        "--name",
        "bob",
        "--auto-accept",
        "--download-dir",
        downloads.to_str().unwrap(),
    ];
    args_b.extend_from_slice(flag);
    let mut b = Proc::start(&args_b);
    b.expect_out("admitted", |x| x.starts_with("* you are client 1 "));
    let secret_text = "the launch code is swordfish";
    a.send(&format!("1 {secret_text}"));
    b.expect_out_line(&format!("0 {secret_text}"));
    let file = fresh_data_dir().join("plans.txt");
    let contents = "TOP SECRET PLANS ".repeat(5_000);
    std::fs::write(&file, &contents).unwrap();
    a.send(&format!("/send 1 {}", file.display()));
    b.expect_out("received", |x| x.starts_with("* received plans.txt"));
    assert_eq!(
        std::fs::read_to_string(downloads.join("plans.txt")).unwrap(),
        contents
    );
    let seen = capture.lock().unwrap().clone();
    assert!(
        seen.len() > contents.len(),
        "the file went through the proxy"
    );
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    (
        contains(secret_text.as_bytes()),
        contains(b"TOP SECRET PLANS"),
        contains(b"plans.txt"),
    )
}

#[test]
fn a_capture_of_the_relays_connections_holds_no_chat_text_nor_file_contents() {
    assert_eq!(capture_a_session(false), (false, false, false));
}

#[test]
fn the_capture_does_see_a_session_in_the_clear() {
    // The same capture finds all three when nothing is encrypted: it would notice.
    assert_eq!(capture_a_session(true), (true, true, true));
}

#[test]
fn relay_clients_read_each_others_messages_sealed_end_to_end() {
    let (_srv, port) = server(&[]);
    let addr = format!("127.0.0.1:{port}");
    let start = |name: &str, id: u32| {
        let mut p = Proc::start(&["join", &addr, "--name", name, "--json"]);
        let welcome = p.expect_out("welcome", |l| {
            l.contains(&format!(r#""event":"welcome","id":{id}"#))
        });
        // The channel's cipher is named (whichever this processor proposes).
        assert!(
            welcome.contains(r#""cipher":"aes-256-gcm""#)
                || welcome.contains(r#""cipher":"chacha20-poly1305""#),
            "{welcome}"
        );
        p
    };
    let mut ann = start("ann", 0);
    let mut bob = start("bob", 1);
    let mut cy = start("cy", 2);
    ann.send("1 just for bob");
    ann.send("/all for everyone");
    let sealed = |what: &str| {
        let what = what.to_owned();
        move |l: &str| l.contains(r#""e2e":true"#) && l.contains(&what)
    };
    bob.expect_out("sealed message", sealed("just for bob"));
    bob.expect_out("sealed broadcast", sealed("for everyone"));
    cy.expect_out("sealed broadcast", sealed("for everyone"));
    // cy writes to everyone too, to bob who heard of it only as it joined.
    cy.send("/all cy here");
    bob.expect_out("cy's broadcast", sealed("cy here"));
    ann.expect_out("cy's broadcast", sealed("cy here"));
    assert!(
        !cy.out_seen.iter().any(|l| l.contains("just for bob")),
        "only bob reads what was for bob"
    );
    for p in [&mut ann, &mut bob, &mut cy] {
        assert!(
            !p.out_seen.iter().any(|l| l.contains("not_end_to_end")),
            "everyone has a key: {:?}",
            p.out_seen
        );
        p.send("/quit");
        assert_eq!(p.wait_exit(), 0);
    }
}

#[test]
fn either_cipher_carries_chat_direct_and_through_the_relay() {
    // The connecting side proposes (`--cipher`), the accepting side follows; mixed
    // proposals share one relay.
    for (mine, theirs) in [
        ("aes-256-gcm", "chacha20-poly1305"),
        ("chacha20-poly1305", "aes-256-gcm"),
    ] {
        let (mut l, port) = listener_in(&fresh_data_dir(), 0, &[]);
        let addr = format!("127.0.0.1:{port}");
        let mut c = Proc::start_in(
            &["connect", &addr, "--name", "con", "--cipher", mine],
            &fresh_data_dir(),
        );
        c.expect_out_line("* connected to lis");
        // Both ends say which cipher: the one the connecting side proposed.
        let said = format!("* encrypted ({mine});");
        c.expect_out("cipher", |x| x.starts_with(&said));
        l.expect_out("cipher", |x| x.starts_with(&said));
        c.send(&format!("hello under {mine}"));
        l.expect_out_line(&format!("peer: hello under {mine}"));
        l.send("and back");
        c.expect_out_line("peer: and back");

        let (_srv, port) = server(&[]);
        let addr = format!("127.0.0.1:{port}");
        let mut a = Proc::start(&["join", &addr, "--cipher", mine]);
        a.expect_out("admitted", |x| x.starts_with("* you are client 0 "));
        a.expect_out("cipher", |x| {
            x.starts_with(&format!("* encrypted ({mine});"))
        });
        let mut b = Proc::start(&["join", &addr, "--cipher", theirs]);
        b.expect_out("admitted", |x| x.starts_with("* you are client 1 "));
        b.expect_out("cipher", |x| {
            x.starts_with(&format!("* encrypted ({theirs});"))
        });
        a.send(&format!("1 from {mine} to {theirs}"));
        b.expect_out_line(&format!("0 from {mine} to {theirs}"));
    }
}

#[test]
fn an_unknown_cipher_is_refused_with_the_names_that_exist() {
    let mut c = Proc::start(&["join", "127.0.0.1:9", "--cipher", "rot13"]);
    let line = c.expect_err("refusal", |x| x.contains("rot13"));
    assert!(
        line.contains("aes-256-gcm") && line.contains("chacha20-poly1305"),
        "{line}"
    );
    assert_ne!(c.wait_exit(), 0);
}
