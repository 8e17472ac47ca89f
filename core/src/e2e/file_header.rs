//! The clear header of an end-to-end encrypted file message.
//!
//! The relay cannot read a sealed file message, yet it must still enforce its file
//! limits (largest file, transfers per client) and notice when a transfer ends. So a
//! sealed file message starts with the few fields those checks need, in the clear:
//! the message type, the transfer ID and, in an offer, the size. Everything else (the
//! file's name and hash, every chunk, every reason) is sealed. The receiver checks
//! that the header says what the sealed message says, so a relay that edits a header
//! only gets the message rejected.

use super::keyring::{Keyring, OpenError};
use super::seal::Place;
use crate::error::DecodeError;
use crate::file::{FileMsg, TransferId, ty};
use crate::id::ClientId;
use crate::wire::{Reader, Writer};

/// Opens a sealed file message from client `from`: its sealed part must open, and
/// say what its clear header says.
pub(crate) fn open_file(
    ring: &mut Keyring,
    from: ClientId,
    place: Place,
    body: &[u8],
) -> Result<FileMsg, OpenError> {
    let reject = |why: &str| OpenError::Rejected(why.to_owned());
    let (header, rest) =
        FileHeader::split(body).map_err(|_| reject("its file header is malformed"))?;
    let plain = ring.open(from, place, body.len() - rest.len(), body)?;
    let msg = FileMsg::decode(&plain).map_err(|_| reject("its file message is malformed"))?;
    if FileHeader::of(&msg) == header {
        Ok(msg)
    } else {
        Err(reject(
            "its clear file header does not match its sealed contents",
        ))
    }
}

/// What the relay may see of a file message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileHeader {
    /// The file message type byte.
    pub(crate) type_byte: u8,
    /// The file sender's transfer ID.
    pub(crate) transfer: TransferId,
    /// The file size, in an offer.
    pub(crate) size: Option<u64>,
}

impl FileHeader {
    /// The header of `msg`.
    pub(crate) fn of(msg: &FileMsg) -> FileHeader {
        FileHeader {
            type_byte: msg.type_byte(),
            transfer: msg.transfer(),
            size: match msg {
                FileMsg::Offer { size, .. } => Some(*size),
                _ => None,
            },
        }
    }

    /// Appends the header's bytes.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u8(self.type_byte);
        w.u32(self.transfer.0);
        if let Some(size) = self.size {
            w.u64(size);
        }
    }

    /// Splits a sealed file payload into its header and the sealed rest.
    pub(crate) fn split(body: &[u8]) -> Result<(FileHeader, &[u8]), DecodeError> {
        let mut r = Reader::new(body, "SealedFile");
        let type_byte = r.u8()?;
        let transfer = TransferId(r.u32()?);
        let size = if type_byte == ty::OFFER {
            Some(r.u64()?)
        } else {
            None
        };
        let header = FileHeader {
            type_byte,
            transfer,
            size,
        };
        Ok((header, r.rest()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PayloadKind;
    use crate::secure::{Identity, RecordCipher};

    /// Ann's keyring, Bob's keyring, and where a file message from ann to bob goes.
    fn parties() -> (Keyring, Keyring, Place) {
        let ann = Keyring::new(
            Identity::from_secret([1; 32]),
            &[2; 32],
            RecordCipher::AesGcm,
        );
        let bob = Keyring::new(
            Identity::from_secret([3; 32]),
            &[4; 32],
            RecordCipher::ChaChaPoly,
        );
        let place = Place {
            kind: PayloadKind::SealedFile,
            to: ClientId(1),
            seq: 1,
        };
        (ann, bob, place)
    }

    fn offer(size: u64) -> FileMsg {
        FileMsg::Offer {
            transfer: TransferId(7),
            size,
            name: "plans.pdf".into(),
        }
    }

    /// Seals `msg` behind `header`, as a sender would (or a lying one).
    fn seal(
        ann: &mut Keyring,
        bob: &Keyring,
        place: Place,
        header: FileHeader,
        msg: &FileMsg,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        header.encode_into(&mut body);
        ann.seal(place, &bob.public(), &msg.encode(), &mut body, 0)
            .unwrap();
        body
    }

    #[test]
    fn a_sealed_file_message_opens_with_its_header() {
        let (mut ann, mut bob, place) = parties();
        let body = seal(
            &mut ann,
            &bob,
            place,
            FileHeader::of(&offer(10)),
            &offer(10),
        );
        assert_eq!(
            open_file(&mut bob, ClientId(0), place, &body),
            Ok(offer(10))
        );
    }

    #[test]
    fn a_relay_that_edits_the_clear_header_gets_the_message_rejected() {
        let (mut ann, mut bob, place) = parties();
        let mut body = seal(
            &mut ann,
            &bob,
            place,
            FileHeader::of(&offer(10)),
            &offer(10),
        );
        body[12] ^= 1; // the low byte of the size
        assert!(matches!(
            open_file(&mut bob, ClientId(0), place, &body),
            Err(OpenError::Rejected(_))
        ));
    }

    #[test]
    fn a_sender_whose_header_lies_about_the_size_is_caught() {
        // A header that tells the relay 10 bytes (under its limit) while the sealed
        // offer says a terabyte.
        let (mut ann, mut bob, place) = parties();
        let body = seal(
            &mut ann,
            &bob,
            place,
            FileHeader::of(&offer(10)),
            &offer(1 << 40),
        );
        match open_file(&mut bob, ClientId(0), place, &body) {
            Err(OpenError::Rejected(why)) => assert!(why.contains("does not match"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_splits_off_what_follows_it() {
        let offer = FileMsg::Offer {
            transfer: TransferId(7),
            size: 1 << 40,
            name: "secret plans.pdf".into(),
        };
        let mut body = Vec::new();
        FileHeader::of(&offer).encode_into(&mut body);
        assert_eq!(body.len(), 1 + 4 + 8, "no name, no hash");
        body.extend_from_slice(b"sealed");
        let (header, rest) = FileHeader::split(&body).unwrap();
        assert_eq!(header, FileHeader::of(&offer));
        assert_eq!(rest, b"sealed");
        let done = FileMsg::Done {
            transfer: TransferId(7),
            hash: [1; 32],
        };
        let mut body = Vec::new();
        FileHeader::of(&done).encode_into(&mut body);
        assert_eq!(FileHeader::split(&body).unwrap().0.size, None);
        assert!(FileHeader::split(&[ty::OFFER, 0, 0, 0, 7]).is_err());
    }
}
