//! The secure channel: who a connection is with, proven, and everything it carries
//! encrypted and authenticated.
//!
//! Right after the `Hello`s, both sides run a Noise handshake ([`noise`]); from then
//! on the whole frame stream travels in encrypted records ([`channel`]). Identities are
//! long-term X25519 keys, shown to people as fingerprints ([`keys`]). What a machine
//! requires of the other side, and what it checks the other side's key against, is
//! its [`Security`].

mod channel;
mod cipher;
mod keys;
mod noise;
mod policy;
mod x25519;

pub(crate) use channel::{SEALED, SecureChannel};
pub use cipher::RecordCipher;
pub(crate) use keys::{Entropy, derive};
pub use keys::{Identity, PublicKey};
pub(crate) use noise::{HandshakeError, NoiseHandshake};
pub use noise::{Pattern, password_key};
pub use policy::{Encryption, Expect, Security};
pub(crate) use x25519::{public_key as x25519_public_key, x25519};

use crate::frame::{Frame, Hello};

/// The body of `hello` as it is encoded: the bytes both sides bind into the handshake
/// (each decodes the other's `Hello` and encodes it again, so bytes a later version
/// appends to a `Hello` do not matter).
pub(crate) fn hello_bytes(hello: &Hello) -> Vec<u8> {
    let mut bytes = Frame::Hello(hello.clone()).to_bytes();
    bytes.drain(..5);
    bytes
}

/// A digest of a `Hello`, sent inside the handshake by the side whose `Hello` is not
/// bound into it (the accepting peer), so that the other side can check it.
pub(crate) fn hello_digest(hello: &Hello) -> [u8; 32] {
    derive(b"p2pchat hello v1", &[&hello_bytes(hello)])
}

/// Starts the connecting side's handshake, bound to its own `hello`: the handshake, its
/// pattern (`XXpsk3` when a password is given, with the cipher `security` names) and
/// the first message to send.
pub(crate) fn initiate(
    security: &Security,
    hello: &Hello,
    seed: [u8; 32],
) -> Result<(NoiseHandshake, Vec<u8>), HandshakeError> {
    let identity = security
        .identity
        .as_ref()
        .ok_or_else(|| HandshakeError("no key to encrypt with".into()))?;
    let psk = security.password.as_deref().map(password_key);
    let pattern = Pattern {
        password: psk.is_some(),
        cipher: security.cipher,
    };
    let mut handshake = NoiseHandshake::new(
        true,
        pattern,
        identity,
        psk.as_ref(),
        &hello_bytes(hello),
        seed,
    )?;
    let first = handshake.write(&[])?;
    Ok((handshake, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::party_security;

    #[test]
    fn the_connecting_side_proposes_the_cipher_it_was_given() {
        let hello = crate::handshake::our_hello(crate::frame::Role::RelayClient, "a", 0);
        for (cipher, password, number) in [
            (RecordCipher::ChaChaPoly, None, 1),
            (RecordCipher::ChaChaPoly, Some("pw"), 2),
            (RecordCipher::AesGcm, None, 3),
            (RecordCipher::AesGcm, Some("pw"), 4),
        ] {
            let security = Security {
                cipher,
                password: password.map(str::to_owned),
                ..party_security(1)
            };
            let (handshake, _) = initiate(&security, &hello, [9; 32]).unwrap();
            assert_eq!(handshake.pattern().to_u8(), number);
        }
    }
}
