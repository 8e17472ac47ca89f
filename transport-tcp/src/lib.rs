//! # p2pchat-tcp
//!
//! Drives the p2pchat core over real TCP on the smol runtime. It owns sockets and
//! timers and nothing else: every protocol decision is the core's.
//!
//! - [`Relay`]: a relay server (`bind`, then `run` until a [`ShutdownHandle`] fires),
//!   reporting joins, departures and refusals as [`RelayLog`] lines.
//! - [`start_client`] / [`start_peer`]: a relay client or a direct peer on one stream,
//!   used through a [`Session`]: a command sender and an event receiver. This is the
//!   surface another frontend (a GUI, a bot) would use.
//! - [`connect`], [`listen`], [`resolve`]: opening sockets with errors a user can act on.

mod clock;
mod connect;
mod error;
mod relay;
mod session;

pub use clock::Clock;
pub use connect::{CONNECT_TIMEOUT, connect, listen, redial_to, resolve};
pub use error::{BindError, ConnectError};
pub use relay::{ClusterLink, Relay, RelayLog, ShutdownHandle, ShutdownSignal};
pub use session::{
    ClientCommand, ClientSession, Driver, FileCommand, Machine, PeerCommand, PeerSession, Redial,
    Session, SessionEvent, SessionStore, prepare, prepare_with_redial, start, start_client,
    start_peer, start_plain_text_peer,
};

/// The port the original app used, and p2pchat's default.
pub const DEFAULT_PORT: u16 = 65432;
