//! Why a session could not start or go on: one error type for every topology.

use crate::keys::KeyError;

/// Why a session could not start or go on. Events already told the frontend the
/// details of [`SessionError::Ended`].
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The listening socket could not be opened.
    #[error("{0}")]
    Bind(#[from] p2pchat_tcp::BindError),
    /// Waiting for a peer failed.
    #[error("accepting a connection failed: {0}")]
    Accept(std::io::Error),
    /// The other side could not be reached.
    #[error("{0}")]
    Connect(#[from] p2pchat_tcp::ConnectError),
    /// Our identity could not be loaded or made.
    #[error("{0}")]
    Keys(#[from] KeyError),
    /// The nickname is not allowed.
    #[error("--name: {0}")]
    Name(String),
    /// The connection stayed lost and the relay stayed unreachable.
    #[error("gave up reconnecting after {secs} s: {last}")]
    GaveUp {
        /// How long it tried.
        secs: u64,
        /// The last attempt's error.
        last: p2pchat_tcp::ConnectError,
    },
    /// The session ended badly: refused, a changed key, disconnected with an error.
    #[error("the session ended: {0}")]
    Ended(String),
}
