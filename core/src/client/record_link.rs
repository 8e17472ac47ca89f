//! [`RecordLink`]: a relay client's encrypted connection with the client taken off.
//!
//! Why it exists: to measure what encryption costs a relay, the relay must be loaded
//! as hard as it is by the cheapest client in the clear (`p2pchat bench
//! --raw-frames`, frames written and read in place). A full [`RelayClient`] cannot do
//! that on the same cores: sealing every message end to end and turning every
//! delivery into an event costs the client several times what the relay spends on the
//! message, so the relay would be measured half idle. A `RecordLink` keeps exactly
//! what the relay sees of an encrypted client (the handshake it made, the records),
//! and lets its driver write and read the frames inside them in place.
//!
//! It is a tool for load generators, not a way to chat: nothing it carries is sealed
//! end to end, nothing it receives is checked beyond the record's seal, and it keeps
//! no session stream for a resume.

use crate::decode::RawFrame;
use crate::error::DecodeError;
use crate::link::Link;
use crate::time::Timestamp;

use super::{Phase, RelayClient};

/// An admitted relay client's connection, its secure channel included, driven frame
/// by frame. See the module documentation.
#[derive(Debug)]
pub struct RecordLink {
    link: Link,
    received: u64,
}

/// Why a client could not give up its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordLinkError {
    /// The relay has not admitted the client (or the conversation is over).
    #[error("the client is not admitted to a relay")]
    NotAdmitted,
    /// The connection is not encrypted: frames in the clear need no record link.
    #[error("the connection is not encrypted")]
    NotEncrypted,
}

impl RelayClient {
    /// Gives up the client and keeps its connection: the secure channel its handshake
    /// made, and what is queued on it. For load generators (see [`RecordLink`]).
    pub fn into_record_link(self) -> Result<RecordLink, RecordLinkError> {
        if !matches!(self.phase, Phase::Admitted(_)) || !self.link.is_open() {
            return Err(RecordLinkError::NotAdmitted);
        }
        if self.link.cipher().is_none() {
            return Err(RecordLinkError::NotEncrypted);
        }
        let mut link = self.link;
        // The driver keeps (and acknowledges) the stream from here on.
        link.stop_retaining();
        link.forget_owed_ack();
        Ok(RecordLink {
            link,
            received: self.received,
        })
    }
}

impl RecordLink {
    /// Bytes of the relay's session stream the client had handled when it gave up
    /// its connection: where the driver's own count, for its `Ack`s, goes on from.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Queues `frames` (whole encoded frames, length prefixes included) to go out
    /// sealed in the next record.
    pub fn send_frames(&mut self, frames: &[u8], now: Timestamp) {
        if !frames.is_empty() {
            self.link
                .send_encoded(|out| out.extend_from_slice(frames), now);
        }
    }

    /// The next bytes to write: everything queued, sealed as one record (or as
    /// several, past a record's size).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.link.poll_transmit()
    }

    /// The driver wrote `n` bytes of what [`RecordLink::poll_transmit`] gave.
    pub fn handle_written(&mut self, n: usize) {
        self.link.confirm_written(n);
    }

    /// Opens the records in `bytes` and hands each frame inside them to `on_frame`,
    /// undecoded, in order. A record cut by the end of `bytes` waits for the next
    /// call. An error (a record that does not open, a frame in the clear, a broken
    /// frame) ends the stream: nothing after it is handed over.
    pub fn handle_bytes(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
        on_frame: impl FnMut(RawFrame<'_>),
    ) -> Result<(), DecodeError> {
        self.link.receive_raw(bytes, now, on_frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, Payload};
    use crate::id::ClientId;
    use crate::limits::Limits;
    use crate::test_support::Wire;

    #[test]
    fn an_admitted_client_gives_up_its_connection_and_frames_go_both_ways_in_records() {
        let mut wire = Wire::new(Limits::default());
        let ann = wire.join("ann");
        wire.join("bob");
        wire.take_events(ann);
        let bob = wire.clients.pop().unwrap();
        let mut link = bob.client.into_record_link().unwrap();
        assert!(link.received() > 0, "the Welcome was part of the stream");

        // Out: a Chat frame written by the driver reaches ann through the relay.
        let chat = Frame::Chat {
            to: ClientId(0),
            seq: 1,
            payload: Payload::text("hi from a record link"),
        };
        link.send_frames(&chat.to_bytes(), wire.now);
        let bytes = link.poll_transmit().unwrap();
        link.handle_written(bytes.len());
        assert!(
            !bytes.windows(9).any(|w| w == b"hi from a"),
            "the frame is sealed in a record"
        );
        wire.server.handle_bytes(bob.conn, &bytes, wire.now);
        wire.pump();
        assert_eq!(
            wire.take_messages(ann),
            vec![(1, "hi from a record link".to_owned())]
        );

        // In: what ann sends bob comes out of the records as a Deliver frame.
        let now = wire.now;
        wire.client(ann)
            .send_chat(ClientId(1), "hello link", now)
            .unwrap();
        wire.pump();
        let sent = wire.raw.remove(&bob.conn).unwrap();
        let mut frames = Vec::new();
        // One byte at a time: records and frames cut anywhere are put back together.
        for byte in sent.chunks(1) {
            link.handle_bytes(byte, wire.now, |f| {
                frames.push(Frame::decode(f.type_byte, f.body).unwrap())
            })
            .unwrap();
        }
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Frame::Deliver { from, .. } if *from == ClientId(0))),
            "{frames:?}"
        );

        // A frame in the clear ends the stream.
        let clear = Frame::Ping(7).to_bytes();
        assert_eq!(
            link.handle_bytes(&clear, wire.now, |_| {}),
            Err(DecodeError::Unencrypted { type_byte: 0x31 })
        );
    }

    #[test]
    fn only_an_admitted_encrypted_client_gives_up_its_connection() {
        let limits = Limits::default();
        let fresh = RelayClient::new(
            "",
            limits.clone(),
            crate::test_support::party_security(1),
            Timestamp::ZERO,
        )
        .unwrap();
        assert_eq!(
            fresh.into_record_link().unwrap_err(),
            RecordLinkError::NotAdmitted
        );
        let mut wire = Wire::insecure(limits);
        wire.join("ann");
        let ann = wire.clients.pop().unwrap();
        assert_eq!(
            ann.client.into_record_link().unwrap_err(),
            RecordLinkError::NotEncrypted
        );
    }
}
