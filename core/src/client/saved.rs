//! A relay client's session, saved so that a client whose process died (a crash,
//! `kill -9`, a closed laptop) can be started again and come back to it: same ID,
//! nothing lost, nothing repeated.
//!
//! The relay already holds a lost client's session for its grace period (see
//! `crate::session`); what died with the process is the client's half: the resume
//! token, how much of the relay's stream it handled, its own stream not yet
//! acknowledged, its sequence numbers, its unconfirmed messages and its end-to-end
//! keys. [`RelayClient::save`] writes exactly that, and [`RelayClient::restore`]
//! builds a client that is away from its session, ready to dial and `Resume`.
//!
//! The core decides *what* is saved and *when it changed*
//! ([`RelayClient::save_point`]); the driver decides where it goes, and must save
//! before it writes anything the machine queued, so that the relay never holds
//! bytes (or acknowledgements) the saved session does not know of. The saved bytes
//! end in a hash of the rest: a torn or foreign file is refused as
//! [`RestoreError::Damaged`], never half read.

use std::collections::BTreeMap;

use super::{Phase, RelayClient};
use crate::e2e::Keyring;
use crate::id::ClientId;
use crate::limits::Limits;
use crate::link::Link;
use crate::saved::{
    RestoreError, SavePoint, check_identity, open, read_stream, save_identity, save_stream, seal,
};
use crate::secure::Security;
use crate::session::Away;
use crate::time::Timestamp;
use crate::wire::Writer;

/// The first bytes of a saved relay-client session (and its format's version).
const MAGIC: &[u8; 8] = b"p2pcS\x00\x01R";

impl RelayClient {
    /// Where the session stands, for the driver to tell whether it must be saved
    /// again; `None` while there is no session to save (not yet admitted, a relay
    /// without the session layer, over, or a file transfer under way): the driver
    /// then forgets what it saved.
    pub fn save_point(&self) -> Option<SavePoint> {
        let id = self.session_id()?;
        // While a file is under way, its chunks are not what a save waits for (they
        // would be saved, and fsync'd, again and again: a 100 MiB transfer took 3x
        // as long); chat is. A process killed then cannot resume (the other side
        // holds more of the stream than was saved) but loses nothing unreported:
        // its unconfirmed messages are named, and what it was shown was saved.
        let files_busy = !self.files.is_idle();
        Some(SavePoint {
            received: if files_busy {
                self.chat_seen
            } else {
                self.received
            },
            // Our chat, not the transfer's messages (each takes a sequence number).
            sent: if files_busy {
                self.unconfirmed.keys().next_back().copied().unwrap_or(0)
            } else {
                self.link.stream_end()
            },
            files_busy,
            transfers: self.files.under_way(),
            next_seq: if files_busy { 0 } else { self.next_seq },
            unconfirmed: self.unconfirmed.len(),
            exited: self.exited,
            id: id.0,
        })
    }

    /// Our ID, while there is a session the relay would let us resume.
    fn session_id(&self) -> Option<ClientId> {
        match self.phase {
            Phase::Admitted(id) | Phase::Resuming(id) if self.resumable => Some(id),
            // Before the relay admitted us (or gave its token), a session cannot be
            // resumed, but what was sent meanwhile is named at the next start.
            Phase::Handshaking if !self.unconfirmed.is_empty() => Some(ClientId(u32::MAX)),
            _ => None,
        }
    }

    /// The session, saved: what [`RelayClient::restore`] needs in another process to
    /// come back to it. `None` when [`RelayClient::save_point`] is `None`.
    pub fn save(&mut self) -> Option<Vec<u8>> {
        self.save_point()?;
        let id = self.session_id()?;
        let mut out = Vec::with_capacity(256 + self.link.unacked());
        out.extend_from_slice(MAGIC);
        let mut w = Writer::new(&mut out);
        w.u32(id.0);
        match self.resume_token {
            Some((token, grace)) => {
                w.u8(1);
                w.rest(&token);
                w.u64(grace.as_millis() as u64);
            }
            None => w.u8(0),
        }
        w.str8(&self.hello.name);
        w.u64(self.next_seq);
        w.u64(self.received);
        w.u8(u8::from(self.exited));
        save_identity(&mut w, &self.security);
        w.u32(self.unconfirmed.len() as u32);
        for (&seq, to) in &self.unconfirmed {
            w.u64(seq);
            w.u32(to.0);
        }
        match &self.keyring {
            Some(ring) => {
                w.u8(1);
                ring.save(&mut w);
            }
            None => w.u8(0),
        }
        self.files.save(&mut w);
        self.held.save(&mut w);
        self.outbox.save(&mut w);
        save_stream(&mut out, &mut self.link);
        Some(seal(out))
    }

    /// A client restored from `saved` ([`RelayClient::save`]), away from its session
    /// and ready to come back to it: connect, then call
    /// [`RelayClient::handle_reconnected`] and drive it as usual. If the relay no
    /// longer holds the session, it ends with `resume-failed` (naming what was not
    /// confirmed delivered), as after a long absence.
    ///
    /// `security` must carry the same identity as when it was saved; its seed is
    /// fresh (handshakes never reuse randomness), the end-to-end keys are the saved
    /// ones.
    pub fn restore(
        saved: &[u8],
        limits: Limits,
        security: Security,
        now: Timestamp,
    ) -> Result<RelayClient, RestoreError> {
        let mut r = open(saved, MAGIC, "relay")?;
        let id = ClientId(r.u32()?);
        let token = match r.u8()? {
            0 => None,
            _ => Some((
                r.array::<16>()?,
                core::time::Duration::from_millis(r.u64()?),
            )),
        };
        let name = r.str8("saved name")?;
        let next_seq = r.u64()?;
        let received = r.u64()?;
        let exited = r.u8()? != 0;
        check_identity(&mut r, &security)?;
        let mut unconfirmed = BTreeMap::new();
        for _ in 0..r.u32()? {
            let seq = r.u64()?;
            unconfirmed.insert(seq, ClientId(r.u32()?));
        }
        let Some((token, grace)) = token else {
            return Err(RestoreError::NotResumable {
                unconfirmed: unconfirmed.into_iter().collect(),
            });
        };
        let keyring = match (r.u8()?, &security.identity) {
            (0, _) => None,
            (_, Some(identity)) => {
                Some(Keyring::restore(identity.clone(), security.cipher, &mut r)?)
            }
            (_, None) => {
                return Err(RestoreError::Invalid(
                    "it has end-to-end keys but no identity".into(),
                ));
            }
        };
        let mut files =
            crate::file::Files::new(limits.max_outbound_bytes, limits.relay_file_window);
        files.restore(&mut r)?;
        let (held, waiting_for_keys) = super::receiving::Held::restore(&mut r)?;
        let outbox = super::sending::Outbox::restore(&mut r)?;
        let retained = read_stream(&mut r)?;
        let mut client =
            RelayClient::new(&name, limits, security, now).map_err(RestoreError::Invalid)?;
        client.link = Link::restored(&client.limits, now, retained);
        client.phase = Phase::Admitted(id);
        client.resumable = true;
        client.resume_token = Some((token, grace));
        client.next_seq = next_seq;
        client.received = received;
        client.exited = exited;
        client.unconfirmed = unconfirmed;
        if keyring.is_some() {
            client.keyring = keyring;
        }
        client.away = Some(Away::starting(now, grace));
        client.files = files;
        // The transfers that died with the process are ended: their cancels wait in
        // the session stream for the resume.
        client.pump_files(now);
        // Key exchange that was under way died with the process too (what we owed
        // others, and our requests): messages still held wait for keys asked for
        // again, and, if we wrote to everyone, our group key goes to everyone again.
        client.held = held;
        client.outbox = outbox;
        client.look_up_again(now);
        for from in waiting_for_keys {
            client.owe_key_request(from, now);
        }
        let keyed: Vec<ClientId> = client
            .keyring
            .as_ref()
            .map(|ring| ring.keyed_clients().collect())
            .unwrap_or_default();
        for id in keyed {
            client.owe_group_key(id, now);
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{Wire, party_security};
    use crate::{ClientEvent, ClientId, Limits, RelayClient, RestoreError, Timestamp};

    const T: Timestamp = Timestamp::ZERO;

    fn texts(events: &[ClientEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_client_restored_from_its_saved_session_resumes_with_nothing_lost_or_repeated() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let b = w.join("b");
        // Keys are exchanged both ways, pair and group.
        w.client(a).send_chat(ClientId(1), "one", T).unwrap();
        w.client(b).send_chat(ClientId(0), "hi a", T).unwrap();
        w.client(a).broadcast("to all, before", T).unwrap();
        w.pump();
        assert_eq!(texts(&w.take_events(b)), ["one", "to all, before"]);
        assert_eq!(texts(&w.take_events(a)), ["hi a"]);
        // b stops reading: what it sends is not acknowledged, what it is sent waits.
        w.clients[b].stalled = true;
        w.client(b)
            .send_chat(ClientId(0), "from b, unacknowledged", T)
            .unwrap();
        w.client(a).send_chat(ClientId(1), "two", T).unwrap();
        w.pump();
        let saved = w.client(b).save().expect("b has a session to save");
        // b's process dies; a writes on.
        w.cut(b);
        w.client(a).send_chat(ClientId(1), "three", T).unwrap();
        w.client(a).broadcast("to all, while b is away", T).unwrap();
        w.pump();
        // A new process: same identity, fresh randomness.
        let mut security = party_security(2);
        security.seed = [77; 32];
        let restored = RelayClient::restore(&saved, Limits::default(), security, w.now).unwrap();
        assert_eq!(restored.id(), Some(ClientId(1)));
        w.clients[b].client = restored;
        w.clients[b].events.clear();
        w.reconnect(b);
        let events = w.take_events(b);
        assert!(
            events.contains(&ClientEvent::Resumed { id: ClientId(1) }),
            "{events:?}"
        );
        assert_eq!(
            texts(&events),
            ["two", "three", "to all, while b is away"],
            "{events:?}"
        );
        assert_eq!(texts(&w.take_events(a)), ["from b, unacknowledged"]);
        // And on as before: pair keys and sequence numbers carried over.
        w.client(b).send_chat(ClientId(0), "after", T).unwrap();
        w.client(a)
            .send_chat(ClientId(1), "welcome back", T)
            .unwrap();
        w.pump();
        assert_eq!(texts(&w.take_events(a)), ["after"]);
        assert_eq!(texts(&w.take_events(b)), ["welcome back"]);
    }

    #[test]
    fn a_damaged_or_foreign_saved_session_is_refused_with_the_reason() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let saved = w.client(a).save().unwrap();
        let restore = |bytes: &[u8], n: u8| {
            RelayClient::restore(bytes, Limits::default(), party_security(n), T).map(|_| ())
        };
        assert_eq!(restore(&saved, 1), Ok(()));
        // Torn anywhere: the hash says so.
        for cut in [0, 1, 8, saved.len() / 2, saved.len() - 1] {
            assert!(
                matches!(restore(&saved[..cut], 1), Err(RestoreError::Damaged(_))),
                "cut at {cut}"
            );
        }
        let mut flipped = saved.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            restore(&flipped, 1),
            Err(RestoreError::Damaged(_))
        ));
        assert!(matches!(
            restore(&saved, 9),
            Err(RestoreError::OtherIdentity { .. })
        ));
    }
}
