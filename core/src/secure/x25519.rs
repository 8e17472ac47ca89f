//! X25519 (RFC 7748), for the Noise handshakes and the end-to-end pair keys.
//!
//! Why not curve25519-dalek's `MontgomeryPoint::mul_clamped` (the Montgomery ladder,
//! which snow's own resolver calls): a relay runs three of these for every client that
//! connects, and they are most of a handshake's CPU (thousands of clients reconnecting
//! after a restart pay it all at once). The same curve25519-dalek multiplies a point in
//! Edwards form faster (its
//! vectorised backend where the processor has one), so a public key that lies on the
//! curve is moved to Edwards form, multiplied there by the same clamped scalar, and
//! brought back. The result is the same 32 bytes (the tests compare both routes on
//! random keys, keys of every small order, and keys off the curve).
//!
//! A public key on the curve's twist (any 32 bytes are a valid X25519 input, and half
//! of them are not on the curve) has no Edwards form: it takes the ladder. Which route
//! is taken depends only on the public key, never on the secret; both routes are
//! constant-time in the secret.

use curve25519_dalek::MontgomeryPoint;

/// X25519 of our `secret` (clamped as RFC 7748 says) and their `public` u-coordinate.
pub(crate) fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
    let point = MontgomeryPoint(*public);
    // Either sign gives the same u-coordinate after multiplying (u(-P) = u(P)).
    match point.to_edwards(0) {
        Some(edwards) => edwards.mul_clamped(*secret).to_montgomery().to_bytes(),
        None => point.mul_clamped(*secret).to_bytes(),
    }
}

/// The X25519 public key of `secret`: the clamped scalar times the base point.
pub(crate) fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
}

/// Noise's DH function "25519" by [`x25519`], for `snow`.
#[derive(Default)]
pub(crate) struct Dh25519 {
    secret: [u8; 32],
    public: [u8; 32],
}

impl snow::types::Dh for Dh25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        // snow hands over exactly `priv_len` bytes; anything else is padded or cut.
        let mut secret = [0u8; 32];
        for (to, from) in secret.iter_mut().zip(privkey) {
            *to = *from;
        }
        self.secret = secret;
        self.public = public_key(&secret);
    }

    fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
        let mut secret = [0u8; 32];
        rng.try_fill_bytes(&mut secret)?;
        self.secret = secret;
        self.public = public_key(&secret);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.secret
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let (Some(public), Some(out)) = (pubkey.get(..32), out.get_mut(..32)) else {
            return Err(snow::Error::Dh);
        };
        let mut theirs = [0u8; 32];
        theirs.copy_from_slice(public);
        out.copy_from_slice(&x25519(&self.secret, &theirs));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::keys::SeededRandom;

    /// The ladder: RFC 7748's X25519 as curve25519-dalek implements it.
    fn ladder(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
        MontgomeryPoint(*public).mul_clamped(*secret).to_bytes()
    }

    #[test]
    fn rfc_7748_test_vectors() {
        let hex = |s: &str| -> [u8; 32] {
            let mut out = [0u8; 32];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
            }
            out
        };
        // Section 5.2, the two single-step vectors.
        assert_eq!(
            x25519(
                &hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
                &hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
            ),
            hex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
        );
        assert_eq!(
            x25519(
                &hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
                &hex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
            ),
            hex("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
        );
        // Section 6.1: Alice and Bob agree.
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        assert_eq!(
            public_key(&alice),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(x25519(&alice, &public_key(&bob)), shared);
        assert_eq!(x25519(&bob, &public_key(&alice)), shared);
    }

    #[test]
    fn both_routes_agree_on_random_keys_on_the_curve_and_off_it() {
        let mut random = SeededRandom::new([7; 32]);
        let (mut on_curve, mut twist) = (0, 0);
        for _ in 0..2_000 {
            let mut secret = [0u8; 32];
            let mut public = [0u8; 32];
            random.fill(&mut secret);
            random.fill(&mut public);
            // Random bytes: on the curve (most with a small-order part) or the twist,
            // and with the top bit set half the time (RFC 7748 ignores it).
            if MontgomeryPoint(public).to_edwards(0).is_some() {
                on_curve += 1;
            } else {
                twist += 1;
            }
            assert_eq!(
                x25519(&secret, &public),
                ladder(&secret, &public),
                "{public:?}"
            );
        }
        assert!(
            on_curve > 500 && twist > 500,
            "{on_curve} on the curve, {twist} off it"
        );
    }

    #[test]
    fn both_routes_agree_on_keys_of_small_order_and_edge_values() {
        let mut random = SeededRandom::new([9; 32]);
        let mut publics: Vec<[u8; 32]> = Vec::new();
        // The points of order 1, 2, 4 and 8 (Edwards form, brought to Montgomery).
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            publics.push(point.to_montgomery().to_bytes());
        }
        // 0, 1, p - 1 (the value without an Edwards form), p, p + 1, 2^255 - 1.
        let p_minus = |k: u8| {
            let mut v = [0xFF; 32];
            v[0] = 0xED - k;
            v[31] = 0x7F;
            v
        };
        let mut one = [0u8; 32];
        one[0] = 1;
        let mut p_plus_one = p_minus(0);
        p_plus_one[0] = 0xEE;
        publics.extend([[0; 32], one, p_minus(1), p_minus(0), p_plus_one, [0xFF; 32]]);
        for public in publics {
            for _ in 0..8 {
                let mut secret = [0u8; 32];
                random.fill(&mut secret);
                assert_eq!(
                    x25519(&secret, &public),
                    ladder(&secret, &public),
                    "{public:?}"
                );
            }
        }
    }

    #[test]
    fn snow_handshakes_agree_with_its_own_dh() {
        use snow::types::Dh as _;
        let mut ours = Dh25519::default();
        ours.set(&[3; 32]);
        let theirs = public_key(&[4; 32]);
        let mut a = [0u8; 32];
        ours.dh(&theirs, &mut a).unwrap();
        assert_eq!(a, ladder(&[3; 32], &theirs));
        assert_eq!(ours.pubkey(), &public_key(&[3; 32]));
        assert!(
            ours.dh(&theirs[..31], &mut a).is_err(),
            "a short key is refused"
        );
    }
}
