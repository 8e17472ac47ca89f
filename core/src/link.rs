//! One connection's plumbing, shared by the single-connection machines
//! ([`crate::RelayClient`] and [`crate::Peer`]): the decoder, the bounded outbound
//! queue, keepalive, and the open / closing / closed life cycle.
//!
//! Keeping it in one place means the client and the peer cannot drift apart on how a
//! connection is closed, how bytes are accounted, or when a ping is due.

use crate::decode::FrameDecoder;
use crate::error::{DecodeError, ErrorCode};
use crate::frame::Frame;
use crate::keepalive::{Keepalive, KeepaliveAction};
use crate::limits::{Limits, MAGIC};
use crate::outbound::Outbound;
use crate::time::Timestamp;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Frames flow both ways.
    Open,
    /// We decided to close: the last bytes are queued, nothing more is read or sent.
    Closing,
    /// The transport is gone.
    Closed,
}

/// Decoder, outbound queue and keepalive of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    decoder: FrameDecoder,
    out: Outbound,
    keepalive: Keepalive,
    /// Whether queued bytes may go out yet: an accepting side stays silent until the
    /// other side's magic proves it speaks p2pchat.
    gate_open: bool,
    state: LinkState,
}

impl Link {
    /// A link that has queued the magic. With `speak_first` false the magic (and
    /// whatever follows) waits until the other side's magic has arrived.
    pub(crate) fn new(limits: &Limits, now: Timestamp, speak_first: bool) -> Self {
        let mut out = Outbound::new(limits.max_outbound_bytes);
        out.push_bytes(&MAGIC);
        Link {
            decoder: FrameDecoder::new(limits.max_frame_len),
            out,
            keepalive: Keepalive::new(limits, now),
            gate_open: speak_first,
            state: LinkState::Open,
        }
    }

    pub(crate) fn state(&self) -> LinkState {
        self.state
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == LinkState::Open
    }

    /// Queues a protocol frame regardless of the bound (handshake, pong, exit).
    pub(crate) fn send(&mut self, frame: &Frame, now: Timestamp) {
        if self.is_open() {
            self.out.push(frame);
            self.keepalive.on_sent(now);
        }
    }

    /// Queues a user frame if it fits under the bound.
    pub(crate) fn try_send(&mut self, frame: &Frame, now: Timestamp) -> bool {
        if self.is_open() && self.out.try_push(frame) {
            self.keepalive.on_sent(now);
            true
        } else {
            false
        }
    }

    /// Bytes queued or in flight.
    pub(crate) fn pending(&self) -> usize {
        self.out.pending()
    }

    /// Feeds received bytes to the decoder.
    pub(crate) fn feed(&mut self, bytes: &[u8], now: Timestamp) {
        if self.is_open() {
            self.keepalive.on_received(now);
            self.decoder.push(bytes);
            if self.decoder.magic_seen() {
                self.gate_open = true;
            }
        }
    }

    /// The next decoded frame, if the link is open.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if !self.is_open() {
            return Ok(None);
        }
        let frame = self.decoder.next_frame();
        if self.decoder.magic_seen() {
            self.gate_open = true;
        }
        frame
    }

    /// Queues a `Close` saying why and stops reading and sending. A side that has not
    /// spoken yet (an acceptor facing a stream that is not p2pchat) sends nothing.
    pub(crate) fn close(&mut self, code: ErrorCode, message: &str) {
        if self.is_open() && !self.gate_open {
            self.state = LinkState::Closing;
        } else if self.is_open() {
            self.out.push(&Frame::Close {
                code,
                message: message.to_owned(),
            });
            self.state = LinkState::Closing;
        }
    }

    /// Stops without sending anything more (both sides are done, or the other side is
    /// unreachable).
    pub(crate) fn finish(&mut self) {
        if self.is_open() {
            self.state = LinkState::Closing;
        }
    }

    /// The transport reported the connection gone.
    pub(crate) fn transport_closed(&mut self) {
        self.state = LinkState::Closed;
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if !self.gate_open || self.state == LinkState::Closed {
            return None;
        }
        self.out.take()
    }

    pub(crate) fn confirm_written(&mut self, n: usize) {
        self.out.confirm_written(n);
    }

    /// Whether the driver should close the transport once queued bytes are written.
    pub(crate) fn wants_close(&self) -> bool {
        self.state == LinkState::Closing
    }

    /// Runs keepalive at `now`; sends the ping itself and reports expiry.
    pub(crate) fn poll_keepalive(&mut self, now: Timestamp) -> KeepaliveAction {
        if !self.is_open() {
            return KeepaliveAction::Nothing;
        }
        let action = self.keepalive.poll(now);
        if let KeepaliveAction::SendPing(nonce) = action {
            self.out.push(&Frame::Ping(nonce));
        }
        action
    }

    pub(crate) fn timeout(&self) -> Option<Timestamp> {
        self.is_open().then(|| self.keepalive.deadline())
    }

    /// A sentence for a peer that went silent.
    pub(crate) fn silence_message(&self) -> String {
        format!(
            "nothing heard from the other side for {} s; it is gone",
            self.keepalive.idle_timeout().as_secs()
        )
    }
}
