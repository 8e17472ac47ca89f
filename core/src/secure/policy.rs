//! What a machine asks of the other side of its connection: whether it encrypts, and
//! whose key it expects to meet.
//!
//! Encryption is the default. Plain text happens only where a user asked for it
//! (`--insecure`), and a side that requires encryption refuses one that does not
//! offer it, by name: a downgrade is an error, never a silent fallback.

use std::collections::BTreeMap;

use super::cipher::RecordCipher;
use super::keys::{Identity, PublicKey};

/// Whether a side encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Offer encryption, and refuse a side that does not (the default).
    Required,
    /// Encrypt when the other side offers to; accept one that does not (`--insecure`
    /// on a listening peer or a relay).
    Optional,
    /// Do not offer encryption (`--insecure` on a connecting side): plain frames, if
    /// the other side allows them.
    Off,
}

/// Whose key the other side must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Any key: first contact (the driver remembers the key it is shown).
    Any,
    /// Exactly this key: remembered from an earlier conversation.
    Key(PublicKey),
    /// A key with this fingerprint, as a person typed it (`--expect`).
    Fingerprint(String),
    /// For a listening peer: the keys remembered for the names peers gave before; a
    /// peer using a remembered name must have its remembered key.
    ByName(BTreeMap<String, PublicKey>),
}

/// How a machine secures its connection(s).
#[derive(Debug, Clone)]
pub struct Security {
    /// Our long-term key; without one nothing can be encrypted.
    pub identity: Option<Identity>,
    /// Whether we encrypt.
    pub encryption: Encryption,
    /// Randomness for our ephemeral keys (from the operating system in real use).
    pub seed: [u8; 32],
    /// A relay's password: the one a client offers, or the one a relay requires.
    pub password: Option<String>,
    /// Whose key the other side must have.
    pub expect: Expect,
    /// The cipher this side proposes when it is the one connecting (an accepting side
    /// follows the other's proposal): [`RecordCipher::ChaChaPoly`] unless set;
    /// drivers set [`RecordCipher::fastest_here`].
    pub cipher: RecordCipher,
}

impl Security {
    /// No key and no encryption: plain frames (tests, `--insecure` benchmarks).
    pub fn insecure() -> Security {
        Security {
            identity: None,
            encryption: Encryption::Off,
            seed: [0; 32],
            password: None,
            expect: Expect::Any,
            cipher: RecordCipher::ChaChaPoly,
        }
    }

    /// Encryption required, with this identity and seed, any key accepted.
    pub fn encrypted(identity: Identity, seed: [u8; 32]) -> Security {
        Security {
            identity: Some(identity),
            encryption: Encryption::Required,
            seed,
            password: None,
            expect: Expect::Any,
            cipher: RecordCipher::ChaChaPoly,
        }
    }

    /// Whether we offer to encrypt.
    pub(crate) fn offers(&self) -> bool {
        self.identity.is_some() && self.encryption != Encryption::Off
    }

    /// Whether we refuse a side that does not encrypt.
    pub(crate) fn requires(&self) -> bool {
        self.encryption == Encryption::Required
    }

    /// Checks the other side's key (and, for a listening peer, the name it gave);
    /// `Err` says why it is refused, with both fingerprints.
    pub(crate) fn check_key(&self, name: &str, key: &PublicKey) -> Result<(), String> {
        let refuse = |expected: &str| {
            Err(format!(
                "the other side's key is {}, not the expected {expected}: this may be an \
                 impostor (or its key really changed: check with its owner, then forget the \
                 old key)",
                key.fingerprint()
            ))
        };
        match &self.expect {
            Expect::Any => Ok(()),
            Expect::Key(expected) if expected == key => Ok(()),
            Expect::Key(expected) => refuse(&expected.fingerprint()),
            Expect::Fingerprint(typed) if key.matches(typed) => Ok(()),
            Expect::Fingerprint(typed) => refuse(typed),
            Expect::ByName(known) => match known.get(name) {
                Some(expected) if !name.is_empty() && expected != key => refuse(&format!(
                    "{} remembered for {name:?}",
                    expected.fingerprint()
                )),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_against_what_was_pinned_or_remembered() {
        let a = Identity::from_secret([1; 32]).public();
        let b = Identity::from_secret([2; 32]).public();
        let mut s = Security::insecure();
        assert!(s.check_key("x", &a).is_ok());
        s.expect = Expect::Key(a);
        assert!(s.check_key("x", &a).is_ok());
        let why = s.check_key("x", &b).unwrap_err();
        assert!(
            why.contains(&a.fingerprint()) && why.contains(&b.fingerprint()),
            "{why}"
        );
        s.expect = Expect::Fingerprint(a.fingerprint().to_uppercase());
        assert!(s.check_key("x", &a).is_ok());
        assert!(s.check_key("x", &b).is_err());
        s.expect = Expect::ByName([("ann".to_owned(), a)].into());
        assert!(s.check_key("ann", &a).is_ok());
        assert!(s.check_key("ann", &b).is_err());
        assert!(
            s.check_key("bob", &b).is_ok(),
            "a new name is first contact"
        );
    }
}
