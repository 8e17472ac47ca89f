//! Chunked file transfer: the state machine both relay clients and direct peers use,
//! and the file messages it exchanges.
//!
//! File messages travel as payloads of kind `File` inside ordinary `Chat` / `Deliver`
//! (relay) or `Message` (direct) frames, so the relay routes them like chat, by header,
//! without holding files. The core never touches a file: it asks the driver to read a
//! chunk ([`FileEvent::ReadChunk`]) or to write one ([`FileEvent::WriteChunk`]), and
//! the driver answers with [`Files`]' methods through its machine.
//!
//! Flow control: a sender has at most a window of chunks unacknowledged per transfer
//! (`Limits::relay_file_window` through a relay, `Limits::direct_file_window` between
//! peers), so neither side (nor the relay) buffers a file; and a machine asks for the next chunk
//! only while its outbound queue holds less than about one chunk per active transfer,
//! so a chat line never waits behind more than one chunk per transfer.
//!
//! Integrity: the sender's driver hashes the file (BLAKE3) as it reads it for sending,
//! and hands the hash over once it has read the last chunk ([`Files::hashed`]); it
//! travels in `Done`, and the receiver's driver compares it with the hash of what it
//! wrote. So a file starts moving at once, with no pass over it before the offer.
//!
//! Resume: the receiver's `Accept` says how many bytes it already holds and their
//! BLAKE3 hash (computed by the driver); the sender's driver checks that prefix against
//! its own file and starts from there, or from 0 if it differs (`Start` says which).

use std::collections::{BTreeMap, VecDeque};

use crate::error::DecodeError;
use crate::id::ClientId;
use crate::wire::{Reader, Writer};

/// Bytes of file data per chunk.
pub const CHUNK_SIZE: usize = 48 * 1024;

/// Identifies a transfer: chosen by the file's sender, unique among its transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u32);

impl core::fmt::Display for TransferId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 32-byte content hash (BLAKE3, computed by the driver).
pub type Hash = [u8; 32];

/// One file message. In every variant `transfer` names the file sender's transfer
/// ID, `offset` / `received` / `size` count bytes, `hash` / `prefix_hash` are BLAKE3
/// hashes, `reason` is a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are named alike in every variant, described above
pub enum FileMsg {
    /// Sender → receiver: may I send this file?
    Offer {
        transfer: TransferId,
        size: u64,
        name: String,
    },
    /// Receiver → sender: yes; I already hold `offset` bytes whose hash is `prefix_hash`.
    Accept {
        transfer: TransferId,
        offset: u64,
        prefix_hash: Hash,
    },
    /// Receiver → sender: no, and why.
    Decline {
        transfer: TransferId,
        reason: String,
    },
    /// Sender → receiver: chunks follow from `offset` (the accepted offset, or 0 when
    /// the receiver's prefix did not match).
    Start { transfer: TransferId, offset: u64 },
    /// Sender → receiver: bytes at `offset`.
    Chunk {
        transfer: TransferId,
        offset: u64,
        data: Vec<u8>,
    },
    /// Receiver → sender: everything below `received` is written.
    Ack { transfer: TransferId, received: u64 },
    /// Sender → receiver: all bytes are sent; `hash` is the BLAKE3 of all of them.
    Done { transfer: TransferId, hash: Hash },
    /// Receiver → sender: the hash matched (`ok`) or not.
    Result {
        transfer: TransferId,
        ok: bool,
        reason: String,
    },
    /// Sender → receiver: the transfer is abandoned.
    CancelBySender {
        transfer: TransferId,
        reason: String,
    },
    /// Receiver → sender: the transfer is abandoned.
    CancelByReceiver {
        transfer: TransferId,
        reason: String,
    },
}

/// File message type bytes, as listed in `docs/PROTOCOL.md`.
pub(crate) mod ty {
    pub const OFFER: u8 = 1;
    pub const ACCEPT: u8 = 2;
    pub const DECLINE: u8 = 3;
    pub const START: u8 = 4;
    pub const CHUNK: u8 = 5;
    pub const ACK: u8 = 6;
    pub const DONE: u8 = 7;
    pub const RESULT: u8 = 8;
    pub const CANCEL_BY_SENDER: u8 = 9;
    pub const CANCEL_BY_RECEIVER: u8 = 10;
}

impl FileMsg {
    /// The transfer it concerns.
    pub fn transfer(&self) -> TransferId {
        match self {
            FileMsg::Offer { transfer, .. }
            | FileMsg::Accept { transfer, .. }
            | FileMsg::Decline { transfer, .. }
            | FileMsg::Start { transfer, .. }
            | FileMsg::Chunk { transfer, .. }
            | FileMsg::Ack { transfer, .. }
            | FileMsg::Done { transfer, .. }
            | FileMsg::Result { transfer, .. }
            | FileMsg::CancelBySender { transfer, .. }
            | FileMsg::CancelByReceiver { transfer, .. } => *transfer,
        }
    }

    /// Its type byte (what the clear header of an end-to-end encrypted file message
    /// repeats).
    pub(crate) fn type_byte(&self) -> u8 {
        match self {
            FileMsg::Offer { .. } => ty::OFFER,
            FileMsg::Accept { .. } => ty::ACCEPT,
            FileMsg::Decline { .. } => ty::DECLINE,
            FileMsg::Start { .. } => ty::START,
            FileMsg::Chunk { .. } => ty::CHUNK,
            FileMsg::Ack { .. } => ty::ACK,
            FileMsg::Done { .. } => ty::DONE,
            FileMsg::Result { .. } => ty::RESULT,
            FileMsg::CancelBySender { .. } => ty::CANCEL_BY_SENDER,
            FileMsg::CancelByReceiver { .. } => ty::CANCEL_BY_RECEIVER,
        }
    }

    /// The payload body (the payload kind is `File`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the payload body to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        let head = |w: &mut Writer<'_>, t: u8, id: TransferId| {
            w.u8(t);
            w.u32(id.0);
        };
        match self {
            FileMsg::Offer {
                transfer,
                size,
                name,
            } => {
                head(&mut w, ty::OFFER, *transfer);
                w.u64(*size);
                w.str16(name);
            }
            FileMsg::Accept {
                transfer,
                offset,
                prefix_hash,
            } => {
                head(&mut w, ty::ACCEPT, *transfer);
                w.u64(*offset);
                w.rest(prefix_hash);
            }
            FileMsg::Decline { transfer, reason } => {
                head(&mut w, ty::DECLINE, *transfer);
                w.str16(reason);
            }
            FileMsg::Start { transfer, offset } => {
                head(&mut w, ty::START, *transfer);
                w.u64(*offset);
            }
            FileMsg::Chunk {
                transfer,
                offset,
                data,
            } => {
                head(&mut w, ty::CHUNK, *transfer);
                w.u64(*offset);
                w.rest(data);
            }
            FileMsg::Ack { transfer, received } => {
                head(&mut w, ty::ACK, *transfer);
                w.u64(*received);
            }
            FileMsg::Done { transfer, hash } => {
                head(&mut w, ty::DONE, *transfer);
                w.rest(hash);
            }
            FileMsg::Result {
                transfer,
                ok,
                reason,
            } => {
                head(&mut w, ty::RESULT, *transfer);
                w.u8(u8::from(*ok));
                w.str16(reason);
            }
            FileMsg::CancelBySender { transfer, reason } => {
                head(&mut w, ty::CANCEL_BY_SENDER, *transfer);
                w.str16(reason);
            }
            FileMsg::CancelByReceiver { transfer, reason } => {
                head(&mut w, ty::CANCEL_BY_RECEIVER, *transfer);
                w.str16(reason);
            }
        }
    }

    /// Decodes a `File` payload body.
    pub fn decode(body: &[u8]) -> Result<FileMsg, DecodeError> {
        let mut r = Reader::new(body, "File");
        let t = r.u8()?;
        let transfer = TransferId(r.u32()?);
        let hash = |r: &mut Reader<'_>| -> Result<Hash, DecodeError> {
            let mut h = [0u8; 32];
            for b in h.iter_mut() {
                *b = r.u8()?;
            }
            Ok(h)
        };
        let msg = match t {
            ty::OFFER => {
                let size = r.u64()?;
                let name = r.str16("file name")?;
                FileMsg::Offer {
                    transfer,
                    size,
                    name,
                }
            }
            ty::ACCEPT => {
                let offset = r.u64()?;
                let prefix_hash = hash(&mut r)?;
                FileMsg::Accept {
                    transfer,
                    offset,
                    prefix_hash,
                }
            }
            ty::DECLINE => FileMsg::Decline {
                transfer,
                reason: r.str16("reason")?,
            },
            ty::START => FileMsg::Start {
                transfer,
                offset: r.u64()?,
            },
            ty::CHUNK => {
                let offset = r.u64()?;
                let data = r.rest().to_vec();
                return Ok(FileMsg::Chunk {
                    transfer,
                    offset,
                    data,
                });
            }
            ty::ACK => FileMsg::Ack {
                transfer,
                received: r.u64()?,
            },
            ty::DONE => FileMsg::Done {
                transfer,
                hash: hash(&mut r)?,
            },
            ty::RESULT => {
                let ok = r.u8()? == 1;
                FileMsg::Result {
                    transfer,
                    ok,
                    reason: r.str16("reason")?,
                }
            }
            ty::CANCEL_BY_SENDER => FileMsg::CancelBySender {
                transfer,
                reason: r.str16("reason")?,
            },
            ty::CANCEL_BY_RECEIVER => FileMsg::CancelByReceiver {
                transfer,
                reason: r.str16("reason")?,
            },
            _ => {
                return Err(DecodeError::Malformed {
                    frame: "File",
                    problem: "unknown file message type",
                });
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Who a transfer is with: a relay client ID, or (direct chat) the one peer.
pub type PeerRef = Option<ClientId>;

/// What the driver must do or the user should see about files. `from` / `to` /
/// `peer` name the other side (a relay client ID, or `None` in direct chat); the other
/// fields are as in [`FileMsg`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are named alike in every variant, described above
pub enum FileEvent {
    /// Our offer went out under this transfer ID (offers are numbered in the order
    /// they were made, so a driver can match this to the file it offered).
    Offering {
        to: PeerRef,
        transfer: TransferId,
        name: String,
        size: u64,
    },
    /// Someone offers a file: accept (with the bytes already held, for resume) or decline.
    Offered {
        from: PeerRef,
        transfer: TransferId,
        name: String,
        size: u64,
    },
    /// Our offer was accepted; the receiver holds `offset` bytes hashing to
    /// `prefix_hash`. Check them and call `start_sending` with `offset` or 0.
    Accepted {
        to: PeerRef,
        transfer: TransferId,
        offset: u64,
        prefix_hash: Hash,
    },
    /// Our offer was declined.
    Declined {
        to: PeerRef,
        transfer: TransferId,
        reason: String,
    },
    /// Read `len` bytes at `offset` of the file we send, and hand them to `file_data`;
    /// hash them too: once the last is handed over, give the file's hash to
    /// `file_hashed` (at once for a file with nothing left to send).
    ReadChunk {
        transfer: TransferId,
        offset: u64,
        len: usize,
    },
    /// The receiver confirmed everything below `received` (progress).
    Progress {
        to: PeerRef,
        transfer: TransferId,
        received: u64,
        size: u64,
    },
    /// The sender starts at `offset` (truncate the partial file there).
    Starting {
        from: PeerRef,
        transfer: TransferId,
        offset: u64,
    },
    /// Write these bytes at `offset` of the file we receive, then call `chunk_written`.
    WriteChunk {
        from: PeerRef,
        transfer: TransferId,
        offset: u64,
        data: Vec<u8>,
    },
    /// Every byte arrived, and the sender's hash of them is `hash`: compare it with
    /// the hash of what was written, then call `finish_receiving`.
    AllReceived {
        from: PeerRef,
        transfer: TransferId,
        hash: Hash,
    },
    /// Our file arrived intact: the receiver checked its hash.
    Delivered { to: PeerRef, transfer: TransferId },
    /// A transfer ended without success (cancelled by either side, hash mismatch,
    /// protocol error, connection lost). `outgoing` tells which way it went.
    Failed {
        peer: PeerRef,
        transfer: TransferId,
        outgoing: bool,
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Outgoing {
    to: PeerRef,
    size: u64,
    /// Started sending: next offset to request, and what the receiver confirmed.
    sending: Option<(u64, u64)>,
    /// A chunk read is outstanding.
    reading: bool,
    /// A chunk read ahead, waiting for room in the outbound queue: reading the next
    /// chunk overlaps with sending this one.
    staged: Option<(u64, Vec<u8>)>,
    /// The file's hash, once the driver has read it all.
    hash: Option<Hash>,
    done_sent: bool,
}

#[derive(Debug, Clone)]
struct Incoming {
    size: u64,
    /// Accepted; `Some(next expected offset)` once `Start` arrived.
    accepted: bool,
    expected: Option<u64>,
    all_received: bool,
}

/// The file transfers of one machine, in both directions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Files {
    /// Bytes per chunk we send: [`CHUNK_SIZE`], or less when the outbound queue bound
    /// is small (a chunk must never break it).
    chunk_size: usize,
    /// Chunks a sending transfer may have unacknowledged.
    window: u64,
    next_id: u32,
    outgoing: BTreeMap<TransferId, Outgoing>,
    incoming: BTreeMap<(PeerRef, TransferId), Incoming>,
    events: VecDeque<FileEvent>,
    /// Messages to send, with their addressee.
    outbox: VecDeque<(PeerRef, FileMsg)>,
}

impl Files {
    /// Transfers for a machine whose outbound queue holds at most `max_outbound` bytes
    /// and whose senders keep at most `window` chunks unacknowledged.
    pub(crate) fn new(max_outbound: usize, window: u64) -> Self {
        Files {
            chunk_size: CHUNK_SIZE.min(max_outbound / 4).max(1),
            window: window.max(1),
            ..Files::default()
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<FileEvent> {
        self.events.pop_front()
    }

    pub(crate) fn poll_outbox(&mut self) -> Option<(PeerRef, FileMsg)> {
        self.outbox.pop_front()
    }

    /// Appends what a saved session keeps of the transfers: the next ID (a restarted
    /// process must not reuse one the other side may still know) and those under
    /// way (a restarted process ends them: their state died with the process).
    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        w.u32(self.next_id);
        let under_way: Vec<(PeerRef, TransferId, bool)> = self
            .outgoing
            .iter()
            .map(|(&id, o)| (o.to, id, true))
            .chain(self.incoming.keys().map(|&(peer, id)| (peer, id, false)))
            .collect();
        w.u32(u32::try_from(under_way.len()).unwrap_or(u32::MAX));
        for (peer, id, outgoing) in under_way {
            w.u32(peer.map_or(u32::MAX, |p| p.0));
            w.u32(id.0);
            w.u8(u8::from(outgoing));
        }
    }

    /// Reads what [`Files::save`] wrote, into the transfers of a restarted process:
    /// each transfer that was under way is ended, the other side told (a cancel)
    /// and the user too (`Failed`).
    pub(crate) fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.next_id = r.u32()?;
        for _ in 0..r.u32()? {
            let peer = match r.u32()? {
                u32::MAX => None,
                p => Some(ClientId(p)),
            };
            let transfer = TransferId(r.u32()?);
            let outgoing = r.u8()? != 0;
            let reason =
                "it was interrupted: the p2pchat at this end was stopped and started again; send the file again to resume it".to_owned();
            let msg = if outgoing {
                FileMsg::CancelBySender {
                    transfer,
                    reason: reason.clone(),
                }
            } else {
                FileMsg::CancelByReceiver {
                    transfer,
                    reason: reason.clone(),
                }
            };
            self.outbox.push_back((peer, msg));
            self.events.push_back(FileEvent::Failed {
                peer,
                transfer,
                outgoing,
                reason,
            });
        }
        Ok(())
    }

    /// Which transfers are under way, as one number that changes whenever one
    /// starts or ends (their count and the sum of their IDs): a saved session lists
    /// them, so it must be saved again when they change, or a restarted process
    /// would report as interrupted a transfer that had since been delivered.
    pub(crate) fn under_way(&self) -> u64 {
        let ids = self
            .outgoing
            .keys()
            .chain(self.incoming.keys().map(|(_, id)| id))
            .map(|id| u64::from(id.0));
        let (count, sum) = ids.fold((0u64, 0u64), |(n, s), id| (n + 1, s.wrapping_add(id)));
        (count << 40) ^ sum
    }

    /// Whether no transfer is under way in either direction.
    pub(crate) fn is_idle(&self) -> bool {
        self.outgoing.is_empty() && self.incoming.is_empty()
    }

    /// The relay refused to carry our offer: fail it without telling the receiver
    /// (it never saw the offer).
    pub(crate) fn refused(&mut self, transfer: TransferId, reason: &str) {
        if let Some(o) = self.outgoing.remove(&transfer) {
            self.events.push_back(FileEvent::Failed {
                peer: o.to,
                transfer,
                outgoing: true,
                reason: reason.to_owned(),
            });
        }
    }

    /// Outgoing transfers currently sending: each may keep one chunk in the queue.
    pub(crate) fn active_senders(&self) -> usize {
        self.outgoing
            .values()
            .filter(|o| o.sending.is_some() && !o.done_sent)
            .count()
    }

    pub(crate) fn offer(&mut self, to: PeerRef, name: &str, size: u64) -> TransferId {
        let transfer = TransferId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.outgoing.insert(
            transfer,
            Outgoing {
                to,
                size,
                sending: None,
                reading: false,
                staged: None,
                hash: None,
                done_sent: false,
            },
        );
        self.outbox.push_back((
            to,
            FileMsg::Offer {
                transfer,
                size,
                name: name.to_owned(),
            },
        ));
        self.events.push_back(FileEvent::Offering {
            to,
            transfer,
            name: name.to_owned(),
            size,
        });
        transfer
    }

    pub(crate) fn accept(
        &mut self,
        from: PeerRef,
        transfer: TransferId,
        offset: u64,
        prefix_hash: Hash,
    ) -> bool {
        let Some(inc) = self.incoming.get_mut(&(from, transfer)) else {
            return false;
        };
        if inc.accepted || offset > inc.size {
            return false;
        }
        inc.accepted = true;
        self.outbox.push_back((
            from,
            FileMsg::Accept {
                transfer,
                offset,
                prefix_hash,
            },
        ));
        true
    }

    pub(crate) fn decline(&mut self, from: PeerRef, transfer: TransferId, reason: &str) -> bool {
        if self.incoming.remove(&(from, transfer)).is_none() {
            return false;
        }
        self.outbox.push_back((
            from,
            FileMsg::Decline {
                transfer,
                reason: reason.to_owned(),
            },
        ));
        true
    }

    /// The sender's driver checked the receiver's prefix: send from `offset`.
    pub(crate) fn start_sending(&mut self, transfer: TransferId, offset: u64) -> bool {
        let Some(out) = self.outgoing.get_mut(&transfer) else {
            return false;
        };
        if out.sending.is_some() || offset > out.size {
            return false;
        }
        out.sending = Some((offset, offset));
        let to = out.to;
        self.outbox
            .push_back((to, FileMsg::Start { transfer, offset }));
        true
    }

    /// Asks the driver for chunks, at most `budget` in all (the machine's room for
    /// file data in its outbound queue).
    /// Moves chunks along given the machine's outbound queue (`pending` bytes, bound
    /// `max_outbound`): room for about one chunk per sending transfer, never past the
    /// bound, so a chat line never waits behind more than one chunk per transfer.
    pub(crate) fn pump(&mut self, pending: usize, max_outbound: usize) {
        let per_chunk = self.chunk_size + 64;
        let room = (self.active_senders().max(1) * per_chunk).min(max_outbound);
        self.request_reads(room.saturating_sub(pending) / per_chunk);
    }

    /// Whether a sender waits for the outbound queue (`pending` bytes) to drain below
    /// one chunk: then a write confirmation should pump again.
    pub(crate) fn waiting_for_room(&self, pending: usize) -> bool {
        self.active_senders() > 0 && pending < self.chunk_size + 64
    }

    pub(crate) fn request_reads(&mut self, mut budget: usize) {
        for (&transfer, out) in self.outgoing.iter_mut() {
            let Some((next, acked)) = out.sending.as_mut() else {
                continue;
            };
            // First the chunk read ahead, if the queue has room for it.
            if budget > 0
                && let Some((offset, data)) = out.staged.take()
            {
                budget -= 1;
                self.outbox.push_back((
                    out.to,
                    FileMsg::Chunk {
                        transfer,
                        offset,
                        data,
                    },
                ));
            }
            if out.reading || out.done_sent || out.staged.is_some() {
                continue;
            }
            if *next >= out.size {
                if let Some(hash) = out.hash
                    && (*acked >= out.size || out.size == 0)
                {
                    out.done_sent = true;
                    self.outbox
                        .push_back((out.to, FileMsg::Done { transfer, hash }));
                }
                continue;
            }
            if *next - *acked >= self.window * self.chunk_size as u64 {
                continue;
            }
            // Then ask for the next one (it waits, staged, if the queue is full).
            let len = (out.size - *next).min(self.chunk_size as u64) as usize;
            out.reading = true;
            self.events.push_back(FileEvent::ReadChunk {
                transfer,
                offset: *next,
                len,
            });
        }
    }

    /// The driver read a chunk of a file we send.
    pub(crate) fn file_data(&mut self, transfer: TransferId, offset: u64, data: Vec<u8>) -> bool {
        let Some(out) = self.outgoing.get_mut(&transfer) else {
            return false;
        };
        let Some((next, _)) = out.sending.as_mut() else {
            return false;
        };
        if offset != *next || data.is_empty() || offset + data.len() as u64 > out.size {
            return false;
        }
        *next += data.len() as u64;
        out.reading = false;
        out.staged = Some((offset, data));
        true
    }

    /// The driver hashed the whole of a file we send (after its last chunk). `false`
    /// for an unknown transfer or one not yet read to its end.
    pub(crate) fn hashed(&mut self, transfer: TransferId, hash: Hash) -> bool {
        match self.outgoing.get_mut(&transfer) {
            Some(out) if out.sending.is_some_and(|(next, _)| next >= out.size) => {
                out.hash = Some(hash);
                true
            }
            _ => false,
        }
    }

    /// The driver wrote a chunk of a file we receive, up to `written`.
    pub(crate) fn chunk_written(&mut self, from: PeerRef, transfer: TransferId, written: u64) {
        if self.incoming.contains_key(&(from, transfer)) {
            self.outbox.push_back((
                from,
                FileMsg::Ack {
                    transfer,
                    received: written,
                },
            ));
        }
    }

    /// The driver checked the hash of a complete file we received.
    pub(crate) fn finish_receiving(
        &mut self,
        from: PeerRef,
        transfer: TransferId,
        ok: bool,
        reason: &str,
    ) {
        if self.incoming.remove(&(from, transfer)).is_none() {
            return;
        }
        self.outbox.push_back((
            from,
            FileMsg::Result {
                transfer,
                ok,
                reason: reason.to_owned(),
            },
        ));
        if !ok {
            self.events.push_back(FileEvent::Failed {
                peer: from,
                transfer,
                outgoing: false,
                reason: reason.to_owned(),
            });
        }
    }

    /// Either side abandons a transfer. `outgoing` says which of our lists it is in.
    pub(crate) fn cancel(
        &mut self,
        peer: PeerRef,
        transfer: TransferId,
        outgoing: bool,
        reason: &str,
    ) -> bool {
        let known = if outgoing {
            self.outgoing.remove(&transfer).is_some()
        } else {
            self.incoming.remove(&(peer, transfer)).is_some()
        };
        if !known {
            return false;
        }
        let msg = if outgoing {
            FileMsg::CancelBySender {
                transfer,
                reason: reason.to_owned(),
            }
        } else {
            FileMsg::CancelByReceiver {
                transfer,
                reason: reason.to_owned(),
            }
        };
        self.outbox.push_back((peer, msg));
        self.events.push_back(FileEvent::Failed {
            peer,
            transfer,
            outgoing,
            reason: format!("cancelled: {reason}"),
        });
        true
    }

    /// Everything with `peer` fails (it left, or the connection was lost).
    pub(crate) fn peer_gone(&mut self, peer: PeerRef, reason: &str) {
        let out: Vec<TransferId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.to == peer)
            .map(|(t, _)| *t)
            .collect();
        for transfer in out {
            self.outgoing.remove(&transfer);
            self.events.push_back(FileEvent::Failed {
                peer,
                transfer,
                outgoing: true,
                reason: reason.to_owned(),
            });
        }
        let inc: Vec<(PeerRef, TransferId)> = self
            .incoming
            .keys()
            .filter(|(p, _)| *p == peer)
            .copied()
            .collect();
        for key in inc {
            self.incoming.remove(&key);
            self.events.push_back(FileEvent::Failed {
                peer,
                transfer: key.1,
                outgoing: false,
                reason: reason.to_owned(),
            });
        }
    }

    /// Every transfer fails (our connection is gone).
    pub(crate) fn all_gone(&mut self, reason: &str) {
        let peers: Vec<PeerRef> = self
            .outgoing
            .values()
            .map(|o| o.to)
            .chain(self.incoming.keys().map(|(p, _)| *p))
            .collect();
        for p in peers {
            self.peer_gone(p, reason);
        }
    }

    /// A file message arrived from `from`. Returns a reason if it breaks the protocol
    /// (the transfer is then failed and the other side told).
    pub(crate) fn on_message(&mut self, from: PeerRef, msg: FileMsg) {
        let transfer = msg.transfer();
        match msg {
            FileMsg::Offer { size, name, .. } => {
                if self.incoming.contains_key(&(from, transfer)) {
                    return self.violation(
                        from,
                        transfer,
                        false,
                        "a second offer for the same transfer",
                    );
                }
                self.incoming.insert(
                    (from, transfer),
                    Incoming {
                        size,
                        accepted: false,
                        expected: None,
                        all_received: false,
                    },
                );
                self.events.push_back(FileEvent::Offered {
                    from,
                    transfer,
                    name,
                    size,
                });
            }
            FileMsg::Accept {
                offset,
                prefix_hash,
                ..
            } => match self.outgoing.get(&transfer) {
                Some(o) if o.to == from && o.sending.is_none() && offset <= o.size => {
                    self.events.push_back(FileEvent::Accepted {
                        to: from,
                        transfer,
                        offset,
                        prefix_hash,
                    });
                }
                _ => self.violation(from, transfer, true, "an accept for no pending offer"),
            },
            FileMsg::Decline { reason, .. } => {
                if self.outgoing.get(&transfer).is_some_and(|o| o.to == from) {
                    self.outgoing.remove(&transfer);
                    self.events.push_back(FileEvent::Declined {
                        to: from,
                        transfer,
                        reason,
                    });
                }
            }
            FileMsg::Start { offset, .. } => match self.incoming.get_mut(&(from, transfer)) {
                Some(inc) if inc.accepted && inc.expected.is_none() && offset <= inc.size => {
                    inc.expected = Some(offset);
                    self.events.push_back(FileEvent::Starting {
                        from,
                        transfer,
                        offset,
                    });
                    if offset == inc.size {
                        inc.all_received = true;
                    }
                }
                _ => self.violation(from, transfer, false, "a start for no accepted transfer"),
            },
            FileMsg::Chunk { offset, data, .. } => match self.incoming.get_mut(&(from, transfer)) {
                Some(inc)
                    if inc.expected == Some(offset) && offset + data.len() as u64 <= inc.size =>
                {
                    let end = offset + data.len() as u64;
                    inc.expected = Some(end);
                    self.events.push_back(FileEvent::WriteChunk {
                        from,
                        transfer,
                        offset,
                        data,
                    });
                }
                Some(inc)
                    if inc
                        .expected
                        .is_some_and(|e| offset + data.len() as u64 > inc.size && e == offset) =>
                {
                    self.violation(from, transfer, false, "a chunk beyond the announced size")
                }
                Some(_) => self.violation(from, transfer, false, "a chunk out of order"),
                None => self.violation(from, transfer, false, "a chunk for an unknown transfer"),
            },
            FileMsg::Ack { received, .. } => {
                if let Some(o) = self.outgoing.get_mut(&transfer)
                    && o.to == from
                    && let Some((next, acked)) = o.sending.as_mut()
                    && received <= *next
                    && received >= *acked
                {
                    *acked = received;
                    let size = o.size;
                    self.events.push_back(FileEvent::Progress {
                        to: from,
                        transfer,
                        received,
                        size,
                    });
                }
            }
            FileMsg::Done { hash, .. } => match self.incoming.get_mut(&(from, transfer)) {
                Some(inc) if inc.expected == Some(inc.size) => {
                    inc.all_received = true;
                    self.events.push_back(FileEvent::AllReceived {
                        from,
                        transfer,
                        hash,
                    });
                }
                Some(_) => self.violation(from, transfer, false, "done before every byte was sent"),
                None => {}
            },
            FileMsg::Result { ok, reason, .. } => {
                if self.outgoing.get(&transfer).is_some_and(|o| o.to == from) {
                    self.outgoing.remove(&transfer);
                    if ok {
                        self.events
                            .push_back(FileEvent::Delivered { to: from, transfer });
                    } else {
                        self.events.push_back(FileEvent::Failed {
                            peer: from,
                            transfer,
                            outgoing: true,
                            reason,
                        });
                    }
                }
            }
            FileMsg::CancelBySender { reason, .. } => {
                if self.incoming.remove(&(from, transfer)).is_some() {
                    let reason = format!("the sender cancelled: {reason}");
                    self.events.push_back(FileEvent::Failed {
                        peer: from,
                        transfer,
                        outgoing: false,
                        reason,
                    });
                }
            }
            FileMsg::CancelByReceiver { reason, .. } => {
                if self.outgoing.get(&transfer).is_some_and(|o| o.to == from) {
                    self.outgoing.remove(&transfer);
                    let reason = format!("the receiver cancelled: {reason}");
                    self.events.push_back(FileEvent::Failed {
                        peer: from,
                        transfer,
                        outgoing: true,
                        reason,
                    });
                }
            }
        }
    }

    /// The other side broke the file protocol: fail the transfer, tell it why.
    fn violation(&mut self, peer: PeerRef, transfer: TransferId, outgoing: bool, what: &str) {
        let reason = format!("file transfer {transfer}: the other side sent {what}");
        if outgoing {
            self.outgoing.remove(&transfer);
            self.outbox.push_back((
                peer,
                FileMsg::CancelBySender {
                    transfer,
                    reason: reason.clone(),
                },
            ));
        } else {
            self.incoming.remove(&(peer, transfer));
            self.outbox.push_back((
                peer,
                FileMsg::CancelByReceiver {
                    transfer,
                    reason: reason.clone(),
                },
            ));
        }
        self.events.push_back(FileEvent::Failed {
            peer,
            transfer,
            outgoing,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Hash = [7; 32];

    /// The relay window: the smaller of the two, where bounds bite first.
    const WINDOW: u64 = 8;

    fn all_messages() -> Vec<FileMsg> {
        let t = TransferId(3);
        vec![
            FileMsg::Offer {
                transfer: t,
                size: 99,
                name: "a b.txt".into(),
            },
            FileMsg::Accept {
                transfer: t,
                offset: 5,
                prefix_hash: H,
            },
            FileMsg::Decline {
                transfer: t,
                reason: "no".into(),
            },
            FileMsg::Start {
                transfer: t,
                offset: 5,
            },
            FileMsg::Chunk {
                transfer: t,
                offset: 5,
                data: vec![1, 2, 3],
            },
            FileMsg::Ack {
                transfer: t,
                received: 8,
            },
            FileMsg::Done {
                transfer: t,
                hash: H,
            },
            FileMsg::Result {
                transfer: t,
                ok: true,
                reason: String::new(),
            },
            FileMsg::CancelBySender {
                transfer: t,
                reason: "x".into(),
            },
            FileMsg::CancelByReceiver {
                transfer: t,
                reason: "y".into(),
            },
        ]
    }

    #[test]
    fn every_file_message_round_trips() {
        for m in all_messages() {
            assert_eq!(FileMsg::decode(&m.encode()), Ok(m));
        }
        assert!(FileMsg::decode(&[99, 0, 0, 0, 1]).is_err());
        assert!(FileMsg::decode(&[1, 0]).is_err());
    }

    /// Moves messages between two sides until nothing moves; plays the drivers:
    /// reads come from `data`, writes go to `written`, hashes are checked by equality.
    fn run(
        sender: &mut Files,
        receiver: &mut Files,
        data: &[u8],
        written: &mut Vec<u8>,
        max_in_flight: &mut u64,
    ) {
        loop {
            let mut moved = false;
            sender.request_reads(1);
            while let Some(e) = sender.poll_event() {
                moved = true;
                match e {
                    FileEvent::Accepted {
                        transfer, offset, ..
                    } => {
                        sender.start_sending(transfer, offset);
                        if offset == data.len() as u64 {
                            assert!(sender.hashed(transfer, H));
                        }
                    }
                    FileEvent::ReadChunk {
                        transfer,
                        offset,
                        len,
                    } => {
                        let chunk = data[offset as usize..offset as usize + len].to_vec();
                        sender.file_data(transfer, offset, chunk);
                        if offset + len as u64 == data.len() as u64 {
                            assert!(sender.hashed(transfer, H));
                        }
                    }
                    _ => {}
                }
            }
            while let Some((_, m)) = sender.poll_outbox() {
                moved = true;
                receiver.on_message(None, m);
            }
            while let Some(e) = receiver.poll_event() {
                moved = true;
                match e {
                    FileEvent::Offered { transfer, .. } => {
                        receiver.accept(None, transfer, written.len() as u64, H);
                    }
                    FileEvent::WriteChunk {
                        transfer,
                        offset,
                        data: d,
                        ..
                    } => {
                        written.truncate(offset as usize);
                        written.extend_from_slice(&d);
                        receiver.chunk_written(None, transfer, written.len() as u64);
                    }
                    FileEvent::AllReceived { transfer, hash, .. } => {
                        let ok = written.as_slice() == data && hash == H;
                        receiver.finish_receiving(None, transfer, ok, "hash mismatch");
                    }
                    _ => {}
                }
            }
            if let Some(o) = sender.outgoing.values().next()
                && let Some((next, acked)) = o.sending
            {
                *max_in_flight = (*max_in_flight).max(next - acked);
            }
            while let Some((_, m)) = receiver.poll_outbox() {
                moved = true;
                sender.on_message(None, m);
            }
            if !moved {
                break;
            }
        }
    }

    #[test]
    fn a_file_moves_in_a_bounded_window_and_is_delivered() {
        let data: Vec<u8> = (0..(CHUNK_SIZE * 20 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut s, mut r) = (Files::new(1 << 20, WINDOW), Files::new(1 << 20, WINDOW));
        s.offer(None, "f", data.len() as u64);
        let mut written = Vec::new();
        let mut max_in_flight = 0;
        run(&mut s, &mut r, &data, &mut written, &mut max_in_flight);
        assert_eq!(written, data);
        assert!(
            max_in_flight <= WINDOW * CHUNK_SIZE as u64,
            "{max_in_flight}"
        );
        assert!(s.is_idle() && r.is_idle());
    }

    #[test]
    fn a_transfer_resumes_from_what_the_receiver_holds() {
        let data: Vec<u8> = (0..CHUNK_SIZE * 3).map(|i| (i % 13) as u8).collect();
        let (mut s, mut r) = (Files::new(1 << 20, WINDOW), Files::new(1 << 20, WINDOW));
        s.offer(None, "f", data.len() as u64);
        let mut written = data[..CHUNK_SIZE + 10].to_vec();
        let mut max = 0;
        run(&mut s, &mut r, &data, &mut written, &mut max);
        assert_eq!(written, data);
    }

    fn offered_and_started(size: u64) -> Files {
        let mut r = Files::new(1 << 20, WINDOW);
        let t = TransferId(0);
        r.on_message(
            None,
            FileMsg::Offer {
                transfer: t,
                size,
                name: "f".into(),
            },
        );
        r.accept(None, t, 0, H);
        r.on_message(
            None,
            FileMsg::Start {
                transfer: t,
                offset: 0,
            },
        );
        while r.poll_event().is_some() {}
        while r.poll_outbox().is_some() {}
        r
    }

    fn failed_with(r: &mut Files) -> Option<String> {
        let failed = std::iter::from_fn(|| r.poll_event()).find_map(|e| match e {
            FileEvent::Failed { reason, .. } => Some(reason),
            _ => None,
        });
        let told = std::iter::from_fn(|| r.poll_outbox())
            .any(|(_, m)| matches!(m, FileMsg::CancelByReceiver { .. }));
        assert!(told, "the sender is told too");
        failed
    }

    #[test]
    fn a_chunk_beyond_the_announced_size_fails_the_transfer_on_both_sides() {
        let mut r = offered_and_started(4);
        r.on_message(
            None,
            FileMsg::Chunk {
                transfer: TransferId(0),
                offset: 0,
                data: vec![0; 5],
            },
        );
        assert!(
            failed_with(&mut r)
                .unwrap()
                .contains("beyond the announced size")
        );
        assert!(r.is_idle());
    }

    #[test]
    fn a_chunk_for_an_unknown_transfer_or_out_of_order_is_refused() {
        let mut r = offered_and_started(100);
        r.on_message(
            None,
            FileMsg::Chunk {
                transfer: TransferId(9),
                offset: 0,
                data: vec![1],
            },
        );
        assert!(failed_with(&mut r).unwrap().contains("unknown transfer"));
        r.on_message(
            None,
            FileMsg::Chunk {
                transfer: TransferId(0),
                offset: 50,
                data: vec![1],
            },
        );
        assert!(failed_with(&mut r).unwrap().contains("out of order"));
    }

    #[test]
    fn a_hash_mismatch_is_reported_to_both_sides() {
        let data = vec![1u8; 10];
        let (mut s, mut r) = (Files::new(1 << 20, WINDOW), Files::new(1 << 20, WINDOW));
        s.offer(None, "f", 10);
        // The receiver's "disk" corrupts the bytes.
        let mut written = Vec::new();
        let mut max = 0;
        loop {
            let mut moved = false;
            s.request_reads(1);
            while let Some(e) = s.poll_event() {
                moved = true;
                match e {
                    FileEvent::Accepted {
                        transfer, offset, ..
                    } => {
                        s.start_sending(transfer, offset);
                    }
                    FileEvent::ReadChunk {
                        transfer,
                        offset,
                        len,
                    } => {
                        s.file_data(
                            transfer,
                            offset,
                            data[offset as usize..offset as usize + len].to_vec(),
                        );
                        if offset + len as u64 == data.len() as u64 {
                            s.hashed(transfer, H);
                        }
                    }
                    FileEvent::Failed { reason, .. } => {
                        assert!(reason.contains("mismatch"));
                        max = 1;
                    }
                    _ => {}
                }
            }
            while let Some((_, m)) = s.poll_outbox() {
                moved = true;
                r.on_message(None, m);
            }
            while let Some(e) = r.poll_event() {
                moved = true;
                match e {
                    FileEvent::Offered { transfer, .. } => {
                        r.accept(None, transfer, 0, H);
                    }
                    FileEvent::WriteChunk {
                        transfer, data: d, ..
                    } => {
                        written.extend(d.iter().map(|b| b ^ 1));
                        r.chunk_written(None, transfer, written.len() as u64);
                    }
                    FileEvent::AllReceived { transfer, .. } => {
                        r.finish_receiving(None, transfer, written == data, "hash mismatch");
                    }
                    _ => {}
                }
            }
            while let Some((_, m)) = r.poll_outbox() {
                moved = true;
                s.on_message(None, m);
            }
            if !moved {
                break;
            }
        }
        assert_eq!(max, 1, "the sender learnt of the mismatch");
    }

    #[test]
    fn done_waits_for_the_senders_hash_and_carries_it() {
        let data = vec![5u8; CHUNK_SIZE + 10];
        let mut s = Files::new(1 << 20, WINDOW);
        let t = s.offer(None, "f", data.len() as u64);
        assert!(!s.hashed(t, H), "not before it is read to its end");
        s.on_message(
            None,
            FileMsg::Accept {
                transfer: t,
                offset: 0,
                prefix_hash: H,
            },
        );
        s.start_sending(t, 0);
        let mut sent = 0;
        for _ in 0..10 {
            s.request_reads(4);
            while let Some(e) = s.poll_event() {
                if let FileEvent::ReadChunk { offset, len, .. } = e {
                    let at = offset as usize;
                    s.file_data(t, offset, data[at..at + len].to_vec());
                }
            }
            while let Some((_, m)) = s.poll_outbox() {
                match m {
                    FileMsg::Chunk { data: d, .. } => sent += d.len() as u64,
                    FileMsg::Done { .. } => panic!("Done before the hash"),
                    _ => {}
                }
            }
        }
        assert_eq!(sent, data.len() as u64);
        s.on_message(
            None,
            FileMsg::Ack {
                transfer: t,
                received: sent,
            },
        );
        s.request_reads(4);
        assert!(
            s.poll_outbox().is_none(),
            "everything acknowledged, still no hash"
        );
        assert!(s.hashed(t, [8; 32]));
        s.request_reads(4);
        assert_eq!(
            s.poll_outbox().map(|(_, m)| m),
            Some(FileMsg::Done {
                transfer: t,
                hash: [8; 32]
            })
        );
    }
}
