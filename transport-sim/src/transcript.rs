//! What a run did, one line per event with its virtual time: the simulator writes it,
//! the invariant checker reads it, the snapshots store it, `p2pchat sim` prints it.

use core::fmt;

use p2pchat_core::{ClientId, ErrorCode, Timestamp};

use crate::check::RunInfo;
use crate::scenario::Target;

/// One event of a run. In every variant, `client` is the simulated client's index
/// (`c0`, `c1`, ...; a reconnect gets a new index), `id` a relay ID, `code` a protocol
/// error code, `seq` the sender's sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are named alike in every variant, described above
pub enum Record {
    /// A client opened its connection.
    Connect { client: usize },
    /// The relay admitted a client (the relay's own view, in its order).
    ServerAdmitted { client: usize, id: ClientId },
    /// The relay refused a client.
    ServerRefused { client: usize, code: ErrorCode },
    /// An admitted client is gone, as the relay sees it.
    ServerLeft {
        client: usize,
        id: ClientId,
        code: ErrorCode,
    },
    /// A connection closed before its handshake completed.
    ServerDropped { client: usize, code: ErrorCode },
    /// The relay holds a client's session after its connection was lost.
    ServerParked { client: usize, code: ErrorCode },
    /// A client came back to its session (the relay's view).
    ServerResumed { client: usize, id: ClientId },
    /// The relay process died: every connection to it reset, its state gone.
    ServerDown,
    /// The relay process is back, knowing nothing of before (IDs start at 0 again).
    ServerUp,
    /// The client's connection was lost; its session goes on (it dials again).
    ConnectionLost { client: usize, code: ErrorCode },
    /// The client is back in its session on a new connection.
    Resumed { client: usize, id: ClientId },
    /// The client's session ended for good; the user joins again as `fresh`.
    Rejoined { client: usize, fresh: usize },
    /// The session ended before these messages (by sequence number) were confirmed
    /// delivered: the client names them as possibly lost.
    Unconfirmed { client: usize, seqs: Vec<u64> },
    /// A message from `from` could not be read (end to end), and the user was told.
    Unreadable {
        client: usize,
        from: ClientId,
        seq: u64,
        reason: String,
    },
    /// The client learnt its ID.
    Welcomed { client: usize, id: ClientId },
    /// The client was refused, and why.
    Refused {
        client: usize,
        code: ErrorCode,
        reason: String,
    },
    /// A direct peer completed its handshake.
    Connected { client: usize },
    /// The user sent a message (the machine accepted it).
    Sent {
        client: usize,
        to: Target,
        seq: u64,
        text: String,
    },
    /// The machine refused to send (already exited, closed...).
    SendRefused {
        client: usize,
        to: Target,
        why: String,
    },
    /// A message arrived. `from` is the relay ID of the sender (None in direct chat).
    Delivered {
        client: usize,
        from: Option<ClientId>,
        broadcast: bool,
        seq: u64,
        text: String,
        /// Sealed end to end by its sender (relay traffic).
        sealed: bool,
    },
    /// A non-fatal error report about one of our messages.
    ErrorReport {
        client: usize,
        code: ErrorCode,
        seq: u64,
        subject: Option<ClientId>,
    },
    /// A roster change as the client saw it.
    Notice { client: usize, text: String },
    /// The user said exit.
    SaidExit { client: usize },
    /// The other direct peer said exit.
    PeerExited { client: usize },
    /// The conversation ended normally for this client (everyone said exit).
    Finished { client: usize },
    /// The connection ended otherwise.
    Disconnected {
        client: usize,
        code: ErrorCode,
        reason: String,
    },
    /// A fault was injected.
    Fault { client: usize, what: String },
    /// A client's machine vanished holding messages it had received (and
    /// acknowledged) but not shown: (sender's ID, seq). Their senders were told they
    /// were delivered (they reached the machine); nobody will see them.
    HeldWhenGone {
        client: usize,
        messages: Vec<(ClientId, u64)>,
    },
    /// The client offered a file (`to` is the addressee's relay ID; None in direct chat).
    FileOffered {
        client: usize,
        transfer: u32,
        to: Option<ClientId>,
        size: u64,
    },
    /// An offer reached the client, which accepted it.
    FileSeen {
        client: usize,
        from: Option<ClientId>,
        transfer: u32,
    },
    /// Every byte of a file arrived; `intact` says whether it equals what was sent.
    FileReceived {
        client: usize,
        from: Option<ClientId>,
        transfer: u32,
        intact: bool,
    },
    /// The sender learnt that its file arrived intact.
    FileDelivered { client: usize, transfer: u32 },
    /// A transfer failed, as this client saw it.
    FileFailed {
        client: usize,
        peer: Option<ClientId>,
        transfer: u32,
        outgoing: bool,
        reason: String,
    },
    /// The run is over. `stuck` lists clients that had not finished; `max_queued` the
    /// most bytes any endpoint's machine held for its peer at once.
    End {
        stuck: Vec<usize>,
        max_queued: usize,
        in_flight: usize,
    },
}

/// A record with its moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Virtual time.
    pub at: Timestamp,
    /// What happened.
    pub record: Record,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transcript {
    /// Every event, in the order they happened.
    pub entries: Vec<Entry>,
    /// The relay's client limit during the run.
    pub max_clients: u32,
    /// The per-connection outbound bound during the run.
    pub max_outbound_bytes: usize,
    /// Whether the run was a direct conversation.
    pub direct: bool,
    /// Whether the run was encrypted (then relay clients seal end to end).
    pub encrypted: bool,
    /// Messages the scenario asked its users to send.
    pub scripted: u64,
}

impl Transcript {
    /// An empty transcript for a run described by `info`.
    pub fn new(info: &RunInfo) -> Self {
        Transcript {
            entries: Vec::new(),
            max_clients: info.max_clients,
            max_outbound_bytes: info.max_outbound_bytes,
            direct: info.direct,
            encrypted: info.encrypted,
            scripted: info.scripted,
        }
    }

    /// Appends a record.
    pub fn push(&mut self, at: Timestamp, record: Record) {
        self.entries.push(Entry { at, record });
    }

    /// What the checker needs to know of the run besides its records.
    pub fn info(&self) -> RunInfo {
        RunInfo {
            max_clients: self.max_clients,
            max_outbound_bytes: self.max_outbound_bytes,
            direct: self.direct,
            encrypted: self.encrypted,
            scripted: self.scripted,
        }
    }
}

/// Where a run's entries go as they happen: kept whole ([`Transcript`]), judged as
/// they come ([`crate::Checker`]), hashed ([`TranscriptHash`]) or printed.
pub trait Observer {
    /// Takes the next entry of the run.
    fn observe(&mut self, entry: &Entry);
}

impl Observer for Transcript {
    fn observe(&mut self, entry: &Entry) {
        self.entries.push(entry.clone());
    }
}

impl Observer for crate::Checker {
    fn observe(&mut self, entry: &Entry) {
        crate::Checker::observe(self, entry);
    }
}

/// A run's fingerprint: a BLAKE3 hash of its transcript as printed, one line per
/// entry. Two runs with the same hash printed the same transcript; a replayed seed
/// is proved exact by its hash without keeping either transcript.
#[derive(Default)]
pub struct TranscriptHash {
    hasher: blake3::Hasher,
    line: String,
}

impl TranscriptHash {
    /// The hash so far, as 16 hexadecimal digits (64 bits: enough to tell runs apart).
    pub fn hex(&self) -> String {
        let hash = self.hasher.finalize();
        hash.to_hex().as_str()[..16].to_owned()
    }
}

impl Observer for TranscriptHash {
    fn observe(&mut self, entry: &Entry) {
        use core::fmt::Write as _;
        self.line.clear();
        let _ = writeln!(self.line, "{entry}");
        self.hasher.update(self.line.as_bytes());
    }
}

fn target(t: &Target) -> String {
    match t {
        Target::Id(id) => id.to_string(),
        Target::All => "all".into(),
        Target::Peer => "peer".into(),
    }
}

fn opt_id(id: &Option<ClientId>) -> String {
    id.map_or("-".into(), |i| i.to_string())
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Connect { client } => write!(f, "c{client} connect"),
            Record::ServerAdmitted { client, id } => write!(f, "server admitted c{client} as {id}"),
            Record::ServerRefused { client, code } => {
                write!(f, "server refused c{client} ({code})")
            }
            Record::ServerLeft { client, id, code } => {
                write!(f, "server: {id} (c{client}) left ({code})")
            }
            Record::ServerDropped { client, code } => {
                write!(f, "server dropped c{client} ({code})")
            }
            Record::ServerParked { client, code } => {
                write!(f, "server holds c{client}'s session ({code})")
            }
            Record::ServerResumed { client, id } => {
                write!(f, "server: c{client} resumed as {id}")
            }
            Record::ServerDown => write!(f, "server down (every connection reset)"),
            Record::ServerUp => write!(f, "server up again (a fresh start)"),
            Record::ConnectionLost { client, code } => {
                write!(f, "c{client} connection lost ({code}); getting back")
            }
            Record::Resumed { client, id } => write!(f, "c{client} resumed as {id}"),
            Record::Rejoined { client, fresh } => {
                write!(f, "c{client} session over; joins again as c{fresh}")
            }
            Record::Unconfirmed { client, seqs } => {
                write!(f, "c{client} unconfirmed: seq {seqs:?}")
            }
            Record::Unreadable {
                client,
                from,
                seq,
                reason,
            } => write!(
                f,
                "c{client} could not read seq {seq} from {from}: {reason}"
            ),
            Record::Welcomed { client, id } => write!(f, "c{client} welcome id={id}"),
            Record::Refused {
                client,
                code,
                reason,
            } => write!(f, "c{client} refused ({code}): {reason}"),
            Record::Connected { client } => write!(f, "c{client} connected"),
            Record::Sent {
                client,
                to,
                seq,
                text,
            } => {
                write!(f, "c{client} send seq={seq} to={} {text:?}", target(to))
            }
            Record::SendRefused { client, to, why } => {
                write!(f, "c{client} send to={} refused: {why}", target(to))
            }
            Record::Delivered {
                client,
                from,
                broadcast,
                seq,
                text,
                sealed,
            } => write!(
                f,
                "c{client} got from={} seq={seq}{}{} {text:?}",
                opt_id(from),
                if *broadcast { " (all)" } else { "" },
                if *sealed { " e2e" } else { "" }
            ),
            Record::ErrorReport {
                client,
                code,
                seq,
                subject,
            } => write!(
                f,
                "c{client} error {code} seq={seq} subject={}",
                opt_id(subject)
            ),
            Record::Notice { client, text } => write!(f, "c{client} notice: {text}"),
            Record::SaidExit { client } => write!(f, "c{client} exit"),
            Record::PeerExited { client } => write!(f, "c{client} sees peer exit"),
            Record::Finished { client } => write!(f, "c{client} finished"),
            Record::Disconnected {
                client,
                code,
                reason,
            } => {
                write!(f, "c{client} disconnected ({code}): {reason}")
            }
            Record::Fault { client, what } => write!(f, "fault: c{client} {what}"),
            Record::HeldWhenGone { client, messages } => {
                let list: Vec<String> = messages
                    .iter()
                    .map(|(from, seq)| format!("{from}:{seq}"))
                    .collect();
                write!(
                    f,
                    "c{client} vanished holding received, unshown messages [{}]",
                    list.join(", ")
                )
            }
            Record::FileOffered {
                client,
                transfer,
                to,
                size,
            } => {
                write!(
                    f,
                    "c{client} offers file #{transfer} ({size} bytes) to {}",
                    opt_id(to)
                )
            }
            Record::FileSeen {
                client,
                from,
                transfer,
            } => {
                write!(
                    f,
                    "c{client} accepts file #{transfer} from {}",
                    opt_id(from)
                )
            }
            Record::FileReceived {
                client,
                from,
                transfer,
                intact,
            } => write!(
                f,
                "c{client} received file #{transfer} from {} ({})",
                opt_id(from),
                if *intact { "intact" } else { "CORRUPT" }
            ),
            Record::FileDelivered { client, transfer } => {
                write!(f, "c{client} file #{transfer} delivered")
            }
            Record::FileFailed {
                client,
                peer,
                transfer,
                outgoing,
                reason,
            } => write!(
                f,
                "c{client} file #{transfer} {} {} failed: {reason}",
                if *outgoing { "to" } else { "from" },
                opt_id(peer)
            ),
            Record::End {
                stuck,
                max_queued,
                in_flight,
            } => {
                let stuck: Vec<String> = stuck.iter().map(|c| format!("c{c}")).collect();
                write!(
                    f,
                    "end: stuck [{}], most bytes queued by one endpoint for one connection {max_queued}, bytes in flight {in_flight}",
                    stuck.join(", ")
                )
            }
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>9} {}", self.at.to_string(), self.record)
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}
