//! Keeps the bench code path from rotting: 2 clients, 100 messages, against a relay
//! started in-process on 127.0.0.1. Asserts counts, never times.

use std::time::Duration;

use p2pchat_bench::{ClientKind, LoadConfig, Pattern};
use p2pchat_core::{Encryption, Identity, Limits, Security};
use p2pchat_tcp::{Relay, ShutdownHandle};

#[test]
fn two_clients_exchange_a_hundred_messages() {
    // A relay that admits encrypted clients and, as with --insecure, the others.
    let security = Security {
        encryption: Encryption::Optional,
        ..Security::encrypted(Identity::from_secret([7; 32]), [8; 32])
    };
    let relay = smol::block_on(Relay::bind(
        "127.0.0.1:0".parse().unwrap(),
        Limits::default(),
        security,
    ))
    .unwrap();
    let addr = relay.local_addr().unwrap();
    let (handle, signal) = ShutdownHandle::new();
    let (log_tx, _log_rx) = async_channel::unbounded();
    let server = relay.spawn(log_tx, signal);
    for (pattern, plain_text, kind) in [
        (Pattern::Ring, false, ClientKind::Encrypted),
        (Pattern::Random, false, ClientKind::Encrypted),
        (Pattern::Broadcast, false, ClientKind::Encrypted),
        (Pattern::Ring, false, ClientKind::Insecure),
        (Pattern::Ring, false, ClientKind::RawFrames),
        (Pattern::Broadcast, false, ClientKind::RawFrames),
        (Pattern::Ring, true, ClientKind::RawFrames),
        (Pattern::Broadcast, true, ClientKind::RawFrames),
        (Pattern::Ring, false, ClientKind::SealedFrames),
        (Pattern::Broadcast, false, ClientKind::SealedFrames),
    ] {
        let config = LoadConfig {
            clients: 2,
            messages: 100,
            pattern,
            rate: None,
            burst: 1,
            size: 32,
            window: 16,
            max_duration: Duration::from_secs(30),
            plain_text,
            broker: false,
            kind,
        };
        let report =
            p2pchat_bench::run(&p2pchat_bench::Target::Existing(vec![addr]), &config).unwrap();
        assert_eq!(
            report.load.delivered,
            100,
            "{pattern:?} {kind:?}: {}",
            report.summary()
        );
        assert_eq!(report.load.sent, 100);
        assert_eq!(report.load.errors, 0);
        assert!(report.load.latency.max > 0);
    }
    handle.shutdown();
    server.join().unwrap();
}
