//! What the transfers tell the user, as data: a frontend words them (the command
//! line's sentences, a web page's progress bars), the library does not.

use std::path::PathBuf;

use serde::Serialize;

/// One thing a user learns about a file transfer. `to`, `from` and `peer` name the
/// other side as the session names it (a relay ID with its name, or "the peer").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TransferNotice {
    /// We offered a file; the other side has not answered yet.
    FileOffering {
        /// The file's name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The addressee.
        to: String,
    },
    /// Someone offers us a file: `/accept NUMBER` or `/decline NUMBER`.
    FileOffered {
        /// The offer's number, for accepting or declining it.
        number: usize,
        /// Who offers it.
        from: String,
        /// The file's name, as the sender gave it (not yet made safe).
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// We accepted a file: it is saved to `part` until its hash is checked.
    FileAccepted {
        /// The file's (safe) name.
        name: String,
        /// Its size.
        size: u64,
        /// Bytes already here from an earlier attempt (0: from the start).
        resumed_at: u64,
        /// Where it is written meanwhile.
        part: PathBuf,
    },
    /// We declined a file.
    FileDeclined {
        /// The file's name.
        name: String,
    },
    /// The other side accepted our file; it is being sent from `offset`.
    FilePeerAccepted {
        /// The addressee.
        to: String,
        /// The file's name.
        name: String,
        /// Where sending starts (more than 0: the rest of an earlier attempt).
        offset: u64,
    },
    /// The other side declined our file.
    FilePeerDeclined {
        /// The addressee.
        to: String,
        /// The file's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// How far a transfer is (at most one a second per transfer).
    FileProgress {
        /// Whether we are sending it (else receiving).
        sending: bool,
        /// The file's name.
        name: String,
        /// Bytes done.
        done: u64,
        /// Its size.
        size: u64,
        /// Bytes a second since it started (or resumed).
        rate: u64,
        /// Seconds left at that rate.
        left_s: u64,
    },
    /// Our file arrived, and its hash was checked by the receiver.
    FileDelivered {
        /// The addressee.
        to: String,
        /// The file's name.
        name: String,
        /// Its size.
        size: u64,
    },
    /// A file arrived whole, its BLAKE3 hash checked, and now has its name.
    FileReceived {
        /// The sender.
        from: String,
        /// The file's name.
        name: String,
        /// Its size.
        size: u64,
        /// Where it is.
        path: PathBuf,
    },
    /// Sending a file failed.
    FileSendFailed {
        /// The addressee.
        to: String,
        /// The file's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Receiving a file stopped; what arrived is kept to resume.
    FileReceiveStopped {
        /// The sender.
        from: String,
        /// The file's name.
        name: String,
        /// How much had arrived, in percent.
        percent: u64,
        /// Why.
        reason: String,
        /// The partial file kept.
        part: PathBuf,
    },
    /// Something went wrong with a file (reading, writing, a hash that does not
    /// match); the transfer is cancelled or finished as failed.
    FileProblem {
        /// A sentence.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_notice_carries_numbers_a_page_can_draw() {
        let n = TransferNotice::FileProgress {
            sending: true,
            name: "a.bin".into(),
            done: 50,
            size: 200,
            rate: 25,
            left_s: 6,
        };
        assert_eq!(
            crate::events::to_json_line(&n),
            r#"{"event":"file_progress","sending":true,"name":"a.bin","done":50,"size":200,"rate":25,"left_s":6}"#
        );
    }
}
