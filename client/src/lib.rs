//! # p2pchat-client
//!
//! What every p2pchat frontend shares above the protocol core. The command line is
//! one frontend; a second one (the local web app) must not copy the first.
//!
//! - [`events`]: the event vocabulary a frontend shows or forwards, as serde types.
//!   `p2pchat join --json` prints one per line; the same types go to a web page as
//!   JSON. Adding an event is adding a variant here, nowhere else.
//! - [`history`]: durable direct-chat history, one append-only log per peer.
//! - [`keys`]: this installation's identity, the keys met before (trust on first use)
//!   and what a session's security is made of.
//! - [`saved`]: sessions saved on disk as they go (one locked slot per running
//!   process), so that a process started again after it died resumes its session.
//! - [`transfer`]: file transfers to and from disk (hashing, safe names, `.part`
//!   files, resume), telling the user [`transfer::TransferNotice`]s.
//! - [`direct`]: a direct conversation (listen or connect), with its history.
//! - [`relay`]: a relay session: commands in, events out, reconnect and resume.
//! - [`data_dir`]: where a user's keys, known peers, history and sessions live.

mod conversation;
pub mod direct;
pub mod error;
pub mod events;
pub mod history;
pub mod keys;
pub mod notice;
pub mod relay;
pub mod saved;
pub mod transfer;

use std::path::PathBuf;

pub use error::SessionError;
pub use events::{
    ConnectionLost, DirectEvent, Disconnected, ErrorNotice, HistoryLine, Recipient, RelayEvent,
    RosterClient,
};
pub use notice::SessionNotice;

/// The data folder, `$XDG_DATA_HOME/p2pchat` or `~/.local/share/p2pchat`: keys, known
/// peers, history and saved sessions live under it.
pub fn data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("p2pchat"))
}
