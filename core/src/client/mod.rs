//! [`RelayClient`]: one client of a relay server, from `Hello` to goodbye.
//!
//! It speaks first (magic and `Hello`), learns its ID from `Welcome`, keeps its own
//! copy of the roster current from `Joined` / `Left` / `Exited` notices, and turns
//! what the relay sends into [`ClientEvent`]s for the user interface. Messages typed
//! before `Welcome` are queued behind the `Hello`, so nothing typed early is lost.
//!
//! What it sends other clients is sealed end to end when they have a key
//! ([`sending`]), and what they send it is opened the same way ([`receiving`]).

mod receiving;
mod record_link;
mod saved;
mod seen;
mod sending;

pub use record_link::{RecordLink, RecordLinkError};

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashSet;

use crate::e2e::Keyring;
use crate::error::{ErrorCode, SendError};
use crate::file::{FileEvent, FileMsg, Files, Hash, TransferId};
use crate::frame::{Envelope, ErrorReport, Frame, Hello, Refused, Role, RosterEntry};
use crate::handshake::{CAP_MOVES, CAP_NOISE, CAP_RESUME, our_hello, validate_name};
use crate::id::ClientId;
use crate::keepalive::KeepaliveAction;
use crate::limits::Limits;
use crate::link::{Incoming, Link, LinkState, Received};
use crate::secure::{self, Entropy, PublicKey, RecordCipher, Security};
use crate::session::Away;
use crate::time::Timestamp;

/// What a relay client's user should see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The relay admitted us.
    Welcomed {
        /// Our ID.
        id: ClientId,
        /// The relay's client limit.
        max_clients: u32,
        /// The protocol version agreed.
        version: u16,
        /// The relay's key, when the connection is encrypted (`None`: it is not).
        relay_key: Option<PublicKey>,
        /// The cipher of the secure channel to the relay (ours to choose), when there
        /// is one.
        cipher: Option<RecordCipher>,
    },
    /// Who is online (after `Welcome`, and in answer to `/who`): `total` clients, the
    /// first of them listed (a very large relay lists only as many as fit a frame).
    Roster {
        /// Clients online in all.
        total: u32,
        /// The first of them, in ID order.
        entries: Vec<RosterEntry>,
    },
    /// Another client was admitted.
    Joined {
        /// Its ID.
        id: ClientId,
        /// Its nickname.
        name: String,
        /// Its key (`None` for a client that does not encrypt).
        key: Option<PublicKey>,
    },
    /// A client left.
    Left {
        /// Its ID.
        id: ClientId,
        /// Why.
        code: ErrorCode,
    },
    /// A client said `exit` (it still receives).
    Exited {
        /// Its ID.
        id: ClientId,
    },
    /// A client's connection was lost; the relay holds its session for it to come
    /// back, and messages to it wait, for up to `wait`. Then [`ClientEvent::Back`],
    /// or [`ClientEvent::Left`] when it did not come back.
    Away {
        /// Its ID.
        id: ClientId,
        /// How its connection was lost.
        code: ErrorCode,
        /// How long the relay holds its session, from now.
        wait: core::time::Duration,
    },
    /// A client that was away resumed its session.
    Back {
        /// Its ID.
        id: ClientId,
    },
    /// Our message `seq` to client `to`, which is away, waits for it (told once per
    /// absence): it is delivered if `to` comes back within `wait`, and reported
    /// undelivered otherwise.
    Held {
        /// The away recipient.
        to: ClientId,
        /// Our sequence number of the message.
        seq: u64,
        /// How long it can still wait, from now.
        wait: core::time::Duration,
    },
    /// A chat message for us.
    Message {
        /// The sender's ID.
        from: ClientId,
        /// Our ID, or [`ClientId::BROADCAST`] for a message to everyone.
        to: ClientId,
        /// The sender's sequence number.
        seq: u64,
        /// The text.
        text: String,
        /// Whether it came end-to-end encrypted (sealed by the sender for us); a
        /// message from a client without a key comes in the clear.
        encrypted: bool,
    },
    /// What we send client `id` is not end-to-end encrypted: it has no key (a
    /// plain-text client, or one started with `--insecure`). Told once per client;
    /// with `everyone`, about messages to everyone, which it cannot read at all.
    NotEndToEnd {
        /// The client without a key.
        id: ClientId,
        /// About messages to everyone (sealed with our group key, which it cannot
        /// hold), not about messages to it.
        everyone: bool,
    },
    /// Every message of ours up to `seq` reached each of its recipients, or we were
    /// told (an [`ClientEvent::Error`]) which recipient did not get it and why.
    Delivered {
        /// The highest sequence number settled.
        seq: u64,
    },
    /// The session ended before the relay confirmed that these messages of ours
    /// reached their recipients (`Delivered`): they may or may not have. Sent just
    /// before `Disconnected`, only when the session did not end normally.
    Unconfirmed {
        /// Each message's sequence number and recipient, in order.
        messages: Vec<(u64, ClientId)>,
    },
    /// A message from another client that could not be read: it did not open with
    /// the keys it named, came again or out of order, or waited for a key that never
    /// came. It is left out; the connection goes on.
    Unreadable {
        /// The sender's ID.
        from: ClientId,
        /// The sender's sequence number.
        seq: u64,
        /// Why, in words.
        reason: String,
    },
    /// A message with a payload kind this version does not know; ignored.
    UnsupportedPayload {
        /// The sender's ID.
        from: ClientId,
        /// The kind byte.
        kind: u8,
    },
    /// The relay reported a problem with something we sent; the connection stays up.
    Error(ErrorReport),
    /// The relay turned us away.
    Refused(Refused),
    /// Something about a file transfer (an offer, a chunk to read or write, progress,
    /// the end). See [`FileEvent`].
    File(FileEvent),
    /// We said exit and the relay reports that every online client has said exit
    /// (`AllExited`): nobody can send us anything more, so the client leaves.
    Finished,
    /// The connection to the relay was lost, but the session goes on: the client
    /// dials again by itself (the driver does, when [`RelayClient::poll_reconnect`]
    /// says) and the relay holds our ID and what is sent to us for `grace`.
    /// Messages sent meanwhile wait, and go out once we are back.
    ConnectionLost {
        /// How it was lost.
        code: ErrorCode,
        /// How it was lost, in words.
        reason: String,
        /// How long from now the relay holds our session.
        grace: core::time::Duration,
    },
    /// A dial to get back failed; the next is at `at` (attempt `attempt`).
    Reconnecting {
        /// How many attempts failed so far.
        attempt: u32,
        /// When the next is due.
        at: Timestamp,
    },
    /// We are back in our session on a new connection: same ID, nothing lost and
    /// nothing twice in either direction.
    Resumed {
        /// Our ID, as before.
        id: ClientId,
    },
    /// Our relay went away and another relay of its cluster took our session over:
    /// same ID; what the old relay had not acknowledged was sent again, nothing is
    /// shown twice, and what it took without confirming was named just before
    /// ([`ClientEvent::Unconfirmed`]).
    Moved {
        /// Our ID, as before.
        id: ClientId,
    },
    /// The session is over (after `Refused`, too). `Normal` when we left on purpose;
    /// `ResumeFailed` when the relay no longer held it (it restarted, or the grace
    /// period passed): join again as a new client.
    Disconnected {
        /// Why.
        code: ErrorCode,
        /// Why, in words.
        reason: String,
    },
}

/// Where the client is in the conversation with the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `Hello` sent, waiting for `Welcome` or `Refused`.
    Handshaking,
    /// Admitted with this ID (connected, or away and trying to get back).
    Admitted(ClientId),
    /// Back on a new connection with this ID: `Resume` sent, waiting for `Resumed`.
    Resuming(ClientId),
    /// The conversation is over; a `Disconnected` event has been emitted.
    Over,
}

/// The relay client state machine. See the module documentation.
#[derive(Debug)]
pub struct RelayClient {
    limits: Limits,
    security: Security,
    /// The relay's key, once the handshake proved it.
    relay_key: Option<PublicKey>,
    link: Link,
    phase: Phase,
    exited: bool,
    next_seq: u64,
    max_clients: u32,
    roster: BTreeMap<ClientId, RosterEntry>,
    events: VecDeque<ClientEvent>,
    files: Files,
    /// The relay said everyone has exited; we leave once our transfers are over.
    all_exited: bool,
    /// Which transfer each of our offers' sequence numbers belongs to, so that a
    /// refusal by the relay (which quotes the sequence number) fails the right one.
    offer_seqs: BTreeMap<u64, TransferId>,
    /// The latest time an input carried (for sends triggered by `handle_written`).
    last_now: Timestamp,
    /// Our end-to-end keys (`None` without a key, or with `--insecure`: everything
    /// goes in the clear).
    keyring: Option<Keyring>,
    /// What waits for a recipient's key.
    outbox: sending::Outbox,
    /// Messages held until their sender's group key arrives.
    held: receiving::Held,
    /// Messages already given, so that one delivered twice is shown once.
    seen: seen::Seen,
    /// The clients we told the user have no key (and whether about messages to
    /// everyone).
    told_plain: FxHashSet<(ClientId, bool)>,
    /// Whether the relay speaks the session layer with us (it agreed to
    /// `CAP_RESUME`): acknowledgements, `Delivered`, resume.
    resumable: bool,
    /// Our chat messages not yet confirmed delivered (`Delivered`) nor refused, by
    /// sequence number: their recipients.
    unconfirmed: BTreeMap<u64, ClientId>,
    /// Our own `Hello`, to say it again when we come back.
    hello: Hello,
    /// Fresh randomness for each handshake (injected through `Security::seed`).
    entropy: Entropy,
    /// What we must show to come back to this session, and how long the relay holds
    /// it, once the relay told us.
    resume_token: Option<([u8; 16], core::time::Duration)>,
    /// Bytes of the relay's session stream handled.
    received: u64,
    /// While the connection is lost and the session goes on.
    away: Option<Away>,
    /// Chat messages received (what a session saved while a file is under way
    /// follows, instead of every byte: see `saved.rs`).
    chat_seen: u64,
}

impl RelayClient {
    /// A client that introduces itself as `name` (may be empty). The magic and `Hello`
    /// are queued at once.
    ///
    /// With `security` offering encryption, the Noise handshake starts at once too (its
    /// first message right behind the `Hello`), and everything after it waits for the
    /// channel.
    pub fn new(
        name: &str,
        limits: Limits,
        security: Security,
        now: Timestamp,
    ) -> Result<Self, String> {
        validate_name(name, limits.max_name_len)?;
        let mut link = Link::new(&limits, now, true);
        let offers = security.offers();
        let keyring = match (&security.identity, offers) {
            (Some(identity), true) => Some(Keyring::new(
                identity.clone(),
                &security.seed,
                security.cipher,
            )),
            _ => None,
        };
        let noise = if offers { CAP_NOISE } else { 0 };
        let hello = our_hello(Role::RelayClient, name, noise | CAP_RESUME | CAP_MOVES);
        link.send(&Frame::Hello(hello.clone()), now);
        // Everything after the Hello is our session stream, kept until acknowledged.
        link.retain_session(limits.max_unacked_bytes);
        let mut entropy = Entropy::new(security.seed);
        if offers {
            let seed = entropy.next_seed();
            let (handshake, first) = secure::initiate(&security, &hello, seed).map_err(|e| e.0)?;
            let pattern = handshake.pattern().to_u8();
            link.begin_handshake(handshake);
            link.send_handshake(pattern, first, now);
        }
        let max_outbound = limits.max_outbound_bytes;
        let window = limits.relay_file_window;
        Ok(RelayClient {
            limits,
            security,
            relay_key: None,
            link,
            phase: Phase::Handshaking,
            exited: false,
            next_seq: 1,
            max_clients: 0,
            roster: BTreeMap::new(),
            events: VecDeque::new(),
            files: Files::new(max_outbound, window),
            all_exited: false,
            offer_seqs: BTreeMap::new(),
            last_now: now,
            keyring,
            outbox: sending::Outbox::default(),
            held: receiving::Held::default(),
            seen: seen::Seen::default(),
            told_plain: FxHashSet::default(),
            resumable: false,
            unconfirmed: BTreeMap::new(),
            hello,
            entropy,
            resume_token: None,
            received: 0,
            away: None,
            chat_seen: 0,
        })
    }

    /// Our ID, once admitted.
    pub fn id(&self) -> Option<ClientId> {
        match self.phase {
            Phase::Admitted(id) | Phase::Resuming(id) => Some(id),
            _ => None,
        }
    }

    /// The relay's client limit (0 before `Welcome`).
    pub fn max_clients(&self) -> u32 {
        self.max_clients
    }

    /// Who is online, as far as the roster and notices received so far tell, in ID
    /// order (on a relay past its presence limit, only what the last roster listed).
    pub fn roster(&self) -> impl Iterator<Item = &RosterEntry> {
        self.roster.values()
    }

    /// Messages this machine has received (and acknowledged) but not shown yet: they
    /// wait for an earlier message of the same sender whose group key has not come.
    /// As (sender, sequence number). A driver whose machine is lost for good (not
    /// restarted from its saved session) loses these with it; their senders were
    /// told they were delivered, as a messenger's "delivered" means "reached the
    /// device".
    pub fn held_messages(&self) -> Vec<(ClientId, u64)> {
        self.held.messages()
    }

    /// Whether we said `exit`.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    /// Whether the session is over or closing (a lost connection whose session goes
    /// on is not closed: messages sent meanwhile wait for the next one).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Over || (!self.link.is_open() && !self.link.is_detached())
    }

    /// Whether the connection is lost and the session goes on (we try to get back).
    pub fn is_away(&self) -> bool {
        self.away.is_some() && self.phase != Phase::Over
    }

    /// Bytes queued for the relay or handed to the driver and not yet written (and
    /// messages waiting for a recipient's key).
    pub fn pending_bytes(&self) -> usize {
        self.link.pending() + self.outbox.bytes()
    }

    /// Whether a message of `len` bytes would fit in the outbound queue now; a driver
    /// reading input faster than the network takes it should wait while this is false.
    pub fn has_room_for(&self, len: usize) -> bool {
        self.pending_bytes() + len + 128 <= self.limits.max_outbound_bytes
            && self.link.unacked() + len + 128 <= self.limits.max_unacked_bytes
    }

    /// Our long-term key, when we encrypt end to end.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.keyring.as_ref().map(Keyring::public)
    }

    /// Sends `text` to client `to`. Returns the message's sequence number, which the
    /// relay quotes if it reports an error about it.
    pub fn send_chat(
        &mut self,
        to: ClientId,
        text: &str,
        now: Timestamp,
    ) -> Result<u64, SendError> {
        if to.is_broadcast() {
            return Err(SendError::InvalidRecipient(to));
        }
        self.send_payload(to, text, now)
    }

    /// Sends `text` to every other online client.
    pub fn broadcast(&mut self, text: &str, now: Timestamp) -> Result<u64, SendError> {
        self.send_payload(ClientId::BROADCAST, text, now)
    }

    fn send_payload(&mut self, to: ClientId, text: &str, now: Timestamp) -> Result<u64, SendError> {
        if text.len() > self.limits.max_text_len {
            return Err(SendError::MessageTooLong {
                len: text.len(),
                max: self.limits.max_text_len,
            });
        }
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if self.exited {
            return Err(SendError::AlreadyExited);
        }
        if !self.has_room_for(text.len()) {
            return Err(SendError::QueueFull {
                pending: self.pending_bytes(),
            });
        }
        if to.is_broadcast() {
            self.share_group_key(now);
        }
        let seq = self.take_seq();
        let item = sending::Outgoing::Chat {
            to,
            seq,
            kind: crate::frame::PayloadKind::Text,
            plain: text.as_bytes().to_vec(),
        };
        if self.resumable || self.phase == Phase::Handshaking {
            self.unconfirmed.insert(seq, to);
        }
        self.submit(item, now);
        Ok(seq)
    }

    /// Offers a file to client `to`; the transfer begins when it accepts
    /// ([`FileEvent::Accepted`]). Its hash comes at the end ([`RelayClient::file_hashed`]).
    pub fn offer_file(
        &mut self,
        to: ClientId,
        name: &str,
        size: u64,
        now: Timestamp,
    ) -> Result<TransferId, SendError> {
        if to.is_broadcast() {
            return Err(SendError::InvalidRecipient(to));
        }
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if self.exited {
            return Err(SendError::AlreadyExited);
        }
        let transfer = self.files.offer(Some(to), name, size);
        self.pump_files(now);
        Ok(transfer)
    }

    /// Accepts an offered file; we already hold `offset` bytes hashing to `prefix_hash`
    /// (0 and the hash of nothing for a fresh download).
    pub fn accept_file(
        &mut self,
        from: ClientId,
        transfer: TransferId,
        offset: u64,
        prefix_hash: Hash,
        now: Timestamp,
    ) -> bool {
        let ok = self.files.accept(Some(from), transfer, offset, prefix_hash);
        self.pump_files(now);
        ok
    }

    /// Declines an offered file.
    pub fn decline_file(
        &mut self,
        from: ClientId,
        transfer: TransferId,
        reason: &str,
        now: Timestamp,
    ) -> bool {
        let ok = self.files.decline(Some(from), transfer, reason);
        self.pump_files(now);
        ok
    }

    /// Starts sending an accepted file from `offset` (the receiver's offset if its
    /// prefix matched our file, else 0).
    pub fn start_sending(&mut self, transfer: TransferId, offset: u64, now: Timestamp) -> bool {
        let ok = self.files.start_sending(transfer, offset);
        self.pump_files(now);
        ok
    }

    /// Hands over the chunk asked for by [`FileEvent::ReadChunk`].
    pub fn file_data(
        &mut self,
        transfer: TransferId,
        offset: u64,
        data: Vec<u8>,
        now: Timestamp,
    ) -> bool {
        let ok = self.files.file_data(transfer, offset, data);
        self.pump_files(now);
        ok
    }

    /// Hands over the BLAKE3 hash of the whole file sent as `transfer`, once its last
    /// chunk was handed over (see [`FileEvent::ReadChunk`]); `Done` carries it.
    pub fn file_hashed(&mut self, transfer: TransferId, hash: Hash, now: Timestamp) -> bool {
        let ok = self.files.hashed(transfer, hash);
        self.pump_files(now);
        ok
    }

    /// Reports that a received file is written up to `written` bytes.
    pub fn chunk_written(
        &mut self,
        from: ClientId,
        transfer: TransferId,
        written: u64,
        now: Timestamp,
    ) {
        self.files.chunk_written(Some(from), transfer, written);
        self.pump_files(now);
    }

    /// Reports whether a completely received file's hash matched.
    pub fn finish_receiving(
        &mut self,
        from: ClientId,
        transfer: TransferId,
        ok: bool,
        reason: &str,
        now: Timestamp,
    ) {
        self.files
            .finish_receiving(Some(from), transfer, ok, reason);
        self.pump_files(now);
    }

    /// Abandons a transfer (ours if `outgoing`, else one we receive from `peer`).
    pub fn cancel_file(
        &mut self,
        peer: ClientId,
        transfer: TransferId,
        outgoing: bool,
        reason: &str,
        now: Timestamp,
    ) -> bool {
        let ok = self.files.cancel(Some(peer), transfer, outgoing, reason);
        self.pump_files(now);
        ok
    }

    /// Moves file traffic: asks the driver for chunks while the outbound queue has
    /// room for about one chunk per sending transfer (so chat never waits behind
    /// more), sends queued file messages, and passes file events on.
    fn pump_files(&mut self, now: Timestamp) {
        self.last_now = self.last_now.max(now);
        if !self.link.is_open() {
            return;
        }
        self.files
            .pump(self.pending_bytes(), self.limits.max_outbound_bytes);
        while let Some((to, msg)) = self.files.poll_outbox() {
            let Some(to) = to else { continue };
            let seq = self.take_seq();
            if let FileMsg::Offer { transfer, .. } = &msg {
                self.offer_seqs.insert(seq, *transfer);
            }
            self.submit(sending::Outgoing::File { to, seq, msg }, now);
        }
        while let Some(e) = self.files.poll_event() {
            self.events.push_back(ClientEvent::File(e));
        }
        self.finish_if_done();
    }

    /// Leaves once the relay said everyone has exited and no transfer is under way.
    fn finish_if_done(&mut self) {
        if self.exited && self.all_exited && self.files.is_idle() && self.link.is_open() {
            self.events.push_back(ClientEvent::Finished);
            self.link.close(ErrorCode::Normal, "everyone has said exit");
            self.end(ErrorCode::Normal, "everyone has said exit".into());
        }
    }

    /// Asks the relay for the roster; it arrives as a [`ClientEvent::Roster`].
    pub fn request_roster(&mut self, now: Timestamp) {
        self.link.send(&Frame::Who, now);
    }

    /// Says `exit`: we send no more messages but keep receiving, until the relay
    /// reports that every online client has said exit (then
    /// [`ClientEvent::Finished`]). Idempotent.
    pub fn exit(&mut self, now: Timestamp) {
        if !self.exited && (self.link.is_open() || self.is_away()) {
            self.exited = true;
            self.submit(sending::Outgoing::Exit, now);
        }
    }

    /// Leaves the relay now (Ctrl-C): tells it so and closes.
    pub fn leave(&mut self, _now: Timestamp) {
        if self.phase == Phase::Over {
            return;
        }
        if self.link.is_open() {
            self.link.close(ErrorCode::Normal, "client left");
        } else {
            self.link.finish();
        }
        // Leaving early: say what may not have arrived.
        self.name_unconfirmed();
        self.end(ErrorCode::Normal, "you left the relay".into());
    }

    /// Bytes arrived from the relay.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Timestamp) {
        let received = self.link.receive(bytes, now);
        self.process(received, now);
        self.send_ack(now);
        self.pump_files(now);
    }

    /// Owes the relay an acknowledgement of how much of its session stream we
    /// handled (after each read; the link decides when it goes).
    fn send_ack(&mut self, now: Timestamp) {
        if self.resumable {
            self.link.owe_ack(self.received, now);
        }
    }

    /// Acts on what one read held, in order.
    fn process(&mut self, received: Received, now: Timestamp) {
        self.received += received.session_bytes;
        for item in received.frames {
            if !self.link.is_open() {
                break;
            }
            match item {
                Incoming::Frame(frame) => self.on_frame(frame, now),
                Incoming::File {
                    envelope: Envelope::Relay { from, .. },
                    msg,
                } if matches!(self.phase, Phase::Admitted(_)) => self.on_file_message(from, msg),
                Incoming::File { .. } if self.phase == Phase::Over => {}
                Incoming::File { .. } => {
                    let reason =
                        "the relay sent a file message before Welcome, or outside a Deliver";
                    self.fail(ErrorCode::UnexpectedFrame, reason.into());
                    break;
                }
            }
        }
        if let Some(err) = received.error
            && self.link.is_open()
        {
            let reason = format!("the relay sent something unreadable: {err}");
            self.link.close(err.code(), &reason);
            self.end(err.code(), reason);
        }
    }

    /// The driver wrote `n` bytes of what `poll_transmit` gave it.
    pub fn handle_written(&mut self, n: usize) {
        self.link.confirm_written(n);
        // An acknowledgement that waited for room.
        self.link.poll_ack(self.last_now);
        if self.has_backlog() {
            self.flush_outbox(self.last_now);
        }
        // Room in the queue: maybe the next file chunk.
        if self.files.waiting_for_room(self.pending_bytes()) {
            self.pump_files(self.last_now);
        }
    }

    /// The transport connection ended.
    pub fn handle_closed(&mut self, now: Timestamp) {
        let was = self.link.state();
        let detached = self.link.is_detached();
        self.link.transport_closed();
        if was != LinkState::Closed && !detached {
            let reason = "the connection to the relay was lost".to_owned();
            self.lose_connection(ErrorCode::ConnectionLost, reason, now);
        }
    }

    /// Time passed: keepalive and dead-relay detection; while away, the end of the
    /// relay's grace period.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.last_now = self.last_now.max(now);
        self.link.poll_ack(now);
        if let KeepaliveAction::Expired = self.link.poll_keepalive(now) {
            let reason = self.link.silence_message();
            self.link.finish();
            self.lose_connection(ErrorCode::PeerTimeout, reason, now);
        }
        if let Some(away) = self.away
            && now >= away.until
            && self.phase != Phase::Over
        {
            self.link.finish();
            let reason = "could not get back to the relay before it gave up on this session; join again as a new client";
            self.end(ErrorCode::ResumeFailed, reason.into());
        }
    }

    /// The connection is gone (`code`): if the session can go on, we are away and
    /// dial again; else the session is over.
    fn lose_connection(&mut self, code: ErrorCode, reason: String, now: Timestamp) {
        let resumable = self.resumable
            && self.resume_token.is_some()
            && matches!(self.phase, Phase::Admitted(_) | Phase::Resuming(_));
        if !resumable {
            self.end(code, reason);
            return;
        }
        self.link.detach();
        if let Phase::Resuming(id) = self.phase {
            self.phase = Phase::Admitted(id);
        }
        match self.away {
            // A dial got through but the new connection died too.
            Some(_) => self.handle_reconnect_failed(now),
            None => {
                let grace = self
                    .resume_token
                    .map_or(core::time::Duration::ZERO, |t| t.1);
                self.away = Some(Away::starting(now, grace));
                self.events.push_back(ClientEvent::ConnectionLost {
                    code,
                    reason,
                    grace,
                });
            }
        }
    }

    /// When the driver should dial the relay again, while the connection is lost and
    /// the session goes on; it then reports [`RelayClient::handle_reconnected`] or
    /// [`RelayClient::handle_reconnect_failed`].
    pub fn poll_reconnect(&self) -> Option<Timestamp> {
        match (self.phase, self.away) {
            (Phase::Admitted(_), Some(away)) if !self.link.is_open() => away.next,
            _ => None,
        }
    }

    /// A dial to the relay failed: the next one is later.
    pub fn handle_reconnect_failed(&mut self, now: Timestamp) {
        if let Some(away) = self.away.as_mut() {
            let at = now + away.attempt_failed();
            away.next = Some(at);
            let attempt = away.failed;
            self.events
                .push_back(ClientEvent::Reconnecting { attempt, at });
        }
    }

    /// A new connection to the relay is open: we say who we were (`Hello` with
    /// `resuming`, the handshake, then `Resume` with our token and how much of the
    /// relay's stream we hold). What we sent meanwhile waits for the relay's answer.
    pub fn handle_reconnected(&mut self, now: Timestamp) {
        let (Phase::Admitted(id), Some((token, _))) = (self.phase, self.resume_token) else {
            return;
        };
        if self.away.is_none() || self.link.is_open() {
            return;
        }
        if let Some(away) = self.away.as_mut() {
            away.next = None;
        }
        let mut link = self.link.successor(&self.limits, now, true);
        let hello = Hello {
            resuming: true,
            ..self.hello.clone()
        };
        link.send(&Frame::Hello(hello.clone()), now);
        if self.security.offers() {
            let seed = self.entropy.next_seed();
            match secure::initiate(&self.security, &hello, seed) {
                Ok((handshake, first)) => {
                    let pattern = handshake.pattern().to_u8();
                    link.begin_handshake(handshake);
                    link.send_handshake(pattern, first, now);
                }
                Err(e) => {
                    self.end(ErrorCode::HandshakeFailed, e.0);
                    return;
                }
            }
        }
        link.send(
            &Frame::Resume {
                id,
                token,
                received: self.received,
            },
            now,
        );
        self.link = link;
        self.phase = Phase::Resuming(id);
    }

    /// The next bytes to write to the relay.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.link.poll_transmit()
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When the driver must call `handle_timeout` next, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let until = self
            .away
            .map(|a| a.until)
            .filter(|_| self.phase != Phase::Over);
        [self.link.timeout(), until].into_iter().flatten().min()
    }

    /// Whether the driver should close the connection once it has written everything
    /// `poll_transmit` gave it.
    pub fn wants_close(&self) -> bool {
        self.link.wants_close()
    }

    fn on_frame(&mut self, frame: Frame, now: Timestamp) {
        match (self.phase, frame) {
            (Phase::Handshaking, Frame::Welcome(w)) => {
                self.phase = Phase::Admitted(w.client_id);
                self.resumable = w.capabilities & CAP_RESUME != 0;
                if !self.resumable {
                    // A relay without the session layer: nothing is acknowledged, so
                    // there is nothing to keep nor to count.
                    self.link.stop_retaining();
                    self.unconfirmed.clear();
                }
                self.max_clients = w.max_clients;
                self.events.push_back(ClientEvent::Welcomed {
                    id: w.client_id,
                    max_clients: w.max_clients,
                    version: w.version,
                    relay_key: self.relay_key,
                    cipher: self.link.cipher(),
                });
            }
            (Phase::Handshaking | Phase::Resuming(_), Frame::Handshake { pattern, message }) => {
                self.on_handshake(pattern, &message, now);
            }
            (Phase::Resuming(id), Frame::Resumed { received }) => {
                if let Err(beyond) = self.link.resend_from(received) {
                    // Only a session saved while a file was under way, and resumed by
                    // a new process, can be behind what the relay holds.
                    let reason = format!(
                        "the relay holds {} bytes of this session's stream, more than the {} this client kept (saved while a file was under way); join again as a new client",
                        beyond.claimed, beyond.sent
                    );
                    self.fail(ErrorCode::ResumeFailed, reason);
                    return;
                }
                self.phase = Phase::Admitted(id);
                self.away = None;
                self.events.push_back(ClientEvent::Resumed { id });
                self.flush_outbox(now);
            }
            (Phase::Resuming(id), Frame::Moved) => {
                // Another relay of the cluster took the session over: its stream goes
                // on from our count, ours starts anew there, and we send again all
                // our old relay never acknowledged.
                let resent = self.link.resend_all_anew();
                // What the old relay acknowledged but never confirmed delivered,
                // nobody can confirm now: the user is told, as when a session ends.
                let gone: Vec<(u64, ClientId)> = self
                    .unconfirmed
                    .iter()
                    .filter(|(seq, _)| !resent.contains(seq))
                    .map(|(&seq, &to)| (seq, to))
                    .collect();
                for (seq, to) in &gone {
                    self.unconfirmed.remove(seq);
                    if let Some(ring) = self.keyring.as_mut() {
                        ring.may_have_lost(*to);
                    }
                }
                if !gone.is_empty() {
                    self.events
                        .push_back(ClientEvent::Unconfirmed { messages: gone });
                }
                self.phase = Phase::Admitted(id);
                self.away = None;
                self.events.push_back(ClientEvent::Moved { id });
                self.flush_outbox(now);
            }
            (Phase::Resuming(_), Frame::Refused(r)) => {
                self.link.finish();
                self.end(r.code, r.reason);
            }
            (Phase::Handshaking, Frame::Refused(r)) => {
                let reason = r.reason.clone();
                let code = r.code;
                self.events.push_back(ClientEvent::Refused(r));
                self.link.finish();
                self.end(code, reason);
            }
            (Phase::Resuming(_), Frame::Close { code, message }) if !code.is_final() => {
                // This connection was turned away (too slow a handshake, too many at
                // once, ...), not our session: dial again.
                self.link.finish();
                self.lose_connection(code, message, now);
            }
            (_, Frame::Close { code, message }) => {
                self.link.finish();
                self.end(code, message);
            }
            (_, Frame::Ping(nonce)) => self.link.send(&Frame::Pong(nonce), now),
            (_, Frame::Pong(_)) => {}
            (Phase::Admitted(_), frame) => self.on_admitted_frame(frame, now),
            (Phase::Handshaking, Frame::Hello(_)) => {
                let reason =
                    "this address is a direct-chat peer, not a relay: use `p2pchat connect`";
                self.fail(ErrorCode::WrongRole, reason.into());
            }
            (Phase::Handshaking, other) => {
                let reason = format!("the relay sent {} before Welcome", other.name());
                self.fail(ErrorCode::UnexpectedFrame, reason);
            }
            (Phase::Resuming(_), other) => {
                let reason = format!("the relay sent {} before Resumed", other.name());
                self.fail(ErrorCode::UnexpectedFrame, reason);
            }
            (Phase::Over, _) => {}
        }
    }

    fn on_admitted_frame(&mut self, frame: Frame, now: Timestamp) {
        match frame {
            Frame::Roster { total, entries } => {
                if let Some(ring) = self.keyring.as_mut() {
                    for e in &entries {
                        ring.announce(e.id, e.key);
                    }
                }
                self.roster = entries.iter().map(|e| (e.id, e.clone())).collect();
                self.events
                    .push_back(ClientEvent::Roster { total, entries });
                self.flush_outbox(now);
            }
            Frame::AllExited => {
                self.all_exited = true;
                self.finish_if_done();
            }
            Frame::Joined { id, name, key } => {
                let entry = RosterEntry {
                    id,
                    exited: false,
                    away: false,
                    name: name.clone(),
                    key,
                };
                self.roster.insert(id, entry);
                self.events.push_back(ClientEvent::Joined { id, name, key });
                if let Some(ring) = self.keyring.as_mut() {
                    ring.announce(id, key);
                }
                // Once we write to everyone, a newcomer gets our group key at once
                // rather than asking for it.
                if key.is_some() && !self.exited {
                    self.owe_group_key(id, now);
                }
                self.flush_outbox(now);
            }
            Frame::Delivered { seq } => {
                let later = self.unconfirmed.split_off(&(seq.saturating_add(1)));
                let delivered = std::mem::replace(&mut self.unconfirmed, later);
                if let Some(ring) = self.keyring.as_mut() {
                    for (s, to) in delivered {
                        ring.delivered(to, s);
                    }
                }
                self.events.push_back(ClientEvent::Delivered { seq });
            }
            Frame::Ack { received } => {
                if let Err(beyond) = self.link.acknowledge(received) {
                    let reason = format!(
                        "the relay acknowledged {} bytes of our session stream; we sent {}",
                        beyond.claimed, beyond.sent
                    );
                    self.fail(ErrorCode::MalformedFrame, reason);
                }
            }
            Frame::ResumeToken { token, grace_ms } => {
                let grace = core::time::Duration::from_millis(u64::from(grace_ms));
                self.resume_token = Some((token, grace));
            }
            Frame::Profile(entry) => {
                if let Some(ring) = self.keyring.as_mut() {
                    ring.announce(entry.id, entry.key);
                }
                self.lookup_answered(entry.id, now);
            }
            Frame::Left { id, code } => {
                self.roster.remove(&id);
                if let Some(ring) = self.keyring.as_mut() {
                    ring.forget(id);
                }
                self.outbox.forget(id);
                self.files.peer_gone(Some(id), &format!("client {id} left"));
                self.give_up_held(id, &format!("client {id} left"));
                self.events.push_back(ClientEvent::Left { id, code });
            }
            Frame::Exited { id } => {
                if let Some(e) = self.roster.get_mut(&id) {
                    e.exited = true;
                }
                self.events.push_back(ClientEvent::Exited { id });
            }
            Frame::Away { id, code, grace_ms } => {
                if let Some(e) = self.roster.get_mut(&id) {
                    e.away = true;
                }
                let wait = core::time::Duration::from_millis(u64::from(grace_ms));
                self.events.push_back(ClientEvent::Away { id, code, wait });
            }
            Frame::Back { id } => {
                if let Some(e) = self.roster.get_mut(&id) {
                    e.away = false;
                }
                self.events.push_back(ClientEvent::Back { id });
            }
            Frame::Held { to, seq, wait_ms } => {
                let wait = core::time::Duration::from_millis(u64::from(wait_ms));
                self.events.push_back(ClientEvent::Held { to, seq, wait });
            }
            Frame::Deliver {
                from,
                to,
                seq,
                payload,
            } => {
                // A repeat (the session moved between relays) is acknowledged with
                // the rest of the stream, and not shown again.
                if self.seen.first_time(from, seq) {
                    self.on_deliver(from, to, seq, payload, now);
                }
            }
            Frame::Error(report) => {
                // Refused, and the user is told why: settled either way.
                self.unconfirmed.remove(&report.seq);
                if report.code == ErrorCode::Undelivered
                    && let (Some(to), Some(ring)) = (report.subject, self.keyring.as_mut())
                {
                    ring.may_have_lost(to);
                }
                if report.code == ErrorCode::UnknownRecipient
                    && report.seq == 0
                    && let Some(id) = report.subject
                    && self.outbox.is_looking_up(id)
                {
                    // The answer to our lookup.
                    self.give_up_held(id, &format!("client {id} is not online"));
                    self.lookup_failed(id, &report, now);
                    return;
                }
                if self.outbox.was_keys(report.seq) {
                    // About our key exchange, not anything the user sent.
                    if let Some(id) = report.subject {
                        self.give_up_held(id, &report.message);
                    }
                    return;
                }
                if report.code == ErrorCode::FileRefused
                    && let Some(transfer) = self.offer_seqs.remove(&report.seq)
                {
                    self.files.refused(transfer, &report.message);
                } else if report.code == ErrorCode::UnknownRecipient
                    && let Some(id) = report.subject
                {
                    self.files
                        .peer_gone(Some(id), &format!("client {id} is not online"));
                    self.give_up_held(id, &format!("client {id} is not online"));
                }
                self.events.push_back(ClientEvent::Error(report));
            }
            other => {
                let reason = format!("the relay sent {}, which only a client sends", other.name());
                self.fail(ErrorCode::UnexpectedFrame, reason);
            }
        }
    }

    /// The relay's handshake message (`XX`'s second, under `pattern`, which must be the
    /// one we proposed): check its key, answer with the third, and the channel exists.
    fn on_handshake(&mut self, pattern: u8, message: &[u8], now: Timestamp) {
        let Some(handshake) = self.link.handshake() else {
            let reason =
                "the relay sent a handshake message, but this client did not offer to encrypt";
            self.fail(ErrorCode::UnexpectedFrame, reason.into());
            return;
        };
        let step = handshake
            .follow(pattern)
            .and_then(|()| handshake.read(message));
        let step = step.and_then(|_| {
            let key = handshake.remote_key();
            let reply = handshake.write(&[])?;
            Ok((key, reply, handshake.pattern()))
        });
        let (key, reply, pattern) = match step {
            Ok(step) => step,
            Err(e) => {
                let code = if self.security.password.is_some() {
                    ErrorCode::WrongPassword
                } else {
                    ErrorCode::HandshakeFailed
                };
                self.fail(
                    code,
                    format!("the secure handshake with the relay failed: {}", e.0),
                );
                return;
            }
        };
        if let Some(key) = key
            && let Err(why) = self.security.check_key("", &key)
        {
            self.fail(
                ErrorCode::KeyChanged,
                format!("the relay's key changed: {why}"),
            );
            return;
        }
        self.link.send_handshake(pattern.to_u8(), reply, now);
        match self.link.establish() {
            Ok(key)
                if matches!(self.phase, Phase::Resuming(_))
                    && self.relay_key.is_some_and(|known| known != key) =>
            {
                self.fail(
                    ErrorCode::KeyChanged,
                    "the relay we came back to has another key than the one we left".into(),
                );
                return;
            }
            Ok(key) => self.relay_key = Some(key),
            Err(e) => {
                self.fail(ErrorCode::HandshakeFailed, e.0);
                return;
            }
        }
        // Records the relay sent right behind its handshake message.
        let stashed = self.link.receive_stashed();
        self.process(stashed, now);
    }

    /// A file message from client `from` (decoded in place by the link).
    fn on_file_message(&mut self, from: ClientId, msg: Option<FileMsg>) {
        match msg {
            Some(msg) => self.files.on_message(Some(from), msg),
            None => self
                .events
                .push_back(ClientEvent::UnsupportedPayload { from, kind: 2 }),
        }
    }

    /// Unit tests: the ID and token of our session.
    #[cfg(test)]
    pub(crate) fn session_for_tests(
        &self,
    ) -> (Option<ClientId>, Option<([u8; 16], core::time::Duration)>) {
        (self.id(), self.resume_token)
    }

    /// Unit tests: pretend to be away from the session `stolen` names.
    #[cfg(test)]
    pub(crate) fn take_session_for_tests(
        &mut self,
        stolen: (Option<ClientId>, Option<([u8; 16], core::time::Duration)>),
    ) {
        if let (Some(id), Some(token)) = stolen {
            self.phase = Phase::Admitted(id);
            self.resume_token = Some(token);
        }
    }

    /// The relay broke the protocol: tell it why, close, and tell the user.
    fn fail(&mut self, code: ErrorCode, reason: String) {
        self.link.close(code, &reason);
        self.end(code, reason);
    }

    /// Tells the user which of our messages were not confirmed delivered, as the
    /// session ends. Before `Welcome` nothing can have been confirmed yet, so that is
    /// everything sent; after it, only a relay with the session layer tells us more.
    fn name_unconfirmed(&mut self) {
        let counts = self.resumable || self.phase == Phase::Handshaking;
        if counts && !self.unconfirmed.is_empty() {
            let messages = std::mem::take(&mut self.unconfirmed).into_iter().collect();
            self.events.push_back(ClientEvent::Unconfirmed { messages });
        }
    }

    fn end(&mut self, code: ErrorCode, reason: String) {
        if self.phase != Phase::Over {
            if code != ErrorCode::Normal {
                self.name_unconfirmed();
            }
            self.give_up_all_held("the session ended first");
            self.files.all_gone("the connection to the relay ended");
            while let Some(e) = self.files.poll_event() {
                self.events.push_back(ClientEvent::File(e));
            }
            self.phase = Phase::Over;
            self.away = None;
            self.events
                .push_back(ClientEvent::Disconnected { code, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Wire;

    const T: Timestamp = Timestamp::ZERO;

    #[test]
    fn messages_typed_before_welcome_are_not_lost() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        // b types before its handshake has even been sent.
        let conn = w.server.handle_connected(T);
        let mut b = RelayClient::new(
            "b",
            Limits::default(),
            crate::test_support::party_security(9),
            T,
        )
        .unwrap();
        b.send_chat(ClientId(0), "typed early", T).unwrap();
        b.exit(T);
        w.clients.push(crate::test_support::Attached {
            conn,
            client: b,
            stalled: false,
            held: Vec::new(),
            closed: false,
            events: Vec::new(),
        });
        w.pump();
        assert_eq!(w.take_messages(a), vec![(1, "typed early".to_owned())]);
    }

    #[test]
    fn welcome_roster_and_notices_keep_the_local_roster_current() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("ann");
        let events = w.take_events(a);
        assert!(matches!(
            events[0],
            ClientEvent::Welcomed {
                id: ClientId(0),
                max_clients: 256,
                version: 4,
                relay_key: Some(_),
                cipher: Some(RecordCipher::ChaChaPoly),
            }
        ));
        let b = w.join("bob");
        w.client(b).exit(T);
        w.pump();
        let names: Vec<_> = w
            .client(a)
            .roster()
            .map(|e| (e.id.0, e.name.clone(), e.exited))
            .collect();
        assert_eq!(
            names,
            vec![(0, "ann".into(), false), (1, "bob".into(), true)]
        );
        w.client(b).leave(T);
        w.pump();
        assert_eq!(w.client(a).roster().count(), 1);
    }

    #[test]
    fn after_exit_a_client_leaves_once_everyone_else_has_said_exit() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let b = w.join("b");
        let c = w.join("c");
        w.client(a).exit(T);
        w.pump();
        assert!(!w.client(a).is_closed(), "b and c may still send");
        w.client(b)
            .send_chat(ClientId(0), "still listening?", T)
            .unwrap();
        w.client(b).exit(T);
        w.pump();
        assert!(!w.client(a).is_closed(), "c may still send");
        w.client(c).leave(T);
        w.pump();
        for i in [a, b] {
            let events = w.take_events(i);
            assert!(events.contains(&ClientEvent::Finished), "{i}: {events:?}");
            assert!(w.client(i).is_closed());
        }
    }

    #[test]
    fn local_checks_refuse_bad_sends_without_queueing_anything() {
        let limits = Limits {
            max_outbound_bytes: 200,
            ..Limits::default()
        };
        let mut c = RelayClient::new("c", limits.clone(), Security::insecure(), T).unwrap();
        let long = "x".repeat(limits.max_text_len + 1);
        assert!(matches!(
            c.send_chat(ClientId(0), &long, T),
            Err(SendError::MessageTooLong { .. })
        ));
        assert_eq!(
            c.send_chat(ClientId::BROADCAST, "x", T),
            Err(SendError::InvalidRecipient(ClientId::BROADCAST))
        );
        let mut sent = 0;
        while c.send_chat(ClientId(0), "0123456789", T).is_ok() {
            sent += 1;
        }
        assert!(sent > 0 && sent < 10);
        assert!(matches!(
            c.send_chat(ClientId(0), "more", T),
            Err(SendError::QueueFull { .. })
        ));
        assert!(RelayClient::new("\u{7}", Limits::default(), Security::insecure(), T).is_err());
    }

    #[test]
    fn messages_not_confirmed_delivered_are_named_when_the_session_ends() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let _b = w.join("b");
        let one = w.client(a).send_chat(ClientId(1), "confirmed", T).unwrap();
        w.client(a).send_chat(ClientId(7), "nobody", T).unwrap();
        w.pump();
        // Receipts with nothing to ride with go within the relay's rider delay (1 s,
        // on the client's phase of it).
        w.advance(T + core::time::Duration::from_millis(2_100));
        let events = w.take_events(a);
        // (The one for 7 never leaves: nobody by that ID has a key to seal it for.)
        assert!(
            events.contains(&ClientEvent::Delivered { seq: one }),
            "{events:?}"
        );
        // Two more, and the connection drops before they are written: the session
        // goes on, so they wait...
        let two = w.client(a).send_chat(ClientId(1), "lost?", T).unwrap();
        let all = w.client(a).broadcast("lost too?", T).unwrap();
        w.take_events(a);
        w.clients[a].closed = true;
        w.client(a).handle_closed(T);
        w.pump();
        assert!(matches!(
            w.take_events(a).as_slice(),
            [ClientEvent::ConnectionLost {
                code: ErrorCode::ConnectionLost,
                ..
            }]
        ));
        // ... until the relay's grace period is over without us getting back.
        let grace = Limits::default().resume_grace;
        w.client(a).handle_timeout(T + grace);
        w.pump();
        let events = w.take_events(a);
        assert_eq!(
            events.first(),
            Some(&ClientEvent::Unconfirmed {
                messages: vec![(two, ClientId(1)), (all, ClientId::BROADCAST)]
            }),
            "neither the delivered one nor the refused one: {events:?}"
        );
        assert!(matches!(
            events.last(),
            Some(ClientEvent::Disconnected {
                code: ErrorCode::ResumeFailed,
                ..
            })
        ));
    }

    #[test]
    fn a_silent_relay_is_given_up_after_the_idle_timeout() {
        let limits = Limits::default();
        let mut c = RelayClient::new("c", limits.clone(), Security::insecure(), T).unwrap();
        while c.poll_transmit().is_some() {}
        let deadline = T + limits.idle_timeout;
        let mut now = T;
        while let Some(t) = c.poll_timeout() {
            now = t;
            c.handle_timeout(t);
            if c.is_closed() {
                break;
            }
        }
        assert_eq!(now, deadline);
        let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(matches!(
            events.last(),
            Some(ClientEvent::Disconnected {
                code: ErrorCode::PeerTimeout,
                ..
            })
        ));
    }
}
