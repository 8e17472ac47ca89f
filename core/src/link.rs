//! One connection's plumbing, shared by the single-connection machines
//! ([`crate::RelayClient`] and [`crate::Peer`]): the decoder, the bounded outbound
//! queue, keepalive, the secure channel's record layer, and the open / closing /
//! closed life cycle.
//!
//! The machines run the handshake (they know what to check); the link keeps its state,
//! seals and opens records, and refuses a frame that arrives in the clear once
//! encryption has begun.
//!
//! Keeping it in one place means the client and the peer cannot drift apart on how a
//! connection is closed, how bytes are accounted, or when a ping is due.

use crate::decode::{FrameDecoder, RawFrame};
use crate::error::{DecodeError, ErrorCode};
use crate::file::FileMsg;
use crate::frame::{Envelope, Frame, PayloadKind, payload_ref};
use crate::keepalive::{Keepalive, KeepaliveAction};
use crate::limits::{Limits, MAGIC};
use crate::outbound::Outbound;
use crate::secure::{
    HandshakeError, NoiseHandshake, PublicKey, RecordCipher, SEALED, SecureChannel,
};
use crate::session::Retained;
use crate::text::{LineReader, TextInput};
use crate::time::Timestamp;

/// A frame as the single-connection machines receive it.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Any frame but one that carries a file message.
    Frame(Frame),
    /// A `Message` or `Deliver` whose payload is a file message (`None` if that
    /// payload could not be decoded: a newer version's, or garbage).
    File {
        /// Who sent it, and its sequence number.
        envelope: Envelope,
        /// The file message.
        msg: Option<FileMsg>,
    },
}

/// What one batch of received bytes held.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Lines, on a plain-text link.
    pub(crate) lines: Vec<TextInput>,
    /// Frames, in order.
    pub(crate) frames: Vec<Incoming>,
    /// The decoding error after the last frame, which ends the stream.
    pub(crate) error: Option<DecodeError>,
    /// Bytes of the other side's session stream among `frames` (`session.rs`).
    pub(crate) session_bytes: u64,
}

/// Decodes one raw frame for a single-connection machine: a `Message` or `Deliver`
/// that carries a file message is decoded straight from the received bytes.
fn incoming(raw: RawFrame<'_>) -> Result<Incoming, DecodeError> {
    match payload_ref(raw.type_byte, raw.body) {
        Some(Ok((envelope, PayloadKind::File, body))) => Ok(Incoming::File {
            envelope,
            msg: FileMsg::decode(body).ok(),
        }),
        _ => Frame::decode(raw.type_byte, raw.body).map(Incoming::Frame),
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Frames flow both ways.
    Open,
    /// We decided to close: the last bytes are queued, nothing more is read or sent.
    Closing,
    /// The transport is gone.
    Closed,
}

/// Frame types that may come in the clear once encryption has begun: the other
/// side's `Hello` and handshake, and a refusal or close sent before a channel exists.
const CLEAR_WHILE_SECURE: [u8; 4] = [0x01, 0x50, 0x34, 0x03];

/// Most bytes of records kept while the handshake ends (records sent right behind
/// the last handshake message).
const MAX_STASH: usize = 4 * 65_541;

/// The link's secure channel, if it has one.
#[derive(Debug)]
enum Secure {
    /// No encryption (not begun, or agreed without).
    None,
    /// The handshake is under way.
    Handshake(NoiseHandshake),
    /// Records are sealed and opened.
    Channel(SecureChannel),
}

/// Decoder, outbound queue and keepalive of one connection.
#[derive(Debug)]
pub(crate) struct Link {
    decoder: FrameDecoder,
    /// Decodes the frame stream the records carry.
    inner: FrameDecoder,
    secure: Secure,
    /// Records that came before the channel existed, as whole frames.
    stash: Vec<u8>,
    /// A record's plaintext, reused.
    plain: Vec<u8>,
    out: Outbound,
    keepalive: Keepalive,
    /// Whether queued bytes may go out yet: an accepting side stays silent until the
    /// other side's magic proves it speaks p2pchat.
    gate_open: bool,
    state: LinkState,
    /// Whether this side waits for the other's first bytes (and may find plain text).
    speak_first: bool,
    received_any: bool,
    /// The line splitter, once the link speaks plain text.
    text: Option<LineReader>,
    max_line: usize,
    text_pause: core::time::Duration,
    /// The connection was lost but the session goes on: session frames are still
    /// kept (to be sent on the next connection), nothing goes on the wire.
    detached: bool,
    /// An acknowledgement owed to the other side and not yet queued: it rides with
    /// the next bytes we write, or goes on its own at the time given.
    ack_owed: Option<(u64, Timestamp)>,
    /// What our last queued `Ack` said.
    ack_sent: u64,
}

/// How long an `Ack` with nothing to ride with waits before it goes on its own.
const ACK_DELAY: core::time::Duration = core::time::Duration::from_millis(100);

/// Bytes handled past the last `Ack` at which the next one goes at once, ride or
/// not: the other side holds them until acknowledged.
const ACK_NOW: u64 = 16 * 1024;

impl Link {
    /// A link that has queued the magic. With `speak_first` false the magic (and
    /// whatever follows) waits until the other side's magic has arrived.
    pub(crate) fn new(limits: &Limits, now: Timestamp, speak_first: bool) -> Self {
        let mut out = Outbound::new(limits.max_outbound_bytes);
        out.push_bytes(&MAGIC);
        Link {
            decoder: FrameDecoder::new(limits.max_frame_len),
            inner: FrameDecoder::without_magic(limits.max_frame_len),
            secure: Secure::None,
            stash: Vec::new(),
            plain: Vec::new(),
            out,
            keepalive: Keepalive::new(limits, now),
            gate_open: speak_first,
            state: LinkState::Open,
            speak_first,
            received_any: false,
            text: None,
            max_line: limits.max_text_len + 16,
            text_pause: limits.text_pause,
            detached: false,
            ack_owed: None,
            ack_sent: 0,
        }
    }

    /// A link that speaks plain text from the start (to `nc -l` or the original app).
    pub(crate) fn new_plain_text(limits: &Limits, now: Timestamp) -> Self {
        let mut link = Link::new(limits, now, true);
        link.switch_to_text();
        link
    }

    fn switch_to_text(&mut self) {
        self.out.switch_to_text();
        self.text = Some(LineReader::new(self.max_line, self.text_pause));
        self.gate_open = true;
    }

    /// Whether the link speaks plain text.
    pub(crate) fn is_plain_text(&self) -> bool {
        self.text.is_some()
    }

    pub(crate) fn state(&self) -> LinkState {
        self.state
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == LinkState::Open
    }

    /// Queues a protocol frame regardless of the bound (handshake, pong, exit).
    pub(crate) fn send(&mut self, frame: &Frame, now: Timestamp) {
        if self.takes_frames() {
            self.out.push(frame);
            self.keepalive.on_sent(now);
        }
    }

    /// Queues a user frame if it fits under the bound.
    pub(crate) fn try_send(&mut self, frame: &Frame, now: Timestamp) -> bool {
        if self.takes_frames() && self.out.try_push(frame) {
            self.keepalive.on_sent(now);
            true
        } else {
            false
        }
    }

    /// Whether frames queued now are taken: on an open link, or on a lost one whose
    /// session goes on (they are kept for the next connection).
    fn takes_frames(&self) -> bool {
        self.is_open() || self.detached
    }

    // ----- the session layer ------------------------------------------------------

    /// From now on our session frames are kept until acknowledged (at most `max`
    /// bytes of them).
    pub(crate) fn retain_session(&mut self, max: usize) {
        self.out.retain_session(max);
    }

    /// Forgets the session layer (the other side does not speak it).
    pub(crate) fn stop_retaining(&mut self) {
        self.out.take_retained();
    }

    /// Bytes of our session stream not yet acknowledged.
    pub(crate) fn unacked(&self) -> usize {
        self.out.unacked()
    }

    /// We handled the other side's session stream up to `received` (after a read):
    /// an `Ack` is owed. It rides with whatever we write next; with nothing to ride
    /// with it goes on its own within `ACK_DELAY` (see [`Link::poll_ack`]): one
    /// `Ack` a read, written on its own, would double the packets of a busy reader.
    pub(crate) fn owe_ack(&mut self, received: u64, now: Timestamp) {
        if received <= self.ack_sent || !self.is_open() {
            return;
        }
        // Much unacknowledged: the other side holds it for us; tell it now.
        if self.out.has_queued() || received - self.ack_sent >= ACK_NOW {
            self.queue_ack(received, now);
        } else {
            let at = self.ack_owed.map_or(now + ACK_DELAY, |(_, at)| at);
            self.ack_owed = Some((received, at));
        }
    }

    /// Queues the owed `Ack` if its time has come (or it can ride with what is
    /// queued); past the outbound bound it waits some more.
    pub(crate) fn poll_ack(&mut self, now: Timestamp) {
        if let Some((received, at)) = self.ack_owed
            && (at <= now || self.out.has_queued())
            && self.is_open()
            && !self.queue_ack(received, now)
        {
            self.ack_owed = Some((received, now + ACK_DELAY));
        }
    }

    fn queue_ack(&mut self, received: u64, now: Timestamp) -> bool {
        if self.out.push_ack(received) {
            self.ack_sent = received;
            self.ack_owed = None;
            self.keepalive.on_sent(now);
            true
        } else {
            self.ack_owed = Some((received, now + ACK_DELAY));
            false
        }
    }

    /// Drops the acknowledgement owed, if any: whoever drives the link from now on
    /// keeps its own count ([`crate::RecordLink`]).
    pub(crate) fn forget_owed_ack(&mut self) {
        self.ack_owed = None;
    }

    /// The other side handled our session stream up to `upto`.
    pub(crate) fn acknowledge(&mut self, upto: u64) -> Result<(), crate::session::BeyondSent> {
        self.out.acknowledge(upto)
    }

    /// The offset in our session stream just past what was sent so far.
    pub(crate) fn stream_end(&self) -> u64 {
        self.out.stream_end()
    }

    /// The connection is given up but the session goes on: frames are kept, not
    /// sent. (A link still closing stays so, for the driver to close its socket.)
    pub(crate) fn detach(&mut self) {
        if self.state == LinkState::Open {
            self.state = LinkState::Closing;
        }
        self.detached = true;
        self.out.hold_session_frames();
    }

    /// A lost link that carries a saved session stream (`retained`), for a client
    /// restarted from its saved session: nothing goes out on it; its successor
    /// resends from where the other side says.
    pub(crate) fn restored(limits: &Limits, now: Timestamp, retained: Retained) -> Link {
        let mut link = Link::new(limits, now, true);
        link.out.adopt_retained(retained, limits.max_unacked_bytes);
        link.detach();
        link
    }

    /// Our session stream kept for the other side: where it starts, and its bytes.
    pub(crate) fn retained_bytes(&mut self) -> Option<(u64, &[u8])> {
        self.out.retained_bytes()
    }

    /// Whether the link was lost with its session going on.
    pub(crate) fn is_detached(&self) -> bool {
        self.detached
    }

    /// A new link for the next connection of this session: our session stream is
    /// carried over and waits for [`Link::resend_from`].
    pub(crate) fn successor(&mut self, limits: &Limits, now: Timestamp, speak_first: bool) -> Link {
        let mut next = Link::new(limits, now, speak_first);
        if let Some(retained) = self.out.take_retained() {
            next.out.adopt_retained(retained, limits.max_unacked_bytes);
        }
        next
    }

    /// The other side holds our session stream up to `from`: the rest is sent again,
    /// and later session frames go out as usual.
    pub(crate) fn resend_from(&mut self, from: u64) -> Result<(), crate::session::BeyondSent> {
        self.out.resend_from(from)
    }

    /// The session moved to another relay: our whole kept stream is sent again as
    /// that relay's offset 0 on. Returns the sequence numbers of the chat messages
    /// in it.
    pub(crate) fn resend_all_anew(&mut self) -> Vec<u64> {
        self.out.resend_all_anew()
    }

    /// Bytes queued or in flight.
    pub(crate) fn pending(&self) -> usize {
        self.out.pending()
    }

    /// Takes received bytes: on a plain-text link, the lines they complete; otherwise
    /// the frames they complete, decoded (frames that lie whole in `bytes` are read in
    /// place, and a file chunk's data is copied once), and the decoding error that
    /// ended the stream, if any. Records are opened and their frames decoded in turn;
    /// records that arrive before the channel exists wait for
    /// [`Link::receive_stashed`]. A side that waited and receives something other than
    /// the magic's first byte switches to plain text (its own magic is never sent).
    pub(crate) fn receive(&mut self, bytes: &[u8], now: Timestamp) -> Received {
        if !self.is_open() {
            return Received::default();
        }
        if !self.received_any && !bytes.is_empty() {
            self.received_any = true;
            if !self.speak_first && bytes.first() != MAGIC.first() {
                self.switch_to_text();
            }
        }
        self.keepalive.on_received(now);
        if let Some(reader) = self.text.as_mut() {
            return Received {
                lines: reader.push_collect(bytes, now),
                ..Received::default()
            };
        }
        let mut decoder = std::mem::replace(&mut self.decoder, FrameDecoder::new(0));
        let received = self.frames_of(&mut decoder, bytes);
        self.decoder = decoder;
        if self.decoder.magic_seen() {
            self.gate_open = true;
        }
        received
    }

    /// The frames of the records that arrived before the channel existed; call it once
    /// the handshake is done.
    pub(crate) fn receive_stashed(&mut self) -> Received {
        let stash = std::mem::take(&mut self.stash);
        if stash.is_empty() || !self.is_open() {
            return Received::default();
        }
        let mut decoder = FrameDecoder::without_magic(u32::MAX);
        self.frames_of(&mut decoder, &stash)
    }

    /// Decodes the frames `decoder` finds in `bytes`, opening records.
    fn frames_of(&mut self, decoder: &mut FrameDecoder, bytes: &[u8]) -> Received {
        let mut received = Received::default();
        let Link {
            inner,
            secure,
            stash,
            plain,
            ..
        } = self;
        let frames = &mut received.frames;
        let session_bytes = &mut received.session_bytes;
        let mut bad_frame = None;
        let fed = decoder.feed(bytes, |raw| {
            let channel_open = matches!(secure, Secure::Channel(_));
            if raw.type_byte == SEALED && !channel_open || !stash.is_empty() {
                // Before the channel exists: kept, in order, for when it does.
                if raw.type_byte != SEALED || stash.len() + raw.body.len() + 5 > MAX_STASH {
                    bad_frame = Some(DecodeError::Malformed {
                        frame: "Sealed",
                        problem: "records before the secure channel exists",
                    });
                    return false;
                }
                stash.extend_from_slice(&(raw.body.len() as u32 + 1).to_be_bytes());
                stash.push(raw.type_byte);
                stash.extend_from_slice(raw.body);
                return true;
            }
            if raw.type_byte == SEALED
                && let Secure::Channel(channel) = secure
            {
                let Ok(n) = channel.open(raw.body, plain) else {
                    bad_frame = Some(DecodeError::DecryptFailed);
                    return false;
                };
                let opened = plain.get(..n).unwrap_or_default();
                let fed = inner.feed(opened, |raw| match incoming(raw) {
                    Ok(item) => {
                        *session_bytes += raw.session_bytes();
                        frames.push(item);
                        true
                    }
                    Err(e) => {
                        bad_frame = Some(e);
                        false
                    }
                });
                if let Err(e) = fed {
                    bad_frame = Some(e);
                }
                return bad_frame.is_none();
            }
            if !matches!(secure, Secure::None) && !CLEAR_WHILE_SECURE.contains(&raw.type_byte) {
                bad_frame = Some(DecodeError::Unencrypted {
                    type_byte: raw.type_byte,
                });
                return false;
            }
            let size = raw.session_bytes();
            match incoming(raw) {
                Ok(item) => {
                    *session_bytes += size;
                    frames.push(item);
                    true
                }
                Err(e) => {
                    bad_frame = Some(e);
                    false
                }
            }
        });
        if bad_frame.is_some() {
            decoder.fail();
        }
        received.error = bad_frame.or(fed.err());
        received
    }

    /// Opens the records in `bytes` and hands the frames inside them over undecoded
    /// ([`crate::RecordLink`]: a load generator reading in place). Only for a link
    /// whose channel is established: any frame in the clear is an error, as is a
    /// record that does not open.
    pub(crate) fn receive_raw(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
        mut on_frame: impl FnMut(RawFrame<'_>),
    ) -> Result<(), DecodeError> {
        if !self.is_open() {
            return Ok(());
        }
        self.keepalive.on_received(now);
        let Link {
            decoder,
            inner,
            secure,
            plain,
            ..
        } = self;
        let Secure::Channel(channel) = secure else {
            return Err(DecodeError::Unencrypted { type_byte: SEALED });
        };
        let mut failed = None;
        let fed = decoder.feed(bytes, |raw| {
            if raw.type_byte != SEALED {
                failed = Some(DecodeError::Unencrypted {
                    type_byte: raw.type_byte,
                });
                return false;
            }
            let Ok(n) = channel.open(raw.body, plain) else {
                failed = Some(DecodeError::DecryptFailed);
                return false;
            };
            let opened = plain.get(..n).unwrap_or_default();
            if let Err(e) = inner.feed(opened, |frame| {
                on_frame(frame);
                true
            }) {
                failed = Some(e);
            }
            failed.is_none()
        });
        if failed.is_some() {
            decoder.fail();
        }
        match failed {
            Some(e) => Err(e),
            None => fed,
        }
    }

    // ----- the secure channel -------------------------------------------------------

    /// Frames queued from now on wait: a handshake may follow (an accepting side
    /// that offered to encrypt, before it knows whether the other side does).
    pub(crate) fn hold_for_channel(&mut self) {
        self.out.hold_for_channel();
    }

    /// The handshake begins: frames queued from now on wait for the channel.
    pub(crate) fn begin_handshake(&mut self, handshake: NoiseHandshake) {
        self.out.hold_for_channel();
        self.secure = Secure::Handshake(handshake);
    }

    /// The handshake under way, if any.
    pub(crate) fn handshake(&mut self) -> Option<&mut NoiseHandshake> {
        match &mut self.secure {
            Secure::Handshake(h) => Some(h),
            _ => None,
        }
    }

    /// Queues a handshake message (outside the channel).
    pub(crate) fn send_handshake(&mut self, pattern: u8, message: Vec<u8>, now: Timestamp) {
        if self.is_open() {
            self.out.push_outer(&Frame::Handshake { pattern, message });
            self.keepalive.on_sent(now);
        }
    }

    /// The finished handshake becomes the channel; returns the other side's key.
    pub(crate) fn establish(&mut self) -> Result<PublicKey, HandshakeError> {
        let Secure::Handshake(handshake) = std::mem::replace(&mut self.secure, Secure::None) else {
            return Err(HandshakeError("no handshake to finish".into()));
        };
        let key = handshake
            .remote_key()
            .ok_or_else(|| HandshakeError("the other side sent no key".into()))?;
        self.secure = Secure::Channel(handshake.into_channel()?);
        self.out.seal_from_now();
        Ok(key)
    }

    /// No encryption after all: the handshake (if any) is dropped and held frames go out
    /// in the clear.
    pub(crate) fn go_plain(&mut self) {
        self.secure = Secure::None;
        self.out.release_in_clear();
    }

    /// On a plain-text link, when the driver should look whether the connection has
    /// more to read (see [`LineReader::idle_check_at`]).
    pub(crate) fn read_idle_check(&self) -> Option<Timestamp> {
        match self.state {
            LinkState::Open => self.text.as_ref().and_then(LineReader::idle_check_at),
            _ => None,
        }
    }

    /// On a plain-text link, the partial line a pause the driver saw has ended.
    pub(crate) fn on_read_idle(&mut self, now: Timestamp) -> Option<TextInput> {
        if !self.is_open() {
            return None;
        }
        self.text.as_mut().and_then(|r| r.on_read_idle(now))
    }

    /// On an open plain-text link whose other side finished sending, its unfinished
    /// last line.
    pub(crate) fn finish_text(&mut self) -> Option<TextInput> {
        if !self.is_open() {
            return None;
        }
        self.text.as_mut().and_then(LineReader::finish)
    }

    /// Queues a frame that `encode` writes (a `Message` or a `Chat`), whatever the
    /// bound: file traffic is paced by the file machine itself, and chat is checked
    /// against the bound before it is sealed and written.
    pub(crate) fn send_encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>), now: Timestamp) {
        if self.takes_frames() && !self.is_plain_text() {
            self.out.push_with(encode);
            self.keepalive.on_sent(now);
        }
    }

    /// Queues a `Close` saying why and stops reading and sending. A side that has not
    /// spoken yet (an acceptor facing a stream that is not p2pchat) sends nothing.
    pub(crate) fn close(&mut self, code: ErrorCode, message: &str) {
        if self.is_open() && !self.gate_open {
            self.state = LinkState::Closing;
        } else if self.is_open() {
            self.out.push_reply(&Frame::Close {
                code,
                message: message.to_owned(),
            });
            self.state = LinkState::Closing;
        }
    }

    /// Stops without sending anything more (both sides are done, or the other side is
    /// unreachable).
    pub(crate) fn finish(&mut self) {
        if self.is_open() {
            self.state = LinkState::Closing;
        }
    }

    /// The transport reported the connection gone.
    pub(crate) fn transport_closed(&mut self) {
        self.state = LinkState::Closed;
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if !self.gate_open || self.state == LinkState::Closed {
            return None;
        }
        // An owed acknowledgement rides with what goes out now.
        if let Some((received, at)) = self.ack_owed
            && self.out.has_queued()
        {
            self.queue_ack(received, at);
        }
        let channel = match &mut self.secure {
            Secure::Channel(channel) => Some(channel),
            _ => None,
        };
        self.out.take(channel)
    }

    /// The cipher of the secure channel, once there is one.
    pub(crate) fn cipher(&self) -> Option<RecordCipher> {
        match &self.secure {
            Secure::Channel(channel) => Some(channel.cipher()),
            _ => None,
        }
    }

    pub(crate) fn confirm_written(&mut self, n: usize) {
        self.out.confirm_written(n);
    }

    /// Whether the driver should close the transport once queued bytes are written.
    pub(crate) fn wants_close(&self) -> bool {
        self.state == LinkState::Closing
    }

    /// Runs keepalive at `now`; sends the ping itself and reports expiry.
    pub(crate) fn poll_keepalive(&mut self, now: Timestamp) -> KeepaliveAction {
        // Plain-text peers cannot answer pings.
        if !self.is_open() || self.text.is_some() {
            return KeepaliveAction::Nothing;
        }
        let action = self.keepalive.poll(now);
        if let KeepaliveAction::SendPing(nonce) = action {
            self.out.push(&Frame::Ping(nonce));
        }
        action
    }

    pub(crate) fn timeout(&self) -> Option<Timestamp> {
        if !self.is_open() {
            return None;
        }
        match &self.text {
            // A plain-text link's only deadline is the driver's: its idle check.
            Some(_) => None,
            None => Some(self.ack_owed.map_or(self.keepalive.deadline(), |(_, at)| {
                at.min(self.keepalive.deadline())
            })),
        }
    }

    /// A sentence for a peer that went silent.
    pub(crate) fn silence_message(&self) -> String {
        format!(
            "nothing heard from the other side for {} s; it is gone",
            self.keepalive.idle_timeout().as_secs()
        )
    }
}
