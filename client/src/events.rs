//! The event vocabulary: what a relay session or a direct conversation tells its user,
//! as data. Each event serialises to one JSON object whose `event` field names it
//! (`{"event":"message","from":3,"to":"all","seq":7,"e2e":true,"text":"hi"}`); the
//! README documents the fields. The core's events carry more (timers, files, keys as
//! bytes); these carry what a person or a script needs, in stable names.
//!
//! Why serde types rather than strings: two frontends print the same events (the
//! command line's `--json`, the web app's WebSocket), and a hand-assembled string is a
//! place for one of them to forget an escape or a field.

use core::time::Duration;

use p2pchat_core::{
    ClientEvent, ClientId, ErrorCode, ErrorReport, PeerEvent, PublicKey, RecordCipher,
};
use serde::{Serialize, Serializer};

/// Who a relay message was for: one client, or everyone (`"all"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// One client, by ID.
    Client(u32),
    /// Every other client.
    All,
}

impl From<ClientId> for Recipient {
    fn from(to: ClientId) -> Self {
        if to.is_broadcast() {
            Recipient::All
        } else {
            Recipient::Client(to.0)
        }
    }
}

impl Serialize for Recipient {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Recipient::Client(id) => s.serialize_u32(*id),
            Recipient::All => s.serialize_str("all"),
        }
    }
}

/// One client in a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RosterClient {
    /// Its ID.
    pub id: u32,
    /// Its nickname (possibly empty).
    pub name: String,
    /// Whether it has said exit.
    pub exited: bool,
    /// Whether its connection is lost and the relay holds its session.
    pub away: bool,
    /// Its key's fingerprint; `None` for a client without a key (plain text).
    pub key: Option<String>,
}

/// A message not confirmed delivered when a relay session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UnconfirmedMessage {
    /// Its sequence number.
    pub seq: u64,
    /// Who it was for.
    pub to: Recipient,
}

/// The connection was lost and the session goes on: the same in relay sessions and
/// direct conversations (one type, so the two vocabularies cannot drift apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionLost {
    /// The error code.
    pub code: String,
    /// A sentence.
    pub reason: String,
    /// How long the other side holds the session, in seconds.
    pub grace_s: u64,
}

impl ConnectionLost {
    fn new(code: ErrorCode, reason: &str, grace: Duration) -> Self {
        ConnectionLost {
            code: code.to_string(),
            reason: reason.to_owned(),
            grace_s: grace.as_secs(),
        }
    }
}

/// An error about one of our messages (or the session), from the other side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorNotice {
    /// The error code.
    pub code: String,
    /// The message it concerns, or 0.
    pub seq: u64,
    /// A sentence.
    pub message: String,
}

impl From<&ErrorReport> for ErrorNotice {
    fn from(r: &ErrorReport) -> Self {
        ErrorNotice {
            code: r.code.to_string(),
            seq: r.seq,
            message: r.message.clone(),
        }
    }
}

/// The session ended other than by everyone saying exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disconnected {
    /// The error code.
    pub code: String,
    /// A sentence.
    pub reason: String,
}

impl Disconnected {
    fn new(code: ErrorCode, reason: &str) -> Self {
        Disconnected {
            code: code.to_string(),
            reason: reason.to_owned(),
        }
    }
}

/// What a relay session tells its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RelayEvent {
    /// Admitted: our ID, the relay's limit, how the connection is secured.
    Welcome {
        /// Our ID.
        id: u32,
        /// The relay's client limit.
        max_clients: u32,
        /// The protocol version agreed.
        version: u16,
        /// Whether the connection to the relay is encrypted.
        encrypted: bool,
        /// The relay's key's fingerprint.
        relay_key: Option<String>,
        /// The secure channel's cipher.
        cipher: Option<&'static str>,
    },
    /// Who is online: `total` clients, the first of them listed.
    Roster {
        /// Everyone online.
        total: u32,
        /// The first of them (a very large relay lists only as many as fit a frame).
        clients: Vec<RosterClient>,
    },
    /// A client was admitted.
    Joined {
        /// Its ID.
        id: u32,
        /// Its nickname.
        name: String,
        /// Its key's fingerprint.
        key: Option<String>,
    },
    /// A client is gone.
    Left {
        /// Its ID.
        id: u32,
        /// Why (an error code: `normal`, `connection-lost`, ...).
        reason: String,
    },
    /// A client said exit.
    Exited {
        /// Its ID.
        id: u32,
    },
    /// A client lost its connection; messages to it wait.
    Away {
        /// Its ID.
        id: u32,
        /// Why.
        reason: String,
        /// How long the relay waits for it, in milliseconds.
        wait_ms: u128,
    },
    /// A client that was away is back.
    Back {
        /// Its ID.
        id: u32,
    },
    /// Our message waits for a client that is away.
    Held {
        /// The client.
        to: u32,
        /// Our message's sequence number.
        seq: u64,
        /// How long it waits at most, in milliseconds.
        wait_ms: u128,
    },
    /// A message arrived.
    Message {
        /// The sender's ID.
        from: u32,
        /// Us, or everyone.
        to: Recipient,
        /// The sender's sequence number.
        seq: u64,
        /// Whether it was sealed end to end.
        e2e: bool,
        /// The text.
        text: String,
    },
    /// A client without a key: what we exchange with it is not end-to-end encrypted.
    NotEndToEnd {
        /// Its ID.
        id: u32,
        /// About messages to everyone (which it cannot read).
        everyone: bool,
    },
    /// Messages not confirmed delivered when the session ended.
    Unconfirmed {
        /// Which.
        messages: Vec<UnconfirmedMessage>,
    },
    /// A message that could not be opened.
    Unreadable {
        /// Its sender.
        from: u32,
        /// Its sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// Our message reached its addressee.
    Delivered {
        /// Its sequence number.
        seq: u64,
    },
    /// The connection was lost; the session goes on (the other side holds it).
    ConnectionLost(ConnectionLost),
    /// A dial to get the connection back failed.
    Reconnecting {
        /// Which attempt.
        attempt: u32,
    },
    /// Back in the session.
    Resumed {
        /// Our ID (unchanged).
        id: u32,
    },
    /// Our relay went away; another relay of its cluster took the session over.
    Moved {
        /// Our ID (unchanged).
        id: u32,
    },
    /// A kind of message this version cannot show.
    Unsupported {
        /// Its sender.
        from: u32,
        /// The kind byte.
        kind: u8,
    },
    /// An error about one of our messages (or the session).
    Error(ErrorNotice),
    /// The relay turned us away.
    Refused {
        /// The error code.
        code: String,
        /// Clients online.
        online: u32,
        /// The relay's limit.
        limit: u32,
        /// A sentence.
        reason: String,
    },
    /// Everyone said exit: the conversation is over.
    Finished,
    /// A file event (the transfer's own lines say more).
    File {
        /// What happened.
        detail: String,
    },
    /// The session ended otherwise.
    Disconnected(Disconnected),
}

fn fingerprint(key: &Option<PublicKey>) -> Option<String> {
    key.as_ref().map(PublicKey::fingerprint)
}

fn cipher_name(cipher: &Option<RecordCipher>) -> Option<&'static str> {
    cipher.map(RecordCipher::name)
}

impl From<&ClientEvent> for RelayEvent {
    fn from(event: &ClientEvent) -> Self {
        match event {
            ClientEvent::Welcomed {
                id,
                max_clients,
                version,
                relay_key,
                cipher,
            } => RelayEvent::Welcome {
                id: id.0,
                max_clients: *max_clients,
                version: *version,
                encrypted: relay_key.is_some(),
                relay_key: fingerprint(relay_key),
                cipher: cipher_name(cipher),
            },
            ClientEvent::Roster { total, entries } => RelayEvent::Roster {
                total: *total,
                clients: entries
                    .iter()
                    .map(|e| RosterClient {
                        id: e.id.0,
                        name: e.name.clone(),
                        exited: e.exited,
                        away: e.away,
                        key: fingerprint(&e.key),
                    })
                    .collect(),
            },
            ClientEvent::Joined { id, name, key } => RelayEvent::Joined {
                id: id.0,
                name: name.clone(),
                key: fingerprint(key),
            },
            ClientEvent::Left { id, code } => RelayEvent::Left {
                id: id.0,
                reason: code.to_string(),
            },
            ClientEvent::Exited { id } => RelayEvent::Exited { id: id.0 },
            ClientEvent::Away { id, code, wait } => RelayEvent::Away {
                id: id.0,
                reason: code.to_string(),
                wait_ms: wait.as_millis(),
            },
            ClientEvent::Back { id } => RelayEvent::Back { id: id.0 },
            ClientEvent::Held { to, seq, wait } => RelayEvent::Held {
                to: to.0,
                seq: *seq,
                wait_ms: wait.as_millis(),
            },
            ClientEvent::Message {
                from,
                to,
                seq,
                text,
                encrypted,
            } => RelayEvent::Message {
                from: from.0,
                to: (*to).into(),
                seq: *seq,
                e2e: *encrypted,
                text: text.clone(),
            },
            ClientEvent::NotEndToEnd { id, everyone } => RelayEvent::NotEndToEnd {
                id: id.0,
                everyone: *everyone,
            },
            ClientEvent::Unconfirmed { messages } => RelayEvent::Unconfirmed {
                messages: messages
                    .iter()
                    .map(|&(seq, to)| UnconfirmedMessage { seq, to: to.into() })
                    .collect(),
            },
            ClientEvent::Unreadable { from, seq, reason } => RelayEvent::Unreadable {
                from: from.0,
                seq: *seq,
                reason: reason.clone(),
            },
            ClientEvent::Delivered { seq } => RelayEvent::Delivered { seq: *seq },
            ClientEvent::ConnectionLost {
                code,
                reason,
                grace,
            } => RelayEvent::ConnectionLost(ConnectionLost::new(*code, reason, *grace)),
            ClientEvent::Reconnecting { attempt, .. } => {
                RelayEvent::Reconnecting { attempt: *attempt }
            }
            ClientEvent::Resumed { id } => RelayEvent::Resumed { id: id.0 },
            ClientEvent::Moved { id } => RelayEvent::Moved { id: id.0 },
            ClientEvent::UnsupportedPayload { from, kind } => RelayEvent::Unsupported {
                from: from.0,
                kind: *kind,
            },
            ClientEvent::Error(r) => RelayEvent::Error(r.into()),
            ClientEvent::Refused(r) => RelayEvent::Refused {
                code: r.code.to_string(),
                online: r.online,
                limit: r.limit,
                reason: r.reason.clone(),
            },
            ClientEvent::Finished => RelayEvent::Finished,
            ClientEvent::File(e) => RelayEvent::File {
                detail: format!("{e:?}"),
            },
            ClientEvent::Disconnected { code, reason } => {
                RelayEvent::Disconnected(Disconnected::new(*code, reason))
            }
        }
    }
}

/// What a direct conversation tells its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DirectEvent {
    /// The handshake completed.
    Connected {
        /// The peer's nickname.
        name: String,
        /// The protocol version agreed (0 with a plain-text peer).
        version: u16,
        /// Whether the peer speaks plain text lines (nc, the original app).
        plain_text: bool,
        /// Whether the conversation is encrypted.
        encrypted: bool,
        /// The peer's key's fingerprint.
        key: Option<String>,
        /// The secure channel's cipher.
        cipher: Option<&'static str>,
    },
    /// A message arrived.
    Message {
        /// The peer's sequence number.
        seq: u64,
        /// The text.
        text: String,
    },
    /// A kind of message this version cannot show.
    Unsupported {
        /// The kind byte.
        kind: u8,
    },
    /// The peer said exit.
    PeerExited,
    /// An error about one of our messages (or the session).
    Error(ErrorNotice),
    /// Both sides said exit: the conversation is over.
    Finished,
    /// Our message reached the peer.
    Delivered {
        /// Its sequence number.
        seq: u64,
    },
    /// The connection was lost; the session goes on (the other side holds it).
    ConnectionLost(ConnectionLost),
    /// A dial to get the connection back failed.
    Reconnecting {
        /// Which attempt.
        attempt: u32,
    },
    /// The conversation goes on after a lost connection.
    Resumed,
    /// Messages not confirmed delivered when the conversation ended.
    Unconfirmed {
        /// Their sequence numbers.
        seqs: Vec<u64>,
    },
    /// The session ended otherwise.
    Disconnected(Disconnected),
}

impl DirectEvent {
    /// The event for `event`; `None` for what has no line of its own (files: the
    /// transfer's own lines say more).
    pub fn from_core(event: &PeerEvent) -> Option<Self> {
        Some(match event {
            PeerEvent::Connected {
                name,
                version,
                plain_text,
                key,
                cipher,
            } => DirectEvent::Connected {
                name: name.clone(),
                version: *version,
                plain_text: *plain_text,
                encrypted: key.is_some(),
                key: fingerprint(key),
                cipher: cipher_name(cipher),
            },
            PeerEvent::Message { seq, text } => DirectEvent::Message {
                seq: *seq,
                text: text.clone(),
            },
            PeerEvent::UnsupportedPayload { kind } => DirectEvent::Unsupported { kind: *kind },
            PeerEvent::PeerExited => DirectEvent::PeerExited,
            PeerEvent::Error(r) => DirectEvent::Error(r.into()),
            PeerEvent::Finished => DirectEvent::Finished,
            PeerEvent::File(_) => return None,
            PeerEvent::Delivered { seq } => DirectEvent::Delivered { seq: *seq },
            PeerEvent::ConnectionLost {
                code,
                reason,
                grace,
            } => DirectEvent::ConnectionLost(ConnectionLost::new(*code, reason, *grace)),
            PeerEvent::Reconnecting { attempt } => DirectEvent::Reconnecting { attempt: *attempt },
            PeerEvent::Resumed => DirectEvent::Resumed,
            PeerEvent::Unconfirmed { seqs } => DirectEvent::Unconfirmed { seqs: seqs.clone() },
            PeerEvent::Disconnected { code, reason } => {
                DirectEvent::Disconnected(Disconnected::new(*code, reason))
            }
        })
    }
}

/// A line of saved chat history, shown at the start of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename = "history")]
pub struct HistoryLine {
    /// When it was said (RFC 3339, UTC).
    pub at: String,
    /// `you` or `peer`.
    pub from: String,
    /// The text.
    pub text: String,
}

/// One event as a line of JSON (no newline).
pub fn to_json_line<T: Serialize>(event: &T) -> String {
    // Serialising these types cannot fail: every field is a string, a number, a bool
    // or a list of them.
    serde_json::to_string(event).unwrap_or_else(|e| format!(r#"{{"event":"bug","why":"{e}"}}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_to_everyone_names_its_recipient_all() {
        let e = ClientEvent::Message {
            from: ClientId(3),
            to: ClientId::BROADCAST,
            seq: 7,
            text: "hi \"you\"\n".into(),
            encrypted: true,
        };
        assert_eq!(
            to_json_line(&RelayEvent::from(&e)),
            r#"{"event":"message","from":3,"to":"all","seq":7,"e2e":true,"text":"hi \"you\"\n"}"#
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let e = RelayEvent::Disconnected(Disconnected::new(ErrorCode::Normal, "a\u{1b}[2Jb\u{7}"));
        assert_eq!(
            to_json_line(&e),
            r#"{"event":"disconnected","code":"normal","reason":"a\u001b[2Jb\u0007"}"#
        );
    }

    #[test]
    fn shared_session_events_read_the_same_in_both_vocabularies() {
        let lost = ConnectionLost::new(ErrorCode::ConnectionLost, "gone", Duration::from_secs(60));
        let want =
            r#"{"event":"connection_lost","code":"connection-lost","reason":"gone","grace_s":60}"#;
        assert_eq!(
            to_json_line(&RelayEvent::ConnectionLost(lost.clone())),
            want
        );
        assert_eq!(to_json_line(&DirectEvent::ConnectionLost(lost)), want);
    }

    #[test]
    fn history_lines_say_what_they_are() {
        let h = HistoryLine {
            at: "2026-12-04T09:00:00Z".into(),
            from: "me".into(),
            text: "x".into(),
        };
        assert_eq!(
            to_json_line(&h),
            r#"{"event":"history","at":"2026-12-04T09:00:00Z","from":"me","text":"x"}"#
        );
    }
}
