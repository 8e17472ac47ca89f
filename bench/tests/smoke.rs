//! Keeps the bench code path from rotting: 2 clients, 100 messages, against a relay
//! started in-process on 127.0.0.1. Asserts counts, never times.

use std::time::Duration;

use p2pchat_bench::{LoadConfig, Pattern};
use p2pchat_core::Limits;
use p2pchat_tcp::{Relay, ShutdownHandle};

#[test]
fn two_clients_exchange_a_hundred_messages() {
    let relay = smol::block_on(Relay::bind(
        "127.0.0.1:0".parse().unwrap(),
        Limits::default(),
    ))
    .unwrap();
    let addr = relay.local_addr().unwrap();
    let (handle, signal) = ShutdownHandle::new();
    let (log_tx, _log_rx) = async_channel::unbounded();
    let server = relay.spawn(log_tx, signal);
    for (pattern, plain_text) in [
        (Pattern::Ring, false),
        (Pattern::Random, false),
        (Pattern::Broadcast, false),
        (Pattern::Ring, true),
        (Pattern::Broadcast, true),
    ] {
        let config = LoadConfig {
            clients: 2,
            messages: 100,
            pattern,
            rate: None,
            size: 32,
            window: 16,
            max_duration: Duration::from_secs(30),
            plain_text,
            broker: false,
        };
        let report = p2pchat_bench::run(&p2pchat_bench::Target::Existing(addr), &config).unwrap();
        assert_eq!(
            report.load.delivered,
            100,
            "{pattern:?}: {}",
            report.summary()
        );
        assert_eq!(report.load.sent, 100);
        assert_eq!(report.load.errors, 0);
        assert!(report.load.latency.max > 0);
    }
    handle.shutdown();
    server.join().unwrap();
}
