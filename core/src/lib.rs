//! # p2pchat-core
//!
//! The protocol of p2pchat as plain, deterministic state machines: no sockets, no
//! async, no clock, no threads. A driver (real TCP, the simulator, a future GUI)
//! feeds each machine what happened with `handle_*` calls, passing the current time,
//! and carries out what it asks for through `poll_*` calls:
//!
//! - [`RelayServer`]: the relay, for many connections;
//! - [`RelayClient`]: one client of a relay;
//! - [`Peer`]: one side of a direct conversation.
//!
//! [`RecordLink`] is what is left of an admitted [`RelayClient`] when a load generator
//! takes its encrypted connection over, to write and read frames in place.
//!
//! The wire format is specified in `docs/PROTOCOL.md`; [`Frame`] and [`FrameDecoder`]
//! implement it. The same inputs in the same order always give byte-identical outputs.
#![forbid(unsafe_code)]
// Nothing a peer sends may panic the core: outside tests, no unwrap, expect, panic
// or unchecked indexing (checked by `cargo clippy`, which CI runs).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod client;
mod decode;
mod e2e;
mod error;
mod file;
mod frame;
mod handshake;
mod id;
mod keepalive;
mod limits;
mod link;
mod outbound;
mod peer;
mod relay;
mod saved;
mod secure;
mod seq_window;
mod session;
#[cfg(test)]
mod test_support;
mod text;
mod time;
mod wire;

pub use client::{ClientEvent, RecordLink, RecordLinkError, RelayClient};
pub use decode::{FrameDecoder, RawFrame};
pub use error::{DecodeError, ErrorCode, SendError};
pub use file::{CHUNK_SIZE, FileEvent, FileMsg, Hash, PeerRef, TransferId};
pub use frame::{
    ErrorReport, Frame, Hello, Payload, PayloadKind, Refused, Role, RosterEntry, Welcome,
    is_session_frame,
};
pub use handshake::{CAP_MOVES, CAP_NOISE, CAP_RESUME, CAPABILITIES, validate_name};
pub use id::{ClientId, ConnId};
pub use limits::{Limits, MAGIC, MIN_PROTOCOL_VERSION, PRESENCE_NOTICE_BYTES, PROTOCOL_VERSION};
pub use peer::{Peer, PeerEvent, PeerSide};
pub use relay::{Admission, ClusterInput, ClusterRequest, RelayServer, ServerEvent, Transmit};
pub use saved::{RestoreError, SavePoint};
pub use secure::{
    Encryption, Expect, Identity, Pattern, PublicKey, RecordCipher, Security, password_key,
};
pub use text::{RelayLine, parse_relay_line, sanitize_for_terminal};
pub use time::Timestamp;
pub use wire::truncate_utf8;
