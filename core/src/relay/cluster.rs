//! A relay that is one of several acting as one (docs/SCALING.md): what it asks of
//! the bus between relays, and what it learns from it. Still sans-IO: the driver
//! carries each [`ClusterRequest`] out on the bus (NATS in `p2pchat-cluster`, an
//! in-memory bus in tests) and reports back with the `handle_*` calls here.
//!
//! How it fits the relay: a client on another relay is a *remote client*, held like
//! a parked session (a connection handle the driver never knew) with `remote` set.
//! Routing, `/who` and presence then work unchanged; what is queued for a remote
//! client is not written to a socket but handed over as [`ClusterRequest::Forward`]
//! (complete `Deliver` frames, in order), and notices, errors and receipts are never
//! queued for it (its own relay tells it those). Admission is two-phase: a `Hello`
//! that passes its checks waits for [`RelayServer::handle_admission`], so IDs are
//! unique across the cluster and in the order admissions were decided.
//!
//! Receipts cross relays: a message to a remote client is delivered when its relay
//! says its client read it ([`ClusterInput::Receipt`]), and a mailbox letter is
//! acknowledged on the bus only then ([`ClusterRequest::MailRead`]). Sessions move:
//! a `Resume` for a remote client whose key the connection proved takes its session
//! over here ([`RelayServer::adopt_moved`], answered `Moved`), and the relay it left
//! lets it go ([`ClusterInput::MovedAway`]); a moved session sends and receives
//! through mailboxes so that its messages keep their order. Relay liveness is the
//! driver's business (heartbeats on the bus); the core hears of it as `Left`.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::sessions::ClientSession;
use super::{Client, ConnState, Connection, RelayServer, ServerEvent, rate, strikes};
use crate::decode::FrameDecoder;
use crate::error::ErrorCode;
use crate::frame::{Frame, RosterEntry};
use crate::id::{ClientId, ConnId};
use crate::limits::Limits;
use crate::outbound::Outbound;
use crate::secure::{PublicKey, Security};
use crate::time::Timestamp;

/// What a relay of a cluster asks of the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRequest {
    /// Decide whether connection `conn` may be admitted, and with which ID (the
    /// cluster's counter, by compare-and-set); answer with
    /// [`RelayServer::handle_admission`].
    Admit {
        /// The connection waiting.
        conn: ConnId,
    },
    /// A client of this relay joined: publish its roster entry.
    Announce(RosterEntry),
    /// A client of another relay moved its session here (its relay died, or it could
    /// no longer reach it): publish its entry as ours, and read its mailbox from the
    /// last letter it read (letters its old relay took and it never read come
    /// again). Its old relay, if alive, lets it go ([`ClusterInput::MovedAway`]).
    Adopt(RosterEntry),
    /// A client of this relay moved its session to another relay
    /// ([`ClusterInput::MovedAway`]): stop reading its mailbox here.
    Release {
        /// Its ID.
        id: ClientId,
    },
    /// A client of this relay changed (it said exit): publish its entry again.
    Update(RosterEntry),
    /// A client of this relay is gone for good: remove its entry and free its place.
    Withdraw {
        /// Its ID (never reused).
        id: ClientId,
        /// Why it left.
        code: ErrorCode,
    },
    /// `Deliver` frames (complete, back to back, in order) for client `to` on another
    /// relay: put them in its mailbox ([`RelayServer::handle_mail`] there).
    Forward {
        /// The recipient.
        to: ClientId,
        /// The frames.
        frames: Vec<u8>,
    },
    /// `Deliver` frames to everyone, from a sender of this relay: hand them to every
    /// other relay ([`RelayServer::handle_remote_broadcast`] there).
    Broadcast {
        /// The frames.
        frames: Vec<u8>,
    },
    /// Client `to` of this relay acknowledged everything up to mailbox letter `letter`
    /// (a [`ClusterInput::Mail`]'s): acknowledge it, and every letter before it, on
    /// the bus, so that no relay delivers them again. Letters are acknowledged only
    /// when the client read them, not when its relay took them: a letter its relay
    /// took and died with is delivered again by the relay the client resumes on.
    MailRead {
        /// The reader.
        to: ClientId,
        /// The last letter it read all of.
        letter: u64,
    },
    /// Client `by` of this relay read messages of client `to` of another relay: tell
    /// `to`'s relay (a [`ClusterInput::Receipt`] there), which tells `to` they were
    /// delivered.
    Receipt {
        /// The sender.
        to: ClientId,
        /// The reader.
        by: ClientId,
        /// The sender's sequence numbers of what was read.
        seqs: Vec<u64>,
    },
}

/// What the bus tells a relay of a cluster (see [`RelayServer::handle_cluster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterInput {
    /// The answer to an [`ClusterRequest::Admit`].
    Admission {
        /// The connection waiting.
        conn: ConnId,
        /// The answer.
        admission: Admission,
    },
    /// A client's roster entry, as published by its relay (a newcomer, one there
    /// before this relay started, or a change).
    Roster(RosterEntry),
    /// A client of this relay resumed its session on another relay, which now holds
    /// it: it is a remote client here from now on.
    MovedAway {
        /// Its ID.
        id: ClientId,
    },
    /// A client is gone for good.
    Left {
        /// Its ID.
        id: ClientId,
        /// Why.
        code: ErrorCode,
    },
    /// Frames from a client's mailbox.
    Mail {
        /// The client (of this relay).
        to: ClientId,
        /// `Deliver` frames.
        frames: Vec<u8>,
        /// The letter's number in the bus's mail (increasing per mailbox), named again
        /// by [`ClusterRequest::MailRead`] once the client read it all.
        letter: u64,
    },
    /// Broadcast frames from another relay.
    Broadcast {
        /// `Deliver` frames.
        frames: Vec<u8>,
    },
    /// Client `by` on another relay read messages of client `to` (see
    /// [`ClusterRequest::Receipt`]).
    Receipt {
        /// The sender.
        to: ClientId,
        /// The reader.
        by: ClientId,
        /// The sender's sequence numbers of what was read.
        seqs: Vec<u64>,
    },
}

/// The cluster's answer to [`ClusterRequest::Admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted, with this ID.
    Id(ClientId),
    /// The cluster is full.
    Full {
        /// Clients online across the cluster.
        online: u32,
        /// The cluster's limit.
        limit: u32,
    },
    /// The bus could not decide (it is unreachable): the client is turned away with
    /// this reason, and may try again.
    Unavailable(String),
}

/// How a connection waiting for its admission is to be greeted.
type Greeting = Box<dyn FnOnce(ClientId, &mut Outbound) + Send>;

/// A connection waiting for the cluster's admission.
struct Pending {
    name: String,
    key: Option<PublicKey>,
    welcome: Greeting,
    session: Option<Box<ClientSession>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("name", &self.name).finish()
    }
}

/// The relay's side of the cluster: requests for the bus, admissions under way,
/// and which IDs are on other relays.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    requests: VecDeque<ClusterRequest>,
    pending: FxHashMap<ConnId, Pending>,
    remote: FxHashSet<ClientId>,
    /// IDs known to have left: a roster entry arriving late for one (the bus gives
    /// no order between a client's subjects) does not bring it back.
    left: FxHashSet<ClientId>,
    /// Messages of our clients forwarded to a client on another relay, by that
    /// client, until its relay says it read them (a receipt) or it leaves (then
    /// their senders are told they did not reach it).
    awaiting: FxHashMap<ClientId, super::sessions::Owed>,
    /// Clients of other relays that are away (their connection was lost and their
    /// relay holds their session), as their relays published.
    away: FxHashSet<ClientId>,
    /// Mailbox letters queued to our clients and not yet read: where each ends in
    /// its reader's session stream, and its number.
    letters: FxHashMap<ClientId, VecDeque<(u64, u64)>>,
}

impl Cluster {
    /// Connection `conn` waits for its ID.
    pub(super) fn await_admission(
        &mut self,
        conn: ConnId,
        name: String,
        key: Option<PublicKey>,
        welcome: Greeting,
    ) {
        self.pending.insert(
            conn,
            Pending {
                name,
                key,
                welcome,
                session: None,
            },
        );
        self.requests.push_back(ClusterRequest::Admit { conn });
    }

    /// The session a waiting connection gets once admitted.
    pub(super) fn keep_session(&mut self, conn: ConnId, session: Option<Box<ClientSession>>) {
        if let Some(p) = self.pending.get_mut(&conn) {
            p.session = session;
        }
    }

    pub(super) fn announce(&mut self, entry: RosterEntry) {
        self.requests.push_back(ClusterRequest::Announce(entry));
    }

    pub(super) fn update(&mut self, entry: RosterEntry) {
        if !self.remote.contains(&entry.id) {
            self.requests.push_back(ClusterRequest::Update(entry));
        }
    }

    /// A client left: if it was ours, the cluster frees its place.
    pub(super) fn withdraw_if_ours(&mut self, id: ClientId, code: ErrorCode) {
        self.forget_letters(id);
        // Not one the cluster already took for gone (its place is freed already).
        if !self.remote.contains(&id) && !self.left.contains(&id) {
            self.requests
                .push_back(ClusterRequest::Withdraw { id, code });
        }
    }

    /// Message `seq` of `from` went to `to` on another relay: it waits for a receipt.
    pub(super) fn await_receipt(&mut self, to: ClientId, from: ClientId, seq: u64) {
        self.awaiting.entry(to).or_default().push_back((from, seq));
    }

    /// What our senders sent client `to` that it has not been seen to read.
    /// Client `id` is not a remote client any more (its session moved here).
    /// Whether it was away.
    pub(super) fn remove_remote(&mut self, id: ClientId) -> bool {
        self.remote.remove(&id);
        self.away.remove(&id)
    }

    /// Whether client `id` of another relay is away.
    pub(super) fn is_away(&self, id: ClientId) -> bool {
        self.away.contains(&id)
    }

    pub(super) fn take_awaiting(&mut self, to: ClientId) -> super::sessions::Owed {
        self.awaiting.remove(&to).unwrap_or_default()
    }

    pub(super) fn receipt(&mut self, to: ClientId, by: ClientId, seqs: Vec<u64>) {
        if !seqs.is_empty() {
            self.requests
                .push_back(ClusterRequest::Receipt { to, by, seqs });
        }
    }

    /// Mailbox letter `letter` for our client `to` was queued up to offset `end` of
    /// its stream (`None`: a reader without a session, which counts as having read
    /// what is queued).
    pub(super) fn letter_queued(&mut self, to: ClientId, end: Option<u64>, letter: u64) {
        match end {
            Some(end) => self.letters.entry(to).or_default().push_back((end, letter)),
            None => self
                .requests
                .push_back(ClusterRequest::MailRead { to, letter }),
        }
    }

    /// Our client `to` acknowledged its stream up to `upto`: the letters it read all
    /// of are acknowledged on the bus (the last one covers those before it).
    pub(super) fn letters_read(&mut self, to: ClientId, upto: u64) {
        let Some(queued) = self.letters.get_mut(&to) else {
            return;
        };
        let mut last = None;
        while let Some(&(end, letter)) = queued.front()
            && end <= upto
        {
            queued.pop_front();
            last = Some(letter);
        }
        if queued.is_empty() {
            self.letters.remove(&to);
        }
        if let Some(letter) = last {
            self.requests
                .push_back(ClusterRequest::MailRead { to, letter });
        }
    }

    /// Our client `to` is gone: its unread letters are nobody's business here now.
    pub(super) fn forget_letters(&mut self, to: ClientId) {
        self.letters.remove(&to);
    }

    pub(super) fn forward(&mut self, to: ClientId, frames: Vec<u8>) {
        self.requests
            .push_back(ClusterRequest::Forward { to, frames });
    }

    pub(super) fn broadcast(&mut self, frames: Vec<u8>) {
        self.requests
            .push_back(ClusterRequest::Broadcast { frames });
    }
}

/// `Deliver` frames back to back, checked: each sender's run of them, as
/// `(from, bytes, [(seq, end)])`. `None` if anything in them is not a `Deliver`.
/// One sender's run of `Deliver` frames: its ID, the frames, each one's sequence number
/// and where it ends.
type Run = (ClientId, Vec<u8>, Vec<(u64, usize)>);

fn deliveries(frames: &[u8], max_frame_len: u32) -> Option<Vec<Run>> {
    let mut decoder = FrameDecoder::without_magic(max_frame_len);
    decoder.push(frames);
    let mut runs: Vec<Run> = Vec::new();
    let mut at = 0usize;
    loop {
        let raw = match decoder.next_raw() {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(_) => return None,
        };
        let len = 5 + raw.body.len();
        let bytes = frames.get(at..at + len)?;
        at += len;
        let Ok(Frame::Deliver { from, seq, .. }) = Frame::decode(raw.type_byte, raw.body) else {
            return None;
        };
        match runs.last_mut() {
            Some((sender, run, ends)) if *sender == from => {
                run.extend_from_slice(bytes);
                ends.push((seq, run.len()));
            }
            _ => runs.push((from, bytes.to_vec(), vec![(seq, len)])),
        }
    }
    (at == frames.len()).then_some(runs)
}

impl RelayServer {
    /// A relay that is one of a cluster (see the module documentation): IDs come
    /// from [`RelayServer::handle_admission`], clients of other relays from
    /// [`RelayServer::handle_remote_joined`], and what is for them goes out through
    /// [`RelayServer::poll_cluster`].
    pub fn clustered(limits: Limits, security: Security) -> Self {
        let mut server = RelayServer::new(limits, security);
        server.cluster = Some(Cluster::default());
        server
    }

    /// What the bus said, whatever it is (see [`ClusterInput`]). `false` for mail or a
    /// broadcast that could not be taken (not `Deliver` frames, or a client that is
    /// not here).
    pub fn handle_cluster(&mut self, input: ClusterInput, now: Timestamp) -> bool {
        match input {
            ClusterInput::Admission { conn, admission } => {
                self.handle_admission(conn, admission, now);
            }
            ClusterInput::Roster(entry) => {
                if self.clients.get(&entry.id).is_some() {
                    self.handle_remote_changed(entry, now);
                } else if self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| !c.left.contains(&entry.id))
                {
                    self.handle_remote_joined(entry, now);
                }
            }
            ClusterInput::Left { id, code } => {
                if let Some(cluster) = self.cluster.as_mut() {
                    cluster.left.insert(id);
                }
                self.handle_remote_left(id, code, now);
                self.expel_if_ours(id, now);
            }
            ClusterInput::MovedAway { id } => self.handle_moved_away(id, now),
            ClusterInput::Mail { to, frames, letter } => {
                return self.handle_mail(to, &frames, letter, now);
            }
            ClusterInput::Receipt { to, by, seqs } => self.handle_receipt(to, by, seqs, now),
            ClusterInput::Broadcast { frames } => {
                return self.handle_remote_broadcast(&frames, now);
            }
        }
        true
    }

    /// The next thing to do on the bus, if any. Drain it after every input, with
    /// `poll_transmit` (a `Forward` appears when what was queued for a remote client
    /// is taken, so drain `poll_transmit` first).
    pub fn poll_cluster(&mut self) -> Option<ClusterRequest> {
        self.cluster.as_mut()?.requests.pop_front()
    }

    /// The cluster decided connection `conn`'s admission.
    pub fn handle_admission(&mut self, conn: ConnId, admission: Admission, now: Timestamp) {
        self.now = self.now.max(now);
        let Some(pending) = self.cluster.as_mut().and_then(|c| c.pending.remove(&conn)) else {
            return;
        };
        let waiting = matches!(
            self.conns.get(&conn).map(|c| &c.state),
            Some(ConnState::Handshaking { .. })
        );
        match admission {
            Admission::Id(id) if waiting => {
                self.admit_as(conn, id, pending.name, pending.key, now, pending.welcome);
                if let Some(ConnState::Admitted(client)) =
                    self.conns.get_mut(&conn).map(|c| &mut c.state)
                {
                    client.session = pending.session;
                }
            }
            Admission::Id(id) => {
                // It went away while the cluster decided: give the place back.
                if let Some(cluster) = self.cluster.as_mut() {
                    cluster.requests.push_back(ClusterRequest::Withdraw {
                        id,
                        code: ErrorCode::ConnectionLost,
                    });
                }
            }
            Admission::Full { online, limit } if waiting => {
                let reason = format!(
                    "server full: {online} of {limit} clients connected across the relays; try again later"
                );
                self.refuse_with(conn, ErrorCode::ServerFull, reason, online, limit);
            }
            Admission::Unavailable(why) if waiting => {
                let reason = format!(
                    "this relay cannot admit anyone now: its cluster's bus is unreachable ({why}); try again later"
                );
                self.refuse(conn, ErrorCode::ServerFull, reason);
            }
            Admission::Full { .. } | Admission::Unavailable(_) => {}
        }
    }

    /// A client joined on another relay (or is there already when this relay starts):
    /// it is online here too, reachable by its ID.
    pub fn handle_remote_joined(&mut self, entry: RosterEntry, now: Timestamp) {
        self.now = self.now.max(now);
        let id = entry.id;
        if self.clients.get(&id).is_some() {
            return;
        }
        let handle = ConnId(self.next_conn);
        self.next_conn += 1;
        let client = Client {
            id,
            name: entry.name.clone(),
            key: entry.key,
            exited: entry.exited,
            last_seq: 0,
            last_heard: now,
            plain_text: false,
            bucket: rate::TokenBucket::new(self.limits.message_burst, now),
            strikes: strikes::Strikes::default(),
            session: None,
            remote: true,
            via_mail: false,
        };
        let out = Outbound::new(self.limits.relay_queue_bytes());
        let connection = Connection::without_transport(client, out, None, ErrorCode::Normal);
        self.conns.insert(handle, connection);
        self.clients.insert(id, handle);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.remote.insert(id);
        }
        if !entry.exited {
            self.still_sending += 1;
        }
        if self.presence_on() {
            self.notify_others(
                id,
                &Frame::Joined {
                    id,
                    name: entry.name,
                    key: entry.key,
                },
            );
        }
    }

    /// The cluster took client `id` of this relay for gone: this relay was cut off from
    /// the bus long enough for the others to think it dead, and they removed its
    /// clients. Such a client cannot be reached from the others any more, so it is
    /// told to join again (it does so by itself, with a new ID), rather than left
    /// talking to this relay alone.
    fn expel_if_ours(&mut self, id: ClientId, now: Timestamp) {
        let Some(&conn) = self.clients.get(&id) else {
            return;
        };
        let local = matches!(
            self.conns.get(&conn).map(|c| &c.state),
            Some(ConnState::Admitted(client)) if !client.remote
        );
        if !local {
            return;
        }
        self.now = self.now.max(now);
        let detail = "this relay lost touch with its cluster, which took you for gone; join again (you get a new ID)".to_owned();
        self.close_client(conn, ErrorCode::ResumeFailed, detail, false);
        self.cut_off_overflowed();
    }

    /// A client of another relay changed: it said exit.
    pub fn handle_remote_changed(&mut self, entry: RosterEntry, now: Timestamp) {
        self.now = self.now.max(now);
        let Some(&conn) = self.clients.get(&entry.id) else {
            return;
        };
        let exited_now = match self.conns.get_mut(&conn).map(|c| &mut c.state) {
            Some(ConnState::Admitted(client))
                if client.remote && !client.exited && entry.exited =>
            {
                client.exited = true;
                true
            }
            _ => false,
        };
        if exited_now {
            let id = entry.id;
            if self.presence_on() {
                self.notify_others(id, &Frame::Exited { id });
            }
            self.one_less_sending();
            self.cut_off_overflowed();
        }
        // Away and back, as its relay saw them.
        let remote = self.conns.get(&conn).is_some_and(Connection::is_remote);
        let id = entry.id;
        let Some(cluster) = self.cluster.as_mut().filter(|_| remote) else {
            return;
        };
        let notice = match (cluster.away.contains(&id), entry.away) {
            (false, true) => {
                cluster.away.insert(id);
                let grace_ms =
                    u32::try_from(self.limits.resume_grace.as_millis()).unwrap_or(u32::MAX);
                let code = ErrorCode::ConnectionLost;
                Frame::Away { id, code, grace_ms }
            }
            (true, false) => {
                cluster.away.remove(&id);
                Frame::Back { id }
            }
            _ => return,
        };
        if self.presence_on() {
            self.notify_others(id, &notice);
        }
    }

    /// A client of another relay is gone for good.
    pub fn handle_remote_left(&mut self, id: ClientId, code: ErrorCode, now: Timestamp) {
        self.now = self.now.max(now);
        let Some(&conn) = self.clients.get(&id) else {
            return;
        };
        let exited = match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Admitted(client)) if client.remote => client.exited,
            _ => return,
        };
        self.clients.remove(&id);
        self.conns.remove(&conn);
        let detail = "gone from its relay of the cluster".to_owned();
        // What it never said it read did not reach it: its senders are told.
        let owed = self
            .cluster
            .as_mut()
            .and_then(|c| c.awaiting.remove(&id))
            .unwrap_or_default();
        self.announce_left(conn, id, exited, code, detail, owed);
        self.flush_delivered(now);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.remove_remote(id);
        }
        self.cut_off_overflowed();
    }

    /// Client `by` on another relay read these messages of client `to` of this relay:
    /// they are delivered (its receipt says so once all before them are).
    pub fn handle_receipt(&mut self, to: ClientId, by: ClientId, seqs: Vec<u64>, now: Timestamp) {
        self.now = self.now.max(now);
        let Some(owed) = self.cluster.as_mut().and_then(|c| c.awaiting.get_mut(&by)) else {
            return;
        };
        let mut settled = Vec::new();
        for seq in seqs {
            if let Some(at) = owed.iter().position(|&(f, s)| f == to && s == seq) {
                owed.remove(at);
                settled.push(seq);
            }
        }
        for seq in settled {
            self.settle(to, seq);
        }
        self.flush_delivered(now);
    }

    /// Frames from another relay's mailbox for client `to` of this relay. `false`
    /// when they are not `Deliver` frames, or `to` is not here (the caller keeps
    /// them, or drops them, as its bus allows).
    pub fn handle_mail(
        &mut self,
        to: ClientId,
        frames: &[u8],
        letter: u64,
        now: Timestamp,
    ) -> bool {
        self.now = self.now.max(now);
        let Some(&target) = self.clients.get(&to) else {
            return false;
        };
        if self.conns.get(&target).is_none_or(Connection::is_remote) {
            return false;
        }
        let Some(runs) = deliveries(frames, self.limits.max_frame_len) else {
            return false;
        };
        for (from, bytes, ends) in runs {
            self.push_remote_deliveries(target, from, bytes, ends);
        }
        let end = self.conns.get(&target).and_then(|t| match &t.state {
            ConnState::Admitted(Client {
                session: Some(_), ..
            }) => Some(t.out.stream_end()),
            _ => None,
        });
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.letter_queued(to, end, letter);
        }
        self.cut_off_overflowed();
        true
    }

    /// Broadcast frames from a sender on another relay: to everyone here.
    pub fn handle_remote_broadcast(&mut self, frames: &[u8], now: Timestamp) -> bool {
        self.now = self.now.max(now);
        let Some(runs) = deliveries(frames, self.limits.max_frame_len) else {
            return false;
        };
        for (from, bytes, ends) in runs {
            let Some(&sender) = self.clients.get(&from) else {
                continue;
            };
            // Fanned out as this relay fans out its own broadcasts; the sender is a
            // remote client, so nothing goes back to the bus.
            self.flush_broadcasts();
            self.batch.sender = Some((sender, from));
            self.batch.bytes = bytes;
            self.batch.ends = ends;
            self.flush_broadcasts();
        }
        self.cut_off_overflowed();
        true
    }

    /// A `Resume` on `conn` for client `id`, whose session this relay does not hold:
    /// if `id` is a client of another relay of the cluster and the connection proved
    /// its key, the session moves here (`Moved`; both session streams start anew,
    /// the client resending what its old relay never acknowledged). The token stays
    /// with the relay that issued it; the key, which the handshake proved, is what
    /// shows it is the same client. `false` if it cannot move here.
    pub(super) fn adopt_moved(
        &mut self,
        conn: ConnId,
        id: ClientId,
        key: Option<PublicKey>,
        received: u64,
        now: Timestamp,
    ) -> bool {
        let Some(&handle) = self.clients.get(&id) else {
            return false;
        };
        let movable = key.is_some()
            && self.conns.contains_key(&conn)
            && matches!(
                self.conns.get(&handle).map(|c| &c.state),
                Some(ConnState::Admitted(client)) if client.remote && client.key == key
            );
        if !movable || self.cluster.is_none() {
            return false;
        }
        let Some(mut old) = self.conns.remove(&handle) else {
            return false;
        };
        // Deliveries queued for it and not yet handed to the bus go through its
        // mailbox as before, and come back here in order behind what is there.
        let queued = old.out.take(None);
        let ConnState::Admitted(mut client) = std::mem::replace(&mut old.state, ConnState::Closing)
        else {
            return false;
        };
        let session = self.new_session();
        let (token, grace_ms) = (
            session.token,
            u32::try_from(self.limits.resume_grace.as_millis()).unwrap_or(u32::MAX),
        );
        client.remote = false;
        client.via_mail = true;
        client.last_heard = now;
        client.last_seq = 0;
        client.session = Some(session);
        let entry = RosterEntry {
            id,
            exited: client.exited,
            away: false,
            name: client.name.clone(),
            key: client.key,
        };
        // Others here may have seen it away (its old relay said so before it died).
        let was_away = self
            .cluster
            .as_mut()
            .is_some_and(|cluster| cluster.remove_remote(id));
        if let Some(cluster) = self.cluster.as_mut() {
            // What our senders sent it still comes through its mailbox, as what
            // they send from now on will (`via_mail`), and is settled by the
            // receipts its reading here gives.
            if let Some(bytes) = queued {
                cluster.forward(id, bytes);
            }
            cluster.requests.push_back(ClusterRequest::Adopt(entry));
        }
        let max = self.limits.relay_queue_bytes();
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if let ConnState::Handshaking { deadline, .. } = c.state {
            self.deadlines.remove(&(deadline, conn));
        }
        c.out.push(&Frame::Moved);
        c.out.push(&Frame::ResumeToken { token, grace_ms });
        // Our session stream to it goes on from where its count of the old relay's
        // stopped (so its count simply continues), with a roster first, as after
        // `Welcome`; its stream to us starts anew at 0.
        c.out
            .adopt_retained(crate::session::Retained::restored(received, &[]), max);
        let _ = c.out.resend_from(received);
        c.state = ConnState::Admitted(client);
        self.clients.insert(id, conn);
        self.queue_roster(conn);
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.limits.idle_timeout / 3);
        }
        self.mark_ready(conn);
        self.events.push_back(ServerEvent::Resumed { conn, id });
        if was_away && self.presence_on() {
            self.notify_others(id, &Frame::Back { id });
        }
        true
    }

    /// Our client `id` resumed on another relay: it is a remote client here now. Its
    /// connection, if it still looks open, is closed without a word; what was queued
    /// to it and not acknowledged is given up, and its senders are told it did not
    /// reach it (their messages sent from now on go through its mailbox).
    fn handle_moved_away(&mut self, id: ClientId, now: Timestamp) {
        self.now = self.now.max(now);
        let Some(&conn) = self.clients.get(&id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !matches!(&c.state, ConnState::Admitted(client) if !client.remote) {
            return;
        }
        let ConnState::Admitted(mut client) = std::mem::replace(&mut c.state, ConnState::Closing)
        else {
            return;
        };
        let was_away = c.parked_until.is_some();
        match c.parked_until.take() {
            Some(until) => {
                self.parked.remove(&(until, conn));
                self.conns.remove(&conn);
            }
            None => {
                // Its old connection still looked alive: it is not; close it quietly.
                c.out.discard_queued();
                self.closes.push_back(conn);
            }
        }
        let queued_here = super::sessions::take_owed(&mut client);
        // What came through its mailbox is still there for its new relay (it was not
        // acknowledged): only what this relay queued to it directly is lost.
        let owed = if client.via_mail {
            super::sessions::Owed::new()
        } else {
            queued_here
        };
        client.remote = true;
        client.via_mail = false;
        client.session = None;
        let handle = ConnId(self.next_conn);
        self.next_conn += 1;
        let out = Outbound::new(self.limits.relay_queue_bytes());
        let remote = Connection::without_transport(client, out, None, ErrorCode::Normal);
        self.conns.insert(handle, remote);
        self.clients.insert(id, handle);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.forget_letters(id);
            cluster.remote.insert(id);
            cluster.requests.push_back(ClusterRequest::Release { id });
        }
        self.told_held.retain(|&(away, _)| away != id);
        if was_away && self.presence_on() {
            self.notify_others(id, &Frame::Back { id });
        }
        self.report_undelivered(id, ErrorCode::ConnectionLost, owed);
        self.flush_delivered(now);
        self.cut_off_overflowed();
    }

    /// Queues one sender's run of `Deliver` frames for the local client on `target`.
    fn push_remote_deliveries(
        &mut self,
        target: ConnId,
        from: ClientId,
        bytes: Vec<u8>,
        ends: Vec<(u64, usize)>,
    ) {
        let Some(t) = self.conns.get_mut(&target) else {
            return;
        };
        let shared: Arc<[u8]> = Arc::from(bytes);
        let before = t.out.stream_end();
        let fitted = t.out.try_push_shared_deliveries(&shared, &ends).is_ok();
        if let ConnState::Admitted(Client {
            id, session: None, ..
        }) = &t.state
        {
            // A reader without a session reads what is queued: delivered now, as for
            // a sender on this relay.
            let after = t.out.stream_end();
            let seqs = ends
                .iter()
                .take_while(|&&(_, end)| before + end as u64 <= after)
                .map(|&(seq, _)| seq)
                .collect();
            let by = *id;
            if let Some(cluster) = self.cluster.as_mut() {
                cluster.receipt(from, by, seqs);
            }
        } else if let ConnState::Admitted(Client {
            session: Some(session),
            ..
        }) = &mut t.state
        {
            let after = t.out.stream_end();
            let queued = ends
                .iter()
                .take_while(|&&(_, end)| before + end as u64 <= after)
                .count();
            let messages: Arc<[(u64, usize)]> = Arc::from(ends.as_slice());
            session.owe_batch(before, from, &messages, queued);
        }
        if !fitted && !self.overflowed.contains(&target) {
            self.overflowed.push(target);
        }
        self.mark_ready(target);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_support::{Wire, party_security, relay_security};
    use crate::{ClientEvent, Limits};

    const T: Timestamp = Timestamp::ZERO;

    /// Whether `events` confirm our message `seq` delivered.
    fn confirmed(events: &[ClientEvent], seq: u64) -> bool {
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Delivered { seq: s } if *s >= seq))
    }

    /// Whether `events` say our message `seq` did not reach its recipient.
    fn undelivered(events: &[ClientEvent], seq: u64) -> bool {
        events.iter().any(|e| {
            matches!(e, ClientEvent::Error(r) if r.code == ErrorCode::Undelivered && r.seq == seq)
        })
    }

    /// An in-memory bus between relays in one test: the admission counter, where
    /// each client lives, and every request carried to the relays it concerns.
    struct Bus {
        next: u32,
        online: u32,
        limit: u32,
        home: BTreeMap<ClientId, usize>,
        /// Letters stored so far (their numbers), and the last each reader read.
        letters: u64,
        read: BTreeMap<ClientId, u64>,
        /// Letters not yet read, per mailbox, in order.
        mail: BTreeMap<ClientId, Vec<(u64, Vec<u8>)>>,
        /// Relays that died (no longer run, nothing delivered to them).
        dead: Vec<usize>,
    }

    /// Relays of one cluster, each with its clients, and the bus between them.
    struct Cluster {
        relays: Vec<Wire>,
        bus: Bus,
        /// Parties made so far (each client its own key).
        parties: u8,
    }

    impl Cluster {
        fn new(relays: usize, limit: u32) -> Self {
            let limits = Limits::default();
            let relays = (0..relays)
                .map(|_| {
                    let mut w = Wire::new(limits.clone());
                    w.server = RelayServer::clustered(limits.clone(), relay_security());
                    w
                })
                .collect();
            Cluster {
                relays,
                bus: Bus {
                    next: 0,
                    online: 0,
                    limit,
                    home: BTreeMap::new(),
                    letters: 0,
                    read: BTreeMap::new(),
                    mail: BTreeMap::new(),
                    dead: Vec::new(),
                },
                parties: 0,
            }
        }

        /// A client joins relay `r`; runs until the whole cluster is quiet. Returns its
        /// index on that relay.
        fn join(&mut self, r: usize, name: &str) -> usize {
            self.parties += 1;
            let i = self.relays[r].join_with(name, party_security(self.parties));
            self.settle();
            i
        }

        fn id(&mut self, r: usize, i: usize) -> Option<u32> {
            self.relays[r].client(i).id().map(|id| id.0)
        }

        /// Moves bytes and bus requests until nothing moves.
        fn settle(&mut self) {
            loop {
                let mut moved = false;
                for (r, w) in self.relays.iter_mut().enumerate() {
                    if !self.bus.dead.contains(&r) {
                        w.pump();
                    }
                }
                for r in 0..self.relays.len() {
                    if self.bus.dead.contains(&r) {
                        continue;
                    }
                    while let Some(request) = self.relays[r].server.poll_cluster() {
                        moved = true;
                        self.carry(r, request);
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        fn others(&self, r: usize) -> Vec<usize> {
            (0..self.relays.len())
                .filter(|&o| o != r && !self.bus.dead.contains(&o))
                .collect()
        }

        /// Client `i` of relay `from` loses its connection and dials relay `to`
        /// instead (its session resumes there, or not); returns its index there.
        /// (The clients after it on `from` move down one place.)
        fn move_client(&mut self, from: usize, i: usize, to: usize) -> usize {
            let mut a = self.relays[from].clients.remove(i);
            if !a.closed {
                a.closed = true;
                a.client.handle_closed(self.relays[to].now);
            }
            let w = &mut self.relays[to];
            a.conn = w.server.handle_connected(w.now);
            a.closed = false;
            a.stalled = false;
            a.held.clear();
            a.client.handle_reconnected(w.now);
            w.clients.push(a);
            self.settle();
            self.relays[to].clients.len() - 1
        }

        fn carry(&mut self, r: usize, request: ClusterRequest) {
            match request {
                ClusterRequest::Admit { conn } => {
                    let bus = &mut self.bus;
                    let answer = if bus.online >= bus.limit {
                        Admission::Full {
                            online: bus.online,
                            limit: bus.limit,
                        }
                    } else {
                        bus.online += 1;
                        bus.next += 1;
                        Admission::Id(ClientId(bus.next - 1))
                    };
                    self.relays[r].server.handle_admission(conn, answer, T);
                }
                ClusterRequest::Announce(entry) => {
                    self.bus.home.insert(entry.id, r);
                    for o in self.others(r) {
                        self.relays[o].server.handle_remote_joined(entry.clone(), T);
                    }
                }
                ClusterRequest::Update(entry) => {
                    for o in self.others(r) {
                        self.relays[o]
                            .server
                            .handle_remote_changed(entry.clone(), T);
                    }
                }
                ClusterRequest::Withdraw { id, code } => {
                    self.bus.online = self.bus.online.saturating_sub(1);
                    self.bus.home.remove(&id);
                    for o in self.others(r) {
                        self.relays[o].server.handle_remote_left(id, code, T);
                    }
                }
                ClusterRequest::Forward { to, frames } => {
                    let home = self.bus.home.get(&to).copied();
                    self.bus.letters += 1;
                    let letter = self.bus.letters;
                    let mailbox = self.bus.mail.entry(to).or_default();
                    mailbox.push((letter, frames.clone()));
                    let alive = home.filter(|h| !self.bus.dead.contains(h));
                    let taken = alive
                        .is_none_or(|h| self.relays[h].server.handle_mail(to, &frames, letter, T));
                    assert!(taken, "mail for {to} found no relay");
                }
                ClusterRequest::MailRead { to, letter } => {
                    let before = self.bus.read.insert(to, letter);
                    assert!(before.is_none_or(|b| b < letter), "letters read in order");
                    if let Some(mailbox) = self.bus.mail.get_mut(&to) {
                        mailbox.retain(|(l, _)| *l > letter);
                    }
                }
                ClusterRequest::Release { .. } => {}
                ClusterRequest::Adopt(entry) => {
                    let id = entry.id;
                    let old = self.bus.home.insert(id, r);
                    if let Some(old) = old.filter(|o| *o != r && !self.bus.dead.contains(o)) {
                        self.relays[old]
                            .server
                            .handle_cluster(ClusterInput::MovedAway { id }, T);
                    }
                    // Its mailbox is read here from the last letter it read.
                    let unread = self.bus.mail.get(&id).cloned().unwrap_or_default();
                    for (letter, frames) in unread {
                        let ok = self.relays[r].server.handle_mail(id, &frames, letter, T);
                        assert!(ok, "letter {letter} for {id} not taken at relay {r}");
                    }
                }
                ClusterRequest::Broadcast { frames } => {
                    for o in self.others(r) {
                        assert!(self.relays[o].server.handle_remote_broadcast(&frames, T));
                    }
                }
                ClusterRequest::Receipt { to, by, seqs } => {
                    let home = self.bus.home.get(&to).copied();
                    if let Some(h) = home {
                        self.relays[h].server.handle_receipt(to, by, seqs, T);
                    }
                }
            }
        }

        /// Moves every relay's clock on by `ms` in two steps (acknowledgements and
        /// receipts wait a little for company, and a receipt crosses the bus
        /// between them), settling after each.
        fn wait(&mut self, ms: u64) {
            for _ in 0..2 {
                for w in &mut self.relays {
                    let to = w.now + core::time::Duration::from_millis(ms / 2);
                    w.advance(to);
                }
                self.settle();
            }
        }

        fn messages(&mut self, r: usize, i: usize) -> Vec<(u32, String)> {
            self.relays[r].take_messages(i)
        }
    }

    #[test]
    fn ids_are_unique_across_relays_and_in_join_order() {
        let mut c = Cluster::new(3, 100);
        let a0 = c.join(0, "a0");
        let b0 = c.join(1, "b0");
        let c0 = c.join(2, "c0");
        let a1 = c.join(0, "a1");
        assert_eq!(
            [c.id(0, a0), c.id(1, b0), c.id(2, c0), c.id(0, a1)],
            [Some(0), Some(1), Some(2), Some(3)]
        );
        // Every relay lists all four.
        for r in 0..3 {
            assert_eq!(c.relays[r].server.online(), 4, "relay {r}");
        }
    }

    #[test]
    fn messages_cross_relays_both_ways_sealed_end_to_end() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let bob = c.join(1, "bob");
        let seen = c.relays[0].take_events(ann);
        assert!(
            seen.iter().any(|e| matches!(e, ClientEvent::Joined { id, name, key: Some(_) } if id.0 == 1 && name == "bob")),
            "{seen:?}"
        );
        c.relays[0]
            .client(ann)
            .send_chat(ClientId(1), "hi bob", T)
            .unwrap();
        c.settle();
        let got = c.relays[1].take_events(bob);
        assert!(
            got.iter().any(|e| matches!(e, ClientEvent::Message { from, text, encrypted: true, .. } if from.0 == 0 && text == "hi bob")),
            "{got:?}"
        );
        c.relays[1]
            .client(bob)
            .send_chat(ClientId(0), "hi ann", T)
            .unwrap();
        c.settle();
        assert_eq!(c.messages(0, ann), [(1, "hi ann".to_owned())]);
    }

    #[test]
    fn a_broadcast_reaches_everyone_on_every_relay_once() {
        let mut c = Cluster::new(3, 100);
        let ann = c.join(0, "ann");
        let also = c.join(0, "also");
        let bob = c.join(1, "bob");
        let cy = c.join(2, "cy");
        for (r, i) in [(0, ann), (0, also), (1, bob), (2, cy)] {
            c.relays[r].take_events(i);
        }
        let first = c.relays[0].client(ann).broadcast("hello all", T).unwrap();
        c.settle();
        for (r, i) in [(0, also), (1, bob), (2, cy)] {
            assert_eq!(c.messages(r, i), [(0, "hello all".to_owned())], "relay {r}");
        }
        assert!(c.messages(0, ann).is_empty(), "not back to its sender");
        // Confirmed once read everywhere: on its relay and on the other two.
        c.wait(2_000);
        let events = c.relays[0].take_events(ann);
        assert!(confirmed(&events, first), "{events:?}");
        // One reader on another relay stops reading: the next one is not confirmed
        // until it reads it, and is reported undelivered when it leaves instead.
        c.relays[2].clients[cy].stalled = true;
        let next = c.relays[0].client(ann).broadcast("second", T).unwrap();
        c.settle();
        c.wait(2_000);
        let events = c.relays[0].take_events(ann);
        assert!(!confirmed(&events, next), "{events:?}");
        c.relays[2].client(cy).leave(T);
        c.settle();
        c.wait(2_000);
        let events = c.relays[0].take_events(ann);
        assert!(undelivered(&events, next), "{events:?}");
    }

    #[test]
    fn who_lists_the_cluster_and_a_departure_is_told_everywhere() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let bob = c.join(1, "bob");
        c.relays[0].client(ann).request_roster(T);
        c.settle();
        let roster = c.relays[0]
            .take_events(ann)
            .into_iter()
            .rev()
            .find_map(|e| match e {
                ClientEvent::Roster { entries, .. } => Some(entries),
                _ => None,
            });
        let names: Vec<_> = roster
            .unwrap()
            .into_iter()
            .map(|e| (e.id.0, e.name))
            .collect();
        assert_eq!(names, [(0, "ann".to_owned()), (1, "bob".to_owned())]);
        c.relays[1].client(bob).leave(T);
        c.settle();
        c.wait(4_000);
        let events = c.relays[0].take_events(ann);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ClientEvent::Left { id, .. } if id.0 == 1)),
            "{events:?}"
        );
        assert_eq!(c.relays[0].server.online(), 1);
        assert_eq!(c.bus.online, 1, "its place is free");
        // A newcomer takes a new ID, never 1 again.
        let cy = c.join(1, "cy");
        assert_eq!(c.id(1, cy), Some(2));
    }

    #[test]
    fn a_full_cluster_refuses_with_its_own_figures() {
        let mut c = Cluster::new(2, 2);
        c.join(0, "ann");
        c.join(1, "bob");
        let cy = c.join(0, "cy");
        let refused = c.relays[0]
            .take_events(cy)
            .into_iter()
            .find_map(|e| match e {
                ClientEvent::Refused(r) => Some(r),
                _ => None,
            });
        let refused = refused.expect("refused");
        assert_eq!(refused.code, ErrorCode::ServerFull);
        assert_eq!((refused.online, refused.limit), (2, 2));
        assert!(
            refused.reason.contains("across the relays"),
            "{}",
            refused.reason
        );
    }

    #[test]
    fn when_everyone_on_every_relay_said_exit_the_conversation_is_over_everywhere() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let bob = c.join(1, "bob");
        c.relays[0].client(ann).exit(T);
        c.settle();
        assert!(
            !c.relays[0]
                .take_events(ann)
                .contains(&ClientEvent::Finished),
            "bob has not said exit"
        );
        c.relays[1].client(bob).exit(T);
        c.settle();
        assert!(
            c.relays[0]
                .take_events(ann)
                .contains(&ClientEvent::Finished)
        );
        assert!(
            c.relays[1]
                .take_events(bob)
                .contains(&ClientEvent::Finished)
        );
    }

    #[test]
    fn a_message_to_another_relay_is_delivered_when_read_there_and_undelivered_if_never() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let bob = c.join(1, "bob");
        c.relays[0].take_events(ann);
        let seq = c.relays[0]
            .client(ann)
            .send_chat(ClientId(1), "read", T)
            .unwrap();
        c.settle();
        c.wait(4_000);
        let events = c.relays[0].take_events(ann);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ClientEvent::Delivered { seq: s } if *s >= seq)),
            "{events:?}"
        );
        // The letter bob read is acknowledged on the bus, so no relay gives it again.
        let read = c.bus.read.get(&ClientId(1)).copied();
        assert_eq!(read, Some(c.bus.letters));
        // bob stops reading; what ann sends now is not confirmed...
        c.relays[1].clients[bob].stalled = true;
        let unread = c.relays[0]
            .client(ann)
            .send_chat(ClientId(1), "unread", T)
            .unwrap();
        c.settle();
        c.wait(4_000);
        // ...and its letter, handed to bob's relay but not read, is not acknowledged:
        // were that relay to die, the letter would wait for bob elsewhere.
        assert!(c.bus.letters > read.unwrap_or(0));
        assert_eq!(c.bus.read.get(&ClientId(1)).copied(), read);
        let events = c.relays[0].take_events(ann);
        assert!(!confirmed(&events, unread), "{events:?}");
        // ...and when bob leaves without reading it, ann is told it did not reach him.
        c.relays[1].client(bob).leave(T);
        c.settle();
        c.wait(4_000);
        let events = c.relays[0].take_events(ann);
        assert!(undelivered(&events, unread), "{events:?}");
    }

    #[test]
    fn a_relay_the_cluster_took_for_dead_tells_its_clients_to_join_again() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let bob = c.join(1, "bob");
        let online = c.bus.online;
        // Relay 0 was cut off from the bus; relay 1 took its clients for gone (and
        // freed their places), and the tombstone reaches relay 0 once it is back.
        c.relays[1].server.handle_cluster(
            ClusterInput::Left {
                id: ClientId(0),
                code: ErrorCode::ConnectionLost,
            },
            T,
        );
        c.relays[0].server.handle_cluster(
            ClusterInput::Left {
                id: ClientId(0),
                code: ErrorCode::ConnectionLost,
            },
            T,
        );
        c.settle();
        let events = c.relays[0].take_events(ann);
        assert!(
            events.iter().any(
                |e| matches!(e, ClientEvent::Disconnected { code: ErrorCode::ResumeFailed, reason }
                if reason.contains("lost touch with its cluster"))
            ),
            "{events:?}"
        );
        assert_eq!(c.bus.online, online, "its place is not freed twice");
        assert!(
            c.relays[1]
                .take_events(bob)
                .iter()
                .any(|e| matches!(e, ClientEvent::Left { id, .. } if id.0 == 0))
        );
    }

    #[test]
    fn a_client_whose_relay_died_resumes_on_another_with_its_id_and_nothing_lost_or_repeated() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let bob = c.join(1, "bob");
        let (ann_id, bob_id) = (ClientId(0), ClientId(1));
        c.relays[1].client(bob).send_chat(ann_id, "one", T).unwrap();
        c.settle();
        c.wait(2_000);
        assert_eq!(c.relays[0].take_messages(ann), vec![(1, "one".to_owned())]);
        // ann's relay takes a letter for her but she never reads it...
        c.relays[0].clients[ann].stalled = true;
        let two = c.relays[1].client(bob).send_chat(ann_id, "two", T).unwrap();
        c.settle();
        c.wait(2_000);
        // ...and dies. What ann types meanwhile is kept by her client.
        c.bus.dead.push(0);
        c.relays[0].clients[ann].client.handle_closed(T);
        c.relays[0]
            .client(ann)
            .send_chat(bob_id, "while moving", T)
            .unwrap();
        let ann = c.move_client(0, ann, 1);
        c.wait(2_000);
        let events = c.relays[1].take_events(ann);
        assert!(
            events.contains(&ClientEvent::Moved { id: ann_id }),
            "{events:?}"
        );
        let shown: Vec<(u32, String)> = events
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message { from, text, .. } => Some((from.0, text)),
                _ => None,
            })
            .collect();
        assert_eq!(
            shown,
            vec![(1, "two".to_owned())],
            "the unread letter, once"
        );
        assert_eq!(c.id(1, ann), Some(0), "the same ID");
        assert_eq!(
            c.relays[1].take_messages(bob),
            vec![(0, "while moving".to_owned())]
        );
        // bob's message is confirmed once ann read it here; later ones reach her
        // directly.
        let three = c.relays[1]
            .client(bob)
            .send_chat(ann_id, "three", T)
            .unwrap();
        c.settle();
        c.wait(2_000);
        assert_eq!(
            c.relays[1].take_messages(ann),
            vec![(1, "three".to_owned())]
        );
        let events = c.relays[1].take_events(bob);
        assert!(confirmed(&events, three), "{events:?}");
        assert!(three > two);
        // The relay lists her as its own: /who shows both, once.
        assert_eq!(c.relays[1].server.online(), 2);
    }

    #[test]
    fn a_client_that_moves_while_its_old_relay_lives_is_let_go_there() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let carl = c.join(0, "carl");
        let _bob = c.join(1, "bob");
        let ann_id = ClientId(0);
        // ann's link to relay 0 breaks (relay 0 lives and holds her session); carl
        // writes to her there meanwhile.
        c.relays[0].cut(ann);
        let held = c.relays[0]
            .client(carl)
            .send_chat(ann_id, "held", T)
            .unwrap();
        c.settle();
        // She comes back through relay 1, which takes her session over.
        let ann = c.move_client(0, ann, 1);
        let carl = carl - 1;
        c.wait(2_000);
        assert!(
            c.relays[1]
                .take_events(ann)
                .contains(&ClientEvent::Moved { id: ann_id })
        );
        // Relay 0 let her go: carl is told his held message did not reach her...
        let events = c.relays[0].take_events(carl);
        assert!(undelivered(&events, held), "{events:?}");
        // ...and what he sends now reaches her on relay 1, confirmed.
        let after = c.relays[0]
            .client(carl)
            .send_chat(ann_id, "after", T)
            .unwrap();
        c.settle();
        c.wait(2_000);
        assert_eq!(
            c.relays[1].take_messages(ann),
            vec![(1, "after".to_owned())]
        );
        let events = c.relays[0].take_events(carl);
        assert!(confirmed(&events, after), "{events:?}");
        assert_eq!(c.relays[0].server.online(), 3);
        assert_eq!(c.relays[1].server.online(), 3);
    }

    #[test]
    fn a_client_away_from_its_relay_is_shown_away_and_back_on_the_others() {
        let mut c = Cluster::new(2, 100);
        let ann = c.join(0, "ann");
        let bob = c.join(1, "bob");
        c.relays[1].take_events(bob);
        c.relays[0].cut(ann);
        c.settle();
        let events = c.relays[1].take_events(bob);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ClientEvent::Away { id, .. } if *id == ClientId(0))),
            "{events:?}"
        );
        let roster = c.relays[1].server.roster();
        assert!(
            matches!(&roster, Frame::Roster { entries, .. }
                if entries.iter().any(|e| e.id == ClientId(0) && e.away)),
            "{roster:?}"
        );
        c.relays[0].reconnect(ann);
        c.settle();
        let events = c.relays[1].take_events(bob);
        assert!(
            events.contains(&ClientEvent::Back { id: ClientId(0) }),
            "{events:?}"
        );
    }

    #[test]
    fn mail_that_is_not_deliveries_is_refused() {
        let mut c = Cluster::new(1, 100);
        let ann = c.join(0, "ann");
        let id = ClientId(c.id(0, ann).unwrap());
        assert!(
            !c.relays[0]
                .server
                .handle_mail(id, &Frame::Who.to_bytes(), 1, T)
        );
        assert!(
            !c.relays[0]
                .server
                .handle_mail(id, b"\x00\x00\x00\x09garbage", 1, T)
        );
        assert!(!c.relays[0].server.handle_mail(ClientId(99), &[], 1, T));
    }
}
