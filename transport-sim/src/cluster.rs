//! Relays of a cluster on a simulated bus (docs/SCALING.md): the real core machines
//! (`RelayServer::clustered`, `RelayClient`) with an in-memory bus that keeps NATS's
//! semantics, seeded, with bus delays and relay deaths.
//!
//! The bus: an admission counter decided at once (compare-and-set has one winner);
//! what one relay publishes reaches each other relay in order, after a random delay
//! (per-publisher order, as NATS keeps it); mail and receipts go to the relay that
//! holds their client, and are kept (JetStream) while no relay does. A relay that
//! dies takes its clients' connections with it; the others learn it after a liveness
//! delay (its clients leave). A relay cut off from the bus for a while queues what
//! it publishes and receives it all once back; cut off past the liveness delay, the
//! others take it for dead, and once back it tells its clients to join again. The
//! clients of a relay that dies dial the relays alive in turn, as `join A,B` does, and
//! their sessions move there (`Moved`) with their IDs; mailboxes keep every letter
//! until its reader read it, and the relay a session moves to reads them again from
//! there.
//!
//! What is checked, as the run goes and at its end ([`ClusterRun::violations`]):
//! IDs unique across relays; no message received twice, out of its sender's order,
//! or that was never sent to its reader; every message its sender was told was
//! delivered (without an error about it) was received; and between clients still in
//! the run (their relays lived, or they moved), every message sent was received,
//! unless its sender was told it was not (an error, or named as not confirmed when
//! its session moved).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use p2pchat_core::{
    ClientEvent, ClientId, ClusterInput, ClusterRequest, ConnId, ErrorCode, Identity, Limits,
    RelayClient, RelayServer, Security, Timestamp,
};

use crate::rng::Rng;

/// How a cluster run is shaped.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Relays.
    pub relays: usize,
    /// Clients, spread over the relays.
    pub clients: usize,
    /// Messages sent in all.
    pub messages: usize,
    /// Whether relays die during the run (at most all but one).
    pub deaths: bool,
    /// Whether a relay is cut off from the bus for a while (0.5-8 s: past 5 s the
    /// others take it for dead, and it must tell its clients to join again).
    pub cut: bool,
    /// Whether clients lose their connection to a living relay now and then (1-3
    /// times a run); half of them then reach another relay first, as a client that
    /// cannot reach its own would, and their sessions move while the old relay lives.
    pub link_faults: bool,
    /// The longest a bus delivery takes (each takes a random time up to it).
    pub max_bus_delay: Duration,
    /// Percent of mail a broken bus loses (0 for NATS): what proves the checks catch
    /// a loss.
    pub lose_mail: u64,
}

impl ClusterSpec {
    /// A spec drawn from `seed`: 2-4 relays, 4-16 clients, 50-300 messages, bus
    /// delays up to 1-50 ms, relay deaths in half the runs.
    pub fn random(seed: u64) -> ClusterSpec {
        let mut rng = Rng::new(seed ^ 0xC1A5_7E55);
        ClusterSpec {
            relays: rng.between(2, 4) as usize,
            clients: rng.between(4, 16) as usize,
            messages: rng.between(50, 300) as usize,
            deaths: rng.chance(50),
            cut: rng.chance(40),
            max_bus_delay: Duration::from_millis(rng.between(1, 50)),
            lose_mail: 0,
            link_faults: rng.chance(40),
        }
    }
}

/// What a cluster run did, and what it broke.
#[derive(Debug, Clone, Default)]
pub struct ClusterRun {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Messages their senders were told were delivered.
    pub confirmed: u64,
    /// Relays that died.
    pub deaths: u64,
    /// Relays cut off from the bus for a while, and how many of those the others
    /// took for dead.
    pub cuts: u64,
    /// Clients a relay told to join again (the cluster had taken them for gone).
    pub expelled: u64,
    /// Sessions that moved to another relay (theirs died, or they lost their way to
    /// it).
    pub moved: u64,
    /// Client connections that dropped while their relay lived.
    pub link_drops: u64,
    /// Every broken rule, in words.
    pub violations: Vec<String>,
}

/// How long the others take to notice a relay died (its heartbeats stop).
const DEAD_AFTER: Duration = Duration::from_secs(5);

/// The machines' clock ticks this often when nothing else happens.
const TICK: Duration = Duration::from_millis(100);

/// How long a link between a client and its relay takes, one way.
const LINK_DELAY: Duration = Duration::from_micros(200);

enum Ev {
    /// Bytes from a client to its relay, on connection `conn` of relay `relay`.
    Up {
        relay: usize,
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// Bytes from a relay to a client, on connection `conn` of relay `relay` (lost if
    /// the client has moved on meanwhile).
    Down {
        client: usize,
        relay: usize,
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// Something the bus delivers to a relay.
    Bus {
        /// The relay that published it.
        from: usize,
        relay: usize,
        input: ClusterInput,
    },
    /// A relay's clients are found gone by the others (its heartbeats stopped).
    Dead { relay: usize },
    /// A client sends its next message.
    Send { client: usize },
    /// A relay dies.
    Kill { relay: usize },
    /// A relay is cut off from the bus for `lasting`.
    Cut { relay: usize, lasting: Duration },
    /// What relay `relay` asked of the bus while it was cut off from it, carried out
    /// once it is back (it waited in its node).
    Deferred {
        relay: usize,
        request: ClusterRequest,
    },
    /// Client `client`'s connection drops (its relay lives).
    Drop { client: usize },
    /// Every machine's timers.
    Tick,
}

struct Client {
    relay: usize,
    conn: ConnId,
    machine: RelayClient,
    id: Option<ClientId>,
    /// IDs it has seen online (it writes only to them).
    known: BTreeSet<u32>,
    /// Its relay died with it.
    gone: bool,
    /// After a dropped connection: it reaches the next relay first (it cannot reach
    /// its own).
    elsewhere: bool,
    /// The last sequence number it was told was delivered (cumulative).
    confirmed: u64,
    /// Sequence numbers an error said did not get through.
    failed: BTreeSet<u64>,
}

struct Sent {
    to: ClientId,
    text: String,
}

struct World {
    rng: Rng,
    now: Timestamp,
    queue: BTreeMap<(Timestamp, u64), Ev>,
    next: u64,
    relays: Vec<Option<RelayServer>>,
    clients: Vec<Client>,
    /// (relay, conn) -> client.
    conn_client: BTreeMap<(usize, ConnId), usize>,
    /// Where each client ID lives.
    home: BTreeMap<ClientId, usize>,
    /// The bus's admission counter.
    next_id: u32,
    /// Letters stored so far (each one's number), and the last each reader read.
    letters: u64,
    letters_read: BTreeMap<ClientId, u64>,
    /// Each mailbox's letters not yet read, in order (JetStream keeps them).
    mail: BTreeMap<ClientId, Vec<(u64, Vec<u8>)>>,
    /// (reader, letter, relay): letters handed to a relay (each once per relay).
    handed: BTreeSet<(ClientId, u64, usize)>,
    /// Per (from relay, to relay), the time of the last delivery (per-publisher order).
    last_delivery: BTreeMap<(usize, usize), Timestamp>,
    /// What each client sent, by sequence number.
    sent: Vec<BTreeMap<u64, Sent>>,
    /// What each client received: (sender ID, seq) pairs, and the last seq per sender.
    received: Vec<BTreeSet<(ClientId, u64)>>,
    last_from: Vec<BTreeMap<ClientId, u64>>,
    ids: BTreeSet<ClientId>,
    max_bus_delay: Duration,
    lose_mail: u64,
    /// Until when each relay is cut off from the bus.
    cut_until: Vec<Timestamp>,
    run: ClusterRun,
}

/// Runs one cluster scenario drawn from `seed` with `spec`.
pub fn run_cluster(seed: u64, spec: &ClusterSpec) -> ClusterRun {
    let mut w = World {
        rng: Rng::new(seed),
        now: Timestamp::ZERO,
        queue: BTreeMap::new(),
        next: 0,
        relays: Vec::new(),
        clients: Vec::new(),
        conn_client: BTreeMap::new(),
        home: BTreeMap::new(),
        next_id: 0,
        letters: 0,
        letters_read: BTreeMap::new(),
        mail: BTreeMap::new(),
        handed: BTreeSet::new(),
        last_delivery: BTreeMap::new(),
        sent: Vec::new(),
        received: Vec::new(),
        last_from: Vec::new(),
        ids: BTreeSet::new(),
        max_bus_delay: spec.max_bus_delay,
        lose_mail: spec.lose_mail,
        cut_until: vec![Timestamp::ZERO; spec.relays],
        run: ClusterRun::default(),
    };
    let limits = Limits::default();
    for r in 0..spec.relays {
        // The relays of a cluster share one key (README), so that a client trusts
        // every relay it may move to.
        let security = Security::encrypted(Identity::from_secret([1; 32]), w.seed(r as u64));
        w.relays
            .push(Some(RelayServer::clustered(limits.clone(), security)));
    }
    for c in 0..spec.clients {
        let relay = c % spec.relays;
        let secret = w.seed(1_000 + c as u64);
        let security = Security::encrypted(Identity::from_secret(secret), w.seed(2_000 + c as u64));
        let machine = match RelayClient::new(&format!("c{c}"), limits.clone(), security, w.now) {
            Ok(m) => m,
            Err(e) => {
                w.run
                    .violations
                    .push(format!("client {c} could not be made: {e}"));
                return w.run;
            }
        };
        let conn = w
            .relay(relay)
            .map_or(ConnId(u64::MAX), |s| s.handle_connected(Timestamp::ZERO));
        w.conn_client.insert((relay, conn), c);
        w.clients.push(Client {
            relay,
            conn,
            machine,
            id: None,
            known: BTreeSet::new(),
            gone: false,
            elsewhere: false,
            confirmed: 0,
            failed: BTreeSet::new(),
        });
        w.sent.push(BTreeMap::new());
        w.received.push(BTreeSet::new());
        w.last_from.push(BTreeMap::new());
    }
    // Sends spread over 3 s, after a second for everyone to join and be announced.
    for _ in 0..spec.messages {
        let client = w.rng.below(spec.clients as u64) as usize;
        let at = Duration::from_millis(1_000 + w.rng.below(3_000));
        w.at(at, Ev::Send { client });
    }
    if spec.deaths {
        let dying = w.rng.between(1, spec.relays as u64 - 1);
        for _ in 0..dying {
            let relay = w.rng.below(spec.relays as u64) as usize;
            let at = Duration::from_millis(1_500 + w.rng.below(2_000));
            w.at(at, Ev::Kill { relay });
        }
    }
    if spec.cut {
        let relay = w.rng.below(spec.relays as u64) as usize;
        let at = Duration::from_millis(1_200 + w.rng.below(1_500));
        let lasting = Duration::from_millis(w.rng.between(500, 8_000));
        w.at(at, Ev::Cut { relay, lasting });
    }
    if spec.link_faults {
        for _ in 0..w.rng.between(1, 3) {
            let client = w.rng.below(spec.clients as u64) as usize;
            let at = Duration::from_millis(1_300 + w.rng.below(2_200));
            w.at(at, Ev::Drop { client });
        }
    }
    w.at(TICK, Ev::Tick);
    w.pump_all();
    // Until everything sent has been read and confirmed (receipts wait up to a
    // second for company), and a relay death has been noticed.
    let end = Timestamp::ZERO + Duration::from_secs(15);
    while let Some(((t, _), ev)) = w.queue.pop_first() {
        if t > end {
            break;
        }
        w.now = t;
        w.handle(ev);
        w.pump_all();
    }
    w.finish();
    w.run
}

impl World {
    fn seed(&mut self, salt: u64) -> [u8; 32] {
        let mut rng = Rng::new(self.rng.next_u64() ^ salt);
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
        }
        out
    }

    fn relay(&mut self, r: usize) -> Option<&mut RelayServer> {
        self.relays.get_mut(r).and_then(Option::as_mut)
    }

    fn at(&mut self, after: Duration, ev: Ev) {
        let t = self.now + after;
        self.queue.insert((t, self.next), ev);
        self.next += 1;
    }

    /// A bus delivery from relay `from` to relay `to`, after a random delay but never
    /// before the one `from` sent `to` before it.
    fn bus(&mut self, from: usize, to: usize, input: ClusterInput) {
        let delay =
            Duration::from_micros(self.rng.below(self.max_bus_delay.as_micros() as u64 + 1));
        let earliest = self
            .last_delivery
            .get(&(from, to))
            .copied()
            .unwrap_or(Timestamp::ZERO);
        // What a relay cut off from the bus sends waits in its node; what is sent to
        // it waits in NATS: both go once the cut is over.
        let cut_over = self.cut_until[from].max(self.cut_until[to]);
        let t = (self.now + delay).max(earliest).max(cut_over + delay);
        self.last_delivery.insert((from, to), t);
        self.queue.insert(
            (t, self.next),
            Ev::Bus {
                from,
                relay: to,
                input,
            },
        );
        self.next += 1;
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.relays.len())
            .filter(|&r| self.relays[r].is_some())
            .collect()
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Up { relay, conn, bytes } => {
                if let Some(s) = self.relay(relay) {
                    s.handle_bytes(conn, &bytes, now);
                }
            }
            Ev::Down {
                client,
                relay,
                conn,
                bytes,
            } => {
                let c = &mut self.clients[client];
                if !c.gone && c.relay == relay && c.conn == conn {
                    c.machine.handle_bytes(&bytes, now);
                }
            }
            Ev::Bus {
                relay,
                input: ClusterInput::Mail { to, frames, letter },
                ..
            } => {
                if letter == 0 {
                    // Stored as it arrives, numbered in the order the mailbox stored it
                    // (whoever sent it), and kept until read.
                    self.letters += 1;
                    let letter = self.letters;
                    self.mail
                        .entry(to)
                        .or_default()
                        .push((letter, frames.clone()));
                    self.hand_letter(to, letter, frames);
                } else if self.home.get(&to) == Some(&relay) {
                    self.hand_letter(to, letter, frames);
                }
            }
            Ev::Bus { relay, input, .. } => {
                if let Some(s) = self.relay(relay) {
                    s.handle_cluster(input, now);
                }
            }
            Ev::Dead { relay } => {
                let gone: Vec<ClientId> = self
                    .home
                    .iter()
                    .filter(|&(_, &r)| r == relay)
                    .map(|(&id, _)| id)
                    .collect();
                // The tombstones: at once to the relays that noticed, and to the
                // relay itself (when it was only cut off) once it is back. With no
                // other relay alive, nobody notices anything.
                let Some(noticing) = self.alive().into_iter().find(|&r| r != relay) else {
                    return;
                };
                let noticing = Some(noticing);
                for id in gone {
                    self.home.remove(&id);
                    let left = ClusterInput::Left {
                        id,
                        code: ErrorCode::ConnectionLost,
                    };
                    for r in self.alive() {
                        if r == relay {
                            if let Some(from) = noticing {
                                self.bus(from, r, left.clone());
                            }
                        } else if let Some(s) = self.relay(r) {
                            s.handle_cluster(left.clone(), now);
                        }
                    }
                }
            }
            Ev::Send { client } => self.send(client),
            Ev::Kill { relay } => {
                if self.relays[relay].take().is_some() && !self.alive().is_empty() {
                    self.run.deaths += 1;
                    // What it published while cut off from the bus was still in its
                    // node, waiting: it dies with it.
                    if self.cut_until[relay] > now {
                        self.queue
                            .retain(|_, ev| !matches!(ev, Ev::Bus { from, .. } if *from == relay));
                    }
                    // Its clients' connections end; they dial the others (below).
                    for c in &mut self.clients {
                        if c.relay == relay && !c.gone {
                            c.machine.handle_closed(now);
                        }
                    }
                    self.at(DEAD_AFTER, Ev::Dead { relay });
                } else if self.alive().is_empty() {
                    // The last relay stays: a cluster with none is not a run.
                    self.relays[relay] = None;
                }
            }
            Ev::Cut { relay, lasting } => {
                if self.relays[relay].is_some() && self.alive().len() > 1 {
                    self.run.cuts += 1;
                    self.cut_until[relay] = now + lasting;
                    if lasting > DEAD_AFTER {
                        self.at(DEAD_AFTER, Ev::Dead { relay });
                    }
                }
            }
            Ev::Deferred { relay, request } => {
                // Lost if the relay died meanwhile: it was still in its node.
                if self.relays[relay].is_some() {
                    self.carry(relay, request);
                }
            }
            Ev::Drop { client } => {
                let (relay, conn) = (self.clients[client].relay, self.clients[client].conn);
                if self.clients[client].gone || self.relays[relay].is_none() {
                    return;
                }
                self.run.link_drops += 1;
                if let Some(s) = self.relay(relay) {
                    s.handle_closed(conn, now);
                }
                self.conn_client.remove(&(relay, conn));
                let elsewhere = self.rng.chance(50);
                let c = &mut self.clients[client];
                // Bytes on their way on the old connection are lost.
                c.conn = ConnId(u64::MAX);
                c.elsewhere = elsewhere;
                c.machine.handle_closed(now);
            }
            Ev::Tick => {
                for r in 0..self.relays.len() {
                    if let Some(s) = self.relay(r) {
                        s.handle_timeout(now);
                    }
                }
                for c in &mut self.clients {
                    if !c.gone {
                        c.machine.handle_timeout(now);
                    }
                }
                self.redial(now);
                self.at(TICK, Ev::Tick);
            }
        }
    }

    /// Hands letter `letter` to the relay that holds its reader, once (at once, or
    /// when that relay is back on the bus); a letter read meanwhile is not.
    fn hand_letter(&mut self, to: ClientId, letter: u64, frames: Vec<u8>) {
        let Some(&home) = self.home.get(&to) else {
            return;
        };
        if self.cut_until[home] > self.now {
            let input = ClusterInput::Mail { to, frames, letter };
            let t = self.cut_until[home];
            let ev = Ev::Bus {
                from: home,
                relay: home,
                input,
            };
            self.queue.insert((t, self.next), ev);
            self.next += 1;
            return;
        }
        let unread = self
            .mail
            .get(&to)
            .is_some_and(|m| m.iter().any(|(l, _)| *l == letter));
        if !unread || !self.handed.insert((to, letter, home)) {
            return;
        }
        let now = self.now;
        if let Some(s) = self.relay(home) {
            s.handle_cluster(ClusterInput::Mail { to, frames, letter }, now);
        }
    }

    /// Relay `relay` took over the session of `entry`'s client: its entry names
    /// `relay` now (its old relay, if alive, lets it go), and its mailbox is read
    /// there from its first unread letter.
    fn adopted(&mut self, relay: usize, entry: p2pchat_core::RosterEntry) {
        if self.relays[relay].is_none() {
            return;
        }
        let id = entry.id;
        let old = self.home.insert(id, relay);
        let others: Vec<usize> = self.alive().into_iter().filter(|&o| o != relay).collect();
        for o in others {
            let input = if Some(o) == old {
                ClusterInput::MovedAway { id }
            } else {
                ClusterInput::Roster(entry.clone())
            };
            self.bus(relay, o, input);
        }
        for (letter, frames) in self.mail.get(&id).cloned().unwrap_or_default() {
            self.hand_letter(id, letter, frames);
        }
    }

    /// Clients whose connection was lost and whose time to dial has come dial the
    /// relays in turn, from their own (as `join A,B,C` does), and reach the first
    /// one alive.
    fn redial(&mut self, now: Timestamp) {
        for i in 0..self.clients.len() {
            let c = &self.clients[i];
            if c.gone || c.machine.poll_reconnect().is_none_or(|at| at > now) {
                continue;
            }
            let n = self.relays.len();
            let from = c.relay + usize::from(c.elsewhere);
            let reachable = (0..n)
                .map(|k| (from + k) % n)
                .find(|&r| self.relays[r].is_some());
            let Some(relay) = reachable else {
                self.clients[i].machine.handle_reconnect_failed(now);
                continue;
            };
            let Some(conn) = self.relay(relay).map(|s| s.handle_connected(now)) else {
                continue;
            };
            let c = &mut self.clients[i];
            self.conn_client.remove(&(c.relay, c.conn));
            c.elsewhere = false;
            c.relay = relay;
            c.conn = conn;
            self.conn_client.insert((relay, conn), i);
            self.clients[i].machine.handle_reconnected(now);
        }
    }

    fn send(&mut self, client: usize) {
        let now = self.now;
        let c = &mut self.clients[client];
        if c.gone || c.id.is_none() {
            return;
        }
        let me = c.id.map(|id| id.0);
        let targets: Vec<u32> = c
            .known
            .iter()
            .copied()
            .filter(|&id| Some(id) != me)
            .collect();
        if targets.is_empty() {
            return;
        }
        let to = ClientId(targets[self.rng.below(targets.len() as u64) as usize]);
        let text = format!("m{client}-{}", self.sent[client].len());
        if let Ok(seq) = self.clients[client].machine.send_chat(to, &text, now) {
            self.sent[client].insert(seq, Sent { to, text });
            self.run.sent += 1;
        }
    }

    /// Moves what every machine has to move, until nothing moves.
    fn pump_all(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                if self.clients[i].gone {
                    continue;
                }
                while let Some(bytes) = self.clients[i].machine.poll_transmit() {
                    moved = true;
                    self.clients[i].machine.handle_written(bytes.len());
                    let (relay, conn) = (self.clients[i].relay, self.clients[i].conn);
                    let up = Ev::Up { relay, conn, bytes };
                    self.at(LINK_DELAY, up);
                }
                while let Some(event) = self.clients[i].machine.poll_event() {
                    self.on_client_event(i, event);
                }
            }
            for r in 0..self.relays.len() {
                let Some(server) = self.relays[r].as_mut() else {
                    continue;
                };
                let mut out = Vec::new();
                while let Some(t) = server.poll_transmit() {
                    server.handle_written(t.conn, t.bytes.len());
                    out.push(t);
                }
                let mut requests = Vec::new();
                while let Some(request) = server.poll_cluster() {
                    requests.push(request);
                }
                while server.poll_close().is_some() {}
                while server.poll_event().is_some() {}
                for t in out {
                    moved = true;
                    if let Some(&client) = self.conn_client.get(&(r, t.conn)) {
                        self.at(
                            LINK_DELAY,
                            Ev::Down {
                                client,
                                relay: r,
                                conn: t.conn,
                                bytes: t.bytes,
                            },
                        );
                    }
                }
                for request in requests {
                    moved = true;
                    self.carry(r, request);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// The bus carries out relay `r`'s request.
    fn carry(&mut self, r: usize, request: ClusterRequest) {
        // Roster changes wait in the node of a relay cut off from the bus (messages
        // wait in `bus`, which knows the cut).
        let roster_change = matches!(
            request,
            ClusterRequest::Announce(_)
                | ClusterRequest::Update(_)
                | ClusterRequest::Withdraw { .. }
                | ClusterRequest::Adopt(_)
        );
        if roster_change && self.cut_until[r] > self.now {
            let after = self.cut_until[r].saturating_duration_since(self.now);
            self.at(after, Ev::Deferred { relay: r, request });
            return;
        }
        let others: Vec<usize> = self.alive().into_iter().filter(|&o| o != r).collect();
        match request {
            ClusterRequest::Admit { conn } => {
                let id = ClientId(self.next_id);
                self.next_id += 1;
                let admission = p2pchat_core::Admission::Id(id);
                self.bus(r, r, ClusterInput::Admission { conn, admission });
            }
            ClusterRequest::Release { .. } => {}
            ClusterRequest::Adopt(entry) => self.adopted(r, entry),
            // A change to an entry is made only if it is still the publisher's (the
            // node compares and sets): a relay that was cut off while its client
            // moved away does not overwrite the new entry.
            ClusterRequest::Update(entry)
                if self.home.get(&entry.id).is_some_and(|&home| home != r) => {}
            ClusterRequest::Withdraw { id, .. }
                if self.home.get(&id).is_some_and(|&home| home != r) => {}
            ClusterRequest::Announce(entry) | ClusterRequest::Update(entry) => {
                self.home.insert(entry.id, r);
                for o in others {
                    self.bus(r, o, ClusterInput::Roster(entry.clone()));
                }
            }
            ClusterRequest::Withdraw { id, code } => {
                self.home.remove(&id);
                for o in others {
                    self.bus(r, o, ClusterInput::Left { id, code });
                }
            }
            ClusterRequest::Forward { to, frames } => {
                // Stored once it leaves its relay's node (after its cut, if any), in
                // its publisher's order; then handed to its reader's relay. Lost
                // with nobody to read it (its reader left).
                if self.home.contains_key(&to)
                    && (self.lose_mail == 0 || !self.rng.chance(self.lose_mail))
                {
                    // Numbered when it is stored.
                    let letter = 0;
                    self.bus(r, r, ClusterInput::Mail { to, frames, letter });
                }
            }
            ClusterRequest::MailRead { to, letter } => {
                if let Some(mailbox) = self.mail.get_mut(&to) {
                    mailbox.retain(|(l, _)| *l > letter);
                }
                let before = self.letters_read.insert(to, letter);
                if before.is_some_and(|b| b >= letter) || letter > self.letters {
                    self.run.violations.push(format!(
                        "client {to}'s relay acknowledged letter {letter} out of order"
                    ));
                }
            }
            ClusterRequest::Broadcast { frames } => {
                for o in others {
                    self.bus(
                        r,
                        o,
                        ClusterInput::Broadcast {
                            frames: frames.clone(),
                        },
                    );
                }
            }
            ClusterRequest::Receipt { to, by, seqs } => {
                if let Some(&home) = self.home.get(&to) {
                    self.bus(r, home, ClusterInput::Receipt { to, by, seqs });
                }
            }
        }
    }

    fn on_client_event(&mut self, i: usize, event: ClientEvent) {
        match event {
            ClientEvent::Welcomed { id, .. } => {
                if !self.ids.insert(id) {
                    self.run.violations.push(format!("ID {id} given twice"));
                }
                self.clients[i].id = Some(id);
            }
            ClientEvent::Roster { entries, .. } => {
                for e in entries {
                    self.clients[i].known.insert(e.id.0);
                }
            }
            ClientEvent::Joined { id, .. } => {
                self.clients[i].known.insert(id.0);
            }
            ClientEvent::Left { id, .. } => {
                self.clients[i].known.remove(&id.0);
            }
            ClientEvent::Disconnected { code, .. } => {
                if code == ErrorCode::ResumeFailed {
                    self.run.expelled += 1;
                }
                // Told to join again (or ended otherwise): out of the run from here.
                self.clients[i].gone = true;
            }
            ClientEvent::Delivered { seq } => {
                let c = &mut self.clients[i];
                c.confirmed = c.confirmed.max(seq);
            }
            ClientEvent::Error(report) if report.seq > 0 => {
                self.clients[i].failed.insert(report.seq);
            }
            ClientEvent::Unconfirmed { messages } => {
                // Its session moved, and its old relay took these without confirming
                // them: the sender was told they may not have arrived.
                self.clients[i]
                    .failed
                    .extend(messages.into_iter().map(|(seq, _)| seq));
            }
            ClientEvent::Moved { .. } => self.run.moved += 1,
            ClientEvent::Message {
                from, seq, text, ..
            } => {
                self.run.received += 1;
                let me = self.clients[i].id;
                if !self.received[i].insert((from, seq)) {
                    self.run
                        .violations
                        .push(format!("client {i} received {from}'s {seq} twice"));
                }
                let last = self.last_from[i].insert(from, seq).unwrap_or(0);
                if seq <= last {
                    self.run.violations.push(format!(
                        "client {i} received {from}'s {seq} after {last}: out of order"
                    ));
                }
                let sender = self.clients.iter().position(|c| c.id == Some(from));
                let sent = sender.and_then(|s| self.sent[s].get(&seq));
                match sent {
                    Some(sent) if Some(sent.to) == me && sent.text == text => {}
                    _ => self.run.violations.push(format!(
                        "client {i} received {text:?} as {from}'s {seq}, which was never sent to it"
                    )),
                }
            }
            _ => {}
        }
    }

    /// The end-of-run rules.
    fn finish(&mut self) {
        let by_id: BTreeMap<ClientId, usize> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.id.map(|id| (id, i)))
            .collect();
        for (s, sent) in self.sent.iter().enumerate() {
            let sender = &self.clients[s];
            let Some(from) = sender.id else { continue };
            for (&seq, m) in sent {
                let Some(&reader) = by_id.get(&m.to) else {
                    continue;
                };
                let received = self.received[reader].contains(&(from, seq));
                let confirmed = seq <= sender.confirmed && !sender.failed.contains(&seq);
                if confirmed {
                    self.run.confirmed += 1;
                }
                if confirmed && !received {
                    self.run.violations.push(format!(
                        "client {s}'s {seq} to {} was confirmed delivered and never received",
                        m.to
                    ));
                }
                let healthy = !sender.gone && !self.clients[reader].gone;
                if healthy && !received && !sender.failed.contains(&seq) {
                    self.run.violations.push(format!(
                        "client {s}'s {seq} to {} (both on living relays) never arrived",
                        m.to
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_cluster_delivers_everything_and_confirms_it() {
        let spec = ClusterSpec {
            relays: 3,
            clients: 9,
            messages: 200,
            deaths: false,
            cut: false,
            max_bus_delay: Duration::from_millis(20),
            lose_mail: 0,
            link_faults: false,
        };
        let run = run_cluster(1, &spec);
        assert!(run.violations.is_empty(), "{:?}", run.violations);
        assert!(run.sent >= 150, "{run:?}");
        assert_eq!(run.received, run.sent, "{run:?}");
        assert_eq!(run.confirmed, run.sent, "{run:?}");
    }

    #[test]
    fn a_bus_that_loses_mail_is_caught() {
        let spec = ClusterSpec {
            relays: 2,
            clients: 6,
            messages: 200,
            deaths: false,
            cut: false,
            max_bus_delay: Duration::from_millis(5),
            lose_mail: 10,
            link_faults: false,
        };
        let run = run_cluster(7, &spec);
        assert!(
            run.violations.iter().any(|v| v.contains("never arrived")),
            "{:?}",
            run.violations
        );
        // Nothing lost was confirmed: receipts come from readers.
        assert!(
            !run.violations
                .iter()
                .any(|v| v.contains("confirmed delivered")),
            "{:?}",
            run.violations
        );
    }
}
