//! Typed errors: the wire's error codes, decode failures, and refusals of local commands.
//!
//! Every way a connection can go wrong has its own [`ErrorCode`] so that the far side
//! (and the user) learns exactly what happened, never just "protocol error".

use crate::id::ClientId;
use thiserror::Error;

/// The error and reason codes carried by `Refused`, `Close`, `Error` and `Left` frames.
///
/// The numbers are part of the wire protocol (`docs/PROTOCOL.md`, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not an error: an orderly close or departure.
    Normal,
    /// A length prefix larger than the maximum frame length.
    FrameTooLarge,
    /// A frame type byte this version does not know.
    UnknownFrameType,
    /// A text field or text payload that is not valid UTF-8.
    InvalidUtf8,
    /// A frame whose body is too short, too long, or inconsistent.
    MalformedFrame,
    /// The stream did not start with the p2pchat magic bytes.
    BadMagic,
    /// No protocol version in common.
    UnsupportedVersion,
    /// A valid frame at the wrong moment (chat before the handshake, a second hello...).
    UnexpectedFrame,
    /// The handshake was not completed in time.
    HandshakeTimeout,
    /// The relay already holds its maximum number of clients.
    ServerFull,
    /// A message addressed to an ID that is not online.
    UnknownRecipient,
    /// A message sent after its sender said `exit`.
    SendAfterExit,
    /// A chat text longer than the maximum.
    MessageTooLong,
    /// The connection could not keep up with what was sent to it.
    SlowConsumer,
    /// The server is shutting down.
    ServerShutdown,
    /// The other side stopped answering.
    PeerTimeout,
    /// A nickname that is too long or contains control characters.
    InvalidName,
    /// A sequence number not larger than the previous one from the same sender.
    BadSequence,
    /// A relay client spoke to a direct peer or the other way round.
    WrongRole,
    /// The connection ended without an orderly close.
    ConnectionLost,
    /// A broadcast with nobody else online to receive it.
    NoRecipients,
    /// Too many connections are still in their handshake.
    TooManyHandshakes,
    /// The relay will not carry this file (too large, too many transfers).
    FileRefused,
    /// This side requires encryption and the other side does not offer it.
    EncryptionRequired,
    /// The secure handshake failed: a message tampered with, truncated, out of turn,
    /// or of an unknown pattern.
    HandshakeFailed,
    /// An encrypted record failed to open: tampered with, replayed, reordered or cut.
    DecryptFailed,
    /// The relay's password was wrong.
    WrongPassword,
    /// The other side's key is not the one pinned or remembered.
    KeyChanged,
    /// The relay requires a password and none was given.
    PasswordRequired,
    /// Too many connections from the same network address.
    TooManyFromAddress,
    /// The client sends faster than the relay allows; the relay reads from it more
    /// slowly (nothing is dropped).
    RateLimited,
    /// A side asked to resume a session the other side does not hold: it restarted,
    /// the grace period passed, or the token or key does not match.
    ResumeFailed,
    /// A message the relay routed did not reach its recipient: the recipient left
    /// (its connection lost for good, cut off, or gone) before it read it.
    Undelivered,
    /// The connection kept sending what the relay cannot use (lines that are not
    /// UTF-8 or not commands, messages it must refuse): cut off after too many.
    TooManyErrors,
    /// A code from a newer version; kept so it can be shown and passed on.
    Other(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Normal => 0,
            ErrorCode::FrameTooLarge => 1,
            ErrorCode::UnknownFrameType => 2,
            ErrorCode::InvalidUtf8 => 3,
            ErrorCode::MalformedFrame => 4,
            ErrorCode::BadMagic => 5,
            ErrorCode::UnsupportedVersion => 6,
            ErrorCode::UnexpectedFrame => 7,
            ErrorCode::HandshakeTimeout => 8,
            ErrorCode::ServerFull => 9,
            ErrorCode::UnknownRecipient => 10,
            ErrorCode::SendAfterExit => 11,
            ErrorCode::MessageTooLong => 12,
            ErrorCode::SlowConsumer => 13,
            ErrorCode::ServerShutdown => 14,
            ErrorCode::PeerTimeout => 15,
            ErrorCode::InvalidName => 16,
            ErrorCode::BadSequence => 17,
            ErrorCode::WrongRole => 18,
            ErrorCode::ConnectionLost => 19,
            ErrorCode::NoRecipients => 20,
            ErrorCode::TooManyHandshakes => 21,
            ErrorCode::FileRefused => 22,
            ErrorCode::EncryptionRequired => 23,
            ErrorCode::HandshakeFailed => 24,
            ErrorCode::DecryptFailed => 25,
            ErrorCode::WrongPassword => 26,
            ErrorCode::KeyChanged => 27,
            ErrorCode::PasswordRequired => 28,
            ErrorCode::TooManyFromAddress => 29,
            ErrorCode::RateLimited => 30,
            ErrorCode::ResumeFailed => 31,
            ErrorCode::Undelivered => 32,
            ErrorCode::TooManyErrors => 33,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number read off the wire; unknown numbers become [`ErrorCode::Other`].
    pub fn from_u16(n: u16) -> Self {
        match n {
            0 => ErrorCode::Normal,
            1 => ErrorCode::FrameTooLarge,
            2 => ErrorCode::UnknownFrameType,
            3 => ErrorCode::InvalidUtf8,
            4 => ErrorCode::MalformedFrame,
            5 => ErrorCode::BadMagic,
            6 => ErrorCode::UnsupportedVersion,
            7 => ErrorCode::UnexpectedFrame,
            8 => ErrorCode::HandshakeTimeout,
            9 => ErrorCode::ServerFull,
            10 => ErrorCode::UnknownRecipient,
            11 => ErrorCode::SendAfterExit,
            12 => ErrorCode::MessageTooLong,
            13 => ErrorCode::SlowConsumer,
            14 => ErrorCode::ServerShutdown,
            15 => ErrorCode::PeerTimeout,
            16 => ErrorCode::InvalidName,
            17 => ErrorCode::BadSequence,
            18 => ErrorCode::WrongRole,
            19 => ErrorCode::ConnectionLost,
            20 => ErrorCode::NoRecipients,
            21 => ErrorCode::TooManyHandshakes,
            22 => ErrorCode::FileRefused,
            23 => ErrorCode::EncryptionRequired,
            24 => ErrorCode::HandshakeFailed,
            25 => ErrorCode::DecryptFailed,
            26 => ErrorCode::WrongPassword,
            27 => ErrorCode::KeyChanged,
            28 => ErrorCode::PasswordRequired,
            29 => ErrorCode::TooManyFromAddress,
            30 => ErrorCode::RateLimited,
            31 => ErrorCode::ResumeFailed,
            32 => ErrorCode::Undelivered,
            33 => ErrorCode::TooManyErrors,
            other => ErrorCode::Other(other),
        }
    }

    /// Whether a connection closed with this code may be dialled again to resume its
    /// session (`false`), or the session is over (`true`): the other side refused
    /// who we are, or what we sent, or shut down in order.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ErrorCode::HandshakeTimeout
                | ErrorCode::TooManyHandshakes
                | ErrorCode::TooManyFromAddress
                | ErrorCode::ConnectionLost
                | ErrorCode::PeerTimeout
        )
    }

    /// A short lowercase name for logs and transcripts, e.g. `server-full`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Normal => "normal",
            ErrorCode::FrameTooLarge => "frame-too-large",
            ErrorCode::UnknownFrameType => "unknown-frame-type",
            ErrorCode::InvalidUtf8 => "invalid-utf8",
            ErrorCode::MalformedFrame => "malformed-frame",
            ErrorCode::BadMagic => "bad-magic",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::UnexpectedFrame => "unexpected-frame",
            ErrorCode::HandshakeTimeout => "handshake-timeout",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::UnknownRecipient => "unknown-recipient",
            ErrorCode::SendAfterExit => "send-after-exit",
            ErrorCode::MessageTooLong => "message-too-long",
            ErrorCode::SlowConsumer => "slow-consumer",
            ErrorCode::ServerShutdown => "server-shutdown",
            ErrorCode::PeerTimeout => "peer-timeout",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::BadSequence => "bad-sequence",
            ErrorCode::WrongRole => "wrong-role",
            ErrorCode::ConnectionLost => "connection-lost",
            ErrorCode::NoRecipients => "no-recipients",
            ErrorCode::TooManyHandshakes => "too-many-handshakes",
            ErrorCode::FileRefused => "file-refused",
            ErrorCode::EncryptionRequired => "encryption-required",
            ErrorCode::HandshakeFailed => "handshake-failed",
            ErrorCode::DecryptFailed => "decrypt-failed",
            ErrorCode::WrongPassword => "wrong-password",
            ErrorCode::KeyChanged => "key-changed",
            ErrorCode::PasswordRequired => "password-required",
            ErrorCode::TooManyFromAddress => "too-many-from-address",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::ResumeFailed => "resume-failed",
            ErrorCode::Undelivered => "undelivered",
            ErrorCode::TooManyErrors => "too-many-errors",
            ErrorCode::Other(_) => "unknown-code",
        }
    }
}

impl ErrorCode {
    /// The code in words, for a sentence ("connection lost", "peer timeout").
    pub fn in_words(self) -> String {
        self.name().replace('-', " ")
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ErrorCode::Other(n) => write!(f, "unknown-code-{n}"),
            known => f.write_str(known.name()),
        }
    }
}

/// Why a byte stream could not be decoded. Each variant maps to one [`ErrorCode`]; after
/// any of them the decoder refuses further input, because framing is lost.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The stream did not open with [`crate::MAGIC`].
    #[error("the stream does not start with the p2pchat magic bytes (first byte 0x{first:02x})")]
    BadMagic {
        /// The first byte that differed from the magic.
        first: u8,
    },
    /// A length prefix larger than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A frame type byte this version does not know.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A text field that is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// A frame body that does not match its type's layout.
    #[error("malformed {frame} frame: {problem}")]
    Malformed {
        /// The frame type's name.
        frame: &'static str,
        /// What was wrong.
        problem: &'static str,
    },
    /// Input after an earlier error; framing is lost for good.
    #[error("the stream already failed to decode")]
    AlreadyFailed,
    /// An encrypted record did not open: it was tampered with, replayed, reordered or
    /// cut, or does not belong to this connection.
    #[error("an encrypted record failed to open (tampered with, replayed, reordered or cut)")]
    DecryptFailed,
    /// A frame arrived in the clear on a connection that encrypts: a downgrade, or a
    /// frame injected on the way.
    #[error("a frame (type 0x{type_byte:02x}) arrived unencrypted on an encrypted connection")]
    Unencrypted {
        /// Its type byte.
        type_byte: u8,
    },
}

impl DecodeError {
    /// The wire code that reports this error to the other side.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::BadMagic { .. } => ErrorCode::BadMagic,
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnknownFrameType(_) => ErrorCode::UnknownFrameType,
            DecodeError::InvalidUtf8 { .. } => ErrorCode::InvalidUtf8,
            DecodeError::Malformed { .. } | DecodeError::AlreadyFailed => ErrorCode::MalformedFrame,
            DecodeError::DecryptFailed => ErrorCode::DecryptFailed,
            DecodeError::Unencrypted { .. } => ErrorCode::EncryptionRequired,
        }
    }
}

/// Why a local command (send, broadcast, exit) was not accepted by a client or peer
/// machine. Nothing was queued when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The text is longer than the protocol allows.
    #[error("message is {len} bytes; the limit is {max} bytes")]
    MessageTooLong {
        /// Length of the rejected text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The user already said `exit`, so this side sends no more chat.
    #[error("you already said exit; you can still read but no longer send")]
    AlreadyExited,
    /// The connection is closed or closing.
    #[error("the connection is closed")]
    Closed,
    /// The outbound queue is full: the network is not taking bytes as fast as they
    /// are produced. Wait until earlier bytes are written, then try again.
    #[error("{pending} bytes are still waiting to be sent; try again when they are out")]
    QueueFull {
        /// Bytes queued or in flight.
        pending: usize,
    },
    /// The other side cannot do this (e.g. a plain-text peer and files).
    #[error("not possible here: {0}")]
    NotSupported(&'static str),
    /// The relay client would address a nonexistent client.
    #[error("{0} is not a client ID (use 0, 1, 2, ...)")]
    InvalidRecipient(ClientId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number() {
        for n in 0..=64u16 {
            assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
        }
    }

    #[test]
    fn known_codes_have_distinct_names() {
        let mut names: Vec<_> = (0..=33u16).map(|n| ErrorCode::from_u16(n).name()).collect();
        assert!(!names.contains(&"unknown-code"));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 34);
    }
}
