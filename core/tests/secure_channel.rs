//! The secure channel through the public API: who gets in with which keys and
//! passwords, what a downgrade or a tampered, replayed or reordered record does, and
//! that a handshake survives any split of its bytes. Each test wires machines by hand
//! and can change bytes on their way.

use p2pchat_core::{
    ClientEvent, ClientId, Encryption, ErrorCode, Expect, Identity, Limits, Peer, PeerEvent,
    PeerSide, RelayClient, RelayServer, Security, Timestamp,
};
use proptest::prelude::*;

const T: Timestamp = Timestamp::ZERO;

fn party(n: u8) -> Security {
    Security::encrypted(Identity::from_secret([n; 32]), [n ^ 0x5A; 32])
}

fn relay_security() -> Security {
    party(200)
}

/// A relay and its clients, joined by in-memory pipes; `tamper` sees every batch
/// of bytes a client sends (after `tamper_after` batches) and may change it.
struct Net {
    server: RelayServer,
    clients: Vec<(p2pchat_core::ConnId, RelayClient, Vec<ClientEvent>, bool)>,
}

impl Net {
    fn new(security: Security) -> Net {
        Net {
            server: RelayServer::new(Limits::default(), security),
            clients: Vec::new(),
        }
    }

    fn join(&mut self, name: &str, security: Security) -> usize {
        let conn = self.server.handle_connected(T);
        let client = RelayClient::new(name, Limits::default(), security, T).unwrap();
        self.clients.push((conn, client, Vec::new(), false));
        self.pump();
        self.clients.len() - 1
    }

    /// Moves bytes until nothing moves; `tamper(i, bytes)` may change what client
    /// `i` sends.
    fn pump_with(&mut self, mut tamper: impl FnMut(usize, &mut Vec<u8>)) {
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                let (conn, client, _, closed) = &mut self.clients[i];
                if *closed {
                    continue;
                }
                while let Some(mut bytes) = client.poll_transmit() {
                    moved = true;
                    client.handle_written(bytes.len());
                    tamper(i, &mut bytes);
                    self.server.handle_bytes(*conn, &bytes, T);
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                self.server.handle_written(t.conn, t.bytes.len());
                if let Some((_, client, _, false)) = self.clients.iter_mut().find(|c| c.0 == t.conn)
                {
                    client.handle_bytes(&t.bytes, T);
                }
            }
            while let Some(conn) = self.server.poll_close() {
                moved = true;
                self.server.handle_closed(conn, T);
                if let Some(c) = self.clients.iter_mut().find(|c| c.0 == conn)
                    && !c.3
                {
                    c.3 = true;
                    c.1.handle_closed(T);
                }
            }
            for (_, client, events, _) in &mut self.clients {
                events.extend(std::iter::from_fn(|| client.poll_event()));
            }
            if !moved {
                break;
            }
        }
    }

    fn pump(&mut self) {
        self.pump_with(|_, _| {});
    }

    fn events(&mut self, i: usize) -> Vec<ClientEvent> {
        std::mem::take(&mut self.clients[i].2)
    }

    fn disconnect_code(&self, i: usize) -> Option<ErrorCode> {
        self.clients[i].2.iter().find_map(|e| match e {
            ClientEvent::Disconnected { code, .. } => Some(*code),
            _ => None,
        })
    }
}

fn welcomed(events: &[ClientEvent]) -> Option<&ClientEvent> {
    events
        .iter()
        .find(|e| matches!(e, ClientEvent::Welcomed { .. }))
}

#[test]
fn clients_get_in_encrypted_and_learn_the_relay_key_and_each_others() {
    let mut net = Net::new(relay_security());
    let a = net.join("a", party(1));
    let b = net.join("b", party(2));
    let events = net.events(a);
    let relay_key = relay_security().identity.map(|i| i.public());
    assert!(
        matches!(welcomed(&events), Some(ClientEvent::Welcomed { relay_key: k, .. }) if *k == relay_key),
        "{events:?}"
    );
    let joined = events.iter().find_map(|e| match e {
        ClientEvent::Joined { key, .. } => Some(*key),
        _ => None,
    });
    assert_eq!(joined, Some(party(2).identity.map(|i| i.public())));
    net.clients[b]
        .1
        .send_chat(ClientId(0), "secret", T)
        .unwrap();
    net.pump();
    assert!(
        net.events(a)
            .iter()
            .any(|e| matches!(e, ClientEvent::Message { text, .. } if text == "secret"))
    );
}

#[test]
fn passwords_are_checked_inside_the_handshake() {
    let with_password = |password: &str| Security {
        password: Some(password.into()),
        ..relay_security()
    };
    let mut net = Net::new(with_password("sesame"));
    let right = net.join(
        "right",
        Security {
            password: Some("sesame".into()),
            ..party(1)
        },
    );
    let wrong = net.join(
        "wrong",
        Security {
            password: Some("open".into()),
            ..party(2)
        },
    );
    let none = net.join("none", party(3));
    let plain = net.join("plain", Security::insecure());
    assert!(welcomed(&net.events(right)).is_some());
    assert_eq!(net.disconnect_code(wrong), Some(ErrorCode::WrongPassword));
    assert_eq!(net.disconnect_code(none), Some(ErrorCode::PasswordRequired));
    assert_eq!(
        net.disconnect_code(plain),
        Some(ErrorCode::PasswordRequired)
    );
    // A password offered to a relay that has none is refused too, with a reason.
    let mut open = Net::new(relay_security());
    let eager = open.join(
        "eager",
        Security {
            password: Some("x".into()),
            ..party(4)
        },
    );
    assert!(open.disconnect_code(eager).is_some());
}

#[test]
fn a_client_that_does_not_encrypt_is_refused_unless_the_relay_allows_it() {
    let mut strict = Net::new(relay_security());
    let plain = strict.join("plain", Security::insecure());
    assert_eq!(
        strict.disconnect_code(plain),
        Some(ErrorCode::EncryptionRequired)
    );
    let mut lenient = Net::new(Security {
        encryption: Encryption::Optional,
        ..relay_security()
    });
    let plain = lenient.join("plain", Security::insecure());
    let secure = lenient.join("secure", party(5));
    let events = lenient.events(plain);
    assert!(matches!(
        welcomed(&events),
        Some(ClientEvent::Welcomed {
            relay_key: None,
            ..
        })
    ));
    assert!(matches!(
        welcomed(&lenient.events(secure)),
        Some(ClientEvent::Welcomed {
            relay_key: Some(_),
            ..
        })
    ));
}

#[test]
fn a_relay_with_another_key_than_expected_is_refused_with_both_fingerprints() {
    let mut net = Net::new(relay_security());
    let impostor_expected = party(9).identity.map(|i| i.public()).unwrap();
    let c = net.join(
        "c",
        Security {
            expect: Expect::Key(impostor_expected),
            ..party(1)
        },
    );
    let reason = net.clients[c].2.iter().find_map(|e| match e {
        ClientEvent::Disconnected {
            code: ErrorCode::KeyChanged,
            reason,
        } => Some(reason.clone()),
        _ => None,
    });
    let reason = reason.expect("refused for its key");
    let actual = relay_security().identity.unwrap().public();
    assert!(reason.contains(&actual.fingerprint()), "{reason}");
    assert!(
        reason.contains(&impostor_expected.fingerprint()),
        "{reason}"
    );
    assert_eq!(net.server.online(), 0, "never admitted");
}

#[test]
fn a_tampered_record_closes_that_client_only() {
    let mut net = Net::new(relay_security());
    let a = net.join("a", party(1));
    let b = net.join("b", party(2));
    net.events(a);
    net.clients[b].1.send_chat(ClientId(0), "hello", T).unwrap();
    net.pump_with(|i, bytes| {
        if i == b
            && let Some(last) = bytes.last_mut()
        {
            *last ^= 0x01;
        }
    });
    assert_eq!(net.disconnect_code(b), Some(ErrorCode::DecryptFailed));
    let events = net.events(a);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ClientEvent::Message { .. }))
    );
    assert!(events.contains(&ClientEvent::Left {
        id: ClientId(1),
        code: ErrorCode::DecryptFailed
    }));
    assert_eq!(net.disconnect_code(a), None, "the others stay");
}

#[test]
fn a_replayed_or_reordered_record_is_refused() {
    for reorder in [false, true] {
        let mut net = Net::new(relay_security());
        let a = net.join("a", party(1));
        let b = net.join("b", party(2));
        net.events(a);
        let conn = net.clients[b].0;
        let mut records = Vec::new();
        for text in ["one", "two"] {
            net.clients[b].1.send_chat(ClientId(0), text, T).unwrap();
            let bytes = net.clients[b].1.poll_transmit().unwrap();
            net.clients[b].1.handle_written(bytes.len());
            records.push(bytes);
        }
        if reorder {
            records.swap(0, 1);
        } else {
            records.insert(1, records[0].clone());
        }
        for r in &records {
            net.server.handle_bytes(conn, r, T);
        }
        net.pump();
        let got: Vec<String> = net
            .events(a)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message { text, .. } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            if reorder {
                vec![]
            } else {
                vec!["one".to_owned()]
            }
        );
        assert!(
            net.server.client_id(conn).is_none(),
            "reorder {reorder}: cut off"
        );
    }
}

/// Two peers over a pipe that may rewrite bytes on their way.
fn talk(
    a: Security,
    b: Security,
    mut tamper: impl FnMut(bool, &mut Vec<u8>),
) -> (Vec<PeerEvent>, Vec<PeerEvent>) {
    let mut conn = Peer::new(PeerSide::Connector, "ann", Limits::default(), a, T).unwrap();
    let mut acc = Peer::new(PeerSide::Acceptor, "bob", Limits::default(), b, T).unwrap();
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        let mut moved = false;
        while let Some(mut bytes) = conn.poll_transmit() {
            moved = true;
            conn.handle_written(bytes.len());
            tamper(true, &mut bytes);
            acc.handle_bytes(&bytes, T);
        }
        while let Some(mut bytes) = acc.poll_transmit() {
            moved = true;
            acc.handle_written(bytes.len());
            tamper(false, &mut bytes);
            conn.handle_bytes(&bytes, T);
        }
        ea.extend(std::iter::from_fn(|| conn.poll_event()));
        eb.extend(std::iter::from_fn(|| acc.poll_event()));
        if !moved {
            return (ea, eb);
        }
    }
}

fn connected_key(events: &[PeerEvent]) -> Option<Option<p2pchat_core::PublicKey>> {
    events.iter().find_map(|e| match e {
        PeerEvent::Connected { key, .. } => Some(*key),
        _ => None,
    })
}

fn disconnected(events: &[PeerEvent]) -> Option<ErrorCode> {
    events.iter().find_map(|e| match e {
        PeerEvent::Disconnected { code, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn peers_prove_their_keys_to_each_other() {
    let (a, b) = talk(party(1), party(2), |_, _| {});
    assert_eq!(
        connected_key(&a),
        Some(party(2).identity.map(|i| i.public()))
    );
    assert_eq!(
        connected_key(&b),
        Some(party(1).identity.map(|i| i.public()))
    );
}

#[test]
fn a_peer_that_will_not_encrypt_is_refused_as_a_downgrade() {
    let (a, b) = talk(Security::insecure(), party(2), |_, _| {});
    assert_eq!(disconnected(&b), Some(ErrorCode::EncryptionRequired));
    assert_eq!(
        disconnected(&a),
        Some(ErrorCode::EncryptionRequired),
        "the insecure side is told why: {a:?}"
    );
    // Both sides allowing the clear: plain frames, said so.
    let listener = Security {
        encryption: Encryption::Optional,
        ..party(2)
    };
    let (a, b) = talk(Security::insecure(), listener, |_, _| {});
    assert_eq!(connected_key(&a), Some(None));
    assert_eq!(connected_key(&b), Some(None));
}

#[test]
fn an_offer_to_encrypt_removed_on_the_way_is_noticed() {
    // A man in the middle clears the capability bit in the listener's Hello: its
    // first bytes are the magic (4), then the Hello frame: length (4), type (1),
    // versions (2 + 2) and capabilities (8, big-endian: the low byte is at 20).
    let mut first = true;
    let (a, _) = talk(party(1), party(2), |from_connector, bytes| {
        if !from_connector && std::mem::take(&mut first) {
            assert_eq!(bytes[8], 0x01, "a Hello");
            bytes[20] = 0;
        }
    });
    assert_eq!(
        disconnected(&a),
        Some(ErrorCode::EncryptionRequired),
        "{a:?}"
    );
}

#[test]
fn a_listener_refuses_a_known_name_with_a_new_key() {
    let known = [("ann".to_owned(), party(7).identity.unwrap().public())].into();
    let listener = Security {
        expect: Expect::ByName(known),
        ..party(2)
    };
    let (_, b) = talk(party(1), listener, |_, _| {});
    assert_eq!(disconnected(&b), Some(ErrorCode::KeyChanged));
}

#[test]
fn a_truncated_or_oversized_handshake_message_closes_with_a_reason() {
    // Truncated: the connector's first batch ends with its first handshake message,
    // a Handshake frame of 38 bytes (length 4, type 1, pattern 1, an ephemeral key
    // 32); it arrives with half the key missing and its length adjusted to match.
    let mut first = true;
    let (_, b) = talk(party(1), party(2), |from_connector, bytes| {
        if from_connector && std::mem::take(&mut first) {
            let start = bytes.len() - 38;
            assert_eq!(bytes[start + 4], 0x50, "a Handshake frame");
            bytes.truncate(bytes.len() - 16);
            bytes[start..start + 4].copy_from_slice(&18u32.to_be_bytes());
        }
    });
    assert_eq!(disconnected(&b), Some(ErrorCode::HandshakeFailed), "{b:?}");
    // Oversized: a length prefix past the limit is refused before any buffering.
    let mut acc = Peer::new(PeerSide::Acceptor, "bob", Limits::default(), party(2), T).unwrap();
    let mut bytes = p2pchat_core::MAGIC.to_vec();
    bytes.extend_from_slice(&[0x7F, 0, 0, 0, 0x50]);
    acc.handle_bytes(&bytes, T);
    let events: Vec<_> = std::iter::from_fn(|| acc.poll_event()).collect();
    assert_eq!(disconnected(&events), Some(ErrorCode::FrameTooLarge));
}

proptest! {
    #[test]
    fn the_handshake_and_records_survive_any_split(cuts in proptest::collection::vec(1usize..40, 1..12)) {
        // Every batch is delivered in pieces of the given sizes, in turn.
        let mut conn = Peer::new(PeerSide::Connector, "ann", Limits::default(), party(1), T).unwrap();
        let mut acc = Peer::new(PeerSide::Acceptor, "bob", Limits::default(), party(2), T).unwrap();
        conn.send_chat("typed before the handshake", T).unwrap();
        let mut k = 0;
        let mut deliver = |to: &mut Peer, bytes: &[u8]| {
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = cuts[k % cuts.len()].min(rest.len());
                k += 1;
                to.handle_bytes(&rest[..n], T);
                rest = &rest[n..];
            }
        };
        let mut got = Vec::new();
        for _ in 0..20 {
            while let Some(bytes) = conn.poll_transmit() {
                conn.handle_written(bytes.len());
                deliver(&mut acc, &bytes);
            }
            while let Some(bytes) = acc.poll_transmit() {
                acc.handle_written(bytes.len());
                deliver(&mut conn, &bytes);
            }
            got.extend(std::iter::from_fn(|| acc.poll_event()));
        }
        prop_assert!(got.iter().any(|e| matches!(e, PeerEvent::Message { text, .. } if text == "typed before the handshake")), "{got:?}");
        prop_assert!(disconnected(&got).is_none());
    }
}
