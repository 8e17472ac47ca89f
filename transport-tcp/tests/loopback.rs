//! The TCP driver used as a library (as another frontend would), over 127.0.0.1 with
//! ports chosen by the OS.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;

use p2pchat_core::{ClientEvent, ClientId, ErrorCode, Limits, PeerEvent, PeerSide, ServerEvent};
use p2pchat_tcp::{ClientCommand, PeerCommand, PeerSession, Relay, ShutdownHandle};
use support::{WAIT, expect, is_message, join, security, start_relay};

/// A real client driven by hand over a blocking socket until the relay welcomed it;
/// the socket (and the client, to read what arrives later) is returned, and nobody
/// reads it meanwhile (a reader that stalls).
fn welcomed_then_deaf(
    addr: SocketAddr,
    name: &str,
) -> (std::net::TcpStream, p2pchat_core::RelayClient) {
    let now = p2pchat_core::Timestamp::ZERO;
    let mut client =
        p2pchat_core::RelayClient::new(name, Limits::default(), security(99), now).unwrap();
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(bytes) = client.poll_transmit() {
            socket.write_all(&bytes).unwrap();
            client.handle_written(bytes.len());
        }
        if std::iter::from_fn(|| client.poll_event())
            .any(|e| matches!(e, ClientEvent::Welcomed { .. }))
        {
            return (socket, client);
        }
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "the relay closed before welcoming {name}");
        client.handle_bytes(&buf[..n], now);
    }
}

#[test]
fn three_clients_a_refused_fourth_and_an_unknown_id() {
    smol::block_on(async {
        let (addr, shutdown, log) = start_relay(3, 512 * 1024).await;
        let c0 = join(addr, "ann", 0).await;
        let c1 = join(addr, "bob", 1).await;
        let c2 = join(addr, "cy", 2).await;
        c0.commands
            .send(ClientCommand::Send {
                to: ClientId(1),
                text: "hello".into(),
            })
            .await
            .unwrap();
        expect(&c1.events, "0 hello", is_message(0, "hello")).await;
        c2.commands
            .send(ClientCommand::Broadcast("to all".into()))
            .await
            .unwrap();
        expect(&c0.events, "2 to all", is_message(2, "to all")).await;
        expect(&c1.events, "2 to all", is_message(2, "to all")).await;

        let stream = p2pchat_tcp::connect(&addr.to_string(), 0, "relay")
            .await
            .unwrap();
        let fourth =
            p2pchat_tcp::start_client(stream, "dee", Limits::default(), security(50)).unwrap();
        let refused = expect(&fourth.events, "refusal", |e| {
            matches!(e, ClientEvent::Refused(_))
        })
        .await;
        let ClientEvent::Refused(r) = refused else {
            unreachable!()
        };
        assert_eq!((r.code, r.online, r.limit), (ErrorCode::ServerFull, 3, 3));

        c0.commands
            .send(ClientCommand::Send {
                to: ClientId(9),
                text: "?".into(),
            })
            .await
            .unwrap();
        let e = expect(&c0.events, "unknown recipient", |e| {
            matches!(e, ClientEvent::Error(_))
        })
        .await;
        let ClientEvent::Error(report) = e else {
            unreachable!()
        };
        assert_eq!(
            (report.code, report.subject),
            (ErrorCode::UnknownRecipient, Some(ClientId(9)))
        );

        shutdown.shutdown();
        expect(&c1.events, "shutdown", |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    code: ErrorCode::ServerShutdown,
                    ..
                }
            )
        })
        .await;
        let mut admitted = 0;
        while let Ok(line) = log.recv().await {
            admitted += usize::from(matches!(line.event, ServerEvent::Admitted { .. }));
            assert!(
                line.peer.is_some_and(|p| p.ip().is_loopback())
                    || matches!(line.event, ServerEvent::Exited { .. })
            );
        }
        assert_eq!(admitted, 3);
    });
}

#[test]
fn a_reader_that_stalls_is_cut_off_while_others_keep_chatting() {
    smol::block_on(async {
        let (addr, _shutdown, log) = start_relay(8, 64 * 1024).await;
        let sender = join(addr, "flood", 0).await;
        let fast = join(addr, "fast", 1).await;
        // A client that completes the handshake and then never reads.
        let (mut stalled, mut stalled_client) = welcomed_then_deaf(addr, "stall");
        expect(&sender.events, "stall joined", |e| {
            matches!(
                e,
                ClientEvent::Joined {
                    id: ClientId(2),
                    ..
                }
            )
        })
        .await;

        let text = "x".repeat(8 * 1024);
        let mut cut_off = false;
        for i in 0..4_000 {
            sender
                .commands
                .send(ClientCommand::Send {
                    to: ClientId(2),
                    text: text.clone(),
                })
                .await
                .unwrap();
            if i % 100 == 0 {
                sender
                    .commands
                    .send(ClientCommand::Send {
                        to: ClientId(1),
                        text: format!("ping {i}"),
                    })
                    .await
                    .unwrap();
                expect(
                    &fast.events,
                    "ping",
                    |e| matches!(e, ClientEvent::Message { text, .. } if text.starts_with("ping")),
                )
                .await;
            }
            while let Ok(line) = log.try_recv() {
                if matches!(
                    line.event,
                    ServerEvent::Left {
                        id: ClientId(2),
                        code: ErrorCode::SlowConsumer,
                        ..
                    }
                ) {
                    cut_off = true;
                }
            }
            if cut_off {
                break;
            }
        }
        assert!(cut_off, "the stalled reader was never cut off");
        // The stalled client, when it finally reads, finds the reason at the end.
        stalled.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let _ = stalled.read_to_end(&mut got);
        stalled_client.handle_bytes(&got, p2pchat_core::Timestamp::ZERO);
        let reason = std::iter::from_fn(|| stalled_client.poll_event()).find_map(|e| match e {
            ClientEvent::Disconnected { code, reason } => Some((code, reason)),
            _ => None,
        });
        assert!(
            matches!(&reason, Some((ErrorCode::SlowConsumer, r)) if r.contains("not reading fast enough")),
            "{reason:?}"
        );
        sender
            .commands
            .send(ClientCommand::Send {
                to: ClientId(1),
                text: "after".into(),
            })
            .await
            .unwrap();
        expect(&fast.events, "after", is_message(0, "after")).await;
    });
}

async fn peer_pair() -> (PeerSession, PeerSession) {
    let listener = p2pchat_tcp::listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = smol::spawn(async move { listener.accept().await.unwrap().0 });
    let dialled = p2pchat_tcp::connect(&addr.to_string(), 0, "listener")
        .await
        .unwrap();
    let accepted = accept.await;
    let a = p2pchat_tcp::start_peer(
        accepted,
        PeerSide::Acceptor,
        "lis",
        Limits::default(),
        security(60),
    )
    .unwrap();
    let c = p2pchat_tcp::start_peer(
        dialled,
        PeerSide::Connector,
        "con",
        Limits::default(),
        security(61),
    )
    .unwrap();
    (a, c)
}

#[test]
fn direct_chat_with_exit_in_both_orders() {
    smol::block_on(async {
        for acceptor_first in [true, false] {
            let (a, c) = peer_pair().await;
            a.commands
                .send(PeerCommand::Send("hi con".into()))
                .await
                .unwrap();
            c.commands
                .send(PeerCommand::Send("hi lis".into()))
                .await
                .unwrap();
            expect(
                &c.events,
                "hi con",
                |e| matches!(e, PeerEvent::Message { text, .. } if text == "hi con"),
            )
            .await;
            expect(
                &a.events,
                "hi lis",
                |e| matches!(e, PeerEvent::Message { text, .. } if text == "hi lis"),
            )
            .await;
            let (first, second) = if acceptor_first { (&a, &c) } else { (&c, &a) };
            first.commands.send(PeerCommand::Exit).await.unwrap();
            expect(&second.events, "peer exited", |e| {
                *e == PeerEvent::PeerExited
            })
            .await;
            second
                .commands
                .send(PeerCommand::Send("still heard".into()))
                .await
                .unwrap();
            expect(
                &first.events,
                "still heard",
                |e| matches!(e, PeerEvent::Message { text, .. } if text == "still heard"),
            )
            .await;
            second.commands.send(PeerCommand::Exit).await.unwrap();
            for s in [&a, &c] {
                expect(&s.events, "finished", |e| *e == PeerEvent::Finished).await;
                // The session ends: its event channel closes.
                while s.events.recv().await.is_ok() {}
            }
        }
    });
}

#[test]
fn ipv6_loopback_works_where_available() {
    smol::block_on(async {
        let Ok(relay) =
            Relay::bind("[::1]:0".parse().unwrap(), Limits::default(), security(201)).await
        else {
            eprintln!("no IPv6 loopback on this machine; skipped");
            return;
        };
        let addr = relay.local_addr().unwrap();
        let (_handle, signal) = ShutdownHandle::new();
        let (log_tx, _log_rx) = async_channel::unbounded();
        relay.spawn(log_tx, signal);
        let a = join(addr, "a", 0).await;
        let b = join(addr, "b", 1).await;
        a.commands
            .send(ClientCommand::Send {
                to: ClientId(1),
                text: "over v6".into(),
            })
            .await
            .unwrap();
        expect(&b.events, "over v6", is_message(0, "over v6")).await;
    });
}
