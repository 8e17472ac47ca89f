//! A relay client's end-to-end keys: its own, the keys it shares with each client it
//! writes to or hears from, and the group keys that messages to everyone use.
//!
//! Messages to one client are sealed with the pair key of the sender's connection and
//! that client (see [`super::seal`]). A message to everyone is sealed once, with the
//! sender's group key, a random key per connection that the sender hands to each
//! client in a pair-sealed `Keys` message before it is needed (or when a client asks
//! for it). So a broadcast costs one encryption, however many read it.
//!
//! Each stream (pair or group, per sender) keeps the sequence numbers it opened (a
//! [`SeqWindow`]): a message that comes again is refused; one overtaken by later ones
//! (a session that moved between relays) is not.
//!
//! A sender tells a recipient how to compute their pair key (`PairOpen`) on every
//! message until one of those messages is confirmed delivered: any of them may be
//! lost with a relay that dies, and the messages behind it must still open.

use rustc_hash::{FxHashMap, FxHashSet};

use super::seal::{Envelope, Key, Place, SealKey, dh, pair_key, public_of};
use crate::error::DecodeError;
use crate::frame::PayloadKind;
use crate::id::ClientId;
use crate::secure::{Identity, PublicKey, RecordCipher, derive};
use crate::seq_window::SeqWindow;
use crate::wire::{Reader, Writer};

/// A `Keys` message: what one client tells another about keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeysMsg {
    /// The sender's group key, for its messages to everyone.
    GroupKey(Key),
    /// The sender asks for the recipient's group key (it got a message to everyone
    /// it could not open).
    Request,
}

mod keys_type {
    pub const GROUP_KEY: u8 = 1;
    pub const REQUEST: u8 = 2;
}

impl KeysMsg {
    /// Its plaintext.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            KeysMsg::GroupKey(key) => {
                let mut out = vec![keys_type::GROUP_KEY];
                out.extend_from_slice(key);
                out
            }
            KeysMsg::Request => vec![keys_type::REQUEST],
        }
    }

    /// Reads a plaintext.
    pub(crate) fn decode(plain: &[u8]) -> Option<KeysMsg> {
        match plain {
            [keys_type::GROUP_KEY, key @ ..] => Some(KeysMsg::GroupKey(key.try_into().ok()?)),
            [keys_type::REQUEST] => Some(KeysMsg::Request),
            _ => None,
        }
    }
}

/// Why a sealed message did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// A message to everyone from a sender whose group key has not arrived yet.
    NoGroupKey,
    /// It will never open: the sentence says why.
    Rejected(String),
}

/// The pair key we seal with towards one client.
struct OutPair {
    key: SealKey,
    /// Whether a message that tells the recipient how to compute the key was
    /// confirmed delivered: then it has the key.
    opened: bool,
    /// The messages sent since that tell it (until one is confirmed).
    opening: Vec<u64>,
}

/// The pair key one client seals with towards us.
struct InPair {
    key: SealKey,
    /// The sender's ephemeral key it came from: the same again needs no new work.
    ephemeral: PublicKey,
    seqs: SeqWindow,
}

/// One client's group key, as it handed it to us.
struct InGroup {
    key: SealKey,
    seqs: SeqWindow,
}

/// See the module documentation.
pub(crate) struct Keyring {
    identity: Identity,
    /// Where the ephemeral and group keys came from: what a saved session keeps of
    /// them (see [`Keyring::save`]).
    seed: [u8; 32],
    /// What we seal with (what our channel proposes); we open either.
    cipher: RecordCipher,
    ephemeral: [u8; 32],
    ephemeral_public: PublicKey,
    group_key: SealKey,
    /// Clients we handed our group key to.
    group_holders: FxHashSet<ClientId>,
    /// Whether we have written to everyone (so the group key is in use).
    group_used: bool,
    /// The key each client has, as the relay announced it or its own sealed message
    /// proved it (`None`: it has none; it reads and writes plain text).
    known: FxHashMap<ClientId, Option<PublicKey>>,
    out_pairs: FxHashMap<ClientId, OutPair>,
    in_pairs: FxHashMap<ClientId, InPair>,
    in_groups: FxHashMap<ClientId, InGroup>,
}

impl core::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keyring")
            .field("identity", &self.identity)
            .field("known", &self.known.len())
            .field("pairs", &(self.out_pairs.len(), self.in_pairs.len()))
            .field("groups", &self.in_groups.len())
            .finish()
    }
}

impl Keyring {
    /// The keyring of one connection, with our long-term `identity`, sealing with
    /// `cipher`; its ephemeral and group keys come from `seed`.
    pub(crate) fn new(identity: Identity, seed: &[u8; 32], cipher: RecordCipher) -> Keyring {
        let ephemeral = derive(b"p2pchat e2e ephemeral v1", &[seed]);
        Keyring {
            identity,
            seed: *seed,
            cipher,
            ephemeral,
            ephemeral_public: public_of(&ephemeral),
            group_key: SealKey::new(derive(b"p2pchat e2e group v1", &[seed])),
            group_holders: FxHashSet::default(),
            group_used: false,
            known: FxHashMap::default(),
            out_pairs: FxHashMap::default(),
            in_pairs: FxHashMap::default(),
            in_groups: FxHashMap::default(),
        }
    }

    /// Appends what a restarted client needs to go on with the same keys: the
    /// seed of our own keys, who holds our group key, the keys of the others, and
    /// each stream's last sequence number (so that nothing opens twice). The
    /// identity is not saved: it lives in the key store.
    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        w.rest(&self.seed);
        w.u8(u8::from(self.group_used));
        let mut holders: Vec<ClientId> = self.group_holders.iter().copied().collect();
        holders.sort_unstable();
        w.u32(holders.len() as u32);
        for id in holders {
            w.u32(id.0);
        }
        let mut known: Vec<_> = self.known.iter().collect();
        known.sort_unstable_by_key(|(id, _)| **id);
        w.u32(known.len() as u32);
        for (id, key) in known {
            w.u32(id.0);
            match key {
                Some(key) => {
                    w.u8(1);
                    w.rest(&key.0);
                }
                None => w.u8(0),
            }
        }
        let mut out: Vec<_> = self.out_pairs.iter().collect();
        out.sort_unstable_by_key(|(id, _)| **id);
        w.u32(out.len() as u32);
        for (id, pair) in out {
            w.u32(id.0);
            w.rest(pair.key.bytes());
            w.u8(u8::from(pair.opened));
        }
        let mut pairs: Vec<_> = self.in_pairs.iter().collect();
        pairs.sort_unstable_by_key(|(id, _)| **id);
        w.u32(pairs.len() as u32);
        for (id, pair) in pairs {
            w.u32(id.0);
            w.rest(pair.key.bytes());
            w.rest(&pair.ephemeral.0);
            w.u64(pair.seqs.last());
        }
        let mut groups: Vec<_> = self.in_groups.iter().collect();
        groups.sort_unstable_by_key(|(id, _)| **id);
        w.u32(groups.len() as u32);
        for (id, group) in groups {
            w.u32(id.0);
            w.rest(group.key.bytes());
            w.u64(group.seqs.last());
        }
    }

    /// The keyring [`Keyring::save`] wrote, for `identity`, sealing with `cipher`.
    pub(crate) fn restore(
        identity: Identity,
        cipher: RecordCipher,
        r: &mut Reader<'_>,
    ) -> Result<Keyring, DecodeError> {
        let seed: [u8; 32] = r.array()?;
        let mut ring = Keyring::new(identity, &seed, cipher);
        ring.group_used = r.u8()? != 0;
        // Who held our group key is read but not trusted: a key handed out just
        // before the process died may not have gone out. The restarted client hands
        // it to everyone again.
        for _ in 0..r.u32()? {
            r.u32()?;
        }
        for _ in 0..r.u32()? {
            let id = ClientId(r.u32()?);
            let key = match r.u8()? {
                0 => None,
                _ => Some(PublicKey(r.array()?)),
            };
            ring.known.insert(id, key);
        }
        for _ in 0..r.u32()? {
            let id = ClientId(r.u32()?);
            let key = SealKey::new(r.array()?);
            let opened = r.u8()? != 0;
            let opening = Vec::new();
            ring.out_pairs.insert(
                id,
                OutPair {
                    key,
                    opened,
                    opening,
                },
            );
        }
        for _ in 0..r.u32()? {
            let id = ClientId(r.u32()?);
            let key = SealKey::new(r.array()?);
            let ephemeral = PublicKey(r.array()?);
            let seqs = SeqWindow::after(r.u64()?);
            ring.in_pairs.insert(
                id,
                InPair {
                    key,
                    ephemeral,
                    seqs,
                },
            );
        }
        for _ in 0..r.u32()? {
            let id = ClientId(r.u32()?);
            let key = SealKey::new(r.array()?);
            let seqs = SeqWindow::after(r.u64()?);
            ring.in_groups.insert(id, InGroup { key, seqs });
        }
        Ok(ring)
    }

    /// Our long-term public key.
    pub(crate) fn public(&self) -> PublicKey {
        self.identity.public()
    }

    /// Records the key the relay announced for client `id`.
    pub(crate) fn announce(&mut self, id: ClientId, key: Option<PublicKey>) {
        self.known.insert(id, key);
    }

    /// The key of client `id`: `None` while unknown, `Some(None)` when it has none.
    pub(crate) fn key_of(&self, id: ClientId) -> Option<Option<PublicKey>> {
        self.known.get(&id).copied()
    }

    /// The clients known to have a key, in no order.
    pub(crate) fn keyed_clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.known
            .iter()
            .filter(|(_, k)| k.is_some())
            .map(|(&id, _)| id)
    }

    /// The clients known to have no key, in no order.
    pub(crate) fn plain_clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.known
            .iter()
            .filter(|(_, k)| k.is_none())
            .map(|(&id, _)| id)
    }

    /// Forgets client `id` (it left).
    pub(crate) fn forget(&mut self, id: ClientId) {
        self.known.remove(&id);
        self.out_pairs.remove(&id);
        self.in_pairs.remove(&id);
        self.in_groups.remove(&id);
        self.group_holders.remove(&id);
    }

    /// Our message `seq` to client `to` was confirmed delivered: if it told `to` how
    /// to compute our pair key, `to` has it, and later messages need not tell it.
    pub(crate) fn delivered(&mut self, to: ClientId, seq: u64) {
        if let Some(pair) = self.out_pairs.get_mut(&to)
            && pair.opening.contains(&seq)
        {
            pair.opened = true;
            pair.opening.clear();
        }
    }

    /// What we sent client `id` may not have reached it (the relay said it did not,
    /// or our session moved to another relay with it unconfirmed): the next message
    /// to it tells it again how to compute our pair key, and our group key is handed
    /// to it again, in case the message that did so was among the lost.
    pub(crate) fn may_have_lost(&mut self, id: ClientId) {
        if let Some(pair) = self.out_pairs.get_mut(&id) {
            pair.opened = false;
        }
        self.group_holders.remove(&id);
    }

    /// Whether client `id` has yet to be handed our group key.
    pub(crate) fn lacks_group_key(&self, id: ClientId) -> bool {
        !self.group_holders.contains(&id)
    }

    /// Whether we have written to everyone, so that clients need our group key.
    pub(crate) fn group_in_use(&self) -> bool {
        self.group_used
    }

    /// The `Keys` message that hands client `id` our group key; it counts as handed.
    pub(crate) fn group_key_for(&mut self, id: ClientId) -> KeysMsg {
        self.group_holders.insert(id);
        KeysMsg::GroupKey(*self.group_key.bytes())
    }

    /// Keeps client `from`'s group key.
    pub(crate) fn set_group_key(&mut self, from: ClientId, key: Key) {
        match self.in_groups.get_mut(&from) {
            Some(g) if g.key.bytes() == &key => {}
            Some(g) => g.key = SealKey::new(key),
            None => {
                let key = SealKey::new(key);
                let seqs = SeqWindow::default();
                self.in_groups.insert(from, InGroup { key, seqs });
            }
        }
    }

    /// Works out the pair key towards client `to`, whose key is `recipient`, unless
    /// it exists; `Err` when that key cannot be used (a low-order point).
    pub(crate) fn prepare(&mut self, to: ClientId, recipient: &PublicKey) -> Result<(), String> {
        if to.is_broadcast() || self.out_pairs.contains_key(&to) {
            return Ok(());
        }
        let me = self.identity.public();
        let (Some(es), Some(ss)) = (
            dh(&self.ephemeral, recipient),
            dh(self.identity.secret(), recipient),
        ) else {
            return Err(format!("client {to}'s key cannot be used for encryption"));
        };
        let key = SealKey::new(pair_key(&es, &ss, &self.ephemeral_public, &me, recipient));
        let opening = Vec::new();
        self.out_pairs.insert(
            to,
            OutPair {
                key,
                opened: false,
                opening,
            },
        );
        Ok(())
    }

    /// Seals `plain` for `place`, appending to `out` (whose bytes from `header_start`
    /// on are the clear header, if any): to everyone with our group key, to one client with our pair key,
    /// worked out from `recipient`'s key the first time. Until a message that tells
    /// the recipient how to compute the key is confirmed delivered
    /// ([`Keyring::delivered`]), every message does.
    pub(crate) fn seal(
        &mut self,
        place: Place,
        recipient: &PublicKey,
        plain: &[u8],
        out: &mut Vec<u8>,
        header_start: usize,
    ) -> Result<(), String> {
        if place.to.is_broadcast() {
            self.group_used = true;
            Envelope::Group.encode_into(self.cipher, out);
            self.group_key
                .seal_into(self.cipher, place, plain, out, header_start);
            return Ok(());
        }
        self.prepare(place.to, recipient)?;
        let Some(pair) = self.out_pairs.get_mut(&place.to) else {
            return Err(format!("no pair key for client {}", place.to));
        };
        if pair.opened {
            Envelope::Pair.encode_into(self.cipher, out);
        } else {
            Envelope::PairOpen {
                ephemeral: self.ephemeral_public,
                sender: self.identity.public(),
            }
            .encode_into(self.cipher, out);
            pair.opening.push(place.seq);
        }
        pair.key
            .seal_into(self.cipher, place, plain, out, header_start);
        Ok(())
    }

    /// Opens a sealed message from client `from`; the first `clear` bytes of `body`
    /// are its clear header (file messages). The plaintext, or why not.
    pub(crate) fn open(
        &mut self,
        from: ClientId,
        place: Place,
        clear: usize,
        body: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        let reject = |why: &str| Err(OpenError::Rejected(why.to_owned()));
        let Some((envelope, cipher, len)) = body.get(clear..).and_then(Envelope::parse) else {
            return reject("its envelope is malformed");
        };
        let Some((header, sealed)) = body.split_at_checked(clear + len) else {
            return reject("its envelope is malformed");
        };
        match envelope {
            Envelope::Group => {
                if !place.to.is_broadcast() || place.kind != PayloadKind::Sealed {
                    return reject("a group key seals only chat to everyone");
                }
                let Some(group) = self.in_groups.get_mut(&from) else {
                    return Err(OpenError::NoGroupKey);
                };
                let plain = group.key.open(cipher, place, header, sealed).map_or_else(
                    || reject("it does not open with the sender's group key"),
                    Ok,
                )?;
                if !group.seqs.take(place.seq) {
                    return reject("it was replayed");
                }
                Ok(plain)
            }
            Envelope::PairOpen { ephemeral, sender } => {
                if let Some(Some(announced)) = self.known.get(&from)
                    && *announced != sender
                {
                    return Err(OpenError::Rejected(format!(
                        "it is signed with key {sender}, but the relay announced {announced} for client {from}"
                    )));
                }
                if let Some(pair) = self.in_pairs.get_mut(&from)
                    && pair.ephemeral == ephemeral
                {
                    // The same pair key again (the sender re-opened after a refused
                    // offer): no new work, and the same replay check.
                    let plain = pair
                        .key
                        .open(cipher, place, header, sealed)
                        .map_or_else(|| reject("it does not open with the keys it names"), Ok)?;
                    if !pair.seqs.take(place.seq) {
                        return reject("it was replayed");
                    }
                    return Ok(plain);
                }
                let secret = self.identity.secret();
                let (Some(es), Some(ss)) = (dh(secret, &ephemeral), dh(secret, &sender)) else {
                    return reject("its keys cannot be used");
                };
                let key = SealKey::new(pair_key(
                    &es,
                    &ss,
                    &ephemeral,
                    &sender,
                    &self.identity.public(),
                ));
                let plain = key
                    .open(cipher, place, header, sealed)
                    .map_or_else(|| reject("it does not open with the keys it names"), Ok)?;
                self.in_pairs.insert(
                    from,
                    InPair {
                        key,
                        ephemeral,
                        seqs: SeqWindow::default(),
                    },
                );
                if let Some(pair) = self.in_pairs.get_mut(&from) {
                    pair.seqs.take(place.seq);
                }
                self.known.insert(from, Some(sender));
                Ok(plain)
            }
            Envelope::Pair => {
                let Some(pair) = self.in_pairs.get_mut(&from) else {
                    return reject("no key for it arrived before it");
                };
                let plain = pair
                    .key
                    .open(cipher, place, header, sealed)
                    .map_or_else(|| reject("it does not open with the pair key"), Ok)?;
                if !pair.seqs.take(place.seq) {
                    return reject("it was replayed");
                }
                Ok(plain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd numbers seal with AES-256-GCM, even ones with ChaCha20-Poly1305: every
    /// pair of test clients mixes them.
    fn ring(n: u8) -> Keyring {
        let cipher = if n % 2 == 1 {
            RecordCipher::AesGcm
        } else {
            RecordCipher::ChaChaPoly
        };
        Keyring::new(Identity::from_secret([n; 32]), &[n + 100; 32], cipher)
    }

    fn place(kind: PayloadKind, to: ClientId, seq: u64) -> Place {
        Place { kind, to, seq }
    }

    const ANN: ClientId = ClientId(0);
    const BOB: ClientId = ClientId(1);

    #[test]
    fn pair_messages_open_for_their_recipient_once_even_late() {
        let (mut ann, mut bob, mut eve) = (ring(1), ring(2), ring(3));
        bob.announce(ANN, Some(ann.public()));
        let bob_key = bob.public();
        let mut sealed = Vec::new();
        for seq in 1..=3 {
            let mut out = Vec::new();
            let p = place(PayloadKind::Sealed, BOB, seq);
            ann.seal(p, &bob_key, format!("m{seq}").as_bytes(), &mut out, 0)
                .unwrap();
            sealed.push((p, out));
            // The first is confirmed delivered: bob has the pair key.
            ann.delivered(BOB, 1);
        }
        assert_ne!(
            sealed[0].1[0], sealed[1].1[0],
            "the first message opens the pair"
        );
        // Eve (the relay, or anyone) cannot open them.
        assert!(eve.open(ANN, sealed[0].0, 0, &sealed[0].1).is_err());
        assert_eq!(bob.open(ANN, sealed[0].0, 0, &sealed[0].1).unwrap(), b"m1");
        assert!(
            bob.open(ANN, sealed[0].0, 0, &sealed[0].1).is_err(),
            "replayed"
        );
        assert_eq!(bob.open(ANN, sealed[2].0, 0, &sealed[2].1).unwrap(), b"m3");
        assert_eq!(
            bob.open(ANN, sealed[1].0, 0, &sealed[1].1).unwrap(),
            b"m2",
            "overtaken, not replayed"
        );
        assert!(
            bob.open(ANN, sealed[1].0, 0, &sealed[1].1).is_err(),
            "replayed"
        );
    }

    #[test]
    fn a_key_other_than_the_announced_one_is_refused() {
        let (mut ann, mut bob) = (ring(1), ring(2));
        bob.announce(ANN, Some(ring(9).public()));
        let mut out = Vec::new();
        let p = place(PayloadKind::Sealed, BOB, 1);
        ann.seal(p, &bob.public(), b"hi", &mut out, 0).unwrap();
        match bob.open(ANN, p, 0, &out) {
            Err(OpenError::Rejected(why)) => assert!(why.contains("announced"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_message_tells_the_pair_key_until_one_that_did_is_confirmed_delivered() {
        let (mut ann, bob) = (ring(1), ring(2));
        let seal = |ann: &mut Keyring, seq| {
            let mut out = Vec::new();
            let p = place(PayloadKind::Sealed, BOB, seq);
            ann.seal(p, &bob.public(), b"hi", &mut out, 0).unwrap();
            Envelope::parse(&out).unwrap().2 == super::super::seal::PAIR_OPEN_LEN
        };
        // Either of the first two may be lost (a relay that dies, a refused offer).
        assert!(seal(&mut ann, 1));
        assert!(seal(&mut ann, 2));
        ann.delivered(BOB, 2);
        assert!(!seal(&mut ann, 3), "bob has the key");
        // Messages to bob were lost after all: tell it again.
        ann.may_have_lost(BOB);
        assert!(seal(&mut ann, 4));
    }

    #[test]
    fn messages_to_everyone_need_the_senders_group_key() {
        let (mut ann, mut bob) = (ring(1), ring(2));
        let mut out = Vec::new();
        let p = place(PayloadKind::Sealed, ClientId::BROADCAST, 5);
        ann.seal(p, &bob.public(), b"all", &mut out, 0).unwrap();
        assert_eq!(bob.open(ANN, p, 0, &out), Err(OpenError::NoGroupKey));
        let KeysMsg::GroupKey(key) = ann.group_key_for(BOB) else {
            panic!()
        };
        assert!(!ann.lacks_group_key(BOB));
        bob.set_group_key(ANN, key);
        assert_eq!(bob.open(ANN, p, 0, &out).unwrap(), b"all");
        assert!(bob.open(ANN, p, 0, &out).is_err(), "replayed");
        // The same ciphertext presented as a message to one client does not open.
        let to_bob = place(PayloadKind::Sealed, BOB, 6);
        assert!(bob.open(ANN, to_bob, 0, &out).is_err());
    }

    #[test]
    fn keys_messages_round_trip() {
        for m in [KeysMsg::GroupKey([7; 32]), KeysMsg::Request] {
            assert_eq!(KeysMsg::decode(&m.encode()), Some(m));
        }
        assert_eq!(KeysMsg::decode(&[1, 2]), None);
        assert_eq!(KeysMsg::decode(&[]), None);
    }
}
