//! The incremental decoder: turns a byte stream, delivered in pieces of any size,
//! into frames.
//!
//! TCP hands over bytes, not messages: a read may hold half a frame or ten of them.
//! [`FrameDecoder`] buffers at most one unfinished frame (bounded by the maximum frame
//! length, checked as soon as the length prefix is in) and fails with a typed
//! [`DecodeError`] on anything that is not protocol v1; it never panics.

use crate::error::DecodeError;
use crate::frame::{Frame, is_session_frame};
use crate::limits::MAGIC;

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Matching the magic; the number of magic bytes seen so far.
    Magic(usize),
    /// Reading length-prefixed frames.
    Frames,
    /// A decode error happened; framing is lost.
    Failed,
}

/// One frame as it arrived: its type byte and its body, borrowed from the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The frame type (see `docs/PROTOCOL.md`, "Frame catalogue").
    pub type_byte: u8,
    /// The body: everything after the type byte.
    pub body: &'a [u8],
}

impl RawFrame<'_> {
    /// Bytes this frame adds to its sender's session stream (`docs/PROTOCOL.md` 5b):
    /// all of it, header included, or 0 for a link frame. What a side acknowledges
    /// is the sum of these over what it handled.
    pub fn session_bytes(&self) -> u64 {
        if is_session_frame(self.type_byte) {
            5 + self.body.len() as u64
        } else {
            0
        }
    }
}

/// Decodes one direction of one connection: the magic, then frames.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already consumed.
    pos: usize,
    max_frame_len: u32,
    state: State,
    /// Whether the whole magic arrived (stays true if a later frame fails).
    magic_complete: bool,
}

impl FrameDecoder {
    /// A decoder for a stream that opens with [`MAGIC`], with frames of at most
    /// `max_frame_len` bytes (type byte and body).
    pub fn new(max_frame_len: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max_frame_len,
            state: State::Magic(0),
            magic_complete: false,
        }
    }

    /// A decoder for a stream of bare frames, without the magic (for tests and tools
    /// that look at frames in isolation).
    pub fn without_magic(max_frame_len: u32) -> Self {
        FrameDecoder {
            state: State::Frames,
            magic_complete: true,
            ..FrameDecoder::new(max_frame_len)
        }
    }

    /// Whether the whole magic has arrived: the other side speaks p2pchat (even if it
    /// then sent something undecodable, so that it can be told why in its own language).
    pub fn magic_seen(&self) -> bool {
        self.magic_complete
    }

    /// Bytes held but not yet decoded (at most one partial frame after draining).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Adds bytes from the stream. Call [`FrameDecoder::next_frame`] until it returns
    /// `Ok(None)` after each push, so that at most one partial frame stays buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.state == State::Failed {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the error that
    /// ended the stream. After an error every call returns [`DecodeError::AlreadyFailed`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let decoded = match self.next_raw() {
            Ok(Some(raw)) => Frame::decode(raw.type_byte, raw.body).map(Some),
            other => return other.map(|_| None),
        };
        if decoded.is_err() {
            self.fail();
        }
        decoded
    }

    /// The next complete frame as its type byte and body, not yet decoded: for a relay
    /// that routes a message by its header without copying the payload. The caller
    /// decodes it (and calls [`FrameDecoder::fail`] if that fails).
    pub fn next_raw(&mut self) -> Result<Option<RawFrame<'_>>, DecodeError> {
        match self.next_span() {
            Ok(Some((type_byte, start, end))) => Ok(Some(RawFrame {
                type_byte,
                body: self.buf.get(start..end).unwrap_or_default(),
            })),
            Ok(None) => Ok(None),
            Err(e) => {
                self.fail();
                Err(e)
            }
        }
    }

    /// Marks the stream as broken (a frame could not be decoded): framing is lost.
    pub fn fail(&mut self) {
        self.state = State::Failed;
        self.buf = Vec::new();
        self.pos = 0;
    }

    /// Finds the next complete frame and consumes it: its type byte and where its body
    /// lies in `buf`.
    fn next_span(&mut self) -> Result<Option<(u8, usize, usize)>, DecodeError> {
        if let State::Magic(seen) = self.state {
            let seen = self.match_magic(seen)?;
            if seen < MAGIC.len() {
                self.state = State::Magic(seen);
                return Ok(None);
            }
            self.state = State::Frames;
            self.magic_complete = true;
        }
        if self.state == State::Failed {
            return Err(DecodeError::AlreadyFailed);
        }
        let available = self.buf.get(self.pos..).unwrap_or_default();
        let Some((type_byte, body, rest)) = split_frame(available, self.max_frame_len)? else {
            return Ok(None);
        };
        let body_start = self.pos + 5;
        let body_end = body_start + body.len();
        self.pos = self.buf.len() - rest.len();
        Ok(Some((type_byte, body_start, body_end)))
    }

    /// Decodes every frame the stream holds once `bytes` are added, handing each to
    /// `on_frame` as it goes: frames that lie whole in `bytes` are read in place, with
    /// no copy, and only an unfinished frame at the end is kept for the next call.
    ///
    /// `on_frame` returns whether to go on; when it returns false (the connection is
    /// closing, or the frame could not be decoded: then call [`FrameDecoder::fail`]),
    /// the rest of `bytes` is dropped. The error returned, if any, ended the stream
    /// after the frames before it were handed over.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_frame: impl FnMut(RawFrame<'_>) -> bool,
    ) -> Result<(), DecodeError> {
        if let State::Magic(mut seen) = self.state {
            while let Some(&expected) = MAGIC.get(seen) {
                let Some((&byte, rest)) = bytes.split_first() else {
                    self.state = State::Magic(seen);
                    return Ok(());
                };
                if byte != expected {
                    self.fail();
                    return Err(DecodeError::BadMagic { first: byte });
                }
                seen += 1;
                bytes = rest;
            }
            self.state = State::Frames;
            self.magic_complete = true;
        }
        if self.state == State::Failed {
            return Err(DecodeError::AlreadyFailed);
        }
        // First the frame left unfinished by earlier bytes: complete it from `bytes`.
        if self.pos < self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
            let complete = match self.take_rest_of_frame(&mut bytes) {
                Ok(complete) => complete,
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            };
            if !complete {
                return Ok(());
            }
            let whole = std::mem::take(&mut self.buf);
            let go_on = match split_frame(&whole, self.max_frame_len) {
                Ok(Some((type_byte, body, _))) => on_frame(RawFrame { type_byte, body }),
                Ok(None) => true,
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            };
            // Keep the allocation for the next unfinished frame.
            self.buf = whole;
            self.buf.clear();
            if !go_on {
                return Ok(());
            }
        } else {
            self.buf.clear();
            self.pos = 0;
        }
        // Then every whole frame, read where it lies.
        loop {
            match split_frame(bytes, self.max_frame_len) {
                Ok(Some((type_byte, body, rest))) => {
                    bytes = rest;
                    if !on_frame(RawFrame { type_byte, body }) {
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Moves from `bytes` into `buf` what the unfinished frame in `buf` still lacks;
    /// returns whether it is complete. Fails as soon as its length is known to be
    /// too large.
    fn take_rest_of_frame(&mut self, bytes: &mut &[u8]) -> Result<bool, DecodeError> {
        let mut take = |buf: &mut Vec<u8>, upto: usize| {
            let n = upto.saturating_sub(buf.len()).min(bytes.len());
            let (head, rest) = bytes.split_at(n);
            buf.extend_from_slice(head);
            *bytes = rest;
            buf.len() >= upto
        };
        if !take(&mut self.buf, 4) {
            return Ok(false);
        }
        let len = frame_len(&self.buf, self.max_frame_len)?;
        Ok(take(&mut self.buf, 4 + len))
    }

    /// Consumes magic bytes one at a time, so that a stream that is not p2pchat is
    /// recognised from its very first byte.
    fn match_magic(&mut self, mut seen: usize) -> Result<usize, DecodeError> {
        while let (Some(&expected), Some(&byte)) = (MAGIC.get(seen), self.buf.get(self.pos)) {
            if byte != expected {
                return Err(DecodeError::BadMagic { first: byte });
            }
            seen += 1;
            self.pos += 1;
        }
        Ok(seen)
    }
}

/// The length of the frame at the start of `bytes` (its type byte and body), checked
/// against the maximum as soon as the four length bytes are there.
fn frame_len(bytes: &[u8], max_frame_len: u32) -> Result<usize, DecodeError> {
    let Some(len_bytes) = bytes.first_chunk::<4>() else {
        return Ok(0);
    };
    let len = u32::from_be_bytes(*len_bytes);
    if len > max_frame_len {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: max_frame_len,
        });
    }
    if len == 0 {
        return Err(DecodeError::Malformed {
            frame: "frame",
            problem: "length 0 leaves no room for the type byte",
        });
    }
    Ok(len as usize)
}

/// A frame's type byte, its body, and the bytes after it.
type Split<'a> = (u8, &'a [u8], &'a [u8]);

/// The first frame of `bytes`, if it is complete: its type byte, its body, and the
/// bytes after it. The one place that knows where a frame ends.
fn split_frame(bytes: &[u8], max_frame_len: u32) -> Result<Option<Split<'_>>, DecodeError> {
    if bytes.len() < 4 {
        return Ok(None);
    }
    let len = frame_len(bytes, max_frame_len)?;
    let Some(frame) = bytes.get(4..4 + len) else {
        return Ok(None);
    };
    let Some((&type_byte, body)) = frame.split_first() else {
        return Ok(None);
    };
    Ok(Some((
        type_byte,
        body,
        bytes.get(4 + len..).unwrap_or_default(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn stream(frames: &[Frame]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for f in frames {
            f.encode(&mut out);
        }
        out
    }

    #[test]
    fn decodes_frames_fed_one_byte_at_a_time() {
        let frames = vec![Frame::Ping(7), Frame::Exit, Frame::Pong(7)];
        let mut d = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for b in stream(&frames) {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert_eq!(d.buffered_len(), 0);
    }

    #[test]
    fn rejects_an_oversized_length_before_buffering_the_body() {
        let mut d = FrameDecoder::without_magic(100);
        d.push(&[0, 0, 0, 101]);
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge { len: 101, max: 100 })
        );
        assert_eq!(d.next_frame(), Err(DecodeError::AlreadyFailed));
    }

    #[test]
    fn text_instead_of_magic_fails_at_the_first_byte() {
        let mut d = FrameDecoder::new(100);
        d.push(b"h");
        assert_eq!(d.next_frame(), Err(DecodeError::BadMagic { first: b'h' }));
    }

    #[test]
    fn the_magic_counts_as_seen_even_when_the_first_frame_fails() {
        let mut d = FrameDecoder::new(100);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[0x7F, 0, 0, 0, 0x10]);
        d.push(&bytes);
        assert!(matches!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        assert!(d.magic_seen());
    }

    #[test]
    fn zero_length_is_malformed() {
        let mut d = FrameDecoder::without_magic(100);
        d.push(&[0, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn unknown_type_is_its_own_error() {
        let mut d = FrameDecoder::without_magic(100);
        d.push(&[0, 0, 0, 1, 0x7E]);
        assert_eq!(d.next_frame(), Err(DecodeError::UnknownFrameType(0x7E)));
    }
}
