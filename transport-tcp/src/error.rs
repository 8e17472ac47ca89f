//! Errors of the TCP driver, worded so that the user can act on them.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;

/// Why a connection could not be opened.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// What the user gave.
        host: String,
        /// The resolver's answer.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// What the user gave.
        host: String,
    },
    /// Nothing accepted the connection.
    #[error("could not connect to {addr}: connection refused; is {hint} running there?")]
    Refused {
        /// The address tried.
        addr: SocketAddr,
        /// The command that should be listening, e.g. "`p2pchat server`".
        hint: &'static str,
    },
    /// The connection attempt took too long.
    #[error("could not connect to {addr}: no answer within {secs} s")]
    TimedOut {
        /// The address tried.
        addr: SocketAddr,
        /// The timeout.
        secs: u64,
    },
    /// Any other failure to connect.
    #[error("could not connect to {addr}: {source}")]
    Other {
        /// The address tried.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why a listening socket could not be opened.
#[derive(Debug, Error)]
pub enum BindError {
    /// Another program holds the port.
    #[error(
        "could not listen on {addr}: the port is already in use (is another p2pchat running? pick another with --port)"
    )]
    InUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Not allowed (e.g. a port below 1024 without privileges).
    #[error(
        "could not listen on {addr}: permission denied (ports below 1024 need privileges; pick another with --port)"
    )]
    PermissionDenied {
        /// The address.
        addr: SocketAddr,
    },
    /// The address is not one of this machine's.
    #[error("could not listen on {addr}: that address is not available on this machine")]
    AddressNotAvailable {
        /// The address.
        addr: SocketAddr,
    },
    /// Any other failure.
    #[error("could not listen on {addr}: {source}")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl BindError {
    pub(crate) fn from_io(addr: SocketAddr, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::AddrInUse => BindError::InUse { addr },
            io::ErrorKind::PermissionDenied => BindError::PermissionDenied { addr },
            io::ErrorKind::AddrNotAvailable => BindError::AddressNotAvailable { addr },
            _ => BindError::Other { addr, source },
        }
    }
}
