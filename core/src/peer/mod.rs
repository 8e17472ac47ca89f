//! [`Peer`]: one side of a direct two-person conversation.
//!
//! The connecting side speaks first; the accepting side stays silent until the
//! connector's magic has arrived (so that a stream that is not p2pchat never gets
//! binary back), then answers with its own magic and `Hello`. Both can type from the
//! first moment: what is typed before the handshake is queued behind our `Hello`.
//!
//! Exit is a half-close: my `exit` ends my sending, I keep receiving; when both sides
//! have said exit the conversation ends cleanly and both close. Keepalive notices a
//! peer that vanished without closing. A conversation outlives a lost connection: the
//! connecting side dials again and both resume where they were ([`resume`]).

mod resume;
mod saved;

use std::collections::VecDeque;

use crate::error::{ErrorCode, SendError};
use crate::file::{FileEvent, FileMsg, Files, Hash, TransferId};
use crate::frame::{
    Envelope, ErrorReport, Frame, Hello, Payload, PayloadKind, Role, encode_message_with,
};
use crate::handshake::{CAP_NOISE, CAP_RESUME, negotiate_version, our_hello, validate_name};
use crate::keepalive::KeepaliveAction;
use crate::limits::Limits;
use crate::link::{Incoming, Link, LinkState, Received};
use crate::secure::{
    self, Entropy, HandshakeError, NoiseHandshake, PublicKey, RecordCipher, Security,
};
use crate::text::TextInput;
use crate::time::Timestamp;

/// Which end of the TCP connection this peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSide {
    /// It dialled (`p2pchat connect`): speaks first.
    Connector,
    /// It accepted (`p2pchat listen`): answers once the other side has spoken.
    Acceptor,
}

/// What one side of a direct conversation should show its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The handshake completed.
    Connected {
        /// The other side's nickname (empty for a plain-text peer).
        name: String,
        /// The protocol version agreed (0 for a plain-text peer).
        version: u16,
        /// Whether the other side speaks plain text (`nc`, the original app): lines,
        /// no handshake, no keepalive.
        plain_text: bool,
        /// The other side's key, proven by the secure handshake; `None` when the
        /// conversation is not encrypted.
        key: Option<PublicKey>,
        /// The cipher of the secure channel (the connecting side's choice); `None`
        /// when the conversation is not encrypted.
        cipher: Option<RecordCipher>,
    },
    /// A chat message from the other side.
    Message {
        /// Its sequence number.
        seq: u64,
        /// The text.
        text: String,
    },
    /// A message with a payload kind this version does not know; ignored.
    UnsupportedPayload {
        /// The kind byte.
        kind: u8,
    },
    /// The other side said `exit`: it will send no more, but still reads.
    PeerExited,
    /// Every message of ours up to `seq` reached the other side.
    Delivered {
        /// The highest sequence number delivered.
        seq: u64,
    },
    /// The connection was lost, but the conversation goes on: the connecting side
    /// dials again (its driver does, when [`Peer::poll_reconnect`] says), the
    /// listening side waits for it, for `grace`. What is sent meanwhile waits.
    ConnectionLost {
        /// How it was lost.
        code: ErrorCode,
        /// How it was lost, in words.
        reason: String,
        /// How long from now the conversation waits to be resumed.
        grace: core::time::Duration,
    },
    /// A dial (or, listening, a wait) to get back failed; another follows.
    Reconnecting {
        /// How many attempts failed so far.
        attempt: u32,
    },
    /// The conversation goes on over a new connection: nothing lost, nothing twice.
    Resumed,
    /// The conversation ended before the other side confirmed these messages of
    /// ours (by sequence number): they may or may not have arrived.
    Unconfirmed {
        /// Their sequence numbers, in order.
        seqs: Vec<u64>,
    },
    /// The other side reported a problem with something we sent.
    Error(ErrorReport),
    /// Something about a file transfer. See [`FileEvent`].
    File(FileEvent),
    /// Both sides said exit: the conversation is over and the connection closes.
    Finished,
    /// The conversation ended otherwise: the peer vanished, closed, or broke the protocol.
    Disconnected {
        /// Why.
        code: ErrorCode,
        /// Why, in words.
        reason: String,
    },
}

/// The direct-chat state machine. See the module documentation.
#[derive(Debug)]
pub struct Peer {
    limits: Limits,
    side: PeerSide,
    security: Security,
    entropy: Entropy,
    /// Our own `Hello` (the accepting side proves it inside the handshake).
    own_hello: Hello,
    link: Link,
    /// The other side's `Hello`, once it arrived.
    remote: Option<Hello>,
    we_exited: bool,
    /// Our user's input ended (`end_of_input`): a lost connection with nothing of
    /// ours unconfirmed is not waited for.
    input_ended: bool,
    they_exited: bool,
    next_seq: u64,
    last_remote_seq: u64,
    over: bool,
    /// Whether `Connected` was reported for a plain-text peer.
    plain_text_announced: bool,
    events: VecDeque<PeerEvent>,
    files: Files,
    /// The latest time an input carried (for sends triggered by `handle_written`).
    last_now: Timestamp,
    /// The session layer: acknowledgements and resume (see [`resume`]).
    session: resume::PeerSession,
    /// Whether the current link has seen the other side's `Hello` (each new link of
    /// a resumed conversation starts with one).
    link_hello: bool,
    /// Chat messages received (see `RelayClient`'s, and `saved.rs`).
    chat_seen: u64,
}

impl Peer {
    /// One side of a conversation, introducing itself as `name` (may be empty).
    ///
    /// With `security` offering encryption, the connecting side starts the Noise
    /// handshake at once (its first message right behind the `Hello`); everything
    /// either side says waits for the channel.
    pub fn new(
        side: PeerSide,
        name: &str,
        limits: Limits,
        security: Security,
        now: Timestamp,
    ) -> Result<Self, String> {
        validate_name(name, limits.max_name_len)?;
        let mut link = Link::new(&limits, now, side == PeerSide::Connector);
        let offers = security.offers();
        let noise = if offers { CAP_NOISE } else { 0 };
        let hello = our_hello(Role::DirectPeer, name, noise | CAP_RESUME);
        link.send(&Frame::Hello(hello.clone()), now);
        // Everything after the Hellos is our session stream, kept until acknowledged.
        link.retain_session(limits.max_unacked_bytes);
        let mut entropy = Entropy::new(security.seed);
        if offers && side == PeerSide::Acceptor {
            // Nothing but the Hello goes out in the clear while a handshake may follow.
            link.hold_for_channel();
        }
        if offers && side == PeerSide::Connector {
            let (handshake, first) =
                secure::initiate(&security, &hello, entropy.next_seed()).map_err(|e| e.0)?;
            let pattern = handshake.pattern().to_u8();
            link.begin_handshake(handshake);
            link.send_handshake(pattern, first, now);
        }
        Ok(Peer::on_link(
            link, limits, side, security, entropy, hello, now,
        ))
    }

    /// A peer over `link`, before anything was said.
    fn on_link(
        link: Link,
        limits: Limits,
        side: PeerSide,
        security: Security,
        entropy: Entropy,
        own_hello: Hello,
        now: Timestamp,
    ) -> Self {
        let files = Files::new(limits.max_outbound_bytes, limits.direct_file_window);
        Peer {
            limits,
            side,
            security,
            entropy,
            own_hello,
            link,
            remote: None,
            we_exited: false,
            input_ended: false,
            they_exited: false,
            next_seq: 1,
            last_remote_seq: 0,
            over: false,
            plain_text_announced: false,
            events: VecDeque::new(),
            files,
            last_now: now,
            session: resume::PeerSession::default(),
            link_hello: false,
            chat_seen: 0,
        }
    }

    /// One side of a plain-text conversation (with `nc -l` or the original app): no
    /// magic, no handshake; lines both ways, `exit` as a bare word.
    pub fn new_plain_text(limits: Limits, now: Timestamp) -> Self {
        let link = Link::new_plain_text(&limits, now);
        let security = Security::insecure();
        let entropy = Entropy::new(security.seed);
        let hello = our_hello(Role::DirectPeer, "", 0);
        let mut peer = Peer::on_link(
            link,
            limits,
            PeerSide::Connector,
            security,
            entropy,
            hello,
            now,
        );
        peer.announce_plain_text();
        peer
    }

    fn announce_plain_text(&mut self) {
        if !self.plain_text_announced {
            self.plain_text_announced = true;
            self.events.push_back(PeerEvent::Connected {
                name: String::new(),
                version: 0,
                plain_text: true,
                key: None,
                cipher: None,
            });
        }
    }

    /// Whether the other side speaks plain text.
    pub fn is_plain_text(&self) -> bool {
        self.link.is_plain_text()
    }

    /// The other side's nickname, once known.
    pub fn remote_name(&self) -> Option<&str> {
        self.remote.as_ref().map(|h| h.name.as_str())
    }

    /// Whether we said `exit`.
    pub fn has_exited(&self) -> bool {
        self.we_exited
    }

    /// Whether the other side said `exit`.
    pub fn peer_has_exited(&self) -> bool {
        self.they_exited
    }

    /// Whether the conversation is over (finished or disconnected).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Bytes queued for the other side or handed to the driver and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.link.pending()
    }

    /// Whether a message of `len` bytes fits in the outbound queue now.
    pub fn has_room_for(&self, len: usize) -> bool {
        self.link.pending() + len + 64 <= self.limits.max_outbound_bytes
    }

    /// Sends a chat message; returns its sequence number.
    pub fn send_chat(&mut self, text: &str, now: Timestamp) -> Result<u64, SendError> {
        if text.len() > self.limits.max_text_len {
            return Err(SendError::MessageTooLong {
                len: text.len(),
                max: self.limits.max_text_len,
            });
        }
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if self.we_exited {
            return Err(SendError::AlreadyExited);
        }
        let seq = self.next_seq;
        let frame = Frame::Message {
            seq,
            payload: Payload::text(text),
        };
        if self.link.unacked() + text.len() + 64 > self.limits.max_unacked_bytes
            || !self.link.try_send(&frame, now)
        {
            return Err(SendError::QueueFull {
                pending: self.link.pending().max(self.link.unacked()),
            });
        }
        self.next_seq += 1;
        self.session.sent_chat(self.link.stream_end(), seq);
        Ok(seq)
    }

    /// Offers a file to the other side ([`FileEvent::Accepted`] follows if it agrees).
    /// Its hash comes at the end ([`Peer::file_hashed`]).
    pub fn offer_file(
        &mut self,
        name: &str,
        size: u64,
        now: Timestamp,
    ) -> Result<TransferId, SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if self.link.is_plain_text() {
            return Err(SendError::NotSupported(
                "a plain-text peer cannot receive files",
            ));
        }
        if self.we_exited {
            return Err(SendError::AlreadyExited);
        }
        let transfer = self.files.offer(None, name, size);
        self.pump_files(now);
        Ok(transfer)
    }

    /// Accepts an offered file, holding `offset` bytes already (resume).
    pub fn accept_file(
        &mut self,
        transfer: TransferId,
        offset: u64,
        prefix_hash: Hash,
        now: Timestamp,
    ) -> bool {
        let ok = self.files.accept(None, transfer, offset, prefix_hash);
        self.pump_files(now);
        ok
    }

    /// Declines an offered file.
    pub fn decline_file(&mut self, transfer: TransferId, reason: &str, now: Timestamp) -> bool {
        let ok = self.files.decline(None, transfer, reason);
        self.pump_files(now);
        ok
    }

    /// Starts sending an accepted file from `offset`.
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
    pub fn chunk_written(&mut self, transfer: TransferId, written: u64, now: Timestamp) {
        self.files.chunk_written(None, transfer, written);
        self.pump_files(now);
    }

    /// Reports whether a completely received file's hash matched.
    pub fn finish_receiving(
        &mut self,
        transfer: TransferId,
        ok: bool,
        reason: &str,
        now: Timestamp,
    ) {
        self.files.finish_receiving(None, transfer, ok, reason);
        self.pump_files(now);
    }

    /// Abandons a transfer (ours if `outgoing`).
    pub fn cancel_file(
        &mut self,
        transfer: TransferId,
        outgoing: bool,
        reason: &str,
        now: Timestamp,
    ) -> bool {
        let ok = self.files.cancel(None, transfer, outgoing, reason);
        self.pump_files(now);
        ok
    }

    /// Moves file traffic (see `RelayClient`'s twin): chunks only while the queue
    /// holds less than about one chunk per sending transfer.
    fn pump_files(&mut self, now: Timestamp) {
        self.last_now = self.last_now.max(now);
        if !self.link.is_open() {
            return;
        }
        self.files
            .pump(self.link.pending(), self.limits.max_outbound_bytes);
        while let Some((_, msg)) = self.files.poll_outbox() {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.link.send_encoded(
                |out| encode_message_with(out, seq, PayloadKind::File, |b| msg.encode_into(b)),
                now,
            );
        }
        while let Some(e) = self.files.poll_event() {
            self.events.push_back(PeerEvent::File(e));
        }
        self.finish_if_both_exited();
    }

    /// Says `exit`: we send no more messages; we keep receiving until the other side
    /// says exit too. Idempotent.
    pub fn exit(&mut self, now: Timestamp) {
        if self.we_exited || self.is_closed() {
            return;
        }
        self.we_exited = true;
        self.link.send(&Frame::Exit, now);
        self.finish_if_both_exited();
    }

    /// Our user's input ended (end of stdin): says `exit`, and from now on a lost
    /// connection is not waited for when everything we sent was confirmed
    /// delivered: nobody is left to type, and nothing of ours is at stake. (With
    /// something unconfirmed the conversation still waits, to deliver it.)
    pub fn end_of_input(&mut self, now: Timestamp) {
        self.input_ended = true;
        self.exit(now);
        if self.is_away() {
            self.end_if_nothing_to_wait_for();
        }
    }

    /// Leaves now without waiting for the other side (Ctrl-C): tells it and closes.
    pub fn leave(&mut self, _now: Timestamp) {
        if self.over {
            return;
        }
        if self.link.is_open() {
            self.link
                .close(ErrorCode::Normal, "the other side left the conversation");
        } else {
            self.link.finish();
        }
        self.name_unconfirmed();
        self.end(PeerEvent::Disconnected {
            code: ErrorCode::Normal,
            reason: "you left the conversation".into(),
        });
    }

    /// Bytes arrived from the other side.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Timestamp) {
        let received = self.link.receive(bytes, now);
        if self.link.is_plain_text() && self.session.is_returning() {
            // Someone in plain text, while this conversation waits for its peer.
            self.link.close(
                ErrorCode::ResumeFailed,
                "this p2pchat is in a conversation that is waiting for its peer to come back; try again later",
            );
            return;
        }
        if self.link.is_plain_text() {
            self.announce_plain_text();
            for input in received.lines {
                self.on_text_input(input);
            }
            return;
        }
        self.process(received, now);
        self.send_ack(now);
    }

    /// Acts on the frames of one read, in order.
    fn process(&mut self, received: Received, now: Timestamp) {
        self.session.count_received(received.session_bytes);
        for item in received.frames {
            if !self.link.is_open() {
                return;
            }
            match item {
                Incoming::Frame(frame) => self.on_frame(frame, now),
                Incoming::File {
                    envelope: Envelope::Direct { seq },
                    msg,
                } if self.link_hello => self.on_file_message(seq, msg, now),
                Incoming::File { .. } => {
                    let reason = "a file message before Hello, or inside a relay's Deliver: \
                                  a direct peer does not send that";
                    self.fail(ErrorCode::UnexpectedFrame, reason.into());
                    return;
                }
            }
        }
        if let Some(err) = received.error
            && self.link.is_open()
        {
            let reason = format!("the other side sent something unreadable: {err}");
            self.fail(err.code(), reason);
        }
    }

    /// The driver wrote `n` bytes of what `poll_transmit` gave it.
    pub fn handle_written(&mut self, n: usize) {
        self.link.confirm_written(n);
        // An acknowledgement that waited for room.
        self.link.poll_ack(self.last_now);
        if self.files.waiting_for_room(self.link.pending()) {
            self.pump_files(self.last_now);
        }
    }

    /// The transport connection ended.
    pub fn handle_closed(&mut self, now: Timestamp) {
        let was = self.link.state();
        let detached = self.link.is_detached();
        self.link.transport_closed();
        if was == LinkState::Closed || self.over || detached {
            return;
        }
        if self.is_away() {
            // A connection that came to resume the conversation, and did not.
            self.candidate_gone(now);
            return;
        }
        if self.link.is_plain_text() {
            // A plain-text peer has no exit handshake: closing is its goodbye.
            let event = if self.we_exited {
                PeerEvent::Finished
            } else {
                PeerEvent::Disconnected {
                    code: ErrorCode::Normal,
                    reason: "the peer closed the connection".into(),
                }
            };
            self.end(event);
            return;
        }
        let reason = if self.they_exited {
            "the other side closed the connection after saying exit"
        } else {
            "the connection to the other side was lost"
        };
        self.lose_connection(ErrorCode::ConnectionLost, reason.into(), now);
    }

    /// Time passed: keepalive and vanished-peer detection.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.last_now = self.last_now.max(now);
        self.link.poll_ack(now);
        if let KeepaliveAction::Expired = self.link.poll_keepalive(now) {
            let reason = self.link.silence_message();
            self.link.finish();
            self.lose_connection(ErrorCode::PeerTimeout, reason, now);
        }
        self.away_timeout(now);
    }

    /// When the driver should look whether the connection has anything more to read,
    /// and report [`Peer::handle_read_idle`] if not: while a plain-text peer that never
    /// sent a newline (the original app) has a partial line, a pause after its last
    /// bytes. `None` otherwise.
    pub fn read_idle_check(&self) -> Option<Timestamp> {
        self.link.read_idle_check()
    }

    /// A read at `now` found nothing more to read. A plain-text peer's partial line
    /// ends here if it never sent a newline and its last bytes came a pause ago
    /// (docs/PROTOCOL.md, section 10): only the driver can tell the sender's pause
    /// from bytes it has not read yet.
    pub fn handle_read_idle(&mut self, now: Timestamp) {
        self.last_now = self.last_now.max(now);
        if let Some(input) = self.link.on_read_idle(now) {
            self.on_text_input(input);
        }
    }

    /// The other side finished sending (a clean end of stream, not a reset): a
    /// plain-text peer's unfinished last line is delivered, since it said all it will
    /// say. Report [`Peer::handle_closed`] as usual afterwards.
    pub fn handle_end_of_stream(&mut self, now: Timestamp) {
        self.last_now = self.last_now.max(now);
        if let Some(input) = self.link.finish_text() {
            self.on_text_input(input);
        }
    }

    /// The next bytes to write to the other side.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.link.poll_transmit()
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// When the driver must call `handle_timeout` next, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [self.link.timeout(), self.away_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the driver should close the connection once it has written everything
    /// `poll_transmit` gave it.
    pub fn wants_close(&self) -> bool {
        self.link.wants_close()
    }

    fn on_frame(&mut self, frame: Frame, now: Timestamp) {
        if !self.link_hello {
            match frame {
                Frame::Hello(hello) => self.on_hello(hello, now),
                Frame::Close { code, message } => {
                    self.link.finish();
                    self.end(PeerEvent::Disconnected {
                        code,
                        reason: message,
                    });
                }
                Frame::Refused(r) => {
                    let reason = format!(
                        "this address is a relay server, use `p2pchat join`: {}",
                        r.reason
                    );
                    self.link.finish();
                    self.end(PeerEvent::Disconnected {
                        code: ErrorCode::WrongRole,
                        reason,
                    });
                }
                other => {
                    let reason =
                        format!("{} before Hello: the handshake comes first", other.name());
                    self.fail(ErrorCode::UnexpectedFrame, reason);
                }
            }
            return;
        }
        match frame {
            Frame::Handshake { pattern, message } => self.on_handshake(pattern, &message, now),
            Frame::Message { seq, payload } => self.on_message(seq, payload, now),
            Frame::Exit => {
                if !self.they_exited {
                    self.they_exited = true;
                    self.events.push_back(PeerEvent::PeerExited);
                    self.finish_if_both_exited();
                }
            }
            Frame::Ping(nonce) => self.link.send(&Frame::Pong(nonce), now),
            Frame::Pong(_) => {}
            Frame::Error(report) => self.events.push_back(PeerEvent::Error(report)),
            Frame::Ack { received } => self.on_ack(received),
            Frame::ResumeToken { token, grace_ms } => self.on_resume_token(token, grace_ms),
            Frame::Resume {
                token, received, ..
            } => self.on_resume(token, received, now),
            Frame::Resumed { received } => self.on_resumed(received, now),
            Frame::Close { code, message } if self.is_away() && !code.is_final() => {
                // The listening side turned this connection away (not the
                // conversation): dial again.
                self.link.finish();
                self.lose_connection(code, message, now);
            }
            Frame::Close { code, message } => {
                self.link.finish();
                self.end(PeerEvent::Disconnected {
                    code,
                    reason: message,
                });
            }
            other => {
                let reason = format!("a direct peer may not send {}", other.name());
                self.fail(ErrorCode::UnexpectedFrame, reason);
            }
        }
    }

    fn on_hello(&mut self, hello: Hello, now: Timestamp) {
        if self.remote.is_some() {
            // A new connection of a conversation that had one (see `resume.rs`).
            self.on_returning_hello(hello, now);
            return;
        }
        if hello.role != Role::DirectPeer {
            let reason =
                "a relay client (`p2pchat join`) reached a direct-chat peer; use `p2pchat connect`";
            self.fail(ErrorCode::WrongRole, reason.into());
            return;
        }
        if let Err(why) = negotiate_version(&hello) {
            self.fail(ErrorCode::UnsupportedVersion, why);
            return;
        }
        if let Err(why) = validate_name(&hello.name, self.limits.max_name_len) {
            self.fail(ErrorCode::InvalidName, format!("the other side's {why}"));
            return;
        }
        let they_offer = hello.capabilities & CAP_NOISE != 0;
        let we_offer = self.security.offers();
        let prologue = secure::hello_bytes(&hello);
        self.session.agree(hello.capabilities & CAP_RESUME != 0);
        if !self.session.resumable() {
            self.link.stop_retaining();
        }
        self.link_hello = true;
        self.remote = Some(hello);
        if they_offer && we_offer {
            if self.side == PeerSide::Acceptor
                && let Err(why) = self.answer_handshake(&prologue)
            {
                self.fail(ErrorCode::HandshakeFailed, why);
            }
            // Connected once the handshake is done.
            return;
        }
        if self.security.requires() {
            let reason = if we_offer {
                "the other side does not encrypt (it runs with --insecure, or something \
                 removed its offer on the way); this side requires encryption"
            } else {
                "no key to encrypt with"
            };
            self.fail(ErrorCode::EncryptionRequired, reason.into());
            return;
        }
        // Plain frames, as both sides allow.
        self.link.go_plain();
        self.connected(None);
    }

    /// Reports the conversation open (on its first connection; a later one reports
    /// `Resumed` instead, once the resume is agreed).
    fn connected(&mut self, key: Option<PublicKey>) {
        if self.session.is_returning() {
            self.returned_secure(key);
            return;
        }
        self.session.remember_key(key);
        self.offer_resume_token();
        let (name, version) = self
            .remote
            .as_ref()
            .map(|h| (h.name.clone(), negotiate_version(h).unwrap_or(0)))
            .unwrap_or_default();
        let cipher = self.link.cipher();
        self.events.push_back(PeerEvent::Connected {
            name,
            version,
            plain_text: false,
            key,
            cipher,
        });
    }

    /// A handshake message from the other side: `XX`'s first and third for the
    /// accepting side, its second for the connecting side. `pattern` is its number:
    /// the first message's picks the cipher.
    fn on_handshake(&mut self, pattern: u8, message: &[u8], now: Timestamp) {
        let remote_digest = self.remote.as_ref().map(secure::hello_digest);
        let own_digest = secure::hello_digest(&self.own_hello);
        let side = self.side;
        let Some(handshake) = self.link.handshake() else {
            let reason = "a handshake message arrived, but no handshake is under way";
            self.fail(ErrorCode::UnexpectedFrame, reason.into());
            return;
        };
        let step = handshake
            .follow(pattern)
            .and_then(|()| handshake.read(message));
        let step = step.and_then(|payload| {
            if side == PeerSide::Connector
                && Some(payload.as_slice()) != remote_digest.as_ref().map(|d| &d[..])
            {
                return Err(HandshakeError(
                    "the other side's Hello was changed on its way".into(),
                ));
            }
            let reply = if !handshake.is_finished() && handshake.my_turn() {
                // The acceptor proves its own Hello inside its message.
                let payload: &[u8] = if side == PeerSide::Acceptor {
                    &own_digest
                } else {
                    &[]
                };
                Some(handshake.write(payload)?)
            } else {
                None
            };
            Ok((reply, handshake.pattern(), handshake.is_finished()))
        });
        let (reply, pattern, finished) = match step {
            Ok(step) => step,
            Err(e) => {
                let reason = format!("the secure handshake failed: {}", e.0);
                self.fail(ErrorCode::HandshakeFailed, reason);
                return;
            }
        };
        if let Some(reply) = reply {
            self.link.send_handshake(pattern.to_u8(), reply, now);
        }
        if !finished {
            return;
        }
        let key = match self.link.establish() {
            Ok(key) => key,
            Err(e) => {
                self.fail(ErrorCode::HandshakeFailed, e.0);
                return;
            }
        };
        let name = self
            .remote
            .as_ref()
            .map(|h| h.name.clone())
            .unwrap_or_default();
        if let Err(why) = self.security.check_key(&name, &key) {
            self.fail(ErrorCode::KeyChanged, why);
            return;
        }
        self.connected(Some(key));
        // Records the other side sent right behind its last handshake message.
        let stashed = self.link.receive_stashed();
        self.process(stashed, now);
    }

    /// A file message from the other side (decoded in place by the link).
    fn on_file_message(&mut self, seq: u64, msg: Option<FileMsg>, now: Timestamp) {
        if !self.accept_seq(seq, PayloadKind::File, now) {
            return;
        }
        match msg {
            Some(msg) => self.files.on_message(None, msg),
            None => self
                .events
                .push_back(PeerEvent::UnsupportedPayload { kind: 2 }),
        }
        self.pump_files(now);
    }

    fn on_message(&mut self, seq: u64, payload: Payload, now: Timestamp) {
        if payload.kind == PayloadKind::File {
            let msg = FileMsg::decode(&payload.body).ok();
            self.on_file_message(seq, msg, now);
            return;
        }
        if !self.accept_seq(seq, payload.kind, now) {
            return;
        }
        match payload.kind {
            PayloadKind::File => {}
            PayloadKind::Text => {
                if payload.body.len() > self.limits.max_text_len {
                    let reason = format!(
                        "the other side sent a message of {} bytes; the limit is {}",
                        payload.body.len(),
                        self.limits.max_text_len
                    );
                    self.fail(ErrorCode::MessageTooLong, reason);
                    return;
                }
                match String::from_utf8(payload.body) {
                    Ok(text) => {
                        self.chat_seen += 1;
                        self.events.push_back(PeerEvent::Message { seq, text });
                    }
                    Err(_) => self.fail(
                        ErrorCode::InvalidUtf8,
                        "the other side sent text that is not valid UTF-8".into(),
                    ),
                }
            }
            // End-to-end kinds belong to relay traffic: a direct connection is already
            // end to end.
            other => self.events.push_back(PeerEvent::UnsupportedPayload {
                kind: other.to_u8(),
            }),
        }
    }

    /// Whether a message numbered `seq` of this kind is taken: chat stops at the other
    /// side's exit (file traffic goes on), and numbers only go up. A refusal is
    /// answered with an `Error`.
    fn accept_seq(&mut self, seq: u64, kind: PayloadKind, now: Timestamp) -> bool {
        // File traffic goes on after exit (acknowledgements, the end of a transfer);
        // exit only stops chat.
        if self.they_exited && kind != PayloadKind::File {
            let report = ErrorReport {
                code: ErrorCode::SendAfterExit,
                seq,
                subject: None,
                message: "you said exit, so your message was not shown".into(),
            };
            self.link.send(&Frame::Error(report), now);
            return false;
        }
        if seq <= self.last_remote_seq {
            let report = ErrorReport {
                code: ErrorCode::BadSequence,
                seq,
                subject: None,
                message: format!(
                    "sequence number {seq} is not above the previous {}; message not shown",
                    self.last_remote_seq
                ),
            };
            self.link.send(&Frame::Error(report), now);
            return false;
        }
        self.last_remote_seq = seq;
        true
    }

    /// A line from a plain-text peer: `exit` is its exit, anything else a message.
    fn on_text_input(&mut self, input: TextInput) {
        match input {
            TextInput::Line(line) if line.trim() == "exit" => {
                if !self.they_exited {
                    self.they_exited = true;
                    self.events.push_back(PeerEvent::PeerExited);
                    self.finish_if_both_exited();
                }
            }
            TextInput::Line(_) if self.they_exited => {}
            TextInput::Line(text) => {
                self.last_remote_seq += 1;
                let seq = self.last_remote_seq;
                self.events.push_back(PeerEvent::Message { seq, text });
            }
            TextInput::InvalidUtf8 => self.events.push_back(PeerEvent::Error(ErrorReport {
                code: ErrorCode::InvalidUtf8,
                seq: 0,
                subject: None,
                message: "the peer sent a line that is not valid UTF-8; it was not shown".into(),
            })),
            TextInput::TooLong => {
                let max = self.limits.max_text_len;
                self.fail(
                    ErrorCode::MessageTooLong,
                    format!("the peer sent a line longer than {max} bytes"),
                );
            }
        }
    }

    fn finish_if_both_exited(&mut self) {
        // Both said exit, and no file is still on its way: the conversation is over.
        if self.we_exited && self.they_exited && !self.over && self.files.is_idle() {
            self.link.finish();
            self.end(PeerEvent::Finished);
        }
    }

    /// As the acceptor, starts answering the connector's secure handshake, bound to
    /// its Hello (`prologue`); the error says why it could not start.
    fn answer_handshake(&mut self, prologue: &[u8]) -> Result<(), String> {
        let identity = self.security.identity.as_ref().ok_or("no key")?;
        // The connector's first message says which cipher; until then, wait for it.
        let handshake =
            NoiseHandshake::responder(identity, None, prologue, self.entropy.next_seed());
        self.link.begin_handshake(handshake);
        Ok(())
    }

    /// The other side broke the protocol: tell it why, close, and tell the user.
    fn fail(&mut self, code: ErrorCode, reason: String) {
        self.link.close(code, &reason);
        self.end(PeerEvent::Disconnected { code, reason });
    }

    fn end(&mut self, event: PeerEvent) {
        if !self.over {
            if matches!(&event, PeerEvent::Disconnected { code, .. } if *code != ErrorCode::Normal)
            {
                self.name_unconfirmed();
            }
            self.session.end();
            self.files.all_gone("the connection to the peer ended");
            while let Some(e) = self.files.poll_event() {
                self.events.push_back(PeerEvent::File(e));
            }
            self.over = true;
            self.events.push_back(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    /// Two peers joined by an in-memory pipe.
    struct Pair {
        a: Peer,
        b: Peer,
        a_events: Vec<PeerEvent>,
        b_events: Vec<PeerEvent>,
        now: Timestamp,
    }

    impl Pair {
        /// Two peers that talk in the clear, for tests that write frames of their own.
        fn insecure() -> Self {
            let now = Timestamp::ZERO;
            let peer = |side, name| {
                Peer::new(side, name, Limits::default(), Security::insecure(), now).unwrap()
            };
            Pair {
                a: peer(PeerSide::Connector, "ann"),
                b: peer(PeerSide::Acceptor, "bob"),
                a_events: Vec::new(),
                b_events: Vec::new(),
                now,
            }
        }

        fn new() -> Self {
            let now = Timestamp::ZERO;
            Pair {
                a: Peer::new(
                    PeerSide::Connector,
                    "ann",
                    Limits::default(),
                    crate::test_support::party_security(1),
                    now,
                )
                .unwrap(),
                b: Peer::new(
                    PeerSide::Acceptor,
                    "bob",
                    Limits::default(),
                    crate::test_support::party_security(2),
                    now,
                )
                .unwrap(),
                a_events: Vec::new(),
                b_events: Vec::new(),
                now,
            }
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(bytes) = self.a.poll_transmit() {
                    moved = true;
                    self.a.handle_written(bytes.len());
                    self.b.handle_bytes(&bytes, self.now);
                }
                while let Some(bytes) = self.b.poll_transmit() {
                    moved = true;
                    self.b.handle_written(bytes.len());
                    self.a.handle_bytes(&bytes, self.now);
                }
                self.a_events
                    .extend(std::iter::from_fn(|| self.a.poll_event()));
                self.b_events
                    .extend(std::iter::from_fn(|| self.b.poll_event()));
                if !moved {
                    break;
                }
            }
        }
    }

    fn texts(events: &[PeerEvent]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_acceptor_waits_for_the_connector_to_speak_first() {
        let mut p = Pair::new();
        assert!(
            p.b.poll_transmit().is_none(),
            "acceptor silent before the magic"
        );
        p.pump();
        let key = |n: u8| {
            crate::test_support::party_security(n)
                .identity
                .map(|i| i.public())
        };
        assert!(p.a_events.contains(&PeerEvent::Connected {
            name: "bob".into(),
            version: 4,
            plain_text: false,
            key: key(2),
            cipher: Some(RecordCipher::ChaChaPoly),
        }));
        assert!(
            p.b_events.contains(&PeerEvent::Connected {
                name: "ann".into(),
                version: 4,
                plain_text: false,
                key: key(1),
                cipher: Some(RecordCipher::ChaChaPoly),
            }),
            "{:?}",
            p.b_events
        );
    }

    #[test]
    fn both_type_at_once_including_before_the_handshake() {
        let mut p = Pair::new();
        let now = p.now;
        p.a.send_chat("early from ann", now).unwrap();
        p.b.send_chat("early from bob", now).unwrap();
        p.pump();
        p.a.send_chat("two", now).unwrap();
        p.b.send_chat("deux", now).unwrap();
        p.pump();
        assert_eq!(texts(&p.b_events), ["early from ann", "two"]);
        assert_eq!(texts(&p.a_events), ["early from bob", "deux"]);
    }

    #[test]
    fn exit_is_a_half_close_in_either_order() {
        for a_first in [true, false] {
            let mut p = Pair::new();
            let now = p.now;
            p.pump();
            let (first, second) = if a_first {
                (&mut p.a, &mut p.b)
            } else {
                (&mut p.b, &mut p.a)
            };
            first.exit(now);
            assert_eq!(first.send_chat("nope", now), Err(SendError::AlreadyExited));
            second.send_chat("I can still talk", now).unwrap();
            p.pump();
            let (first_events, second_events) = if a_first {
                (&p.a_events, &p.b_events)
            } else {
                (&p.b_events, &p.a_events)
            };
            assert_eq!(
                texts(first_events),
                ["I can still talk"],
                "the exited side still receives"
            );
            assert!(second_events.contains(&PeerEvent::PeerExited));
            assert!(!p.a.wants_close() && !p.b.wants_close());
            if a_first {
                p.b.exit(now)
            } else {
                p.a.exit(now)
            }
            p.pump();
            for (peer, events) in [(&p.a, &p.a_events), (&p.b, &p.b_events)] {
                assert!(peer.wants_close() && peer.is_over());
                assert_eq!(events.last(), Some(&PeerEvent::Finished));
            }
        }
    }

    #[test]
    fn a_peer_that_vanishes_is_detected_by_keepalive() {
        let mut p = Pair::new();
        p.pump();
        let limits = Limits::default();
        let t = p.now + limits.keepalive_interval;
        assert_eq!(p.a.poll_timeout(), Some(t));
        p.a.handle_timeout(t);
        let ping = p.a.poll_transmit().expect("a ping after a quiet interval");
        p.b.handle_bytes(&ping, t);
        let pong = p.b.poll_transmit().expect("a pong");
        p.a.handle_bytes(&pong, t);
        // Now b goes silent for good.
        let dead = t + limits.idle_timeout;
        p.a.handle_timeout(dead - Duration::from_micros(1));
        assert!(!p.a.is_over());
        p.a.handle_timeout(dead);
        let events: Vec<_> = std::iter::from_fn(|| p.a.poll_event()).collect();
        // The connection is given up (the conversation waits to be resumed).
        assert!(matches!(
            events.last(),
            Some(PeerEvent::ConnectionLost {
                code: ErrorCode::PeerTimeout,
                ..
            })
        ));
        assert!(p.a.wants_close() && !p.a.is_over());
    }

    #[test]
    fn a_lost_connection_before_both_exits_is_reported() {
        let mut p = Pair::new();
        p.pump();
        p.a.handle_closed(p.now);
        let events: Vec<_> = std::iter::from_fn(|| p.a.poll_event()).collect();
        assert!(matches!(
            events.last(),
            Some(PeerEvent::ConnectionLost {
                code: ErrorCode::ConnectionLost,
                ..
            })
        ));
        // What is typed meanwhile waits for the conversation to come back...
        assert!(p.a.send_chat("hello?", p.now).is_ok());
        // ... until its grace period is over.
        p.a.handle_timeout(p.now + Limits::default().resume_grace);
        let events: Vec<_> = std::iter::from_fn(|| p.a.poll_event()).collect();
        assert!(matches!(
            events.last(),
            Some(PeerEvent::Disconnected {
                code: ErrorCode::ResumeFailed,
                ..
            })
        ));
        assert_eq!(p.a.send_chat("hello?", p.now), Err(SendError::Closed));
    }

    #[test]
    fn a_relay_client_dialling_a_peer_is_told_it_has_the_wrong_role() {
        let now = Timestamp::ZERO;
        let mut listener = secure_listener(now);
        let mut client = crate::RelayClient::new(
            "",
            Limits::default(),
            crate::test_support::party_security(2),
            now,
        )
        .unwrap();
        let hello = client.poll_transmit().unwrap();
        listener.handle_bytes(&hello, now);
        let events: Vec<_> = std::iter::from_fn(|| listener.poll_event()).collect();
        assert!(matches!(
            events.as_slice(),
            [PeerEvent::Disconnected {
                code: ErrorCode::WrongRole,
                ..
            }]
        ));
        let answer = listener.poll_transmit().unwrap();
        client.handle_bytes(&answer, now);
        let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(
            matches!(
                events.last(),
                Some(crate::ClientEvent::Disconnected {
                    code: ErrorCode::WrongRole,
                    ..
                })
            ),
            "{events:?}"
        );
    }

    #[test]
    fn invalid_utf8_from_the_peer_closes_with_its_code() {
        let mut p = Pair::insecure();
        p.pump();
        let bad = Frame::Message {
            seq: 1,
            payload: Payload {
                kind: PayloadKind::Text,
                body: vec![0xFF, 0xFE],
            },
        };
        p.b.handle_bytes(&bad.to_bytes(), p.now);
        let events: Vec<_> = std::iter::from_fn(|| p.b.poll_event()).collect();
        assert!(matches!(
            events.as_slice(),
            [PeerEvent::Disconnected {
                code: ErrorCode::InvalidUtf8,
                ..
            }]
        ));
        assert!(p.b.wants_close());
    }

    /// A listening side with a key and no name of its own.
    fn secure_listener(now: Timestamp) -> Peer {
        Peer::new(
            PeerSide::Acceptor,
            "",
            Limits::default(),
            crate::test_support::party_security(1),
            now,
        )
        .unwrap()
    }

    fn drain(peer: &mut Peer) -> (String, Vec<PeerEvent>) {
        let mut out = Vec::new();
        while let Some(b) = peer.poll_transmit() {
            out.extend(b);
        }
        (
            String::from_utf8(out).unwrap(),
            std::iter::from_fn(|| peer.poll_event()).collect(),
        )
    }

    #[test]
    fn a_plain_text_peer_is_recognised_and_talked_to_in_lines() {
        let now = Timestamp::ZERO;
        let mut listener = secure_listener(now);
        listener.handle_bytes(b"hello from nc\n", now);
        let (out, events) = drain(&mut listener);
        assert_eq!(out, "", "no binary handshake to a text peer");
        assert_eq!(
            events,
            vec![
                PeerEvent::Connected {
                    name: String::new(),
                    version: 0,
                    plain_text: true,
                    key: None,
                    cipher: None,
                },
                PeerEvent::Message {
                    seq: 1,
                    text: "hello from nc".into()
                },
            ]
        );
        listener.send_chat("hi nc", now).unwrap();
        listener.exit(now);
        assert_eq!(drain(&mut listener).0, "hi nc\nexit\n");
        listener.handle_bytes(b"one more", now);
        let later = now + Duration::from_secs(10);
        assert_eq!(listener.read_idle_check(), None, "nc sent a newline");
        listener.handle_read_idle(later);
        listener.handle_bytes(b"\nexit\n", later);
        let (_, events) = drain(&mut listener);
        assert_eq!(
            events,
            vec![
                PeerEvent::Message {
                    seq: 2,
                    text: "one more".into()
                },
                PeerEvent::PeerExited,
                PeerEvent::Finished,
            ]
        );
    }

    #[test]
    fn the_original_apps_messages_end_at_a_pause_the_driver_saw() {
        // The original app: one send() per message, no newline ever.
        let now = Timestamp::ZERO;
        let mut listener = secure_listener(now);
        listener.exit(now);
        listener.handle_bytes(b"one ", now);
        assert_eq!(listener.poll_timeout(), None, "no timer: the driver looks");
        let due = listener.read_idle_check().unwrap();
        listener.handle_bytes(b"message", due);
        listener.handle_read_idle(due);
        assert_eq!(drain(&mut listener).1.len(), 1, "only Connected so far");
        let due = listener.read_idle_check().unwrap();
        listener.handle_read_idle(due);
        listener.handle_bytes(b"exit", due);
        listener.handle_read_idle(due + Duration::from_secs(1));
        let (_, events) = drain(&mut listener);
        assert_eq!(
            events,
            vec![
                PeerEvent::Message {
                    seq: 1,
                    text: "one message".into()
                },
                PeerEvent::PeerExited,
                PeerEvent::Finished,
            ]
        );
        assert!(listener.wants_close());
    }

    #[test]
    fn a_plain_text_connector_sends_lines_without_a_handshake() {
        let now = Timestamp::ZERO;
        let mut peer = Peer::new_plain_text(Limits::default(), now);
        peer.send_chat("hello", now).unwrap();
        let (out, events) = drain(&mut peer);
        assert_eq!(out, "hello\n");
        assert!(matches!(
            events.as_slice(),
            [PeerEvent::Connected {
                plain_text: true,
                ..
            }]
        ));
        assert_eq!(peer.poll_timeout(), None, "no keepalive with a text peer");
        peer.handle_closed(now);
        let (_, events) = drain(&mut peer);
        assert!(matches!(
            events.as_slice(),
            [PeerEvent::Disconnected {
                code: ErrorCode::Normal,
                ..
            }]
        ));
    }
}
