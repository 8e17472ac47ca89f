//! Identifiers: who a message is for ([`ClientId`]) and which socket bytes came from ([`ConnId`]).
//!
//! They are distinct types because mixing them up is the classic relay bug: a connection
//! handle is the driver's bookkeeping, a client ID is what users type.

use core::fmt;

/// A relay client's public numeric ID, assigned 0, 1, 2, ... in admission order and
/// never reused during one server's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

impl ClientId {
    /// The `to` value of a message meant for every other client (see `docs/PROTOCOL.md`).
    pub const BROADCAST: ClientId = ClientId(u32::MAX);

    /// Whether this is the broadcast address rather than one client.
    pub const fn is_broadcast(self) -> bool {
        self.0 == u32::MAX
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_broadcast() {
            f.write_str("all")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// A handle for one transport connection to a [`crate::RelayServer`], handed out by
/// [`crate::RelayServer::handle_connected`]. Never reused by the same server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}
