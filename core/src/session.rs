//! The session layer: what lets a conversation outlive one TCP connection.
//!
//! A Wi-Fi blip or a relay's restartless hiccup should cost a user nothing: no message
//! lost, none shown twice. So each side of a session (a relay client and the relay, or
//! two direct peers) treats the frames that carry the conversation as one numbered
//! byte stream, its *session stream*, which continues across connections:
//!
//! - every frame but the *link frames* (those about one connection: `Hello`,
//!   `Welcome`, `Refused`, the handshake, `Ping`/`Pong`, `Close`, and this layer's own
//!   `Ack`, `Resume`, `Resumed`, `ResumeToken`) belongs to the sender's session
//!   stream, and each side counts the bytes of the other's that it has handled;
//! - the sender keeps what it sent ([`Retained`]) until the other side's `Ack` says it
//!   was handled;
//! - after a lost connection, the side that dials again sends `Resume` with the
//!   token it was given and how much it holds; the other answers `Resumed` with how
//!   much *it* holds, and each resends the rest of its stream from there.
//!
//! Counting bytes rather than frames means the retained stream is one buffer, with no
//! per-frame bookkeeping on the hot path.

use core::time::Duration;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame::{encoded_frames, is_session_frame};
use crate::time::Timestamp;

/// The most buffer an idle session keeps once everything is acknowledged.
const IDLE_CAPACITY: usize = 1024;

/// Pauses between dials after the first (which is at once): growing, then steady.
const REDIAL_PAUSES_MS: [u64; 6] = [250, 500, 1_000, 2_000, 4_000, 8_000];

/// A lost connection being got back (by a relay client, or either side of a direct
/// conversation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Away {
    /// When the session is given up.
    pub(crate) until: Timestamp,
    /// When to open (dial, or wait for) the next connection; `None` while one is
    /// under way.
    pub(crate) next: Option<Timestamp>,
    /// Attempts that failed.
    pub(crate) failed: u32,
}

impl Away {
    /// Lost at `now`, held for `grace`: the first attempt is at once.
    pub(crate) fn starting(now: Timestamp, grace: Duration) -> Away {
        Away {
            until: now + grace,
            next: Some(now),
            failed: 0,
        }
    }

    /// Counts a failed attempt; returns how long to wait before dialling again
    /// (growing, then steady).
    pub(crate) fn attempt_failed(&mut self) -> Duration {
        let step = (self.failed as usize).min(REDIAL_PAUSES_MS.len() - 1);
        self.failed += 1;
        Duration::from_millis(REDIAL_PAUSES_MS.get(step).copied().unwrap_or(0))
    }
}

/// Whether two resume tokens are equal, in time that does not depend on where they
/// differ (a returning side proves itself with one).
pub(crate) fn same_token(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bytes of our session stream that the other side has not yet acknowledged,
/// kept to be sent again after a lost connection.
///
/// Kept in pieces, oldest first: runs of frames copied in, each a ring
/// (`VecDeque`: an acknowledgement drops its prefix without moving what is left, so
/// a busy stream's buffer stays about the size of what is unacknowledged), and
/// broadcast batches shared with every other recipient of the batch (`Arc`: a
/// batch to 1,000 clients is kept once, not 1,000 times; copying it into each
/// recipient's stream was a third of the relay's CPU in a broadcast to 1,000).
#[derive(Debug, Default)]
pub(crate) struct Retained {
    /// Stream offset of the first byte kept: everything before it was acknowledged.
    base: u64,
    /// The older pieces, oldest first; `tail` comes after them.
    pieces: VecDeque<Piece>,
    /// Bytes of the first of `pieces` already acknowledged (a shared piece cannot
    /// drop them; a copied one does at once, and this stays 0 for it).
    skip: usize,
    /// The newest bytes copied in, after every piece.
    tail: VecDeque<u8>,
    /// Bytes kept, over the pieces and the tail.
    len: usize,
}

/// One of the older pieces of a [`Retained`] stream.
#[derive(Debug)]
enum Piece {
    Copied(VecDeque<u8>),
    Shared(Arc<[u8]>),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Copied(bytes) => bytes.len(),
            Piece::Shared(bytes) => bytes.len(),
        }
    }
}

/// An acknowledgement or resume offset the sender of the stream never reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BeyondSent {
    /// The offset claimed.
    pub(crate) claimed: u64,
    /// The end of what was sent.
    pub(crate) sent: u64,
}

impl Retained {
    /// A stream restored from a saved session: `bytes` from offset `base` on.
    pub(crate) fn restored(base: u64, bytes: &[u8]) -> Retained {
        Retained {
            base,
            tail: bytes.iter().copied().collect(),
            len: bytes.len(),
            ..Retained::default()
        }
    }

    /// Bytes kept.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The stream offset of the first byte kept (everything before it was
    /// acknowledged).
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The stream offset just past the last byte sent.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.len as u64
    }

    /// Keeps the session frames among `frames` (whole frames, back to back, as
    /// encoded on the wire); link frames among them are skipped.
    pub(crate) fn keep_session_frames(&mut self, frames: &[u8]) {
        if self.tail.capacity() == 0 {
            self.tail.reserve(frames.len().max(4 * IDLE_CAPACITY));
        }
        let before = self.tail.len();
        let mut at = 0;
        let mut run_start = 0;
        for (ty, span) in encoded_frames(frames) {
            if !is_session_frame(ty) {
                self.tail
                    .extend(frames.get(run_start..span.start).unwrap_or_default());
                run_start = span.end;
            }
            at = span.end;
        }
        self.tail
            .extend(frames.get(run_start..at).unwrap_or_default());
        self.len += self.tail.len() - before;
    }

    /// Keeps `frames`, all of them session frames, shared with whoever else keeps
    /// the same batch.
    pub(crate) fn keep_shared(&mut self, frames: &Arc<[u8]>) {
        if frames.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            let copied = core::mem::take(&mut self.tail);
            self.pieces.push_back(Piece::Copied(copied));
        }
        self.len += frames.len();
        self.pieces.push_back(Piece::Shared(Arc::clone(frames)));
    }

    /// The other side has handled everything before stream offset `upto`. An offset
    /// below what was already acknowledged changes nothing (acknowledgements may be
    /// stale); one past what was sent is an error.
    pub(crate) fn acknowledge(&mut self, upto: u64) -> Result<(), BeyondSent> {
        if upto > self.end() {
            return Err(BeyondSent {
                claimed: upto,
                sent: self.end(),
            });
        }
        let Some(mut drop) = upto.checked_sub(self.base).map(|n| n as usize) else {
            return Ok(());
        };
        self.base = upto;
        self.len -= drop;
        while drop > 0 {
            let Some(front) = self.pieces.front_mut() else {
                // What is left to drop is in the tail.
                self.tail.drain(..drop.min(self.tail.len()));
                break;
            };
            let left = front.len() - self.skip;
            if drop < left {
                match front {
                    Piece::Copied(bytes) => {
                        bytes.drain(..drop);
                    }
                    Piece::Shared(_) => self.skip += drop,
                }
                break;
            }
            drop -= left;
            self.skip = 0;
            self.pieces.pop_front();
        }
        if self.len == 0 && self.tail.capacity() > IDLE_CAPACITY * 8 {
            // All acknowledged. A large buffer is given back at once (a roster
            // alone can be 16 KiB, and a relay holds thousands of idle clients:
            // kept until the next sweep, 10,000 clients held 16 KB each); the next
            // burst reserves room in one go, not by doubling.
            self.tail = VecDeque::new();
        }
        Ok(())
    }

    /// The kept bytes from stream offset `at` on (nothing if `at` is outside), in
    /// one piece: only a resend reads them, so the pieces are joined then.
    pub(crate) fn bytes_from(&mut self, at: u64) -> &[u8] {
        let Some(skip) = at.checked_sub(self.base) else {
            return &[];
        };
        if !self.pieces.is_empty() {
            let mut joined = VecDeque::with_capacity(self.len);
            for (i, piece) in self.pieces.iter().enumerate() {
                let from = if i == 0 { self.skip } else { 0 };
                match piece {
                    Piece::Copied(bytes) => joined.extend(bytes.range(from..)),
                    Piece::Shared(bytes) => {
                        joined.extend(bytes.get(from..).unwrap_or_default());
                    }
                }
            }
            joined.extend(self.tail.iter());
            self.pieces.clear();
            self.skip = 0;
            self.tail = joined;
        }
        let kept: &[u8] = self.tail.make_contiguous();
        kept.get(skip as usize..).unwrap_or_default()
    }

    /// How many bytes of whole frames, from stream offset `at`, fit in `room` (at
    /// least one frame's, when `one_anyway`): a resend moves whole frames, so that a
    /// frame queued meanwhile never lands in the middle of one.
    pub(crate) fn whole_frames(&mut self, at: u64, room: usize, one_anyway: bool) -> usize {
        let rest = self.bytes_from(at);
        let mut n = 0;
        for (_, span) in encoded_frames(rest) {
            if span.end > room && !(one_anyway && n == 0) {
                break;
            }
            n = span.end;
        }
        n
    }

    /// Gives back the buffer if everything was acknowledged and it is larger than an
    /// idle connection needs (a relay holds thousands of idle ones, and a roster
    /// alone can be 16 KiB). Called now and then, not on every acknowledgement: a
    /// busy connection keeps its buffer between bursts.
    pub(crate) fn release_if_idle(&mut self) {
        // With nothing kept there are no pieces (an acknowledged piece is dropped).
        if self.len == 0 && self.tail.capacity() > IDLE_CAPACITY {
            self.tail = VecDeque::new();
        }
    }

    /// The stream starts anew: what is kept becomes its beginning (offset 0). For a
    /// session that moved to another relay, which counts from 0.
    pub(crate) fn rebase_to_zero(&mut self) {
        self.base = 0;
    }

    /// The other side holds everything before stream offset `from`, and the rest is
    /// to be sent again: acknowledges up to there.
    pub(crate) fn resend_from(&mut self, from: u64) -> Result<(), BeyondSent> {
        if from < self.base {
            // The other side acknowledged more than this before: it contradicts itself.
            return Err(BeyondSent {
                claimed: from,
                sent: self.end(),
            });
        }
        self.acknowledge(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn bytes(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            f.encode(&mut out);
        }
        out
    }

    #[test]
    fn only_session_frames_are_kept_and_acknowledged_bytes_are_dropped() {
        let mut r = Retained::default();
        let exit = Frame::Exit.to_bytes();
        let who = Frame::Who.to_bytes();
        r.keep_session_frames(&bytes(&[
            Frame::Exit,
            Frame::Ping(1),
            Frame::Who,
            Frame::Ack { received: 3 },
        ]));
        assert_eq!(
            r.len(),
            exit.len() + who.len(),
            "Ping and Ack are link frames"
        );
        r.acknowledge(exit.len() as u64).unwrap();
        r.resend_from(exit.len() as u64).unwrap();
        assert_eq!(r.bytes_from(exit.len() as u64), &who[..]);
        assert!(r.acknowledge(100).is_err(), "past what was sent");
        r.acknowledge(0).unwrap();
        assert_eq!(
            r.len(),
            who.len(),
            "a stale acknowledgement changes nothing"
        );
    }

    #[test]
    fn resending_from_before_an_earlier_acknowledgement_is_refused() {
        let mut r = Retained::default();
        r.keep_session_frames(&bytes(&[Frame::Exit, Frame::Who]));
        r.acknowledge(5).unwrap();
        assert!(r.resend_from(0).is_err());
        r.resend_from(5).unwrap();
        assert_eq!(r.bytes_from(5), &Frame::Who.to_bytes()[..]);
    }

    #[test]
    fn shared_batches_and_copied_frames_make_one_stream() {
        let mut r = Retained::default();
        let exit = Frame::Exit.to_bytes();
        let who = Frame::Who.to_bytes();
        let batch: Arc<[u8]> = Arc::from(bytes(&[Frame::Who, Frame::Exit]).as_slice());
        r.keep_session_frames(&exit);
        r.keep_shared(&batch);
        r.keep_session_frames(&bytes(&[Frame::Ping(1), Frame::Who]));
        r.keep_shared(&batch);
        let mut whole = exit.clone();
        whole.extend_from_slice(&batch);
        whole.extend_from_slice(&who);
        whole.extend_from_slice(&batch);
        assert_eq!(r.len(), whole.len());
        assert_eq!(Arc::strong_count(&batch), 3, "kept, not copied");
        // Acknowledged up to the middle of the first shared batch...
        let mid = (exit.len() + who.len()) as u64;
        r.acknowledge(mid).unwrap();
        assert_eq!(r.len(), whole.len() - mid as usize);
        // ... then to the middle of the copied frames after it (across a piece).
        let later = (exit.len() + batch.len() + 2) as u64;
        r.acknowledge(later).unwrap();
        assert_eq!(Arc::strong_count(&batch), 2, "the first batch is let go");
        assert_eq!(r.bytes_from(later), &whole[later as usize..]);
        assert_eq!(r.end(), whole.len() as u64);
        r.acknowledge(r.end()).unwrap();
        assert_eq!(r.len(), 0);
        r.release_if_idle();
        assert_eq!(Arc::strong_count(&batch), 1);
    }

    #[test]
    fn a_long_stream_is_compacted_as_it_is_acknowledged() {
        let mut r = Retained::default();
        let frame = Frame::Ping(0).to_bytes();
        let chat = bytes(&[Frame::Exited {
            id: crate::ClientId(1),
        }]);
        for _ in 0..10_000 {
            r.keep_session_frames(&frame);
            r.keep_session_frames(&chat);
            r.acknowledge(r.end()).unwrap();
        }
        assert_eq!(r.len(), 0);
        assert_eq!(r.end(), 10_000 * chat.len() as u64);
        assert!(r.tail.capacity() < 64 * 1024, "{}", r.tail.capacity());
    }
}
