//! What a relay client sends, in order: chat, file messages and key exchange, each
//! sealed end to end for a recipient with a key and sent in the clear to one without
//! (and the user is told so).
//!
//! To seal for a client we need its key. Clients the roster listed or a `Joined`
//! announced are known; for any other we ask the relay (`Lookup`), and what we send
//! waits behind the answer. Sequence numbers must reach the relay in increasing
//! order, so once one message waits, everything sent after it waits too (a lookup
//! costs one round trip to the relay, once per client). An answer that the client is
//! not online fails what waited for it, with the error the relay would have given.
//!
//! Key exchange can come in bursts: our first message to everyone is preceded by our
//! group key for each client we know (hundreds, on a big relay). So what waits also
//! waits for room in the outbound queue, and the queue never holds more than its
//! bound. Key exchange that nothing has to follow (answers to requests, keys for
//! newcomers, our own requests) is kept as a set of clients owed, and written as the
//! queue makes room.

use std::collections::{BTreeSet, VecDeque};

use rustc_hash::FxHashMap;

use super::{ClientEvent, RelayClient};
use crate::e2e::{FileHeader, KeysMsg, Place};
use crate::error::{DecodeError, ErrorCode};
use crate::file::FileMsg;
use crate::frame::{ErrorReport, Frame, PayloadKind, encode_chat_with};
use crate::id::ClientId;
use crate::secure::PublicKey;
use crate::time::Timestamp;
use crate::wire::{Reader, Writer};

/// Something to send, with its sequence number already given.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// Chat text (`Text`) or key exchange (`Keys`), as plaintext.
    Chat {
        to: ClientId,
        seq: u64,
        kind: PayloadKind,
        plain: Vec<u8>,
    },
    /// A file message.
    File {
        to: ClientId,
        seq: u64,
        msg: FileMsg,
    },
    /// `exit`: it must not overtake what was sent before it.
    Exit,
}

impl Outgoing {
    fn to(&self) -> Option<ClientId> {
        match self {
            Outgoing::Chat { to, .. } | Outgoing::File { to, .. } => Some(*to),
            Outgoing::Exit => None,
        }
    }

    /// The user's bytes in it (what `pending_bytes` counts: key exchange is bounded
    /// by the number of clients known instead).
    fn len(&self) -> usize {
        match self {
            Outgoing::Chat {
                kind: PayloadKind::Keys,
                ..
            } => 0,
            Outgoing::Chat { plain, .. } => plain.len(),
            Outgoing::File {
                msg: FileMsg::Chunk { data, .. },
                ..
            } => data.len(),
            _ => 0,
        }
    }

    /// About how many bytes it takes in the outbound queue once written.
    fn wire_len(&self) -> usize {
        match self {
            Outgoing::Chat { plain, .. } => plain.len() + MESSAGE_OVERHEAD,
            Outgoing::File {
                msg: FileMsg::Chunk { data, .. },
                ..
            } => data.len() + MESSAGE_OVERHEAD,
            _ => MESSAGE_OVERHEAD,
        }
    }
}

/// What waits for a key, and the lookups under way.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    waiting: VecDeque<Outgoing>,
    bytes: usize,
    /// Lookups under way: for each client asked about, the first sequence number
    /// not yet given when the lookup went out (an answer speaks only for what was
    /// typed before it).
    looking_up: FxHashMap<ClientId, u64>,
    /// Sequence numbers of our latest `Keys` messages: an error about one (its
    /// recipient left) concerns nothing the user sent.
    key_seqs: BTreeSet<u64>,
    /// Clients we owe our group key, and clients we owe a request for theirs, sent
    /// as the queue makes room (see `pay_key_debts`).
    owed_shares: BTreeSet<ClientId>,
    owed_requests: BTreeSet<ClientId>,
}

/// Bytes a message takes in the queue beyond its plaintext: its frame, the sealing
/// (an envelope of up to 65 bytes and a tag), its share of a record.
const MESSAGE_OVERHEAD: usize = 160;

/// How many `Keys` sequence numbers are remembered; the relay answers within a round
/// trip, long before this many more are sent.
const KEY_SEQS_KEPT: usize = 4096;

impl Outbox {
    /// Appends what a saved session keeps of what waits: the user's messages (and
    /// exit) not yet sent for want of a key. (Key exchange and file messages are
    /// not kept: a restarted client owes its keys again and ends its transfers.)
    pub(super) fn save(&self, w: &mut Writer<'_>) {
        let kept: Vec<&Outgoing> = self
            .waiting
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Outgoing::Chat {
                        kind: PayloadKind::Text,
                        ..
                    } | Outgoing::Exit
                )
            })
            .collect();
        w.u32(u32::try_from(kept.len()).unwrap_or(u32::MAX));
        for item in kept {
            match item {
                Outgoing::Chat { to, seq, plain, .. } => {
                    w.u8(1);
                    w.u32(to.0);
                    w.u64(*seq);
                    w.u32(u32::try_from(plain.len()).unwrap_or(u32::MAX));
                    w.rest(plain);
                }
                _ => w.u8(0),
            }
        }
    }

    /// What [`Outbox::save`] wrote, waiting again (lookups are asked anew).
    pub(super) fn restore(r: &mut Reader<'_>) -> Result<Outbox, DecodeError> {
        let mut outbox = Outbox::default();
        for _ in 0..r.u32()? {
            let item = match r.u8()? {
                0 => Outgoing::Exit,
                _ => {
                    let to = ClientId(r.u32()?);
                    let seq = r.u64()?;
                    let len = r.u32()? as usize;
                    let plain = r.take(len)?.to_vec();
                    Outgoing::Chat {
                        to,
                        seq,
                        kind: PayloadKind::Text,
                        plain,
                    }
                }
            };
            outbox.bytes += item.len();
            outbox.waiting.push_back(item);
        }
        Ok(outbox)
    }

    /// Bytes of plaintext waiting.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets what we owe client `id` (it left).
    pub(super) fn forget(&mut self, id: ClientId) {
        self.owed_shares.remove(&id);
        self.owed_requests.remove(&id);
    }

    /// Whether `seq` numbered one of our `Keys` messages (forgetting it).
    pub(super) fn was_keys(&mut self, seq: u64) -> bool {
        self.key_seqs.remove(&seq)
    }

    /// Whether we asked the relay about client `id` and have no answer yet.
    pub(super) fn is_looking_up(&self, id: ClientId) -> bool {
        self.looking_up.contains_key(&id)
    }
}

impl RelayClient {
    /// The next sequence number.
    pub(super) fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Whether the outbound queue has room for `item` now (it always has for one
    /// item, however large, when empty).
    fn has_room_now(&self, item: &Outgoing) -> bool {
        let pending = self.link.pending();
        pending == 0 || pending + item.wire_len() <= self.limits.max_outbound_bytes
    }

    /// Sends `item` now, or behind what already waits.
    pub(super) fn submit(&mut self, item: Outgoing, now: Timestamp) {
        let to = item.to();
        if self.outbox.waiting.is_empty() && self.knows_key_of(to) && self.has_room_now(&item) {
            self.transmit(item, now);
            return;
        }
        self.outbox.bytes += item.len();
        self.outbox.waiting.push_back(item);
        if let Some(to) = to
            && !self.knows_key_of(Some(to))
        {
            self.look_up(to, now);
        }
    }

    /// Before a message to everyone: hands our group key to every client with a key
    /// that lacks it (ahead of the message, so that none of them has to ask), and
    /// tells the user once about each client without a key (it cannot read messages
    /// to everyone).
    pub(super) fn share_group_key(&mut self, now: Timestamp) {
        let me = self.id();
        let Some(ring) = self.keyring.as_ref() else {
            return;
        };
        let mut lacking: Vec<ClientId> = ring
            .keyed_clients()
            .filter(|&id| Some(id) != me && ring.lacks_group_key(id))
            .collect();
        lacking.sort_unstable();
        let mut plain: Vec<ClientId> = ring.plain_clients().filter(|&id| Some(id) != me).collect();
        plain.sort_unstable();
        for id in plain {
            self.tell_plain(id, true);
        }
        for id in lacking {
            self.outbox.owed_shares.remove(&id);
            let Some(msg) = self.keyring.as_mut().map(|r| r.group_key_for(id)) else {
                return;
            };
            let item = self.keys_item(id, &msg);
            self.submit(item, now);
        }
    }

    /// A `Keys` message to `to`, numbered.
    fn keys_item(&mut self, to: ClientId, msg: &KeysMsg) -> Outgoing {
        let seq = self.take_seq();
        self.outbox.key_seqs.insert(seq);
        if self.outbox.key_seqs.len() > KEY_SEQS_KEPT {
            self.outbox.key_seqs.pop_first();
        }
        Outgoing::Chat {
            to,
            seq,
            kind: PayloadKind::Keys,
            plain: msg.encode(),
        }
    }

    /// Owes client `id` our group key (it joined after we wrote to everyone, or it
    /// asked for it).
    pub(super) fn owe_group_key(&mut self, id: ClientId, now: Timestamp) {
        if self.keyring.as_ref().is_some_and(|r| r.group_in_use()) {
            self.outbox.owed_shares.insert(id);
            self.pay_key_debts(now);
        }
    }

    /// Owes client `id` a request for its group key (a message of its to everyone
    /// did not open).
    pub(super) fn owe_key_request(&mut self, id: ClientId, now: Timestamp) {
        self.outbox.owed_requests.insert(id);
        self.pay_key_debts(now);
    }

    /// Sends the key exchange we owe while the queue has room for it: after our
    /// first message to everyone we may owe our group key to hundreds of clients,
    /// and writing them all at once would pass the outbound bound. Requests go
    /// first: they unblock messages we hold. Key exchange takes sequence numbers
    /// when it is written, so it waits while anything waits for a lookup.
    pub(super) fn pay_key_debts(&mut self, now: Timestamp) {
        let budget = self.limits.max_outbound_bytes / 2;
        let mut skipped = Vec::new();
        while self.outbox.waiting.is_empty()
            && self.link.is_open()
            && self.link.pending() + MESSAGE_OVERHEAD <= budget
        {
            let (to, request) = match self.outbox.owed_requests.pop_first() {
                Some(id) => (id, true),
                None => match self.outbox.owed_shares.pop_first() {
                    Some(id) => (id, false),
                    None => break,
                },
            };
            if !self.knows_key_of(Some(to)) {
                self.look_up(to, now);
                skipped.push((to, request));
                continue;
            }
            let msg = match self.keyring.as_mut() {
                Some(_) if request => KeysMsg::Request,
                Some(ring) => ring.group_key_for(to),
                None => break,
            };
            let item = self.keys_item(to, &msg);
            self.transmit(item, now);
        }
        for (to, request) in skipped {
            if request {
                self.outbox.owed_requests.insert(to);
            } else {
                self.outbox.owed_shares.insert(to);
            }
        }
    }

    /// Whether anything waits for room or key exchange is owed (the driver's writes
    /// should call us back).
    pub(super) fn has_backlog(&self) -> bool {
        !self.outbox.waiting.is_empty()
            || !self.outbox.owed_requests.is_empty()
            || !self.outbox.owed_shares.is_empty()
    }

    /// Whether we can send to `to` now: everyone, anyone when we do not encrypt, or
    /// a client whose key (or lack of one) we know.
    fn knows_key_of(&self, to: Option<ClientId>) -> bool {
        match (to, &self.keyring) {
            (Some(to), Some(ring)) => to.is_broadcast() || ring.key_of(to).is_some(),
            _ => true,
        }
    }

    /// Asks the relay for client `id`'s key, once, when the queue has room (hundreds
    /// of clients no roster listed can each need one; what waits for a lookup not yet
    /// sent asks again as the queue drains: `flush_outbox`, `pay_key_debts`).
    fn look_up(&mut self, id: ClientId, now: Timestamp) {
        if !self.outbox.looking_up.contains_key(&id)
            && self.link.pending() + MESSAGE_OVERHEAD <= self.limits.max_outbound_bytes
        {
            self.outbox.looking_up.insert(id, self.next_seq);
            self.link.send(&Frame::Lookup { id }, now);
        }
    }

    /// After a restore: what waits for a key is looked up anew. The relay's stream
    /// resent on resume may still hold answers to the dead process's lookups, which
    /// could not tell which messages they speak for: such a lookup is marked as
    /// speaking for none (an old "not online" fails nothing; a fresh lookup follows).
    pub(super) fn look_up_again(&mut self, now: Timestamp) {
        let mut ids: Vec<ClientId> = self
            .outbox
            .waiting
            .iter()
            .filter_map(Outgoing::to)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if !self.knows_key_of(Some(id)) {
                self.outbox.looking_up.insert(id, 0);
                self.link.send(&Frame::Lookup { id }, now);
            }
        }
    }

    /// The relay answered a lookup, or announced keys: sends what can go now.
    pub(super) fn flush_outbox(&mut self, now: Timestamp) {
        while let Some(front) = self.outbox.waiting.front() {
            let to = front.to();
            if !self.knows_key_of(to) {
                if let Some(to) = to {
                    self.look_up(to, now);
                }
                break;
            }
            if !self.has_room_now(front) || !self.link.is_open() {
                break;
            }
            if let Some(item) = self.outbox.waiting.pop_front() {
                self.outbox.bytes -= item.len();
                self.transmit(item, now);
            }
        }
        self.pay_key_debts(now);
    }

    /// The relay answered our lookup of `id`: it was not online. What waited for it
    /// from before the lookup went out fails as the relay would have failed it;
    /// anything typed for it since asks again (it may have come online meanwhile).
    pub(super) fn lookup_failed(&mut self, id: ClientId, report: &ErrorReport, now: Timestamp) {
        let asked_before = self.outbox.looking_up.remove(&id).unwrap_or(u64::MAX);
        let mut failed_chat = Vec::new();
        let mut failed_files = false;
        let waiting = std::mem::take(&mut self.outbox.waiting);
        for item in waiting {
            match item {
                Outgoing::Chat {
                    to,
                    seq,
                    kind: PayloadKind::Text,
                    ..
                } if to == id && seq < asked_before => failed_chat.push(seq),
                Outgoing::Chat { to, seq, .. } | Outgoing::File { to, seq, .. }
                    if to == id && seq < asked_before =>
                {
                    failed_files = true;
                }
                other => self.outbox.waiting.push_back(other),
            }
        }
        self.outbox.bytes = self.outbox.waiting.iter().map(Outgoing::len).sum();
        for seq in failed_chat {
            self.unconfirmed.remove(&seq);
            self.events.push_back(ClientEvent::Error(ErrorReport {
                seq,
                ..report.clone()
            }));
        }
        if failed_files {
            self.files
                .peer_gone(Some(id), &format!("client {id} is not online"));
        }
        self.flush_outbox(now);
    }

    /// The relay told us client `id`'s key (a `Profile`).
    pub(super) fn lookup_answered(&mut self, id: ClientId, now: Timestamp) {
        self.outbox.looking_up.remove(&id);
        self.flush_outbox(now);
    }

    /// The key to seal for `to` with: `None` to send in the clear.
    fn sealing_key(&self, to: ClientId) -> Option<PublicKey> {
        let ring = self.keyring.as_ref()?;
        if to.is_broadcast() {
            Some(ring.public())
        } else {
            ring.key_of(to).flatten()
        }
    }

    /// Writes `item`: sealed when its recipient has a key, else in the clear.
    fn transmit(&mut self, item: Outgoing, now: Timestamp) {
        let (to, seq) = match &item {
            Outgoing::Exit => {
                self.link.send(&Frame::Exit, now);
                return;
            }
            Outgoing::Chat { to, seq, .. } | Outgoing::File { to, seq, .. } => (*to, *seq),
        };
        let key = self.sealing_key(to);
        if let Some(key) = &key
            && let Some(Err(why)) = self.keyring.as_mut().map(|r| r.prepare(to, key))
        {
            self.cannot_seal(item, &why);
            return;
        }
        match (item, key) {
            (
                Outgoing::Chat {
                    kind: PayloadKind::Keys,
                    ..
                },
                None,
            ) => {}
            (Outgoing::Chat { plain, kind, .. }, Some(key)) => {
                let kind = if kind == PayloadKind::Keys {
                    PayloadKind::Keys
                } else {
                    PayloadKind::Sealed
                };
                self.send_sealed(to, seq, kind, &key, None, &plain, now);
            }
            (Outgoing::Chat { plain, .. }, None) => {
                self.tell_plain(to, false);
                self.link.send_encoded(
                    |out| {
                        encode_chat_with(out, to, seq, PayloadKind::Text, |b| {
                            b.extend_from_slice(&plain);
                        });
                    },
                    now,
                );
            }
            (Outgoing::File { msg, .. }, Some(key)) => {
                let header = FileHeader::of(&msg);
                self.send_sealed(
                    to,
                    seq,
                    PayloadKind::SealedFile,
                    &key,
                    Some(header),
                    &msg.encode(),
                    now,
                );
            }
            (Outgoing::File { msg, .. }, None) => {
                self.link.send_encoded(
                    |out| encode_chat_with(out, to, seq, PayloadKind::File, |b| msg.encode_into(b)),
                    now,
                );
            }
            (Outgoing::Exit, _) => {}
        }
    }

    /// Writes one sealed `Chat`.
    #[allow(clippy::too_many_arguments)] // each is one field of the frame
    fn send_sealed(
        &mut self,
        to: ClientId,
        seq: u64,
        kind: PayloadKind,
        key: &PublicKey,
        header: Option<FileHeader>,
        plain: &[u8],
        now: Timestamp,
    ) {
        let Some(ring) = self.keyring.as_mut() else {
            return;
        };
        let place = Place { kind, to, seq };
        self.link.send_encoded(
            |out| {
                encode_chat_with(out, to, seq, kind, |b| {
                    let start = b.len();
                    if let Some(h) = header {
                        h.encode_into(b);
                    }
                    // Cannot fail: `prepare` made the pair key.
                    let _ = ring.seal(place, key, plain, b, start);
                });
            },
            now,
        );
    }

    /// `to`'s key cannot be used: what was for it fails, with the reason.
    fn cannot_seal(&mut self, item: Outgoing, why: &str) {
        match item {
            Outgoing::Chat {
                to,
                seq,
                kind: PayloadKind::Text,
                ..
            } => {
                self.unconfirmed.remove(&seq);
                self.events.push_back(ClientEvent::Error(ErrorReport {
                    code: ErrorCode::HandshakeFailed,
                    seq,
                    subject: Some(to),
                    message: format!("message {seq} not sent: {why}"),
                }));
            }
            Outgoing::File { to, .. } => self.files.peer_gone(Some(to), why),
            _ => {}
        }
    }

    /// Tells the user, once per client (and once more for messages to everyone),
    /// that client `id` has no key, so what we send it is not end-to-end encrypted.
    pub(super) fn tell_plain(&mut self, id: ClientId, everyone: bool) {
        if self.keyring.is_some() && self.told_plain.insert((id, everyone)) {
            self.events
                .push_back(ClientEvent::NotEndToEnd { id, everyone });
        }
    }
}
