//! The simulator: real core machines, a virtual clock, seeded randomness, and byte
//! pipes that delay, split, merge, bound, stall, reset and cut.
//!
//! Every moment of the run is an event in one ordered queue keyed by (virtual time,
//! insertion number), so the run is a pure function of the scenario and the seed:
//! the same pair gives a byte-identical transcript.

use std::collections::{BTreeMap, VecDeque};

use core::time::Duration;

use p2pchat_core::{
    ClientEvent, ClientId, ConnId, ErrorCode, FileEvent, Identity, Peer, PeerEvent, PeerSide,
    RecordCipher, RelayClient, RelayServer, RestoreError, SavePoint, Security, SendError,
    ServerEvent, Timestamp,
};

use crate::check::RunInfo;
use crate::rng::Rng;
use crate::scenario::{Action, Scenario, Target, Topology};
use crate::transcript::{Entry, Observer, Record, Transcript};

/// How long a side that wants to close waits for the other side's FIN before closing.
const LINGER: Duration = Duration::from_secs(2);

/// A run that needs more events than this, plus [`EVENTS_PER_ACTION`] for each
/// scripted action, is stuck in a loop; it is stopped and its unfinished clients are
/// reported.
const MAX_EVENTS: u64 = 50_000_000;

/// Events a scripted action may take (bytes arriving in pieces, timers, receipts):
/// big runs get a proportionally bigger budget.
const EVENTS_PER_ACTION: u64 = 1_000;

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Server,
    Node(usize),
}

/// Direction on a link: `Ab` from end `a` to end `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    Ab,
    Ba,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Join(usize),
    Act(usize, usize),
    Arrive(usize, Dir),
    Fin(usize, Dir),
    Timer(End),
    StallEnd(usize),
    /// A node that asked to close link `.1` gives up waiting for the other side.
    Linger(usize, usize),
    /// A node away from its session dials the relay again.
    Redial(usize),
    /// A scenario client whose session ended for good joins again as a new client.
    Rejoin(usize),
    /// The user of a node whose join failed before the relay welcomed it starts
    /// `p2pchat join` again (unless that client has moved on since).
    Retry(usize),
    /// The relay process dies (every connection reset), for this long.
    ServerDown(Duration),
    /// The relay process is back, knowing nothing of before.
    ServerUp,
    /// A client process killed earlier is started again, from its saved session.
    Restart(usize),
}

#[derive(Debug, Default)]
struct Pipe {
    /// Taken from the writing machine, not yet in the network.
    unsent: VecDeque<u8>,
    /// Written and not yet read: counts against the buffer.
    in_network: usize,
    /// In flight, with arrival times in order.
    chunks: VecDeque<(Timestamp, Vec<u8>)>,
    /// Arrived, not yet read (the reader is stalled).
    readable: Vec<u8>,
    last_arrival: Timestamp,
    /// The writer closed; a FIN follows its last byte.
    fin_pending: bool,
    fin_sent: bool,
    fin_arrived: bool,
    /// Nothing gets through any more, and nobody is told.
    cut: bool,
    /// Reset or fully closed: everything is discarded.
    dead: bool,
}

#[derive(Debug)]
struct Link {
    a: End,
    b: End,
    ab: Pipe,
    ba: Pipe,
    /// The relay's handle for this connection (node-to-relay links).
    conn: Option<ConnId>,
}

impl Link {
    fn pipe(&mut self, dir: Dir) -> &mut Pipe {
        match dir {
            Dir::Ab => &mut self.ab,
            Dir::Ba => &mut self.ba,
        }
    }
    fn writer(&self, dir: Dir) -> End {
        match dir {
            Dir::Ab => self.a,
            Dir::Ba => self.b,
        }
    }
    fn reader(&self, dir: Dir) -> End {
        match dir {
            Dir::Ab => self.b,
            Dir::Ba => self.a,
        }
    }
    /// The direction in which `end` writes.
    fn dir_from(&self, end: End) -> Dir {
        if self.a == end { Dir::Ab } else { Dir::Ba }
    }
}

#[derive(Debug)]
enum Machine {
    Client(Box<RelayClient>),
    Peer(Box<Peer>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    NotJoined,
    Active,
    /// Transport closed: nothing more happens to it.
    Closed,
    Vanished,
}

/// A file being received in the simulation: the bytes so far, the expected digest.
type Receiving = Vec<u8>;

#[derive(Debug)]
struct Node {
    /// The scenario client this node plays.
    plan: usize,
    name: String,
    machine: Option<Machine>,
    link: Option<usize>,
    conn: Option<ConnId>,
    state: NodeState,
    /// The conversation is over for the user (finished, disconnected, refused).
    over: bool,
    stalled_until: Option<Timestamp>,
    timer: Option<Timestamp>,
    id: Option<ClientId>,
    /// Files being received: (sender, transfer) -> bytes so far.
    receiving: BTreeMap<(Option<ClientId>, u32), Receiving>,
    /// Files being sent: transfer -> size (the digest goes with the last chunk).
    sending: BTreeMap<u32, u64>,
    /// When a dial back to the relay is scheduled.
    redial: Option<Timestamp>,
    /// What the process keeps on disk to come back after it was killed (as
    /// `p2pchat join` does), and where the session stood when it was saved.
    saved: Option<Vec<u8>>,
    saved_at: Option<SavePoint>,
    /// How many times the process was killed (each new process's randomness differs).
    crashes: u64,
    /// Whether the relay ever welcomed it (it then has a session to resume).
    welcomed: bool,
}

/// A simulated network running one scenario.
struct Sim<'a> {
    /// The run's seed (keys and handshake randomness derive from it too).
    seed: u64,
    rng: Rng,
    now: Timestamp,
    queue: BTreeMap<(Timestamp, u64), Ev>,
    next_seq: u64,
    scenario: Scenario,
    server: Option<RelayServer>,
    server_timer: Option<Timestamp>,
    /// How many times the relay restarted (each one's randomness differs).
    restarts: u64,
    conn_node: BTreeMap<ConnId, usize>,
    /// The link each of the relay's connections runs over.
    conn_link: BTreeMap<ConnId, usize>,
    /// The node each client ID of the running relay belongs to.
    id_node: BTreeMap<ClientId, usize>,
    nodes: Vec<Node>,
    links: Vec<Link>,
    /// For each scenario client, the node that currently plays it (reconnects move it).
    incarnation: Vec<usize>,
    /// Where each entry of the run goes as it happens.
    out: &'a mut dyn Observer,
    max_queued: usize,
    events_processed: u64,
    /// For each scenario client, whether it saves its session: only those whose
    /// process the scenario kills (every incarnation of them). Saving costs (a
    /// keyring of every announced key, hashed) and nobody else ever reads it.
    saving: Vec<bool>,
    /// The event budget of this run (see [`MAX_EVENTS`]).
    max_events: u64,
}

/// The security of the relay (`node` = `None`) or of a node: its own key and its own
/// randomness, both derived from the run's seed (apart from the fault generator's, so
/// that encryption does not change which faults happen). Odd-numbered nodes propose
/// AES-256-GCM and the others ChaCha20-Poly1305, so that every run has both.
fn security(encrypted: bool, seed: u64, node: Option<usize>) -> Security {
    if !encrypted {
        return Security::insecure();
    }
    let who = node.map_or(0, |n| n as u64 + 1);
    let bytes = |purpose: u64| {
        let mut rng = Rng::new(seed ^ who.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose);
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
        }
        out
    };
    let cipher = match node {
        Some(n) if n % 2 == 1 => RecordCipher::AesGcm,
        _ => RecordCipher::ChaChaPoly,
    };
    Security {
        cipher,
        ..Security::encrypted(Identity::from_secret(bytes(0xA11CE)), bytes(0x5EED))
    }
}

/// A relay with the run's key; `restarts` makes each restart's randomness its own
/// (a restarted relay must not hand out the tokens of the one before).
fn relay_server(
    limits: &p2pchat_core::Limits,
    encrypted: bool,
    seed: u64,
    restarts: u64,
) -> RelayServer {
    let mut security = security(encrypted, seed, None);
    if restarts > 0 {
        let mut rng = Rng::new(seed ^ restarts.wrapping_mul(0xD1B5_4A32_D192_ED03));
        for chunk in security.seed.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
        }
    }
    RelayServer::new(limits.clone(), security)
}

/// Runs `scenario` with `seed`; returns the whole transcript (kept in memory: for
/// small runs, snapshots and tests; a big run goes to [`run_observed`]).
pub fn run(scenario: &Scenario, seed: u64) -> Transcript {
    let mut transcript = Transcript::new(&run_info(scenario));
    run_observed(scenario, seed, &mut transcript);
    transcript
}

/// What a run cost the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Events processed (deliveries of bytes, timers, user actions...).
    pub events: u64,
    /// Virtual time from the start to the last event.
    pub simulated: Duration,
}

/// Runs `scenario` with `seed`, handing each entry to `out` as it happens (nothing
/// of the transcript is kept here).
pub fn run_observed(scenario: &Scenario, seed: u64, out: &mut dyn Observer) -> RunStats {
    let mut sim = Sim::new(scenario.clone(), seed, out);
    sim.run_to_end();
    RunStats {
        events: sim.events_processed,
        simulated: sim.now.saturating_duration_since(Timestamp::ZERO),
    }
}

/// What the checker must know of a run of `scenario` besides its records.
pub fn run_info(scenario: &Scenario) -> RunInfo {
    let scripted = scenario
        .clients
        .iter()
        .flat_map(|c| &c.actions)
        .filter(|(_, a)| matches!(a, Action::Send { .. }))
        .count();
    RunInfo {
        max_clients: scenario.limits.max_clients,
        max_outbound_bytes: match scenario.topology {
            Topology::Relay => scenario.limits.relay_queue_bytes(),
            Topology::Direct => scenario.limits.max_outbound_bytes,
        },
        direct: scenario.topology == Topology::Direct,
        encrypted: scenario.encrypted,
        scripted: scripted as u64,
    }
}

fn at(d: Duration) -> Timestamp {
    Timestamp::ZERO + d
}

impl<'a> Sim<'a> {
    fn new(scenario: Scenario, seed: u64, out: &'a mut dyn Observer) -> Self {
        let server = (scenario.topology == Topology::Relay)
            .then(|| relay_server(&scenario.limits, scenario.encrypted, seed, 0));
        let saving = scenario
            .clients
            .iter()
            .map(|c| c.actions.iter().any(|(_, a)| matches!(a, Action::Crash(_))))
            .collect();
        let actions: usize = scenario.clients.iter().map(|c| c.actions.len() + 1).sum();
        let mut sim = Sim {
            max_events: MAX_EVENTS + EVENTS_PER_ACTION * actions as u64,
            saving,
            seed,
            rng: Rng::new(seed),
            now: Timestamp::ZERO,
            queue: BTreeMap::new(),
            next_seq: 0,
            server,
            server_timer: None,
            restarts: 0,
            conn_node: BTreeMap::new(),
            conn_link: BTreeMap::new(),
            id_node: BTreeMap::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            incarnation: (0..scenario.clients.len()).collect(),
            out,
            max_queued: 0,
            events_processed: 0,
            scenario,
        };
        for (i, plan) in sim.scenario.clients.clone().iter().enumerate() {
            sim.nodes.push(Node::new(i, &plan.name));
            sim.schedule(at(plan.join_at), Ev::Join(i));
            for (k, (t, _)) in plan.actions.iter().enumerate() {
                sim.schedule(at(*t), Ev::Act(i, k));
            }
        }
        for &(t, downtime) in &sim.scenario.server_restarts.clone() {
            sim.schedule(at(t), Ev::ServerDown(downtime));
        }
        sim
    }

    fn schedule(&mut self, t: Timestamp, ev: Ev) {
        self.queue.insert((t, self.next_seq), ev);
        self.next_seq += 1;
    }

    fn record(&mut self, record: Record) {
        self.out.observe(&Entry {
            at: self.now,
            record,
        });
    }

    fn run_to_end(&mut self) {
        let deadline = at(self.scenario.last_moment() + self.scenario.settle);
        let last_script = at(self.scenario.last_moment());
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            if t > deadline || self.events_processed >= self.max_events {
                break;
            }
            self.now = t;
            self.events_processed += 1;
            self.handle(ev);
            if self.now >= last_script && self.all_done() {
                break;
            }
        }
        let stuck: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                matches!(
                    self.nodes[i].state,
                    NodeState::Active | NodeState::NotJoined
                )
            })
            .collect();
        // Bytes still on their way to a reader that is still there. (Bytes towards a
        // side that has closed are discarded by its TCP stack: not a stuck run.)
        let reader_alive = |end: End| match end {
            End::Server => true,
            End::Node(n) => self.nodes[n].state == NodeState::Active,
        };
        let in_flight = self
            .links
            .iter()
            .map(|l| {
                let live = |p: &Pipe, reader: End| {
                    if p.dead || p.cut || !reader_alive(reader) {
                        0
                    } else {
                        p.unsent.len() + p.in_network
                    }
                };
                live(&l.ab, l.b) + live(&l.ba, l.a)
            })
            .sum();
        let max_queued = self.max_queued;
        self.record(Record::End {
            stuck,
            max_queued,
            in_flight,
        });
    }

    fn all_done(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| matches!(n.state, NodeState::Closed | NodeState::Vanished))
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Join(plan) => {
                let node = self.incarnation[plan];
                self.join(node);
            }
            Ev::Act(plan, k) => {
                let node = self.incarnation[plan];
                let action = self.scenario.clients[plan].actions[k].1.clone();
                self.act(plan, node, action);
            }
            Ev::Arrive(link, dir) => self.arrive(link, dir),
            Ev::Fin(link, dir) => {
                let pipe = self.links[link].pipe(dir);
                if pipe.dead {
                    return;
                }
                pipe.fin_arrived = true;
                self.read(link, dir);
            }
            Ev::Timer(end) => self.timer(end),
            Ev::StallEnd(node) => {
                if self.nodes[node]
                    .stalled_until
                    .is_some_and(|t| t <= self.now)
                {
                    self.nodes[node].stalled_until = None;
                    if let Some(link) = self.nodes[node].link {
                        let dir = self.links[link].dir_from(End::Node(node));
                        let inbound = if dir == Dir::Ab { Dir::Ba } else { Dir::Ab };
                        self.read(link, inbound);
                    }
                }
            }
            Ev::Linger(node, link) => self.close_node(node, link),
            Ev::Redial(node) => self.redial(node),
            Ev::Rejoin(plan) => self.rejoin(plan),
            Ev::Retry(node) => {
                let plan = self.nodes[node].plan;
                if self.incarnation[plan] == node {
                    self.rejoin(plan);
                }
            }
            Ev::Restart(node) => self.restart_node(node),
            Ev::ServerDown(downtime) => self.server_down(downtime),
            Ev::ServerUp => {
                self.restarts += 1;
                self.server = Some(relay_server(
                    &self.scenario.limits,
                    self.scenario.encrypted,
                    self.seed,
                    self.restarts,
                ));
                self.record(Record::ServerUp);
            }
        }
    }

    /// The user of scenario client `plan`, whose session ended for good, joins again
    /// as a new client (a new node), as `p2pchat join` does.
    /// A client process killed earlier is started again, with nothing but what it
    /// saved: it resumes its session (dialling as a lost connection does), or, with
    /// nothing saved (not yet admitted, or a file was under way), joins as a new
    /// client, as `p2pchat join` does.
    fn restart_node(&mut self, node: usize) {
        if self.nodes[node].state != NodeState::Vanished {
            return;
        }
        let now = self.now;
        self.nodes[node].crashes += 1;
        let mut security = security(self.scenario.encrypted, self.seed, Some(node));
        // A new process draws new randomness.
        let crashes = self.nodes[node].crashes;
        for (i, b) in security.seed.iter_mut().enumerate() {
            *b ^= (crashes.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (8 * (i % 8))) as u8;
        }
        let limits = self.scenario.limits.clone();
        let saved = self.nodes[node].saved.take();
        self.nodes[node].saved_at = None;
        let restored = saved.and_then(|bytes| match self.scenario.topology {
            Topology::Relay => match RelayClient::restore(&bytes, limits, security, now) {
                Ok(c) => Some(Machine::Client(Box::new(c))),
                Err(RestoreError::NotResumable { unconfirmed }) => {
                    // Saved before its token came: what it sent is named, as
                    // `p2pchat join` names it at the next start.
                    self.record(Record::Unconfirmed {
                        client: node,
                        seqs: unconfirmed.into_iter().map(|(seq, _)| seq).collect(),
                    });
                    None
                }
                Err(_) => None,
            },
            Topology::Direct => Peer::restore(&bytes, limits, security, now)
                .ok()
                .map(|p| Machine::Peer(Box::new(p))),
        });
        let Some(machine) = restored else {
            self.fault(node, "started again with nothing saved".into());
            if self.scenario.topology == Topology::Relay {
                let plan = self.nodes[node].plan;
                self.nodes[node].state = NodeState::Closed;
                let fresh = self.nodes.len();
                let name = self.nodes[node].name.clone();
                self.nodes.push(Node::new(plan, &name));
                self.incarnation[plan] = fresh;
                self.join(fresh);
            }
            return;
        };
        self.fault(node, "started again from its saved session".into());
        let node_ref = &mut self.nodes[node];
        node_ref.machine = Some(machine);
        node_ref.state = NodeState::Active;
        // Files under way died with the process (nothing is saved while one is).
        node_ref.receiving.clear();
        node_ref.sending.clear();
        self.drain(End::Node(node));
    }

    /// Saves `n`'s session if it changed, as the TCP driver does before it writes
    /// anything (see `p2pchat_tcp::SessionStore`); forgets it when there is none to
    /// save.
    fn checkpoint(&mut self, n: usize) {
        if !self.saving[self.nodes[n].plan] {
            return;
        }
        let node = &mut self.nodes[n];
        let point = match node.machine.as_ref() {
            Some(Machine::Client(c)) => c.save_point(),
            Some(Machine::Peer(p)) => p.save_point(),
            None => return,
        };
        if point == node.saved_at {
            return;
        }
        node.saved = match node.machine.as_mut() {
            Some(Machine::Client(c)) => c.save(),
            Some(Machine::Peer(p)) => p.save(),
            None => None,
        };
        node.saved_at = point;
    }

    fn rejoin(&mut self, plan: usize) {
        let old = self.incarnation[plan];
        let fresh = self.nodes.len();
        let name = self.nodes[old].name.clone();
        self.nodes.push(Node::new(plan, &name));
        self.record(Record::Rejoined { client: old, fresh });
        self.incarnation[plan] = fresh;
        self.join(fresh);
        // A user who had said exit still sends nothing; it only reads on.
        let exited = matches!(&self.nodes[old].machine, Some(Machine::Client(c)) if c.has_exited());
        if exited && let Some(Machine::Client(c)) = self.nodes[fresh].machine.as_mut() {
            c.exit(self.now);
            self.record(Record::SaidExit { client: fresh });
            self.drain(End::Node(fresh));
        }
    }

    /// The relay dies: every connection to it is reset, and nothing answers until
    /// `ServerUp`.
    fn server_down(&mut self, downtime: Duration) {
        if self.server.is_none() {
            return;
        }
        self.record(Record::ServerDown);
        self.server = None;
        self.server_timer = None;
        let links: Vec<usize> = self.conn_link.values().copied().collect();
        self.conn_link.clear();
        self.conn_node.clear();
        self.id_node.clear();
        for link in links {
            for dir in [Dir::Ab, Dir::Ba] {
                *self.links[link].pipe(dir) = Pipe {
                    dead: true,
                    ..Pipe::default()
                };
            }
            if let End::Node(n) = self.links[link].a {
                self.close_node(n, link);
            }
        }
        self.schedule(self.now + downtime, Ev::ServerUp);
    }

    /// A node away from its session dials the relay: a new link, or a failed dial
    /// while the relay is down.
    fn redial(&mut self, node: usize) {
        if self.nodes[node].redial != Some(self.now) || self.nodes[node].state != NodeState::Active
        {
            return;
        }
        self.nodes[node].redial = None;
        let now = self.now;
        if self.scenario.topology == Topology::Direct {
            self.redial_peer(node);
            return;
        }
        let Some(server) = self.server.as_mut() else {
            if let Some(Machine::Client(c)) = self.nodes[node].machine.as_mut() {
                c.handle_reconnect_failed(now);
            }
            self.drain(End::Node(node));
            return;
        };
        let conn = server.handle_connected(now);
        self.attach(node, conn);
        if let Some(Machine::Client(c)) = self.nodes[node].machine.as_mut() {
            c.handle_reconnected(now);
        }
        self.drain(End::Server);
        self.drain(End::Node(node));
    }

    /// The connecting peer dials the listening one: a new link if the listener waits
    /// for it (else, as with a listener that still holds its old connection, the dial
    /// fails and is tried again later).
    fn redial_peer(&mut self, node: usize) {
        let now = self.now;
        let listener = 1 - node.min(1);
        let waiting = self.nodes[listener].state == NodeState::Active
            && self.nodes[listener].link.is_none()
            && matches!(&self.nodes[listener].machine, Some(Machine::Peer(p)) if p.poll_reconnect().is_some());
        if !waiting {
            if let Some(Machine::Peer(p)) = self.nodes[node].machine.as_mut() {
                p.handle_reconnect_failed(now);
            }
            self.drain(End::Node(node));
            return;
        }
        self.links.push(Link {
            a: End::Node(node),
            b: End::Node(listener),
            ab: Pipe::default(),
            ba: Pipe::default(),
            conn: None,
        });
        let link = self.links.len() - 1;
        for n in [listener, node] {
            self.nodes[n].link = Some(link);
            if let Some(Machine::Peer(p)) = self.nodes[n].machine.as_mut() {
                p.handle_reconnected(now);
            }
        }
        self.drain(End::Node(listener));
        self.drain(End::Node(node));
    }

    /// A new link between `node` and the relay's connection `conn`.
    fn attach(&mut self, node: usize, conn: ConnId) {
        self.conn_node.insert(conn, node);
        self.nodes[node].conn = Some(conn);
        self.links.push(Link {
            a: End::Node(node),
            b: End::Server,
            ab: Pipe::default(),
            ba: Pipe::default(),
            conn: Some(conn),
        });
        let link = self.links.len() - 1;
        self.conn_link.insert(conn, link);
        self.nodes[node].link = Some(link);
    }

    /// `node` stops using its link (its socket is closed): what it wrote still goes
    /// out, then a FIN; nothing more is read.
    fn abandon_link(&mut self, node: usize) {
        let Some(link) = self.nodes[node].link.take() else {
            return;
        };
        let dir = self.links[link].dir_from(End::Node(node));
        let inbound = if dir == Dir::Ab { Dir::Ba } else { Dir::Ab };
        self.links[link].pipe(dir).fin_pending = true;
        self.pump(link, dir);
        let pipe = self.links[link].pipe(inbound);
        pipe.dead = true;
        pipe.chunks.clear();
        pipe.readable.clear();
    }

    // ----- joining and user actions -------------------------------------------------

    fn join(&mut self, node: usize) {
        if self.nodes[node].state != NodeState::NotJoined {
            return;
        }
        if self.scenario.topology == Topology::Relay && self.server.is_none() {
            // The relay is down: the user tries again a little later.
            let plan = self.nodes[node].plan;
            self.schedule(self.now + Duration::from_millis(500), Ev::Join(plan));
            return;
        }
        self.nodes[node].state = NodeState::Active;
        self.record(Record::Connect { client: node });
        let name = self.nodes[node].name.clone();
        let limits = self.scenario.limits.clone();
        match self.scenario.topology {
            Topology::Relay => {
                let Some(server) = self.server.as_mut() else {
                    return;
                };
                let conn = server.handle_connected(self.now);
                self.attach(node, conn);
                let security = security(self.scenario.encrypted, self.seed, Some(node));
                let made = RelayClient::new(&name, limits, security, self.now)
                    .map(|c| Machine::Client(Box::new(c)));
                if !self.install(node, made) {
                    return;
                }
                self.drain(End::Server);
                self.drain(End::Node(node));
            }
            Topology::Direct => {
                let side = if node == 0 {
                    PeerSide::Acceptor
                } else {
                    PeerSide::Connector
                };
                let security = security(self.scenario.encrypted, self.seed, Some(node));
                let made = Peer::new(side, &name, limits, security, self.now)
                    .map(|p| Machine::Peer(Box::new(p)));
                if !self.install(node, made) {
                    return;
                }
                if node == 1 {
                    self.links.push(Link {
                        a: End::Node(1),
                        b: End::Node(0),
                        ab: Pipe::default(),
                        ba: Pipe::default(),
                        conn: None,
                    });
                    let link = self.links.len() - 1;
                    self.nodes[0].link = Some(link);
                    self.nodes[1].link = Some(link);
                    self.drain(End::Node(0));
                    self.drain(End::Node(1));
                }
            }
        }
    }

    /// Gives `node` its machine, or records why it could not have one (a bad name).
    fn install(&mut self, node: usize, made: Result<Machine, String>) -> bool {
        match made {
            Ok(machine) => {
                self.nodes[node].machine = Some(machine);
                true
            }
            Err(why) => {
                self.record(Record::Disconnected {
                    client: node,
                    code: ErrorCode::InvalidName,
                    reason: why,
                });
                self.nodes[node].state = NodeState::Closed;
                false
            }
        }
    }

    fn act(&mut self, plan: usize, node: usize, action: Action) {
        if self.nodes[node].state != NodeState::Active {
            return;
        }
        let now = self.now;
        match action {
            Action::Send { to, text } => {
                let result = match (self.nodes[node].machine.as_mut(), to) {
                    (Some(Machine::Client(c)), Target::Id(id)) => {
                        c.send_chat(ClientId(id), &text, now)
                    }
                    (Some(Machine::Client(c)), Target::All) => c.broadcast(&text, now),
                    (Some(Machine::Peer(p)), Target::Peer) => p.send_chat(&text, now),
                    _ => Err(SendError::Closed),
                };
                match result {
                    Ok(seq) => self.record(Record::Sent {
                        client: node,
                        to,
                        seq,
                        text,
                    }),
                    Err(e) => self.record(Record::SendRefused {
                        client: node,
                        to,
                        why: e.to_string(),
                    }),
                }
            }
            Action::SendFile { to, size } => {
                let result = match (self.nodes[node].machine.as_mut(), to) {
                    (Some(Machine::Client(c)), Target::Id(id)) => {
                        c.offer_file(ClientId(id), "file", size, now)
                    }
                    (Some(Machine::Peer(p)), Target::Peer) => p.offer_file("file", size, now),
                    _ => Err(SendError::Closed),
                };
                if let Err(e) = result {
                    self.record(Record::SendRefused {
                        client: node,
                        to,
                        why: format!("file: {e}"),
                    });
                }
            }
            Action::Exit => {
                self.record(Record::SaidExit { client: node });
                match self.nodes[node].machine.as_mut() {
                    Some(Machine::Client(c)) => c.exit(now),
                    Some(Machine::Peer(p)) => p.exit(now),
                    None => {}
                }
            }
            Action::Leave => match self.nodes[node].machine.as_mut() {
                Some(Machine::Client(c)) => c.leave(now),
                Some(Machine::Peer(p)) => p.leave(now),
                None => {}
            },
            Action::Reset => {
                self.fault(node, "connection reset".into());
                self.reset(node);
            }
            Action::Stall(d) => {
                self.fault(node, format!("stops reading for {} ms", d.as_millis()));
                let until = now + d;
                self.nodes[node].stalled_until = Some(until);
                self.schedule(until, Ev::StallEnd(node));
            }
            Action::Cut => {
                self.fault(node, "link cut".into());
                self.cut(node);
            }
            Action::Vanish => {
                self.fault(node, "vanishes".into());
                if let Some(Machine::Client(c)) = self.nodes[node].machine.as_ref() {
                    let messages = c.held_messages();
                    if !messages.is_empty() {
                        self.record(Record::HeldWhenGone {
                            client: node,
                            messages,
                        });
                    }
                }
                self.cut(node);
                self.nodes[node].state = NodeState::Vanished;
            }
            Action::Crash(down) => {
                self.fault(
                    node,
                    format!("process killed, started again in {} ms", down.as_millis()),
                );
                // Its memory is gone; the kernel closes its socket (what it wrote
                // still goes out, then a FIN).
                let n = &mut self.nodes[node];
                n.machine = None;
                n.state = NodeState::Vanished;
                n.redial = None;
                n.timer = None;
                self.abandon_link(node);
                self.schedule(self.now + down, Ev::Restart(node));
                return;
            }
            Action::Reconnect => {
                if self.scenario.topology != Topology::Relay {
                    return;
                }
                // The user quits the program and starts it again: the old session
                // ends, a new client joins.
                let fresh = self.nodes.len();
                let name = self.nodes[node].name.clone();
                self.nodes.push(Node::new(plan, &name));
                self.fault(node, format!("reconnects as c{fresh}"));
                if let Some(Machine::Client(c)) = self.nodes[node].machine.as_mut() {
                    c.leave(now);
                }
                self.drain(End::Node(node));
                self.incarnation[plan] = fresh;
                self.join(fresh);
                return;
            }
        }
        self.drain(End::Node(node));
    }

    fn fault(&mut self, node: usize, what: String) {
        self.record(Record::Fault { client: node, what });
    }

    fn reset(&mut self, node: usize) {
        let Some(link) = self.nodes[node].link else {
            return;
        };
        for dir in [Dir::Ab, Dir::Ba] {
            let p = self.links[link].pipe(dir);
            *p = Pipe {
                dead: true,
                ..Pipe::default()
            };
        }
        let (a, b) = (self.links[link].a, self.links[link].b);
        for end in [a, b] {
            self.transport_closed(end, Some(link));
        }
    }

    fn cut(&mut self, node: usize) {
        let Some(link) = self.nodes[node].link else {
            return;
        };
        for dir in [Dir::Ab, Dir::Ba] {
            let p = self.links[link].pipe(dir);
            p.cut = true;
            p.chunks.clear();
            p.readable.clear();
        }
    }

    // ----- the network ----------------------------------------------------------------

    /// Moves what `writer` can write into the network, in random pieces.
    fn pump(&mut self, link: usize, dir: Dir) {
        let net = self.scenario.network.clone();
        let writer = self.links[link].writer(dir);
        let mut written = 0;
        loop {
            let pipe = self.links[link].pipe(dir);
            if pipe.dead || pipe.unsent.is_empty() || pipe.in_network >= net.buffer {
                break;
            }
            let room = net.buffer - pipe.in_network;
            let piece = self.rng.between(1, net.max_chunk.max(1) as u64) as usize;
            let pipe = self.links[link].pipe(dir);
            let n = piece.min(room).min(pipe.unsent.len());
            let chunk: Vec<u8> = pipe.unsent.drain(..n).collect();
            pipe.in_network += n;
            written += n;
            if !pipe.cut {
                let jitter = if net.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    Duration::from_micros(self.rng.below(net.jitter.as_micros() as u64 + 1))
                };
                let pipe = self.links[link].pipe(dir);
                let arrival = (self.now + net.latency + jitter).max(pipe.last_arrival);
                pipe.last_arrival = arrival;
                pipe.chunks.push_back((arrival, chunk));
                self.schedule(arrival, Ev::Arrive(link, dir));
            }
        }
        if written > 0 {
            match writer {
                End::Server => {
                    let conn = self.conn_of_link(link);
                    if let (Some(server), Some(conn)) = (self.server.as_mut(), conn) {
                        server.handle_written(conn, written);
                    }
                }
                End::Node(n) => match self.nodes[n].machine.as_mut() {
                    Some(Machine::Client(c)) => c.handle_written(written),
                    Some(Machine::Peer(p)) => p.handle_written(written),
                    None => {}
                },
            }
        }
        let latency = net.latency;
        let pipe = self.links[link].pipe(dir);
        if pipe.fin_pending && !pipe.fin_sent && pipe.unsent.is_empty() && !pipe.dead {
            pipe.fin_sent = true;
            if !pipe.cut {
                let t = (self.now + latency).max(pipe.last_arrival);
                self.schedule(t, Ev::Fin(link, dir));
            }
        }
    }

    fn conn_of_link(&self, link: usize) -> Option<ConnId> {
        self.links[link].conn
    }

    fn arrive(&mut self, link: usize, dir: Dir) {
        let pipe = self.links[link].pipe(dir);
        if pipe.dead || pipe.cut {
            return;
        }
        let Some((_, chunk)) = pipe.chunks.pop_front() else {
            return;
        };
        pipe.readable.extend_from_slice(&chunk);
        self.read(link, dir);
    }

    fn reader_can_read(&self, end: End) -> bool {
        match end {
            End::Server => true,
            End::Node(n) => {
                self.nodes[n].state == NodeState::Active && self.nodes[n].stalled_until.is_none()
            }
        }
    }

    /// Hands what has arrived to the reading machine (unless it is stalled), then the
    /// FIN if it has arrived and everything before it was read.
    fn read(&mut self, link: usize, dir: Dir) {
        let reader = self.links[link].reader(dir);
        if !self.reader_can_read(reader) {
            return;
        }
        let coalesce = self.scenario.network.coalesce;
        let max_chunk = self.scenario.network.max_chunk.max(1) as u64;
        let bytes = std::mem::take(&mut self.links[link].pipe(dir).readable);
        if !bytes.is_empty() {
            self.links[link].pipe(dir).in_network -=
                bytes.len().min(self.links[link].pipe(dir).in_network);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = if coalesce {
                    rest.len()
                } else {
                    (self.rng.between(1, max_chunk) as usize).min(rest.len())
                };
                let (piece, tail) = rest.split_at(n);
                rest = tail;
                self.feed(reader, link, piece);
            }
            self.pump(link, dir);
            self.drain(reader);
            let writer = self.links[link].writer(dir);
            self.drain(writer);
        }
        let pipe = self.links[link].pipe(dir);
        if pipe.fin_arrived && pipe.readable.is_empty() && pipe.chunks.is_empty() && !pipe.dead {
            pipe.dead = true;
            self.transport_closed(reader, Some(link));
        }
    }

    fn feed(&mut self, reader: End, link: usize, bytes: &[u8]) {
        let now = self.now;
        match reader {
            End::Server => {
                let conn = self.conn_of_link(link);
                if let (Some(server), Some(conn)) = (self.server.as_mut(), conn) {
                    server.handle_bytes(conn, bytes, now);
                }
            }
            End::Node(n) => match self.nodes[n].machine.as_mut() {
                Some(Machine::Client(c)) => c.handle_bytes(bytes, now),
                Some(Machine::Peer(p)) => p.handle_bytes(bytes, now),
                None => {}
            },
        }
    }

    /// `end` learns that its side of `link` is closed.
    fn transport_closed(&mut self, end: End, link: Option<usize>) {
        let now = self.now;
        match end {
            End::Server => {
                let conn = link.and_then(|l| self.conn_of_link(l));
                if let (Some(server), Some(conn)) = (self.server.as_mut(), conn) {
                    server.handle_closed(conn, now);
                    self.drain(End::Server);
                }
            }
            End::Node(n) => {
                if let Some(link) = link {
                    self.close_node(n, link);
                }
            }
        }
    }

    /// `n`'s side of `link` closed (or it gave up waiting for the other side's): its
    /// machine is told, unless it moved on to another link already.
    fn close_node(&mut self, n: usize, link: usize) {
        if self.nodes[n].state != NodeState::Active || self.nodes[n].link != Some(link) {
            return;
        }
        let now = self.now;
        match self.nodes[n].machine.as_mut() {
            Some(Machine::Client(c)) => c.handle_closed(now),
            Some(Machine::Peer(p)) => p.handle_closed(now),
            None => {}
        }
        // Our socket is gone: the other side reads EOF after what is in flight.
        self.abandon_link(n);
        if !self.is_away(n) {
            self.nodes[n].state = NodeState::Closed;
        }
        self.drain(End::Node(n));
    }

    /// Whether `n`'s machine lost its connection with its session going on.
    fn is_away(&self, n: usize) -> bool {
        match &self.nodes[n].machine {
            Some(Machine::Client(c)) => c.is_away(),
            Some(Machine::Peer(p)) => p.is_away(),
            None => false,
        }
    }

    fn timer(&mut self, end: End) {
        let now = self.now;
        match end {
            End::Server => {
                if self.server_timer != Some(now) {
                    return;
                }
                self.server_timer = None;
                if let Some(server) = self.server.as_mut() {
                    server.handle_timeout(now);
                }
            }
            End::Node(n) => {
                if self.nodes[n].timer != Some(now) || self.nodes[n].state != NodeState::Active {
                    return;
                }
                self.nodes[n].timer = None;
                match self.nodes[n].machine.as_mut() {
                    Some(Machine::Client(c)) => c.handle_timeout(now),
                    Some(Machine::Peer(p)) => p.handle_timeout(now),
                    None => {}
                }
            }
        }
        self.drain(end);
    }

    // ----- carrying out what machines ask ------------------------------------------

    fn drain(&mut self, end: End) {
        match end {
            End::Server => self.drain_server(),
            End::Node(n) => self.drain_node(n),
        }
    }

    fn drain_server(&mut self) {
        // Closing a connection can queue departure notices for others, so repeat
        // until the server has nothing more to say.
        loop {
            let Some(server) = self.server.as_mut() else {
                return;
            };
            let mut transmits = Vec::new();
            while let Some(t) = server.poll_transmit() {
                let pending = server.pending_bytes(t.conn);
                self.max_queued = self.max_queued.max(pending);
                transmits.push(t);
            }
            let closes: Vec<ConnId> = std::iter::from_fn(|| server.poll_close()).collect();
            let events: Vec<ServerEvent> = std::iter::from_fn(|| server.poll_event()).collect();
            if transmits.is_empty() && closes.is_empty() && events.is_empty() {
                break;
            }
            for e in events {
                self.record_server_event(e);
            }
            for t in transmits {
                let Some(&link) = self.conn_link.get(&t.conn) else {
                    continue;
                };
                let dir = self.links[link].dir_from(End::Server);
                self.links[link].pipe(dir).unsent.extend(t.bytes);
                self.pump(link, dir);
            }
            for conn in closes {
                let Some(&link) = self.conn_link.get(&conn) else {
                    // A held session has no link (the relay forgets it by itself).
                    if let Some(server) = self.server.as_mut() {
                        server.handle_closed(conn, self.now);
                    }
                    continue;
                };
                let dir = self.links[link].dir_from(End::Server);
                self.links[link].pipe(dir).fin_pending = true;
                self.pump(link, dir);
                // The server stops reading this connection and forgets it.
                let inbound = if dir == Dir::Ab { Dir::Ba } else { Dir::Ab };
                self.links[link].pipe(inbound).dead = true;
                if let Some(server) = self.server.as_mut() {
                    server.handle_closed(conn, self.now);
                }
            }
        }
        let timeout = self.server.as_ref().and_then(|s| s.poll_timeout());
        if let Some(t) = timeout
            && self.server_timer != Some(t)
        {
            let t = t.max(self.now);
            self.server_timer = Some(t);
            self.schedule(t, Ev::Timer(End::Server));
        }
    }

    fn record_server_event(&mut self, e: ServerEvent) {
        let node_of = |conn: &ConnId| self.conn_node.get(conn).copied().unwrap_or(usize::MAX);
        let record = match e {
            ServerEvent::Admitted { conn, id, .. } => {
                let client = node_of(&conn);
                if let Some(n) = self.nodes.get_mut(client) {
                    n.id = Some(id);
                }
                self.id_node.insert(id, client);
                Record::ServerAdmitted { client, id }
            }
            ServerEvent::Parked { id, code, .. } => Record::ServerParked {
                client: self.id_node.get(&id).copied().unwrap_or(usize::MAX),
                code,
            },
            ServerEvent::Resumed { conn, id } => Record::ServerResumed {
                client: node_of(&conn),
                id,
            },
            ServerEvent::Refused { conn, code, .. } => Record::ServerRefused {
                client: node_of(&conn),
                code,
            },
            ServerEvent::Left { id, code, .. } => Record::ServerLeft {
                client: self.id_node.get(&id).copied().unwrap_or(usize::MAX),
                id,
                code,
            },
            ServerEvent::Dropped { conn, code, .. } => Record::ServerDropped {
                client: node_of(&conn),
                code,
            },
            ServerEvent::Exited { .. } => return,
        };
        self.record(record);
    }

    fn drain_node(&mut self, n: usize) {
        if matches!(
            self.nodes[n].state,
            NodeState::Vanished | NodeState::NotJoined
        ) {
            return;
        }
        // File events are answered at once (the driver's part: reading, writing,
        // hashing), which may produce more events; then the rest is collected.
        let mut records = Vec::new();
        loop {
            let events: Vec<FileEvent> = match self.nodes[n].machine.as_mut() {
                Some(Machine::Client(c)) => std::iter::from_fn(|| c.poll_event())
                    .filter_map(|e| match e {
                        ClientEvent::File(f) => Some(f),
                        other => {
                            records.extend(client_record(n, other));
                            None
                        }
                    })
                    .collect(),
                Some(Machine::Peer(p)) => std::iter::from_fn(|| p.poll_event())
                    .filter_map(|e| match e {
                        PeerEvent::File(f) => Some(f),
                        other => {
                            records.extend(peer_record(n, other));
                            None
                        }
                    })
                    .collect(),
                None => return,
            };
            if events.is_empty() {
                break;
            }
            for e in events {
                self.on_file_event(n, e, &mut records);
            }
        }
        // Nothing goes out that the saved session does not know of.
        self.checkpoint(n);
        let mut out = Vec::new();
        let (wants_close, timeout) = match self.nodes[n].machine.as_mut() {
            Some(Machine::Client(c)) => {
                self.max_queued = self.max_queued.max(c.pending_bytes());
                while let Some(b) = c.poll_transmit() {
                    out.extend(b);
                }
                (c.wants_close(), c.poll_timeout())
            }
            Some(Machine::Peer(p)) => {
                self.max_queued = self.max_queued.max(p.pending_bytes());
                while let Some(b) = p.poll_transmit() {
                    out.extend(b);
                }
                (p.wants_close(), p.poll_timeout())
            }
            None => return,
        };
        for r in records {
            match &r {
                Record::Welcomed { id, .. } => {
                    self.nodes[n].id = Some(*id);
                    self.nodes[n].welcomed = true;
                }
                Record::Disconnected {
                    code: ErrorCode::ConnectionLost,
                    ..
                } if self.scenario.topology == Topology::Relay && !self.nodes[n].welcomed => {
                    // Lost before the relay's welcome, so before any token to resume
                    // with: `p2pchat join` says so (naming what it had sent) and
                    // ends, and its user starts it again a moment later.
                    self.nodes[n].over = true;
                    self.schedule(self.now + Duration::from_secs(1), Ev::Retry(n));
                }
                Record::Disconnected {
                    code: ErrorCode::ResumeFailed,
                    ..
                } if self.scenario.topology == Topology::Relay => {
                    // The relay no longer holds our session: join again as a new
                    // client, as `p2pchat join` does (at once, so that what the user
                    // does next reaches the new client).
                    self.nodes[n].over = true;
                    let plan = self.nodes[n].plan;
                    self.schedule(self.now, Ev::Rejoin(plan));
                }
                Record::Finished { .. } | Record::Disconnected { .. } | Record::Refused { .. } => {
                    self.nodes[n].over = true
                }
                _ => {}
            }
            self.record(r);
        }
        if let Some(link) = self.nodes[n].link {
            let dir = self.links[link].dir_from(End::Node(n));
            if !out.is_empty() {
                self.links[link].pipe(dir).unsent.extend(out);
            }
            if wants_close && self.is_away(n) {
                // Given up on a silent link: close it now and dial again.
                self.abandon_link(n);
            } else if wants_close && !self.links[link].pipe(dir).fin_pending {
                self.links[link].pipe(dir).fin_pending = true;
                self.schedule(self.now + LINGER, Ev::Linger(n, link));
                self.pump(link, dir);
            } else {
                self.pump(link, dir);
            }
        }
        let (redial, over) = match self.nodes[n].machine.as_ref() {
            Some(Machine::Client(c)) => (c.poll_reconnect(), c.is_closed()),
            // The connecting peer dials; the listening one waits to be dialled.
            Some(Machine::Peer(p)) if n == 1 => (p.poll_reconnect(), p.is_over()),
            Some(Machine::Peer(p)) => (None, p.is_over()),
            None => (None, false),
        };
        if over && self.nodes[n].link.is_none() && self.nodes[n].state == NodeState::Active {
            // Its session ended while it had no connection: nothing more happens to it.
            self.nodes[n].state = NodeState::Closed;
        }
        if self.nodes[n].state == NodeState::Active
            && let Some(t) = redial
            && self.nodes[n].redial != Some(t.max(self.now))
        {
            let t = t.max(self.now);
            self.nodes[n].redial = Some(t);
            self.schedule(t, Ev::Redial(n));
        }
        if self.nodes[n].state == NodeState::Active
            && let Some(t) = timeout
            && self.nodes[n].timer != Some(t)
        {
            let t = t.max(self.now);
            self.nodes[n].timer = Some(t);
            self.schedule(t, Ev::Timer(End::Node(n)));
        }
    }
}

impl Sim<'_> {
    /// The simulated driver's side of a file transfer: content is generated from the
    /// sender and position, received bytes are kept in memory and compared.
    fn on_file_event(&mut self, n: usize, e: FileEvent, records: &mut Vec<Record>) {
        let now = self.now;
        let node = &mut self.nodes[n];
        let Some(machine) = node.machine.as_mut() else {
            return;
        };
        let receiving = &mut node.receiving;
        let sending = &mut node.sending;
        match e {
            FileEvent::Offering {
                to, transfer, size, ..
            } => {
                sending.insert(transfer.0, size);
                records.push(Record::FileOffered {
                    client: n,
                    transfer: transfer.0,
                    to,
                    size,
                });
            }
            FileEvent::Offered {
                from,
                transfer,
                size,
                ..
            } => {
                receiving.insert((from, transfer.0), Vec::with_capacity(size as usize));
                records.push(Record::FileSeen {
                    client: n,
                    from,
                    transfer: transfer.0,
                });
                let empty = digest(&[]);
                match machine {
                    Machine::Client(c) => {
                        if let Some(from) = from {
                            c.accept_file(from, transfer, 0, empty, now);
                        }
                    }
                    Machine::Peer(p) => {
                        p.accept_file(transfer, 0, empty, now);
                    }
                }
            }
            FileEvent::Accepted { transfer, .. } => {
                match machine {
                    Machine::Client(c) => c.start_sending(transfer, 0, now),
                    Machine::Peer(p) => p.start_sending(transfer, 0, now),
                };
                if sending.get(&transfer.0) == Some(&0) {
                    // Nothing to read: the digest goes at once.
                    let hash = digest(&[]);
                    match machine {
                        Machine::Client(c) => c.file_hashed(transfer, hash, now),
                        Machine::Peer(p) => p.file_hashed(transfer, hash, now),
                    };
                }
            }
            FileEvent::ReadChunk {
                transfer,
                offset,
                len,
            } => {
                let data = content_range(n, offset, len);
                match machine {
                    Machine::Client(c) => c.file_data(transfer, offset, data, now),
                    Machine::Peer(p) => p.file_data(transfer, offset, data, now),
                };
                // The driver hashes as it reads; after the last chunk, the digest.
                let size = sending.get(&transfer.0).copied();
                if size == Some(offset + len as u64) {
                    let hash = digest(&file_content(n, offset + len as u64));
                    match machine {
                        Machine::Client(c) => c.file_hashed(transfer, hash, now),
                        Machine::Peer(p) => p.file_hashed(transfer, hash, now),
                    };
                }
            }
            FileEvent::Starting {
                from,
                transfer,
                offset,
            } => {
                if let Some(buf) = receiving.get_mut(&(from, transfer.0)) {
                    buf.truncate(offset as usize);
                }
            }
            FileEvent::WriteChunk {
                from,
                transfer,
                offset,
                data,
            } => {
                let written = match receiving.get_mut(&(from, transfer.0)) {
                    Some(buf) => {
                        buf.truncate(offset as usize);
                        buf.extend_from_slice(&data);
                        buf.len() as u64
                    }
                    None => return,
                };
                match machine {
                    Machine::Client(c) => {
                        if let Some(from) = from {
                            c.chunk_written(from, transfer, written, now);
                        }
                    }
                    Machine::Peer(p) => p.chunk_written(transfer, written, now),
                }
            }
            FileEvent::AllReceived {
                from,
                transfer,
                hash,
            } => {
                let Some(buf) = receiving.remove(&(from, transfer.0)) else {
                    return;
                };
                let intact = digest(&buf) == hash;
                records.push(Record::FileReceived {
                    client: n,
                    from,
                    transfer: transfer.0,
                    intact,
                });
                match machine {
                    Machine::Client(c) => {
                        if let Some(from) = from {
                            c.finish_receiving(from, transfer, intact, "hash mismatch", now);
                        }
                    }
                    Machine::Peer(p) => p.finish_receiving(transfer, intact, "hash mismatch", now),
                }
            }
            FileEvent::Delivered { transfer, .. } => {
                sending.remove(&transfer.0);
                records.push(Record::FileDelivered {
                    client: n,
                    transfer: transfer.0,
                });
            }
            FileEvent::Declined {
                to,
                transfer,
                reason,
            } => {
                sending.remove(&transfer.0);
                records.push(Record::FileFailed {
                    client: n,
                    peer: to,
                    transfer: transfer.0,
                    outgoing: true,
                    reason,
                });
            }
            FileEvent::Failed {
                peer,
                transfer,
                outgoing,
                reason,
            } => {
                if outgoing {
                    sending.remove(&transfer.0);
                } else {
                    receiving.remove(&(peer, transfer.0));
                }
                records.push(Record::FileFailed {
                    client: n,
                    peer,
                    transfer: transfer.0,
                    outgoing,
                    reason,
                });
            }
            FileEvent::Progress { .. } => {}
        }
    }
}

/// The content of every file node `n` sends: a function of the position only (each
/// node's files differ from other nodes').
fn content_range(n: usize, offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| ((i.wrapping_mul(31) ^ (n as u64 * 131)) % 251) as u8)
        .collect()
}

fn file_content(n: usize, size: u64) -> Vec<u8> {
    content_range(n, 0, size as usize)
}

/// A 32-byte digest (FNV-1a, repeated): the simulator checks integrity, not crypto.
fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    out
}

impl Node {
    fn new(plan: usize, name: &str) -> Self {
        Node {
            plan,
            name: name.into(),
            machine: None,
            link: None,
            conn: None,
            state: NodeState::NotJoined,
            over: false,
            stalled_until: None,
            timer: None,
            id: None,
            receiving: BTreeMap::new(),
            sending: BTreeMap::new(),
            redial: None,
            saved: None,
            saved_at: None,
            crashes: 0,
            welcomed: false,
        }
    }
}

fn client_record(client: usize, e: ClientEvent) -> Option<Record> {
    Some(match e {
        ClientEvent::Welcomed { id, .. } => Record::Welcomed { client, id },
        ClientEvent::Roster { total, entries } => {
            let ids: Vec<String> = entries.iter().map(|e| e.id.to_string()).collect();
            let more = total as usize - entries.len().min(total as usize);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            Record::Notice {
                client,
                text: format!("online {}{tail}", ids.join(",")),
            }
        }
        ClientEvent::Joined { id, .. } => Record::Notice {
            client,
            text: format!("{id} joined"),
        },
        ClientEvent::Left { id, code } => Record::Notice {
            client,
            text: format!("{id} left ({code})"),
        },
        ClientEvent::Exited { id } => Record::Notice {
            client,
            text: format!("{id} said exit"),
        },
        ClientEvent::Away { id, code, wait } => Record::Notice {
            client,
            text: format!("{id} away ({code}) for {} ms", wait.as_millis()),
        },
        ClientEvent::Back { id } => Record::Notice {
            client,
            text: format!("{id} back"),
        },
        ClientEvent::Held { to, seq, wait } => Record::Notice {
            client,
            text: format!("{seq} to {to} held for {} ms", wait.as_millis()),
        },
        ClientEvent::Message {
            from,
            to,
            seq,
            text,
            encrypted,
        } => Record::Delivered {
            client,
            from: Some(from),
            broadcast: to.is_broadcast(),
            seq,
            text,
            sealed: encrypted,
        },
        ClientEvent::NotEndToEnd { id, everyone } => Record::Notice {
            client,
            text: format!("{id} has no key (everyone: {everyone})"),
        },
        ClientEvent::Unconfirmed { messages } => Record::Unconfirmed {
            client,
            seqs: messages.into_iter().map(|(seq, _)| seq).collect(),
        },
        ClientEvent::Unreadable { from, seq, reason } => Record::Unreadable {
            client,
            from,
            seq,
            reason,
        },
        ClientEvent::Delivered { .. } | ClientEvent::Reconnecting { .. } => return None,
        ClientEvent::ConnectionLost { code, .. } => Record::ConnectionLost { client, code },
        // (Sessions move only between relays of a cluster: `cluster.rs`.)
        ClientEvent::Resumed { id } | ClientEvent::Moved { id } => Record::Resumed { client, id },
        ClientEvent::UnsupportedPayload { from, kind } => Record::Notice {
            client,
            text: format!("unsupported payload {kind} from {from}"),
        },
        ClientEvent::Error(r) => Record::ErrorReport {
            client,
            code: r.code,
            seq: r.seq,
            subject: r.subject,
        },
        ClientEvent::Refused(r) => Record::Refused {
            client,
            code: r.code,
            reason: r.reason,
        },
        ClientEvent::Finished => Record::Finished { client },
        ClientEvent::File(e) => Record::Notice {
            client,
            text: format!("file: {e:?}"),
        },
        ClientEvent::Disconnected { code, reason } => {
            if code == ErrorCode::Normal && reason == "everyone has said exit" {
                return None;
            }
            Record::Disconnected {
                client,
                code,
                reason,
            }
        }
    })
}

fn peer_record(client: usize, e: PeerEvent) -> Option<Record> {
    Some(match e {
        PeerEvent::Connected { .. } => Record::Connected { client },
        PeerEvent::Message { seq, text } => Record::Delivered {
            client,
            from: None,
            broadcast: false,
            seq,
            text,
            sealed: false,
        },
        PeerEvent::UnsupportedPayload { kind } => Record::Notice {
            client,
            text: format!("unsupported payload {kind}"),
        },
        PeerEvent::PeerExited => Record::PeerExited { client },
        PeerEvent::Delivered { .. } | PeerEvent::Reconnecting { .. } => return None,
        PeerEvent::ConnectionLost { code, .. } => Record::ConnectionLost { client, code },
        PeerEvent::Resumed => Record::Resumed {
            client,
            id: ClientId(0),
        },
        PeerEvent::Unconfirmed { seqs } => Record::Unconfirmed { client, seqs },
        PeerEvent::Error(r) => Record::ErrorReport {
            client,
            code: r.code,
            seq: r.seq,
            subject: r.subject,
        },
        PeerEvent::Finished => Record::Finished { client },
        PeerEvent::File(e) => Record::Notice {
            client,
            text: format!("file: {e:?}"),
        },
        PeerEvent::Disconnected { code, reason } => Record::Disconnected {
            client,
            code,
            reason,
        },
    })
}
