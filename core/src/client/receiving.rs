//! What a relay client makes of the messages other clients send it: clear text from
//! clients without a key, sealed chat, sealed file messages and key exchange.
//!
//! A message to everyone is sealed with its sender's group key, which the sender hands
//! out before it writes to everyone. One that arrives before the key (the sender did
//! not know of us yet) is held and the key is asked for. The sender's later chat is
//! opened as it comes (a later message may be what tells us the pair key the key
//! itself is sealed with) but shown only after the held message, so that the
//! sender's messages are shown in order. Nothing is dropped quietly: a message that
//! will not open, or that waited for a key that never came, is reported as
//! [`ClientEvent::Unreadable`].

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{ClientEvent, RelayClient};
use crate::e2e::{KeysMsg, OpenError, Place, open_file};
use crate::error::{DecodeError, ErrorCode};
use crate::file::FileMsg;
use crate::frame::{Payload, PayloadKind};
use crate::id::ClientId;
use crate::time::Timestamp;
use crate::wire::{Reader, Writer};

/// A message from a client whose group key we wait for.
#[derive(Debug)]
enum HeldItem {
    /// A message to everyone, still sealed.
    Sealed {
        to: ClientId,
        seq: u64,
        body: Vec<u8>,
    },
    /// A message already opened, to be shown after those before it.
    Opened(ClientEvent),
}

impl HeldItem {
    fn size(&self) -> usize {
        match self {
            HeldItem::Sealed { body, .. } => body.len(),
            HeldItem::Opened(ClientEvent::Message { text, .. }) => text.len(),
            HeldItem::Opened(_) => 0,
        }
    }
}

/// Messages held until their senders' group keys arrive, each sender's in order.
/// Their bytes in all are bounded (by the outbound bound: what a relay could have
/// queued for us); past it, a sealed message is reported unreadable and an opened
/// one is shown at once.
#[derive(Debug, Default)]
pub(super) struct Held {
    by_sender: FxHashMap<ClientId, VecDeque<HeldItem>>,
    bytes: usize,
}

impl Held {
    /// The messages held, as (sender, sequence number), each sender's in order.
    pub(super) fn messages(&self) -> Vec<(ClientId, u64)> {
        let mut out: Vec<(ClientId, u64)> = self
            .by_sender
            .iter()
            .flat_map(|(&from, items)| {
                items.iter().filter_map(move |item| match item {
                    HeldItem::Sealed { seq, .. }
                    | HeldItem::Opened(ClientEvent::Message { seq, .. }) => Some((from, *seq)),
                    HeldItem::Opened(_) => None,
                })
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Appends what a saved session keeps of the held messages (they were counted
    /// as received: a restarted client must still show them once the keys come).
    pub(super) fn save(&self, w: &mut Writer<'_>) {
        let mut senders: Vec<_> = self.by_sender.iter().collect();
        senders.sort_unstable_by_key(|(id, _)| **id);
        w.u32(u32::try_from(senders.len()).unwrap_or(u32::MAX));
        for (from, items) in senders {
            w.u32(from.0);
            let kept: Vec<&HeldItem> = items
                .iter()
                .filter(|i| {
                    matches!(
                        i,
                        HeldItem::Sealed { .. } | HeldItem::Opened(ClientEvent::Message { .. })
                    )
                })
                .collect();
            w.u32(u32::try_from(kept.len()).unwrap_or(u32::MAX));
            for item in kept {
                match item {
                    HeldItem::Sealed { to, seq, body } => {
                        w.u8(0);
                        w.u32(to.0);
                        w.u64(*seq);
                        w.u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
                        w.rest(body);
                    }
                    HeldItem::Opened(ClientEvent::Message {
                        to,
                        seq,
                        text,
                        encrypted,
                        ..
                    }) => {
                        w.u8(1 | u8::from(*encrypted) << 1);
                        w.u32(to.0);
                        w.u64(*seq);
                        w.u32(u32::try_from(text.len()).unwrap_or(u32::MAX));
                        w.rest(text.as_bytes());
                    }
                    HeldItem::Opened(_) => {}
                }
            }
        }
    }

    /// The held messages [`Held::save`] wrote, and the senders whose keys to ask
    /// for again.
    pub(super) fn restore(r: &mut Reader<'_>) -> Result<(Held, Vec<ClientId>), DecodeError> {
        let mut held = Held::default();
        let mut senders = Vec::new();
        for _ in 0..r.u32()? {
            let from = ClientId(r.u32()?);
            senders.push(from);
            let mut items = VecDeque::new();
            for _ in 0..r.u32()? {
                let tag = r.u8()?;
                let to = ClientId(r.u32()?);
                let seq = r.u64()?;
                let len = r.u32()? as usize;
                let bytes = r.take(len)?.to_vec();
                held.bytes += bytes.len();
                items.push_back(if tag & 1 == 0 {
                    HeldItem::Sealed {
                        to,
                        seq,
                        body: bytes,
                    }
                } else {
                    HeldItem::Opened(ClientEvent::Message {
                        from,
                        to,
                        seq,
                        text: String::from_utf8_lossy(&bytes).into_owned(),
                        encrypted: tag & 2 != 0,
                    })
                });
            }
            held.by_sender.insert(from, items);
        }
        Ok((held, senders))
    }

    fn is_holding(&self, from: ClientId) -> bool {
        self.by_sender.contains_key(&from)
    }

    /// Holds `item` behind `from`'s others (starting a queue for `from` if `start`);
    /// gives it back when there is no room, or nothing to queue behind.
    fn push(
        &mut self,
        from: ClientId,
        item: HeldItem,
        start: bool,
        limit: usize,
    ) -> Result<(), HeldItem> {
        let size = item.size();
        if self.bytes + size > limit || (!start && !self.is_holding(from)) {
            return Err(item);
        }
        self.bytes += size;
        self.by_sender.entry(from).or_default().push_back(item);
        Ok(())
    }

    fn take(&mut self, from: ClientId) -> VecDeque<HeldItem> {
        let items = self.by_sender.remove(&from).unwrap_or_default();
        self.bytes -= items.iter().map(HeldItem::size).sum::<usize>();
        items
    }
}

impl RelayClient {
    /// A message from client `from` (`to` is our ID, or broadcast).
    pub(super) fn on_deliver(
        &mut self,
        from: ClientId,
        to: ClientId,
        seq: u64,
        payload: Payload,
        now: Timestamp,
    ) {
        let kind = payload.kind;
        if matches!(
            kind,
            PayloadKind::Sealed | PayloadKind::SealedFile | PayloadKind::Keys
        ) && self.keyring.is_none()
        {
            let why = "it is end-to-end encrypted, and this client has no key (--insecure)";
            self.unreadable(from, seq, why.into());
            return;
        }
        let place = Place { kind, to, seq };
        match kind {
            PayloadKind::Text => self.on_text(from, to, seq, payload.body, false),
            PayloadKind::File => self.on_file_message(from, FileMsg::decode(&payload.body).ok()),
            PayloadKind::Sealed => match self.open(from, place, 0, &payload.body) {
                Ok(plain) => self.on_text(from, to, seq, plain, true),
                Err(OpenError::NoGroupKey) => {
                    let asked = self.held.is_holding(from);
                    let item = HeldItem::Sealed {
                        to,
                        seq,
                        body: payload.body,
                    };
                    let limit = self.limits.max_outbound_bytes;
                    if self.held.push(from, item, true, limit).is_err() {
                        let why = "too many messages wait for their senders' group keys";
                        self.unreadable(from, seq, why.into());
                    }
                    if !asked {
                        self.owe_key_request(from, now);
                    }
                }
                Err(OpenError::Rejected(why)) => self.unreadable(from, seq, why),
            },
            PayloadKind::SealedFile => self.on_sealed_file(from, place, &payload.body),
            PayloadKind::Keys => match self.open(from, place, 0, &payload.body) {
                Ok(plain) => self.on_keys(from, seq, &plain, now),
                Err(OpenError::NoGroupKey) => {}
                Err(OpenError::Rejected(why)) => self.unreadable(from, seq, why),
            },
            PayloadKind::Other(kind) => self
                .events
                .push_back(ClientEvent::UnsupportedPayload { from, kind }),
        }
    }

    fn open(
        &mut self,
        from: ClientId,
        place: Place,
        clear: usize,
        body: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        match self.keyring.as_mut() {
            Some(ring) => ring.open(from, place, clear, body),
            None => Err(OpenError::Rejected("this client has no key".into())),
        }
    }

    /// Chat text: checked like the relay checks clear text (it cannot check sealed
    /// text), but a bad sealed message harms only itself.
    fn on_text(&mut self, from: ClientId, to: ClientId, seq: u64, text: Vec<u8>, sealed: bool) {
        if sealed && text.len() > self.limits.max_text_len {
            let why = format!(
                "its text is {} bytes; the limit is {}",
                text.len(),
                self.limits.max_text_len
            );
            self.unreadable(from, seq, why);
            return;
        }
        if !sealed {
            self.tell_plain(from, false);
        }
        match String::from_utf8(text) {
            Ok(text) => {
                self.chat_seen += 1;
                let event = ClientEvent::Message {
                    from,
                    to,
                    seq,
                    text,
                    encrypted: sealed,
                };
                let limit = self.limits.max_outbound_bytes;
                if let Err(HeldItem::Opened(event)) =
                    self.held.push(from, HeldItem::Opened(event), false, limit)
                {
                    self.events.push_back(event);
                }
            }
            Err(_) if sealed => self.unreadable(from, seq, "its text is not valid UTF-8".into()),
            Err(_) => {
                let reason = format!("the relay delivered invalid UTF-8 from client {from}");
                self.fail(ErrorCode::InvalidUtf8, reason);
            }
        }
    }

    /// A sealed file message: its clear header must say what the sealed part says.
    fn on_sealed_file(&mut self, from: ClientId, place: Place, body: &[u8]) {
        let opened = match self.keyring.as_mut() {
            Some(ring) => open_file(ring, from, place, body),
            None => Err(OpenError::Rejected("this client has no key".into())),
        };
        match opened {
            Ok(msg) => self.files.on_message(Some(from), msg),
            Err(OpenError::Rejected(why)) => self.unreadable(from, place.seq, why),
            Err(OpenError::NoGroupKey) => self.on_file_message(from, None),
        }
    }

    /// Key exchange from client `from`.
    fn on_keys(&mut self, from: ClientId, seq: u64, plain: &[u8], now: Timestamp) {
        match KeysMsg::decode(plain) {
            Some(KeysMsg::GroupKey(key)) => {
                if let Some(ring) = self.keyring.as_mut() {
                    ring.set_group_key(from, key);
                }
                for item in self.held.take(from) {
                    match item {
                        HeldItem::Sealed { to, seq, body } => {
                            let place = Place {
                                kind: PayloadKind::Sealed,
                                to,
                                seq,
                            };
                            match self.open(from, place, 0, &body) {
                                Ok(plain) => self.on_text(from, to, seq, plain, true),
                                Err(OpenError::NoGroupKey) => {
                                    let why = "the group key it was sent did not open it";
                                    self.unreadable(from, seq, why.into());
                                }
                                Err(OpenError::Rejected(why)) => self.unreadable(from, seq, why),
                            }
                        }
                        HeldItem::Opened(event) => self.events.push_back(event),
                    }
                }
            }
            Some(KeysMsg::Request) => self.owe_group_key(from, now),
            None => self.unreadable(from, seq, "its key message is malformed".into()),
        }
    }

    /// Client `from` left, or is not online: what waited for its group key never
    /// will be read.
    pub(super) fn give_up_held(&mut self, from: ClientId, why: &str) {
        for item in self.held.take(from) {
            match item {
                HeldItem::Sealed { seq, .. } => {
                    let reason = format!("its group key never arrived: {why}");
                    self.unreadable(from, seq, reason);
                }
                HeldItem::Opened(event) => self.events.push_back(event),
            }
        }
    }

    /// The session ends: every message still waiting for its sender's group key is
    /// reported unreadable (nothing is dropped without a word).
    pub(super) fn give_up_all_held(&mut self, why: &str) {
        let mut senders: Vec<ClientId> = self.held.by_sender.keys().copied().collect();
        senders.sort_unstable();
        for from in senders {
            self.give_up_held(from, why);
        }
    }

    fn unreadable(&mut self, from: ClientId, seq: u64, reason: String) {
        self.events
            .push_back(ClientEvent::Unreadable { from, seq, reason });
    }
}
