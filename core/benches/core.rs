//! Micro-benchmarks of the core alone, no I/O: the ceiling of the whole design.
//! `cargo bench -p p2pchat-core` (figures in BENCHMARKS.md).

use divan::counter::ItemsCount;
use p2pchat_core::{
    ClientId, Frame, FrameDecoder, Hello, Limits, MAGIC, PROTOCOL_VERSION, Payload, RelayServer,
    Role, Timestamp,
};

fn main() {
    divan::main();
}

const BATCH: usize = 10_000;

fn chat_stream(to: u32, first_seq: u64, n: usize) -> Vec<u8> {
    let text = "x".repeat(64);
    let mut out = Vec::new();
    for i in 0..n {
        Frame::Chat {
            to: ClientId(to),
            seq: first_seq + i as u64,
            payload: Payload::text(&text),
        }
        .encode(&mut out);
    }
    out
}

/// Frames decoded per second from one large buffer.
#[divan::bench]
fn decode_frames(bencher: divan::Bencher) {
    let mut bytes = MAGIC.to_vec();
    bytes.extend(chat_stream(1, 1, BATCH));
    bencher.counter(ItemsCount::new(BATCH)).bench(|| {
        let mut d = FrameDecoder::new(65_536);
        d.push(divan::black_box(&bytes));
        let mut n = 0;
        while let Ok(Some(_)) = d.next_frame() {
            n += 1;
        }
        assert_eq!(n, BATCH);
    });
}

/// A relay client's opening bytes, offering `capabilities`.
fn hello(capabilities: u64) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    Frame::Hello(Hello {
        min_version: 1,
        max_version: PROTOCOL_VERSION,
        capabilities,
        role: Role::RelayClient,
        name: String::new(),
        resuming: false,
    })
    .encode(&mut b);
    b
}

/// A relay in the clear with `clients` admitted, each having offered
/// `capabilities` (their Welcome and roster not yet drained).
fn relay_with(clients: u32, capabilities: u64) -> (RelayServer, Vec<p2pchat_core::ConnId>) {
    let limits = Limits {
        max_clients: clients,
        max_outbound_bytes: usize::MAX / 2,
        ..Limits::default()
    };
    let mut server = RelayServer::new(limits, p2pchat_core::Security::insecure());
    let t = Timestamp::ZERO;
    let hello = hello(capabilities);
    let conns = (0..clients)
        .map(|_| {
            let c = server.handle_connected(t);
            server.handle_bytes(c, &hello, t);
            c
        })
        .collect();
    (server, conns)
}

/// Messages routed per second by a `RelayServer` with `clients` connected, each
/// batch a buffer of chats from one client to the next (ring), outputs drained.
#[divan::bench(args = [2, 100, 1000])]
fn route_messages(bencher: divan::Bencher, clients: u32) {
    let (mut server, conns) = relay_with(clients, 0);
    let t = Timestamp::ZERO;
    while let Some(x) = server.poll_transmit() {
        server.handle_written(x.conn, x.bytes.len());
    }
    let per_client = BATCH / clients as usize;
    let seq = std::cell::Cell::new(1u64);
    bencher
        .counter(ItemsCount::new(per_client * clients as usize))
        .with_inputs(|| {
            // The clients' bytes are made outside the timed part.
            let first = seq.get();
            seq.set(first + per_client as u64);
            (0..clients)
                .map(|i| chat_stream((i + 1) % clients, first, per_client))
                .collect::<Vec<_>>()
        })
        .bench_local_values(|streams| {
            for (&c, bytes) in conns.iter().zip(&streams) {
                server.handle_bytes(c, bytes, t);
            }
            while let Some(x) = server.poll_transmit() {
                server.handle_written(x.conn, x.bytes.len());
            }
        });
}

/// Lines routed per second by a `RelayServer` with `clients` plain-text clients
/// (`nc`): each batch a buffer of `TO TEXT` lines from one client to the next (ring),
/// outputs drained. The text path's ceiling, beside `route_messages`.
#[divan::bench(args = [2, 100, 1000])]
fn route_text_lines(bencher: divan::Bencher, clients: u32) {
    let limits = Limits {
        max_clients: clients,
        max_outbound_bytes: usize::MAX / 2,
        message_rate: 0,
        max_connections_per_address: 0,
        ..Limits::default()
    };
    let mut server = RelayServer::new(limits, p2pchat_core::Security::insecure());
    let t = Timestamp::ZERO;
    let conns: Vec<_> = (0..clients)
        .map(|_| {
            let c = server.handle_connected(t);
            server.handle_bytes(c, b"\n", t);
            c
        })
        .collect();
    while let Some(x) = server.poll_transmit() {
        server.handle_written(x.conn, x.bytes.len());
    }
    let per_client = BATCH / clients as usize;
    let text = "x".repeat(64);
    let streams: Vec<Vec<u8>> = (0..clients)
        .map(|i| {
            let to = (i + 1) % clients;
            (0..per_client)
                .flat_map(|_| format!("{to} {text}\n").into_bytes())
                .collect()
        })
        .collect();
    bencher
        .counter(ItemsCount::new(per_client * clients as usize))
        .bench_local(|| {
            for (&c, bytes) in conns.iter().zip(&streams) {
                server.handle_bytes(c, bytes, t);
            }
            while let Some(x) = server.poll_transmit() {
                server.handle_written(x.conn, x.bytes.len());
            }
        });
}

/// As `route_messages`, with the session layer on, as `p2pchat join` clients use
/// it: the relay keeps what it sends until acknowledged, counts receipts, and every
/// client acknowledges what it read (an `Ack` ahead of its next batch).
#[divan::bench(args = [2, 100, 1000])]
fn route_messages_acknowledged(bencher: divan::Bencher, clients: u32) {
    use std::cell::RefCell;
    let (mut server, conns) = relay_with(clients, p2pchat_core::CAP_RESUME);
    let t = Timestamp::ZERO;
    // What the relay wrote to each client, read as that client would.
    let index: std::collections::HashMap<_, _> =
        conns.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let decoders = RefCell::new(
        (0..clients)
            .map(|_| (FrameDecoder::new(u32::MAX), 0u64))
            .collect::<Vec<_>>(),
    );
    // What each transmit held, kept as it was handed over (no copy in the timed
    // part: `route_messages` drops them, a driver writes them) and read later.
    let written = RefCell::new(vec![Vec::<Vec<u8>>::new(); clients as usize]);
    let drain = |server: &mut RelayServer| {
        let mut written = written.borrow_mut();
        while let Some(x) = server.poll_transmit() {
            server.handle_written(x.conn, x.bytes.len());
            if let Some(&i) = index.get(&x.conn) {
                written[i].push(x.bytes);
            }
        }
    };
    drain(&mut server);
    let per_client = BATCH / clients as usize;
    let seq = std::cell::Cell::new(1u64);
    let server = RefCell::new(server);
    bencher
        .counter(ItemsCount::new(per_client * clients as usize))
        .with_inputs(|| {
            // Outside the timed part: read what the relay wrote, then each client's
            // bytes: its acknowledgement and its batch.
            let first = seq.get();
            seq.set(first + per_client as u64);
            let mut decoders = decoders.borrow_mut();
            let mut written = written.borrow_mut();
            (0..clients as usize)
                .map(|i| {
                    let (d, received) = &mut decoders[i];
                    for bytes in written[i].drain(..) {
                        d.push(&bytes);
                    }
                    while let Ok(Some(raw)) = d.next_raw() {
                        *received += raw.session_bytes();
                    }
                    let mut bytes = Frame::Ack {
                        received: *received,
                    }
                    .to_bytes();
                    bytes.extend(chat_stream((i as u32 + 1) % clients, first, per_client));
                    bytes
                })
                .collect::<Vec<_>>()
        })
        .bench_local_values(|streams| {
            let mut server = server.borrow_mut();
            for (&c, bytes) in conns.iter().zip(&streams) {
                server.handle_bytes(c, bytes, t);
            }
            drain(&mut server);
        });
}

/// Two relay clients and a relay, all in memory: `ann` writes to `bob` through the
/// relay, as `p2pchat join` would (`secure`: the secure channel and end-to-end
/// sealing, as people run it; else everything in the clear).
struct Pipeline {
    server: RelayServer,
    clients: Vec<(p2pchat_core::ConnId, p2pchat_core::RelayClient)>,
}

impl Pipeline {
    fn new(secure: bool) -> Pipeline {
        let t = Timestamp::ZERO;
        let security = |n: u8| {
            if secure {
                p2pchat_core::Security::encrypted(
                    p2pchat_core::Identity::from_secret([n; 32]),
                    [n ^ 0x55; 32],
                )
            } else {
                p2pchat_core::Security::insecure()
            }
        };
        let limits = Limits {
            max_outbound_bytes: usize::MAX / 4,
            ..Limits::default()
        };
        let server = RelayServer::new(limits.clone(), security(0xA0));
        let mut p = Pipeline {
            server,
            clients: Vec::new(),
        };
        for n in 1..=2 {
            let conn = p.server.handle_connected(t);
            let client = p2pchat_core::RelayClient::new("", limits.clone(), security(n), t)
                .expect("a valid name");
            p.clients.push((conn, client));
            p.pump();
        }
        p
    }

    /// Moves bytes until nothing moves; returns the messages delivered.
    fn pump(&mut self) -> usize {
        let t = Timestamp::ZERO;
        let mut delivered = 0;
        loop {
            let mut moved = false;
            for (conn, c) in &mut self.clients {
                while let Some(b) = c.poll_transmit() {
                    moved = true;
                    c.handle_written(b.len());
                    self.server.handle_bytes(*conn, &b, t);
                }
            }
            while let Some(x) = self.server.poll_transmit() {
                moved = true;
                self.server.handle_written(x.conn, x.bytes.len());
                if let Some((_, c)) = self.clients.iter_mut().find(|(k, _)| *k == x.conn) {
                    c.handle_bytes(&x.bytes, t);
                }
            }
            for (_, c) in &mut self.clients {
                while let Some(e) = c.poll_event() {
                    if matches!(e, p2pchat_core::ClientEvent::Message { .. }) {
                        delivered += 1;
                    }
                }
            }
            if !moved {
                return delivered;
            }
        }
    }
}

/// Messages of 64 bytes per second from one client to another through a relay, the
/// three machines in one thread, no I/O: what encryption costs per message, end to
/// end (secure = channel records on both hops and end-to-end sealing).
#[divan::bench(args = [false, true])]
fn client_to_client(bencher: divan::Bencher, secure: bool) {
    const N: usize = 1_000;
    let mut p = Pipeline::new(secure);
    let text = "x".repeat(64);
    bencher.counter(ItemsCount::new(N)).bench_local(|| {
        for _ in 0..N {
            p.clients[0]
                .1
                .send_chat(ClientId(1), &text, Timestamp::ZERO)
                .expect("room in the queue");
        }
        assert_eq!(p.pump(), N);
    });
}

/// One encrypted client admitted by a relay and gone again, both machines in one
/// thread: the handshake's cost (three X25519 on each side, hashing, the records of
/// the Welcome), which a relay pays again for every client that connects.
#[divan::bench]
fn admit_encrypted_client(bencher: divan::Bencher) {
    let mut p = Pipeline::new(true);
    let mut n: u8 = 3;
    bencher.bench_local(|| {
        let t = Timestamp::ZERO;
        n = n.wrapping_add(1).max(3);
        let conn = p.server.handle_connected(t);
        let security = p2pchat_core::Security::encrypted(
            p2pchat_core::Identity::from_secret([n; 32]),
            [n ^ 0x55; 32],
        );
        let client = p2pchat_core::RelayClient::new("", Limits::default(), security, t)
            .expect("a valid name");
        p.clients.push((conn, client));
        p.pump();
        let (conn, client) = p.clients.pop().expect("the client just pushed");
        assert!(client.id().is_some(), "admitted");
        p.server.handle_closed(conn, t);
        while p.server.poll_transmit().is_some() {}
    });
}
