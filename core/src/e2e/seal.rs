//! How one end-to-end message is sealed and opened.
//!
//! A sealed payload is `[clear header][envelope header][ciphertext + 16-byte tag]`:
//!
//! - the clear header exists only in file messages (see [`super::FileHeader`]);
//! - the envelope header says which key opens the message: `Pair` (the key the
//!   sender and recipient share), `PairOpen` (the same, with what the recipient needs
//!   to compute that key: the sender's ephemeral and static public keys), or `Group`
//!   (the sender's group key, for messages to everyone);
//! - the ciphertext is ChaCha20-Poly1305 (or, when the mode byte has
//!   [`mode::AES_GCM`] set, AES-256-GCM under a key derived from that key: the sender
//!   picks, as it picks its channel's cipher) under that key, with the sender's
//!   sequence number as the nonce, and as associated data the payload kind, the recipient
//!   field, the sequence number and every header byte. So a relay that changes any of
//!   them, replays a message or sends one to someone else only gets it rejected.
//!
//! The pair key is Noise's one-way `X` pattern worked out by hand: the recipient's
//! static key is known (the relay announced it), the sender contributes one ephemeral
//! key per connection, and `key = H(DH(e, R), DH(S, R), e, S, R)`. The `DH(S, R)` term
//! proves the sender holds the static key it names; the `DH(e, R)` term makes the key
//! new for every connection of the sender, so sequence numbers (which restart at 1
//! with each connection) never repeat under one key.

use snow::params::CipherChoice;
use snow::resolvers::{CryptoResolver, RingResolver};
use snow::types::Cipher;

use crate::frame::PayloadKind;
use crate::id::ClientId;
use crate::secure::{PublicKey, RecordCipher, derive};

/// Bytes the authentication tag adds to every sealed message.
pub(crate) const TAG_LEN: usize = 16;

/// Bytes a `PairOpen` header adds (mode, ephemeral key, static key).
pub(crate) const PAIR_OPEN_LEN: usize = 1 + 32 + 32;

/// The envelope's first byte: which key opens the message.
pub(crate) mod mode {
    /// Sealed with the pair key the recipient already holds.
    pub const PAIR: u8 = 1;
    /// Sealed with a pair key the recipient computes from the keys that follow.
    pub const PAIR_OPEN: u8 = 2;
    /// Sealed with the sender's group key.
    pub const GROUP: u8 = 3;
    /// Added to any of the above: the ciphertext is AES-256-GCM, not ChaCha20-Poly1305.
    pub const AES_GCM: u8 = 0x10;
}

/// A 32-byte symmetric key.
pub(crate) type Key = [u8; 32];

/// Where a message is going: what the associated data binds it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// The payload kind.
    pub(crate) kind: PayloadKind,
    /// The recipient field of the `Chat` / `Deliver` (an ID, or broadcast).
    pub(crate) to: ClientId,
    /// The sender's sequence number: the nonce.
    pub(crate) seq: u64,
}

/// An envelope header, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// Open with the pair key already held.
    Pair,
    /// Compute the pair key from these first.
    PairOpen {
        /// The sender's ephemeral key for this connection.
        ephemeral: PublicKey,
        /// The sender's static key.
        sender: PublicKey,
    },
    /// Open with the sender's group key.
    Group,
}

impl Envelope {
    /// Appends the envelope header of a message sealed with `cipher`.
    pub(crate) fn encode_into(&self, cipher: RecordCipher, out: &mut Vec<u8>) {
        let flag = match cipher {
            RecordCipher::ChaChaPoly => 0,
            RecordCipher::AesGcm => mode::AES_GCM,
        };
        match self {
            Envelope::Pair => out.push(mode::PAIR | flag),
            Envelope::PairOpen { ephemeral, sender } => {
                out.push(mode::PAIR_OPEN | flag);
                out.extend_from_slice(&ephemeral.0);
                out.extend_from_slice(&sender.0);
            }
            Envelope::Group => out.push(mode::GROUP | flag),
        }
    }

    /// Reads the envelope header at the start of `bytes`; returns it, the cipher it
    /// names and how many bytes it took.
    pub(crate) fn parse(bytes: &[u8]) -> Option<(Envelope, RecordCipher, usize)> {
        let first = *bytes.first()?;
        let cipher = if first & mode::AES_GCM != 0 {
            RecordCipher::AesGcm
        } else {
            RecordCipher::ChaChaPoly
        };
        match first & !mode::AES_GCM {
            mode::PAIR => Some((Envelope::Pair, cipher, 1)),
            mode::GROUP => Some((Envelope::Group, cipher, 1)),
            mode::PAIR_OPEN => {
                let ephemeral = PublicKey(bytes.get(1..33)?.try_into().ok()?);
                let sender = PublicKey(bytes.get(33..65)?.try_into().ok()?);
                Some((
                    Envelope::PairOpen { ephemeral, sender },
                    cipher,
                    PAIR_OPEN_LEN,
                ))
            }
            _ => None,
        }
    }
}

/// X25519 of our `secret` and their `public`; `None` when the result is all zeros
/// (their key is a low-order point: no key at all).
pub(crate) fn dh(secret: &[u8; 32], public: &PublicKey) -> Option<[u8; 32]> {
    let shared = crate::secure::x25519(secret, &public.0);
    (shared != [0; 32]).then_some(shared)
}

/// The public key of an X25519 secret.
pub(crate) fn public_of(secret: &[u8; 32]) -> PublicKey {
    PublicKey(crate::secure::x25519_public_key(secret))
}

/// The pair key from the two Diffie-Hellman results and the three public keys.
pub(crate) fn pair_key(
    es: &[u8; 32],
    ss: &[u8; 32],
    ephemeral: &PublicKey,
    sender: &PublicKey,
    recipient: &PublicKey,
) -> Key {
    derive(
        b"p2pchat e2e pair v1",
        &[es, ss, &ephemeral.0, &sender.0, &recipient.0],
    )
}

/// `choice` under `key`, as Noise runs it (the nonce is a 64-bit counter: our sequence
/// number). Taken from snow's `ring` resolver, the one the channel uses (see
/// `core/Cargo.toml` for why `ring`). AES-256-GCM runs under a key derived from
/// `key`, so that no key serves two algorithms.
fn cipher(key: &Key, choice: RecordCipher) -> Option<Box<dyn Cipher>> {
    let (choice, key) = match choice {
        RecordCipher::ChaChaPoly => (CipherChoice::ChaChaPoly, *key),
        RecordCipher::AesGcm => (
            CipherChoice::AESGCM,
            derive(b"p2pchat e2e aes-256-gcm v1", &[key]),
        ),
    };
    let mut cipher = RingResolver.resolve_cipher(&choice)?;
    cipher.set(&key);
    Some(cipher)
}

/// Calls `f` with the associated data of a message at `place` behind `header`:
/// label, kind, recipient, sequence number, header. Built on the stack when it fits
/// (this runs for every message).
fn with_associated_data<R>(place: Place, header: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    let kind = [place.kind.to_u8()];
    let to = place.to.0.to_be_bytes();
    let seq = place.seq.to_be_bytes();
    let parts: [&[u8]; 5] = [b"p2pchat e2e v1", &kind, &to, &seq, header];
    let mut buf = [0u8; 160];
    let mut len = 0;
    for part in parts {
        match buf.get_mut(len..len + part.len()) {
            Some(dest) => dest.copy_from_slice(part),
            None => return f(&parts.concat()),
        }
        len += part.len();
    }
    f(buf.get(..len).unwrap_or_default())
}

/// A key, with its ciphers set up once: what seals and opens messages.
pub(crate) struct SealKey {
    key: Key,
    chacha: Option<Box<dyn Cipher>>,
    aes: Option<Box<dyn Cipher>>,
}

impl core::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub(crate) fn new(key: Key) -> SealKey {
        SealKey {
            key,
            chacha: cipher(&key, RecordCipher::ChaChaPoly),
            aes: cipher(&key, RecordCipher::AesGcm),
        }
    }

    fn cipher(&self, choice: RecordCipher) -> Option<&dyn Cipher> {
        match choice {
            RecordCipher::ChaChaPoly => self.chacha.as_deref(),
            RecordCipher::AesGcm => self.aes.as_deref(),
        }
    }

    /// The key's bytes (to hand a group key to another client).
    pub(crate) fn bytes(&self) -> &Key {
        &self.key
    }

    /// Appends `plain`, sealed with `choice`, to `out`; the bytes of `out` from
    /// `header_start` on are the header it is bound to.
    pub(crate) fn seal_into(
        &self,
        choice: RecordCipher,
        place: Place,
        plain: &[u8],
        out: &mut Vec<u8>,
        header_start: usize,
    ) {
        let start = out.len();
        out.resize(start + plain.len() + TAG_LEN, 0);
        let (before, dest) = out.split_at_mut(start);
        let header = before.get(header_start..).unwrap_or_default();
        let written = match self.cipher(choice) {
            Some(cipher) => with_associated_data(place, header, |ad| {
                cipher.encrypt(place.seq, ad, plain, dest)
            }),
            None => 0,
        };
        // Cannot be short; if it were, the recipient would reject what is left.
        out.truncate(start + written);
    }

    /// Opens `sealed` (ciphertext and tag, by `choice`), bound to `header`; `None` when
    /// it was not sealed so (wrong key, changed byte, another place).
    pub(crate) fn open(
        &self,
        choice: RecordCipher,
        place: Place,
        header: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        sealed.len().checked_sub(TAG_LEN)?;
        // Room for the tag too: `ring` opens in place, and with less room snow copies
        // the whole message into a second buffer first.
        let mut plain = vec![0; sealed.len()];
        let cipher = self.cipher(choice)?;
        let n = with_associated_data(place, header, |ad| {
            cipher.decrypt(place.seq, ad, sealed, &mut plain)
        })
        .ok()?;
        plain.truncate(n);
        Some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: Place = Place {
        kind: PayloadKind::Sealed,
        to: ClientId(4),
        seq: 9,
    };

    const CIPHERS: [RecordCipher; 2] = [RecordCipher::ChaChaPoly, RecordCipher::AesGcm];

    #[test]
    fn a_message_opens_only_where_it_was_sealed() {
        for cipher in CIPHERS {
            opens_only_where_it_was_sealed(cipher);
        }
    }

    fn opens_only_where_it_was_sealed(cipher: RecordCipher) {
        let open = |key: &Key, place: Place, header: &[u8], sealed: &[u8]| {
            SealKey::new(*key).open(cipher, place, header, sealed)
        };
        let key = [3; 32];
        let mut body = vec![mode::PAIR];
        SealKey::new(key).seal_into(cipher, PLACE, b"meet at noon", &mut body, 0);
        let (header, sealed) = body.split_at(1);
        assert_eq!(
            open(&key, PLACE, header, sealed).as_deref(),
            Some(&b"meet at noon"[..])
        );
        // A header longer than the stack buffer takes the other road.
        let long = vec![7u8; 300];
        let mut body = long.clone();
        SealKey::new(key).seal_into(cipher, PLACE, b"x", &mut body, 0);
        assert_eq!(
            open(&key, PLACE, &long, &body[300..]).as_deref(),
            Some(&b"x"[..])
        );
        for other in [
            Place { seq: 10, ..PLACE },
            Place {
                to: ClientId::BROADCAST,
                ..PLACE
            },
            Place {
                kind: PayloadKind::Keys,
                ..PLACE
            },
        ] {
            assert_eq!(open(&key, other, header, sealed), None, "{other:?}");
        }
        assert_eq!(open(&[4; 32], PLACE, header, sealed), None, "another key");
        assert_eq!(open(&key, PLACE, &[mode::GROUP], sealed), None, "header");
        let mut flipped = sealed.to_vec();
        flipped[0] ^= 1;
        assert_eq!(open(&key, PLACE, header, &flipped), None, "a changed byte");
        assert_eq!(open(&key, PLACE, header, &sealed[..10]), None, "cut short");
        let other = CIPHERS.into_iter().find(|c| *c != cipher).unwrap();
        assert_eq!(
            SealKey::new(key).open(other, PLACE, header, sealed),
            None,
            "the other cipher"
        );
    }

    #[test]
    fn both_ends_compute_the_same_pair_key_and_nobody_else_does() {
        let (e, s, r, m) = ([1; 32], [2; 32], [3; 32], [4; 32]);
        let (e_pub, s_pub, r_pub) = (public_of(&e), public_of(&s), public_of(&r));
        let ours = pair_key(
            &dh(&e, &r_pub).unwrap(),
            &dh(&s, &r_pub).unwrap(),
            &e_pub,
            &s_pub,
            &r_pub,
        );
        let theirs = pair_key(
            &dh(&r, &e_pub).unwrap(),
            &dh(&r, &s_pub).unwrap(),
            &e_pub,
            &s_pub,
            &r_pub,
        );
        assert_eq!(ours, theirs);
        // Someone who claims the sender's static key without holding it.
        let forged = pair_key(
            &dh(&r, &e_pub).unwrap(),
            &dh(&r, &public_of(&m)).unwrap(),
            &e_pub,
            &s_pub,
            &r_pub,
        );
        assert_ne!(ours, forged);
        assert_eq!(dh(&e, &PublicKey([0; 32])), None, "a low-order key");
    }

    #[test]
    fn envelope_headers_round_trip_and_short_ones_are_refused() {
        let open_header = Envelope::PairOpen {
            ephemeral: PublicKey([5; 32]),
            sender: PublicKey([6; 32]),
        };
        for env in [Envelope::Pair, Envelope::Group, open_header] {
            for cipher in CIPHERS {
                let mut b = Vec::new();
                env.encode_into(cipher, &mut b);
                assert_eq!(Envelope::parse(&b), Some((env, cipher, b.len())));
            }
        }
        let mut b = Vec::new();
        Envelope::Group.encode_into(RecordCipher::AesGcm, &mut b);
        assert_eq!(b, [mode::GROUP | mode::AES_GCM]);
        assert_eq!(Envelope::parse(&[mode::PAIR_OPEN, 1, 2]), None);
        assert_eq!(Envelope::parse(&[9]), None);
        assert_eq!(Envelope::parse(&[mode::AES_GCM]), None);
        assert_eq!(Envelope::parse(&[]), None);
    }
}
