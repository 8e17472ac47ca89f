//! [`RelayServer`]: the relay's state machine, for any number of connections.
//!
//! It admits clients (at most `max_clients` at once), gives them IDs 0, 1, 2, ... in
//! admission order, routes each `Chat` to exactly the client it names (or to everyone),
//! answers a chat to an ID that is not online with an `Error` naming that ID, keeps
//! everyone's roster current, and cuts off a connection that breaks the protocol or
//! cannot keep up — that connection alone.
//!
//! The driver owns the sockets: it reports what happens with `handle_*` calls and
//! carries out what the server asks through `poll_*` calls. See `docs/PROTOCOL.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

mod cluster;
mod files;

pub use cluster::{Admission, ClusterInput, ClusterRequest};
mod plain_text;
mod rate;
mod routes;
mod secure;
mod sessions;
mod strikes;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::decode::{FrameDecoder, RawFrame};
use crate::error::{DecodeError, ErrorCode};
use crate::frame::{
    ChatRef, ErrorReport, Frame, Hello, PayloadKind, Refused, Role, RosterEntry, Welcome,
    encode_deliver,
};
use crate::handshake::{CAP_MOVES, CAP_RESUME, CAPABILITIES, negotiate_version, validate_name};
use crate::id::{ClientId, ConnId};
use crate::limits::{Limits, MAGIC, PROTOCOL_VERSION};
use crate::outbound::Outbound;
use crate::secure::{Entropy, PublicKey, SEALED, Security};
use crate::text::LineReader;
use crate::time::Timestamp;

/// Bytes for one connection that the driver should write, in order, as one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection to write to.
    pub conn: ConnId,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What happened on the server, for its log. Carries no message contents: the
/// operator learns who came and went and why, never what was said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client completed the handshake and got an ID.
    Admitted {
        /// Its connection.
        conn: ConnId,
        /// Its new ID.
        id: ClientId,
        /// Its nickname.
        name: String,
    },
    /// A connection was turned away during the handshake.
    Refused {
        /// The connection.
        conn: ConnId,
        /// Why, as a code.
        code: ErrorCode,
        /// Why, as sent to the client.
        reason: String,
    },
    /// A client said `exit`: it sends no more but still receives.
    Exited {
        /// The client.
        id: ClientId,
    },
    /// An admitted client is gone.
    Left {
        /// Its connection.
        conn: ConnId,
        /// Its ID, never to be reused.
        id: ClientId,
        /// Why: `Normal`, `ConnectionLost`, `SlowConsumer`, a protocol error, ...
        code: ErrorCode,
        /// The details, in words.
        detail: String,
    },
    /// An admitted client's connection was lost; its ID and what is sent to it are
    /// held for it to come back (`Resume`) until `until`.
    Parked {
        /// Its ID.
        id: ClientId,
        /// How it was lost.
        code: ErrorCode,
        /// When the relay gives up on it.
        until: Timestamp,
    },
    /// A client came back to its session on a new connection.
    Resumed {
        /// The new connection.
        conn: ConnId,
        /// Its ID, as before.
        id: ClientId,
    },
    /// A connection that never completed the handshake was closed.
    Dropped {
        /// The connection.
        conn: ConnId,
        /// Why, as a code.
        code: ErrorCode,
        /// Why, in words.
        detail: String,
    },
}

/// Where one connection is in its life.
#[derive(Debug, Clone)]
enum ConnState {
    /// Waiting for magic and `Hello` until the deadline; `resume` once a `Hello`
    /// that comes back to a session passed its checks (its `Resume` is next).
    Handshaking {
        deadline: Timestamp,
        resume: Option<Box<sessions::Returning>>,
    },
    /// Admitted as a client.
    Admitted(Client),
    /// The server decided to close it; its last bytes may still be queued.
    Closing,
}

/// An admitted client's state.
#[derive(Debug, Clone)]
struct Client {
    id: ClientId,
    name: String,
    /// Its long-term key, as its secure handshake proved it (`None`: not encrypted).
    key: Option<PublicKey>,
    exited: bool,
    last_seq: u64,
    /// When bytes last arrived from it (clients ping when quiet, so silence means gone).
    last_heard: Timestamp,
    /// A plain-text client (`nc`, `telnet`, the original app): it cannot ping, so it
    /// is not judged by its silence, and the relay closes it when everyone has exited.
    plain_text: bool,
    /// How fast it may send.
    bucket: rate::TokenBucket,
    /// What it sent that could not be used, draining over time.
    strikes: strikes::Strikes,
    /// Its session (capability `CAP_RESUME`): what it acknowledged, what it may
    /// resume. `None` for a plain-text client or one without the session layer.
    session: Option<Box<sessions::ClientSession>>,
    /// It is on another relay of the cluster (`cluster.rs`): what is queued for it
    /// goes to the bus, and it is never pinged, swept or sent presence.
    remote: bool,
    /// Its session moved here from another relay of the cluster: every message
    /// addressed to it, from this relay's clients too, goes through its mailbox, so
    /// that they reach it in their senders' order behind what was already on its way
    /// there (a sender's first message carries what it needs to open the rest).
    via_mail: bool,
}

#[derive(Debug)]
struct Connection {
    /// The network address it came from, when the driver said (`handle_connected_from`).
    address: Option<IpAddr>,
    /// It arrived with its address already at `max_connections_per_address`: it is
    /// refused once it says hello.
    over_address_limit: bool,
    decoder: FrameDecoder,
    /// Decodes the frame stream the records carry, once the channel exists.
    inner: FrameDecoder,
    secure: secure::ConnSecure,
    out: Outbound,
    state: ConnState,
    /// Whether our magic has been queued (only after theirs arrived: a stream that
    /// turns out not to be p2pchat must not be answered with binary).
    magic_sent: bool,
    /// Whether the connection sits in the server's ready queue.
    in_ready: bool,
    /// Whether any byte has arrived yet: the first one tells framed from plain text.
    received_any: bool,
    /// The line splitter of a plain-text connection.
    text: Option<LineReader>,
    /// A session held for a client whose connection was lost: no transport behind
    /// it (the driver never knew this handle), given up at this time.
    parked_until: Option<Timestamp>,
    /// How that connection was lost (the reason others are given if it never
    /// comes back).
    lost_by: ErrorCode,
}

impl Connection {
    /// A client's connection with no transport behind it (a session held for a
    /// client whose connection was lost, or a client on another relay of the
    /// cluster): a handle the driver never knew, never read from.
    fn without_transport(
        client: Client,
        out: Outbound,
        parked_until: Option<Timestamp>,
        lost_by: ErrorCode,
    ) -> Connection {
        Connection {
            address: None,
            over_address_limit: false,
            decoder: FrameDecoder::new(0),
            inner: FrameDecoder::new(0),
            secure: secure::ConnSecure::None,
            out,
            state: ConnState::Admitted(client),
            magic_sent: true,
            in_ready: false,
            received_any: true,
            text: None,
            parked_until,
            lost_by,
        }
    }

    /// Whether this is a client on another relay of the cluster (no transport: what
    /// is queued for it goes to the bus).
    fn is_remote(&self) -> bool {
        matches!(&self.state, ConnState::Admitted(client) if client.remote)
    }

    /// Whether this is a client whose session moved here from another relay (what
    /// it sends and what is sent to it goes through mailboxes).
    fn via_mail(&self) -> bool {
        matches!(&self.state, ConnState::Admitted(client) if client.via_mail)
    }
}

/// The relay server state machine. See the module documentation.
#[derive(Debug)]
pub struct RelayServer {
    /// Unit tests: every payload the relay routed, as it saw it (kind and body), to
    /// show what a relay operator could read.
    #[cfg(test)]
    pub(crate) routed: Vec<(PayloadKind, Vec<u8>)>,
    limits: Limits,
    security: Security,
    entropy: Entropy,
    /// A record's plaintext, reused.
    plain: Vec<u8>,
    next_conn: u64,
    next_client: u32,
    /// Every connection, by handle (a hash map: it is looked up several times per
    /// message; where order matters, handles are sorted first).
    conns: FxHashMap<ConnId, Connection>,
    /// Admitted clients: the routing table.
    clients: routes::Routes,
    deadlines: BTreeSet<(Timestamp, ConnId)>,
    ready: VecDeque<ConnId>,
    closes: VecDeque<ConnId>,
    events: VecDeque<ServerEvent>,
    /// Connections whose queue overflowed and that must be cut off.
    overflowed: Vec<ConnId>,
    /// When to look for clients that went silent, while any are admitted.
    next_sweep: Option<Timestamp>,
    /// Admitted clients that have not said exit: when it drops to zero, everyone is
    /// told that the conversation is over (`AllExited`).
    still_sending: usize,
    /// Silent new connections, by when to greet them in plain text.
    greetings: BTreeSet<(Timestamp, ConnId)>,
    /// File transfers under way through the relay: (sender, transfer) -> receiver, to
    /// enforce `max_transfers_per_client` and to tell one side when the other leaves.
    transfers: BTreeMap<(ClientId, crate::file::TransferId), ClientId>,
    shutting_down: bool,
    /// Connections open per network address (those the driver gave an address).
    per_address: FxHashMap<IpAddr, u32>,
    /// Broadcasts collected while a read is handled, fanned out at its end.
    batch: Broadcasts,
    /// Whether a read is being handled (broadcasts wait for its end).
    batching: bool,
    /// Sessions held for clients whose connection was lost, by when they expire.
    parked: BTreeSet<(Timestamp, ConnId)>,
    /// Clients whose `Delivered` may have advanced, to tell them after the input.
    delivered_due: Vec<ConnId>,
    /// Deliveries being settled, reused from one acknowledgement to the next.
    settling: Vec<(ClientId, u64)>,
    /// The connection whose read is being handled, and what it routed so far
    /// (sequence number, acknowledgements owed): see `sessions::routed`.
    routing: (Option<ConnId>, Vec<(u64, u32)>),
    /// Clients whose `Ack` or receipt waits for other traffic to ride with, each
    /// until its time (in order: times only grow).
    riders: VecDeque<(Timestamp, ConnId, u32)>,
    /// The latest time an input carried.
    now: Timestamp,
    /// (away client, sender) pairs whose sender was told its messages wait
    /// (`Held`), so that it is told once per absence, not once per message.
    told_held: FxHashSet<(ClientId, ClientId)>,
    /// A relay of a cluster: what it asks of the bus (`None`: a relay on its own).
    cluster: Option<cluster::Cluster>,
}

/// Broadcasts from one sender, encoded once, waiting to be fanned out.
#[derive(Debug, Clone, Default)]
struct Broadcasts {
    /// Their sender's connection and ID, while any are collected.
    sender: Option<(ConnId, ClientId)>,
    /// The `Deliver` frames, back to back.
    bytes: Vec<u8>,
    /// Each one's sequence number and where it ends in `bytes`.
    ends: Vec<(u64, usize)>,
}

/// How many online IDs an "unknown recipient" error lists before it stops.
const MAX_IDS_LISTED: usize = 20;

impl RelayServer {
    /// A server with these limits and no connections.
    ///
    /// With an identity in `security`, clients that offer to encrypt run the secure
    /// handshake with it; `security.encryption` says whether clients that do not are
    /// refused (`Required`, the default) or admitted in the clear; a password makes the
    /// handshake require it. `security.expect` is not used: a relay meets everyone.
    pub fn new(limits: Limits, security: Security) -> Self {
        let entropy = Entropy::new(security.seed);
        RelayServer {
            #[cfg(test)]
            routed: Vec::new(),
            limits,
            security,
            entropy,
            plain: Vec::new(),
            next_conn: 0,
            next_client: 0,
            conns: FxHashMap::default(),
            clients: routes::Routes::default(),
            deadlines: BTreeSet::new(),
            ready: VecDeque::new(),
            closes: VecDeque::new(),
            events: VecDeque::new(),
            overflowed: Vec::new(),
            next_sweep: None,
            still_sending: 0,
            greetings: BTreeSet::new(),
            transfers: BTreeMap::new(),
            shutting_down: false,
            per_address: FxHashMap::default(),
            batch: Broadcasts::default(),
            batching: false,
            parked: BTreeSet::new(),
            delivered_due: Vec::new(),
            settling: Vec::new(),
            routing: (None, Vec::new()),
            riders: VecDeque::new(),
            now: Timestamp::ZERO,
            told_held: FxHashSet::default(),
            cluster: None,
        }
    }

    /// The limits this server enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Clients admitted and still connected.
    pub fn online(&self) -> usize {
        self.clients.len()
    }

    /// Connections still in their handshake.
    pub fn pending_handshakes(&self) -> usize {
        self.deadlines.len()
    }

    /// The client ID of a connection, if it was admitted and is still connected.
    pub fn client_id(&self, conn: ConnId) -> Option<ClientId> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Admitted(client)) => Some(client.id),
            _ => None,
        }
    }

    /// Bytes queued or in flight towards a connection (0 for an unknown one).
    pub fn pending_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.out.pending())
    }

    /// A new transport connection arrived. Returns its handle for all later calls.
    ///
    /// When too many handshakes are pending, or the server is shutting down, the
    /// connection is closed at once (see `poll_close`).
    pub fn handle_connected(&mut self, now: Timestamp) -> ConnId {
        self.connected(None, now)
    }

    /// A new transport connection arrived from network address `address`: as
    /// [`RelayServer::handle_connected`], and the connection counts towards that
    /// address's limit (`Limits::max_connections_per_address`); past it, the client is
    /// refused with a reason once it says hello.
    pub fn handle_connected_from(&mut self, address: IpAddr, now: Timestamp) -> ConnId {
        self.connected(Some(address), now)
    }

    fn connected(&mut self, address: Option<IpAddr>, now: Timestamp) -> ConnId {
        let mut over_address_limit = false;
        if let Some(a) = address {
            let n = self.per_address.entry(a).or_insert(0);
            *n += 1;
            let limit = self.limits.max_connections_per_address;
            over_address_limit = limit > 0 && *n > limit;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let deadline = now + self.limits.handshake_timeout;
        self.conns.insert(
            conn,
            Connection {
                address,
                over_address_limit,
                decoder: FrameDecoder::new(self.limits.max_frame_len),
                inner: FrameDecoder::without_magic(self.limits.max_frame_len),
                secure: secure::ConnSecure::None,
                out: Outbound::new(self.limits.relay_queue_bytes()),
                state: ConnState::Handshaking {
                    deadline,
                    resume: None,
                },
                magic_sent: false,
                in_ready: false,
                received_any: false,
                text: None,
                parked_until: None,
                lost_by: ErrorCode::Normal,
            },
        );
        self.deadlines.insert((deadline, conn));
        self.greetings
            .insert((now + self.limits.text_greeting_delay, conn));
        if self.shutting_down {
            self.drop_pending(
                conn,
                ErrorCode::ServerShutdown,
                "the server is shutting down",
            );
        } else if self.deadlines.len() > self.limits.max_pending_handshakes {
            let detail = format!(
                "{} connections are already in their handshake",
                self.limits.max_pending_handshakes
            );
            self.drop_pending(conn, ErrorCode::TooManyHandshakes, &detail);
        }
        conn
    }

    /// Bytes arrived on a connection.
    pub fn handle_bytes(&mut self, conn: ConnId, bytes: &[u8], now: Timestamp) {
        self.now = self.now.max(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            ConnState::Closing => return,
            ConnState::Admitted(client) => client.last_heard = client.last_heard.max(now),
            ConnState::Handshaking { .. } => {}
        }
        if !c.received_any && !bytes.is_empty() {
            c.received_any = true;
            if bytes.first() != MAGIC.first() {
                // Anything but the magic's first byte: a plain-text client.
                self.become_plain_text(conn, now);
            }
        }
        if self.conns.get(&conn).is_some_and(|c| c.text.is_some()) {
            self.on_text_bytes(conn, bytes, now);
            self.cut_off_overflowed();
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // The decoder is taken out while its frames are handled, so that a chat can be
        // routed straight from the received bytes while other connections change.
        let mut decoder = std::mem::replace(&mut c.decoder, FrameDecoder::new(0));
        self.on_bytes(conn, &mut decoder, bytes, now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.decoder = decoder;
        }
        self.cut_off_overflowed();
    }

    /// Handles every frame `bytes` complete, in order, until the connection closes.
    /// On an encrypted connection the frames come out of records, decoded by the
    /// connection's inner decoder (taken out meanwhile, like the outer one).
    fn on_bytes(&mut self, conn: ConnId, decoder: &mut FrameDecoder, bytes: &[u8], now: Timestamp) {
        let mut bad_frame = None;
        let mut inner = match self.conns.get_mut(&conn) {
            Some(c) => std::mem::replace(&mut c.inner, FrameDecoder::new(0)),
            None => return,
        };
        // Broadcasts in these bytes are fanned out together (see `broadcast`).
        self.batching = true;
        self.begin_routing(conn);
        let fed = decoder.feed(bytes, |raw| {
            let Some(c) = self.conns.get(&conn) else {
                return false;
            };
            if matches!(c.state, ConnState::Closing) {
                return false;
            }
            // A frame arrived, so the magic is complete: ours goes out first.
            self.send_magic_once(conn);
            let result = if raw.type_byte == SEALED {
                self.open_record(conn, raw.body, &mut inner, now)
            } else if self.is_secure(conn) && !secure::CLEAR_WHILE_SECURE.contains(&raw.type_byte) {
                Err(DecodeError::Unencrypted {
                    type_byte: raw.type_byte,
                })
            } else {
                self.on_raw_frame(conn, raw, now)
            };
            match result {
                Ok(go_on) => go_on,
                Err(err) => {
                    bad_frame = Some(err);
                    false
                }
            }
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inner = inner;
        }
        self.batching = false;
        self.flush_broadcasts();
        self.end_routing();
        self.send_ack(conn, now);
        if decoder.magic_seen() {
            self.send_magic_once(conn);
        }
        if let Some(err) = bad_frame {
            decoder.fail();
            self.on_decode_error(conn, &err);
        } else if let Err(err) = fed {
            self.on_decode_error(conn, &err);
        }
    }

    /// One frame, in the clear or out of a record: a chat is routed straight from its
    /// bytes, anything else decoded. Returns whether to go on reading.
    fn on_raw_frame(
        &mut self,
        conn: ConnId,
        raw: RawFrame<'_>,
        now: Timestamp,
    ) -> Result<bool, DecodeError> {
        let admitted = match self.conns.get_mut(&conn).map(|c| &mut c.state) {
            Some(ConnState::Admitted(client)) => {
                // Counted before it is handled: handling may move the session.
                if let Some(session) = client.session.as_mut() {
                    session.count_received(&raw);
                }
                true
            }
            Some(ConnState::Handshaking { .. }) => false,
            Some(ConnState::Closing) | None => return Ok(false),
        };
        let chat = if raw.type_byte == ChatRef::TYPE && admitted {
            Some(ChatRef::parse(raw.body)?)
        } else {
            None
        };
        // Anything but another broadcast waits until the broadcasts before it are out,
        // so that every recipient sees one order.
        if !matches!(chat, Some(c) if c.to.is_broadcast()) {
            self.flush_broadcasts();
        }
        match chat {
            Some(chat) => self.on_chat(conn, chat),
            None => {
                let frame = Frame::decode(raw.type_byte, raw.body)?;
                self.on_frame(conn, frame, now);
            }
        }
        Ok(self
            .conns
            .get(&conn)
            .is_some_and(|c| !matches!(c.state, ConnState::Closing)))
    }

    /// Queues our magic once theirs has arrived in full (never before: a stream that
    /// turns out not to be p2pchat must not be answered with binary).
    fn send_magic_once(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.magic_sent
        {
            c.magic_sent = true;
            c.out.push_bytes(&MAGIC);
            self.mark_ready(conn);
        }
    }

    /// The driver wrote `n` bytes of what `poll_transmit` gave it for `conn`.
    pub fn handle_written(&mut self, conn: ConnId, n: usize) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.confirm_written(n);
            if c.out.has_queued() {
                // The rest of a resend went on the wire.
                self.mark_ready(conn);
            }
        }
    }

    /// The transport connection ended (EOF, reset, or the close the server asked for).
    /// The handle is forgotten afterwards.
    pub fn handle_closed(&mut self, conn: ConnId, now: Timestamp) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(a) = c.address
            && let Some(n) = self.per_address.get_mut(&a)
        {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&a);
            }
        }
        match c.state {
            ConnState::Handshaking { deadline, .. } => {
                self.deadlines.remove(&(deadline, conn));
                self.events.push_back(ServerEvent::Dropped {
                    conn,
                    code: ErrorCode::ConnectionLost,
                    detail: "closed before completing the handshake".into(),
                });
            }
            ConnState::Admitted(client) if client.session.is_some() => {
                // It may come back: its ID and what is sent to it are held for it.
                let retained = c.out.take_retained();
                self.park(client, retained, ErrorCode::ConnectionLost, now);
                self.flush_delivered(now);
            }
            ConnState::Admitted(mut client) => {
                self.clients.remove(&client.id);
                let (code, detail) = if client.exited {
                    (ErrorCode::Normal, "left after saying exit".to_owned())
                } else {
                    (
                        ErrorCode::ConnectionLost,
                        "connection closed without exit".to_owned(),
                    )
                };
                let owed = Self::owed_by(self.cluster.as_mut(), &mut client);
                self.announce_left(conn, client.id, client.exited, code, detail, owed);
                self.cut_off_overflowed();
                self.flush_delivered(now);
            }
            ConnState::Closing => {}
        }
    }

    /// Time passed: expire handshakes whose deadline is at or before `now`, and cut
    /// off clients that have been silent for the idle timeout (a live client pings
    /// when it has nothing to say, so silence means its machine or link is gone).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(deadline, conn)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            // Removed first, so that the loop always advances whatever state the
            // connection is in.
            self.deadlines.remove(&(deadline, conn));
            let secs = self.limits.handshake_timeout.as_secs_f64();
            let detail = format!("no complete handshake within {secs} s");
            self.drop_pending(conn, ErrorCode::HandshakeTimeout, &detail);
        }
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep_silent(now);
        }
        self.expire_parked(now);
        self.plain_text_timeouts(now);
        self.flush_delivered(now);
    }

    /// Cuts off every client not heard from for `idle_timeout`, then schedules the
    /// next sweep. A sweep every third of the timeout keeps detection within 4/3 of
    /// it while costing one pass over the clients, not one timer per client.
    fn sweep_silent(&mut self, now: Timestamp) {
        self.release_idle_buffers();
        let idle = self.limits.idle_timeout;
        let silent: Vec<ConnId> = self
            .clients
            .values()
            .filter(|conn| match self.conns.get(conn) {
                Some(Connection {
                    state: ConnState::Admitted(client),
                    parked_until: None,
                    ..
                }) => !client.plain_text && !client.remote && client.last_heard + idle <= now,
                _ => false,
            })
            .copied()
            .collect();
        for conn in silent {
            if self.has_session(conn) {
                // Its link may be down one way only; the client may be back soon.
                self.park_silent(conn, now);
                continue;
            }
            let detail = format!("nothing heard for {} s; the client is gone", idle.as_secs());
            self.close_client(conn, ErrorCode::PeerTimeout, detail, false);
        }
        self.cut_off_overflowed();
        self.next_sweep = (!self.clients.is_empty()).then(|| now + idle / 3);
    }

    /// Begins an orderly shutdown: every connection is told why and closed; new
    /// connections are closed at once.
    pub fn shutdown(&mut self, _now: Timestamp) {
        self.shutting_down = true;
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            match self.conns.get(&conn).map(|c| &c.state) {
                Some(ConnState::Handshaking { .. }) => {
                    self.drop_pending(
                        conn,
                        ErrorCode::ServerShutdown,
                        "the server is shutting down",
                    );
                }
                Some(ConnState::Admitted(client)) if !client.remote => {
                    self.close_client(
                        conn,
                        ErrorCode::ServerShutdown,
                        "the server is shutting down".into(),
                        false,
                    );
                }
                _ => {}
            }
        }
    }

    /// The next batch of bytes to write, one connection at a time, in the order the
    /// connections became ready. Drain this before `poll_close`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(conn) = self.ready.pop_front() {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.in_ready = false;
            if let Some(bytes) = c.out.take(c.secure.channel()) {
                if let ConnState::Admitted(client) = &c.state
                    && client.remote
                {
                    let to = client.id;
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.forward(to, bytes);
                    }
                    continue;
                }
                return Some(Transmit { conn, bytes });
            }
        }
        None
    }

    /// A connection the driver should close after writing the bytes already polled
    /// for it. The driver then reports `handle_closed`.
    pub fn poll_close(&mut self) -> Option<ConnId> {
        self.closes.pop_front()
    }

    /// The next event for the server's log.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When the driver must call `handle_timeout` next, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            self.deadlines.first().map(|&(at, _)| at),
            self.next_sweep,
            self.parked.first().map(|&(at, _)| at),
            self.riders_deadline(),
            self.greetings.first().map(|&(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- frames -------------------------------------------------------------------

    fn on_frame(&mut self, conn: ConnId, frame: Frame, now: Timestamp) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            ConnState::Closing => {}
            ConnState::Handshaking { .. } => match frame {
                Frame::Hello(hello) if matches!(c.secure, secure::ConnSecure::None) => {
                    self.on_hello(conn, hello, now)
                }
                Frame::Handshake { pattern, message } => {
                    self.on_handshake_frame(conn, pattern, &message, now)
                }
                Frame::Resume {
                    id,
                    token,
                    received,
                } => self.on_resume(conn, id, token, received, now),
                other => {
                    let detail =
                        format!("{} before Hello: the handshake comes first", other.name());
                    self.drop_pending(conn, ErrorCode::UnexpectedFrame, &detail);
                }
            },
            ConnState::Admitted(_) => match frame {
                Frame::Chat { to, seq, payload } => self.on_chat(
                    conn,
                    ChatRef {
                        to,
                        seq,
                        kind: payload.kind,
                        body: &payload.body,
                    },
                ),
                Frame::Who => {
                    let roster = self.roster();
                    self.enqueue(conn, &roster);
                }
                Frame::Lookup { id } => {
                    let answer = self.profile(id);
                    self.enqueue(conn, &answer);
                }
                Frame::Exit => self.on_exit(conn),
                Frame::Ack { received } => self.on_ack(conn, received),
                Frame::Ping(nonce) => self.enqueue(conn, &Frame::Pong(nonce)),
                Frame::Pong(_) | Frame::Error(_) => {}
                Frame::Close { .. } => {
                    let detail = "closed by the client".to_owned();
                    self.close_client(conn, ErrorCode::Normal, detail, true);
                }
                other => {
                    let detail = format!("a client may not send {} to the relay", other.name());
                    self.close_client(conn, ErrorCode::UnexpectedFrame, detail, false);
                }
            },
        }
    }

    fn on_hello(&mut self, conn: ConnId, hello: Hello, now: Timestamp) {
        if let Some((code, reason)) = self.admission_refusal(conn, &hello) {
            self.refuse(conn, code, reason);
            return;
        }
        if self.on_secure_hello(conn, &hello) {
            return;
        }
        self.admit_hello(conn, hello, None, now);
    }

    /// Admits the client whose `Hello` this is, with the key its handshake proved
    /// (`None`: admitted in the clear); or, for a `Hello` that comes back to a
    /// session, waits for its `Resume`.
    fn admit_hello(&mut self, conn: ConnId, hello: Hello, key: Option<PublicKey>, now: Timestamp) {
        let capabilities = hello.capabilities & CAPABILITIES;
        if hello.resuming && capabilities & CAP_RESUME != 0 {
            self.await_resume(conn, key, capabilities & CAP_MOVES != 0);
            return;
        }
        let welcome = Welcome {
            version: negotiate_version(&hello).unwrap_or(PROTOCOL_VERSION),
            capabilities,
            client_id: ClientId(0),
            max_clients: self.limits.max_clients,
        };
        let session = (capabilities & CAP_RESUME != 0).then(|| self.new_session());
        let (token, grace_ms) = (
            session.as_ref().map(|s| s.token),
            u32::try_from(self.limits.resume_grace.as_millis()).unwrap_or(u32::MAX),
        );
        let max_retained = self.limits.relay_queue_bytes();
        self.admit(conn, hello.name, key, now, move |id, out| {
            out.push(&Frame::Welcome(Welcome {
                client_id: id,
                ..welcome
            }));
            if let Some(token) = token {
                out.push(&Frame::ResumeToken { token, grace_ms });
                // The session stream begins with the roster, right after.
                out.retain_session(max_retained);
            }
        });
        self.attach_session(conn, session);
    }

    /// Gives the client on `conn` its session: now if it is admitted, or once the
    /// cluster admits it.
    fn attach_session(&mut self, conn: ConnId, session: Option<Box<sessions::ClientSession>>) {
        match self.conns.get_mut(&conn).map(|c| &mut c.state) {
            Some(ConnState::Admitted(client)) => client.session = session,
            _ => {
                if let Some(cluster) = self.cluster.as_mut() {
                    cluster.keep_session(conn, session);
                }
            }
        }
    }

    /// Turns a connection away with a reason it can read, and closes it.
    fn refuse(&mut self, conn: ConnId, code: ErrorCode, reason: String) {
        let (online, limit) = (self.online() as u32, self.limits.max_clients);
        self.refuse_with(conn, code, reason, online, limit);
    }

    /// [`RelayServer::refuse`], saying `online` of `limit` (a cluster's figures).
    fn refuse_with(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        reason: String,
        online: u32,
        limit: u32,
    ) {
        let refused = Frame::Refused(Refused {
            code,
            online,
            limit,
            reason: reason.clone(),
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.push_reply(&refused);
        }
        self.events
            .push_back(ServerEvent::Refused { conn, code, reason });
        self.begin_close(conn);
    }

    /// Admits a connection as a client: next ID, greeting (`welcome` queues it, in
    /// the connection's own wire format), roster, and the news to everyone else.
    fn admit(
        &mut self,
        conn: ConnId,
        name: String,
        key: Option<PublicKey>,
        now: Timestamp,
        welcome: impl FnOnce(ClientId, &mut Outbound) + Send + 'static,
    ) {
        if let Some(cluster) = self.cluster.as_mut() {
            // The cluster decides the ID (`handle_admission`); meanwhile the
            // connection stays in its handshake, under its deadline.
            cluster.await_admission(conn, name, key, Box::new(welcome));
            return;
        }
        let id = ClientId(self.next_client);
        self.next_client += 1;
        self.admit_as(conn, id, name, key, now, welcome);
    }

    /// Admits a connection as client `id` (see [`RelayServer::admit`]).
    fn admit_as(
        &mut self,
        conn: ConnId,
        id: ClientId,
        name: String,
        key: Option<PublicKey>,
        now: Timestamp,
        welcome: impl FnOnce(ClientId, &mut Outbound),
    ) {
        let plain_text = self.conns.get(&conn).is_some_and(|c| c.text.is_some());
        if let Some(c) = self.conns.get_mut(&conn) {
            if let ConnState::Handshaking { deadline, .. } = c.state {
                self.deadlines.remove(&(deadline, conn));
            }
            c.state = ConnState::Admitted(Client {
                id,
                name: name.clone(),
                key,
                exited: false,
                last_seq: 0,
                last_heard: now,
                plain_text,
                bucket: rate::TokenBucket::new(self.limits.message_burst, now),
                strikes: strikes::Strikes::default(),
                session: None,
                remote: false,
                via_mail: false,
            });
            welcome(id, &mut c.out);
        }
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.limits.idle_timeout / 3);
        }
        self.clients.insert(id, conn);
        self.still_sending += 1;
        self.queue_roster(conn);
        self.mark_ready(conn);
        self.events.push_back(ServerEvent::Admitted {
            conn,
            id,
            name: name.clone(),
        });
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.announce(RosterEntry {
                id,
                exited: false,
                away: false,
                name: name.clone(),
                key,
            });
        }
        if self.presence_on() {
            self.notify_others(id, &Frame::Joined { id, name, key });
        }
    }

    /// Queues the roster to a client that just came in (admitted, or moved here).
    fn queue_roster(&mut self, conn: ConnId) {
        let roster = self.roster();
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.out.try_push(&roster)
        {
            // A queue bound smaller than the roster: send the count alone.
            c.out.push(&Frame::Roster {
                total: u32::try_from(self.clients.len()).unwrap_or(u32::MAX),
                entries: Vec::new(),
            });
        }
    }

    /// Why a `Hello` cannot be admitted, if it cannot.
    fn admission_refusal(&self, conn: ConnId, hello: &Hello) -> Option<(ErrorCode, String)> {
        if hello.role != Role::RelayClient {
            return Some((
                ErrorCode::WrongRole,
                "this is a p2pchat relay server: join it with `p2pchat join`, not `p2pchat connect`".into(),
            ));
        }
        if let Err(why) = negotiate_version(hello) {
            return Some((ErrorCode::UnsupportedVersion, why));
        }
        if let Err(why) = validate_name(&hello.name, self.limits.max_name_len) {
            return Some((ErrorCode::InvalidName, why));
        }
        match self.capacity_refusal(conn) {
            // A client coming back holds its place already.
            Some((ErrorCode::ServerFull, _)) if hello.resuming => None,
            other => other,
        }
    }

    /// Why connection `conn` cannot be admitted now, whoever it is: shutting down,
    /// too many connections from its address, or full.
    pub(super) fn capacity_refusal(&self, conn: ConnId) -> Option<(ErrorCode, String)> {
        if self.shutting_down {
            return Some((
                ErrorCode::ServerShutdown,
                "the server is shutting down".into(),
            ));
        }
        let per_address = self.limits.max_connections_per_address;
        if let Some(address) = self
            .conns
            .get(&conn)
            .filter(|c| c.over_address_limit)
            .and_then(|c| c.address)
        {
            return Some((
                ErrorCode::TooManyFromAddress,
                format!(
                    "too many connections from {address}: this relay allows {per_address} from one address"
                ),
            ));
        }
        let online = self.online();
        if online >= self.limits.max_clients as usize {
            return Some((
                ErrorCode::ServerFull,
                format!(
                    "server full: {online} of {} clients connected; try again later",
                    self.limits.max_clients
                ),
            ));
        }
        None
    }

    /// The admitted client on `conn`.
    fn admitted(&self, conn: ConnId) -> Option<&Client> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Admitted(client)) => Some(client),
            _ => None,
        }
    }

    /// Routes a chat from an admitted client: to one client, or to everyone else.
    fn on_chat(&mut self, conn: ConnId, chat: ChatRef<'_>) {
        self.on_checked_chat(conn, chat, false);
    }

    /// [`RelayServer::on_chat`], for a chat whose text is known to be UTF-8 when
    /// `utf8_known` (a plain-text client's line was checked as it was split off).
    fn on_checked_chat(&mut self, conn: ConnId, chat: ChatRef<'_>, utf8_known: bool) {
        if let Some((code, detail)) = self.check_text(&chat, utf8_known) {
            self.close_client(conn, code, detail, false);
            return;
        }
        let Some(ConnState::Admitted(client)) = self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return;
        };
        let (from, to, seq) = (client.id, chat.to, chat.seq);
        #[cfg(test)]
        self.routed.push((chat.kind, chat.body.to_vec()));
        // Exit stops chat; file traffic (acknowledgements, the end of a transfer) and
        // key exchange (a group key a client asks for) go on.
        if client.exited && !chat.kind.is_housekeeping() {
            let report = error_report(
                ErrorCode::SendAfterExit,
                seq,
                Some(to),
                "you said exit, so the relay accepts no more messages from you".into(),
            );
            if !self.strike(conn, "a message after exit") {
                self.enqueue(conn, &report);
            }
            return;
        }
        if seq <= client.last_seq {
            let message = format!(
                "sequence number {seq} is not above the previous {}; message not delivered",
                client.last_seq
            );
            let report = error_report(ErrorCode::BadSequence, seq, Some(to), message);
            if !self.strike(conn, "a repeated sequence number") {
                self.enqueue(conn, &report);
            }
            return;
        }
        client.last_seq = seq;
        let (rate, burst) = (self.limits.message_rate, self.limits.message_burst);
        if rate > 0
            && !chat.kind.is_housekeeping()
            && !client.bucket.take(client.last_heard, rate, burst)
            && client.bucket.notice_due(client.last_heard)
        {
            let message = format!(
                "you are sending faster than this relay allows ({rate} messages a second, bursts of {burst}); it reads from you more slowly, and nothing is lost"
            );
            let notice = error_report(ErrorCode::RateLimited, seq, None, message);
            self.enqueue(conn, &notice);
        }
        if chat.kind.is_file()
            && let Err(why) = self.check_file(from, to, chat.kind, chat.body)
        {
            let report = error_report(ErrorCode::FileRefused, seq, Some(to), why);
            self.enqueue(conn, &report);
            self.routed(conn, seq, 0);
            return;
        }

        if to.is_broadcast() {
            self.broadcast(conn, from, &chat);
        } else if let Some(&target) = self.clients.get(&to) {
            let owed = self.deliver(conn, from, target, to, &chat);
            // Counted before the notice below, which a receipt may ride with.
            self.routed(conn, seq, owed);
            if let Some(until) = self.conns.get(&target).and_then(|t| t.parked_until) {
                self.tell_held(conn, from, to, seq, until);
            }
        } else {
            let message = self.unknown_recipient_message(to);
            let report = error_report(ErrorCode::UnknownRecipient, seq, Some(to), message);
            self.enqueue(conn, &report);
            self.routed(conn, seq, 0);
        }
    }

    /// Routes one `Deliver` from `from` (on `sender`) to client `to` (on `target`); if
    /// the recipient's queue is full, the recipient is cut off and the sender is told
    /// that this message did not get through. Returns how many acknowledgements the
    /// message now waits for: 1 if the recipient has a session (it acknowledges what it
    /// reads), else 0 (it counts as delivered once queued).
    fn deliver(
        &mut self,
        sender: ConnId,
        from: ClientId,
        target: ConnId,
        to: ClientId,
        chat: &ChatRef<'_>,
    ) -> u32 {
        // A session that moved here sends and receives through mailboxes, so that
        // its messages keep their order behind those its old relay forwarded.
        let sender_moved = self.conns.get(&sender).is_some_and(Connection::via_mail);
        let Some(t) = self.conns.get_mut(&target) else {
            return 0;
        };
        if (sender_moved || t.via_mail())
            && let ConnState::Admitted(Client { id, .. }) = &t.state
            && let Some(cluster) = self.cluster.as_mut()
        {
            let mut bytes = Vec::new();
            encode_deliver(&mut bytes, from, chat.to, chat.seq, chat.kind, chat.body);
            cluster.forward(*id, bytes);
            cluster.await_receipt(*id, from, chat.seq);
            return 1;
        }
        if t.out.try_push_deliver(from, chat) {
            let owes = match &mut t.state {
                ConnState::Admitted(Client {
                    session: Some(session),
                    ..
                }) => {
                    session.owe(t.out.stream_end(), from, chat.seq);
                    1
                }
                // On another relay: delivered when its relay says it was read.
                ConnState::Admitted(Client {
                    remote: true, id, ..
                }) => match self.cluster.as_mut() {
                    Some(cluster) => {
                        cluster.await_receipt(*id, from, chat.seq);
                        1
                    }
                    None => 0,
                },
                _ => 0,
            };
            self.mark_ready(target);
            owes
        } else {
            self.did_not_fit(sender, target, to, chat.seq);
            0
        }
    }

    /// Tells the sender of a message to an away client, once while it is away, that
    /// the message waits for it and until when (`Held`).
    fn tell_held(
        &mut self,
        sender: ConnId,
        from: ClientId,
        to: ClientId,
        seq: u64,
        until: Timestamp,
    ) {
        if !self.told_held.insert((to, from)) {
            return;
        }
        let wait = until.saturating_duration_since(self.now);
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        self.enqueue(sender, &Frame::Held { to, seq, wait_ms });
    }

    /// Routes one chat to every online client but its sender. The `Deliver` is the
    /// same bytes for all of them, so it is encoded once; and while a read is being
    /// handled (`batching`), the broadcasts in it are collected and each recipient gets
    /// them all with one copy, as `ncat --broker` forwards a read, instead of one
    /// copy (and one lookup) per message per recipient.
    fn broadcast(&mut self, sender: ConnId, from: ClientId, chat: &ChatRef<'_>) {
        if self.clients.len() <= 1 {
            let report = error_report(
                ErrorCode::NoRecipients,
                chat.seq,
                None,
                "nobody else is online to receive this message".into(),
            );
            self.enqueue(sender, &report);
            self.routed(sender, chat.seq, 0);
            return;
        }
        if self.batch.sender != Some((sender, from)) {
            self.flush_broadcasts();
            self.batch.sender = Some((sender, from));
        }
        encode_deliver(
            &mut self.batch.bytes,
            from,
            chat.to,
            chat.seq,
            chat.kind,
            chat.body,
        );
        self.batch.ends.push((chat.seq, self.batch.bytes.len()));
        if !self.batching {
            self.flush_broadcasts();
        }
    }

    /// Fans the collected broadcasts out to every online client but their sender.
    fn flush_broadcasts(&mut self) {
        let Some((sender, from)) = self.batch.sender.take() else {
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        let mut full = Vec::new();
        // Split borrows: the routing table is read while the queues are written.
        let Self {
            clients,
            conns,
            ready,
            cluster,
            ..
        } = self;
        // Clients on other relays get the batch once, through the bus, from a sender
        // of ours (a batch that came from the bus is not sent back to it).
        let from_here = conns.get(&sender).is_some_and(|c| !c.is_remote());
        let mut any_remote = false;
        // Clients on other relays that this batch waits for receipts from (a sender
        // of ours: their relays tell us when they read it).
        let mut remote_readers = Vec::new();
        // How many acknowledgements each message of the batch waits for.
        let mut owed = vec![0u32; batch.ends.len()];
        // One copy of the batch that every recipient's session stream keeps, and of
        // the list of its messages that every recipient owes acknowledgements for.
        let shared: Arc<[u8]> = Arc::from(batch.bytes.as_slice());
        let messages: Arc<[(u64, usize)]> = Arc::from(batch.ends.as_slice());
        // Recipients that took the whole batch (each owes all of it).
        let mut took_all = 0u32;
        for &(id, target) in clients.as_slice() {
            if id == from {
                continue;
            }
            let Some(t) = conns.get_mut(&target) else {
                continue;
            };
            if t.is_remote() {
                any_remote = true;
                if from_here {
                    remote_readers.push(id);
                }
                continue;
            }
            let before = t.out.stream_end();
            match t.out.try_push_shared_deliveries(&shared, &batch.ends) {
                Ok(()) => {
                    if !t.in_ready && t.parked_until.is_none() {
                        t.in_ready = true;
                        ready.push_back(target);
                    }
                }
                Err(seq) => full.push((id, target, seq)),
            }
            // What did fit is queued either way, and a recipient with a session owes an
            // acknowledgement for each.
            if t.out.has_queued() && !t.in_ready && t.parked_until.is_none() {
                t.in_ready = true;
                ready.push_back(target);
            }
            if let ConnState::Admitted(Client {
                session: Some(session),
                ..
            }) = &mut t.state
            {
                let after = t.out.stream_end();
                let queued = batch
                    .ends
                    .iter()
                    .take_while(|&&(_, end)| before + end as u64 <= after)
                    .count();
                session.owe_batch(before, from, &messages, queued);
                if queued == batch.ends.len() {
                    took_all += 1;
                } else {
                    for owes in owed.iter_mut().take(queued) {
                        *owes += 1;
                    }
                }
            }
        }
        let mut awaited = 0u32;
        if any_remote
            && from_here
            && let Some(cluster) = cluster.as_mut()
        {
            cluster.broadcast(batch.bytes.clone());
            for &reader in &remote_readers {
                for &(seq, _) in &batch.ends {
                    cluster.await_receipt(reader, from, seq);
                }
            }
            awaited = u32::try_from(remote_readers.len()).unwrap_or(u32::MAX);
        }
        for (&(seq, _), &n) in batch.ends.iter().zip(&owed) {
            self.routed(sender, seq, n + took_all + awaited);
        }
        // Keep the buffers' capacity for the next batch.
        self.batch = Broadcasts {
            bytes: batch.bytes,
            ends: batch.ends,
            ..Broadcasts::default()
        };
        self.batch.bytes.clear();
        self.batch.ends.clear();
        for (id, target, seq) in full {
            self.did_not_fit(sender, target, id, seq);
        }
    }

    /// A message for client `to` (on `target`) did not fit its queue: it is cut off,
    /// and the sender (unless it is the same connection) is told that this message
    /// did not get through.
    fn did_not_fit(&mut self, sender: ConnId, target: ConnId, to: ClientId, seq: u64) {
        if !self.overflowed.contains(&target) {
            self.overflowed.push(target);
        }
        if sender != target {
            let message = format!(
                "client {to} was disconnected for not reading fast enough; your message {seq} did not reach it"
            );
            let report = error_report(ErrorCode::SlowConsumer, seq, Some(to), message);
            self.enqueue(sender, &report);
        }
    }

    fn check_text(&self, chat: &ChatRef<'_>, utf8_known: bool) -> Option<(ErrorCode, String)> {
        if chat.kind != PayloadKind::Text {
            return None;
        }
        if chat.body.len() > self.limits.max_text_len {
            return Some((
                ErrorCode::MessageTooLong,
                format!(
                    "a message of {} bytes exceeds the limit of {} bytes",
                    chat.body.len(),
                    self.limits.max_text_len
                ),
            ));
        }
        if !utf8_known && core::str::from_utf8(chat.body).is_err() {
            return Some((
                ErrorCode::InvalidUtf8,
                "message text is not valid UTF-8".into(),
            ));
        }
        None
    }

    fn on_exit(&mut self, conn: ConnId) {
        let Some(ConnState::Admitted(client)) = self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return;
        };
        if client.exited {
            return;
        }
        client.exited = true;
        let id = client.id;
        if let Some(entry) = self.roster_entry(conn)
            && let Some(cluster) = self.cluster.as_mut()
        {
            cluster.update(entry);
        }
        self.events.push_back(ServerEvent::Exited { id });
        if self.presence_on() {
            self.notify_others(id, &Frame::Exited { id });
        }
        self.one_less_sending();
    }

    /// A client stopped sending (said exit, or left without saying it). When it was
    /// the last one, everyone online has said exit: tell them all, once.
    fn one_less_sending(&mut self) {
        self.still_sending = self.still_sending.saturating_sub(1);
        if self.still_sending == 0 && !self.clients.is_empty() {
            let everyone: Vec<ConnId> = self.clients.values().copied().collect();
            for conn in everyone {
                self.enqueue(conn, &Frame::AllExited);
                // A plain-text client cannot act on AllExited: the relay closes it.
                let plain = matches!(
                    self.conns.get(&conn).map(|c| &c.state),
                    Some(ConnState::Admitted(Client {
                        plain_text: true,
                        ..
                    }))
                );
                if plain {
                    let detail = "everyone has said exit".to_owned();
                    self.close_client(conn, ErrorCode::Normal, detail, true);
                }
            }
        }
    }

    /// Whether presence notices (joins, exits, departures) go out: only while the
    /// relay is small enough for their O(clients) fan-out.
    fn presence_on(&self) -> bool {
        self.clients.len() <= self.limits.presence_limit as usize
    }

    fn on_decode_error(&mut self, conn: ConnId, err: &DecodeError) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let DecodeError::BadMagic { .. } = err {
            // Not a p2pchat client: answer in plain text, the only thing it can read.
            c.out.push_bytes(
                b"p2pchat: this relay speaks the p2pchat protocol; connect with `p2pchat join`\n",
            );
        }
        let detail = err.to_string();
        match c.state {
            ConnState::Admitted(_) => self.close_client(conn, err.code(), detail, false),
            _ => self.drop_pending(conn, err.code(), &detail),
        }
    }

    // ----- closing ------------------------------------------------------------------

    /// Closes a connection still in its handshake, telling it why if it can understand.
    fn drop_pending(&mut self, conn: ConnId, code: ErrorCode, detail: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let ConnState::Handshaking { deadline, .. } = c.state {
            self.deadlines.remove(&(deadline, conn));
        }
        if c.magic_sent {
            c.out.push_reply(&Frame::Close {
                code,
                message: detail.to_owned(),
            });
        }
        self.events.push_back(ServerEvent::Dropped {
            conn,
            code,
            detail: detail.to_owned(),
        });
        self.begin_close(conn);
    }

    /// What a departing client still owed acknowledgements for: what was queued to
    /// it; for one whose messages come through its mailbox, what was sent to it
    /// from here (its other senders' relays know their own).
    fn owed_by(cluster: Option<&mut cluster::Cluster>, client: &mut Client) -> sessions::Owed {
        let queued = sessions::take_owed(client);
        match cluster {
            Some(cluster) if client.via_mail => cluster.take_awaiting(client.id),
            _ => queued,
        }
    }

    /// Closes an admitted client's connection and tells everybody else it left.
    /// `orderly` is true when the client itself asked to close.
    fn close_client(&mut self, conn: ConnId, code: ErrorCode, detail: String, orderly: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ConnState::Admitted(client) = &mut c.state else {
            return;
        };
        let id = client.id;
        let exited = client.exited;
        let owed = Self::owed_by(self.cluster.as_mut(), client);
        if !orderly && c.parked_until.is_none() {
            if code == ErrorCode::SlowConsumer {
                // It cannot read what is queued anyway; make the reason the next thing it sees.
                c.out.discard_queued();
            }
            c.out.push(&Frame::Close {
                code,
                message: detail.clone(),
            });
        }
        self.clients.remove(&id);
        self.begin_close(conn);
        self.announce_left(conn, id, exited, code, detail, owed);
    }

    /// Logs a departure, tells the others (while presence is on), tells the senders of
    /// the messages it had not yet acknowledged (`owed`) that they did not reach it,
    /// and counts a client that left without saying exit as one less sender.
    fn announce_left(
        &mut self,
        conn: ConnId,
        id: ClientId,
        exited: bool,
        code: ErrorCode,
        detail: String,
        owed: sessions::Owed,
    ) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.withdraw_if_ours(id, code);
        }
        self.report_undelivered(id, code, owed);
        self.told_held.retain(|&(away, _)| away != id);
        let partners = self.forget_transfers(id);
        self.events.push_back(ServerEvent::Left {
            conn,
            id,
            code,
            detail,
        });
        if self.presence_on() {
            self.notify_others(id, &Frame::Left { id, code });
        } else {
            // Without presence, those with a file transfer with it must still learn
            // that it is gone, or their transfer would wait forever.
            for partner in partners {
                if let Some(&conn) = self.clients.get(&partner) {
                    self.enqueue(conn, &Frame::Left { id, code });
                }
            }
        }
        if !exited {
            self.one_less_sending();
        }
    }

    fn begin_close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(until) = c.parked_until {
                // A held session has no transport to close: it is simply forgotten.
                self.parked.remove(&(until, conn));
                self.conns.remove(&conn);
                return;
            }
            if let ConnState::Handshaking { deadline, .. } = c.state {
                self.deadlines.remove(&(deadline, conn));
            }
            if matches!(c.state, ConnState::Closing) {
                return;
            }
            c.state = ConnState::Closing;
            self.closes.push_back(conn);
            self.mark_ready(conn);
        }
    }

    /// Cuts off every connection whose queue overflowed, including those that overflow
    /// on the departure notices this sends (hence the loop).
    fn cut_off_overflowed(&mut self) {
        while let Some(conn) = self.overflowed.pop() {
            let limit = self.limits.relay_queue_bytes();
            let detail = format!(
                "disconnected for not reading fast enough: more than {limit} bytes were waiting for you"
            );
            self.close_client(conn, ErrorCode::SlowConsumer, detail, false);
        }
    }

    // ----- helpers ------------------------------------------------------------------

    /// The roster frame: everyone online in ID order, cut to `max_roster_bytes`.
    fn roster(&self) -> Frame {
        // Frame header: length, type, total, count.
        let mut size = 4 + 1 + 4 + 4;
        let mut entries = Vec::new();
        for &conn in self.clients.values() {
            let Some(entry) = self.roster_entry(conn) else {
                continue;
            };
            size += 4 + 1 + 1 + entry.name.len() + if entry.key.is_some() { 32 } else { 0 };
            if size > self.limits.max_roster_bytes {
                break;
            }
            entries.push(entry);
        }
        Frame::Roster {
            total: u32::try_from(self.clients.len()).unwrap_or(u32::MAX),
            entries,
        }
    }

    /// What a roster says of the client on `conn` (online or away).
    fn roster_entry(&self, conn: ConnId) -> Option<RosterEntry> {
        let c = self.conns.get(&conn)?;
        let ConnState::Admitted(client) = &c.state else {
            return None;
        };
        Some(RosterEntry {
            id: client.id,
            exited: client.exited,
            away: c.parked_until.is_some()
                || (client.remote
                    && self
                        .cluster
                        .as_ref()
                        .is_some_and(|cl| cl.is_away(client.id))),
            name: client.name.clone(),
            key: client.key,
        })
    }

    /// Tells the cluster's other relays how our client on `conn` is now (away, back).
    fn publish_presence(&mut self, conn: ConnId) {
        if self.cluster.is_some()
            && let Some(entry) = self.roster_entry(conn)
            && let Some(cluster) = self.cluster.as_mut()
        {
            cluster.update(entry);
        }
    }

    /// The answer to a `Lookup` of client `id`: its roster entry, or an error naming
    /// who is online.
    fn profile(&self, id: ClientId) -> Frame {
        let entry = self
            .clients
            .get(&id)
            .and_then(|&conn| self.roster_entry(conn));
        match entry {
            Some(entry) => Frame::Profile(entry),
            None => error_report(
                ErrorCode::UnknownRecipient,
                0,
                Some(id),
                self.unknown_recipient_message(id),
            ),
        }
    }

    /// Sends a notice to every admitted client except `about`.
    fn notify_others(&mut self, about: ClientId, frame: &Frame) {
        let targets: Vec<ConnId> = self
            .clients
            .as_slice()
            .iter()
            .filter(|&&(id, _)| id != about)
            .map(|&(_, conn)| conn)
            .collect();
        for conn in targets {
            self.enqueue(conn, frame);
        }
    }

    /// Queues a frame for a connection under its bound; marks it for cut-off if full.
    fn enqueue(&mut self, conn: ConnId, frame: &Frame) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // Notices, errors and receipts are each relay's own business: a client on
        // another relay hears them from its relay, never through the bus.
        if matches!(c.state, ConnState::Closing) || c.is_remote() {
            return;
        }
        if c.out.try_push(frame) {
            self.mark_ready(conn);
        } else if !self.overflowed.contains(&conn) {
            self.overflowed.push(conn);
        }
    }

    fn mark_ready(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.in_ready
            && c.parked_until.is_none()
            && c.out.has_queued()
        {
            c.in_ready = true;
            self.ready.push_back(conn);
            // Company for an `Ack` or receipt that waited for some.
            if let ConnState::Admitted(Client {
                session: Some(session),
                ..
            }) = &c.state
                && session.rider
            {
                self.emit_riders(conn, true);
            }
        }
    }

    fn unknown_recipient_message(&self, to: ClientId) -> String {
        let mut message = format!("no client with ID {to} is online");
        if self.clients.is_empty() {
            return message;
        }
        message.push_str("; online: ");
        for (i, id) in self.clients.keys().take(MAX_IDS_LISTED).enumerate() {
            if i > 0 {
                message.push_str(", ");
            }
            let _ = write!(message, "{id}");
        }
        if self.clients.len() > MAX_IDS_LISTED {
            let _ = write!(message, " and {} more", self.clients.len() - MAX_IDS_LISTED);
        }
        if self.cluster.is_some() {
            // The relays of a cluster learn each other's newcomers a moment later.
            message.push_str(" (a client that just joined another relay of the cluster is known here a moment later)");
        }
        message
    }
}

fn error_report(code: ErrorCode, seq: u64, subject: Option<ClientId>, message: String) -> Frame {
    Frame::Error(ErrorReport {
        code,
        seq,
        subject,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Payload;
    use crate::test_support::Wire;
    use crate::{ClientEvent, FrameDecoder, MAGIC, PRESENCE_NOTICE_BYTES, PROTOCOL_VERSION};
    use core::time::Duration;

    const T: Timestamp = Timestamp::ZERO;

    fn limits(max_clients: u32) -> Limits {
        Limits {
            max_clients,
            ..Limits::default()
        }
    }

    /// Everything the server queued for `conn`, decoded (after its magic).
    fn frames_for(server: &mut RelayServer, conn: ConnId) -> Vec<Frame> {
        let mut bytes = Vec::new();
        let mut others = Vec::new();
        while let Some(t) = server.poll_transmit() {
            if t.conn == conn {
                bytes.extend_from_slice(&t.bytes);
            } else {
                others.push(t);
            }
        }
        decode_all(&bytes)
    }

    /// Like `frames_for`, but delivers what the server sent to the wire's other clients.
    fn frames_for_in(w: &mut Wire, conn: ConnId) -> Vec<Frame> {
        let mut bytes = Vec::new();
        while let Some(t) = w.server.poll_transmit() {
            if t.conn == conn {
                bytes.extend_from_slice(&t.bytes);
            } else if let Some(a) = w.clients.iter_mut().find(|a| a.conn == t.conn) {
                w.server.handle_written(t.conn, t.bytes.len());
                a.client.handle_bytes(&t.bytes, T);
            }
        }
        decode_all(&bytes)
    }

    /// Decodes bytes sent to one connection, skipping the magic if they start with it.
    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let bytes = bytes.strip_prefix(&MAGIC[..]).unwrap_or(bytes);
        let mut d = FrameDecoder::without_magic(u32::MAX);
        d.push(bytes);
        let mut frames = Vec::new();
        while let Ok(Some(f)) = d.next_frame() {
            frames.push(f);
        }
        frames
    }

    fn raw_hello(name: &str) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        Frame::Hello(Hello {
            min_version: 1,
            max_version: PROTOCOL_VERSION,
            capabilities: 0,
            role: Role::RelayClient,
            name: name.into(),
            resuming: false,
        })
        .encode(&mut bytes);
        bytes
    }

    fn closes(server: &mut RelayServer) -> Vec<ConnId> {
        std::iter::from_fn(|| server.poll_close()).collect()
    }

    #[test]
    fn ids_follow_admission_order_and_are_never_reused() {
        let mut w = Wire::new(limits(3));
        for (i, name) in ["ann", "bob", "cy"].into_iter().enumerate() {
            let c = w.join(name);
            assert_eq!(w.client(c).id(), Some(ClientId(i as u32)));
        }
        w.client(1).leave(T);
        w.pump();
        let d = w.join("dee");
        assert_eq!(
            w.client(d).id(),
            Some(ClientId(3)),
            "ID 1 must not be reused"
        );
    }

    #[test]
    fn the_client_past_the_limit_is_refused_with_n_of_max() {
        let mut w = Wire::new(limits(3));
        for name in ["a", "b", "c"] {
            w.join(name);
        }
        let fourth = w.join("d");
        let events = w.take_events(fourth);
        let refused = events.iter().find_map(|e| match e {
            ClientEvent::Refused(r) => Some(r.clone()),
            _ => None,
        });
        let refused = refused.expect("a Refused event");
        assert_eq!(refused.code, ErrorCode::ServerFull);
        assert_eq!((refused.online, refused.limit), (3, 3));
        assert!(refused.reason.contains("3 of 3"), "{}", refused.reason);
        assert!(w.clients[fourth].closed);
        assert_eq!(w.server.online(), 3);
        // Once somebody leaves, there is room again, under a fresh ID.
        w.client(0).leave(T);
        w.pump();
        let fifth = w.join("e");
        assert_eq!(w.client(fifth).id(), Some(ClientId(3)));
    }

    #[test]
    fn chat_reaches_exactly_its_addressee_as_soon_as_two_are_online() {
        let mut w = Wire::new(limits(3));
        let a = w.join("a");
        let b = w.join("b");
        w.client(a)
            .send_chat(ClientId(1), "hello there", T)
            .unwrap();
        w.pump();
        assert_eq!(w.take_messages(b), vec![(0, "hello there".to_owned())]);
        let c = w.join("c");
        w.take_events(a);
        w.take_events(b);
        w.client(a).send_chat(ClientId(2), "only for c", T).unwrap();
        w.pump();
        assert_eq!(w.take_messages(c), vec![(0, "only for c".to_owned())]);
        assert!(w.take_messages(b).is_empty());
        assert!(w.take_messages(a).is_empty());
    }

    #[test]
    fn a_chat_to_an_unknown_or_departed_id_is_answered_with_an_error_naming_it() {
        let mut w = Wire::new(limits(3));
        let a = w.join("a");
        let b = w.join("b");
        w.client(b).leave(T);
        w.pump();
        w.take_events(a);
        for target in [1, 7] {
            let seq = w
                .client(a)
                .send_chat(ClientId(target), "anyone?", T)
                .unwrap();
            w.pump();
            let events = w.take_events(a);
            let [ClientEvent::Error(report)] = events.as_slice() else {
                panic!("expected one error, got {events:?}");
            };
            assert_eq!(report.code, ErrorCode::UnknownRecipient);
            assert_eq!(report.subject, Some(ClientId(target)));
            assert_eq!(report.seq, seq);
            assert!(
                report.message.contains(&format!("ID {target}")),
                "{}",
                report.message
            );
            assert!(report.message.contains("online: 0"), "{}", report.message);
        }
        assert!(!w.client(a).is_closed(), "the sender stays connected");
    }

    #[test]
    fn broadcast_reaches_everyone_else_and_alone_is_an_error() {
        let mut w = Wire::new(limits(4));
        let a = w.join("a");
        w.client(a).broadcast("is anyone here", T).unwrap();
        w.pump();
        assert!(w.take_events(a).iter().any(|e| matches!(
            e,
            ClientEvent::Error(ErrorReport {
                code: ErrorCode::NoRecipients,
                ..
            })
        )));
        let b = w.join("b");
        let c = w.join("c");
        w.client(a).broadcast("hi all", T).unwrap();
        w.pump();
        assert_eq!(w.take_messages(b), vec![(0, "hi all".to_owned())]);
        assert_eq!(w.take_messages(c), vec![(0, "hi all".to_owned())]);
        assert!(w.take_messages(a).is_empty());
    }

    #[test]
    fn an_exited_client_sends_no_more_but_still_receives() {
        let mut w = Wire::insecure(limits(3));
        let a = w.join("a");
        let b = w.join("b");
        w.client(a).exit(T);
        w.pump();
        assert!(
            w.take_events(b)
                .contains(&ClientEvent::Exited { id: ClientId(0) })
        );
        assert_eq!(
            w.client(a).send_chat(ClientId(1), "late", T),
            Err(crate::SendError::AlreadyExited)
        );
        w.client(b)
            .send_chat(ClientId(0), "still there?", T)
            .unwrap();
        w.pump();
        assert_eq!(w.take_messages(a), vec![(1, "still there?".to_owned())]);
        // A client that ignores its own exit is answered with an error, not routed.
        let conn = w.clients[a].conn;
        let mut chat = Vec::new();
        Frame::Chat {
            to: ClientId(1),
            seq: 99,
            payload: Payload::text("sneaky"),
        }
        .encode(&mut chat);
        w.server.handle_bytes(conn, &chat, T);
        let mut frames = frames_for(&mut w.server, conn);
        frames.retain(|f| !matches!(f, Frame::Ack { .. }));
        assert!(matches!(
            frames.as_slice(),
            [Frame::Error(ErrorReport {
                code: ErrorCode::SendAfterExit,
                seq: 99,
                ..
            })]
        ));
    }

    #[test]
    fn broadcasts_and_a_unicast_in_one_read_arrive_in_order_everywhere() {
        let mut w = Wire::new(limits(4));
        let a = w.join("a");
        let b = w.join("b");
        let c = w.join("c");
        // Queued together, so the relay reads them in one piece.
        w.client(a).broadcast("one", T).unwrap();
        w.client(a).send_chat(ClientId(1), "two", T).unwrap();
        w.client(a).broadcast("three", T).unwrap();
        w.client(a).broadcast("four", T).unwrap();
        w.pump();
        let texts = |v: Vec<(u32, String)>| v.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
        assert_eq!(texts(w.take_messages(b)), ["one", "two", "three", "four"]);
        assert_eq!(texts(w.take_messages(c)), ["one", "three", "four"]);
    }

    #[test]
    fn a_broadcast_that_does_not_fit_names_its_own_sequence_number() {
        let mut w = Wire::new(Limits {
            max_outbound_bytes: 4_096,
            // No allowance for presence: the bound is the chat bound.
            max_roster_bytes: 0,
            presence_limit: 0,
            ..limits(3)
        });
        let a = w.join("a");
        let b = w.join("b");
        w.take_events(a);
        w.clients[b].stalled = true;
        // b's queue is half full...
        for _ in 0..2 {
            w.client(a)
                .send_chat(ClientId(1), &"y".repeat(1_000), T)
                .unwrap();
            w.pump();
        }
        // ...and then four broadcasts arrive in one read: it takes three. (Both
        // messages above tell b a's pair key: neither was confirmed delivered.)
        let text = "x".repeat(520);
        let seqs: Vec<u64> = (0..4)
            .map(|_| w.client(a).broadcast(&text, T).unwrap())
            .collect();
        w.pump();
        let refused: Vec<u64> = w
            .take_events(a)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Error(ErrorReport {
                    code: ErrorCode::SlowConsumer,
                    seq,
                    ..
                }) => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(refused, vec![seqs[3]], "the fourth broadcast did not fit");
        assert!(
            w.server.client_id(w.clients[b].conn).is_none(),
            "b was cut off"
        );
    }

    #[test]
    fn a_crowd_joining_does_not_by_itself_cut_off_a_client_that_is_not_reading() {
        // A small bound for chat, and a client that reads nothing while 100 others
        // arrive: their join notices are a presence burst, which the queue holds.
        let limits = Limits {
            max_outbound_bytes: 2_048,
            ..limits(120)
        };
        assert!(limits.relay_queue_bytes() >= 16 * 1024 + 2 * 256 * PRESENCE_NOTICE_BYTES);
        let mut w = Wire::insecure(limits);
        let a = w.join("a");
        w.clients[a].stalled = true;
        for i in 0..100 {
            w.join(&format!("crowd{i:03}-with-a-long-name-here"));
        }
        w.pump();
        assert!(
            w.server.client_id(w.clients[a].conn).is_some(),
            "a is still connected"
        );
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_off_and_nobody_else_is_slowed() {
        // A 4 KiB bound in all: 3,616 bytes for chat, 480 for the notices of 3.
        let limits = Limits {
            max_outbound_bytes: 4_096 - 2 * 3 * PRESENCE_NOTICE_BYTES,
            max_roster_bytes: 0,
            presence_limit: 3,
            ..limits(3)
        };
        let mut w = Wire::insecure(limits);
        let a = w.join("a");
        let b = w.join("b");
        let c = w.join("c");
        w.clients[b].stalled = true;
        let text = "x".repeat(520);
        let mut sent = 0;
        while !w.clients[b].closed && sent < 200 {
            w.client(a).send_chat(ClientId(1), &text, T).unwrap();
            w.client(a).send_chat(ClientId(2), "for c", T).unwrap();
            w.pump();
            sent += 1;
            if w.server.client_id(w.clients[b].conn).is_none() {
                break;
            }
        }
        assert!(
            w.server.client_id(w.clients[b].conn).is_none(),
            "b was cut off"
        );
        assert!(
            sent < 60,
            "cut off near the 4 KiB bound, after {sent} rounds"
        );
        assert!(w.server_events.iter().any(|e| matches!(
            e,
            ServerEvent::Left {
                id: ClientId(1),
                code: ErrorCode::SlowConsumer,
                ..
            }
        )));
        let a_events = w.take_events(a);
        assert!(a_events.iter().any(|e| matches!(
            e,
            ClientEvent::Error(ErrorReport {
                code: ErrorCode::SlowConsumer,
                subject: Some(ClientId(1)),
                ..
            })
        )));
        assert!(a_events.contains(&ClientEvent::Left {
            id: ClientId(1),
            code: ErrorCode::SlowConsumer
        }));
        assert_eq!(w.take_messages(c).len(), sent);
        // The last bytes queued for b end with a Close that says why.
        let held: Vec<u8> = w.clients[b].held.concat();
        let last = decode_all(&held).pop();
        assert!(
            matches!(
                last,
                Some(Frame::Close {
                    code: ErrorCode::SlowConsumer,
                    ..
                })
            ),
            "{last:?}"
        );
        assert!(w.server.pending_bytes(w.clients[b].conn) <= 4_096 + 200);
    }

    #[test]
    fn a_silent_connection_is_closed_at_the_handshake_deadline() {
        let mut server = RelayServer::new(limits(3), Security::insecure());
        let t0 = Timestamp::ZERO;
        let conn = server.handle_connected(t0);
        // First the plain-text greeting is due, then the handshake deadline.
        assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        server.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        server.handle_timeout(t0 + Duration::from_secs(9));
        assert!(closes(&mut server).is_empty());
        server.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(closes(&mut server), vec![conn]);
        assert!(matches!(
            server.poll_event(),
            Some(ServerEvent::Dropped {
                code: ErrorCode::HandshakeTimeout,
                ..
            })
        ));
        assert_eq!(server.poll_timeout(), None);
    }

    #[test]
    fn a_client_that_goes_silent_is_cut_off_and_the_others_are_told() {
        let mut server = RelayServer::new(limits(3), Security::insecure());
        let t0 = Timestamp::ZERO;
        let quiet = server.handle_connected(t0);
        let chatty = server.handle_connected(t0);
        server.handle_bytes(quiet, &raw_hello("quiet"), t0);
        server.handle_bytes(chatty, &raw_hello("chatty"), t0);
        let idle = server.limits().idle_timeout;
        let mut now = t0;
        // The chatty client pings every 15 s; the quiet one sends nothing.
        while now < t0 + idle * 2 {
            now = server
                .poll_timeout()
                .expect("a sweep is scheduled while clients are online");
            server.handle_bytes(chatty, &Frame::Ping(1).to_bytes(), now);
            server.handle_timeout(now);
        }
        assert_eq!(server.client_id(quiet), None);
        assert_eq!(server.client_id(chatty), Some(ClientId(1)));
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(
            e,
            ServerEvent::Left {
                id: ClientId(0),
                code: ErrorCode::PeerTimeout,
                ..
            }
        )));
        let frames = frames_for(&mut server, chatty);
        assert!(frames.contains(&Frame::Left {
            id: ClientId(0),
            code: ErrorCode::PeerTimeout
        }));
    }

    #[test]
    fn a_refused_connection_leaves_no_handshake_deadline_behind() {
        // Found by the simulator: the deadline of a refused connection stayed armed,
        // and when it passed, handle_timeout looped forever.
        let mut server = RelayServer::new(limits(1), Security::insecure());
        let t0 = Timestamp::ZERO;
        let first = server.handle_connected(t0);
        server.handle_bytes(first, &raw_hello("a"), t0);
        let second = server.handle_connected(t0);
        server.handle_bytes(second, &raw_hello("b"), t0);
        assert_eq!(closes(&mut server), vec![second]);
        server.handle_closed(second, t0);
        assert_eq!(server.pending_handshakes(), 0);
        // Past the handshake deadline, before the idle timeout.
        server.handle_timeout(t0 + Duration::from_secs(11));
        assert_eq!(server.client_id(first), Some(ClientId(0)));
    }

    #[test]
    fn chat_before_hello_closes_that_connection_with_its_own_code() {
        let mut server = RelayServer::new(limits(3), Security::insecure());
        let conn = server.handle_connected(Timestamp::ZERO);
        let mut bytes = MAGIC.to_vec();
        Frame::Chat {
            to: ClientId(0),
            seq: 1,
            payload: Payload::text("hi"),
        }
        .encode(&mut bytes);
        server.handle_bytes(conn, &bytes, Timestamp::ZERO);
        let frames = frames_for(&mut server, conn);
        assert!(matches!(
            frames.as_slice(),
            [Frame::Close {
                code: ErrorCode::UnexpectedFrame,
                ..
            }]
        ));
        assert_eq!(closes(&mut server), vec![conn]);
    }

    #[test]
    fn each_kind_of_bad_input_closes_only_the_offender_with_its_code() {
        let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
            (vec![0, 1, 0, 1, 0x10], ErrorCode::FrameTooLarge),
            (vec![0, 0, 0, 1, 0x7F], ErrorCode::UnknownFrameType),
            (
                {
                    let mut b = Vec::new();
                    Frame::Chat {
                        to: ClientId(0),
                        seq: 1,
                        payload: Payload {
                            kind: PayloadKind::Text,
                            body: vec![0xC3, 0x28],
                        },
                    }
                    .encode(&mut b);
                    b
                },
                ErrorCode::InvalidUtf8,
            ),
            (vec![0, 0, 0, 2, 0x30, 0], ErrorCode::MalformedFrame),
            (
                Frame::Hello(crate::handshake::our_hello(Role::RelayClient, "x", 0)).to_bytes(),
                ErrorCode::UnexpectedFrame,
            ),
        ];
        for (bad, code) in cases {
            let mut w = Wire::insecure(limits(3));
            let good = w.join("good");
            let bad_client = w.join("bad");
            let conn = w.clients[bad_client].conn;
            w.take_events(good);
            w.server.handle_bytes(conn, &bad, T);
            let frames = frames_for_in(&mut w, conn);
            assert!(
                matches!(frames.last(), Some(Frame::Close { code: c, .. }) if *c == code),
                "{code:?}: {frames:?}"
            );
            assert!(w.server.client_id(conn).is_none());
            w.clients[bad_client].closed = true;
            w.pump();
            assert!(w.take_events(good).contains(&ClientEvent::Left {
                id: ClientId(1),
                code
            }));
            assert!(!w.client(good).is_closed());
        }
    }

    #[test]
    fn version_role_and_name_problems_are_refused_with_reasons() {
        let cases = [
            (
                Hello {
                    min_version: 5,
                    max_version: 9,
                    ..crate::handshake::our_hello(Role::RelayClient, "", 0)
                },
                ErrorCode::UnsupportedVersion,
            ),
            (
                crate::handshake::our_hello(Role::DirectPeer, "", 0),
                ErrorCode::WrongRole,
            ),
            (
                crate::handshake::our_hello(Role::RelayClient, "bad\nname", 0),
                ErrorCode::InvalidName,
            ),
        ];
        for (hello, code) in cases {
            let mut server = RelayServer::new(limits(3), Security::insecure());
            let conn = server.handle_connected(Timestamp::ZERO);
            let mut bytes = MAGIC.to_vec();
            Frame::Hello(hello).encode(&mut bytes);
            server.handle_bytes(conn, &bytes, Timestamp::ZERO);
            let frames = frames_for(&mut server, conn);
            assert!(
                matches!(frames.as_slice(), [Frame::Refused(r)] if r.code == code && !r.reason.is_empty()),
                "{code:?}: {frames:?}"
            );
            assert_eq!(closes(&mut server), vec![conn]);
        }
    }

    fn text_out(w: &mut Wire, conn: ConnId) -> String {
        w.raw_text(conn)
    }

    #[test]
    fn a_plain_text_client_gets_an_id_and_chats_both_ways_with_a_framed_one() {
        let mut w = Wire::new(limits(3));
        let framed = w.join("ann");
        let nc = w.server.handle_connected(T);
        w.server.handle_bytes(
            nc,
            b"0 hello ann
",
            T,
        );
        let out = text_out(&mut w, nc);
        assert!(out.starts_with("* you are client 1 "), "{out}");
        assert!(out.contains("* online: 0 ann, 1"), "{out}");
        assert_eq!(w.take_messages(framed), vec![(1, "hello ann".to_owned())]);
        w.client(framed).send_chat(ClientId(1), "hi nc", T).unwrap();
        w.pump();
        assert_eq!(text_out(&mut w, nc), "0 hi nc\n");
    }

    #[test]
    fn a_line_without_newline_is_sent_after_a_pause_the_driver_saw() {
        let mut w = Wire::new(limits(3));
        let framed = w.join("ann");
        let nc = w.server.handle_connected(T);
        w.server.handle_bytes(nc, b"0 no newline here", T);
        w.pump();
        assert!(w.take_messages(framed).is_empty(), "not before the pause");
        let due = w.server.read_idle_check(nc).unwrap();
        assert_eq!(due, T + Duration::from_millis(200));
        // A timer alone ends nothing: the rest of the line may be waiting unread.
        w.server.handle_timeout(due + Duration::from_secs(5));
        w.pump();
        assert!(w.take_messages(framed).is_empty(), "a timer is not a pause");
        w.server
            .handle_read_idle(nc, due - Duration::from_millis(1));
        w.pump();
        assert!(w.take_messages(framed).is_empty(), "not a pause yet");
        w.server.handle_read_idle(nc, due);
        w.pump();
        assert_eq!(
            w.take_messages(framed),
            vec![(1, "no newline here".to_owned())]
        );
        assert_eq!(w.server.read_idle_check(nc), None);
    }

    #[test]
    fn a_client_that_sent_a_newline_is_never_cut_by_a_pause() {
        let mut w = Wire::new(limits(3));
        let framed = w.join("ann");
        let nc = w.server.handle_connected(T);
        w.server.handle_bytes(nc, b"\n0 first\n0 sec", T);
        assert_eq!(w.server.read_idle_check(nc), None);
        let later = T + Duration::from_secs(30);
        w.server.handle_read_idle(nc, later);
        w.server
            .handle_bytes(nc, b"ond\n0 last, then the end of the stream", later);
        w.server.handle_end_of_stream(nc, later);
        w.server.handle_closed(nc, later);
        w.pump();
        assert_eq!(
            w.take_messages(framed),
            vec![
                (1, "first".to_owned()),
                (1, "second".to_owned()),
                (1, "last, then the end of the stream".to_owned())
            ]
        );
    }

    #[test]
    fn a_silent_connection_is_greeted_then_admitted_by_its_first_line() {
        let mut w = Wire::new(limits(3));
        let nc = w.server.handle_connected(T);
        w.server.handle_timeout(T + Duration::from_millis(999));
        assert_eq!(text_out(&mut w, nc), "");
        w.server.handle_timeout(T + Duration::from_secs(1));
        assert!(text_out(&mut w, nc).starts_with("* p2pchat relay."));
        w.server.handle_bytes(nc, b"\r\n", T);
        assert!(text_out(&mut w, nc).starts_with("* you are client 0 "));
    }

    #[test]
    fn plain_text_bad_input_is_answered_and_an_endless_line_cut_off() {
        let mut w = Wire::new(limits(3));
        let framed = w.join("ann");
        let nc = w.server.handle_connected(T);
        w.server.handle_bytes(nc, b"hello\n9 anyone?\n", T);
        let out = text_out(&mut w, nc);
        assert!(out.contains("* start the line with the ID"), "{out}");
        assert!(out.contains("* no client with ID 9 is online"), "{out}");
        // A bad UTF-8 line (not the first byte, which would be taken for the magic).
        w.server.handle_bytes(nc, b"0 caf\xe9\n", T);
        assert!(text_out(&mut w, nc).contains("not valid UTF-8"));
        w.server.handle_bytes(nc, &vec![b'x'; 20_000], T);
        let out = text_out(&mut w, nc);
        assert!(
            out.contains("longer than 16384 bytes; disconnected"),
            "{out}"
        );
        assert_eq!(w.server.client_id(nc), None);
        assert!(w.take_events(framed).contains(&ClientEvent::Left {
            id: ClientId(1),
            code: ErrorCode::MessageTooLong
        }));
        assert!(!w.client(framed).is_closed());
    }

    #[test]
    fn a_client_that_keeps_sending_what_cannot_be_used_is_cut_off_with_a_reason() {
        let mut w = Wire::new(limits(3));
        let framed = w.join("ann");
        let nc = w.server.handle_connected(T);
        // Twenty mistakes (answered, each one) and a good line: still there.
        for k in 0..20 {
            let bad: &[u8] = if k % 2 == 0 {
                b"hello\n"
            } else {
                b"0 caf\xe9\n"
            };
            w.server.handle_bytes(nc, bad, T);
        }
        w.server.handle_bytes(nc, b"0 still here\n", T);
        let out = text_out(&mut w, nc);
        assert_eq!(
            out.matches("* start the line with the ID").count(),
            10,
            "{out}"
        );
        assert_eq!(out.matches("not valid UTF-8").count(), 10, "{out}");
        assert_eq!(w.take_messages(framed), vec![(1, "still here".to_owned())]);
        // The twenty-first at once: told why, and disconnected.
        w.server
            .handle_bytes(nc, b"\xff\xfe garbage\n0 never routed\n", T);
        let out = text_out(&mut w, nc);
        assert!(
            out.contains("* disconnected: more than 20 lines or messages in 10 s could not be used (the last: a line that is not valid UTF-8)"),
            "{out}"
        );
        assert_eq!(w.server.client_id(nc), None);
        let events = w.take_events(framed);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ClientEvent::Message { .. })),
            "nothing after the cut-off: {events:?}"
        );
        assert!(
            events.contains(&ClientEvent::Left {
                id: ClientId(1),
                code: ErrorCode::TooManyErrors
            }),
            "{events:?}"
        );
        let logged = w.server_events.iter().any(|e| {
            matches!(
                e,
                ServerEvent::Left {
                    code: ErrorCode::TooManyErrors,
                    ..
                }
            )
        });
        assert!(logged, "the server's log says so");
        assert!(!w.client(framed).is_closed());
    }

    #[test]
    fn a_plain_text_client_that_says_exit_is_closed_when_everyone_has() {
        let mut w = Wire::new(limits(3));
        let framed = w.join("ann");
        let nc = w.server.handle_connected(T);
        w.server.handle_bytes(nc, b"exit\n", T);
        text_out(&mut w, nc);
        assert!(
            w.take_events(framed)
                .contains(&ClientEvent::Exited { id: ClientId(1) })
        );
        w.client(framed)
            .send_chat(ClientId(1), "you still read this", T)
            .unwrap();
        w.pump();
        assert_eq!(text_out(&mut w, nc), "0 you still read this\n");
        w.client(framed).exit(T);
        w.pump();
        let out = text_out(&mut w, nc);
        assert!(out.contains("* everyone has said exit"), "{out}");
        assert_eq!(w.server.client_id(nc), None);
        assert!(w.take_events(framed).contains(&ClientEvent::Finished));
    }

    #[test]
    fn a_full_relay_refuses_a_plain_text_client_in_words() {
        let mut w = Wire::new(limits(1));
        w.join("ann");
        let nc = w.server.handle_connected(T);
        w.server.handle_bytes(nc, b"hi\n", T);
        let out = text_out(&mut w, nc);
        assert_eq!(
            out,
            "* server full: 1 of 1 clients connected; try again later\n"
        );
        assert_eq!(w.raw_closed, vec![nc]);
    }

    #[test]
    fn the_roster_lists_everyone_with_exit_state() {
        let mut w = Wire::new(limits(3));
        let a = w.join("ann");
        let b = w.join("bob");
        w.client(b).exit(T);
        w.pump();
        w.take_events(a);
        w.client(a).request_roster(T);
        w.pump();
        let events = w.take_events(a);
        let [ClientEvent::Roster { total: 2, entries }] = events.as_slice() else {
            panic!("{events:?}");
        };
        let summary: Vec<_> = entries
            .iter()
            .map(|e| (e.id.0, e.name.as_str(), e.exited))
            .collect();
        assert_eq!(summary, vec![(0, "ann", false), (1, "bob", true)]);
    }

    #[test]
    fn past_the_presence_limit_no_notices_go_out_and_rosters_are_cut() {
        let mut w = Wire::new(Limits {
            presence_limit: 2,
            max_roster_bytes: 13 + 2 * (7 + 32),
            ..limits(10)
        });
        let a = w.join("a");
        w.join("b");
        assert!(
            w.take_events(a).contains(&ClientEvent::Joined {
                id: ClientId(1),
                name: "b".into(),
                key: crate::test_support::party_security(2)
                    .identity
                    .map(|i| i.public()),
            })
        );
        let c = w.join("c");
        assert!(
            !w.take_events(a)
                .iter()
                .any(|e| matches!(e, ClientEvent::Joined { .. })),
            "3 online is past the presence limit of 2"
        );
        let events = w.take_events(c);
        let roster = events.iter().find_map(|e| match e {
            ClientEvent::Roster { total, entries } => Some((*total, entries.len())),
            _ => None,
        });
        assert_eq!(
            roster,
            Some((3, 2)),
            "the roster counts all 3 but lists the 2 that fit"
        );
        // Exit still completes without presence notices: the relay says AllExited.
        for i in [a, 1, c] {
            w.client(i).exit(T);
        }
        w.pump();
        for i in [a, 1, c] {
            assert!(
                w.take_events(i).contains(&ClientEvent::Finished),
                "client {i}"
            );
        }
    }

    #[test]
    fn a_client_leaving_without_exit_can_complete_the_conversation() {
        let mut w = Wire::new(limits(3));
        let a = w.join("a");
        let b = w.join("b");
        w.client(a).exit(T);
        w.pump();
        assert!(!w.take_events(a).contains(&ClientEvent::Finished));
        w.client(b).leave(T);
        w.pump();
        assert!(
            w.take_events(a).contains(&ClientEvent::Finished),
            "b was the last sender"
        );
    }

    #[test]
    fn the_relay_refuses_files_past_its_limits_and_says_why() {
        let mut w = Wire::new(Limits {
            max_file_size: 1000,
            max_transfers_per_client: 1,
            ..limits(3)
        });
        let a = w.join("a");
        let b = w.join("b");
        w.take_events(a);
        w.client(a).offer_file(ClientId(1), "big", 1001, T).unwrap();
        w.pump();
        let events = w.take_events(a);
        assert!(events.iter().any(|e| matches!(
            e,
            ClientEvent::Error(ErrorReport { code: ErrorCode::FileRefused, message, .. }) if message.contains("at most 1000 bytes")
        )), "{events:?}");
        assert!(events.iter().any(|e| matches!(
            e,
            ClientEvent::File(crate::FileEvent::Failed { outgoing: true, .. })
        )));
        assert!(
            !w.take_events(b)
                .iter()
                .any(|e| matches!(e, ClientEvent::File(_))),
            "b never saw it"
        );
        // One transfer at a time: the second offer is refused while the first waits.
        w.client(a).offer_file(ClientId(1), "one", 10, T).unwrap();
        w.client(a).offer_file(ClientId(1), "two", 10, T).unwrap();
        w.pump();
        let events = w.take_events(a);
        assert!(events.iter().any(|e| matches!(
            e,
            ClientEvent::Error(ErrorReport { code: ErrorCode::FileRefused, message, .. }) if message.contains("allows 1 at once")
        )), "{events:?}");
        let offers = w
            .take_events(b)
            .into_iter()
            .filter(|e| matches!(e, ClientEvent::File(crate::FileEvent::Offered { .. })))
            .count();
        assert_eq!(offers, 1);
    }

    #[test]
    fn too_many_pending_handshakes_are_closed_at_once() {
        let mut server = RelayServer::new(
            Limits {
                max_pending_handshakes: 2,
                ..limits(3)
            },
            Security::insecure(),
        );
        let t = Timestamp::ZERO;
        let (c0, c1, c2) = (
            server.handle_connected(t),
            server.handle_connected(t),
            server.handle_connected(t),
        );
        assert_eq!(closes(&mut server), vec![c2]);
        server.handle_bytes(c0, &raw_hello("a"), t);
        assert_eq!(server.client_id(c0), Some(ClientId(0)));
        assert!(server.client_id(c1).is_none());
    }

    #[test]
    fn too_many_connections_from_one_address_are_refused_by_name() {
        let mut server = RelayServer::new(
            Limits {
                max_connections_per_address: 2,
                ..limits(10)
            },
            Security::insecure(),
        );
        let t = Timestamp::ZERO;
        let here: IpAddr = [192, 0, 2, 1].into();
        let there: IpAddr = [198, 51, 100, 7].into();
        let (a, b, c) = (
            server.handle_connected_from(here, t),
            server.handle_connected_from(here, t),
            server.handle_connected_from(here, t),
        );
        let d = server.handle_connected_from(there, t);
        for conn in [a, b, c, d] {
            server.handle_bytes(conn, &raw_hello(""), t);
        }
        assert!(server.client_id(a).is_some() && server.client_id(b).is_some());
        assert!(
            server.client_id(d).is_some(),
            "another address is not held back"
        );
        assert_eq!(server.client_id(c), None);
        let refused = frames_for(&mut server, c);
        assert!(
            matches!(
                refused.as_slice(),
                [Frame::Refused(Refused { code: ErrorCode::TooManyFromAddress, reason, .. })]
                    if reason.contains("192.0.2.1") && reason.contains("allows 2")
            ),
            "{refused:?}"
        );
        // Once one of them goes, the address may connect again.
        server.handle_closed(c, t);
        server.handle_closed(a, t);
        let e = server.handle_connected_from(here, t);
        server.handle_bytes(e, &raw_hello(""), t);
        assert!(server.client_id(e).is_some());
    }

    #[test]
    fn a_client_over_the_message_rate_is_read_more_slowly_and_told_once() {
        let mut w = Wire::insecure(Limits {
            message_rate: 100,
            message_burst: 10,
            ..limits(3)
        });
        let a = w.join("a");
        let b = w.join("b");
        w.take_events(a);
        for i in 0..25 {
            w.client(a)
                .send_chat(ClientId(1), &format!("m{i}"), T)
                .unwrap();
        }
        w.pump();
        assert_eq!(w.take_messages(b).len(), 25, "nothing is dropped");
        let notices: Vec<_> = w
            .take_events(a)
            .into_iter()
            .filter(|e| matches!(e, ClientEvent::Error(r) if r.code == ErrorCode::RateLimited))
            .collect();
        assert_eq!(notices.len(), 1, "told once: {notices:?}");
        // 15 over a bucket of 10 at 100 a second: 150 ms of debt.
        let conn = w.clients[a].conn;
        assert_eq!(
            w.server.read_paused_until(conn),
            Some(Timestamp::from_millis(150))
        );
        assert_eq!(w.server.read_paused_until(w.clients[b].conn), None);
        // File traffic and key exchange do not count; the other client is not limited.
        w.client(b).send_chat(ClientId(0), "unhurried", T).unwrap();
        w.pump();
        assert_eq!(w.take_messages(a), [(1, "unhurried".to_owned())]);
    }

    #[test]
    fn shutdown_tells_every_client_why() {
        let mut w = Wire::new(limits(3));
        let a = w.join("a");
        let b = w.join("b");
        w.server.shutdown(T);
        w.pump();
        for i in [a, b] {
            assert!(w.take_events(i).iter().any(|e| matches!(
                e,
                ClientEvent::Disconnected {
                    code: ErrorCode::ServerShutdown,
                    ..
                }
            )));
        }
    }
}
