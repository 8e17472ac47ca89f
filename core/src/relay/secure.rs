//! The relay's side of the secure channel: it answers each client's Noise handshake
//! (`XX`, or `XXpsk3` when it has a password), admits the client only once the
//! handshake proved its key (and the password), and from then on opens the client's
//! records and seals what it sends.
//!
//! A client that does not offer to encrypt is refused with a reason unless the relay
//! runs with `--insecure`; a password cannot be checked without the handshake, so a
//! relay with one refuses such clients, plain-text ones included.

use super::{ConnState, RelayServer};
use crate::decode::FrameDecoder;
use crate::error::{DecodeError, ErrorCode};
use crate::frame::{Frame, Hello};
use crate::handshake::CAP_NOISE;
use crate::id::ConnId;
use crate::secure::{NoiseHandshake, Pattern, SecureChannel, hello_bytes, password_key};
use crate::time::Timestamp;

/// Frame types a client may send in the clear once its handshake has begun: the
/// handshake itself and a goodbye.
pub(super) const CLEAR_WHILE_SECURE: [u8; 2] = [0x50, 0x34];

/// Where a connection's secure channel is.
#[derive(Debug)]
pub(super) enum ConnSecure {
    /// None (not begun, or a client admitted in the clear).
    None,
    /// The client's `Hello` offered to encrypt; its first handshake message is next.
    AwaitingHandshake(Hello),
    /// We answered; the client's last handshake message is next.
    Handshake {
        handshake: NoiseHandshake,
        hello: Hello,
    },
    /// Records flow.
    Channel(SecureChannel),
}

impl ConnSecure {
    /// The channel, once it exists.
    pub(super) fn channel(&mut self) -> Option<&mut SecureChannel> {
        match self {
            ConnSecure::Channel(channel) => Some(channel),
            _ => None,
        }
    }
}

impl RelayServer {
    /// Whether the connection's handshake has begun or its channel exists (so frames
    /// in the clear are refused).
    pub(super) fn is_secure(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| {
            !matches!(
                c.secure,
                ConnSecure::None | ConnSecure::AwaitingHandshake(_)
            )
        })
    }

    /// A client's `Hello` passed the usual checks: decides between the handshake, a
    /// refusal, and admission in the clear. Returns whether it dealt with the `Hello`
    /// (else the caller admits in the clear).
    pub(super) fn on_secure_hello(&mut self, conn: ConnId, hello: &Hello) -> bool {
        let offers = hello.capabilities & CAP_NOISE != 0 && self.security.identity.is_some();
        if offers {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.secure = ConnSecure::AwaitingHandshake(hello.clone());
            }
            return true;
        }
        if self.security.password.is_some() {
            let reason = "this relay requires a password: join with --password (it cannot be checked without encryption, so --insecure clients cannot join)";
            self.refuse(conn, ErrorCode::PasswordRequired, reason.into());
            return true;
        }
        if self.security.requires() {
            let reason = "this relay requires encryption: join without --insecure";
            self.refuse(conn, ErrorCode::EncryptionRequired, reason.into());
            return true;
        }
        false
    }

    /// A handshake message from a client: its first (we answer) or its last (the
    /// channel exists and the client is admitted).
    pub(super) fn on_handshake_frame(
        &mut self,
        conn: ConnId,
        pattern: u8,
        message: &[u8],
        now: Timestamp,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match std::mem::replace(&mut c.secure, ConnSecure::None) {
            ConnSecure::AwaitingHandshake(hello) => self.answer(conn, hello, pattern, message, now),
            ConnSecure::Handshake { handshake, hello } => {
                self.complete(conn, handshake, hello, pattern, message, now)
            }
            other => {
                c.secure = other;
                let detail = "a handshake message out of turn".to_owned();
                self.drop_pending(conn, ErrorCode::UnexpectedFrame, &detail);
            }
        }
    }

    /// The client's first message: checks its pattern against our password, answers.
    fn answer(&mut self, conn: ConnId, hello: Hello, pattern: u8, message: &[u8], _now: Timestamp) {
        let psk = self.security.password.as_deref().map(password_key);
        // The client picks the cipher; the password part must be ours.
        let Some(wanted) = Pattern::from_u8(pattern) else {
            let reason = format!(
                "unknown handshake pattern {pattern}: this relay speaks 1 to 4 (docs/PROTOCOL.md)"
            );
            self.refuse(conn, ErrorCode::HandshakeFailed, reason);
            return;
        };
        if wanted.password != psk.is_some() {
            let (code, reason) = if psk.is_some() {
                (
                    ErrorCode::PasswordRequired,
                    "this relay requires a password: join with --password",
                )
            } else {
                (
                    ErrorCode::HandshakeFailed,
                    "this relay has no password: join without --password",
                )
            };
            self.refuse(conn, code, reason.into());
            return;
        }
        let Some(identity) = self.security.identity.as_ref() else {
            return;
        };
        let seed = self.entropy.next_seed();
        let step = NoiseHandshake::new(
            false,
            wanted,
            identity,
            psk.as_ref(),
            &hello_bytes(&hello),
            seed,
        )
        .and_then(|mut handshake| {
            handshake.read(message)?;
            let reply = handshake.write(&[])?;
            Ok((handshake, reply))
        });
        match step {
            Ok((handshake, reply)) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.out.push_outer(&Frame::Handshake {
                        pattern,
                        message: reply,
                    });
                    // Whatever comes next (the welcome) waits for the channel.
                    c.out.hold_for_channel();
                    c.secure = ConnSecure::Handshake { handshake, hello };
                }
                self.mark_ready(conn);
            }
            Err(e) => {
                let reason = format!("the secure handshake failed: {}", e.0);
                self.refuse(conn, ErrorCode::HandshakeFailed, reason);
            }
        }
    }

    /// The client's last message: the channel exists, its key is proven, it is
    /// admitted (unless the relay filled up meanwhile).
    fn complete(
        &mut self,
        conn: ConnId,
        mut handshake: NoiseHandshake,
        hello: Hello,
        pattern: u8,
        message: &[u8],
        now: Timestamp,
    ) {
        let finished = handshake
            .follow(pattern)
            .and_then(|()| handshake.read(message));
        let finished = finished.and_then(|_| {
            let key = handshake.remote_key();
            Ok((key, handshake.into_channel()?))
        });
        let (key, channel) = match finished {
            Ok((Some(key), channel)) => (key, channel),
            Ok((None, _)) | Err(_) => {
                let (code, reason) = if self.security.password.is_some() {
                    (ErrorCode::WrongPassword, "wrong password")
                } else {
                    (
                        ErrorCode::HandshakeFailed,
                        "the secure handshake failed: the last message did not verify",
                    )
                };
                self.refuse(conn, code, reason.into());
                return;
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.secure = ConnSecure::Channel(channel);
            c.out.seal_from_now();
        }
        // The relay may have filled up, or begun to shut down, during the handshake.
        if let Some((code, reason)) = self.admission_refusal(conn, &hello) {
            self.refuse(conn, code, reason);
            return;
        }
        self.admit_hello(conn, hello, Some(key), now);
    }

    /// Opens a record of an encrypted connection and handles the frames it completes.
    pub(super) fn open_record(
        &mut self,
        conn: ConnId,
        record: &[u8],
        inner: &mut FrameDecoder,
        now: Timestamp,
    ) -> Result<bool, DecodeError> {
        // Taken for the call (`on_raw_frame` borrows `self`), given back at the end.
        let mut plain = std::mem::take(&mut self.plain);
        let opened = match self.conns.get_mut(&conn).map(|c| c.secure.channel()) {
            Some(Some(channel)) => channel
                .open(record, &mut plain)
                .map_err(|_| DecodeError::DecryptFailed),
            _ => Err(DecodeError::Malformed {
                frame: "Sealed",
                problem: "a record before the secure channel exists",
            }),
        };
        let (mut result, n) = match opened {
            Ok(n) => (Ok(true), n),
            Err(e) => (Err(e), 0),
        };
        if result.is_ok() {
            let mut bad_frame = None;
            let fed = inner.feed(plain.get(..n).unwrap_or_default(), |raw| {
                match self.on_raw_frame(conn, raw, now) {
                    Ok(go_on) => go_on,
                    Err(e) => {
                        bad_frame = Some(e);
                        false
                    }
                }
            });
            if let Some(e) = bad_frame.or(fed.err()) {
                inner.fail();
                result = Err(e);
            } else {
                result = Ok(self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| !matches!(c.state, ConnState::Closing)));
            }
        }
        self.plain = plain;
        result
    }
}
