//! A direct conversation that outlives its connection (the session layer of
//! `crate::session`, between two peers).
//!
//! Both peers keep what they sent until the other acknowledges it (`Ack`). When the
//! connection is lost, the conversation goes on for a grace period: the connecting
//! side dials again (with growing pauses), the listening side waits for it. The new
//! connection opens like the first (`Hello`, with `resuming`, and the handshake),
//! then the connecting side sends `Resume` with the token the listening side gave it
//! (`ResumeToken`) and how much it holds; the listening side answers `Resumed` with
//! how much *it* holds; each resends the rest. The listening side takes a new
//! connection only from a peer that proves the same key (when encrypted) and the
//! token; anyone else is turned away and the conversation keeps waiting.
//!
//! Messages are numbered by the session stream's byte offsets, so an acknowledgement
//! also tells the sender which of its messages arrived (`Delivered`); whatever was
//! not acknowledged when the conversation ends is named (`Unconfirmed`).

use std::collections::VecDeque;

use core::time::Duration;

use super::{Peer, PeerEvent, PeerSide};
use crate::error::{DecodeError, ErrorCode};
use crate::frame::{Frame, Hello, Role};
use crate::handshake::{CAP_NOISE, negotiate_version};
use crate::secure::{self, PublicKey};
use crate::session::{Away, same_token};
use crate::time::Timestamp;
use crate::wire::{Reader, Writer};

/// The conversation's session state.
#[derive(Debug, Default)]
pub(super) struct PeerSession {
    /// Both sides speak the session layer.
    agreed: bool,
    /// The token that proves a returning connector, once the listening side chose it.
    token: Option<[u8; 16]>,
    /// How long a lost conversation waits to be resumed.
    grace: Duration,
    /// Bytes of the other side's session stream handled.
    received: u64,
    /// While the connection is lost.
    away: Option<Away>,
    /// The current connection is one that comes back to the conversation, not yet
    /// agreed (`Resume` / `Resumed` still to come).
    returning: bool,
    /// The other side's key on the first connection (`Some(None)`: in the clear),
    /// which a returning connection must prove again.
    remote_key: Option<Option<PublicKey>>,
    /// Our chat messages not yet acknowledged: where each ends in our stream, and
    /// its sequence number.
    unacked_chat: VecDeque<(u64, u64)>,
}

impl PeerSession {
    /// Whether the other side speaks the session layer too (`they`).
    pub(super) fn agree(&mut self, they: bool) {
        self.agreed = they;
        if !they {
            // Nothing will acknowledge them: a side without the session layer sends
            // no `Ack`s, so what was counted before its Hello came is not waited for.
            self.unacked_chat.clear();
        }
    }

    pub(super) fn resumable(&self) -> bool {
        self.agreed
    }

    pub(super) fn count_received(&mut self, bytes: u64) {
        self.received += bytes;
    }

    /// A chat message of ours numbered `seq` went into our stream, ending at `end`.
    pub(super) fn sent_chat(&mut self, end: u64, seq: u64) {
        if self.agreed || self.remote_key.is_none() {
            self.unacked_chat.push_back((end, seq));
        }
    }

    pub(super) fn is_returning(&self) -> bool {
        self.returning
    }

    pub(super) fn remember_key(&mut self, key: Option<PublicKey>) {
        if self.remote_key.is_none() {
            self.remote_key = Some(key);
        }
    }

    /// The conversation is over.
    pub(super) fn end(&mut self) {
        self.away = None;
        self.returning = false;
    }

    /// Whether there is a session another process could come back to: agreed,
    /// with a token, and with the other side's key known.
    pub(super) fn is_saveable(&self) -> bool {
        self.agreed && self.token.is_some() && self.remote_key.is_some()
    }

    /// How many of our chat messages wait for their acknowledgement.
    pub(super) fn unconfirmed(&self) -> usize {
        self.unacked_chat.len()
    }

    /// The sequence number of our latest chat message not yet acknowledged (0: none).
    pub(super) fn last_unconfirmed(&self) -> u64 {
        self.unacked_chat.back().map_or(0, |&(_, seq)| seq)
    }

    pub(super) fn received(&self) -> u64 {
        self.received
    }

    /// Appends what [`PeerSession::restore`] reads (see `super::saved`).
    pub(super) fn save(&self, w: &mut Writer<'_>) {
        w.rest(&self.token.unwrap_or_default());
        w.u64(self.grace.as_millis() as u64);
        w.u64(self.received);
        match self.remote_key {
            Some(Some(key)) => {
                w.u8(2);
                w.rest(&key.0);
            }
            Some(None) => w.u8(1),
            None => w.u8(0),
        }
        w.u32(u32::try_from(self.unacked_chat.len()).unwrap_or(u32::MAX));
        for &(end, seq) in &self.unacked_chat {
            w.u64(end);
            w.u64(seq);
        }
    }

    /// A session [`PeerSession::save`] wrote, lost at `now`: waiting to be resumed.
    pub(super) fn restore(r: &mut Reader<'_>, now: Timestamp) -> Result<PeerSession, DecodeError> {
        let token: [u8; 16] = r.array()?;
        let grace = Duration::from_millis(r.u64()?);
        let received = r.u64()?;
        let remote_key = match r.u8()? {
            2 => Some(Some(PublicKey(r.array()?))),
            1 => Some(None),
            _ => None,
        };
        let mut unacked_chat = VecDeque::new();
        for _ in 0..r.u32()? {
            let end = r.u64()?;
            unacked_chat.push_back((end, r.u64()?));
        }
        Ok(PeerSession {
            agreed: true,
            token: Some(token),
            grace,
            received,
            away: Some(Away::starting(now, grace)),
            returning: false,
            remote_key,
            unacked_chat,
        })
    }
}

impl Peer {
    /// Whether the conversation is over or closing (a lost connection whose
    /// conversation goes on is not: what is sent meanwhile waits for the next).
    pub(super) fn is_closed(&self) -> bool {
        self.over || (!self.link.is_open() && !self.is_away())
    }

    /// Whether the connection is lost and the conversation goes on (the connecting
    /// side dials again, the listening side waits for it).
    pub fn is_away(&self) -> bool {
        self.session.away.is_some() && !self.over
    }

    pub(super) fn away_deadline(&self) -> Option<Timestamp> {
        self.session.away.filter(|_| !self.over).map(|a| a.until)
    }

    /// When the driver should open the next connection while the connection is lost:
    /// the connecting side dials then, the listening side takes the next one that
    /// comes in. It then reports [`Peer::handle_reconnected`] or
    /// [`Peer::handle_reconnect_failed`].
    pub fn poll_reconnect(&self) -> Option<Timestamp> {
        match self.session.away {
            Some(away) if !self.over && !self.link.is_open() => away.next,
            _ => None,
        }
    }

    /// The grace period ran out without the conversation being resumed.
    pub(super) fn away_timeout(&mut self, now: Timestamp) {
        if let Some(away) = self.session.away
            && now >= away.until
            && !self.over
        {
            self.link.finish();
            let grace = self.session.grace.as_secs();
            let reason = match self.side {
                PeerSide::Connector => {
                    format!("the connection was lost and could not be got back within {grace} s")
                }
                PeerSide::Acceptor => format!(
                    "the connection was lost and the other side did not come back within {grace} s"
                ),
            };
            self.end(PeerEvent::Disconnected {
                code: ErrorCode::ResumeFailed,
                reason,
            });
        }
    }

    /// The connection is gone (`code`): if the conversation can go on, we are away
    /// and get back; else it is over.
    pub(super) fn lose_connection(&mut self, code: ErrorCode, reason: String, now: Timestamp) {
        let can_resume = self.session.agreed
            && self.session.token.is_some()
            && !self.over
            && !self.link.is_plain_text()
            && self.session.remote_key.is_some();
        if !can_resume {
            self.end(PeerEvent::Disconnected { code, reason });
            return;
        }
        self.link.detach();
        self.session.returning = false;
        match self.session.away.as_mut() {
            Some(_) => self.attempt_failed(now),
            None => {
                let grace = self.session.grace;
                self.session.away = Some(Away::starting(now, grace));
                self.events.push_back(PeerEvent::ConnectionLost {
                    code,
                    reason,
                    grace,
                });
                if self.input_ended {
                    self.end_if_nothing_to_wait_for();
                }
            }
        }
    }

    /// Ends a conversation whose connection is lost after our input ended, when
    /// nothing we sent is unconfirmed (see [`Peer::end_of_input`]).
    pub(super) fn end_if_nothing_to_wait_for(&mut self) {
        if self.session.unacked_chat.is_empty() && self.files.is_idle() && !self.over {
            self.link.finish();
            self.end(PeerEvent::Disconnected {
                code: ErrorCode::Normal,
                reason: "your input has ended and everything you sent was confirmed delivered, so the conversation does not wait for the peer to come back".into(),
            });
        }
    }

    /// An attempt to get back did not work: the next one is later (listening: the
    /// next connection that comes in).
    fn attempt_failed(&mut self, now: Timestamp) {
        let side = self.side;
        if let Some(away) = self.session.away.as_mut() {
            let pause = away.attempt_failed();
            away.next = Some(match side {
                PeerSide::Connector => now + pause,
                PeerSide::Acceptor => now,
            });
            let attempt = away.failed;
            if side == PeerSide::Connector {
                self.events.push_back(PeerEvent::Reconnecting { attempt });
            }
        }
    }

    /// A connection that came to resume the conversation closed before it did.
    pub(super) fn candidate_gone(&mut self, now: Timestamp) {
        self.session.returning = false;
        self.link.detach();
        self.attempt_failed(now);
    }

    /// Dialling (or waiting for) a new connection failed.
    pub fn handle_reconnect_failed(&mut self, now: Timestamp) {
        if self.is_away() {
            self.attempt_failed(now);
        }
    }

    /// A new connection is open (dialled, or accepted while listening): it opens
    /// like the first, then comes back to the conversation.
    pub fn handle_reconnected(&mut self, now: Timestamp) {
        if !self.is_away() || self.link.is_open() {
            return;
        }
        if let Some(away) = self.session.away.as_mut() {
            away.next = None;
        }
        let offers = self.security.offers();
        let connector = self.side == PeerSide::Connector;
        let mut link = self.link.successor(&self.limits, now, connector);
        if connector {
            let hello = Hello {
                resuming: true,
                ..self.own_hello.clone()
            };
            link.send(&Frame::Hello(hello.clone()), now);
            if offers {
                match secure::initiate(&self.security, &hello, self.entropy.next_seed()) {
                    Ok((handshake, first)) => {
                        let pattern = handshake.pattern().to_u8();
                        link.begin_handshake(handshake);
                        link.send_handshake(pattern, first, now);
                    }
                    Err(e) => {
                        self.end(PeerEvent::Disconnected {
                            code: ErrorCode::HandshakeFailed,
                            reason: e.0,
                        });
                        return;
                    }
                }
            }
            if let Some(token) = self.session.token {
                link.send(
                    &Frame::Resume {
                        id: crate::ClientId(0),
                        token,
                        received: self.session.received,
                    },
                    now,
                );
            }
            self.own_hello = hello;
        } else {
            link.send(&Frame::Hello(self.own_hello.clone()), now);
            if offers {
                link.hold_for_channel();
            }
        }
        self.link = link;
        self.link_hello = false;
        self.session.returning = true;
    }

    /// The other side's `Hello` on a new connection of this conversation.
    pub(super) fn on_returning_hello(&mut self, hello: Hello, _now: Timestamp) {
        if !self.session.returning {
            self.fail(
                ErrorCode::UnexpectedFrame,
                "a second Hello on one connection".into(),
            );
            return;
        }
        if self.side == PeerSide::Acceptor && !hello.resuming {
            // Someone new, while this conversation waits for its peer.
            self.turn_away(
                "this p2pchat is in a conversation that is waiting for its peer to come back; try again later",
            );
            return;
        }
        if hello.role != Role::DirectPeer || negotiate_version(&hello).is_err() {
            self.turn_away("not a direct peer of this protocol version");
            return;
        }
        let they_offer = hello.capabilities & CAP_NOISE != 0;
        let we_offer = self.security.offers();
        let was_encrypted = matches!(self.session.remote_key, Some(Some(_)));
        self.link_hello = true;
        if they_offer && we_offer {
            if self.side == PeerSide::Acceptor {
                if self.answer_handshake(&secure::hello_bytes(&hello)).is_err() {
                    self.turn_away("the secure handshake could not start");
                    return;
                }
            } else {
                self.remote = Some(hello);
            }
            // The key is checked once the handshake proved it.
            return;
        }
        if was_encrypted {
            self.turn_away("this conversation is encrypted; the new connection is not");
            return;
        }
        if self.side == PeerSide::Connector {
            self.remote = Some(hello);
        }
        self.link.go_plain();
        self.returned_secure(None);
    }

    /// The new connection's handshake proved `key` (or it is in the clear): it must
    /// be the key of the conversation. Then the listening side waits for `Resume`,
    /// the connecting side for `Resumed`.
    pub(super) fn returned_secure(&mut self, key: Option<PublicKey>) {
        if self.session.remote_key != Some(key) {
            self.turn_away(
                "the connection that came back holds another key than the conversation's",
            );
        }
    }

    /// Refuses the connection that came back (it is not our peer, or could not
    /// prove it): it is closed with a reason, and the conversation goes on waiting.
    fn turn_away(&mut self, why: &str) {
        self.link.close(ErrorCode::ResumeFailed, why);
    }

    /// The listening side chooses the token a returning connector must show, and
    /// gives it (with the grace period) once the conversation is open.
    pub(super) fn offer_resume_token(&mut self) {
        self.session.grace = self.limits.resume_grace;
        if self.side != PeerSide::Acceptor || !self.session.agreed {
            return;
        }
        let seed = self.entropy.next_seed();
        let mut token = [0u8; 16];
        token.copy_from_slice(seed.get(..16).unwrap_or(&[0; 16]));
        self.session.token = Some(token);
        let grace_ms = u32::try_from(self.limits.resume_grace.as_millis()).unwrap_or(u32::MAX);
        self.link
            .send(&Frame::ResumeToken { token, grace_ms }, self.last_now);
    }

    /// The listening side's token (the connecting side keeps it).
    pub(super) fn on_resume_token(&mut self, token: [u8; 16], grace_ms: u32) {
        if self.side == PeerSide::Connector {
            self.session.token = Some(token);
            self.session.grace = Duration::from_millis(u64::from(grace_ms));
        }
    }

    /// A returning connector's `Resume`: with the right token and an offset we can
    /// resend from, the conversation goes on here.
    pub(super) fn on_resume(&mut self, token: [u8; 16], received: u64, now: Timestamp) {
        let ours = self.session.token;
        if self.side != PeerSide::Acceptor || !self.session.returning {
            self.fail(ErrorCode::UnexpectedFrame, "Resume out of turn".into());
            return;
        }
        if !ours.is_some_and(|t| same_token(&t, &token)) {
            self.turn_away("that is not the token of this conversation");
            return;
        }
        let ack = self.session.received;
        self.link.send(&Frame::Resumed { received: ack }, now);
        if self.link.resend_from(received).is_err() {
            self.turn_away("the offset to resume from is not one this side sent");
            return;
        }
        self.resumed(received, now);
    }

    /// The listening side agreed: we resend from where it stands.
    pub(super) fn on_resumed(&mut self, received: u64, now: Timestamp) {
        if self.side != PeerSide::Connector || !self.session.returning {
            self.fail(ErrorCode::UnexpectedFrame, "Resumed out of turn".into());
            return;
        }
        if let Err(beyond) = self.link.resend_from(received) {
            // Only a conversation saved while a file was under way, and resumed by a
            // new process, can be behind what the other side holds.
            let reason = format!(
                "the other side holds {} bytes of this conversation's stream, more than the {} this side kept (saved while a file was under way); it cannot be resumed",
                beyond.claimed, beyond.sent
            );
            self.fail(ErrorCode::ResumeFailed, reason);
            return;
        }
        self.resumed(received, now);
    }

    /// Back in the conversation: what the other side holds counts as acknowledged.
    fn resumed(&mut self, received: u64, now: Timestamp) {
        self.session.returning = false;
        self.session.away = None;
        self.acknowledged(received);
        self.events.push_back(PeerEvent::Resumed);
        self.pump_files(now);
    }

    /// After a read: tells the other side how much of its stream we handled.
    pub(super) fn send_ack(&mut self, now: Timestamp) {
        let s = &self.session;
        if s.agreed && !s.returning {
            self.link.owe_ack(s.received, now);
        }
    }

    /// The other side's `Ack`.
    pub(super) fn on_ack(&mut self, received: u64) {
        if let Err(beyond) = self.link.acknowledge(received) {
            let reason = format!(
                "the other side acknowledged {} bytes of our stream; we sent {}",
                beyond.claimed, beyond.sent
            );
            self.fail(ErrorCode::MalformedFrame, reason);
            return;
        }
        self.acknowledged(received);
    }

    /// Our stream up to `upto` arrived: the chat messages in it are delivered.
    fn acknowledged(&mut self, upto: u64) {
        let mut delivered = None;
        while let Some(&(end, seq)) = self.session.unacked_chat.front() {
            if end > upto {
                break;
            }
            self.session.unacked_chat.pop_front();
            delivered = Some(seq);
        }
        if let Some(seq) = delivered {
            self.events.push_back(PeerEvent::Delivered { seq });
        }
    }

    /// The conversation ends: names our chat messages the other side never
    /// acknowledged, including those written before its Hello came (a connection
    /// lost in the handshake), which were never acknowledged either.
    pub(super) fn name_unconfirmed(&mut self) {
        if self.session.unacked_chat.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.session.unacked_chat)
            .into_iter()
            .map(|(_, seq)| seq)
            .collect();
        self.events.push_back(PeerEvent::Unconfirmed { seqs });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::party_security;
    use crate::{Limits, Security};

    const T: Timestamp = Timestamp::ZERO;

    /// Two peers over a pipe that can be cut, and a third party for strangers.
    struct Pair {
        con: Peer,
        acc: Peer,
        up: bool,
        con_events: Vec<PeerEvent>,
        acc_events: Vec<PeerEvent>,
        now: Timestamp,
    }

    impl Pair {
        fn new() -> Pair {
            let peer =
                |side, n| Peer::new(side, "p", Limits::default(), party_security(n), T).unwrap();
            let mut p = Pair {
                con: peer(PeerSide::Connector, 1),
                acc: peer(PeerSide::Acceptor, 2),
                up: true,
                con_events: Vec::new(),
                acc_events: Vec::new(),
                now: T,
            };
            p.pump();
            p
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while self.up
                    && let Some(bytes) = self.con.poll_transmit()
                {
                    moved = true;
                    self.con.handle_written(bytes.len());
                    self.acc.handle_bytes(&bytes, self.now);
                }
                while self.up
                    && let Some(bytes) = self.acc.poll_transmit()
                {
                    moved = true;
                    self.acc.handle_written(bytes.len());
                    self.con.handle_bytes(&bytes, self.now);
                }
                if self.up && (self.con.wants_close() || self.acc.wants_close()) {
                    self.up = false;
                    self.con.handle_closed(self.now);
                    self.acc.handle_closed(self.now);
                    moved = true;
                }
                self.con_events
                    .extend(std::iter::from_fn(|| self.con.poll_event()));
                self.acc_events
                    .extend(std::iter::from_fn(|| self.acc.poll_event()));
                if !moved {
                    break;
                }
            }
        }

        /// The connection breaks: whatever was on its way is lost.
        fn cut(&mut self) {
            self.up = false;
            while self.con.poll_transmit().is_some() {}
            while self.acc.poll_transmit().is_some() {}
            self.con.handle_closed(self.now);
            self.acc.handle_closed(self.now);
            self.pump();
        }

        /// Both drivers open the next connection, as `poll_reconnect` asks.
        fn reconnect(&mut self) {
            assert!(self.con.poll_reconnect().is_some());
            assert!(self.acc.poll_reconnect().is_some());
            self.con.handle_reconnected(self.now);
            self.acc.handle_reconnected(self.now);
            self.up = true;
            self.pump();
        }

        fn texts(events: &mut Vec<PeerEvent>) -> Vec<String> {
            std::mem::take(events)
                .into_iter()
                .filter_map(|e| match e {
                    PeerEvent::Message { text, .. } => Some(text),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn either_side_restored_from_its_saved_conversation_resumes_it() {
        for dying in [PeerSide::Connector, PeerSide::Acceptor] {
            let mut p = Pair::new();
            p.con.send_chat("c1", T).unwrap();
            p.acc.send_chat("a1", T).unwrap();
            p.pump();
            assert_eq!(Pair::texts(&mut p.acc_events), ["c1"]);
            assert_eq!(Pair::texts(&mut p.con_events), ["a1"]);
            let (me, other) = match dying {
                PeerSide::Connector => (&mut p.con, &mut p.acc),
                PeerSide::Acceptor => (&mut p.acc, &mut p.con),
            };
            // It sends; its driver saves before writing; the process dies with the
            // bytes still on their way.
            me.send_chat("from the dying side", T).unwrap();
            let saved = me.save().expect("a conversation to save");
            other.send_chat("sent while it was dead", T).unwrap();
            p.cut();
            // A new process: same identity, fresh randomness.
            let n = match dying {
                PeerSide::Connector => 1,
                PeerSide::Acceptor => 2,
            };
            let mut security = party_security(n);
            security.seed = [99; 32];
            let restored = Peer::restore(&saved, Limits::default(), security, T).unwrap();
            match dying {
                PeerSide::Connector => p.con = restored,
                PeerSide::Acceptor => p.acc = restored,
            }
            p.con_events.clear();
            p.acc_events.clear();
            p.reconnect();
            for events in [&p.con_events, &p.acc_events] {
                assert!(
                    events.contains(&PeerEvent::Resumed),
                    "{dying:?}: {events:?}"
                );
            }
            let (mine, theirs) = match dying {
                PeerSide::Connector => (&mut p.con_events, &mut p.acc_events),
                PeerSide::Acceptor => (&mut p.acc_events, &mut p.con_events),
            };
            assert_eq!(Pair::texts(mine), ["sent while it was dead"], "{dying:?}");
            assert_eq!(Pair::texts(theirs), ["from the dying side"], "{dying:?}");
            // And on: sequence numbers and keys carried over.
            p.con.send_chat("c2", T).unwrap();
            p.acc.send_chat("a2", T).unwrap();
            p.pump();
            assert_eq!(Pair::texts(&mut p.acc_events), ["c2"]);
            assert_eq!(Pair::texts(&mut p.con_events), ["a2"]);
        }
    }

    #[test]
    fn a_conversation_comes_back_after_a_lost_connection_with_nothing_lost_or_twice() {
        let mut p = Pair::new();
        p.con.send_chat("one", T).unwrap();
        p.pump();
        // Sent, but the connection breaks before it arrives; more while away.
        p.con.send_chat("two", T).unwrap();
        p.acc.send_chat("to you", T).unwrap();
        p.cut();
        assert!(p.con.is_away() && p.acc.is_away());
        assert!(
            p.con_events
                .iter()
                .any(|e| matches!(e, PeerEvent::ConnectionLost { .. }))
        );
        p.con.send_chat("three", T).unwrap();
        p.acc.send_chat("and more", T).unwrap();
        p.reconnect();
        assert!(p.con_events.contains(&PeerEvent::Resumed));
        assert!(p.acc_events.contains(&PeerEvent::Resumed));
        assert_eq!(Pair::texts(&mut p.acc_events), ["one", "two", "three"]);
        assert_eq!(Pair::texts(&mut p.con_events), ["to you", "and more"]);
        // It goes on as before, and each side learns what arrived.
        p.con.send_chat("four", T).unwrap();
        p.pump();
        assert_eq!(Pair::texts(&mut p.acc_events), ["four"]);
        // The acknowledgement goes within 100 ms when nothing else is written.
        p.now = T + Duration::from_millis(150);
        p.acc.handle_timeout(p.now);
        p.pump();
        assert!(p.con_events.contains(&PeerEvent::Delivered { seq: 4 }));
    }

    #[test]
    fn a_stranger_cannot_take_a_waiting_conversation() {
        let mut p = Pair::new();
        p.cut();
        // Someone else dials the listener while it waits.
        let mut stranger = Peer::new(
            PeerSide::Connector,
            "x",
            Limits::default(),
            party_security(9),
            T,
        )
        .unwrap();
        p.acc.handle_reconnected(T);
        for _ in 0..10 {
            while let Some(b) = stranger.poll_transmit() {
                p.acc.handle_bytes(&b, T);
            }
            while let Some(b) = p.acc.poll_transmit() {
                stranger.handle_bytes(&b, T);
            }
        }
        let events: Vec<PeerEvent> = std::iter::from_fn(|| stranger.poll_event()).collect();
        assert!(
            events.iter().any(|e| matches!(
                e,
                PeerEvent::Disconnected {
                    code: ErrorCode::ResumeFailed,
                    ..
                }
            )),
            "the stranger is turned away: {events:?}"
        );
        assert!(p.acc.wants_close());
        p.acc.handle_closed(T);
        assert!(p.acc.is_away(), "the conversation still waits");
        // The real peer comes back.
        p.reconnect();
        assert!(p.acc_events.contains(&PeerEvent::Resumed));
    }

    #[test]
    fn a_plain_text_stranger_cannot_take_a_waiting_conversation_either() {
        let mut p = Pair::new();
        p.cut();
        p.acc.handle_reconnected(T);
        p.acc.handle_bytes(b"hello, anyone?\n", T);
        let shown = Pair::texts(&mut p.acc_events);
        assert!(shown.is_empty(), "nothing of it is shown: {shown:?}");
        let told = p.acc.poll_transmit().unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&told).contains("waiting for its peer"),
            "{told:?}"
        );
        assert!(p.acc.wants_close());
        p.acc.handle_closed(T);
        assert!(p.acc.is_away());
        p.reconnect();
        assert!(p.acc_events.contains(&PeerEvent::Resumed));
    }

    #[test]
    fn messages_written_before_the_connection_came_up_are_named_when_it_never_does() {
        // The simulator's seed 16111789272418456738 (split,cut --direct): the link is
        // cut in the handshake, the connector types on, and at the peer timeout what
        // it typed was neither delivered nor named.
        let mut con = Peer::new(
            PeerSide::Connector,
            "p",
            Limits::default(),
            party_security(1),
            T,
        )
        .unwrap();
        let first = con.send_chat("typed while dialling", T).unwrap();
        let second = con.send_chat("and again", T).unwrap();
        let later = T + Limits::default().idle_timeout + core::time::Duration::from_secs(1);
        con.handle_timeout(later);
        let events: Vec<PeerEvent> = std::iter::from_fn(|| con.poll_event()).collect();
        assert!(
            events.contains(&PeerEvent::Unconfirmed {
                seqs: vec![first, second]
            }),
            "{events:?}"
        );
    }

    #[test]
    fn messages_counted_before_a_hello_without_the_session_layer_are_not_waited_for() {
        let mut session = PeerSession::default();
        session.sent_chat(10, 1);
        session.agree(false);
        assert!(session.unacked_chat.is_empty());
    }

    #[test]
    fn past_the_grace_period_both_sides_end_and_name_what_was_not_confirmed() {
        let mut p = Pair::new();
        p.cut();
        let seq = p.con.send_chat("never arrives", T).unwrap();
        let grace = Limits::default().resume_grace;
        p.now = T + grace;
        p.con.handle_timeout(p.now);
        p.acc.handle_timeout(p.now);
        p.pump();
        assert!(
            p.con_events
                .contains(&PeerEvent::Unconfirmed { seqs: vec![seq] })
        );
        for events in [&p.con_events, &p.acc_events] {
            assert!(
                events.iter().any(|e| matches!(
                    e,
                    PeerEvent::Disconnected {
                        code: ErrorCode::ResumeFailed,
                        ..
                    }
                )),
                "{events:?}"
            );
        }
        assert!(p.con.is_over() && p.acc.is_over());
    }

    #[test]
    fn an_unencrypted_conversation_resumes_in_the_clear() {
        let peer = |side| Peer::new(side, "p", Limits::default(), Security::insecure(), T).unwrap();
        let mut p = Pair {
            con: peer(PeerSide::Connector),
            acc: peer(PeerSide::Acceptor),
            up: true,
            con_events: Vec::new(),
            acc_events: Vec::new(),
            now: T,
        };
        p.pump();
        p.cut();
        p.con.send_chat("while away", T).unwrap();
        p.reconnect();
        assert_eq!(Pair::texts(&mut p.acc_events), ["while away"]);
    }
}
