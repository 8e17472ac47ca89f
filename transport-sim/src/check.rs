//! The invariant checker: reads a finished run's transcript and lists every rule it
//! breaks. It knows nothing of the simulator's internals, only what the transcript
//! says, so it can judge any transcript, including deliberately corrupted ones.
//!
//! A client is *healthy* when its conversation ended normally (it finished: everyone
//! said exit), whatever faults it rode out by resuming its session, and its machine
//! did not vanish. Exactly-once delivery is demanded between healthy clients. Every
//! other message is delivered exactly once or reported to its sender (an error naming
//! it, or named unconfirmed when the sender's session ended), or reported unreadable
//! by its reader: never lost silently, never duplicated, misrouted, reordered or
//! invented.
//!
//! A relay that restarts starts its IDs at 0 again, so IDs are read per *epoch*
//! (the stretch between two restarts).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use p2pchat_core::{ClientId, ErrorCode, Timestamp};

use crate::scenario::Target;
use crate::transcript::{Record, Transcript};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule, e.g. `exactly-once`.
    pub rule: &'static str,
    /// When (the moment of the offending record, or the end of the run).
    pub at: Timestamp,
    /// What exactly.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.rule, self.at, self.detail)
    }
}

/// Slack over the outbound bound: the final `Close` frame may go past it.
const CLOSE_SLACK: usize = 1024;

struct Sent {
    at: Timestamp,
    to: Target,
    text: String,
}

/// Checks every invariant; an empty list means the run was correct.
pub fn check(t: &Transcript) -> Vec<Violation> {
    let mut v = Vec::new();
    let end_at = t.entries.last().map_or(Timestamp::ZERO, |e| e.at);
    let faulted: BTreeSet<usize> = t.faulted.iter().copied().collect();
    let vanished: BTreeSet<usize> = t
        .entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Fault { client, what } if what == "vanishes" => Some(*client),
            _ => None,
        })
        .collect();
    let mut finished = BTreeSet::new();
    let mut exit_at = BTreeMap::new();
    // IDs by epoch (a restarted relay numbers from 0 again).
    let mut id_node: BTreeMap<(u32, ClientId), usize> = BTreeMap::new();
    let mut node_id: BTreeMap<usize, ClientId> = BTreeMap::new();
    let mut node_epoch: BTreeMap<usize, u32> = BTreeMap::new();
    let mut admitted_at: BTreeMap<(u32, ClientId), Timestamp> = BTreeMap::new();
    let mut left_at: BTreeMap<(u32, ClientId), Timestamp> = BTreeMap::new();
    let mut sent: BTreeMap<(usize, u64), Sent> = BTreeMap::new();
    let mut refused_clients = BTreeSet::new();
    let mut unconfirmed: BTreeSet<(usize, u64)> = BTreeSet::new();

    // Pass 1: identities, admissions, limits, exits.
    let mut online = 0u32;
    let mut last_id: Option<ClientId> = None;
    let mut epoch = 0u32;
    for e in &t.entries {
        match &e.record {
            Record::ServerDown => {
                epoch += 1;
                online = 0;
                last_id = None;
            }
            Record::Unconfirmed { client, seqs } => {
                unconfirmed.extend(seqs.iter().map(|&s| (*client, s)));
            }
            Record::ServerAdmitted { client, id } => {
                if last_id.is_some_and(|last| *id <= last) {
                    v.push(violation(
                        "ids-increase",
                        e.at,
                        format!("{id} admitted after {last_id:?}"),
                    ));
                }
                last_id = Some(*id);
                if id_node.insert((epoch, *id), *client).is_some() {
                    v.push(violation(
                        "ids-unique",
                        e.at,
                        format!("{id} assigned twice"),
                    ));
                }
                node_id.insert(*client, *id);
                node_epoch.insert(*client, epoch);
                admitted_at.insert((epoch, *id), e.at);
                online += 1;
                if online > t.max_clients {
                    v.push(violation(
                        "limit",
                        e.at,
                        format!("{online} clients admitted, limit {}", t.max_clients),
                    ));
                }
            }
            Record::ServerLeft { id, .. } => {
                online = online.saturating_sub(1);
                left_at.insert((epoch, *id), e.at);
            }
            Record::ServerRefused { client, code } => {
                refused_clients.insert(*client);
                if *code == ErrorCode::ServerFull && online < t.max_clients {
                    v.push(violation(
                        "refusal-justified",
                        e.at,
                        format!(
                            "c{client} refused as full with {online} of {} online",
                            t.max_clients
                        ),
                    ));
                }
            }
            Record::Welcomed { client, id }
                if node_id.get(client).is_some_and(|known| known != id) =>
            {
                v.push(violation(
                    "ids-agree",
                    e.at,
                    format!("c{client} welcomed as {id}, admitted as another"),
                ));
            }
            Record::Finished { client } => {
                finished.insert(*client);
            }
            Record::SaidExit { client } => {
                exit_at.entry(*client).or_insert(e.at);
            }
            Record::Sent {
                client,
                to,
                seq,
                text,
            } => {
                if exit_at.get(client).is_some_and(|&x| x < e.at) {
                    v.push(violation(
                        "no-send-after-exit",
                        e.at,
                        format!("c{client} sent seq {seq} after exit"),
                    ));
                }
                sent.insert(
                    (*client, *seq),
                    Sent {
                        at: e.at,
                        to: *to,
                        text: text.clone(),
                    },
                );
            }
            _ => {}
        }
    }
    let healthy = |n: usize| !vanished.contains(&n) && finished.contains(&n);
    let _ = &faulted;

    // Refused clients were told why.
    for &client in &refused_clients {
        let told = t.entries.iter().any(|e| match &e.record {
            Record::Refused {
                client: c, reason, ..
            } => *c == client && !reason.is_empty(),
            // A refused resume ends the session with its reason.
            Record::Disconnected {
                client: c,
                code: ErrorCode::ResumeFailed,
                reason,
            } => *c == client && !reason.is_empty(),
            _ => false,
        });
        // Unless the relay crashed before the refusal could get out.
        let refused_at = t.entries.iter().find_map(|e| match &e.record {
            Record::ServerRefused { client: c, .. } if *c == client => Some(e.at),
            _ => None,
        });
        let crashed_after = t.entries.iter().any(|e| {
            matches!(e.record, Record::ServerDown) && refused_at.is_some_and(|r| e.at >= r)
        });
        if !told && !faulted.contains(&client) && !crashed_after {
            v.push(violation(
                "refusal-reason",
                end_at,
                format!("c{client} was refused without a reason"),
            ));
        }
    }

    // Pass 2: every delivery matches a send, goes to its addressee, once, in order.
    // Hash maps: a big run has millions of deliveries, and these are only looked up,
    // never iterated, so their order cannot leak into the verdict.
    let mut delivered: HashMap<(usize, usize, u64), Timestamp> = HashMap::new();
    let mut last_seq: HashMap<(usize, usize), u64> = HashMap::new();
    let mut errors: BTreeMap<(usize, u64), (Timestamp, ErrorCode)> = BTreeMap::new();
    // Failures reported about one recipient: (sender, seq, the recipient's ID).
    let mut failed_for: BTreeSet<(usize, u64, ClientId)> = BTreeSet::new();
    // Messages their reader could not open, and said so: (reader, sender, seq).
    let mut unreadable: BTreeSet<(usize, usize, u64)> = BTreeSet::new();
    for e in &t.entries {
        match &e.record {
            Record::Unreadable {
                client, from, seq, ..
            } => {
                if let Some(&sender) = node_epoch
                    .get(client)
                    .and_then(|&ep| id_node.get(&(ep, *from)))
                {
                    unreadable.insert((*client, sender, *seq));
                }
            }
            Record::Delivered {
                client,
                from,
                seq,
                text,
                sealed,
                ..
            } => {
                if t.encrypted && from.is_some() && !sealed {
                    v.push(violation(
                        "end-to-end",
                        e.at,
                        format!("c{client} got seq {seq} from {from:?} not sealed end to end"),
                    ));
                }
                let sender = match from {
                    Some(fid) => match node_epoch
                        .get(client)
                        .and_then(|&ep| id_node.get(&(ep, *fid)))
                    {
                        Some(&s) => s,
                        None => {
                            v.push(violation(
                                "no-invention",
                                e.at,
                                format!("c{client} got seq {seq} from unknown {fid}"),
                            ));
                            continue;
                        }
                    },
                    None => 1 - (*client).min(1),
                };
                let Some(s) = sent.get(&(sender, *seq)) else {
                    v.push(violation(
                        "no-invention",
                        e.at,
                        format!("c{client} got seq {seq} from c{sender}, which never sent it"),
                    ));
                    continue;
                };
                if s.text != *text {
                    v.push(violation(
                        "intact",
                        e.at,
                        format!("c{client} got altered text for c{sender} seq {seq}"),
                    ));
                }
                let addressed = match s.to {
                    Target::Id(id) => node_id.get(client) == Some(&ClientId(id)),
                    Target::All => *client != sender,
                    Target::Peer => true,
                };
                if !addressed {
                    v.push(violation(
                        "addressee-only",
                        e.at,
                        format!(
                            "c{client} got c{sender} seq {seq}, which was for {:?}",
                            s.to
                        ),
                    ));
                }
                if delivered.insert((*client, sender, *seq), e.at).is_some() {
                    v.push(violation(
                        "exactly-once",
                        e.at,
                        format!("c{client} got c{sender} seq {seq} twice"),
                    ));
                }
                let last = last_seq.entry((*client, sender)).or_insert(0);
                if *seq <= *last {
                    v.push(violation(
                        "per-sender-order",
                        e.at,
                        format!("c{client} got c{sender} seq {seq} after seq {last}"),
                    ));
                }
                *last = (*last).max(*seq);
            }
            Record::ErrorReport {
                client,
                code,
                seq,
                subject,
            } => {
                errors.insert((*client, *seq), (e.at, *code));
                if let Some(id) = subject {
                    failed_for.insert((*client, *seq, *id));
                }
            }
            _ => {}
        }
    }

    // Pass 3: every message has its outcome. For broadcasts, the healthy clients and
    // their admission times are listed once, not looked up per message.
    let all_nodes: BTreeSet<usize> = t
        .entries
        .iter()
        .filter_map(|e| match e.record {
            Record::Connect { client } => Some(client),
            _ => None,
        })
        .collect();
    let healthy_admitted: Vec<(usize, u32, ClientId, Timestamp)> = all_nodes
        .iter()
        .filter(|&&k| healthy(k))
        .filter_map(|&k| {
            let ep = *node_epoch.get(&k)?;
            let id = *node_id.get(&k)?;
            Some((k, ep, id, *admitted_at.get(&(ep, id))?))
        })
        .collect();
    for (&(sender, seq), s) in &sent {
        if vanished.contains(&sender) {
            // Its machine is gone: nobody is left to tell.
            continue;
        }
        let error = errors.get(&(sender, seq));
        let named = unconfirmed.contains(&(sender, seq));
        let epoch = node_epoch.get(&sender).copied();
        match s.to {
            Target::Peer => {
                let other = 1 - sender.min(1);
                if delivered.contains_key(&(other, sender, seq)) {
                    continue;
                }
                if healthy(sender) && healthy(other) {
                    v.push(violation(
                        "exactly-once",
                        s.at,
                        format!("c{sender} seq {seq} never reached c{other}"),
                    ));
                } else if !named && error.is_none() {
                    v.push(violation(
                        "no-silent-loss",
                        s.at,
                        format!("c{sender} seq {seq} neither reached c{other} nor was reported to c{sender}"),
                    ));
                }
            }
            Target::Id(j) => {
                let j = ClientId(j);
                let target = epoch.and_then(|ep| id_node.get(&(ep, j)).copied());
                let got = target.is_some_and(|k| delivered.contains_key(&(k, sender, seq)));
                if let Some(&(err_at, code)) = error {
                    // "Undelivered" may follow a delivery whose acknowledgement was
                    // lost with its reader's session: it says "may not have".
                    if got && code != ErrorCode::Undelivered {
                        v.push(violation(
                            "one-outcome",
                            err_at,
                            format!("c{sender} seq {seq} delivered and refused ({code})"),
                        ));
                    }
                    if code == ErrorCode::UnknownRecipient
                        && let Some(ep) = epoch
                    {
                        let online_throughout =
                            admitted_at.get(&(ep, j)).is_some_and(|&a| a <= s.at)
                                && left_at.get(&(ep, j)).is_none_or(|&l| l >= err_at);
                        if online_throughout {
                            v.push(violation(
                                "unknown-recipient-justified",
                                err_at,
                                format!("c{sender} seq {seq}: {j} was online the whole time"),
                            ));
                        }
                    }
                }
                let unread = target.is_some_and(|k| unreadable.contains(&(k, sender, seq)));
                if got || error.is_some() {
                    continue;
                }
                if healthy(sender) && target.is_none_or(healthy) {
                    let what = match target {
                        Some(k) => format!("c{sender} seq {seq} to {j} never reached c{k}"),
                        None => format!("c{sender} seq {seq} to {j} (never online) got no error"),
                    };
                    v.push(violation("exactly-once", s.at, what));
                } else if !named && !unread {
                    v.push(violation(
                        "no-silent-loss",
                        s.at,
                        format!("c{sender} seq {seq} to {j} neither arrived nor was reported to c{sender}"),
                    ));
                }
            }
            Target::All => {
                if error.is_some_and(|&(_, code)| code == ErrorCode::NoRecipients) {
                    continue;
                }
                for &(k, ep, id, admitted) in &healthy_admitted {
                    if k == sender
                        || Some(ep) != epoch
                        || admitted > s.at
                        || delivered.contains_key(&(k, sender, seq))
                    {
                        continue;
                    }
                    let unread = unreadable.contains(&(k, sender, seq));
                    if healthy(sender) && !unread {
                        v.push(violation(
                            "broadcast-reaches-all",
                            s.at,
                            format!("c{sender} seq {seq} missed c{k}"),
                        ));
                    } else if !named && !failed_for.contains(&(sender, seq, id)) && !unread {
                        v.push(violation(
                            "no-silent-loss",
                            s.at,
                            format!("c{sender} seq {seq} to everyone missed c{k}, and c{sender} was not told"),
                        ));
                    }
                }
            }
        }
    }

    check_files(t, &vanished, &finished, &id_node, &node_epoch, &mut v);

    // The end: nothing stuck, nothing left in flight, queues within their bound.
    if let Some(Record::End {
        stuck,
        max_queued,
        in_flight,
    }) = t.entries.last().map(|e| &e.record)
    {
        if !stuck.is_empty() {
            v.push(violation(
                "quiescence",
                end_at,
                format!("clients still running at the end: {stuck:?}"),
            ));
        }
        if *in_flight > 0 {
            v.push(violation(
                "quiescence",
                end_at,
                format!("{in_flight} bytes still in flight"),
            ));
        }
        if *max_queued > t.max_outbound_bytes + CLOSE_SLACK {
            v.push(violation(
                "bounded-queues",
                end_at,
                format!(
                    "{max_queued} bytes queued for one connection, bound {}",
                    t.max_outbound_bytes
                ),
            ));
        }
    } else {
        v.push(violation(
            "quiescence",
            end_at,
            "the transcript has no end record".into(),
        ));
    }
    v
}

fn violation(rule: &'static str, at: Timestamp, detail: String) -> Violation {
    Violation { rule, at, detail }
}

/// Files: every transfer ends delivered intact or failed, and both sides learn it.
fn check_files(
    t: &Transcript,
    vanished: &BTreeSet<usize>,
    finished: &BTreeSet<usize>,
    id_node: &BTreeMap<(u32, ClientId), usize>,
    node_epoch: &BTreeMap<usize, u32>,
    v: &mut Vec<Violation>,
) {
    let end_at = t.entries.last().map_or(Timestamp::ZERO, |e| e.at);
    let healthy = |n: usize| !vanished.contains(&n) && finished.contains(&n);
    // The receiver of an offer, as a node; the sender of a received file, as a node
    // (relay IDs are read in the epoch of the client that names them).
    let node_of = |id: &Option<ClientId>, me: usize| match id {
        Some(id) => node_epoch
            .get(&me)
            .and_then(|&ep| id_node.get(&(ep, *id)))
            .copied(),
        None => Some(1 - me.min(1)),
    };
    let mut offered = Vec::new();
    let mut seen = BTreeSet::new();
    let mut received: BTreeMap<(usize, usize, u32), bool> = BTreeMap::new();
    let mut delivered = BTreeSet::new();
    let mut failed_out = BTreeSet::new();
    let mut failed_in = BTreeSet::new();
    for e in &t.entries {
        match &e.record {
            Record::FileOffered {
                client,
                transfer,
                to,
                ..
            } => offered.push((*client, *transfer, *to, e.at)),
            Record::FileSeen {
                client,
                from,
                transfer,
            } => {
                if let Some(s) = node_of(from, *client) {
                    seen.insert((*client, s, *transfer));
                }
            }
            Record::FileReceived {
                client,
                from,
                transfer,
                intact,
            } => {
                if let Some(s) = node_of(from, *client) {
                    received.insert((*client, s, *transfer), *intact);
                    if !intact && healthy(s) && healthy(*client) {
                        v.push(violation(
                            "file-intact",
                            e.at,
                            format!("c{client} got file #{transfer} from c{s} corrupted"),
                        ));
                    }
                }
            }
            Record::FileDelivered { client, transfer } => {
                delivered.insert((*client, *transfer));
            }
            Record::FileFailed {
                client,
                peer,
                transfer,
                outgoing,
                ..
            } => {
                if *outgoing {
                    failed_out.insert((*client, *transfer));
                } else if let Some(s) = node_of(peer, *client) {
                    failed_in.insert((*client, s, *transfer));
                }
            }
            _ => {}
        }
    }
    for (s, transfer, to, at) in offered {
        let r = node_of(&to, s);
        let ok = delivered.contains(&(s, transfer));
        let failed = failed_out.contains(&(s, transfer));
        if ok && failed {
            v.push(violation(
                "file-one-outcome",
                at,
                format!("c{s} file #{transfer} both delivered and failed"),
            ));
        }
        if !ok && !failed && healthy(s) {
            v.push(violation(
                "file-outcome",
                end_at,
                format!("c{s} never learnt how file #{transfer} ended"),
            ));
        }
        let Some(r) = r else { continue };
        if ok && received.get(&(r, s, transfer)) != Some(&true) {
            v.push(violation(
                "file-delivered-means-received",
                at,
                format!(
                    "c{s} file #{transfer} reported delivered, but c{r} does not hold it intact"
                ),
            ));
        }
        let receiver_knows =
            received.contains_key(&(r, s, transfer)) || failed_in.contains(&(r, s, transfer));
        if failed && seen.contains(&(r, s, transfer)) && healthy(r) && !receiver_knows {
            v.push(violation(
                "file-failure-reported-to-both",
                end_at,
                format!(
                    "c{s} file #{transfer} failed, but c{r}, which accepted it, was never told"
                ),
            ));
        }
    }
}
