//! The load generator: N clients on one thread, driven by one edge-triggered event
//! loop (mio), timing every delivery.
//!
//! It is built to cost little next to the server it measures. A task or a timer per
//! client costs a wake-up per message, which on two cores is what the relay itself
//! costs; here one `epoll_wait` serves every socket that became ready, a socket is
//! read until it is empty, messages are encoded and deliveries read in place
//! ([`crate::dialect`]), and paced senders share one schedule instead of a timer each.
//!
//! Flat out, each sender writes batches of up to [`BATCH`] messages, with at most
//! `window` in flight (closed loop), so that a fast generator cannot make the relay
//! cut its own receivers off as slow consumers. Paced, sender `k` of `S` sends its
//! `j`-th message at `(k + j·S) / rate` seconds: every client writes its own messages,
//! one per write, staggered, never in bursts (unless `burst` allows a sender to write
//! every message that is due, up to that many, in one write).

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::cmp::Reverse;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use p2pchat_core::{ClientEvent, ClientId, Identity, RecordLink, RelayClient, Security, Timestamp};

use crate::dialect::{Dialect, Incoming};
use crate::stats::{Latencies, Percentiles};

/// Who sends to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Client i sends to client i + 1 (the last to the first), in ID order.
    Ring,
    /// Each message goes to a random other client (seeded, reproducible).
    Random,
    /// The first client sends every message to all others.
    Broadcast,
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ring" => Ok(Pattern::Ring),
            "random" => Ok(Pattern::Random),
            "broadcast" => Ok(Pattern::Broadcast),
            other => Err(format!(
                "unknown pattern {other:?}: use ring, random or broadcast"
            )),
        }
    }
}

/// What p2pchat clients the generator runs against a p2pchat relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Real clients (the core's `RelayClient`), encrypted: what people run.
    Encrypted,
    /// Real clients in the clear; the relay runs with `--insecure`.
    Insecure,
    /// Frames written and read in place, in the clear (the relay runs with
    /// `--insecure`): the cheapest client there is, to measure the relay alone.
    RawFrames,
    /// The frames of [`ClientKind::RawFrames`], written and read in place, sealed in
    /// records on an encrypted link: a real client makes the handshake and gives up
    /// its connection ([`RecordLink`]) once admitted. The cheapest encrypted client,
    /// to measure what encryption costs the relay alone (nothing is sealed end to
    /// end, so the relay checks the texts as it does for raw frames).
    SealedFrames,
}

impl ClientKind {
    /// Whether the relay must admit clients that do not encrypt.
    pub fn needs_insecure_relay(self) -> bool {
        matches!(self, ClientKind::Insecure | ClientKind::RawFrames)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Number of clients.
    pub clients: u32,
    /// Messages to send in all (each broadcast counts once).
    pub messages: u64,
    /// Who sends to whom.
    pub pattern: Pattern,
    /// Total send rate in messages per second; `None` sends flat out.
    pub rate: Option<u64>,
    /// Paced, the most messages a sender writes at once: 1 writes each on its own
    /// at its time; more lets a sender that fell behind its schedule catch up in one
    /// write, as a busy client would (to load a relay at a set rate in batches, e.g.
    /// two relays compared at the same offered load).
    pub burst: usize,
    /// Bytes of text per message (at least enough for the timestamp).
    pub size: usize,
    /// Messages one sender may have in flight.
    pub window: usize,
    /// Give up after this long.
    pub max_duration: Duration,
    /// Speak plain-text lines (`ID text` out, `FROM text` in) instead of p2pchat
    /// frames: drives p2pchat's relay as `nc` would, or the minimal reference relay.
    pub plain_text: bool,
    /// Raw lines to a broadcast-only broker (`ncat --broker`): no IDs, no greeting;
    /// every line reaches every other client. Use with [`Pattern::Broadcast`].
    pub broker: bool,
    /// Which p2pchat clients (when neither `plain_text` nor `broker`).
    pub kind: ClientKind,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Clients connected and admitted.
    pub clients: u32,
    /// Time to connect and admit them all.
    pub connect_time: Duration,
    /// Messages sent.
    pub sent: u64,
    /// Deliveries received (a broadcast counts once per recipient).
    pub delivered: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Error or close frames received, and clients lost.
    pub errors: u64,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    /// Delivery latency.
    pub latency: Percentiles,
}

impl LoadReport {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.delivered as f64 / secs
        } else {
            0.0
        }
    }
}

/// Most messages put into one write when sending flat out.
const BATCH: usize = 64;

/// How long an acknowledgement with no write to ride with waits (as a real
/// client's does: `core/src/link.rs`).
const ACK_DELAY: Duration = Duration::from_millis(100);

/// Bytes read past the last acknowledgement at which the next one goes at once
/// (as a real client's does).
const ACK_NOW: u64 = 16 * 1024;

/// Size of the one read buffer all clients share.
const READ_BUFFER: usize = 256 * 1024;

/// Clients connecting (not yet admitted) at once.
const MAX_CONNECTING: usize = 256;

/// How long connecting and admitting all clients may take.
const ADMISSION_TIMEOUT: Duration = Duration::from_secs(120);

/// One simulated client.
struct Client {
    stream: TcpStream,
    /// Its ID, once admitted.
    id: Option<u32>,
    /// Bytes of the server's preamble (the magic) still to skip.
    skip: usize,
    /// An unfinished frame or line carried over to the next read.
    partial: Vec<u8>,
    /// Bytes the socket would not take yet.
    out: Vec<u8>,
    /// The connection is over.
    lost: bool,
    /// A real client machine, when the dialect is [`Dialect::Machine`].
    machine: Option<Box<RelayClient>>,
    /// With [`ClientKind::SealedFrames`], once admitted: the connection its machine
    /// gave up, and the frames waiting to be sealed into it.
    link: Option<Box<RecordLink>>,
    frames: Vec<u8>,
    /// Bytes of the relay's session stream read, and what the last `Ack` put in
    /// `out` said (framed clients acknowledge what they read as real ones do: with
    /// their next write, within `ACK_DELAY`, or at once past `ACK_NOW`).
    received: u64,
    acked: u64,
    /// Since when an acknowledgement is owed with nothing to ride with (it is not in
    /// `out` yet).
    ack_owed_since: Option<Instant>,
}

impl Client {
    /// Puts the acknowledgement owed, if any, in `out`.
    fn queue_ack(&mut self) {
        self.ack_owed_since = None;
        if self.received > self.acked && self.machine.is_none() {
            crate::dialect::encode_ack(self.received, self.frame_buffer());
            self.acked = self.received;
        }
    }

    /// Where frames the generator writes itself go: straight out, or to be sealed
    /// first on a record link.
    fn frame_buffer(&mut self) -> &mut Vec<u8> {
        if self.link.is_some() {
            &mut self.frames
        } else {
            &mut self.out
        }
    }
}

/// A sender's progress.
struct Sender {
    client: usize,
    /// Its rank among the senders (paced start offsets).
    rank: u64,
    quota: u64,
    sent: u64,
    in_flight: usize,
    seq: u64,
    rng: u64,
    /// Paced: a message was due while the window was full.
    blocked: bool,
    /// Flat out: it sits in the ready queue.
    queued: bool,
}

/// The generator's state while it runs.
struct Load<'a> {
    config: &'a LoadConfig,
    dialect: Dialect,
    poll: Poll,
    clients: Vec<Client>,
    read_buf: Vec<u8>,
    /// Clients owing an acknowledgement with nothing to ride with (it goes with
    /// their next write, or after `ACK_DELAY`).
    /// Oldest first (each entry is when that client's wait began), so that the
    /// ones due are at the front: with 10,000 clients a scan of all of them on
    /// every turn cost the generator a sixth of its time.
    unflushed: VecDeque<(Instant, usize)>,
    /// Admitted so far.
    admitted: usize,
    refused: usize,
    // --- the load phase ---
    start: Instant,
    senders: Vec<Sender>,
    /// For each client, its sender's index, if it sends.
    sender_of: Vec<Option<usize>>,
    /// Client index by relay ID.
    index_of: HashMap<u32, usize>,
    /// Relay IDs by client index.
    ids: Vec<ClientId>,
    /// The next client in the ring, by client index.
    ring_next: Vec<ClientId>,
    /// Which client returns window tokens for broadcasts (one recipient).
    witness: usize,
    ready: VecDeque<usize>,
    /// Paced: (due time in µs, sender).
    schedule: BinaryHeap<Reverse<(u64, usize)>>,
    latencies: Latencies,
    delivered: u64,
    expected: u64,
    errors: u64,
    sent: u64,
    last_delivery: Instant,
}

/// Connects `config.clients` clients to the relays at `addrs` (client `i` to
/// `addrs[i % len]`: with the relays of a cluster, a ring's every message crosses
/// relays), calls `connected` once
/// all are admitted (to sample the idle server), runs the load, and calls `finished`
/// when it is over, before the clients disconnect (so that the server's figures for
/// the load do not include the departures).
pub fn run(
    addrs: &[SocketAddr],
    config: &LoadConfig,
    connected: impl FnOnce(),
    finished: impl FnOnce(),
) -> Result<LoadReport, String> {
    let n = config.clients as usize;
    if n < 2 {
        return Err("at least 2 clients are needed".into());
    }
    let dialect = match (config.broker, config.plain_text, config.kind) {
        (true, _, _) => Dialect::Broker,
        (false, true, _) => Dialect::Text,
        (false, false, ClientKind::RawFrames) => Dialect::Framed,
        // Real clients until admitted, then frames in records (`Load::give_up_machines`).
        (false, false, _) => Dialect::Machine,
    };
    let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
    let now = Instant::now();
    let mut load = Load {
        config,
        dialect,
        poll,
        clients: Vec::with_capacity(n),
        read_buf: vec![0; READ_BUFFER],
        unflushed: VecDeque::new(),
        admitted: 0,
        refused: 0,
        start: now,
        senders: Vec::new(),
        sender_of: vec![None; n],
        index_of: HashMap::new(),
        ids: Vec::new(),
        ring_next: Vec::new(),
        witness: 0,
        ready: VecDeque::new(),
        schedule: BinaryHeap::new(),
        latencies: Latencies::default(),
        delivered: 0,
        expected: 0,
        errors: 0,
        sent: 0,
        last_delivery: now,
    };
    let t0 = Instant::now();
    load.connect_all(addrs)?;
    let connect_time = t0.elapsed();
    if config.kind == ClientKind::SealedFrames && dialect == Dialect::Machine {
        load.give_up_machines()?;
    }
    connected();
    load.plan();
    load.run_load()?;
    finished();
    let elapsed = load.last_delivery.saturating_duration_since(load.start);
    Ok(LoadReport {
        clients: n as u32,
        connect_time,
        sent: load.sent,
        delivered: load.delivered,
        expected: load.expected,
        errors: load.errors,
        elapsed,
        latency: load.latencies.percentiles(),
    })
}

impl Load<'_> {
    /// Connects every client and waits until the relay admitted them all.
    fn connect_all(&mut self, addrs: &[SocketAddr]) -> Result<(), String> {
        let n = self.config.clients as usize;
        let greeting = self.dialect.greeting();
        let mut events = Events::with_capacity(1024);
        let deadline = Instant::now() + ADMISSION_TIMEOUT;
        for i in 0..n {
            // At most MAX_CONNECTING clients wait for admission at once: a bench that
            // outruns the relay's accept loop measures SYN retransmits and the relay's
            // bound on pending handshakes, not the relay.
            while self.dialect != Dialect::Broker
                && i - (self.admitted + self.refused) >= MAX_CONNECTING
            {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "only {} of {n} clients were admitted within {ADMISSION_TIMEOUT:?}",
                        self.admitted
                    ));
                }
                self.poll_once(&mut events, Some(Duration::from_millis(100)))?;
                self.flush_acks();
                self.flush_acks();
            }
            let addr = addrs[i % addrs.len()];
            let mut stream =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .map_err(|e| format!("client {i}: could not connect to {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let machine = self.new_machine(i)?;
            stream
                .write_all(&greeting)
                .map_err(|e| format!("client {i}: {e}"))?;
            stream
                .set_nonblocking(true)
                .map_err(|e| format!("client {i}: {e}"))?;
            let mut stream = TcpStream::from_std(stream);
            self.poll
                .registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("client {i}: {e}"))?;
            self.clients.push(Client {
                stream,
                id: (self.dialect == Dialect::Broker).then_some(i as u32),
                skip: self.dialect.preamble_len(),
                partial: Vec::new(),
                out: Vec::new(),
                lost: false,
                machine,
                link: None,
                frames: Vec::new(),
                received: 0,
                acked: 0,
                ack_owed_since: None,
            });
            // A real client says its Hello (and starts its handshake) itself.
            self.pull_machine(i);
            self.flush(i);
            // Read admissions as they come, so that no socket fills up meanwhile.
            if i % 64 == 63 {
                self.poll_once(&mut events, Some(Duration::ZERO))?;
                self.flush_acks();
            }
        }
        if self.dialect == Dialect::Broker {
            // A broker says nothing; give it a moment to accept everyone.
            std::thread::sleep(Duration::from_millis(200));
            self.admitted = n;
        }
        while self.admitted + self.refused < n {
            if Instant::now() >= deadline {
                return Err(format!(
                    "only {} of {n} clients were admitted within {ADMISSION_TIMEOUT:?}",
                    self.admitted
                ));
            }
            self.poll_once(&mut events, Some(Duration::from_millis(100)))?;
            if let Some(lost) = self.clients.iter().position(|c| c.lost && c.id.is_none()) {
                return Err(format!(
                    "client {lost}: the server closed the connection during the handshake"
                ));
            }
        }
        if self.refused > 0 {
            return Err(format!(
                "{} of {n} clients were refused (is the server's --max-clients too low?)",
                self.refused
            ));
        }
        Ok(())
    }

    /// Every admitted client gives up its machine and keeps its encrypted connection
    /// ([`ClientKind::SealedFrames`]); from now on the generator writes and reads the
    /// frames itself, as with raw frames.
    fn give_up_machines(&mut self) -> Result<(), String> {
        for i in 0..self.clients.len() {
            self.pull_machine(i);
            self.flush(i);
            let client = &mut self.clients[i];
            let Some(machine) = client.machine.take() else {
                continue;
            };
            let link = machine
                .into_record_link()
                .map_err(|e| format!("client {i}: {e}"))?;
            client.received = link.received();
            client.acked = link.received();
            client.link = Some(Box::new(link));
        }
        self.dialect = Dialect::Framed;
        Ok(())
    }

    /// Decides who sends what to whom.
    fn plan(&mut self) {
        let config = self.config;
        let n = self.clients.len();
        self.ids = self
            .clients
            .iter()
            .map(|c| ClientId(c.id.unwrap_or(0)))
            .collect();
        self.index_of = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.0, i))
            .collect();
        let mut by_id: Vec<usize> = (0..n).collect();
        by_id.sort_by_key(|&i| self.ids[i]);
        self.ring_next = vec![ClientId(0); n];
        for (k, &i) in by_id.iter().enumerate() {
            self.ring_next[i] = self.ids[by_id[(k + 1) % n]];
        }
        let senders: Vec<usize> = match config.pattern {
            Pattern::Broadcast => vec![by_id[0]],
            _ => by_id.clone(),
        };
        self.witness = by_id[1 % n];
        self.expected = match config.pattern {
            Pattern::Broadcast => config.messages * (n as u64 - 1),
            _ => config.messages,
        };
        let count = senders.len() as u64;
        for (k, &client) in senders.iter().enumerate() {
            let k = k as u64;
            self.sender_of[client] = Some(self.senders.len());
            self.senders.push(Sender {
                client,
                rank: k,
                quota: config.messages / count + u64::from(k < config.messages % count),
                sent: 0,
                in_flight: 0,
                seq: 0,
                rng: 0x9E37_79B9_7F4A_7C15 ^ (k + 1).wrapping_mul(0xA24B_AED4_963E_E407),
                blocked: false,
                queued: false,
            });
        }
    }

    /// Sends and receives until every delivery arrived or time is up.
    fn run_load(&mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(4096);
        self.start = Instant::now();
        self.last_delivery = self.start;
        let deadline = self.start + self.config.max_duration;
        for s in 0..self.senders.len() {
            match self.config.rate {
                Some(_) => {
                    let due = self.due(s, 0);
                    self.schedule.push(Reverse((due, s)));
                }
                None => self.make_ready(s),
            }
        }
        let mut next_progress = self.start + Duration::from_secs(1);
        while self.delivered < self.expected {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now >= next_progress {
                next_progress += Duration::from_secs(1);
                eprintln!(
                    "p2pchat bench: {} s: {} of {} delivered, {} errors",
                    (now - self.start).as_secs(),
                    self.delivered,
                    self.expected,
                    self.errors
                );
            }
            let mut timeout = self.send_due();
            self.flush_acks();
            if !self.ready.is_empty() {
                timeout = Duration::ZERO;
            } else if !self.unflushed.is_empty() {
                // Acknowledgements waiting for a write to ride with go after ACK_DELAY.
                timeout = timeout.min(ACK_DELAY);
            }
            self.poll_once(&mut events, Some(timeout.min(deadline - now)))?;
            if self.clients.iter().all(|c| c.lost) {
                break;
            }
        }
        Ok(())
    }

    /// Writes the acknowledgements that waited `ACK_DELAY` without a write to ride
    /// with.
    fn flush_acks(&mut self) {
        let now = Instant::now();
        while let Some(&(since, i)) = self.unflushed.front() {
            if now - since < ACK_DELAY {
                break;
            }
            self.unflushed.pop_front();
            // An entry whose acknowledgement went meanwhile (it rode with a write)
            // is stale.
            if self.clients[i].ack_owed_since == Some(since) {
                self.clients[i].queue_ack();
                self.flush(i);
            }
        }
    }

    /// Microseconds since the start: the timestamp carried in each message.
    fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// When sender `s` sends its `j`-th message, in µs after the start.
    fn due(&self, s: usize, j: u64) -> u64 {
        let rate = self.config.rate.unwrap_or(1).max(1) as f64;
        let count = self.senders.len() as f64;
        let at = (self.senders[s].rank as f64 + j as f64 * count) / rate;
        (at * 1e6) as u64
    }

    /// Sends whatever is due; returns how long the loop may wait for I/O.
    fn send_due(&mut self) -> Duration {
        if self.config.rate.is_some() {
            let now = self.micros();
            while let Some(&Reverse((due, s))) = self.schedule.peek() {
                if due > now {
                    return Duration::from_micros(due - now);
                }
                self.schedule.pop();
                if self.can_send(s) {
                    let most = self.due_count(s, now).clamp(1, self.config.burst.max(1));
                    self.send(s, most);
                    self.schedule_next(s);
                } else {
                    self.senders[s].blocked = true;
                }
            }
            return Duration::from_millis(100);
        }
        for _ in 0..self.ready.len() {
            let Some(s) = self.ready.pop_front() else {
                break;
            };
            self.senders[s].queued = false;
            if self.can_send(s) {
                self.send(s, BATCH);
                self.make_ready(s);
            }
        }
        if self.ready.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        }
    }

    /// How many of sender `s`'s messages are due at `now` (µs after the start).
    fn due_count(&self, s: usize, now: u64) -> usize {
        let rate = self.config.rate.unwrap_or(1).max(1) as f64;
        let count = self.senders.len() as f64;
        let sender = &self.senders[s];
        // The last `j` with `(rank + j·count) / rate <= now`.
        let last = ((now as f64 / 1e6 * rate - sender.rank as f64) / count).floor();
        if last < sender.sent as f64 {
            0
        } else {
            (last as u64 - sender.sent + 1).min(sender.quota - sender.sent) as usize
        }
    }

    fn schedule_next(&mut self, s: usize) {
        let sender = &self.senders[s];
        if sender.sent < sender.quota {
            let due = self.due(s, sender.sent);
            self.schedule.push(Reverse((due, s)));
        }
    }

    fn can_send(&self, s: usize) -> bool {
        let sender = &self.senders[s];
        let client = &self.clients[sender.client];
        sender.sent < sender.quota
            && sender.in_flight < self.config.window.max(1)
            && client.out.is_empty()
            && !client.lost
    }

    /// Flat out: queues a sender that can send.
    fn make_ready(&mut self, s: usize) {
        if !self.senders[s].queued && self.can_send(s) {
            self.senders[s].queued = true;
            self.ready.push_back(s);
        }
    }

    /// Writes up to `most` messages of sender `s` in one write.
    fn send(&mut self, s: usize, most: usize) {
        let stamp = self.micros();
        let window = self.config.window.max(1);
        let sender = &mut self.senders[s];
        let i = sender.client;
        let n = self.ids.len();
        // An acknowledgement owed rides with this write.
        self.clients[i].queue_ack();
        let mut out = std::mem::take(self.clients[i].frame_buffer());
        let mut count = 0;
        while count < most && sender.sent < sender.quota && sender.in_flight < window {
            let to = match self.config.pattern {
                Pattern::Broadcast => ClientId::BROADCAST,
                Pattern::Ring => self.ring_next[i],
                Pattern::Random => {
                    // xorshift64: deterministic per sender, cheap.
                    let r = &mut sender.rng;
                    *r ^= *r << 13;
                    *r ^= *r >> 7;
                    *r ^= *r << 17;
                    let other = (*r % (n as u64 - 1)) as usize;
                    self.ids[if other >= i { other + 1 } else { other }]
                }
            };
            sender.seq += 1;
            sender.sent += 1;
            sender.in_flight += 1;
            count += 1;
            match self.clients[i].machine.as_mut() {
                Some(machine) => {
                    let text = crate::dialect::text(stamp, self.config.size);
                    let now = Timestamp::from_micros(stamp);
                    let sent = if to.is_broadcast() {
                        machine.broadcast(&text, now)
                    } else {
                        machine.send_chat(to, &text, now)
                    };
                    if sent.is_err() {
                        self.errors += 1;
                    }
                }
                None => self
                    .dialect
                    .encode(to, sender.seq, stamp, self.config.size, &mut out),
            }
        }
        self.sent += count as u64;
        *self.clients[i].frame_buffer() = out;
        self.pull_machine(i);
        self.flush(i);
    }

    /// A real client for client `i`: encrypted, with a key of its own, or in the clear.
    fn new_machine(&self, i: usize) -> Result<Option<Box<RelayClient>>, String> {
        if self.dialect != Dialect::Machine {
            return Ok(None);
        }
        let security = match self.config.kind {
            ClientKind::Encrypted | ClientKind::SealedFrames => {
                let mut secret = [0u8; 32];
                secret[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                let mut seed = secret;
                seed[31] = 0x5E;
                // The cipher `p2pchat join` would propose here.
                Security {
                    cipher: p2pchat_core::RecordCipher::fastest_here(),
                    ..Security::encrypted(Identity::from_secret(secret), seed)
                }
            }
            ClientKind::Insecure | ClientKind::RawFrames => Security::insecure(),
        };
        let limits = p2pchat_core::Limits::default();
        RelayClient::new("", limits, security, Timestamp::from_micros(self.micros()))
            .map(|m| Some(Box::new(m)))
            .map_err(|e| format!("client {i}: {e}"))
    }

    /// Moves what client `i`'s machine wants to send into its output buffer.
    fn pull_machine(&mut self, i: usize) {
        let client = &mut self.clients[i];
        if let Some(machine) = client.machine.as_mut() {
            while let Some(bytes) = machine.poll_transmit() {
                // The machine counts its bytes until written; the generator's own
                // buffer is bounded by the window, so it can count them written now.
                machine.handle_written(bytes.len());
                client.out.extend_from_slice(&bytes);
            }
        }
    }

    /// Seals the frames client `i` wrote on its record link, if any, into its output.
    fn seal(&mut self, i: usize) {
        if self.clients[i].frames.is_empty() {
            return; // nothing to seal (and no clock to read) for other clients
        }
        let now = Timestamp::from_micros(self.micros());
        let client = &mut self.clients[i];
        if let Some(link) = client.link.as_mut() {
            link.send_frames(&client.frames, now);
            client.frames.clear();
            while let Some(bytes) = link.poll_transmit() {
                // As with a machine: the generator's buffer is bounded by the window.
                link.handle_written(bytes.len());
                client.out.extend_from_slice(&bytes);
            }
        }
    }

    /// Writes what client `i` has pending; keeps what the socket would not take.
    fn flush(&mut self, i: usize) {
        self.seal(i);
        let client = &mut self.clients[i];
        let mut written = 0;
        while written < client.out.len() {
            match client.stream.write(&client.out[written..]) {
                Ok(0) => {
                    client.lost = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    client.lost = true;
                    break;
                }
            }
        }
        client.out.drain(..written);
        if client.lost {
            client.out.clear();
            self.errors += 1;
        }
    }

    /// Waits for I/O once (at most `timeout`) and handles every ready socket.
    fn poll_once(&mut self, events: &mut Events, timeout: Option<Duration>) -> Result<(), String> {
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("event loop: {e}")),
        }
        for event in events.iter() {
            let i = event.token().0;
            if event.is_writable() && !self.clients[i].out.is_empty() {
                self.flush(i);
                if self.clients[i].out.is_empty()
                    && let Some(s) = self.sender_of[i]
                {
                    self.unblock(s);
                }
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                self.read(i);
            }
        }
        Ok(())
    }

    /// Reads client `i` until its socket is empty.
    fn read(&mut self, i: usize) {
        loop {
            if self.clients[i].lost {
                return;
            }
            let mut buf = std::mem::take(&mut self.read_buf);
            let result = self.clients[i].stream.read(&mut buf);
            match result {
                Ok(0) => {
                    self.lose(i);
                }
                Ok(n) => {
                    self.consume(i, &buf[..n]);
                    // A short read emptied the socket: bytes that arrive later raise a
                    // new edge, so the read that would say "empty" can be skipped.
                    if n < buf.len() {
                        self.read_buf = buf;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_buf = buf;
                    return;
                }
                Err(_) => self.lose(i),
            }
            self.read_buf = buf;
        }
    }

    fn lose(&mut self, i: usize) {
        let client = &mut self.clients[i];
        if !client.lost {
            client.lost = true;
            let _ = self.poll.registry().deregister(&mut client.stream);
            // Losing a client after the load is over is the relay's normal goodbye.
            if self.delivered < self.expected {
                self.errors += 1;
            }
        }
    }

    /// Handles bytes read from client `i`.
    fn consume(&mut self, i: usize, mut bytes: &[u8]) {
        let now = Timestamp::from_micros(self.micros());
        if let Some(machine) = self.clients[i].machine.as_mut() {
            machine.handle_bytes(bytes, now);
            let mut items = Vec::new();
            while let Some(event) = machine.poll_event() {
                match event {
                    ClientEvent::Welcomed { id, .. } => items.push(Incoming::Admitted(id.0)),
                    ClientEvent::Refused(_) => items.push(Incoming::Refused),
                    ClientEvent::Message { from, text, .. } => items.push(Incoming::Delivery {
                        from: Some(from.0),
                        stamp: crate::dialect::leading_number(text.as_bytes()),
                    }),
                    ClientEvent::Error(_) => items.push(Incoming::Error),
                    ClientEvent::Disconnected { .. } => items.push(Incoming::Broken),
                    _ => {}
                }
            }
            self.pull_machine(i);
            self.flush(i);
            for item in items {
                self.on_item(i, item);
            }
            return;
        }
        let mut items = Vec::new();
        if let Some(link) = self.clients[i].link.as_mut() {
            let mut stream = 0;
            let opened = link.handle_bytes(bytes, now, |frame| {
                stream += frame.session_bytes();
                if let Some(item) = crate::dialect::frame_item(frame.type_byte, frame.body) {
                    items.push(item);
                }
            });
            if stream > 0 {
                items.push(Incoming::Stream(stream));
            }
            if opened.is_err() {
                items.push(Incoming::Broken);
            }
            bytes = &[];
        }
        let skip = self.clients[i].skip.min(bytes.len());
        self.clients[i].skip -= skip;
        bytes = &bytes[skip..];
        let partial = std::mem::take(&mut self.clients[i].partial);
        if partial.is_empty() {
            let used = self.dialect.scan(bytes, |item| items.push(item));
            self.clients[i].partial = bytes[used..].to_vec();
        } else {
            let mut joined = partial;
            joined.extend_from_slice(bytes);
            let used = self.dialect.scan(&joined, |item| items.push(item));
            joined.drain(..used);
            self.clients[i].partial = joined;
        }
        for item in items {
            self.on_item(i, item);
        }
        // The acknowledgement rides with the client's next write (its sender's next
        // batch, when it sends, or what its socket has not taken yet), as a real
        // client's goes out with whatever it writes next; with nothing to ride with
        // it waits ACK_DELAY, unless much is unacknowledged.
        let client = &mut self.clients[i];
        if client.received > client.acked {
            if client.received - client.acked >= ACK_NOW {
                // Much unacknowledged: the relay holds it for us; tell it now.
                client.queue_ack();
                self.flush(i);
            } else if !client.out.is_empty() {
                client.queue_ack();
            } else if client.ack_owed_since.is_none() {
                let since = Instant::now();
                client.ack_owed_since = Some(since);
                self.unflushed.push_back((since, i));
            }
        }
    }

    fn on_item(&mut self, i: usize, item: Incoming) {
        match item {
            Incoming::Admitted(id) => {
                if self.clients[i].id.is_none() {
                    self.clients[i].id = Some(id);
                    self.admitted += 1;
                }
            }
            Incoming::Refused => self.refused += 1,
            Incoming::Error => self.errors += 1,
            Incoming::Stream(n) => self.clients[i].received += n,
            Incoming::Broken => self.lose(i),
            Incoming::Delivery { from, stamp } => {
                if self.senders.is_empty() {
                    return; // before the load: nothing is expected
                }
                let now = Instant::now();
                if let Some(stamp) = stamp {
                    let now_micros =
                        u64::try_from((now - self.start).as_micros()).unwrap_or(u64::MAX);
                    self.latencies.record(now_micros.saturating_sub(stamp));
                }
                self.delivered += 1;
                self.last_delivery = now;
                let returns_token = match self.config.pattern {
                    Pattern::Broadcast => i == self.witness,
                    _ => true,
                };
                // A broker's lines do not say who sent them: the only sender does.
                let sender_client = match from {
                    Some(id) => self.index_of.get(&id).copied(),
                    None => self.senders.first().map(|s| s.client),
                };
                if returns_token && let Some(s) = sender_client.and_then(|c| self.sender_of[c]) {
                    let sender = &mut self.senders[s];
                    sender.in_flight = sender.in_flight.saturating_sub(1);
                    self.unblock(s);
                }
            }
        }
    }

    /// A sender got room (a token back, or its socket drained): let it go on.
    fn unblock(&mut self, s: usize) {
        if self.config.rate.is_none() {
            self.make_ready(s);
        } else if self.senders[s].blocked && self.can_send(s) {
            self.senders[s].blocked = false;
            self.send(s, 1);
            self.schedule_next(s);
        }
    }
}
