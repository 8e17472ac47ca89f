//! Hostile and careless clients over 127.0.0.1, against the real relay driver:
//! connections that never say anything, and a client that floods. Each test also
//! shows that well-behaved clients next to them keep chatting. Bounded in count and
//! time; nothing here asserts a duration.

mod support;

use std::io::Read;
use std::net::TcpStream;

use p2pchat_core::{ClientEvent, ClientId, ErrorCode, Limits, ServerEvent};
use p2pchat_tcp::ClientCommand;
use support::{WAIT, expect, is_message, join, next_logged, start_relay_with};

/// Ten clients in a ring, each sending `text` to the next, and each reading it.
async fn ring_chat(clients: &[p2pchat_tcp::ClientSession], text: &str) {
    let n = clients.len() as u32;
    for (i, c) in clients.iter().enumerate() {
        let to = ClientId((i as u32 + 1) % n);
        c.commands
            .send(ClientCommand::Send {
                to,
                text: format!("{text} from {i}"),
            })
            .await
            .unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        let from = (i as u32 + n - 1) % n;
        let text = format!("{text} from {from}");
        expect(&c.events, &text, is_message(from, &text)).await;
    }
}

#[test]
fn a_thousand_silent_connections_are_closed_by_the_handshake_deadline_while_ten_clients_chat() {
    // 1,000 sockets here and 1,000 in the relay, in one process.
    rlimit::increase_nofile_limit(8192).unwrap();
    smol::block_on(async {
        let (addr, _shutdown, log) = start_relay_with(Limits {
            max_clients: 16,
            handshake_timeout: std::time::Duration::from_secs(2),
            max_pending_handshakes: 2000,
            max_connections_per_address: 0,
            ..Limits::default()
        })
        .await;
        let mut clients = Vec::new();
        for i in 0..10 {
            clients.push(join(addr, &format!("c{i}"), i).await);
        }
        let silent: Vec<TcpStream> = (0..1000)
            .map(|_| TcpStream::connect(addr).expect("a loopback connection"))
            .collect();
        ring_chat(&clients, "while they wait").await;

        // Each silent connection is greeted in plain text (it might be a person on
        // nc), then closed at the deadline: read each to its end.
        let mut closed = 0;
        for mut s in silent {
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut seen = Vec::new();
            match s.read_to_end(&mut seen) {
                Ok(_) => closed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                Err(e) => panic!("connection {closed} not closed: {e}"),
            }
        }
        assert_eq!(closed, 1000);
        // The relay logs a drop after closing its socket, so the last entries may
        // still be on their way when the last socket has ended: wait for them (a
        // `try_recv` loop here once counted 917 of 1,000).
        let mut timed_out = 0;
        let give_up = std::time::Instant::now() + WAIT;
        while timed_out < 1000 {
            let Some(line) = next_logged(&log, give_up).await else {
                break;
            };
            if let ServerEvent::Dropped {
                code: ErrorCode::HandshakeTimeout,
                ..
            } = line.event
            {
                timed_out += 1;
            }
        }
        assert_eq!(timed_out, 1000, "each closed for its deadline");
        ring_chat(&clients, "after they are gone").await;
    });
}

#[test]
fn a_flooding_client_is_slowed_and_told_while_others_are_not_and_nothing_is_lost() {
    smol::block_on(async {
        let (addr, _shutdown, _log) = start_relay_with(Limits {
            max_clients: 8,
            message_rate: 2_000,
            message_burst: 200,
            ..Limits::default()
        })
        .await;
        let flood = join(addr, "flood", 0).await;
        let sink = join(addr, "sink", 1).await;
        let ann = join(addr, "ann", 2).await;
        let bob = join(addr, "bob", 3).await;
        const N: usize = 4_000;
        let flooding = async {
            for i in 0..N {
                flood
                    .commands
                    .send(ClientCommand::Send {
                        to: ClientId(1),
                        text: format!("flood {i}"),
                    })
                    .await
                    .unwrap();
            }
        };
        let chatting = async {
            for i in 0..20 {
                let text = format!("calm {i}");
                ann.commands
                    .send(ClientCommand::Send {
                        to: ClientId(3),
                        text: text.clone(),
                    })
                    .await
                    .unwrap();
                expect(&bob.events, &text, is_message(2, &text)).await;
            }
        };
        smol::future::zip(flooding, chatting).await;
        let notice = expect(
            &flood.events,
            "rate-limited notice",
            |e| matches!(e, ClientEvent::Error(r) if r.code == ErrorCode::RateLimited),
        )
        .await;
        assert!(format!("{notice:?}").contains("2000 messages a second"));
        // Every flooded message arrives, once, in order.
        for i in 0..N {
            let text = format!("flood {i}");
            let got = expect(&sink.events, &text, |e| {
                matches!(
                    e,
                    ClientEvent::Message {
                        from: ClientId(0),
                        ..
                    }
                )
            })
            .await;
            assert!(matches!(got, ClientEvent::Message { text: t, .. } if t == text));
        }
        // The calm clients were never told they are limited.
        for c in [&ann, &bob] {
            while let Ok(e) = c.events.try_recv() {
                assert!(!format!("{e:?}").contains("RateLimited"), "{e:?}");
            }
        }
    });
}

#[test]
fn a_connection_sending_random_bytes_is_told_why_and_cut_off_while_two_clients_chat() {
    smol::block_on(async {
        let (addr, _shutdown, log) = start_relay_with(Limits {
            max_clients: 8,
            ..Limits::default()
        })
        .await;
        let clients = [join(addr, "ann", 0).await, join(addr, "bob", 1).await];
        ring_chat(&clients, "before").await;

        // 64 KiB of noise (its first byte not the magic's, so it is taken for a
        // plain-text client, the case that used to be answered forever).
        let mut noise = vec![0u8; 64 * 1024];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        noise[0] = b'~';
        let mut garbage = TcpStream::connect(addr).expect("a loopback connection");
        garbage.set_read_timeout(Some(WAIT)).unwrap();
        let writer = {
            let mut w = garbage.try_clone().unwrap();
            std::thread::spawn(move || {
                // The relay may close before taking it all; that is fine.
                let _ = std::io::Write::write_all(&mut w, &noise);
            })
        };
        let mut told = Vec::new();
        garbage
            .read_to_end(&mut told)
            .expect("the relay closes the connection (no timeout)");
        writer.join().unwrap();
        let told = String::from_utf8_lossy(&told);
        let last = told.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(
                "* disconnected: more than 20 lines or messages in 10 s could not be used"
            ),
            "last line {last:?} of {told:?}"
        );
        assert!(
            told.lines().count() <= 23,
            "the welcome, the roster, at most 20 answers and the reason: {told:?}"
        );

        // The relay's log names it; the others never noticed anything but its
        // arrival and departure.
        // (Logged after the close, so waited for: a `try_recv` here once found
        // nothing yet.)
        let mut logged = false;
        let give_up = std::time::Instant::now() + WAIT;
        while !logged && let Some(line) = next_logged(&log, give_up).await {
            logged = matches!(
                line.event,
                ServerEvent::Left {
                    code: ErrorCode::TooManyErrors,
                    ..
                }
            );
        }
        assert!(logged, "the relay logged the cut-off");
        ring_chat(&clients, "after").await;
    });
}
