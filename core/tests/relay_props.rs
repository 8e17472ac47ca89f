//! Model-based property test of [`RelayServer`]: random sequences of connects,
//! handshakes, disconnects, chats, broadcasts and exits, driven over raw bytes, with
//! the relay's invariants checked after every step.

use std::collections::BTreeMap;

use p2pchat_core::{
    ClientId, ConnId, ErrorCode, ErrorReport, Frame, FrameDecoder, Hello, Limits, MAGIC,
    PROTOCOL_VERSION, Payload, RelayServer, Role, Timestamp,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Hello(usize),
    Disconnect(usize),
    Chat { from: usize, to: u32, text: String },
    Broadcast { from: usize, text: String },
    Exit(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Connect),
        3 => (0usize..16).prop_map(Op::Hello),
        1 => (0usize..16).prop_map(Op::Disconnect),
        6 => (0usize..16, 0u32..10, "[a-z ]{0,8}").prop_map(|(from, to, text)| Op::Chat { from, to, text }),
        1 => (0usize..16, "[a-z]{0,5}").prop_map(|(from, text)| Op::Broadcast { from, text }),
        1 => (0usize..16).prop_map(Op::Exit),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Fresh,
    Admitted(ClientId),
    Gone,
}

struct Conn {
    id: ConnId,
    model: Model,
    decoder: FrameDecoder,
    exited: bool,
    next_seq: u64,
    /// Frames received during the current step.
    inbox: Vec<Frame>,
}

struct Harness {
    server: RelayServer,
    conns: Vec<Conn>,
    max_clients: u32,
    last_id: Option<u32>,
    now: Timestamp,
}

impl Harness {
    fn new(max_clients: u32) -> Self {
        Harness {
            // Frames in the clear: this models routing, not the secure channel.
            server: RelayServer::new(
                Limits {
                    max_clients,
                    ..Limits::default()
                },
                p2pchat_core::Security::insecure(),
            ),
            conns: Vec::new(),
            max_clients,
            last_id: None,
            now: Timestamp::ZERO,
        }
    }

    /// Delivers everything the server queued and carries out its closes.
    fn drain(&mut self) {
        for c in &mut self.conns {
            c.inbox.clear();
        }
        while let Some(t) = self.server.poll_transmit() {
            self.server.handle_written(t.conn, t.bytes.len());
            let c = self
                .conns
                .iter_mut()
                .find(|c| c.id == t.conn)
                .expect("transmit for a known conn");
            assert_ne!(c.model, Model::Gone, "bytes sent to a closed connection");
            c.decoder.push(&t.bytes);
            while let Some(f) = c
                .decoder
                .next_frame()
                .expect("the server sends valid frames")
            {
                c.inbox.push(f);
            }
        }
        while let Some(conn) = self.server.poll_close() {
            self.server.handle_closed(conn, self.now);
            if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
                c.model = Model::Gone;
            }
        }
        while self.server.poll_event().is_some() {}
    }

    fn live_ids(&self) -> BTreeMap<ClientId, usize> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.model {
                Model::Admitted(id) => Some((id, i)),
                _ => None,
            })
            .collect()
    }

    fn send(&mut self, i: usize, frame: &Frame) {
        let bytes = frame.to_bytes();
        self.server.handle_bytes(self.conns[i].id, &bytes, self.now);
        self.drain();
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.conns.len();
        match *op {
            Op::Connect => {
                let id = self.server.handle_connected(self.now);
                self.conns.push(Conn {
                    id,
                    model: Model::Fresh,
                    decoder: FrameDecoder::new(65_536),
                    exited: false,
                    next_seq: 1,
                    inbox: Vec::new(),
                });
                self.drain();
            }
            Op::Hello(i) if i < n && self.conns[i].model == Model::Fresh => {
                let online_before = self.live_ids().len();
                let mut bytes = MAGIC.to_vec();
                Frame::Hello(Hello {
                    min_version: 1,
                    max_version: PROTOCOL_VERSION,
                    capabilities: 0,
                    role: Role::RelayClient,
                    name: format!("c{i}"),
                    resuming: false,
                })
                .encode(&mut bytes);
                self.server.handle_bytes(self.conns[i].id, &bytes, self.now);
                self.drain();
                match self.conns[i].inbox.first() {
                    Some(Frame::Welcome(w)) => {
                        prop_assert!(online_before < self.max_clients as usize);
                        if let Some(last) = self.last_id {
                            prop_assert!(
                                w.client_id.0 > last,
                                "IDs increase: {} after {last}",
                                w.client_id.0
                            );
                        }
                        self.last_id = Some(w.client_id.0);
                        self.conns[i].model = Model::Admitted(w.client_id);
                    }
                    Some(Frame::Refused(r)) => {
                        prop_assert_eq!(r.code, ErrorCode::ServerFull);
                        prop_assert_eq!(online_before, self.max_clients as usize);
                        prop_assert_eq!(self.conns[i].model, Model::Gone);
                    }
                    other => prop_assert!(false, "unexpected answer to Hello: {other:?}"),
                }
            }
            Op::Disconnect(i) if i < n && self.conns[i].model != Model::Gone => {
                let left = match self.conns[i].model {
                    Model::Admitted(id) => Some(id),
                    _ => None,
                };
                self.conns[i].model = Model::Gone;
                self.server.handle_closed(self.conns[i].id, self.now);
                self.drain();
                if let Some(id) = left {
                    for (_, &j) in self.live_ids().iter() {
                        let told = self.conns[j]
                            .inbox
                            .iter()
                            .any(|f| matches!(f, Frame::Left { id: l, .. } if *l == id));
                        prop_assert!(told, "client {j} was not told that {id} left");
                    }
                }
            }
            Op::Chat { from, to, ref text } if from < n => {
                let Model::Admitted(sender) = self.conns[from].model else {
                    return Ok(());
                };
                let live = self.live_ids();
                let seq = self.conns[from].next_seq;
                self.conns[from].next_seq += 1;
                let exited = self.conns[from].exited;
                self.send(
                    from,
                    &Frame::Chat {
                        to: ClientId(to),
                        seq,
                        payload: Payload::text(text),
                    },
                );
                let deliveries: Vec<(usize, Frame)> = self
                    .conns
                    .iter()
                    .enumerate()
                    .flat_map(|(j, c)| {
                        c.inbox
                            .iter()
                            .filter(|f| matches!(f, Frame::Deliver { .. }))
                            .map(move |f| (j, f.clone()))
                    })
                    .collect();
                if exited {
                    prop_assert!(deliveries.is_empty());
                    prop_assert!(has_error(
                        &self.conns[from].inbox,
                        ErrorCode::SendAfterExit,
                        seq
                    ));
                } else if let Some(&j) = live.get(&ClientId(to)) {
                    let expected = Frame::Deliver {
                        from: sender,
                        to: ClientId(to),
                        seq,
                        payload: Payload::text(text),
                    };
                    prop_assert_eq!(
                        deliveries,
                        vec![(j, expected)],
                        "exactly one delivery, to its addressee"
                    );
                } else {
                    prop_assert!(deliveries.is_empty());
                    prop_assert!(has_error(
                        &self.conns[from].inbox,
                        ErrorCode::UnknownRecipient,
                        seq
                    ));
                    let named = self.conns[from].inbox.iter().any(|f| {
                        matches!(
                            f,
                            Frame::Error(ErrorReport { subject: Some(s), .. }) if s.0 == to
                        )
                    });
                    prop_assert!(named, "the error names the unknown ID");
                }
            }
            Op::Broadcast { from, ref text } if from < n => {
                let Model::Admitted(sender) = self.conns[from].model else {
                    return Ok(());
                };
                let live = self.live_ids();
                let seq = self.conns[from].next_seq;
                self.conns[from].next_seq += 1;
                let exited = self.conns[from].exited;
                self.send(
                    from,
                    &Frame::Chat {
                        to: ClientId::BROADCAST,
                        seq,
                        payload: Payload::text(text),
                    },
                );
                for (&id, &j) in &live {
                    let got = self.conns[j]
                        .inbox
                        .iter()
                        .filter(|f| matches!(f, Frame::Deliver { .. }))
                        .count();
                    let expected = usize::from(!exited && id != sender);
                    prop_assert_eq!(got, expected, "broadcast deliveries to {}", id);
                }
                if exited {
                    prop_assert!(has_error(
                        &self.conns[from].inbox,
                        ErrorCode::SendAfterExit,
                        seq
                    ));
                } else if live.len() == 1 {
                    prop_assert!(has_error(
                        &self.conns[from].inbox,
                        ErrorCode::NoRecipients,
                        seq
                    ));
                }
            }
            Op::Exit(i) if i < n => {
                if let Model::Admitted(_) = self.conns[i].model {
                    self.conns[i].exited = true;
                    self.send(i, &Frame::Exit);
                }
            }
            _ => {}
        }
        prop_assert!(self.server.online() <= self.max_clients as usize);
        prop_assert_eq!(self.server.online(), self.live_ids().len());
        Ok(())
    }
}

fn has_error(inbox: &[Frame], code: ErrorCode, seq: u64) -> bool {
    inbox
        .iter()
        .any(|f| matches!(f, Frame::Error(e) if e.code == code && e.seq == seq))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
    fn relay_keeps_its_invariants(max_clients in 1u32..5, ops in proptest::collection::vec(arb_op(), 0..80)) {
        let mut h = Harness::new(max_clients);
        for op in &ops {
            h.step(op)?;
        }
    }
}
