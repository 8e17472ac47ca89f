//! Who is who: an installation's long-term key pair, the fingerprint people compare,
//! and the randomness each handshake needs.
//!
//! The core draws no randomness of its own: the driver hands in a seed (from the
//! operating system in real use, from the scenario's seed in the simulator), and every
//! ephemeral key is derived from it. The same seed gives the same bytes on the wire,
//! which is what lets the simulator replay an encrypted run exactly.

use core::fmt;

use blake2::{Blake2s256, Digest};
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

/// An X25519 public key: who a peer, a client or a relay is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The fingerprint people read and compare: 128 bits of a hash of the key, as
    /// eight groups of four hexadecimal digits, e.g. `3f2a-91c0-...`.
    pub fn fingerprint(&self) -> String {
        let digest = Blake2s256::new()
            .chain_update(b"p2pchat fingerprint v1")
            .chain_update(self.0)
            .finalize();
        let hex: Vec<String> = digest
            .chunks(2)
            .take(8)
            .map(|pair| pair.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        hex.join("-")
    }

    /// Whether `fingerprint`, as a person typed it (any case, any separators), is
    /// this key's.
    pub fn matches(&self, fingerprint: &str) -> bool {
        let typed: String = fingerprint
            .chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let ours: String = self.fingerprint().chars().filter(|&c| c != '-').collect();
        !typed.is_empty() && typed == ours
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// An installation's long-term key pair. The secret never leaves the core's
/// handshakes; `Debug` shows only the public fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    secret: [u8; 32],
    public: PublicKey,
}

impl Identity {
    /// The identity whose X25519 secret is `secret` (32 random bytes; any value works,
    /// it is clamped as X25519 requires).
    pub fn from_secret(secret: [u8; 32]) -> Identity {
        let public = PublicKey(super::x25519::public_key(&secret));
        Identity { secret, public }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret half, for the handshakes.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public.fingerprint())
    }
}

/// A 32-byte hash of `parts` under a domain label: how keys and seeds are derived.
pub(crate) fn derive(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The randomness of one machine: a seed from the driver, and a counter, from which
/// each handshake gets seeds of its own.
#[derive(Clone)]
pub(crate) struct Entropy {
    seed: [u8; 32],
    next: u64,
}

impl Entropy {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        Entropy { seed, next: 0 }
    }

    /// A fresh 32-byte seed, different every call.
    pub(crate) fn next_seed(&mut self) -> [u8; 32] {
        let n = self.next;
        self.next += 1;
        derive(b"p2pchat entropy v1", &[&self.seed, &n.to_be_bytes()])
    }
}

impl fmt::Debug for Entropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entropy(#{})", self.next)
    }
}

/// A deterministic cryptographic random generator: the ChaCha20 keystream of a seed.
pub(crate) struct SeededRandom(ChaCha20);

impl SeededRandom {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        SeededRandom(ChaCha20::new(&seed.into(), &[0u8; 12].into()))
    }

    pub(crate) fn fill(&mut self, dest: &mut [u8]) {
        dest.fill(0);
        self.0.apply_keystream(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_follows_from_the_secret_and_has_a_stable_fingerprint() {
        let a = Identity::from_secret([7; 32]);
        let b = Identity::from_secret([7; 32]);
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), Identity::from_secret([8; 32]).public());
        let fp = a.public().fingerprint();
        assert_eq!(fp.len(), 8 * 4 + 7, "{fp}");
        assert!(a.public().matches(&fp.to_uppercase().replace('-', " ")));
        assert!(!a.public().matches("0000"));
        assert!(
            !format!("{a:?}").contains("0707"),
            "the secret is never printed"
        );
    }

    #[test]
    fn entropy_never_repeats_and_replays_from_its_seed() {
        let mut e = Entropy::new([1; 32]);
        let (x, y) = (e.next_seed(), e.next_seed());
        assert_ne!(x, y);
        let mut again = Entropy::new([1; 32]);
        assert_eq!(again.next_seed(), x);
        let mut r = SeededRandom::new(x);
        let (mut p, mut q) = ([0u8; 16], [0u8; 16]);
        r.fill(&mut p);
        r.fill(&mut q);
        assert_ne!(p, q);
    }
}
