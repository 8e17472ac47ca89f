//! The fuzz targets. Each must hold for any input: no panic, no unbounded memory.

use std::time::Duration;

use p2pchat_core::{
    FrameDecoder, Identity, Limits, MAGIC, Peer, PeerSide, RelayClient, RelayServer, Security,
    Timestamp,
};

use crate::script::Script;

/// A small frame limit, so that inputs reach it.
const MAX_FRAME: u32 = 2048;

/// The decoder: the input cut in chunks the input chooses, read both ways the core
/// reads (`push` then `next_frame`, and `feed` in place). What it holds never passes
/// one frame and one chunk, and both ways agree.
pub fn decoder(input: &[u8]) {
    let mut script = Script::new(input);
    let chunk = usize::from(script.byte().unwrap_or(1).max(1));
    let stream = script.rest();
    let mut pushed = FrameDecoder::new(MAX_FRAME);
    let mut fed = FrameDecoder::new(MAX_FRAME);
    let (mut by_push, mut by_feed) = (Vec::new(), Vec::new());
    let (mut push_failed, mut feed_failed) = (false, false);
    for piece in stream.chunks(chunk) {
        if !push_failed {
            pushed.push(piece);
            loop {
                match pushed.next_raw() {
                    Ok(Some(raw)) => by_push.push((raw.type_byte, raw.body.to_vec())),
                    Ok(None) => break,
                    Err(_) => {
                        push_failed = true;
                        break;
                    }
                }
            }
            assert!(pushed.buffered_len() <= MAX_FRAME as usize + 4 + chunk);
        }
        if !feed_failed {
            let result = fed.feed(piece, |raw| {
                by_feed.push((raw.type_byte, raw.body.to_vec()));
                true
            });
            feed_failed = result.is_err();
            assert!(fed.buffered_len() <= MAX_FRAME as usize + 4 + chunk);
        }
    }
    assert_eq!(by_push, by_feed, "both ways read the same frames");
    assert_eq!(push_failed, feed_failed, "and fail alike");
}

fn limits() -> Limits {
    Limits {
        max_frame_len: MAX_FRAME,
        max_outbound_bytes: 16 * 1024,
        max_clients: 4,
        max_pending_handshakes: 8,
        max_connections_per_address: 3,
        message_rate: 50,
        message_burst: 5,
        ..Limits::default()
    }
}

fn security(n: u8, encrypted: bool) -> Security {
    if encrypted {
        Security::encrypted(Identity::from_secret([n; 32]), [n ^ 0x5A; 32])
    } else {
        Security::insecure()
    }
}

/// The relay: a script of connections opening, sending bytes (a p2pchat magic and
/// hello first half the time, so that frames past the handshake are reached),
/// closing, confirming writes, and time passing. The relay never queues much more
/// than its bound for any connection.
pub fn relay_server(input: &[u8]) {
    let mut script = Script::new(input);
    let encrypted = script.byte().is_some_and(|b| b & 1 == 1);
    let limits = limits();
    let mut server = RelayServer::new(limits.clone(), security(0xA0, encrypted));
    let mut now = Timestamp::ZERO;
    let mut conns = Vec::new();
    while let Some(op) = script.byte() {
        let pick = |conns: &Vec<p2pchat_core::ConnId>, b: u8| {
            (!conns.is_empty()).then(|| conns[usize::from(b) % conns.len()])
        };
        match op % 6 {
            0 => {
                let address = [127, 0, 0, script.byte().unwrap_or(0) % 3].into();
                let conn = server.handle_connected_from(address, now);
                if op & 0x80 != 0 {
                    let mut hello = MAGIC.to_vec();
                    // Some with the session layer, some coming back to a session (a
                    // `Resume` may follow in the script's bytes).
                    let capabilities = if op & 0x40 != 0 {
                        p2pchat_core::CAP_RESUME
                    } else {
                        0
                    };
                    p2pchat_core::Frame::Hello(p2pchat_core::Hello {
                        min_version: 1,
                        max_version: p2pchat_core::PROTOCOL_VERSION,
                        capabilities,
                        role: p2pchat_core::Role::RelayClient,
                        name: String::new(),
                        resuming: op & 0x20 != 0,
                    })
                    .encode(&mut hello);
                    server.handle_bytes(conn, &hello, now);
                }
                conns.push(conn);
            }
            1 | 2 => {
                let who = script.byte().unwrap_or(0);
                let len = usize::from(script.byte().unwrap_or(0));
                let bytes = script.take(len);
                if let Some(conn) = pick(&conns, who) {
                    server.handle_bytes(conn, bytes, now);
                }
            }
            3 => {
                if let Some(conn) = pick(&conns, script.byte().unwrap_or(0)) {
                    server.handle_closed(conn, now);
                    conns.retain(|&c| c != conn);
                }
            }
            4 => {
                now += Duration::from_millis(u64::from(script.byte().unwrap_or(0)) * 100);
                server.handle_timeout(now);
            }
            _ => {}
        }
        while let Some(t) = server.poll_transmit() {
            assert!(
                server.pending_bytes(t.conn) <= limits.relay_queue_bytes() + 2 * MAX_FRAME as usize,
                "a connection's queue passed its bound"
            );
            server.handle_written(t.conn, t.bytes.len());
        }
        while let Some(conn) = server.poll_close() {
            server.handle_closed(conn, now);
            conns.retain(|&c| c != conn);
        }
        while server.poll_event().is_some() {}
    }
}

/// A relay client fed arbitrary bytes as if from its relay, in pieces the input
/// chooses, with time passing between them.
pub fn relay_client(input: &[u8]) {
    let mut script = Script::new(input);
    let encrypted = script.byte().is_some_and(|b| b & 1 == 1);
    let now = Timestamp::ZERO;
    let Ok(mut client) = RelayClient::new("fuzz", limits(), security(1, encrypted), now) else {
        return;
    };
    feed(&mut script, |bytes, t| {
        client.handle_bytes(bytes, t);
        client.handle_timeout(t);
        while let Some(b) = client.poll_transmit() {
            client.handle_written(b.len());
        }
        while client.poll_event().is_some() {}
    });
}

/// A direct peer (either side) fed arbitrary bytes as if from the other side.
pub fn peer(input: &[u8]) {
    let mut script = Script::new(input);
    let flags = script.byte().unwrap_or(0);
    let side = if flags & 2 == 0 {
        PeerSide::Connector
    } else {
        PeerSide::Acceptor
    };
    let now = Timestamp::ZERO;
    let Ok(mut peer) = Peer::new(side, "fuzz", limits(), security(2, flags & 1 == 1), now) else {
        return;
    };
    feed(&mut script, |bytes, t| {
        peer.handle_bytes(bytes, t);
        peer.handle_timeout(t);
        while let Some(b) = peer.poll_transmit() {
            peer.handle_written(b.len());
        }
        while peer.poll_event().is_some() {}
    });
}

/// Hands the script's bytes to `deliver` in pieces of the script's choosing, with
/// the clock moving between them.
fn feed(script: &mut Script<'_>, mut deliver: impl FnMut(&[u8], Timestamp)) {
    let mut now = Timestamp::ZERO;
    while let Some(len) = script.byte() {
        let bytes = script.take(usize::from(len) * 4);
        now += Duration::from_millis(u64::from(len));
        deliver(bytes, now);
    }
}
