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

fn hello() -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    Frame::Hello(Hello {
        min_version: 1,
        max_version: PROTOCOL_VERSION,
        capabilities: 0,
        role: Role::RelayClient,
        name: String::new(),
    })
    .encode(&mut b);
    b
}

/// Messages routed per second by a `RelayServer` with `clients` connected, each
/// batch a buffer of chats from one client to the next (ring), outputs drained.
#[divan::bench(args = [2, 100, 1000])]
fn route_messages(bencher: divan::Bencher, clients: u32) {
    let limits = Limits {
        max_clients: clients,
        max_outbound_bytes: usize::MAX / 2,
        ..Limits::default()
    };
    let mut server = RelayServer::new(limits, p2pchat_core::Security::insecure());
    let t = Timestamp::ZERO;
    let conns: Vec<_> = (0..clients)
        .map(|_| {
            let c = server.handle_connected(t);
            server.handle_bytes(c, &hello(), t);
            c
        })
        .collect();
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
