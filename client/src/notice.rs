//! What a session itself tells its frontend, beside the other side's events:
//! how it is secured, saved sessions restored or set aside, joining anew, problems
//! with a command. One vocabulary for relay sessions and direct conversations, so a
//! frontend words each once.

use std::path::PathBuf;

use serde::Serialize;

/// What a session itself tells its frontend, beside the other side's events and
/// the transfers' notices: the same for relay sessions and direct conversations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SessionNotice {
    /// How the connection to the relay is secured, and what is known of its key
    /// (first contact, the one remembered, the one pinned). Follows the welcome.
    Security {
        /// A sentence (starts with `* encrypted` or `* NOT ENCRYPTED`).
        summary: String,
        /// Whether the connection is encrypted.
        encrypted: bool,
    },
    /// The relay's key is not the one remembered or pinned: the session was refused
    /// before anything was sent. Show it loudly.
    KeyChanged {
        /// What to do if the change is genuine.
        hint: String,
    },
    /// A saved session could not be used (damaged, incomplete, from another
    /// version): it is set aside and a new session starts.
    SetAside {
        /// Where it was saved.
        file: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// A session left by a process that died is being resumed.
    Restored {
        /// Our ID in it (relay sessions).
        id: Option<u32>,
        /// Where it was saved.
        file: PathBuf,
    },
    /// The relay no longer holds the session; a new one follows.
    SessionLost {
        /// The error code.
        code: String,
        /// A sentence.
        reason: String,
    },
    /// The next attempt to join anew, after a pause.
    Rejoining {
        /// Which attempt.
        attempt: u32,
        /// The pause before it, in milliseconds.
        wait_ms: u64,
    },
    /// Joined anew: a new ID (IDs may have changed; ask who is online).
    Rejoined {
        /// Our new ID.
        id: u32,
        /// Our ID before.
        was: u32,
    },
    /// A listening side waits for its peer on this address.
    Listening {
        /// The address, `IP:PORT`.
        address: String,
    },
    /// A peer connected to a listening side.
    Arrived {
        /// Its address.
        address: String,
    },
    /// The conversation's earlier lines follow (as history lines), from `file`.
    HistoryStart {
        /// How many.
        lines: usize,
        /// Where the history is kept.
        file: PathBuf,
    },
    /// The end of the earlier lines.
    HistoryEnd,
    /// A command could not be carried out; nothing was sent.
    Problem {
        /// A sentence.
        message: String,
    },
    /// Something the user should know that did not stop the session (saving it
    /// failed, a saved session could not be used).
    Warning {
        /// A sentence.
        message: String,
    },
}
