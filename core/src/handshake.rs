//! The opening exchange shared by every machine: building our `Hello`, agreeing on a
//! version with theirs, and checking nicknames.
//!
//! Version negotiation is "highest version both speak", computed from ranges, so a
//! v2 build can still talk to this one as long as its range includes 1.

use crate::frame::{Hello, Role};
use crate::limits::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// Capability bit: the sender runs the Noise handshake and encrypts (see
/// `docs/PROTOCOL.md`, "Secure channel"). It offers it unless told not to encrypt.
pub const CAP_NOISE: u64 = 1 << 1;

/// Capability bit: the session layer (`session.rs`, `docs/PROTOCOL.md` section 5b):
/// the sender acknowledges what it reads (`Ack`), keeps what it sends until it is
/// acknowledged, and can resume the session on a new connection. A relay that agrees
/// also tells a client when its messages reached their recipients (`Delivered`).
pub const CAP_RESUME: u64 = 1 << 2;

/// Capability bit: a relay client whose session can move to another relay of a
/// cluster (`docs/PROTOCOL.md` 5b, "Moving"): it understands `Moved`, starts both
/// session streams anew on it, and shows a message delivered twice once.
pub const CAP_MOVES: u64 = 1 << 3;

/// Capability bits this build supports. Unknown bits from the other side are ignored.
pub const CAPABILITIES: u64 = CAP_NOISE | CAP_RESUME | CAP_MOVES;

/// Our opening frame, offering the capabilities in `capabilities`.
pub(crate) fn our_hello(role: Role, name: &str, capabilities: u64) -> Hello {
    Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        capabilities: capabilities & CAPABILITIES,
        role,
        name: name.to_owned(),
        resuming: false,
    }
}

/// The highest version in both ranges, or a sentence saying why there is none.
pub(crate) fn negotiate_version(theirs: &Hello) -> Result<u16, String> {
    let low = theirs.min_version.max(MIN_PROTOCOL_VERSION);
    let high = theirs.max_version.min(PROTOCOL_VERSION);
    if low <= high {
        Ok(high)
    } else {
        Err(format!(
            "no protocol version in common: this side speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}, \
             the other {}..={}; upgrade the older p2pchat",
            theirs.min_version, theirs.max_version
        ))
    }
}

/// Checks a nickname: at most `max_len` bytes and no control characters (which could
/// rewrite another user's terminal).
pub fn validate_name(name: &str, max_len: usize) -> Result<(), String> {
    if name.len() > max_len {
        return Err(format!(
            "name is {} bytes; the limit is {max_len}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("name contains control characters".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u16, max: u16) -> Hello {
        Hello {
            min_version: min,
            max_version: max,
            ..our_hello(Role::RelayClient, "", 0)
        }
    }

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate_version(&hello(1, 5)), Ok(4));
        assert_eq!(negotiate_version(&hello(0, 4)), Ok(4));
        assert!(
            negotiate_version(&hello(0, 1)).is_err(),
            "v1 had no secure channel"
        );
        assert!(
            negotiate_version(&hello(2, 2)).is_err(),
            "v2 would misread v3's file messages"
        );
        assert!(
            negotiate_version(&hello(3, 3)).is_err(),
            "v3 does not know away notices"
        );
    }

    #[test]
    fn disjoint_ranges_fail_with_both_ranges_named() {
        let err = negotiate_version(&hello(5, 6)).unwrap_err();
        assert!(err.contains("4..=4") && err.contains("5..=6"), "{err}");
    }

    #[test]
    fn names_with_escape_sequences_are_refused() {
        assert!(validate_name("ann", 32).is_ok());
        assert!(validate_name("\u{1b}[2J", 32).is_err());
        assert!(validate_name(&"x".repeat(33), 32).is_err());
    }
}
