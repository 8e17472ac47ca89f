//! End-to-end encryption between relay clients: the relay routes what one client
//! writes to another without being able to read it.
//!
//! The secure channel (`secure/`) protects each connection to the relay, but the relay
//! itself opens those records. So relay clients seal chat and file contents once more,
//! for the client that reads them: [`seal`] is how one message is sealed, [`keyring`]
//! holds the keys of one connection, and [`FileHeader`] is the little of a file
//! message the relay still needs to read to apply its limits.
//!
//! Messages to a client without a key (a plain-text client on `nc`, or one started
//! with `--insecure`) go in the clear, and the client says so; see `client/`.

mod file_header;
pub(crate) mod keyring;
pub(crate) mod seal;
#[cfg(test)]
mod tests;

pub(crate) use file_header::{FileHeader, open_file};
pub(crate) use keyring::{Keyring, KeysMsg, OpenError};
pub(crate) use seal::Place;
