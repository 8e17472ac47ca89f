//! The frame catalogue of protocol v1: one Rust type per frame, with its exact byte
//! layout (see `docs/PROTOCOL.md`, "Frames"), and the encoder.
//!
//! Every frame on the wire is `len: u32 BE | type: u8 | body`, where `len` counts the
//! type byte and the body. Decoding a stream of them lives in [`crate::decode`].

use core::ops::Range;

use crate::error::{DecodeError, ErrorCode};
use crate::id::ClientId;
use crate::secure::PublicKey;
use crate::wire::{Reader, Writer};

/// Which machine a `Hello` comes from, so that a relay client that dials a direct peer
/// (or the reverse) gets a clear "wrong role" instead of confusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client of a relay server (`p2pchat join`).
    RelayClient,
    /// One side of a direct conversation (`p2pchat listen` / `p2pchat connect`).
    DirectPeer,
    /// A role number from a newer version.
    Other(u8),
}

impl Role {
    fn to_u8(self) -> u8 {
        match self {
            Role::RelayClient => 1,
            Role::DirectPeer => 2,
            Role::Other(n) => n,
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            1 => Role::RelayClient,
            2 => Role::DirectPeer,
            other => Role::Other(other),
        }
    }
}

/// The first frame each side sends: what it speaks and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest protocol version the sender speaks.
    pub min_version: u16,
    /// Newest protocol version the sender speaks.
    pub max_version: u16,
    /// Optional features the sender supports, one bit each; unknown bits are ignored.
    pub capabilities: u64,
    /// The sender's role.
    pub role: Role,
    /// The sender's nickname, possibly empty.
    pub name: String,
    /// The sender comes back to a session it had (a `Resume` frame follows, inside
    /// the secure channel when there is one) rather than starting a new one. On the
    /// wire a flags byte after `name` (bit 0), present only when set, so a `Hello`
    /// without it is byte for byte a version 2 `Hello`.
    pub resuming: bool,
}

/// The relay's answer to an admitted client's `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version both sides will speak.
    pub version: u16,
    /// Capabilities both sides support (the intersection).
    pub capabilities: u64,
    /// The ID the server assigned to this client.
    pub client_id: ClientId,
    /// The server's client limit, so the client can show "3 of 256 online".
    pub max_clients: u32,
}

/// The relay's answer to a `Hello` it will not admit, followed by a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why, as a code.
    pub code: ErrorCode,
    /// Clients online when the refusal was made.
    pub online: u32,
    /// The server's client limit.
    pub limit: u32,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// What a message payload holds. The relay routes payloads without reading them (except
/// that a v1 relay checks that `Text` is UTF-8), so new kinds need no relay change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// UTF-8 chat text.
    Text,
    /// A file-transfer message (see `file.rs` and `docs/PROTOCOL.md`, "Files").
    File,
    /// Chat text encrypted end to end (see `secure/e2e.rs`): the relay routes it
    /// without being able to read it.
    Sealed,
    /// A file-transfer message encrypted end to end, behind a clear header (the
    /// message type, the transfer and, in an offer, the size) that the relay needs
    /// to enforce its file limits.
    SealedFile,
    /// End-to-end key exchange between two clients (a group key, a request for one),
    /// encrypted end to end; never shown to a person.
    Keys,
    /// A kind from a newer version; routed as is, ignored by receivers that do not know it.
    Other(u8),
}

impl PayloadKind {
    /// The kind byte on the wire.
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            PayloadKind::Text => 1,
            PayloadKind::File => 2,
            PayloadKind::Sealed => 3,
            PayloadKind::SealedFile => 4,
            PayloadKind::Keys => 5,
            PayloadKind::Other(n) => n,
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            1 => PayloadKind::Text,
            2 => PayloadKind::File,
            3 => PayloadKind::Sealed,
            4 => PayloadKind::SealedFile,
            5 => PayloadKind::Keys,
            other => PayloadKind::Other(other),
        }
    }
}

/// The opaque part of a message: a kind byte and the bytes to the end of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// What the body holds.
    pub kind: PayloadKind,
    /// The bytes.
    pub body: Vec<u8>,
}

impl Payload {
    /// A chat text payload.
    pub fn text(text: &str) -> Self {
        Payload {
            kind: PayloadKind::Text,
            body: text.as_bytes().to_vec(),
        }
    }

    /// The text, if this is a text payload holding valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            PayloadKind::Text => core::str::from_utf8(&self.body).ok(),
            _ => None,
        }
    }
}

impl PayloadKind {
    /// Whether a file transfer or key exchange (not chat): such messages go on after
    /// their sender said `exit`, since they finish what was started before.
    pub fn is_housekeeping(self) -> bool {
        matches!(
            self,
            PayloadKind::File | PayloadKind::SealedFile | PayloadKind::Keys
        )
    }

    /// Whether a file-transfer message, clear or end-to-end encrypted.
    pub fn is_file(self) -> bool {
        matches!(self, PayloadKind::File | PayloadKind::SealedFile)
    }
}

/// One line of the relay's list of who is online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    /// The client's ID.
    pub id: ClientId,
    /// Whether the client has said `exit` (it still receives).
    pub exited: bool,
    /// Whether its connection is lost and the relay holds its session for it to come
    /// back (messages to it wait; see [`Frame::Away`]).
    pub away: bool,
    /// The client's nickname, possibly empty.
    pub name: String,
    /// The client's long-term key, as its secure handshake with the relay proved it
    /// (`None` for a client that does not encrypt: a plain-text one).
    pub key: Option<PublicKey>,
}

/// A non-fatal error about one thing the receiver did; the connection stays up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// What went wrong.
    pub code: ErrorCode,
    /// Sequence number of the message it concerns, or 0.
    pub seq: u64,
    /// The client it concerns (e.g. the unknown recipient), if any.
    pub subject: Option<ClientId>,
    /// A sentence for the user.
    pub message: String,
}

/// One frame of protocol v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// 0x01: opening frame of each side.
    Hello(Hello),
    /// 0x02: relay admits a client.
    Welcome(Welcome),
    /// 0x03: relay refuses a client; it closes next.
    Refused(Refused),
    /// 0x10: client asks the relay to route a message to `to` (or everyone: [`ClientId::BROADCAST`]).
    Chat {
        /// Recipient, or broadcast.
        to: ClientId,
        /// The sender's sequence number: strictly increasing per sender, from 1.
        seq: u64,
        /// The message.
        payload: Payload,
    },
    /// 0x11: relay hands a routed message to its recipient.
    Deliver {
        /// Sender's ID.
        from: ClientId,
        /// The `to` the sender used (the recipient's ID, or broadcast).
        to: ClientId,
        /// The sender's sequence number.
        seq: u64,
        /// The message, untouched.
        payload: Payload,
    },
    /// 0x12: client asks for the roster.
    Who,
    /// 0x13: who is online, in ID order; `entries` may list fewer than `total` when
    /// the full list would not fit the relay's roster size limit.
    Roster {
        /// Clients online in all.
        total: u32,
        /// The first of them, in ID order.
        entries: Vec<RosterEntry>,
    },
    /// 0x14: a client was admitted.
    Joined {
        /// Its ID.
        id: ClientId,
        /// Its nickname.
        name: String,
        /// Its long-term key (`None` for a client that does not encrypt).
        key: Option<PublicKey>,
    },
    /// 0x15: a client left.
    Left {
        /// Its ID.
        id: ClientId,
        /// Why: `Normal` after `exit`, `ConnectionLost`, `SlowConsumer`, a protocol error...
        code: ErrorCode,
    },
    /// 0x16: a client said `exit`: it sends no more but still receives.
    Exited {
        /// Its ID.
        id: ClientId,
    },
    /// 0x17: every online client has said `exit`: nobody will send anything more, so
    /// the receiver (which has said exit too) can leave.
    AllExited,
    /// 0x1A: a client's connection was lost; the relay holds its session for it to
    /// come back within `grace_ms`. Messages to it wait meanwhile. Followed by
    /// [`Frame::Back`], or by [`Frame::Left`] when the grace ends.
    Away {
        /// Its ID.
        id: ClientId,
        /// How the connection was lost (`ConnectionLost`, `PeerTimeout`, ...).
        code: ErrorCode,
        /// How long, from now, the relay holds its session, in milliseconds.
        grace_ms: u32,
    },
    /// 0x1B: a client that was away resumed its session.
    Back {
        /// Its ID.
        id: ClientId,
    },
    /// 0x1C: relay to a sender: its message `seq` to client `to`, which is away, is
    /// held for it; it is delivered if `to` comes back within `wait_ms`, and
    /// reported undelivered otherwise. Told once per sender while `to` is away.
    Held {
        /// The away recipient.
        to: ClientId,
        /// The sender's sequence number of the message held.
        seq: u64,
        /// How long, from now, it can wait, in milliseconds.
        wait_ms: u32,
    },
    /// 0x18: client asks the relay who client `id` is (its key above all, to encrypt
    /// to it when no roster listed it); answered with `Profile`, or an `Error`
    /// (`UnknownRecipient`) when no such client is online.
    Lookup {
        /// The client asked about.
        id: ClientId,
    },
    /// 0x19: the relay's answer to `Lookup`.
    Profile(RosterEntry),
    /// 0x61: the sender has read and handled `received` bytes of the other side's
    /// session stream (see `session.rs`): the other side may forget them.
    Ack {
        /// Bytes of the other side's session stream handled, from its start.
        received: u64,
    },
    /// 0x62: the first frame of a side coming back to a session it had (its `Hello`
    /// said `resuming`): which session, the token that proves it, and how much of
    /// the other side's session stream it holds.
    Resume {
        /// The relay client's ID in that session (0 between direct peers).
        id: ClientId,
        /// The token the other side gave when the session began.
        token: [u8; 16],
        /// Bytes of the other side's session stream handled.
        received: u64,
    },
    /// 0x63: the answer to a `Resume` that is accepted: the session goes on, with
    /// the rest of the answering side's session stream from the received offset the
    /// `Resume` gave; the resuming side resends its own from `received`.
    Resumed {
        /// Bytes of the resuming side's session stream the answering side handled.
        received: u64,
    },
    /// 0x66: relay to a client, the answer to a `Resume` for a session this relay
    /// did not hold but took over from another relay of its cluster (that relay died
    /// or let it go): the session goes on here, with the same ID. The relay's
    /// session stream goes on from the `Resume`'s `received`; the client's starts
    /// anew at offset 0, beginning with everything it kept (what the old relay never
    /// acknowledged), sent again. A new `ResumeToken` follows.
    Moved,
    /// 0x64: the token a side needs to come back to this session after losing its
    /// connection, and how long the other side holds the session for it.
    ResumeToken {
        /// The secret.
        token: [u8; 16],
        /// How long after a lost connection the session is held, in milliseconds.
        grace_ms: u32,
    },
    /// 0x65: relay to a client: every message it numbered up to `seq` has reached
    /// each of its recipients (they acknowledged it), or the client was told with an
    /// `Error` (sent before this frame) which recipient did not get it and why.
    Delivered {
        /// The highest sequence number settled.
        seq: u64,
    },
    /// 0x20: a direct-chat message.
    Message {
        /// The sender's sequence number: strictly increasing, from 1.
        seq: u64,
        /// The message.
        payload: Payload,
    },
    /// 0x30: the sender will send no more messages; it keeps receiving.
    Exit,
    /// 0x31: keepalive probe; answered with `Pong` carrying the same nonce.
    Ping(u64),
    /// 0x32: keepalive answer.
    Pong(u64),
    /// 0x33: non-fatal error report.
    Error(ErrorReport),
    /// 0x34: the sender is closing the connection, and why.
    Close {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, in words.
        message: String,
    },
    /// 0x50: one message of the secure handshake.
    Handshake {
        /// Which handshake ([`crate::Pattern`] number).
        pattern: u8,
        /// The Noise message.
        message: Vec<u8>,
    },
    /// 0x51: an encrypted record of the frame stream (see `secure/channel.rs`).
    Sealed(Vec<u8>),
}

/// Frame type bytes, as listed in `docs/PROTOCOL.md`.
pub(crate) mod ty {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const REFUSED: u8 = 0x03;
    pub const CHAT: u8 = 0x10;
    pub const DELIVER: u8 = 0x11;
    pub const WHO: u8 = 0x12;
    pub const ROSTER: u8 = 0x13;
    pub const JOINED: u8 = 0x14;
    pub const LEFT: u8 = 0x15;
    pub const EXITED: u8 = 0x16;
    pub const ALL_EXITED: u8 = 0x17;
    pub const LOOKUP: u8 = 0x18;
    pub const PROFILE: u8 = 0x19;
    pub const AWAY: u8 = 0x1A;
    pub const BACK: u8 = 0x1B;
    pub const HELD: u8 = 0x1C;
    pub const ACK: u8 = 0x61;
    pub const RESUME: u8 = 0x62;
    pub const RESUMED: u8 = 0x63;
    pub const RESUME_TOKEN: u8 = 0x64;
    pub const DELIVERED: u8 = 0x65;
    pub const MOVED: u8 = 0x66;
    pub const MESSAGE: u8 = 0x20;
    pub const EXIT: u8 = 0x30;
    pub const PING: u8 = 0x31;
    pub const PONG: u8 = 0x32;
    pub const ERROR: u8 = 0x33;
    pub const CLOSE: u8 = 0x34;
    pub const HANDSHAKE: u8 = 0x50;
    pub const SEALED: u8 = 0x51;
}

/// The frames in a buffer of whole encoded frames (our own output: every frame has
/// its type byte), each as its type byte and its byte range, header included. The
/// session layer walks its queues with it, to tell link frames from session frames.
pub(crate) fn encoded_frames(buf: &[u8]) -> impl Iterator<Item = (u8, Range<usize>)> + '_ {
    let mut at = 0;
    core::iter::from_fn(move || {
        let header = buf.get(at..at + 5)?;
        let len = u32::from_be_bytes(header.get(..4)?.try_into().ok()?) as usize;
        let ty = *header.get(4)?;
        let span = at..(at + 4 + len).min(buf.len());
        at = span.end;
        Some((ty, span))
    })
}

/// Whether frames of this type belong to their sender's session stream (see
/// `session.rs` and `docs/PROTOCOL.md` 5b): everything but the frames about one
/// connection. A frontend that acknowledges what it read counts these.
pub fn is_session_frame(type_byte: u8) -> bool {
    !matches!(
        type_byte,
        ty::HELLO
            | ty::WELCOME
            | ty::REFUSED
            | ty::PING
            | ty::PONG
            | ty::CLOSE
            | ty::HANDSHAKE
            | ty::SEALED
            | ty::ACK
            | ty::RESUME
            | ty::RESUMED
            | ty::RESUME_TOKEN
            | ty::MOVED
    )
}

/// Smallest encoded roster entry (id, flags, empty name): bounds how many entries a
/// roster's count may claim before any allocation.
const MIN_ROSTER_ENTRY_LEN: usize = 4 + 1 + 1;

/// `Hello` flag: the sender resumes a session (a `Resume` frame follows).
const HELLO_RESUMING: u8 = 0b1;

/// `subject` value meaning "no client".
const NO_SUBJECT: u32 = u32::MAX;

/// Roster-entry and `Joined` flag: a 32-byte key follows.
const FLAG_KEY: u8 = 0b10;

/// Roster-entry flag: the client is away (its session held for it).
const FLAG_AWAY: u8 = 0b100;

/// Appends one roster entry (in a `Roster` or a `Profile`): ID, flags, name, key.
fn roster_entry(w: &mut Writer<'_>, e: &RosterEntry) {
    w.u32(e.id.0);
    w.u8(u8::from(e.exited)
        | if e.key.is_some() { FLAG_KEY } else { 0 }
        | if e.away { FLAG_AWAY } else { 0 });
    w.str8(&e.name);
    if let Some(key) = &e.key {
        w.rest(&key.0);
    }
}

/// Reads one roster entry, as [`roster_entry`] writes it.
fn read_roster_entry(r: &mut Reader<'_>) -> Result<RosterEntry, DecodeError> {
    let id = ClientId(r.u32()?);
    let flags = r.u8()?;
    let name = r.str8("Roster name")?;
    let key = if flags & FLAG_KEY != 0 {
        Some(PublicKey(r.array()?))
    } else {
        None
    };
    Ok(RosterEntry {
        id,
        exited: flags & 1 == 1,
        away: flags & FLAG_AWAY != 0,
        name,
        key,
    })
}

/// Appends one frame: the length prefix, the type byte, and the body `body` writes.
fn encode_with(out: &mut Vec<u8>, type_byte: u8, body: impl FnOnce(&mut Writer<'_>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    let mut w = Writer::new(out);
    w.u8(type_byte);
    body(&mut w);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    if let Some(prefix) = out.get_mut(start..start + 4) {
        prefix.copy_from_slice(&len.to_be_bytes());
    }
}

fn deliver_body(
    w: &mut Writer<'_>,
    from: ClientId,
    to: ClientId,
    seq: u64,
    kind: PayloadKind,
    body: &[u8],
) {
    w.u32(from.0);
    w.u32(to.0);
    w.u64(seq);
    w.u8(kind.to_u8());
    w.rest(body);
}

/// Appends a `Deliver` frame made of borrowed parts: the relay forwards a payload
/// straight from the sender's bytes to the recipient's queue, never owning it.
pub(crate) fn encode_deliver(
    out: &mut Vec<u8>,
    from: ClientId,
    to: ClientId,
    seq: u64,
    kind: PayloadKind,
    body: &[u8],
) {
    encode_with(out, ty::DELIVER, |w| {
        deliver_body(w, from, to, seq, kind, body)
    });
}

/// Appends a `Message` frame whose payload body `body` writes straight into `out`
/// (a file chunk is copied once, from the caller's buffer into the queue).
pub(crate) fn encode_message_with(
    out: &mut Vec<u8>,
    seq: u64,
    kind: PayloadKind,
    body: impl FnOnce(&mut Vec<u8>),
) {
    encode_with(out, ty::MESSAGE, |w| {
        w.u64(seq);
        w.u8(kind.to_u8());
        body(w.out());
    });
}

/// Appends a `Chat` frame whose payload body `body` writes straight into `out`.
pub(crate) fn encode_chat_with(
    out: &mut Vec<u8>,
    to: ClientId,
    seq: u64,
    kind: PayloadKind,
    body: impl FnOnce(&mut Vec<u8>),
) {
    encode_with(out, ty::CHAT, |w| {
        w.u32(to.0);
        w.u64(seq);
        w.u8(kind.to_u8());
        body(w.out());
    });
}

/// Where a received payload comes from, read from its frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// A direct `Message`.
    Direct {
        /// The sender's sequence number.
        seq: u64,
    },
    /// A relay `Deliver`.
    Relay {
        /// The sender's ID.
        from: ClientId,
        /// The `to` the sender used.
        to: ClientId,
        /// The sender's sequence number.
        seq: u64,
    },
}

/// A payload read in place: its envelope, kind and body.
pub(crate) type PayloadRef<'a> = (Envelope, PayloadKind, &'a [u8]);

/// The payload of a `Message` or `Deliver` frame read in place (`None` for any other
/// frame): its envelope, kind and body, so that a file chunk can be decoded from the
/// received bytes without first copying the payload.
pub(crate) fn payload_ref(
    type_byte: u8,
    body: &[u8],
) -> Option<Result<PayloadRef<'_>, DecodeError>> {
    fn parse<'a>(r: &mut Reader<'a>, envelope: Envelope) -> Result<PayloadRef<'a>, DecodeError> {
        let kind = PayloadKind::from_u8(r.u8()?);
        Ok((envelope, kind, r.rest()))
    }
    match type_byte {
        ty::MESSAGE => {
            let mut r = Reader::new(body, "Message");
            Some(
                r.u64()
                    .and_then(|seq| parse(&mut r, Envelope::Direct { seq })),
            )
        }
        ty::DELIVER => {
            let mut r = Reader::new(body, "Deliver");
            let header = (|| Ok::<_, DecodeError>((r.u32()?, r.u32()?, r.u64()?)))();
            Some(header.and_then(|(from, to, seq)| {
                let envelope = Envelope::Relay {
                    from: ClientId(from),
                    to: ClientId(to),
                    seq,
                };
                parse(&mut r, envelope)
            }))
        }
        _ => None,
    }
}

/// A `Chat` frame read in place: the header the relay routes by, and the payload
/// still in the sender's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChatRef<'a> {
    pub(crate) to: ClientId,
    pub(crate) seq: u64,
    pub(crate) kind: PayloadKind,
    pub(crate) body: &'a [u8],
}

impl<'a> ChatRef<'a> {
    /// The type byte of `Chat`, for callers holding a raw frame.
    pub(crate) const TYPE: u8 = ty::CHAT;

    /// Reads a `Chat` body: `to:u32 seq:u64 kind:u8 body:rest`.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, "Chat");
        Ok(ChatRef {
            to: ClientId(r.u32()?),
            seq: r.u64()?,
            kind: PayloadKind::from_u8(r.u8()?),
            body: r.rest(),
        })
    }
}

impl Frame {
    /// The frame's name, as used in docs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Welcome(_) => "Welcome",
            Frame::Refused(_) => "Refused",
            Frame::Chat { .. } => "Chat",
            Frame::Deliver { .. } => "Deliver",
            Frame::Who => "Who",
            Frame::Roster { .. } => "Roster",
            Frame::Joined { .. } => "Joined",
            Frame::Left { .. } => "Left",
            Frame::Exited { .. } => "Exited",
            Frame::AllExited => "AllExited",
            Frame::Moved => "Moved",
            Frame::Lookup { .. } => "Lookup",
            Frame::Profile(_) => "Profile",
            Frame::Away { .. } => "Away",
            Frame::Back { .. } => "Back",
            Frame::Held { .. } => "Held",
            Frame::Ack { .. } => "Ack",
            Frame::Resume { .. } => "Resume",
            Frame::Resumed { .. } => "Resumed",
            Frame::ResumeToken { .. } => "ResumeToken",
            Frame::Delivered { .. } => "Delivered",
            Frame::Message { .. } => "Message",
            Frame::Exit => "Exit",
            Frame::Ping(_) => "Ping",
            Frame::Pong(_) => "Pong",
            Frame::Error(_) => "Error",
            Frame::Close { .. } => "Close",
            Frame::Handshake { .. } => "Handshake",
            Frame::Sealed(_) => "Sealed",
        }
    }

    fn type_byte(&self) -> u8 {
        match self {
            Frame::Hello(_) => ty::HELLO,
            Frame::Welcome(_) => ty::WELCOME,
            Frame::Refused(_) => ty::REFUSED,
            Frame::Chat { .. } => ty::CHAT,
            Frame::Deliver { .. } => ty::DELIVER,
            Frame::Who => ty::WHO,
            Frame::Roster { .. } => ty::ROSTER,
            Frame::Joined { .. } => ty::JOINED,
            Frame::Left { .. } => ty::LEFT,
            Frame::Exited { .. } => ty::EXITED,
            Frame::AllExited => ty::ALL_EXITED,
            Frame::Moved => ty::MOVED,
            Frame::Lookup { .. } => ty::LOOKUP,
            Frame::Profile(_) => ty::PROFILE,
            Frame::Away { .. } => ty::AWAY,
            Frame::Back { .. } => ty::BACK,
            Frame::Held { .. } => ty::HELD,
            Frame::Ack { .. } => ty::ACK,
            Frame::Resume { .. } => ty::RESUME,
            Frame::Resumed { .. } => ty::RESUMED,
            Frame::ResumeToken { .. } => ty::RESUME_TOKEN,
            Frame::Delivered { .. } => ty::DELIVERED,
            Frame::Message { .. } => ty::MESSAGE,
            Frame::Exit => ty::EXIT,
            Frame::Ping(_) => ty::PING,
            Frame::Pong(_) => ty::PONG,
            Frame::Error(_) => ty::ERROR,
            Frame::Close { .. } => ty::CLOSE,
            Frame::Handshake { .. } => ty::HANDSHAKE,
            Frame::Sealed(_) => ty::SEALED,
        }
    }

    /// Appends this frame, length prefix included, to `out`.
    ///
    /// Strings longer than their length field allows are cut at a character boundary;
    /// the state machines never produce such strings, so this only guards against
    /// misuse by other frontends.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_with(out, self.type_byte(), |w| self.encode_body(w));
    }

    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            Frame::Hello(h) => {
                w.u16(h.min_version);
                w.u16(h.max_version);
                w.u64(h.capabilities);
                w.u8(h.role.to_u8());
                w.str8(&h.name);
                if h.resuming {
                    w.u8(HELLO_RESUMING);
                }
            }
            Frame::Welcome(wel) => {
                w.u16(wel.version);
                w.u64(wel.capabilities);
                w.u32(wel.client_id.0);
                w.u32(wel.max_clients);
            }
            Frame::Refused(r) => {
                w.u16(r.code.to_u16());
                w.u32(r.online);
                w.u32(r.limit);
                w.str16(&r.reason);
            }
            Frame::Chat { to, seq, payload } => {
                w.u32(to.0);
                w.u64(*seq);
                w.u8(payload.kind.to_u8());
                w.rest(&payload.body);
            }
            Frame::Deliver {
                from,
                to,
                seq,
                payload,
            } => deliver_body(w, *from, *to, *seq, payload.kind, &payload.body),
            Frame::Who | Frame::Exit | Frame::AllExited | Frame::Moved => {}
            Frame::Roster { total, entries } => {
                w.u32(*total);
                w.u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
                for e in entries.iter().take(u32::MAX as usize) {
                    roster_entry(w, e);
                }
            }
            Frame::Lookup { id } => w.u32(id.0),
            Frame::Ack { received } | Frame::Resumed { received } => w.u64(*received),
            Frame::Resume {
                id,
                token,
                received,
            } => {
                w.u32(id.0);
                w.rest(token);
                w.u64(*received);
            }
            Frame::ResumeToken { token, grace_ms } => {
                w.rest(token);
                w.u32(*grace_ms);
            }
            Frame::Delivered { seq } => w.u64(*seq),
            Frame::Profile(e) => roster_entry(w, e),
            Frame::Joined { id, name, key } => {
                w.u32(id.0);
                w.str8(name);
                match key {
                    Some(key) => {
                        w.u8(FLAG_KEY);
                        w.rest(&key.0);
                    }
                    None => w.u8(0),
                }
            }
            Frame::Left { id, code } => {
                w.u32(id.0);
                w.u16(code.to_u16());
            }
            Frame::Exited { id } | Frame::Back { id } => w.u32(id.0),
            Frame::Away { id, code, grace_ms } => {
                w.u32(id.0);
                w.u16(code.to_u16());
                w.u32(*grace_ms);
            }
            Frame::Held { to, seq, wait_ms } => {
                w.u32(to.0);
                w.u64(*seq);
                w.u32(*wait_ms);
            }
            Frame::Message { seq, payload } => {
                w.u64(*seq);
                w.u8(payload.kind.to_u8());
                w.rest(&payload.body);
            }
            Frame::Ping(nonce) | Frame::Pong(nonce) => w.u64(*nonce),
            Frame::Error(e) => {
                w.u16(e.code.to_u16());
                w.u64(e.seq);
                w.u32(e.subject.map_or(NO_SUBJECT, |id| id.0));
                w.str16(&e.message);
            }
            Frame::Close { code, message } => {
                w.u16(code.to_u16());
                w.str16(message);
            }
            Frame::Handshake { pattern, message } => {
                w.u8(*pattern);
                w.rest(message);
            }
            Frame::Sealed(record) => w.rest(record),
        }
    }

    /// Convenience: this frame's bytes, length prefix included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one frame from its type byte and body (the length prefix already removed).
    pub fn decode(type_byte: u8, body: &[u8]) -> Result<Frame, DecodeError> {
        let frame = match type_byte {
            ty::HELLO => {
                let mut r = Reader::new(body, "Hello");
                let hello = Hello {
                    min_version: r.u16()?,
                    max_version: r.u16()?,
                    capabilities: r.u64()?,
                    role: Role::from_u8(r.u8()?),
                    name: r.str8("Hello name")?,
                    resuming: false,
                };
                // The flags byte, if any. Later versions may append more fields to
                // Hello; it is read before any version is agreed, so extra bytes (and
                // flags this version does not know) are ignored, not rejected.
                let flags = r.u8().unwrap_or(0);
                return Ok(Frame::Hello(Hello {
                    resuming: flags & HELLO_RESUMING != 0,
                    ..hello
                }));
            }
            ty::WELCOME => {
                let mut r = Reader::new(body, "Welcome");
                let w = Welcome {
                    version: r.u16()?,
                    capabilities: r.u64()?,
                    client_id: ClientId(r.u32()?),
                    max_clients: r.u32()?,
                };
                r.finish()?;
                Frame::Welcome(w)
            }
            ty::REFUSED => {
                let mut r = Reader::new(body, "Refused");
                let f = Refused {
                    code: ErrorCode::from_u16(r.u16()?),
                    online: r.u32()?,
                    limit: r.u32()?,
                    reason: r.str16("Refused reason")?,
                };
                r.finish()?;
                Frame::Refused(f)
            }
            ty::CHAT => {
                let chat = ChatRef::parse(body)?;
                Frame::Chat {
                    to: chat.to,
                    seq: chat.seq,
                    payload: Payload {
                        kind: chat.kind,
                        body: chat.body.to_vec(),
                    },
                }
            }
            ty::DELIVER => {
                let mut r = Reader::new(body, "Deliver");
                let from = ClientId(r.u32()?);
                let to = ClientId(r.u32()?);
                let seq = r.u64()?;
                let kind = PayloadKind::from_u8(r.u8()?);
                let body = r.rest().to_vec();
                Frame::Deliver {
                    from,
                    to,
                    seq,
                    payload: Payload { kind, body },
                }
            }
            ty::WHO => {
                Reader::new(body, "Who").finish()?;
                Frame::Who
            }
            ty::ROSTER => {
                let mut r = Reader::new(body, "Roster");
                let total = r.u32()?;
                let count = r.u32()? as usize;
                if count > body.len() / MIN_ROSTER_ENTRY_LEN {
                    return Err(DecodeError::Malformed {
                        frame: "Roster",
                        problem: "entry count larger than the body can hold",
                    });
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push(read_roster_entry(&mut r)?);
                }
                r.finish()?;
                Frame::Roster { total, entries }
            }
            ty::LOOKUP => {
                let mut r = Reader::new(body, "Lookup");
                let id = ClientId(r.u32()?);
                r.finish()?;
                Frame::Lookup { id }
            }
            ty::ACK | ty::RESUMED | ty::DELIVERED => {
                let name = match type_byte {
                    ty::ACK => "Ack",
                    ty::RESUMED => "Resumed",
                    _ => "Delivered",
                };
                let mut r = Reader::new(body, name);
                let n = r.u64()?;
                r.finish()?;
                match type_byte {
                    ty::ACK => Frame::Ack { received: n },
                    ty::RESUMED => Frame::Resumed { received: n },
                    _ => Frame::Delivered { seq: n },
                }
            }
            ty::RESUME => {
                let mut r = Reader::new(body, "Resume");
                let id = ClientId(r.u32()?);
                let token = r.array()?;
                let received = r.u64()?;
                r.finish()?;
                Frame::Resume {
                    id,
                    token,
                    received,
                }
            }
            ty::RESUME_TOKEN => {
                let mut r = Reader::new(body, "ResumeToken");
                let token = r.array()?;
                let grace_ms = r.u32()?;
                r.finish()?;
                Frame::ResumeToken { token, grace_ms }
            }
            ty::PROFILE => {
                let mut r = Reader::new(body, "Profile");
                let entry = read_roster_entry(&mut r)?;
                r.finish()?;
                Frame::Profile(entry)
            }
            ty::JOINED => {
                let mut r = Reader::new(body, "Joined");
                let id = ClientId(r.u32()?);
                let name = r.str8("Joined name")?;
                let key = if r.u8()? & FLAG_KEY != 0 {
                    Some(PublicKey(r.array()?))
                } else {
                    None
                };
                let f = Frame::Joined { id, name, key };
                r.finish()?;
                f
            }
            ty::LEFT => {
                let mut r = Reader::new(body, "Left");
                let f = Frame::Left {
                    id: ClientId(r.u32()?),
                    code: ErrorCode::from_u16(r.u16()?),
                };
                r.finish()?;
                f
            }
            ty::EXITED => {
                let mut r = Reader::new(body, "Exited");
                let f = Frame::Exited {
                    id: ClientId(r.u32()?),
                };
                r.finish()?;
                f
            }
            ty::BACK => {
                let mut r = Reader::new(body, "Back");
                let f = Frame::Back {
                    id: ClientId(r.u32()?),
                };
                r.finish()?;
                f
            }
            ty::AWAY => {
                let mut r = Reader::new(body, "Away");
                let f = Frame::Away {
                    id: ClientId(r.u32()?),
                    code: ErrorCode::from_u16(r.u16()?),
                    grace_ms: r.u32()?,
                };
                r.finish()?;
                f
            }
            ty::HELD => {
                let mut r = Reader::new(body, "Held");
                let f = Frame::Held {
                    to: ClientId(r.u32()?),
                    seq: r.u64()?,
                    wait_ms: r.u32()?,
                };
                r.finish()?;
                f
            }
            ty::ALL_EXITED => {
                Reader::new(body, "AllExited").finish()?;
                Frame::AllExited
            }
            ty::MOVED => {
                Reader::new(body, "Moved").finish()?;
                Frame::Moved
            }
            ty::MESSAGE => {
                let mut r = Reader::new(body, "Message");
                let seq = r.u64()?;
                let kind = PayloadKind::from_u8(r.u8()?);
                let body = r.rest().to_vec();
                Frame::Message {
                    seq,
                    payload: Payload { kind, body },
                }
            }
            ty::EXIT => {
                Reader::new(body, "Exit").finish()?;
                Frame::Exit
            }
            ty::PING | ty::PONG => {
                let mut r = Reader::new(
                    body,
                    if type_byte == ty::PING {
                        "Ping"
                    } else {
                        "Pong"
                    },
                );
                let nonce = r.u64()?;
                r.finish()?;
                if type_byte == ty::PING {
                    Frame::Ping(nonce)
                } else {
                    Frame::Pong(nonce)
                }
            }
            ty::ERROR => {
                let mut r = Reader::new(body, "Error");
                let code = ErrorCode::from_u16(r.u16()?);
                let seq = r.u64()?;
                let subject = r.u32()?;
                let message = r.str16("Error message")?;
                r.finish()?;
                Frame::Error(ErrorReport {
                    code,
                    seq,
                    subject: (subject != NO_SUBJECT).then_some(ClientId(subject)),
                    message,
                })
            }
            ty::CLOSE => {
                let mut r = Reader::new(body, "Close");
                let code = ErrorCode::from_u16(r.u16()?);
                let message = r.str16("Close message")?;
                r.finish()?;
                Frame::Close { code, message }
            }
            ty::HANDSHAKE => {
                let mut r = Reader::new(body, "Handshake");
                Frame::Handshake {
                    pattern: r.u8()?,
                    message: r.rest().to_vec(),
                }
            }
            ty::SEALED => Frame::Sealed(body.to_vec()),
            other => return Err(DecodeError::UnknownFrameType(other)),
        };
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_layout_matches_the_protocol_document() {
        let bytes = Frame::Chat {
            to: ClientId(1),
            seq: 1,
            payload: Payload::text("hi"),
        }
        .to_bytes();
        assert_eq!(
            bytes,
            [
                0, 0, 0, 16,   // len = type + 4 + 8 + 1 + 2
                0x10, // Chat
                0, 0, 0, 1, // to
                0, 0, 0, 0, 0, 0, 0, 1, // seq
                1, // kind = text
                b'h', b'i'
            ]
        );
    }

    #[test]
    fn roster_count_cannot_force_a_huge_allocation() {
        let body = [0, 0, 0, 9, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0];
        assert!(matches!(
            Frame::decode(ty::ROSTER, &body),
            Err(DecodeError::Malformed {
                frame: "Roster",
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected_except_in_hello() {
        assert!(Frame::decode(ty::EXIT, &[0]).is_err());
        let mut hello = Frame::Hello(Hello {
            min_version: 1,
            max_version: 1,
            capabilities: 0,
            role: Role::DirectPeer,
            name: "a".into(),
            resuming: false,
        })
        .to_bytes();
        hello.push(0xAB);
        assert!(Frame::decode(hello[4], &hello[5..]).is_ok());
    }

    #[test]
    fn error_without_subject_round_trips() {
        let f = Frame::Error(ErrorReport {
            code: ErrorCode::NoRecipients,
            seq: 4,
            subject: None,
            message: "nobody else is online".into(),
        });
        let b = f.to_bytes();
        assert_eq!(Frame::decode(b[4], &b[5..]), Ok(f));
    }
}
