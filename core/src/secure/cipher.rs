//! Which cipher a secure channel's records use.
//!
//! Two, both Noise's own and both from `ring`: ChaCha20-Poly1305, fast everywhere
//! (and constant time without special instructions), and AES-256-GCM, four times as
//! fast where the processor has AES and carry-less multiply instructions (7.6-8.0
//! GiB/s against 1.95 on the benchmark machine) and much slower where it has not.
//! Files pass every byte through the channel's cipher on each hop, so the choice
//! shows in their speed. The connecting side picks (it is the one that speaks first:
//! the choice travels in the pattern number of its first handshake message); the
//! accepting side follows whichever of the two it is offered. A side that changed
//! the number on its way would only make the handshake fail: the cipher's name is
//! part of what the handshake hashes.

/// The cipher of a secure channel's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordCipher {
    /// ChaCha20-Poly1305: the portable choice, and the default of the core (whose
    /// behaviour must not depend on the machine it runs on).
    #[default]
    ChaChaPoly,
    /// AES-256-GCM: for machines with AES instructions.
    AesGcm,
}

impl RecordCipher {
    /// The faster of the two on this processor. A driver asks this once; the core
    /// never does (so a simulation runs the same on every machine).
    pub fn fastest_here() -> RecordCipher {
        if has_aes_instructions() {
            RecordCipher::AesGcm
        } else {
            RecordCipher::ChaChaPoly
        }
    }

    /// The cipher's name in a Noise protocol name.
    pub(crate) fn noise_name(self) -> &'static str {
        match self {
            RecordCipher::ChaChaPoly => "ChaChaPoly",
            RecordCipher::AesGcm => "AESGCM",
        }
    }

    /// The cipher's name for people (and for `--cipher`).
    pub fn name(self) -> &'static str {
        match self {
            RecordCipher::ChaChaPoly => "chacha20-poly1305",
            RecordCipher::AesGcm => "aes-256-gcm",
        }
    }

    /// The cipher named `name` (as [`RecordCipher::name`] spells it).
    pub fn from_name(name: &str) -> Option<RecordCipher> {
        [RecordCipher::ChaChaPoly, RecordCipher::AesGcm]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

#[cfg(target_arch = "x86_64")]
fn has_aes_instructions() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn has_aes_instructions() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn has_aes_instructions() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_both_ways() {
        for c in [RecordCipher::ChaChaPoly, RecordCipher::AesGcm] {
            assert_eq!(RecordCipher::from_name(c.name()), Some(c));
        }
        assert_eq!(RecordCipher::from_name("rot13"), None);
    }
}
