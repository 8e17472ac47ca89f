//! Helpers the loopback tests share: parties with keys of their own, a relay on a
//! free port, a client that joins, and waiting for an event with a deadline.

#![allow(dead_code)] // each test file uses its own share of these

use std::net::SocketAddr;
use std::time::Duration;

use async_channel::Receiver;
use p2pchat_core::{ClientEvent, Identity, Limits, Security};
use p2pchat_tcp::{ClientSession, Relay, RelayLog, SessionEvent, ShutdownHandle};

/// An encrypted party with a key of its own (`n` picks it).
pub fn security(n: u8) -> Security {
    Security::encrypted(Identity::from_secret([n; 32]), [n ^ 0x33; 32])
}

/// How long any one expected event may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// Waits for an event matching `pred`, failing after [`WAIT`].
pub async fn expect<E: std::fmt::Debug>(
    events: &Receiver<SessionEvent<E>>,
    what: &str,
    pred: impl Fn(&E) -> bool,
) -> E {
    let deadline = smol::Timer::after(WAIT);
    let found = smol::future::or(
        async {
            while let Ok(event) = events.recv().await {
                if let SessionEvent::Core(e) = event
                    && pred(&e)
                {
                    return Some(e);
                }
            }
            None
        },
        async {
            deadline.await;
            None
        },
    )
    .await;
    found.unwrap_or_else(|| panic!("no event {what} within {WAIT:?}"))
}

/// A relay on a free loopback port with these limits; its address, the handle that
/// stops it, and its log.
pub async fn start_relay_with(limits: Limits) -> (SocketAddr, ShutdownHandle, Receiver<RelayLog>) {
    let relay = Relay::bind("127.0.0.1:0".parse().unwrap(), limits, security(200))
        .await
        .unwrap();
    let addr = relay.local_addr().unwrap();
    let (handle, signal) = ShutdownHandle::new();
    let (log_tx, log_rx) = async_channel::unbounded();
    relay.spawn(log_tx, signal);
    (addr, handle, log_rx)
}

/// The relay's next log entry, waiting for it until `give_up` (the relay logs some
/// things after closing a socket: a test that reads the log right after a socket
/// ended must wait, not `try_recv`).
pub async fn next_logged(
    log: &Receiver<RelayLog>,
    give_up: std::time::Instant,
) -> Option<RelayLog> {
    smol::future::or(async { log.recv().await.ok() }, async {
        smol::Timer::at(give_up).await;
        None
    })
    .await
}

/// A relay admitting `max_clients`, with a per-connection bound.
pub async fn start_relay(
    max_clients: u32,
    max_outbound_bytes: usize,
) -> (SocketAddr, ShutdownHandle, Receiver<RelayLog>) {
    start_relay_with(Limits {
        max_clients,
        max_outbound_bytes,
        ..Limits::default()
    })
    .await
}

/// A client that joins the relay at `addr` and is admitted as `id`.
pub async fn join(addr: SocketAddr, name: &str, id: u32) -> ClientSession {
    let stream = p2pchat_tcp::connect(&addr.to_string(), 0, "relay")
        .await
        .unwrap();
    let session =
        p2pchat_tcp::start_client(stream, name, Limits::default(), security(id as u8 + 1)).unwrap();
    expect(
        &session.events,
        "welcome",
        |e| matches!(e, ClientEvent::Welcomed { id: i, .. } if i.0 == id),
    )
    .await;
    session
}

/// Whether an event is the message `text` from client `from`.
pub fn is_message(from: u32, text: &str) -> impl Fn(&ClientEvent) -> bool + '_ {
    move |e| matches!(e, ClientEvent::Message { from: f, text: t, .. } if f.0 == from && t == text)
}
