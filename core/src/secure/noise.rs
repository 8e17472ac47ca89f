//! The Noise handshake, as p2pchat uses it: `XX` (each side proves its long-term key
//! to the other, and learns the other's) or `XXpsk3` (the same, and both must know
//! the relay's password), over X25519, ChaCha20-Poly1305 and BLAKE2s, by the `snow`
//! crate.
//!
//! Each handshake gets its own seed from the machine's [`Entropy`]; the resolver
//! below hands `snow` a generator made from it instead of the operating system's, so
//! the core stays deterministic.

use core::fmt;

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use super::channel::SecureChannel;
use super::keys::{Identity, PublicKey, SeededRandom, derive};

/// Longest Noise message (handshake or transport), by the specification.
pub(crate) const MAX_NOISE_MESSAGE: usize = 65_535;

/// Bound into every handshake, so that a p2pchat handshake cannot be mistaken for
/// another protocol's, nor for another version's.
pub(crate) const PROLOGUE: &[u8] = b"p2pchat v2";

/// Which handshake a `Handshake` frame belongs to (its first body byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `Noise_XX_25519_ChaChaPoly_BLAKE2s`.
    Xx,
    /// `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s`: a relay with a password.
    XxPsk3,
}

impl Pattern {
    /// The number on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            Pattern::Xx => 1,
            Pattern::XxPsk3 => 2,
        }
    }

    /// The pattern for a number read off the wire.
    pub fn from_u8(n: u8) -> Option<Pattern> {
        match n {
            1 => Some(Pattern::Xx),
            2 => Some(Pattern::XxPsk3),
            _ => None,
        }
    }

    fn params(self) -> &'static str {
        match self {
            Pattern::Xx => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            Pattern::XxPsk3 => "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s",
        }
    }
}

/// The pre-shared key a relay password stands for. Both sides derive it the same way;
/// a wrong password makes the handshake fail, and the password itself never travels.
pub fn password_key(password: &str) -> [u8; 32] {
    derive(b"p2pchat relay password v1", &[password.as_bytes()])
}

/// `snow`'s default primitives, with randomness from a seed and the cipher from
/// `ring` (faster; see `core/Cargo.toml`).
struct SeededResolver {
    seed: [u8; 32],
}

struct Rng(SeededRandom);

impl Random for Rng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(Rng(SeededRandom::new(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver.resolve_cipher(choice)
    }
}

/// Why a handshake could not go on, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandshakeError(pub(crate) String);

/// One side of a Noise handshake in progress.
pub(crate) struct NoiseHandshake {
    state: Box<snow::HandshakeState>,
    pattern: Pattern,
}

impl fmt::Debug for NoiseHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoiseHandshake({:?})", self.pattern)
    }
}

impl NoiseHandshake {
    /// Starts a handshake. `prologue` is bound into it: both sides must pass the same
    /// bytes (the connecting side's `Hello`), so that a `Hello` changed on its way
    /// fails the handshake.
    pub(crate) fn new(
        initiator: bool,
        pattern: Pattern,
        identity: &Identity,
        psk: Option<&[u8; 32]>,
        prologue: &[u8],
        seed: [u8; 32],
    ) -> Result<Self, HandshakeError> {
        let build = || -> Result<snow::HandshakeState, snow::Error> {
            let params: NoiseParams = pattern.params().parse()?;
            let resolver = Box::new(SeededResolver { seed });
            let mut full_prologue = PROLOGUE.to_vec();
            full_prologue.extend_from_slice(prologue);
            let mut builder = snow::Builder::with_resolver(params, resolver)
                .local_private_key(identity.secret())?
                .prologue(&full_prologue)?;
            if let Some(psk) = psk {
                builder = builder.psk(3, psk)?;
            }
            if initiator {
                builder.build_initiator()
            } else {
                builder.build_responder()
            }
        };
        build()
            .map(|state| NoiseHandshake {
                state: Box::new(state),
                pattern,
            })
            .map_err(|e| HandshakeError(format!("cannot start the handshake: {e}")))
    }

    /// Which pattern this is.
    pub(crate) fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Whether it is this side's turn to write.
    pub(crate) fn my_turn(&self) -> bool {
        self.state.is_my_turn()
    }

    /// The next handshake message, carrying `payload`.
    pub(crate) fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut out = vec![0u8; MAX_NOISE_MESSAGE];
        let n = self
            .state
            .write_message(payload, &mut out)
            .map_err(|e| HandshakeError(format!("cannot write a handshake message: {e}")))?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads the other side's handshake message; returns its payload. Fails on
    /// anything tampered with, truncated or out of turn, and on a wrong password.
    pub(crate) fn read(&mut self, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if self.state.is_my_turn() {
            return Err(HandshakeError(
                "a handshake message arrived out of turn".into(),
            ));
        }
        let mut payload = vec![0u8; message.len()];
        let n = self.state.read_message(message, &mut payload).map_err(|_| {
            HandshakeError(
                "a handshake message failed to verify (tampered with, truncated, or a wrong password)"
                    .into(),
            )
        })?;
        payload.truncate(n);
        Ok(payload)
    }

    /// Whether both sides have said all they had to.
    pub(crate) fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The other side's long-term key, once its message carried it.
    pub(crate) fn remote_key(&self) -> Option<PublicKey> {
        let bytes: [u8; 32] = self.state.get_remote_static()?.try_into().ok()?;
        Some(PublicKey(bytes))
    }

    /// The encrypted channel the finished handshake keyed.
    pub(crate) fn into_channel(self) -> Result<SecureChannel, HandshakeError> {
        self.state
            .into_transport_mode()
            .map(SecureChannel::new)
            .map_err(|e| HandshakeError(format!("the handshake did not finish: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(
        pattern: Pattern,
        psk_a: Option<[u8; 32]>,
        psk_b: Option<[u8; 32]>,
    ) -> (NoiseHandshake, NoiseHandshake) {
        let a = Identity::from_secret([1; 32]);
        let b = Identity::from_secret([2; 32]);
        (
            NoiseHandshake::new(true, pattern, &a, psk_a.as_ref(), b"hello", [3; 32]).unwrap(),
            NoiseHandshake::new(false, pattern, &b, psk_b.as_ref(), b"hello", [4; 32]).unwrap(),
        )
    }

    /// Runs XX to the end; returns the two channels or the first error.
    fn run(
        mut i: NoiseHandshake,
        mut r: NoiseHandshake,
        tamper: Option<usize>,
    ) -> Result<(SecureChannel, SecureChannel), HandshakeError> {
        let mut turn = 0;
        while !(i.is_finished() && r.is_finished()) {
            let (from, to) = if i.my_turn() {
                (&mut i, &mut r)
            } else {
                (&mut r, &mut i)
            };
            let mut msg = from.write(b"")?;
            if tamper == Some(turn)
                && let Some(b) = msg.last_mut()
            {
                *b ^= 1;
            }
            to.read(&msg)?;
            turn += 1;
        }
        Ok((i.into_channel()?, r.into_channel()?))
    }

    #[test]
    fn xx_keys_a_channel_and_each_side_learns_the_other() {
        let (i, r) = pair(Pattern::Xx, None, None);
        let (mut a, mut b) = run(i, r, None).unwrap();
        let mut records = Vec::new();
        a.seal(b"secret words", &mut records);
        let mut plain = Vec::new();
        let body = &records[5..];
        b.open(body, &mut plain).unwrap();
        assert_eq!(plain, b"secret words");
    }

    #[test]
    fn every_tampered_handshake_message_fails() {
        for turn in 0..3 {
            let (i, r) = pair(Pattern::Xx, None, None);
            assert!(run(i, r, Some(turn)).is_err(), "turn {turn}");
        }
    }

    #[test]
    fn a_wrong_password_fails_the_psk_handshake() {
        let right = password_key("sesame");
        let (i, r) = pair(Pattern::XxPsk3, Some(right), Some(right));
        assert!(run(i, r, None).is_ok());
        let (i, r) = pair(Pattern::XxPsk3, Some(password_key("open")), Some(right));
        assert!(run(i, r, None).is_err());
    }

    #[test]
    fn the_same_seeds_give_the_same_bytes() {
        let (mut i1, _) = pair(Pattern::Xx, None, None);
        let (mut i2, _) = pair(Pattern::Xx, None, None);
        assert_eq!(i1.write(b"").unwrap(), i2.write(b"").unwrap());
    }
}
