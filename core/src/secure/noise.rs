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
use super::cipher::RecordCipher;
use super::keys::{Identity, PublicKey, SeededRandom, derive};

/// Longest Noise message (handshake or transport), by the specification.
pub(crate) const MAX_NOISE_MESSAGE: usize = 65_535;

/// Bound into every handshake, so that a p2pchat handshake cannot be mistaken for
/// another protocol's, nor for another version's.
pub(crate) const PROLOGUE: &[u8] = b"p2pchat v2";

/// Which handshake a `Handshake` frame belongs to (its first body byte): `XX` or
/// `XXpsk3`, and the cipher (see [`RecordCipher`]).
///
/// | number | Noise protocol |
/// |---|---|
/// | 1 | `Noise_XX_25519_ChaChaPoly_BLAKE2s` |
/// | 2 | `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` (a relay with a password) |
/// | 3 | `Noise_XX_25519_AESGCM_BLAKE2s` |
/// | 4 | `Noise_XXpsk3_25519_AESGCM_BLAKE2s` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    /// `XXpsk3` (both sides know the relay's password) rather than `XX`.
    pub password: bool,
    /// The cipher of the handshake's encrypted parts and of every record after it.
    pub cipher: RecordCipher,
}

impl Pattern {
    /// The number on the wire.
    pub fn to_u8(self) -> u8 {
        let aes = u8::from(self.cipher == RecordCipher::AesGcm);
        1 + u8::from(self.password) + 2 * aes
    }

    /// The pattern for a number read off the wire.
    pub fn from_u8(n: u8) -> Option<Pattern> {
        let cipher = match n {
            1 | 2 => RecordCipher::ChaChaPoly,
            3 | 4 => RecordCipher::AesGcm,
            _ => return None,
        };
        Some(Pattern {
            password: n.is_multiple_of(2),
            cipher,
        })
    }

    fn params(self) -> String {
        let handshake = if self.password { "XXpsk3" } else { "XX" };
        format!(
            "Noise_{handshake}_25519_{}_BLAKE2s",
            self.cipher.noise_name()
        )
    }
}

/// The pre-shared key a relay password stands for. Both sides derive it the same way;
/// a wrong password makes the handshake fail, and the password itself never travels.
pub fn password_key(password: &str) -> [u8; 32] {
    derive(b"p2pchat relay password v1", &[password.as_bytes()])
}

/// `snow`'s default primitives, with randomness from a seed, the cipher from `ring`
/// (faster; see `core/Cargo.toml`) and X25519 by the faster route ([`super::x25519`]).
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
        match choice {
            DHChoice::Curve25519 => Some(Box::new(super::x25519::Dh25519::default())),
            _ => DefaultResolver.resolve_dh(choice),
        }
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
    stage: Stage,
    pattern: Pattern,
}

/// Where a handshake is.
enum Stage {
    /// A responder that has not seen the initiator's first message yet, so does not
    /// know the cipher: it is built when that message says ([`NoiseHandshake::follow`]).
    Waiting(Box<Responder>),
    /// Under way (or finished).
    Running(Box<snow::HandshakeState>),
}

/// What a waiting responder is built from.
struct Responder {
    identity: Identity,
    psk: Option<[u8; 32]>,
    prologue: Vec<u8>,
    seed: [u8; 32],
}

impl fmt::Debug for NoiseHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Stage::Waiting(_) => f.write_str("NoiseHandshake(waiting)"),
            Stage::Running(_) => write!(f, "NoiseHandshake({:?})", self.pattern),
        }
    }
}

/// Builds snow's state for one side of `pattern`.
fn build(
    initiator: bool,
    pattern: Pattern,
    identity: &Identity,
    psk: Option<&[u8; 32]>,
    prologue: &[u8],
    seed: [u8; 32],
) -> Result<Box<snow::HandshakeState>, HandshakeError> {
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
        .map(Box::new)
        .map_err(|e| HandshakeError(format!("cannot start the handshake: {e}")))
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
        let state = build(initiator, pattern, identity, psk, prologue, seed)?;
        Ok(NoiseHandshake {
            stage: Stage::Running(state),
            pattern,
        })
    }

    /// A responder whose cipher the initiator's first message will choose (see
    /// [`NoiseHandshake::follow`]); `psk` as for [`NoiseHandshake::new`].
    pub(crate) fn responder(
        identity: &Identity,
        psk: Option<&[u8; 32]>,
        prologue: &[u8],
        seed: [u8; 32],
    ) -> Self {
        NoiseHandshake {
            stage: Stage::Waiting(Box::new(Responder {
                identity: identity.clone(),
                psk: psk.copied(),
                prologue: prologue.to_vec(),
                seed,
            })),
            pattern: Pattern {
                password: psk.is_some(),
                cipher: RecordCipher::default(),
            },
        }
    }

    /// Takes the pattern number of a `Handshake` frame: a waiting responder starts
    /// with that pattern's cipher; a handshake under way checks that the number has
    /// not changed. Fails on an unknown number and on one whose password part does
    /// not match this side's.
    pub(crate) fn follow(&mut self, number: u8) -> Result<(), HandshakeError> {
        let Some(pattern) = Pattern::from_u8(number) else {
            return Err(HandshakeError(format!(
                "the other side proposed handshake pattern {number}, which this version does not know"
            )));
        };
        match &self.stage {
            Stage::Running(_) if pattern == self.pattern => Ok(()),
            Stage::Running(_) => Err(HandshakeError(format!(
                "the handshake's pattern changed from {} to {number} on the way",
                self.pattern.to_u8()
            ))),
            Stage::Waiting(_) if pattern.password != self.pattern.password => {
                Err(HandshakeError(if self.pattern.password {
                    "a password is required here and the other side gave none".into()
                } else {
                    "the other side offers a password, and none is asked for here".into()
                }))
            }
            Stage::Waiting(r) => {
                let state = build(
                    false,
                    pattern,
                    &r.identity,
                    r.psk.as_ref(),
                    &r.prologue,
                    r.seed,
                )?;
                self.stage = Stage::Running(state);
                self.pattern = pattern;
                Ok(())
            }
        }
    }

    /// Which pattern this is (for a waiting responder: the cipher is not known yet).
    pub(crate) fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// The state, once under way; the error for a responder still waiting.
    fn running(&mut self) -> Result<&mut snow::HandshakeState, HandshakeError> {
        match &mut self.stage {
            Stage::Running(state) => Ok(state),
            Stage::Waiting(_) => Err(HandshakeError(
                "the handshake has not started: no pattern was proposed".into(),
            )),
        }
    }

    /// Whether it is this side's turn to write (never for a waiting responder).
    pub(crate) fn my_turn(&self) -> bool {
        matches!(&self.stage, Stage::Running(state) if state.is_my_turn())
    }

    /// The next handshake message, carrying `payload`.
    pub(crate) fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut out = vec![0u8; MAX_NOISE_MESSAGE];
        let n = self
            .running()?
            .write_message(payload, &mut out)
            .map_err(|e| HandshakeError(format!("cannot write a handshake message: {e}")))?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads the other side's handshake message; returns its payload. Fails on
    /// anything tampered with, truncated or out of turn, and on a wrong password.
    pub(crate) fn read(&mut self, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let state = self.running()?;
        if state.is_my_turn() {
            return Err(HandshakeError(
                "a handshake message arrived out of turn".into(),
            ));
        }
        let mut payload = vec![0u8; message.len()];
        let n = state.read_message(message, &mut payload).map_err(|_| {
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
        matches!(&self.stage, Stage::Running(state) if state.is_handshake_finished())
    }

    /// The other side's long-term key, once its message carried it.
    pub(crate) fn remote_key(&self) -> Option<PublicKey> {
        let Stage::Running(state) = &self.stage else {
            return None;
        };
        let bytes: [u8; 32] = state.get_remote_static()?.try_into().ok()?;
        Some(PublicKey(bytes))
    }

    /// The encrypted channel the finished handshake keyed.
    pub(crate) fn into_channel(self) -> Result<SecureChannel, HandshakeError> {
        let cipher = self.pattern.cipher;
        let Stage::Running(state) = self.stage else {
            return Err(HandshakeError(
                "the handshake did not finish: it never started".into(),
            ));
        };
        (*state)
            .into_transport_mode()
            .map(|transport| SecureChannel::new(transport, cipher))
            .map_err(|e| HandshakeError(format!("the handshake did not finish: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XX: Pattern = Pattern {
        password: false,
        cipher: RecordCipher::ChaChaPoly,
    };
    const XX_PSK3: Pattern = Pattern {
        password: true,
        cipher: RecordCipher::ChaChaPoly,
    };
    const XX_AES: Pattern = Pattern {
        password: false,
        cipher: RecordCipher::AesGcm,
    };

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
            to.follow(from.pattern().to_u8())?;
            to.read(&msg)?;
            turn += 1;
        }
        Ok((i.into_channel()?, r.into_channel()?))
    }

    #[test]
    fn a_short_record_after_a_long_one_opens_to_its_own_bytes_only() {
        // The scratch buffer is never cleared: what a longer record left in it must
        // not show through a shorter one.
        let (i, r) = pair(XX, None, None);
        let (mut a, mut b) = run(i, r, None).unwrap();
        let long = vec![7u8; 40_000];
        let mut scratch = Vec::new();
        for plain in [&long[..], b"short", b"x"] {
            let mut records = Vec::new();
            a.seal(plain, &mut records);
            let n = b.open(&records[5..], &mut scratch).unwrap();
            assert_eq!(&scratch[..n], plain);
        }
        assert!(
            scratch.len() >= long.len(),
            "the scratch buffer keeps its size"
        );
    }

    #[test]
    fn xx_keys_a_channel_and_each_side_learns_the_other() {
        let (i, r) = pair(XX, None, None);
        let (mut a, mut b) = run(i, r, None).unwrap();
        let mut records = Vec::new();
        a.seal(b"secret words", &mut records);
        let mut plain = Vec::new();
        let body = &records[5..];
        let n = b.open(body, &mut plain).unwrap();
        assert_eq!(&plain[..n], b"secret words");
    }

    #[test]
    fn every_tampered_handshake_message_fails() {
        for turn in 0..3 {
            let (i, r) = pair(XX, None, None);
            assert!(run(i, r, Some(turn)).is_err(), "turn {turn}");
        }
    }

    #[test]
    fn a_wrong_password_fails_the_psk_handshake() {
        let right = password_key("sesame");
        let (i, r) = pair(XX_PSK3, Some(right), Some(right));
        assert!(run(i, r, None).is_ok());
        let (i, r) = pair(XX_PSK3, Some(password_key("open")), Some(right));
        assert!(run(i, r, None).is_err());
    }

    #[test]
    fn the_same_seeds_give_the_same_bytes() {
        let (mut i1, _) = pair(XX, None, None);
        let (mut i2, _) = pair(XX, None, None);
        assert_eq!(i1.write(b"").unwrap(), i2.write(b"").unwrap());
    }

    #[test]
    fn pattern_numbers_are_the_four_documented() {
        let numbers: Vec<u8> = [
            XX,
            XX_PSK3,
            XX_AES,
            Pattern {
                password: true,
                ..XX_AES
            },
        ]
        .iter()
        .map(|p| p.to_u8())
        .collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
        for n in 1..=4 {
            assert_eq!(Pattern::from_u8(n).map(Pattern::to_u8), Some(n));
        }
        assert_eq!(Pattern::from_u8(0), None);
        assert_eq!(Pattern::from_u8(5), None);
        assert_eq!(XX_AES.params(), "Noise_XX_25519_AESGCM_BLAKE2s");
    }

    #[test]
    fn a_waiting_responder_follows_the_initiators_cipher() {
        for pattern in [XX, XX_AES] {
            let a = Identity::from_secret([1; 32]);
            let b = Identity::from_secret([2; 32]);
            let i = NoiseHandshake::new(true, pattern, &a, None, b"hello", [3; 32]).unwrap();
            let r = NoiseHandshake::responder(&b, None, b"hello", [4; 32]);
            assert!(!r.my_turn() && !r.is_finished() && r.remote_key().is_none());
            let (mut a, mut b) = run(i, r, None).unwrap();
            let mut records = Vec::new();
            a.seal(b"secret words", &mut records);
            let mut plain = Vec::new();
            let n = b.open(&records[5..], &mut plain).unwrap();
            assert_eq!(&plain[..n], b"secret words");
        }
    }

    #[test]
    fn the_ciphers_do_not_open_each_others_records() {
        let (i, r) = pair(XX_AES, None, None);
        let (mut aes, _) = run(i, r, None).unwrap();
        let (i, r) = pair(XX, None, None);
        let (_, mut chacha) = run(i, r, None).unwrap();
        let mut records = Vec::new();
        aes.seal(b"secret words", &mut records);
        assert!(chacha.open(&records[5..], &mut Vec::new()).is_err());
    }

    #[test]
    fn a_pattern_number_changed_on_its_way_fails_the_handshake() {
        let a = Identity::from_secret([1; 32]);
        let b = Identity::from_secret([2; 32]);
        // The initiator proposed AES-GCM; the responder is told ChaCha20-Poly1305.
        let mut i = NoiseHandshake::new(true, XX_AES, &a, None, b"hello", [3; 32]).unwrap();
        let mut r = NoiseHandshake::responder(&b, None, b"hello", [4; 32]);
        let first = i.write(b"").unwrap();
        r.follow(XX.to_u8()).unwrap();
        r.read(&first).unwrap(); // message 1 is in the clear: nothing to check yet
        let second = r.write(b"").unwrap();
        i.follow(r.pattern().to_u8()).unwrap_err();
        assert!(
            i.read(&second).is_err(),
            "the names differ, so the hashes do"
        );
    }

    #[test]
    fn follow_refuses_unknown_numbers_the_wrong_password_part_and_a_change() {
        let b = Identity::from_secret([2; 32]);
        let mut r = NoiseHandshake::responder(&b, None, b"hello", [4; 32]);
        assert!(r.follow(9).unwrap_err().0.contains("pattern 9"));
        assert!(
            r.follow(XX_PSK3.to_u8())
                .unwrap_err()
                .0
                .contains("password")
        );
        let mut r = NoiseHandshake::responder(&b, Some(&[5; 32]), b"hello", [4; 32]);
        assert!(r.follow(XX.to_u8()).unwrap_err().0.contains("password"));
        assert!(r.read(b"too early").is_err());
        r.follow(XX_PSK3.to_u8()).unwrap();
        assert!(r.follow(4).unwrap_err().0.contains("changed"));
        assert!(r.follow(XX_PSK3.to_u8()).is_ok());
    }
}
