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
//!
//! The checker streams: [`Checker`] takes a run one entry at a time, as the
//! simulator produces it, judges what it can at once (identities, limits, each
//! delivery against its send) and keeps only what the end needs (per message a few
//! words, per pair of clients the last sequence number), so that a run of tens of
//! millions of events is judged without its transcript. It also counts the
//! run's [`Workload`]: a run that never did most of what it was asked to is a failed
//! run (`workload-collapsed`), not a vacuous `ok`.

use std::collections::{BTreeMap, BTreeSet};

use p2pchat_core::{ClientId, ErrorCode, Timestamp};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::scenario::Target;
use crate::transcript::{Entry, Record, Transcript};

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

/// From this many scripted messages on, a run in which fewer than half were sent,
/// or fewer than a quarter delivered, is a failed run (`workload-collapsed`): most
/// of its workload never happened. (A run that sent most of its messages and had
/// many reported back, say with clients turned away at a full relay and a relay
/// restart, did exercise them.) Below this size one fault may legitimately take
/// most of a small run away (the one sender vanishes).
pub const COLLAPSE_MIN_MESSAGES: u64 = 200;

/// What the checker needs to know about a run besides its records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunInfo {
    /// The relay's client limit during the run.
    pub max_clients: u32,
    /// The bound on bytes queued towards one connection during the run.
    pub max_outbound_bytes: usize,
    /// Whether the run was a direct conversation.
    pub direct: bool,
    /// Whether the run was encrypted (then relay clients seal end to end).
    pub encrypted: bool,
    /// Messages the scenario asked its users to send.
    pub scripted: u64,
}

/// How much of its workload a run exercised: a verdict of `ok` means little when
/// most messages were never sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workload {
    /// Messages the scenario asked for.
    pub scripted: u64,
    /// Messages a client machine took (each has a sequence number).
    pub sent: u64,
    /// Messages a machine refused at once, saying why (after exit, queue full...).
    pub refused: u64,
    /// Sent messages that reached their addressee (a message to everyone: at least
    /// one of them).
    pub delivered: u64,
    /// Sent messages that did not, and whose sender was told (an error naming it,
    /// named unconfirmed, or reported unreadable by its reader).
    pub reported: u64,
    /// Sent messages that did not, whose sender's machine vanished (nobody is left
    /// to tell).
    pub lost_with_sender: u64,
    /// Sent messages that reached their reader's machine (its sender was told they
    /// were delivered) but were not shown yet when that machine vanished.
    pub lost_with_reader: u64,
    /// Deliveries in all (a message to everyone counts once per reader).
    pub deliveries: u64,
    /// Faults injected (resets, stalls, cuts, vanishings, kills, restarts...).
    pub faults: u64,
    /// Sessions that ended other than normally, by error code (`slow-consumer`,
    /// `idle-timeout`, ...), refusals included.
    pub cut_off: BTreeMap<String, u64>,
}

impl Workload {
    /// Delivered messages as a share of the scripted ones (1.0 for an empty script).
    pub fn delivered_share(&self) -> f64 {
        if self.scripted == 0 {
            1.0
        } else {
            self.delivered as f64 / self.scripted as f64
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "messages: {} scripted, {} sent, {} refused at once, {} delivered ({:.1}%), {} reported to their senders, {} lost with a vanished sender, {} with a vanished reader; {} deliveries",
            self.scripted,
            self.sent,
            self.refused,
            self.delivered,
            100.0 * self.delivered_share(),
            self.reported,
            self.lost_with_sender,
            self.lost_with_reader,
            self.deliveries,
        )?;
        let cut: u64 = self.cut_off.values().sum();
        write!(
            f,
            "; faults injected: {}; sessions ended early: {cut}",
            self.faults
        )?;
        if cut > 0 {
            let why: Vec<String> = self
                .cut_off
                .iter()
                .map(|(code, n)| format!("{n} {code}"))
                .collect();
            write!(f, " ({})", why.join(", "))?;
        }
        Ok(())
    }
}

/// The checker's judgement of a whole run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Every broken rule, in the order found (empty: the run was correct).
    pub violations: Vec<Violation>,
    /// How much of the workload happened.
    pub workload: Workload,
}

/// What the checker keeps of one sent message until the end of the run.
struct Sent {
    at: Timestamp,
    to: Target,
    /// A hash of the text: deliveries are compared with it.
    text: u64,
    deliveries: u32,
}

/// The streaming invariant checker: fed one entry at a time, in the order of the
/// run, it keeps only what judging the rest needs (per message a record of a few
/// words, per pair of clients the last sequence number seen, per client its
/// identity), so a run of millions of events is judged without its transcript.
pub struct Checker {
    info: RunInfo,
    v: Vec<Violation>,
    last_at: Timestamp,
    faulted: BTreeSet<usize>,
    vanished: BTreeSet<usize>,
    finished: BTreeSet<usize>,
    connected: BTreeSet<usize>,
    exit_at: FxHashMap<usize, Timestamp>,
    // IDs by epoch (a restarted relay numbers from 0 again).
    id_node: FxHashMap<(u32, ClientId), usize>,
    node_id: FxHashMap<usize, ClientId>,
    node_epoch: FxHashMap<usize, u32>,
    admitted_at: FxHashMap<(u32, ClientId), Timestamp>,
    left_at: FxHashMap<(u32, ClientId), Timestamp>,
    sent: FxHashMap<(usize, u64), Sent>,
    /// Refused clients, when first refused; those the relay crashed after refusing.
    refused: BTreeMap<usize, Timestamp>,
    crashed_after_refusal: BTreeSet<usize>,
    told_refusal: BTreeSet<usize>,
    unconfirmed: FxHashSet<(usize, u64)>,
    online: u32,
    last_id: Option<ClientId>,
    epoch: u32,
    /// (reader, sender, seq) of every delivery, and the last seq per (reader, sender).
    delivered: FxHashSet<(usize, usize, u64)>,
    last_seq: FxHashMap<(usize, usize), u64>,
    errors: FxHashMap<(usize, u64), (Timestamp, ErrorCode)>,
    /// Failures reported about one recipient: (sender, seq, the recipient's ID).
    failed_for: FxHashSet<(usize, u64, ClientId)>,
    /// Messages their reader could not open, and said so: (reader, sender, seq).
    unreadable: FxHashSet<(usize, usize, u64)>,
    /// Messages a reader's machine held, received but not shown, when it vanished:
    /// (reader, sender, seq).
    held_gone: FxHashSet<(usize, usize, u64)>,
    files: FileLog,
    end: Option<(Vec<usize>, usize, usize)>,
    work: Workload,
}

/// Checks every invariant of a transcript kept whole; an empty list means the run
/// was correct (the workload figures are left out: see [`Checker`]).
pub fn check(t: &Transcript) -> Vec<Violation> {
    judge(t).violations
}

/// Checks a transcript kept whole: the violations and the workload figures.
pub fn judge(t: &Transcript) -> Verdict {
    let mut checker = Checker::new(t.info());
    for e in &t.entries {
        checker.observe(e);
    }
    checker.finish()
}

/// A 64-bit FNV-1a hash: enough to tell an altered text from the one sent.
fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

impl Checker {
    /// A checker for a run described by `info`.
    pub fn new(info: RunInfo) -> Self {
        let work = Workload {
            scripted: info.scripted,
            ..Workload::default()
        };
        Checker {
            info,
            v: Vec::new(),
            last_at: Timestamp::ZERO,
            faulted: BTreeSet::new(),
            vanished: BTreeSet::new(),
            finished: BTreeSet::new(),
            connected: BTreeSet::new(),
            exit_at: FxHashMap::default(),
            id_node: FxHashMap::default(),
            node_id: FxHashMap::default(),
            node_epoch: FxHashMap::default(),
            admitted_at: FxHashMap::default(),
            left_at: FxHashMap::default(),
            sent: FxHashMap::default(),
            refused: BTreeMap::new(),
            crashed_after_refusal: BTreeSet::new(),
            told_refusal: BTreeSet::new(),
            unconfirmed: FxHashSet::default(),
            online: 0,
            last_id: None,
            epoch: 0,
            delivered: FxHashSet::default(),
            last_seq: FxHashMap::default(),
            errors: FxHashMap::default(),
            failed_for: FxHashSet::default(),
            unreadable: FxHashSet::default(),
            held_gone: FxHashSet::default(),
            files: FileLog::default(),
            end: None,
            work,
        }
    }

    fn push(&mut self, rule: &'static str, at: Timestamp, detail: String) {
        self.v.push(violation(rule, at, detail));
    }

    /// The sender of `seq` delivered to `client` as coming from relay ID `from`.
    fn node_named(&self, client: usize, from: ClientId) -> Option<usize> {
        self.node_epoch
            .get(&client)
            .and_then(|&ep| self.id_node.get(&(ep, from)))
            .copied()
    }

    /// Takes the next entry of the run.
    pub fn observe(&mut self, e: &Entry) {
        self.last_at = e.at;
        self.files.observe(e);
        match &e.record {
            Record::Connect { client } => {
                self.connected.insert(*client);
            }
            Record::Fault { client, what } => {
                self.work.faults += 1;
                self.faulted.insert(*client);
                if what == "vanishes" {
                    self.vanished.insert(*client);
                }
            }
            Record::ServerDown => {
                self.work.faults += 1;
                self.epoch += 1;
                self.online = 0;
                self.last_id = None;
                let refused: Vec<usize> = self.refused.keys().copied().collect();
                self.crashed_after_refusal.extend(refused);
            }
            Record::Unconfirmed { client, seqs } => {
                self.unconfirmed.extend(seqs.iter().map(|&s| (*client, s)));
            }
            Record::ServerAdmitted { client, id } => self.admitted(e.at, *client, *id),
            Record::ServerLeft { id, .. } => {
                self.online = self.online.saturating_sub(1);
                self.left_at.insert((self.epoch, *id), e.at);
            }
            Record::ServerRefused { client, code } => {
                self.refused.entry(*client).or_insert(e.at);
                if *code == ErrorCode::ServerFull && self.online < self.info.max_clients {
                    let detail = format!(
                        "c{client} refused as full with {} of {} online",
                        self.online, self.info.max_clients
                    );
                    self.push("refusal-justified", e.at, detail);
                }
            }
            Record::Refused {
                client,
                code,
                reason,
            } => {
                if !reason.is_empty() {
                    self.told_refusal.insert(*client);
                }
                *self.work.cut_off.entry(code.to_string()).or_default() += 1;
            }
            Record::Disconnected {
                client,
                code,
                reason,
            } => {
                // A refused resume ends the session with its reason.
                if *code == ErrorCode::ResumeFailed && !reason.is_empty() {
                    self.told_refusal.insert(*client);
                }
                *self.work.cut_off.entry(code.to_string()).or_default() += 1;
            }
            Record::Welcomed { client, id }
                if self.node_id.get(client).is_some_and(|known| known != id) =>
            {
                let detail = format!("c{client} welcomed as {id}, admitted as another");
                self.push("ids-agree", e.at, detail);
            }
            Record::Finished { client } => {
                self.finished.insert(*client);
            }
            Record::SaidExit { client } => {
                self.exit_at.entry(*client).or_insert(e.at);
            }
            Record::Sent {
                client,
                to,
                seq,
                text,
            } => {
                self.work.sent += 1;
                if self.exit_at.get(client).is_some_and(|&x| x < e.at) {
                    let detail = format!("c{client} sent seq {seq} after exit");
                    self.push("no-send-after-exit", e.at, detail);
                }
                let sent = Sent {
                    at: e.at,
                    to: *to,
                    text: text_hash(text),
                    deliveries: 0,
                };
                self.sent.insert((*client, *seq), sent);
            }
            Record::SendRefused { .. } => self.work.refused += 1,
            Record::Unreadable {
                client, from, seq, ..
            } => {
                if let Some(sender) = self.node_named(*client, *from) {
                    self.unreadable.insert((*client, sender, *seq));
                }
            }
            Record::HeldWhenGone { client, messages } => {
                for &(from, seq) in messages {
                    if let Some(sender) = self.node_named(*client, from) {
                        self.held_gone.insert((*client, sender, seq));
                    }
                }
            }
            Record::Delivered {
                client,
                from,
                seq,
                text,
                sealed,
                ..
            } => self.delivered(e.at, *client, *from, *seq, text, *sealed),
            Record::ErrorReport {
                client,
                code,
                seq,
                subject,
            } => {
                self.errors.insert((*client, *seq), (e.at, *code));
                if let Some(id) = subject {
                    self.failed_for.insert((*client, *seq, *id));
                }
            }
            Record::End {
                stuck,
                max_queued,
                in_flight,
            } => self.end = Some((stuck.clone(), *max_queued, *in_flight)),
            _ => {}
        }
    }

    fn admitted(&mut self, at: Timestamp, client: usize, id: ClientId) {
        if let Some(last) = self.last_id.filter(|&last| id <= last) {
            self.push("ids-increase", at, format!("{id} admitted after {last}"));
        }
        self.last_id = Some(id);
        if self.id_node.insert((self.epoch, id), client).is_some() {
            self.push("ids-unique", at, format!("{id} assigned twice"));
        }
        self.node_id.insert(client, id);
        self.node_epoch.insert(client, self.epoch);
        self.admitted_at.insert((self.epoch, id), at);
        self.online += 1;
        if self.online > self.info.max_clients {
            let detail = format!(
                "{} clients admitted, limit {}",
                self.online, self.info.max_clients
            );
            self.push("limit", at, detail);
        }
    }

    /// A delivery matches a send, goes to its addressee, once, in order.
    fn delivered(
        &mut self,
        at: Timestamp,
        client: usize,
        from: Option<ClientId>,
        seq: u64,
        text: &str,
        sealed: bool,
    ) {
        self.work.deliveries += 1;
        if self.info.encrypted && from.is_some() && !sealed {
            let detail = format!("c{client} got seq {seq} from {from:?} not sealed end to end");
            self.push("end-to-end", at, detail);
        }
        let sender = match from {
            Some(fid) => match self.node_named(client, fid) {
                Some(s) => s,
                None => {
                    let detail = format!("c{client} got seq {seq} from unknown {fid}");
                    self.push("no-invention", at, detail);
                    return;
                }
            },
            None => 1 - client.min(1),
        };
        let own_id = self.node_id.get(&client).copied();
        let Some(s) = self.sent.get_mut(&(sender, seq)) else {
            let detail = format!("c{client} got seq {seq} from c{sender}, which never sent it");
            self.push("no-invention", at, detail);
            return;
        };
        s.deliveries += 1;
        let (to, intact) = (s.to, s.text == text_hash(text));
        if !intact {
            let detail = format!("c{client} got altered text for c{sender} seq {seq}");
            self.push("intact", at, detail);
        }
        let addressed = match to {
            Target::Id(id) => own_id == Some(ClientId(id)),
            Target::All => client != sender,
            Target::Peer => true,
        };
        if !addressed {
            let detail = format!("c{client} got c{sender} seq {seq}, which was for {to:?}");
            self.push("addressee-only", at, detail);
        }
        if !self.delivered.insert((client, sender, seq)) {
            let detail = format!("c{client} got c{sender} seq {seq} twice");
            self.push("exactly-once", at, detail);
        }
        let last = self.last_seq.entry((client, sender)).or_insert(0);
        let before = *last;
        *last = before.max(seq);
        if seq <= before {
            let detail = format!("c{client} got c{sender} seq {seq} after seq {before}");
            self.push("per-sender-order", at, detail);
        }
    }

    fn healthy(&self, n: usize) -> bool {
        !self.vanished.contains(&n) && self.finished.contains(&n)
    }

    /// Judges what could only be judged at the end; the verdict.
    pub fn finish(mut self) -> Verdict {
        let end_at = self.last_at;
        self.judge_refusals(end_at);
        self.judge_outcomes();
        let files = std::mem::take(&mut self.files);
        let mut found = Vec::new();
        files.judge(&self, end_at, &mut found);
        self.v.extend(found);
        self.judge_end(end_at);
        let w = &self.work;
        if w.scripted >= COLLAPSE_MIN_MESSAGES
            && (w.sent * 2 < w.scripted || w.delivered * 4 < w.scripted)
        {
            let detail = format!(
                "most of the workload never happened: {w}. A run that exercised this little proves little; its faults or sizes are out of proportion"
            );
            self.push("workload-collapsed", end_at, detail);
        }
        Verdict {
            violations: self.v,
            workload: self.work,
        }
    }

    /// Refused clients were told why (unless the relay crashed before the refusal
    /// could get out, or a fault cut the client off).
    fn judge_refusals(&mut self, end_at: Timestamp) {
        let untold: Vec<usize> = self
            .refused
            .keys()
            .copied()
            .filter(|c| {
                !self.told_refusal.contains(c)
                    && !self.faulted.contains(c)
                    && !self.crashed_after_refusal.contains(c)
            })
            .collect();
        for client in untold {
            let detail = format!("c{client} was refused without a reason");
            self.push("refusal-reason", end_at, detail);
        }
    }

    /// Every message has its outcome. For broadcasts, the healthy clients and their
    /// admission times are listed once, not looked up per message.
    fn judge_outcomes(&mut self) {
        let healthy_admitted: Vec<(usize, u32, ClientId, Timestamp)> = self
            .connected
            .iter()
            .filter(|&&k| self.healthy(k))
            .filter_map(|&k| {
                let ep = *self.node_epoch.get(&k)?;
                let id = *self.node_id.get(&k)?;
                Some((k, ep, id, *self.admitted_at.get(&(ep, id))?))
            })
            .collect();
        let mut keys: Vec<(usize, u64)> = self.sent.keys().copied().collect();
        keys.sort_unstable();
        let mut found = Vec::new();
        for (sender, seq) in keys {
            let Some(s) = self.sent.get(&(sender, seq)) else {
                continue;
            };
            let error = self.errors.get(&(sender, seq)).copied();
            let named = self.unconfirmed.contains(&(sender, seq));
            let epoch = self.node_epoch.get(&sender).copied();
            let mut reported = error.is_some() || named;
            match s.to {
                Target::Peer => {
                    let other = 1 - sender.min(1);
                    if !self.vanished.contains(&sender)
                        && !self.delivered.contains(&(other, sender, seq))
                    {
                        if self.healthy(sender) && self.healthy(other) {
                            let what = format!("c{sender} seq {seq} never reached c{other}");
                            found.push(violation("exactly-once", s.at, what));
                        } else if !reported {
                            let what = format!(
                                "c{sender} seq {seq} neither reached c{other} nor was reported to c{sender}"
                            );
                            found.push(violation("no-silent-loss", s.at, what));
                        }
                    }
                }
                Target::Id(j) => {
                    let j = ClientId(j);
                    let target = epoch.and_then(|ep| self.id_node.get(&(ep, j)).copied());
                    let got = target.is_some_and(|k| self.delivered.contains(&(k, sender, seq)));
                    let unread =
                        target.is_some_and(|k| self.unreadable.contains(&(k, sender, seq)));
                    reported |= unread;
                    // It reached its reader's machine, which vanished before showing
                    // it: its sender was rightly told it was delivered.
                    let gone = target.is_some_and(|k| self.held_gone.contains(&(k, sender, seq)));
                    if let Some((err_at, code)) = error {
                        // "Undelivered" may follow a delivery whose acknowledgement was
                        // lost with its reader's session: it says "may not have".
                        if got && code != ErrorCode::Undelivered {
                            let what =
                                format!("c{sender} seq {seq} delivered and refused ({code})");
                            found.push(violation("one-outcome", err_at, what));
                        }
                        if code == ErrorCode::UnknownRecipient
                            && let Some(ep) = epoch
                        {
                            let online_throughout =
                                self.admitted_at.get(&(ep, j)).is_some_and(|&a| a <= s.at)
                                    && self.left_at.get(&(ep, j)).is_none_or(|&l| l >= err_at);
                            if online_throughout {
                                let what =
                                    format!("c{sender} seq {seq}: {j} was online the whole time");
                                found.push(violation("unknown-recipient-justified", err_at, what));
                            }
                        }
                    }
                    if !self.vanished.contains(&sender) && !got && error.is_none() && !gone {
                        if self.healthy(sender) && target.is_none_or(|k| self.healthy(k)) {
                            let what = match target {
                                Some(k) => format!("c{sender} seq {seq} to {j} never reached c{k}"),
                                None => format!(
                                    "c{sender} seq {seq} to {j} (never online) got no error"
                                ),
                            };
                            found.push(violation("exactly-once", s.at, what));
                        } else if !named && !unread {
                            let what = format!(
                                "c{sender} seq {seq} to {j} neither arrived nor was reported to c{sender}"
                            );
                            found.push(violation("no-silent-loss", s.at, what));
                        }
                    }
                }
                Target::All => {
                    let no_one = error.is_some_and(|(_, code)| code == ErrorCode::NoRecipients);
                    for &(k, ep, id, admitted) in &healthy_admitted {
                        if no_one
                            || self.vanished.contains(&sender)
                            || k == sender
                            || Some(ep) != epoch
                            || admitted > s.at
                            || self.delivered.contains(&(k, sender, seq))
                        {
                            continue;
                        }
                        let unread = self.unreadable.contains(&(k, sender, seq));
                        reported |= unread;
                        if self.healthy(sender) && !unread {
                            let what = format!("c{sender} seq {seq} missed c{k}");
                            found.push(violation("broadcast-reaches-all", s.at, what));
                        } else if !named && !self.failed_for.contains(&(sender, seq, id)) && !unread
                        {
                            let what = format!(
                                "c{sender} seq {seq} to everyone missed c{k}, and c{sender} was not told"
                            );
                            found.push(violation("no-silent-loss", s.at, what));
                        }
                    }
                }
            }
            if s.deliveries > 0 {
                self.work.delivered += 1;
            } else if reported {
                self.work.reported += 1;
            } else if self.vanished.contains(&sender) {
                self.work.lost_with_sender += 1;
            } else {
                self.work.lost_with_reader += 1;
            }
        }
        self.v.extend(found);
    }

    /// The end: nothing stuck, nothing left in flight, queues within their bound.
    fn judge_end(&mut self, end_at: Timestamp) {
        let Some((stuck, max_queued, in_flight)) = self.end.take() else {
            self.push(
                "quiescence",
                end_at,
                "the transcript has no end record".into(),
            );
            return;
        };
        if !stuck.is_empty() {
            let detail = format!("clients still running at the end: {stuck:?}");
            self.push("quiescence", end_at, detail);
        }
        if in_flight > 0 {
            self.push(
                "quiescence",
                end_at,
                format!("{in_flight} bytes still in flight"),
            );
        }
        if max_queued > self.info.max_outbound_bytes + CLOSE_SLACK {
            let detail = format!(
                "{max_queued} bytes queued for one connection, bound {}",
                self.info.max_outbound_bytes
            );
            self.push("bounded-queues", end_at, detail);
        }
    }
}

fn violation(rule: &'static str, at: Timestamp, detail: String) -> Violation {
    Violation { rule, at, detail }
}

/// Files: every transfer ends delivered intact or failed, and both sides learn it.
/// Transfers are few, so their records are kept as they come and judged at the end.
#[derive(Default)]
struct FileLog {
    /// (sender, transfer, addressee's relay ID, when).
    offered: Vec<(usize, u32, Option<ClientId>, Timestamp)>,
    /// (receiver, the sender's ID as the receiver names it, transfer).
    seen: Vec<(usize, Option<ClientId>, u32)>,
    /// (receiver, sender's ID, transfer, intact, when).
    received: Vec<(usize, Option<ClientId>, u32, bool, Timestamp)>,
    delivered: BTreeSet<(usize, u32)>,
    failed_out: BTreeSet<(usize, u32)>,
    /// (receiver, sender's ID, transfer).
    failed_in: Vec<(usize, Option<ClientId>, u32)>,
}

impl FileLog {
    fn observe(&mut self, e: &Entry) {
        match &e.record {
            Record::FileOffered {
                client,
                transfer,
                to,
                ..
            } => self.offered.push((*client, *transfer, *to, e.at)),
            Record::FileSeen {
                client,
                from,
                transfer,
            } => self.seen.push((*client, *from, *transfer)),
            Record::FileReceived {
                client,
                from,
                transfer,
                intact,
            } => self
                .received
                .push((*client, *from, *transfer, *intact, e.at)),
            Record::FileDelivered { client, transfer } => {
                self.delivered.insert((*client, *transfer));
            }
            Record::FileFailed {
                client,
                peer,
                transfer,
                outgoing,
                ..
            } => {
                if *outgoing {
                    self.failed_out.insert((*client, *transfer));
                } else {
                    self.failed_in.push((*client, *peer, *transfer));
                }
            }
            _ => {}
        }
    }

    fn judge(self, c: &Checker, end_at: Timestamp, v: &mut Vec<Violation>) {
        // The receiver of an offer, as a node; the sender of a received file, as a
        // node (relay IDs are read in the epoch of the client that names them).
        let node_of = |id: &Option<ClientId>, me: usize| match id {
            Some(id) => c.node_named(me, *id),
            None => Some(1 - me.min(1)),
        };
        let seen: BTreeSet<(usize, usize, u32)> = self
            .seen
            .iter()
            .filter_map(|(r, from, t)| Some((*r, node_of(from, *r)?, *t)))
            .collect();
        let failed_in: BTreeSet<(usize, usize, u32)> = self
            .failed_in
            .iter()
            .filter_map(|(r, from, t)| Some((*r, node_of(from, *r)?, *t)))
            .collect();
        let mut received: BTreeMap<(usize, usize, u32), bool> = BTreeMap::new();
        for &(client, from, transfer, intact, at) in &self.received {
            let Some(s) = node_of(&from, client) else {
                continue;
            };
            received.insert((client, s, transfer), intact);
            if !intact && c.healthy(s) && c.healthy(client) {
                v.push(violation(
                    "file-intact",
                    at,
                    format!("c{client} got file #{transfer} from c{s} corrupted"),
                ));
            }
        }
        for (s, transfer, to, at) in self.offered {
            let r = node_of(&to, s);
            let ok = self.delivered.contains(&(s, transfer));
            let failed = self.failed_out.contains(&(s, transfer));
            if ok && failed {
                v.push(violation(
                    "file-one-outcome",
                    at,
                    format!("c{s} file #{transfer} both delivered and failed"),
                ));
            }
            if !ok && !failed && c.healthy(s) {
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
            if failed && seen.contains(&(r, s, transfer)) && c.healthy(r) && !receiver_knows {
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
}
