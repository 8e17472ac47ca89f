//! Saved sessions: what a relay client (`client/saved.rs`) or a direct peer
//! (`peer/saved.rs`) writes so that, started again after its process died, it can
//! come back to its session. This file holds what both share: the envelope (a
//! magic that names the kind and format version, and a hash of everything, so that a
//! torn or foreign file is refused whole, never half read), the identity check, the
//! unacknowledged session stream, and [`SavePoint`], which tells a driver when to
//! save again.

use crate::error::DecodeError;
use crate::link::Link;
use crate::secure::{PublicKey, Security, derive};
use crate::session::Retained;
use crate::wire::{Reader, Writer};

/// Bytes of the hash at the end.
const HASH_LEN: usize = 32;

/// What the hash is keyed with (so that it is a hash of a saved session, nothing else).
const HASH_LABEL: &[u8] = b"p2pchat saved session v1";

/// What changes a saved session: when it differs from the last one saved, the
/// session must be saved again before anything more is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavePoint {
    pub(crate) received: u64,
    pub(crate) sent: u64,
    pub(crate) next_seq: u64,
    pub(crate) unconfirmed: usize,
    pub(crate) exited: bool,
    pub(crate) id: u32,
    /// A file is under way: `received` counts chat messages, `sent` is not followed.
    pub(crate) files_busy: bool,
    /// Which transfers are under way (`Files::under_way`).
    pub(crate) transfers: u64,
}

/// Why a saved session could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The bytes are not a whole saved session (torn by a crash mid-write, or not
    /// one at all).
    #[error("the saved session is damaged or incomplete ({0})")]
    Damaged(String),
    /// It belongs to another identity (another key) than the one starting now.
    #[error("the saved session belongs to another identity (key {saved}); this one is {now}")]
    OtherIdentity {
        /// The key it was saved with.
        saved: String,
        /// The key starting now.
        now: String,
    },
    /// The name or limits it was saved with are not valid now.
    #[error("the saved session cannot be used: {0}")]
    Invalid(String),
    /// It was saved before the other side gave the token that resuming needs (the
    /// process died right after joining): it cannot be resumed, but the messages
    /// it had not seen confirmed are named.
    #[error(
        "the saved session cannot be resumed (it ended before the relay gave it a resume token); {} of its messages were not confirmed delivered: {}",
        unconfirmed.len(),
        unconfirmed.iter().map(|(seq, to)| format!("{seq} (to {to})")).collect::<Vec<_>>().join(", ")
    )]
    NotResumable {
        /// Each message's sequence number and recipient.
        unconfirmed: Vec<(u64, crate::id::ClientId)>,
    },
}

impl From<DecodeError> for RestoreError {
    fn from(e: DecodeError) -> Self {
        RestoreError::Damaged(e.to_string())
    }
}

/// `body` (which starts with its kind's magic) with its hash appended.
pub(crate) fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let hash = derive(HASH_LABEL, &[&body]);
    body.extend_from_slice(&hash);
    body
}

/// The body of a saved session of the kind `magic` names (`what`, in words), once
/// its hash is checked.
pub(crate) fn open<'a>(
    saved: &'a [u8],
    magic: &[u8],
    what: &str,
) -> Result<Reader<'a>, RestoreError> {
    let Some(body_len) = saved.len().checked_sub(HASH_LEN) else {
        return Err(RestoreError::Damaged("too short".into()));
    };
    let (body, hash) = saved.split_at(body_len);
    if derive(HASH_LABEL, &[body]) != hash {
        return Err(RestoreError::Damaged("its hash does not match".into()));
    }
    let Some(body) = body.strip_prefix(magic) else {
        return Err(RestoreError::Damaged(format!(
            "not a saved {what} session of this version"
        )));
    };
    Ok(Reader::new(body, "saved session"))
}

/// Appends the identity's public key (or that there is none).
pub(crate) fn save_identity(w: &mut Writer<'_>, security: &Security) {
    match security.identity.as_ref() {
        Some(identity) => {
            w.u8(1);
            w.rest(&identity.public().0);
        }
        None => w.u8(0),
    }
}

/// Reads what [`save_identity`] wrote: it must be `security`'s identity.
pub(crate) fn check_identity(r: &mut Reader<'_>, security: &Security) -> Result<(), RestoreError> {
    let saved = match r.u8()? {
        0 => None,
        _ => Some(PublicKey(r.array()?)),
    };
    let now = security.identity.as_ref().map(|i| i.public());
    if saved != now {
        let show = |k: Option<PublicKey>| k.map_or("none".to_owned(), |k| k.to_string());
        return Err(RestoreError::OtherIdentity {
            saved: show(saved),
            now: show(now),
        });
    }
    Ok(())
}

/// Appends the session stream `link` keeps for the other side (where it starts,
/// and its bytes): it ends the saved session.
pub(crate) fn save_stream(out: &mut Vec<u8>, link: &mut Link) {
    let end = link.stream_end();
    let (base, bytes) = link.retained_bytes().unwrap_or((end, &[]));
    let mut w = Writer::new(out);
    w.u64(base);
    w.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    w.rest(bytes);
}

/// Reads what [`save_stream`] wrote: the rest of the saved session.
pub(crate) fn read_stream(r: &mut Reader<'_>) -> Result<Retained, RestoreError> {
    let base = r.u64()?;
    let len = r.u32()? as usize;
    let bytes = r.rest();
    if bytes.len() != len {
        return Err(RestoreError::Damaged(format!(
            "its stream holds {} bytes, not {len}",
            bytes.len()
        )));
    }
    Ok(Retained::restored(base, bytes))
}
