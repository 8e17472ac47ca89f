//! The record layer: once a handshake is done, every byte of the frame stream travels
//! inside `Sealed` frames, each the Noise encryption of the next piece of the stream.
//!
//! The frames themselves do not change: what a side would have written in the clear
//! is cut into records, each record is encrypted and authenticated, and the other
//! side decrypts the records back into the same stream and decodes it as before. So
//! the codec does not care whether bytes are encrypted underneath. Records are counted
//! (the Noise nonce is the record's number), so a record that is changed, dropped,
//! replayed or moved fails to open, and the connection ends.

use core::fmt;

use super::cipher::RecordCipher;
use super::noise::MAX_NOISE_MESSAGE;

/// Authentication tag per record.
const TAG: usize = 16;

/// Most plaintext one record carries.
pub(crate) const MAX_RECORD_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG;

/// The `Sealed` frame type (see `docs/PROTOCOL.md`).
pub(crate) const SEALED: u8 = 0x51;

/// Why a record would not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenError;

/// Both directions of an established channel.
pub(crate) struct SecureChannel {
    transport: Box<snow::TransportState>,
    cipher: RecordCipher,
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecureChannel")
    }
}

impl SecureChannel {
    pub(crate) fn new(transport: snow::TransportState, cipher: RecordCipher) -> Self {
        SecureChannel {
            transport: Box::new(transport),
            cipher,
        }
    }

    /// The cipher its records use.
    pub(crate) fn cipher(&self) -> RecordCipher {
        self.cipher
    }

    /// Appends `plain` to `out` as `Sealed` frames (length prefix and type included).
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        for piece in plain.chunks(MAX_RECORD_PLAINTEXT) {
            let start = out.len();
            let record_len = piece.len() + TAG;
            out.extend_from_slice(&((record_len + 1) as u32).to_be_bytes());
            out.push(SEALED);
            out.resize(start + 5 + record_len, 0);
            let written = out
                .get_mut(start + 5..)
                .map(|dest| self.transport.write_message(piece, dest));
            if !matches!(written, Some(Ok(n)) if n == record_len) {
                // Cannot happen for a record within the size limit; if it did, the
                // record is left out and the other side fails at the next one.
                out.truncate(start);
            }
        }
    }

    /// Opens one record (a `Sealed` body) into the front of `scratch` and gives the
    /// plaintext's length. `scratch` only grows (to the largest record seen, at most
    /// 64 KiB) and is never cleared, so no record pays for zeroing it: opening into a
    /// cleared buffer zeroed every record's length first (a `memset` per byte
    /// received, on every hop of a file). Room for the tag too: `ring` opens in place,
    /// and with less room snow copies the record into a second buffer first.
    pub(crate) fn open(
        &mut self,
        record: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<usize, OpenError> {
        if record.len() < TAG {
            return Err(OpenError);
        }
        if scratch.len() < record.len() {
            scratch.resize(record.len(), 0);
        }
        let opened = scratch
            .get_mut(..record.len())
            .map(|dest| self.transport.read_message(record, dest));
        match opened {
            Some(Ok(n)) => Ok(n),
            _ => Err(OpenError),
        }
    }
}
