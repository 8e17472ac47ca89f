//! A tiny in-memory wiring of a [`RelayServer`] and [`RelayClient`]s, for the unit
//! tests beside each machine. The real simulator (faults, latency, seeds) lives in
//! `transport-sim`; this only moves bytes until nothing moves.

use std::collections::BTreeMap;

use crate::{
    ClientEvent, ConnId, Identity, Limits, RelayClient, RelayServer, Security, ServerEvent,
    Timestamp,
};

/// The relay's security in unit tests: encryption required, a fixed key.
pub(crate) fn relay_security() -> Security {
    Security::encrypted(Identity::from_secret([0xA0; 32]), [0xA1; 32])
}

/// Security for the `n`-th client or peer of a unit test: encrypted, its own key.
pub(crate) fn party_security(n: u8) -> Security {
    Security::encrypted(Identity::from_secret([n; 32]), [n ^ 0x55; 32])
}

pub(crate) struct Wire {
    /// Whether clients encrypt (the relay requires it unless made with `insecure`).
    pub encrypted: bool,
    pub server: RelayServer,
    pub clients: Vec<Attached>,
    pub server_events: Vec<ServerEvent>,
    pub now: Timestamp,
    /// Bytes for connections with no `RelayClient` (raw test connections).
    pub raw: BTreeMap<ConnId, Vec<u8>>,
    /// Raw connections the server closed.
    pub raw_closed: Vec<ConnId>,
}

pub(crate) struct Attached {
    pub conn: ConnId,
    pub client: RelayClient,
    /// While true, bytes from the server are left unread (a stalled reader).
    pub stalled: bool,
    pub held: Vec<Vec<u8>>,
    pub closed: bool,
    pub events: Vec<ClientEvent>,
}

impl Wire {
    pub fn new(limits: Limits) -> Self {
        Wire {
            encrypted: true,
            server: RelayServer::new(limits, relay_security()),
            clients: Vec::new(),
            server_events: Vec::new(),
            now: Timestamp::ZERO,
            raw: BTreeMap::new(),
            raw_closed: Vec::new(),
        }
    }

    /// A wire where nothing is encrypted, for tests that write frames of their own
    /// or read the relay's bytes.
    pub fn insecure(limits: Limits) -> Self {
        Wire {
            encrypted: false,
            server: RelayServer::new(limits, Security::insecure()),
            ..Wire::new(Limits::default())
        }
    }

    /// Connects a new client and runs until quiet; returns its index.
    pub fn join(&mut self, name: &str) -> usize {
        let n = u8::try_from(self.clients.len() + 1).unwrap_or(u8::MAX);
        let security = if self.encrypted {
            party_security(n)
        } else {
            Security::insecure()
        };
        self.join_with(name, security)
    }

    /// Connects a new client with its own security and runs until quiet; returns
    /// its index.
    pub fn join_with(&mut self, name: &str, security: Security) -> usize {
        let conn = self.server.handle_connected(self.now);
        let limits = self.server.limits().clone();
        let client = RelayClient::new(name, limits, security, self.now).unwrap();
        self.clients.push(Attached {
            conn,
            client,
            stalled: false,
            held: Vec::new(),
            closed: false,
            events: Vec::new(),
        });
        self.pump();
        self.clients.len() - 1
    }

    /// Moves bytes, closes and events until nothing changes.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            for a in &mut self.clients {
                if a.closed {
                    continue;
                }
                while let Some(bytes) = a.client.poll_transmit() {
                    moved = true;
                    a.client.handle_written(bytes.len());
                    self.server.handle_bytes(a.conn, &bytes, self.now);
                }
                if a.client.wants_close() {
                    a.closed = true;
                    moved = true;
                    self.server.handle_closed(a.conn, self.now);
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                if let Some(a) = self.clients.iter_mut().find(|a| a.conn == t.conn) {
                    if a.stalled {
                        a.held.push(t.bytes);
                    } else if !a.closed {
                        self.server.handle_written(t.conn, t.bytes.len());
                        a.client.handle_bytes(&t.bytes, self.now);
                    }
                } else {
                    self.server.handle_written(t.conn, t.bytes.len());
                    self.raw
                        .entry(t.conn)
                        .or_default()
                        .extend_from_slice(&t.bytes);
                }
            }
            while let Some(conn) = self.server.poll_close() {
                moved = true;
                if let Some(a) = self.clients.iter_mut().find(|a| a.conn == conn)
                    && !a.stalled
                    && !a.closed
                {
                    a.closed = true;
                    a.client.handle_closed(self.now);
                }
                if !self.clients.iter().any(|a| a.conn == conn) {
                    self.raw_closed.push(conn);
                }
                self.server.handle_closed(conn, self.now);
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            for a in &mut self.clients {
                while let Some(e) = a.client.poll_event() {
                    a.events.push(e);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Client `i`'s connection drops without a word to either side (a network
    /// failure): bytes on their way are lost, and both sides are told it closed.
    pub fn cut(&mut self, i: usize) {
        let a = &mut self.clients[i];
        a.closed = true;
        a.held.clear();
        a.client.handle_closed(self.now);
        self.server.handle_closed(a.conn, self.now);
        self.pump();
    }

    /// Client `i` dials the relay again (as its driver does when
    /// `poll_reconnect` says), on a new connection, and runs until quiet.
    pub fn reconnect(&mut self, i: usize) {
        let conn = self.server.handle_connected(self.now);
        let a = &mut self.clients[i];
        a.conn = conn;
        a.closed = false;
        a.stalled = false;
        a.client.handle_reconnected(self.now);
        self.pump();
    }

    /// Moves the clock on to `now` in steps of a few seconds, running every
    /// machine's timers at each (so that keepalive goes on as it would).
    pub fn advance(&mut self, now: Timestamp) {
        while self.now < now {
            // The next deadline of any machine, or 5 s on.
            let next = self
                .clients
                .iter()
                .filter_map(|a| a.client.poll_timeout())
                .chain(self.server.poll_timeout())
                .filter(|&t| t > self.now)
                .min()
                .unwrap_or(now);
            let step = (self.now + core::time::Duration::from_secs(5)).min(next);
            self.now = step.min(now);
            self.server.handle_timeout(self.now);
            for a in &mut self.clients {
                a.client.handle_timeout(self.now);
            }
            self.pump();
        }
    }

    /// Runs until quiet, then takes what raw connection `conn` was sent, as text.
    pub fn raw_text(&mut self, conn: ConnId) -> String {
        self.pump();
        String::from_utf8(self.raw.remove(&conn).unwrap_or_default()).unwrap_or_default()
    }

    pub fn client(&mut self, i: usize) -> &mut RelayClient {
        &mut self.clients[i].client
    }

    /// Takes the events client `i` has seen so far.
    pub fn take_events(&mut self, i: usize) -> Vec<ClientEvent> {
        std::mem::take(&mut self.clients[i].events)
    }

    /// The chat messages client `i` has seen so far, as `(from, text)`, taking all events.
    pub fn take_messages(&mut self, i: usize) -> Vec<(u32, String)> {
        self.take_events(i)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message { from, text, .. } => Some((from.0, text)),
                _ => None,
            })
            .collect()
    }
}
