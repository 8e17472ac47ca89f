//! Keeps `docs/PROTOCOL.md` honest: its worked example is decoded, re-encoded byte for
//! byte, and replayed through a real [`RelayServer`], whose output must equal the
//! document's hex dump exactly.

use p2pchat_core::{
    ClientEvent, ClientId, ErrorCode, ErrorReport, Frame, FrameDecoder, Hello, Limits, MAGIC,
    Payload, RelayClient, RelayServer, Role, RosterEntry, Security, Timestamp, Welcome,
};

/// Prints the example's bytes as they should appear in the document (run with
/// `cargo test -p p2pchat-core --test protocol_doc -- --ignored --nocapture`).
#[test]
#[ignore]
fn print_the_example() {
    for (name, frames) in [
        ("client-to-relay", client_frames()),
        ("relay-to-client", relay_frames()),
    ] {
        println!("{name}:");
        let bytes = encode(&frames);
        for line in bytes.chunks(16) {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            println!("{}", hex.join(" "));
        }
    }
}

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// The bytes of the fenced block that follows `<!-- example: NAME -->`.
fn example(name: &str) -> Vec<u8> {
    let marker = format!("<!-- example: {name} -->");
    let start = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in PROTOCOL.md"));
    let block = DOC[start..]
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker");
    block
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace())
        .map(|hex| u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad hex byte {hex:?}")))
        .collect()
}

fn decode(bytes: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::new(Limits::default().max_frame_len);
    d.push(bytes);
    let mut frames = Vec::new();
    while let Some(f) = d.next_frame().expect("the example decodes") {
        frames.push(f);
    }
    assert_eq!(d.buffered_len(), 0, "no trailing bytes in the example");
    frames
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn client_frames() -> Vec<Frame> {
    vec![
        Frame::Hello(Hello {
            min_version: 4,
            max_version: 4,
            capabilities: 0,
            role: Role::RelayClient,
            name: "ann".into(),
            resuming: false,
        }),
        Frame::Chat {
            to: ClientId(1),
            seq: 1,
            payload: Payload::text("hello bob"),
        },
        Frame::Chat {
            to: ClientId(7),
            seq: 2,
            payload: Payload::text("hi?"),
        },
        Frame::Exit,
    ]
}

fn relay_frames() -> Vec<Frame> {
    vec![
        Frame::Welcome(Welcome {
            version: 4,
            capabilities: 0,
            client_id: ClientId(0),
            max_clients: 3,
        }),
        Frame::Roster {
            total: 1,
            entries: vec![RosterEntry {
                id: ClientId(0),
                exited: false,
                away: false,
                name: "ann".into(),
                key: None,
            }],
        },
        Frame::Joined {
            id: ClientId(1),
            name: "bob".into(),
            key: None,
        },
        Frame::Deliver {
            from: ClientId(1),
            to: ClientId(0),
            seq: 1,
            payload: Payload::text("hi ann"),
        },
        Frame::Error(ErrorReport {
            code: ErrorCode::UnknownRecipient,
            seq: 2,
            subject: Some(ClientId(7)),
            message: "no client with ID 7 is online; online: 0, 1".into(),
        }),
    ]
}

#[test]
fn the_documented_bytes_decode_to_the_documented_frames() {
    assert_eq!(decode(&example("client-to-relay")), client_frames());
    assert_eq!(decode(&example("relay-to-client")), relay_frames());
}

#[test]
fn the_encoder_produces_the_documented_bytes() {
    assert_eq!(encode(&client_frames()), example("client-to-relay"));
    assert_eq!(encode(&relay_frames()), example("relay-to-client"));
}

#[test]
fn a_real_relay_sends_exactly_the_documented_bytes() {
    let now = Timestamp::ZERO;
    // The example is in the clear (both sides --insecure), so that it can be read.
    let mut server = RelayServer::new(
        Limits {
            max_clients: 3,
            ..Limits::default()
        },
        Security::insecure(),
    );
    let ann = server.handle_connected(now);
    let mut to_ann = Vec::new();
    let mut bob_inbox = Vec::new();
    let frames = client_frames();

    let mut hello = MAGIC.to_vec();
    frames[0].encode(&mut hello);
    server.handle_bytes(ann, &hello, now);

    let bob_conn = server.handle_connected(now);
    let mut bob =
        RelayClient::new("bob", server.limits().clone(), Security::insecure(), now).unwrap();
    let pump = |server: &mut RelayServer,
                bob: &mut RelayClient,
                to_ann: &mut Vec<u8>,
                bob_inbox: &mut Vec<ClientEvent>| {
        while let Some(bytes) = bob.poll_transmit() {
            bob.handle_written(bytes.len());
            server.handle_bytes(bob_conn, &bytes, now);
        }
        while let Some(t) = server.poll_transmit() {
            server.handle_written(t.conn, t.bytes.len());
            if t.conn == ann {
                to_ann.extend_from_slice(&t.bytes);
            } else {
                bob.handle_bytes(&t.bytes, now);
            }
        }
        bob_inbox.extend(std::iter::from_fn(|| bob.poll_event()));
    };
    pump(&mut server, &mut bob, &mut to_ann, &mut bob_inbox);
    bob.send_chat(ClientId(0), "hi ann", now).unwrap();
    pump(&mut server, &mut bob, &mut to_ann, &mut bob_inbox);
    for f in &frames[1..] {
        server.handle_bytes(ann, &f.to_bytes(), now);
        pump(&mut server, &mut bob, &mut to_ann, &mut bob_inbox);
    }

    assert_eq!(to_ann, example("relay-to-client"));
    let tail: Vec<_> = bob_inbox
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Message { .. } | ClientEvent::Exited { .. }))
        .collect();
    assert_eq!(
        tail,
        vec![
            ClientEvent::Message {
                from: ClientId(0),
                to: ClientId(1),
                seq: 1,
                text: "hello bob".into(),
                encrypted: false,
            },
            ClientEvent::Exited { id: ClientId(0) },
        ]
    );
}
