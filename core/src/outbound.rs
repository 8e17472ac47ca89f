//! The bytes waiting to go out on one connection, with the accounting that bounds them.
//!
//! A relay is only as robust as its slowest reader: if bytes for a client that does not
//! read pile up without limit, one idle laptop can exhaust the server. So every
//! connection counts what is queued here plus what the driver took but has not yet
//! confirmed as written ([`Outbound::confirm_written`]); past the limit the owner cuts
//! the connection off with a reason instead of growing.
//!
//! On an encrypted connection the frames are kept in the clear here and sealed into
//! records only when the driver takes them ([`Outbound::take`]): nothing sealed is ever
//! thrown away unsent (records are numbered; dropping one would break every later
//! one), and frames queued before the handshake ends simply wait.

use std::sync::Arc;

use crate::frame::{ChatRef, Frame, encode_deliver, encoded_frames, is_session_frame};
use crate::id::ClientId;
use crate::secure::SecureChannel;
use crate::session::{BeyondSent, Retained};

/// How frames are written on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Length-prefixed binary frames.
    Framed,
    /// Plain-text lines, for `nc`, `telnet` and the original app.
    Text,
}

/// Where frames queued now go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealing {
    /// Out in the clear (no encryption, or not decided to encrypt).
    Clear,
    /// Held until the secure channel exists (the handshake is under way).
    Hold,
    /// Sealed into records when taken.
    Seal,
}

/// Outbound buffer of one connection.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Bytes that go out as they are: the magic, `Hello` and handshake frames, plain
    /// text, and every frame of an unencrypted connection.
    queued: Vec<u8>,
    /// Frames for the secure channel, in the clear until taken.
    inner: Vec<u8>,
    sealing: Sealing,
    in_flight: usize,
    max: usize,
    wire: Wire,
    /// Our session stream, kept until acknowledged, once the session layer is on
    /// (`session.rs`); `None` on a connection without it.
    retained: Option<Retained>,
    /// The bound on `retained`, checked like `max` by [`Outbound::try_push`].
    max_retained: usize,
    /// Whether session frames also go on the wire now. Not while the connection is
    /// lost, nor on a new one until the other side said where to resume: they are
    /// only kept then, and sent with [`Outbound::resend_from`].
    session_on_wire: bool,
    /// While resending after a resume: the stream offset of the next byte to resend.
    /// The kept stream goes on the wire as the queue makes room (a long absence must
    /// not become one burst past the bound); frames sent meanwhile queue behind it.
    resend_at: Option<u64>,
    /// Where our latest `Ack` sits while it is still queued (in `inner` or not, and
    /// its offset): a newer one overwrites it instead of queueing another, since each
    /// says everything the ones before it said. A reader on a slow uplink would
    /// otherwise queue an `Ack` per read.
    unsent_ack: Option<(bool, usize)>,
    /// How many bytes the last batch handed to the driver held: the next batch
    /// starts with room for as many (see [`Outbound::target`]).
    last_batch: usize,
}

/// The most room a new batch reserves from the last one's size.
const MAX_BATCH_HINT: usize = 64 * 1024;

impl Outbound {
    pub(crate) fn new(max: usize) -> Self {
        Outbound {
            queued: Vec::new(),
            inner: Vec::new(),
            sealing: Sealing::Clear,
            in_flight: 0,
            max,
            wire: Wire::Framed,
            retained: None,
            max_retained: usize::MAX,
            session_on_wire: true,
            resend_at: None,
            unsent_ack: None,
            last_batch: 0,
        }
    }

    /// Queues `Ack { received }`, or raises the one still queued to it; returns
    /// whether it did. A new `Ack` is not queued past the bound (a later one says the
    /// same and more, once the queue drains).
    pub(crate) fn push_ack(&mut self, received: u64) -> bool {
        let in_inner = self.sealing != Sealing::Clear;
        if let Some((was_inner, at)) = self.unsent_ack
            && was_inner == in_inner
        {
            let target = self.target();
            if target.get(at..at + 5) == Some(&[0, 0, 0, 9, 0x61][..])
                && let Some(field) = target.get_mut(at + 5..at + 13)
            {
                field.copy_from_slice(&received.to_be_bytes());
                return true;
            }
        }
        if self.pending() + 13 > self.max {
            return false;
        }
        let at = self.mark();
        self.push(&Frame::Ack { received });
        if self.wire == Wire::Framed && self.mark() == at + 13 {
            self.unsent_ack = Some((in_inner, at));
        }
        true
    }

    // ----- the session layer ------------------------------------------------------

    /// From now on, session frames are kept until acknowledged, at most `max` bytes
    /// of them (a push past that fails like one past the queue's bound).
    pub(crate) fn retain_session(&mut self, max: usize) {
        if self.retained.is_none() && self.wire == Wire::Framed {
            self.retained = Some(Retained::default());
        }
        self.max_retained = max;
    }

    /// Gives back the memory of a session stream that is all acknowledged.
    pub(crate) fn release_if_idle(&mut self) {
        if let Some(r) = self.retained.as_mut() {
            r.release_if_idle();
        }
    }

    /// Bytes of our session stream not yet acknowledged.
    pub(crate) fn unacked(&self) -> usize {
        self.retained.as_ref().map_or(0, Retained::len)
    }

    /// The offset in our session stream just past what was sent so far.
    pub(crate) fn stream_end(&self) -> u64 {
        self.retained.as_ref().map_or(0, Retained::end)
    }

    /// The other side handled our session stream up to `upto`.
    pub(crate) fn acknowledge(&mut self, upto: u64) -> Result<(), BeyondSent> {
        match self.retained.as_mut() {
            Some(r) => r.acknowledge(upto),
            None => Ok(()),
        }
    }

    /// Session frames are kept but not sent, until [`Outbound::resend_from`].
    pub(crate) fn hold_session_frames(&mut self) {
        self.session_on_wire = false;
    }

    /// The other side holds our session stream up to `from`: the rest goes on the
    /// wire (behind whatever is queued) as the queue makes room, and later session
    /// frames behind it.
    pub(crate) fn resend_from(&mut self, from: u64) -> Result<(), BeyondSent> {
        let Some(retained) = self.retained.as_mut() else {
            self.session_on_wire = true;
            return Ok(());
        };
        retained.resend_from(from)?;
        self.resend_at = Some(from);
        self.refill();
        Ok(())
    }

    /// The session moved to another relay, which holds none of our stream: what is
    /// kept becomes the stream's beginning (offset 0) and is all sent again. Returns
    /// the sequence numbers of the chat messages among it.
    pub(crate) fn resend_all_anew(&mut self) -> Vec<u64> {
        let Some(retained) = self.retained.as_mut() else {
            self.session_on_wire = true;
            return Vec::new();
        };
        retained.rebase_to_zero();
        let kept = retained.bytes_from(0);
        let seqs = encoded_frames(kept)
            .filter(|(ty, _)| *ty == crate::frame::ty::CHAT)
            .filter_map(|(ty, span)| {
                let body = kept.get(span.start + 5..span.end)?;
                match Frame::decode(ty, body) {
                    Ok(Frame::Chat { seq, .. }) => Some(seq),
                    _ => None,
                }
            })
            .collect();
        let _ = self.resend_from(0);
        seqs
    }

    /// Moves the next frames of the stream being resent onto the wire, as many as
    /// the bound leaves room for (at least one when the queue is empty).
    fn refill(&mut self) {
        let pending = self.pending();
        let room = self.max.saturating_sub(pending);
        let (Some(at), Some(retained)) = (self.resend_at, self.retained.as_mut()) else {
            return;
        };
        let n = retained.whole_frames(at, room, pending == 0);
        let rest = retained.bytes_from(at);
        // `self.target()`, spelt out: `retained` is borrowed alongside.
        let target = match self.sealing {
            Sealing::Clear => &mut self.queued,
            Sealing::Hold | Sealing::Seal => &mut self.inner,
        };
        target.extend_from_slice(rest.get(..n).unwrap_or_default());
        if n == rest.len() {
            self.resend_at = None;
            self.session_on_wire = true;
        } else {
            self.resend_at = Some(at + n as u64);
        }
    }

    /// The session stream kept, from its first unacknowledged byte: where that is,
    /// and the bytes (for a saved session).
    pub(crate) fn retained_bytes(&mut self) -> Option<(u64, &[u8])> {
        let retained = self.retained.as_mut()?;
        let base = retained.base();
        Some((base, retained.bytes_from(base)))
    }

    /// Takes the kept session stream away (to carry it to the next connection).
    pub(crate) fn take_retained(&mut self) -> Option<Retained> {
        self.retained.take()
    }

    /// Carries on the session stream of an earlier connection; its frames wait for
    /// [`Outbound::resend_from`].
    pub(crate) fn adopt_retained(&mut self, retained: Retained, max: usize) {
        self.retained = Some(retained);
        self.max_retained = max;
        self.session_on_wire = false;
    }

    /// The frames appended to the target buffer since `before` were accepted: the
    /// session layer keeps its copy, and takes them off the wire while it holds them.
    fn retain_appended(&mut self, before: usize) {
        let Some(retained) = self.retained.as_mut() else {
            return;
        };
        // `self.target()`, spelt out: `retained` is borrowed alongside.
        let target = match self.sealing {
            Sealing::Clear => &mut self.queued,
            Sealing::Hold | Sealing::Seal => &mut self.inner,
        };
        let appended = target.get(before..).unwrap_or_default();
        retained.keep_session_frames(appended);
        if !self.session_on_wire {
            // Only link frames (a Pong, an Ack, a Resume) go out now.
            let mut links = Vec::new();
            for (ty, span) in encoded_frames(appended) {
                if !is_session_frame(ty) {
                    links.extend_from_slice(appended.get(span).unwrap_or_default());
                }
            }
            target.truncate(before);
            target.extend_from_slice(&links);
        }
    }

    /// Whether what is queued now, `new` bytes of it just appended, stays under both
    /// bounds: the queue's and the retained stream's.
    fn fits(&self, new: usize) -> bool {
        self.pending() <= self.max && self.retained_room(new)
    }

    /// Whether `new` more bytes of session stream fit under the retention bound.
    fn retained_room(&self, new: usize) -> bool {
        self.retained
            .as_ref()
            .is_none_or(|r| r.len() + new <= self.max_retained)
    }

    /// Switches to plain text, dropping whatever binary was queued but not handed to
    /// the driver (the magic and `Hello` of a side that has not spoken yet).
    pub(crate) fn switch_to_text(&mut self) {
        self.unsent_ack = None;
        self.wire = Wire::Text;
        self.sealing = Sealing::Clear;
        self.queued.clear();
        self.inner.clear();
    }

    /// From now on frames wait for the secure channel (the handshake has begun).
    pub(crate) fn hold_for_channel(&mut self) {
        if self.sealing == Sealing::Clear {
            self.sealing = Sealing::Hold;
        }
    }

    /// The secure channel exists: held frames and later ones are sealed when taken.
    pub(crate) fn seal_from_now(&mut self) {
        self.sealing = Sealing::Seal;
    }

    /// No encryption after all (both sides agreed on plain frames): held frames go out
    /// as they are.
    pub(crate) fn release_in_clear(&mut self) {
        self.unsent_ack = None;
        if self.sealing == Sealing::Hold {
            self.sealing = Sealing::Clear;
            let held = std::mem::take(&mut self.inner);
            self.queued.extend_from_slice(&held);
        }
    }

    /// Where a frame queued now is written.
    fn target(&mut self) -> &mut Vec<u8> {
        match self.sealing {
            Sealing::Clear => &mut self.queued,
            Sealing::Hold | Sealing::Seal => &mut self.inner,
        }
    }

    fn encode(&mut self, frame: &Frame) {
        match self.wire {
            Wire::Framed => frame.encode(self.target()),
            Wire::Text => crate::text::render(frame, &mut self.queued),
        }
    }

    /// Bytes queued or handed to the driver and not yet confirmed written.
    pub(crate) fn pending(&self) -> usize {
        self.queued.len() + self.inner.len() + self.in_flight
    }

    /// Queues a frame whatever the bound; for the few frames that must go out (a final
    /// `Close`, a handshake reply) and for callers that checked the room first.
    pub(crate) fn push(&mut self, frame: &Frame) {
        if matches!(frame, Frame::Close { .. }) {
            // The connection ends here: what was not resent yet stays unsent (the
            // session is over, and its owner names what was not confirmed).
            self.resend_at = None;
            self.session_on_wire = true;
        }
        let before = self.mark();
        self.encode(frame);
        if self.wire == Wire::Framed {
            self.retain_appended(before);
        }
    }

    /// Queues a reply that must reach the other side even before the channel exists
    /// (a `Close` or `Refused` during the handshake): in the channel if there is one,
    /// else in the clear.
    pub(crate) fn push_reply(&mut self, frame: &Frame) {
        if self.sealing == Sealing::Hold {
            self.push_outer(frame);
        } else {
            self.push(frame);
        }
    }

    /// Queues a frame outside the secure channel (the `Hello` and handshake frames),
    /// whatever the bound.
    pub(crate) fn push_outer(&mut self, frame: &Frame) {
        frame.encode(&mut self.queued);
    }

    /// Queues a frame that `encode` appends, whatever the bound (framed links only).
    pub(crate) fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.wire == Wire::Framed {
            let before = self.mark();
            encode(self.target());
            self.retain_appended(before);
        }
    }

    /// Queues raw bytes (the magic, a plain-text notice) whatever the bound, outside
    /// the secure channel.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        self.queued.extend_from_slice(bytes);
    }

    /// Queues a frame only if it fits under the bound; returns whether it did.
    pub(crate) fn try_push(&mut self, frame: &Frame) -> bool {
        let before = self.mark();
        self.encode(frame);
        self.keep_if_room(before)
    }

    /// Queues a `Deliver` made of borrowed parts if it fits under the bound: the
    /// relay's hot path, which copies the payload once, from the sender's bytes into
    /// this queue.
    pub(crate) fn try_push_deliver(&mut self, from: ClientId, chat: &ChatRef<'_>) -> bool {
        // A batch handed to the driver takes its buffer along, so the next one starts
        // empty; a batch of deliveries gets room for as much as the last batch held,
        // instead of growing by doubling (a dozen reallocations and copies a batch on
        // a busy connection). Only here: a broadcast batch is appended whole (its size
        // known), and a hint left by a large roster must not make every one of
        // 10,000 recipients of a broadcast reserve that much.
        let hint = self.last_batch;
        let target = self.target();
        if target.capacity() == 0 && hint > 0 {
            target.reserve(hint);
        }
        let before = self.mark();
        match self.wire {
            Wire::Framed => {
                encode_deliver(self.target(), from, chat.to, chat.seq, chat.kind, chat.body)
            }
            Wire::Text => crate::text::render_deliver(&mut self.queued, from, chat.kind, chat.body),
        }
        self.keep_if_room(before)
    }

    /// Queues already-encoded `Deliver` frames (`bytes`, each ending where `ends`
    /// says), all of them if they fit, else as many as fit, in order; `Err` gives the
    /// sequence number of the first that did not. A plain-text link renders each.
    pub(crate) fn try_push_deliveries(
        &mut self,
        bytes: &[u8],
        ends: &[(u64, usize)],
    ) -> Result<(), u64> {
        if self.wire == Wire::Framed {
            let before = self.mark();
            self.target().extend_from_slice(bytes);
            if self.keep_if_room(before) {
                return Ok(());
            }
        }
        let mut start = 0;
        for &(seq, end) in ends {
            let frame = bytes.get(start..end).unwrap_or_default();
            start = end;
            let before = self.mark();
            match self.wire {
                Wire::Framed => self.target().extend_from_slice(frame),
                Wire::Text => {
                    if let Some(decoded) = decode_one(frame) {
                        crate::text::render(&decoded, &mut self.queued);
                    }
                }
            }
            if !self.keep_if_room(before) {
                return Err(seq);
            }
        }
        Ok(())
    }

    /// As [`Outbound::try_push_deliveries`], for a broadcast batch that other
    /// recipients queue too: the session layer keeps the batch itself (shared), not
    /// a copy of it. Only while session frames go on the wire as they are queued;
    /// otherwise (a resend under way, a lost connection) it is copied as usual.
    pub(crate) fn try_push_shared_deliveries(
        &mut self,
        batch: &Arc<[u8]>,
        ends: &[(u64, usize)],
    ) -> Result<(), u64> {
        if self.wire == Wire::Framed
            && self.session_on_wire
            && self.resend_at.is_none()
            && self.retained.is_some()
        {
            let before = self.mark();
            self.target().extend_from_slice(batch);
            if self.fits(batch.len()) {
                if let Some(retained) = self.retained.as_mut() {
                    retained.keep_shared(batch);
                }
                return Ok(());
            }
            self.target().truncate(before);
        }
        self.try_push_deliveries(batch, ends)
    }

    /// The length of the buffer a frame queued now goes to.
    fn mark(&mut self) -> usize {
        match self.wire {
            Wire::Framed => self.target().len(),
            Wire::Text => self.queued.len(),
        }
    }

    /// Keeps what was queued after `before` if the bounds allow (the session layer
    /// keeping its copy), else takes it back.
    fn keep_if_room(&mut self, before: usize) -> bool {
        let new = self.mark().saturating_sub(before);
        if !self.fits(new) {
            match self.wire {
                Wire::Framed => self.target().truncate(before),
                Wire::Text => self.queued.truncate(before),
            }
            false
        } else {
            if self.wire == Wire::Framed {
                self.retain_appended(before);
            }
            true
        }
    }

    /// Drops everything not yet handed to the driver (used when cutting off a
    /// connection, so that its `Close` is the next thing it reads).
    pub(crate) fn discard_queued(&mut self) -> usize {
        self.unsent_ack = None;
        let n = self.queued.len() + self.inner.len();
        self.inner.clear();
        if self.sealing != Sealing::Seal {
            self.queued.clear();
        }
        n
    }

    /// Whether [`Outbound::take`] has anything to give.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queued.is_empty() || (self.sealing == Sealing::Seal && !self.inner.is_empty())
    }

    /// Hands all queued bytes to the driver as one batch (one write, not one per frame),
    /// sealing what the secure channel carries.
    pub(crate) fn take(&mut self, channel: Option<&mut SecureChannel>) -> Option<Vec<u8>> {
        self.unsent_ack = None;
        if self.sealing == Sealing::Seal
            && !self.inner.is_empty()
            && let Some(channel) = channel
        {
            channel.seal(&self.inner, &mut self.queued);
            self.inner.clear();
        }
        if self.queued.is_empty() {
            return None;
        }
        let bytes = core::mem::take(&mut self.queued);
        self.in_flight += bytes.len();
        self.last_batch = bytes.len().min(MAX_BATCH_HINT);
        Some(bytes)
    }

    /// The driver wrote `n` bytes of what it took: room for more of a resend.
    pub(crate) fn confirm_written(&mut self, n: usize) {
        self.in_flight = self.in_flight.saturating_sub(n);
        self.refill();
    }
}

/// The frame `bytes` encode (its length prefix included), for rendering it in text.
fn decode_one(bytes: &[u8]) -> Option<Frame> {
    let (&type_byte, body) = bytes.get(4..)?.split_first()?;
    Frame::decode(type_byte, body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_bytes_count_against_the_bound_until_confirmed() {
        let mut out = Outbound::new(30);
        assert!(out.try_push(&Frame::Ping(1))); // 13 bytes
        let batch = out.take(None).unwrap();
        assert_eq!(out.pending(), batch.len());
        assert!(out.try_push(&Frame::Ping(2)));
        assert!(!out.try_push(&Frame::Ping(3)), "13 + 13 + 13 > 30");
        out.confirm_written(batch.len());
        assert!(out.try_push(&Frame::Ping(3)));
    }

    #[test]
    fn a_queued_ack_is_raised_in_place_and_a_taken_one_is_not() {
        let mut out = Outbound::new(1000);
        out.push_ack(5);
        out.push(&Frame::Ping(1));
        out.push_ack(9);
        let mut expected = Frame::Ack { received: 9 }.to_bytes();
        Frame::Ping(1).encode(&mut expected);
        assert_eq!(
            out.take(None).unwrap(),
            expected,
            "one Ack, the latest value"
        );
        out.push_ack(12);
        assert_eq!(
            out.take(None).unwrap(),
            Frame::Ack { received: 12 }.to_bytes()
        );
    }

    #[test]
    fn a_refused_frame_leaves_the_queue_as_it_was() {
        let mut out = Outbound::new(20);
        assert!(out.try_push(&Frame::Ping(1)));
        assert!(!out.try_push(&Frame::Ping(2)));
        assert_eq!(out.take(None).unwrap(), Frame::Ping(1).to_bytes());
    }

    #[test]
    fn frames_held_for_the_channel_wait_and_go_out_in_the_clear_if_it_is_called_off() {
        let mut out = Outbound::new(1000);
        out.push_bytes(b"magic");
        out.hold_for_channel();
        out.push(&Frame::Ping(1));
        out.push_outer(&Frame::Pong(2));
        let mut expected = b"magic".to_vec();
        Frame::Pong(2).encode(&mut expected);
        assert_eq!(out.take(None).unwrap(), expected, "the held Ping waits");
        out.release_in_clear();
        assert_eq!(out.take(None).unwrap(), Frame::Ping(1).to_bytes());
    }
}
