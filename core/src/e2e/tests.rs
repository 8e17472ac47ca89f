//! End to end through a real relay machine: what the relay sees, and what each kind
//! of client gets.

use crate::file::FileEvent;
use crate::secure::Encryption;
use crate::test_support::{Wire, relay_security};
use crate::{
    ClientEvent, ClientId, ErrorCode, ErrorReport, Limits, PayloadKind, RelayServer, Security,
    Timestamp,
};

const T: Timestamp = Timestamp::ZERO;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Moves one file from client `from` to client `to` through the wire, driving both
/// ends as a driver would; returns the receiver's copy.
fn send_file(w: &mut Wire, from: usize, to: usize, name: &str, content: &[u8]) -> Vec<u8> {
    let to_id = w.client(to).id().unwrap();
    let from_id = w.client(from).id().unwrap();
    w.client(from)
        .offer_file(to_id, name, content.len() as u64, T)
        .unwrap();
    let mut received = Vec::new();
    for _ in 0..1000 {
        w.pump();
        let mut quiet = true;
        for e in w.take_events(from) {
            quiet = false;
            match e {
                ClientEvent::File(FileEvent::Accepted { transfer, .. }) => {
                    w.client(from).start_sending(transfer, 0, T);
                }
                ClientEvent::File(FileEvent::ReadChunk {
                    transfer,
                    offset,
                    len,
                }) => {
                    let start = offset as usize;
                    let chunk = content[start..(start + len).min(content.len())].to_vec();
                    w.client(from).file_data(transfer, offset, chunk, T);
                    if start + len >= content.len() {
                        assert!(w.client(from).file_hashed(transfer, [9; 32], T));
                    }
                }
                ClientEvent::File(FileEvent::Delivered { .. }) => return received,
                _ => {}
            }
        }
        for e in w.take_events(to) {
            quiet = false;
            match e {
                ClientEvent::File(FileEvent::Offered {
                    transfer, name: n, ..
                }) => {
                    assert_eq!(n, name, "the receiver reads the name");
                    w.client(to).accept_file(from_id, transfer, 0, [0; 32], T);
                }
                ClientEvent::File(FileEvent::WriteChunk { transfer, data, .. }) => {
                    received.extend_from_slice(&data);
                    let written = received.len() as u64;
                    w.client(to).chunk_written(from_id, transfer, written, T);
                }
                ClientEvent::File(FileEvent::AllReceived { transfer, hash, .. }) => {
                    assert_eq!(hash, [9; 32], "the sender's hash arrives with Done");
                    w.client(to)
                        .finish_receiving(from_id, transfer, true, "", T);
                }
                _ => {}
            }
        }
        if quiet {
            break;
        }
    }
    panic!("the file was not delivered; got {} bytes", received.len());
}

#[test]
fn the_relay_routes_only_what_it_cannot_read() {
    let mut w = Wire::new(Limits::default());
    let (a, b, c) = (w.join("ann"), w.join("bob"), w.join("cy"));
    w.client(a)
        .send_chat(ClientId(1), "the launch code is 0451", T)
        .unwrap();
    w.client(a).broadcast("all hands at noon", T).unwrap();
    w.client(b)
        .send_chat(ClientId(0), "understood, 0451", T)
        .unwrap();
    w.pump();
    let content: Vec<u8> = (0..150_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let copy = send_file(&mut w, a, b, "plans for the heist.pdf", &content);
    assert!(copy == content, "the file arrived intact");

    let got = |w: &mut Wire, i: usize| {
        w.take_events(i)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message {
                    from,
                    text,
                    encrypted,
                    ..
                } => Some((from.0, text, encrypted)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let _ = (got(&mut w, a), got(&mut w, b), got(&mut w, c));
    // The relay saw every message, and no plaintext in any of them.
    let routed = &w.server.routed;
    assert!(routed.len() > 10, "{} payloads", routed.len());
    for secret in [
        &b"0451"[..],
        b"all hands",
        b"plans for the heist",
        &content[1000..1032],
        &content[200_000..200_032],
    ] {
        for (kind, body) in routed {
            assert!(
                !contains(body, secret),
                "the relay could read {:?} in a {kind:?} payload",
                String::from_utf8_lossy(secret)
            );
        }
    }
    assert!(
        routed.iter().all(|(k, _)| matches!(
            k,
            PayloadKind::Sealed | PayloadKind::SealedFile | PayloadKind::Keys
        )),
        "nothing went in the clear"
    );
}

#[test]
fn each_client_reads_what_was_sent_to_it_sealed() {
    let mut w = Wire::new(Limits::default());
    let (a, b, c) = (w.join("ann"), w.join("bob"), w.join("cy"));
    w.client(a).send_chat(ClientId(1), "for bob", T).unwrap();
    w.client(a).broadcast("for all", T).unwrap();
    w.client(c).broadcast("cy to all", T).unwrap();
    w.pump();
    let sealed_messages = |w: &mut Wire, i: usize| {
        w.take_events(i)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message {
                    from,
                    text,
                    encrypted: true,
                    ..
                } => Some((from.0, text)),
                ClientEvent::Message { .. } | ClientEvent::Unreadable { .. } => {
                    panic!("{e:?}")
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sealed_messages(&mut w, b),
        [
            (0, "for bob".into()),
            (0, "for all".into()),
            (2, "cy to all".into())
        ]
    );
    assert_eq!(
        sealed_messages(&mut w, c),
        [(0, "for all".to_owned())],
        "cy reads ann's message to everyone, and not bob's"
    );
    assert_eq!(sealed_messages(&mut w, a), [(2, "cy to all".to_owned())]);
}

#[test]
fn a_message_to_everyone_sent_before_anyone_was_known_is_read_once_its_key_comes() {
    let mut w = Wire::new(Limits::default());
    let (a, b) = (w.join("ann"), w.join("bob"));
    // cy writes to everyone before the relay has even welcomed it: it knows nobody to
    // hand its group key to, so the others ask for it.
    let conn = w.server.handle_connected(T);
    let mut cy = crate::RelayClient::new(
        "cy",
        Limits::default(),
        crate::test_support::party_security(3),
        T,
    )
    .unwrap();
    cy.broadcast("early to all", T).unwrap();
    cy.send_chat(ClientId(0), "and to ann", T).unwrap();
    w.clients.push(crate::test_support::Attached {
        conn,
        client: cy,
        stalled: false,
        held: Vec::new(),
        closed: false,
        events: Vec::new(),
    });
    w.pump();
    assert_eq!(
        w.take_messages(a),
        [(2, "early to all".into()), (2, "and to ann".into())],
        "in the order cy sent them"
    );
    assert_eq!(w.take_messages(b), [(2, "early to all".into())]);
}

#[test]
fn past_the_presence_limit_keys_are_looked_up() {
    let mut w = Wire::new(Limits {
        presence_limit: 1,
        max_roster_bytes: 32,
        ..Limits::default()
    });
    let (a, b, c) = (w.join("ann"), w.join("bob"), w.join("cy"));
    w.take_events(a);
    // No roster lists cy for ann, and no notice announced it.
    assert!(w.client(a).roster().all(|e| e.id != ClientId(2)));
    w.client(a).send_chat(ClientId(2), "found you", T).unwrap();
    let missing = w.client(a).send_chat(ClientId(7), "nobody", T).unwrap();
    w.client(a).send_chat(ClientId(1), "and bob", T).unwrap();
    w.pump();
    assert_eq!(w.take_messages(c), [(0, "found you".into())]);
    assert_eq!(w.take_messages(b), [(0, "and bob".into())]);
    let errors: Vec<_> = w
        .take_events(a)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Error(ErrorReport { code, seq, .. }) => Some((code, seq)),
            _ => None,
        })
        .collect();
    assert_eq!(errors, [(ErrorCode::UnknownRecipient, missing)]);
    assert!(
        w.server
            .routed
            .iter()
            .all(|(k, _)| *k == PayloadKind::Sealed)
    );
}

#[test]
fn a_client_without_a_key_is_written_to_in_the_clear_and_the_sender_is_told() {
    let mut relay = relay_security();
    relay.encryption = Encryption::Optional;
    let mut w = Wire::new(Limits::default());
    w.server = RelayServer::new(Limits::default(), relay);
    let a = w.join("ann");
    let p = w.join_with("plain", Security::insecure());
    w.client(a)
        .send_chat(ClientId(1), "hello plain", T)
        .unwrap();
    w.client(a).send_chat(ClientId(1), "again", T).unwrap();
    w.client(a).broadcast("to all", T).unwrap();
    w.client(p).send_chat(ClientId(0), "hi ann", T).unwrap();
    w.pump();
    let told: Vec<_> = w
        .take_events(a)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::NotEndToEnd { id, everyone } => Some((id.0, everyone)),
            ClientEvent::Message {
                text, encrypted, ..
            } => {
                assert_eq!((text.as_str(), encrypted), ("hi ann", false));
                None
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        [(1, false), (1, true)],
        "once for each, not per message"
    );
    let events = w.take_events(p);
    let texts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["hello plain", "again"]);
    assert!(
        events.iter().any(|e| matches!(
            e,
            ClientEvent::Unreadable {
                from: ClientId(0),
                ..
            }
        )),
        "the message to everyone is sealed, and the keyless client says it cannot read it: {events:?}"
    );
}

#[test]
fn group_keys_owed_to_many_clients_go_out_as_the_queue_makes_room() {
    let limits = Limits {
        max_outbound_bytes: 4096,
        max_clients: 64,
        ..Limits::default()
    };
    let mut w = Wire::new(limits.clone());
    let clients: Vec<usize> = (0..60).map(|i| w.join(&format!("c{i}"))).collect();
    for &c in &clients {
        w.take_events(c);
    }
    // c0 writes to everyone: it owes its group key to 59 clients, ~8 KB of key
    // exchange, twice its outbound bound.
    w.client(0).broadcast("hello, all 59 of you", T).unwrap();
    assert!(
        w.client(0).pending_bytes() <= limits.max_outbound_bytes,
        "{} bytes queued",
        w.client(0).pending_bytes()
    );
    w.pump();
    for &c in &clients[1..] {
        assert_eq!(
            w.take_messages(c),
            [(0, "hello, all 59 of you".to_owned())],
            "client {c}"
        );
    }
    let cut: Vec<String> = w
        .server_events
        .iter()
        .map(|e| format!("{e:?}"))
        .filter(|e| e.contains("SlowConsumer"))
        .collect();
    assert!(cut.is_empty(), "nobody was cut off: {cut:?}");
}
