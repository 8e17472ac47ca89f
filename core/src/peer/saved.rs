//! One side of a direct conversation, saved so that `connect` or `listen`, started
//! again after its process died, comes back to the conversation: the other side is
//! still waiting for it (its grace period), and nothing is lost or repeated.
//!
//! What is saved is the session layer's half of the conversation (`resume.rs`):
//! the token, how much of the other side's stream was handled, our stream not yet
//! acknowledged and the messages in it, the sequence numbers, who said exit, and
//! the other side's key (a returning connection must prove it again). The envelope,
//! the hash and the identity check are `crate::saved`'s; the driver saves as the
//! relay client's does (see `p2pchat_tcp::SessionStore`).

use super::{Peer, PeerSide, resume::PeerSession};
use crate::frame::Role;
use crate::handshake::our_hello;
use crate::limits::Limits;
use crate::link::Link;
use crate::saved::{
    RestoreError, SavePoint, check_identity, open, read_stream, save_identity, save_stream, seal,
};
use crate::secure::Security;
use crate::time::Timestamp;
use crate::wire::Writer;

/// The first bytes of a saved direct conversation (and its format's version).
const MAGIC: &[u8; 8] = b"p2pcS\x00\x01D";

impl Peer {
    /// Where the conversation stands, for the driver to tell whether it must be
    /// saved again; `None` while there is nothing another process could resume (no
    /// session layer, no token yet, plain text, over, or a file under way): the
    /// driver then forgets what it saved.
    pub fn save_point(&self) -> Option<SavePoint> {
        if self.over || self.link.is_plain_text() || !self.session.is_saveable() {
            return None;
        }
        // While a file is under way, chat is what a save waits for, not its chunks
        // (see `RelayClient::save_point`).
        let files_busy = !self.files.is_idle();
        Some(SavePoint {
            received: if files_busy {
                self.chat_seen
            } else {
                self.session.received()
            },
            // Our chat, not the transfer's messages (each takes a sequence number).
            sent: if files_busy {
                self.session.last_unconfirmed()
            } else {
                self.link.stream_end()
            },
            files_busy,
            transfers: self.files.under_way(),
            next_seq: if files_busy { 0 } else { self.next_seq },
            unconfirmed: self.session.unconfirmed(),
            exited: self.we_exited,
            id: u32::from(self.they_exited),
        })
    }

    /// The conversation, saved; `None` when [`Peer::save_point`] is `None`.
    pub fn save(&mut self) -> Option<Vec<u8>> {
        self.save_point()?;
        let mut out = Vec::with_capacity(256 + self.link.unacked());
        out.extend_from_slice(MAGIC);
        let mut w = Writer::new(&mut out);
        w.u8(match self.side {
            PeerSide::Connector => 0,
            PeerSide::Acceptor => 1,
        });
        w.str8(&self.own_hello.name);
        w.str8(self.remote_name().unwrap_or_default());
        save_identity(&mut w, &self.security);
        w.u64(self.next_seq);
        w.u64(self.last_remote_seq);
        w.u8(u8::from(self.we_exited) | u8::from(self.they_exited) << 1);
        self.session.save(&mut w);
        self.files.save(&mut w);
        save_stream(&mut out, &mut self.link);
        Some(seal(out))
    }

    /// A peer restored from `saved` ([`Peer::save`]), away from its conversation:
    /// the connecting side then dials, the listening side listens, and either calls
    /// [`Peer::handle_reconnected`] on the new connection. If the other side no
    /// longer waits, the conversation ends with `resume-failed`.
    pub fn restore(
        saved: &[u8],
        limits: Limits,
        security: Security,
        now: Timestamp,
    ) -> Result<Peer, RestoreError> {
        let mut r = open(saved, MAGIC, "direct")?;
        let side = match r.u8()? {
            0 => PeerSide::Connector,
            _ => PeerSide::Acceptor,
        };
        let name = r.str8("saved name")?;
        let remote_name = r.str8("saved peer name")?;
        check_identity(&mut r, &security)?;
        let next_seq = r.u64()?;
        let last_remote_seq = r.u64()?;
        let exits = r.u8()?;
        let session = PeerSession::restore(&mut r, now)?;
        let mut files =
            crate::file::Files::new(limits.max_outbound_bytes, limits.direct_file_window);
        files.restore(&mut r)?;
        let retained = read_stream(&mut r)?;
        let mut peer =
            Peer::new(side, &name, limits, security, now).map_err(RestoreError::Invalid)?;
        peer.link = Link::restored(&peer.limits, now, retained);
        peer.next_seq = next_seq;
        peer.last_remote_seq = last_remote_seq;
        peer.we_exited = exits & 1 != 0;
        peer.they_exited = exits & 2 != 0;
        peer.session = session;
        // Who it is (its name, for the history), until its returning Hello says again.
        peer.remote = Some(our_hello(Role::DirectPeer, &remote_name, 0));
        // The transfers that died with the process are ended (see `Files::restore`).
        peer.files = files;
        peer.pump_files(now);
        Ok(peer)
    }
}
