//! A relay's node in the cluster: carries the core's [`ClusterRequest`]s out on NATS
//! and turns what NATS delivers into [`ClusterInput`]s (docs/SCALING.md).
//!
//! - `Admit`: the cluster's admission counter ([`crate::admission`]).
//! - `Announce`, `Update`, `Withdraw`: the client's entry on its subject of the
//!   roster stream (`P2PCHAT_ROSTER_C`, one message kept per subject), which every
//!   relay reads from the start (the last entry of each client) and then as it
//!   grows; a withdrawal is a tombstone entry, and frees the client's place.
//! - `Forward`: the client's mailbox ([`crate::mailbox`]); each relay reads the
//!   mailboxes of its own clients; `MailRead` acknowledges the letters a client read
//!   (not those merely handed to the core: a relay that dies with letters its
//!   client has not read leaves them for the relay the client resumes on).
//! - `Broadcast`: the broadcast stream (`P2PCHAT_ALL_C`), read by every relay from
//!   when it started, skipping its own.
//!
//! Order: requests are carried out one at a time, in the order the core made them,
//! so one sender's messages reach the bus in order, and a stream keeps that order.

use std::collections::HashMap;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_nats::jetstream::consumer;
use bytes::Bytes;
use p2pchat_core::{
    Admission, ClientId, ClusterInput, ClusterRequest, ErrorCode, Frame, RosterEntry,
};

use crate::admission::{Admission as Counter, Admitted};
use crate::bus::{Bus, BusError};
use crate::mailbox::Mail;

/// How a relay takes part in its cluster.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The cluster's name (relays with the same name and NATS are one cluster):
    /// letters, digits, `-` and `_`.
    pub cluster: String,
    /// This relay's name, unique in the cluster (its own broadcasts are skipped).
    pub relay: String,
    /// The cluster-wide client limit.
    pub max_clients: u32,
    /// How long mail waits in a mailbox (the resume grace).
    pub keep: Duration,
}

/// Whether `name` can name a cluster (it is part of NATS subjects and stream
/// names).
pub fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How often a relay says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a relay may be silent before the others take it for dead.
const DEAD_AFTER: Duration = Duration::from_secs(5);

/// Which relay each client of the cluster is on, and when each relay was last
/// heard: what lets the others take a dead relay's clients off the roster.
#[derive(Clone, Default)]
struct Liveness(std::sync::Arc<std::sync::Mutex<LivenessState>>);

#[derive(Default)]
struct LivenessState {
    homes: HashMap<ClientId, String>,
    /// The stream sequence of each client's latest roster entry seen: what a
    /// relay's next change to the entry must still find there (compare-and-set).
    entry_seqs: HashMap<ClientId, u64>,
    heard: HashMap<String, std::time::Instant>,
}

impl Liveness {
    fn state(&self) -> std::sync::MutexGuard<'_, LivenessState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Client `id` is on `relay` now; where it was before. A relay first heard of
    /// through the roster is watched from then on, even once no client is on it.
    fn home(&self, id: ClientId, relay: String) -> Option<String> {
        let mut state = self.state();
        state
            .heard
            .entry(relay.clone())
            .or_insert_with(std::time::Instant::now);
        state.homes.insert(id, relay)
    }

    fn gone(&self, id: ClientId) {
        self.state().homes.remove(&id);
    }

    /// Client `id`'s latest roster entry is at `sequence` of the roster stream.
    fn entry_stored(&self, id: ClientId, sequence: u64) {
        let mut state = self.state();
        let seq = state.entry_seqs.entry(id).or_default();
        *seq = (*seq).max(sequence);
    }

    /// Where client `id`'s latest entry is, if it is `me`'s to change: `None` when
    /// another relay holds the client now (this relay's change would be stale).
    fn ours(&self, id: ClientId, me: &str) -> Option<Option<u64>> {
        let state = self.state();
        match state.homes.get(&id) {
            Some(relay) if relay != me => None,
            _ => Some(state.entry_seqs.get(&id).copied()),
        }
    }

    fn heard(&self, relay: &str) {
        self.state()
            .heard
            .insert(relay.to_owned(), std::time::Instant::now());
    }

    /// Relays silent for `DEAD_AFTER` (heard of through the roster, never or long
    /// ago through heartbeats, counting from `since` at the latest), with their
    /// clients, forgotten here; and whether `me` comes first among the relays alive
    /// (it then cleans up for the cluster).
    fn take_dead(
        &self,
        me: &str,
        since: std::time::Instant,
    ) -> (Vec<(String, Vec<ClientId>)>, bool) {
        let now = std::time::Instant::now();
        let mut state = self.state();
        let alive = |relay: &str, state: &LivenessState| {
            relay == me
                || state.heard.get(relay).copied().unwrap_or(since).max(since) + DEAD_AFTER > now
        };
        let mut dead: HashMap<String, Vec<ClientId>> = HashMap::new();
        for (id, relay) in &state.homes {
            if !alive(relay, &state) {
                dead.entry(relay.clone()).or_default().push(*id);
            }
        }
        // A relay whose clients all moved away is dead all the same (and said once).
        let silent: Vec<String> = state
            .heard
            .keys()
            .filter(|r| !alive(r, &state))
            .cloned()
            .collect();
        for relay in silent {
            state.heard.remove(&relay);
            dead.entry(relay).or_default();
        }
        for ids in dead.values() {
            for id in ids {
                state.homes.remove(id);
            }
        }
        let first = state
            .heard
            .iter()
            .filter(|(r, at)| **at + DEAD_AFTER > now && r.as_str() != me)
            .all(|(r, _)| r.as_str() > me);
        let mut dead: Vec<_> = dead.into_iter().collect();
        dead.sort();
        (dead, first)
    }
}

/// A relay's node, joined to its cluster and ready to carry requests out.
pub struct Node {
    bus: Bus,
    options: NodeOptions,
    counter: Counter,
    mail: Mail,
    inputs: Sender<ClusterInput>,
    liveness: Liveness,
    /// Heartbeats out, heartbeats in, and the watch for dead relays.
    _tasks: Vec<smol::Task<()>>,
}

/// Joins the cluster: opens (creating them if this is the first relay) its counter
/// and streams, and starts following the roster (what is there already arrives as
/// inputs first) and the broadcasts.
pub async fn start(
    bus: Bus,
    options: NodeOptions,
    inputs: Sender<ClusterInput>,
) -> Result<Node, BusError> {
    let c = options.cluster.clone();
    let counter = Counter::open(&bus, &c).await?;
    let mail = Mail::open(&bus, &c, options.keep).await?;
    let roster = format!("P2PCHAT_ROSTER_{c}");
    bus.open_stream(
        roster,
        format!("p2pchat.{c}.roster.*"),
        Duration::ZERO,
        true,
    )
    .await?;
    let all = format!("P2PCHAT_ALL_{c}");
    bus.open_stream(all, format!("p2pchat.{c}.all"), options.keep, false)
        .await?;
    let receipts = format!("P2PCHAT_RECEIPTS_{c}");
    let subject = format!("p2pchat.{c}.receipt");
    bus.open_stream(receipts.clone(), subject, options.keep, false)
        .await?;
    follow(
        &bus,
        receipts,
        format!("p2pchat.{c}.receipt"),
        consumer::DeliverPolicy::New,
        |_, payload, _| receipt_inputs(payload),
        inputs.clone(),
    )
    .await?;
    let liveness = Liveness::default();
    watch_roster(&bus, &c, &options.relay, liveness.clone(), inputs.clone()).await?;
    watch_broadcasts(&bus, &c, &options.relay, inputs.clone()).await?;
    let heartbeats = bus.subscribe(format!("p2pchat.{c}.alive.*")).await?;
    let listening = {
        let liveness = liveness.clone();
        smol::spawn(async move {
            while let Ok(beat) = heartbeats.recv().await {
                if let Some(relay) = beat.subject.rsplit('.').next() {
                    liveness.heard(relay);
                }
            }
        })
    };
    let beating = {
        let (bus, subject) = (bus.clone(), format!("p2pchat.{c}.alive.{}", options.relay));
        smol::spawn(async move {
            loop {
                let _ = bus.publish(subject.clone(), Bytes::new()).await;
                smol::Timer::after(HEARTBEAT).await;
            }
        })
    };
    let watching = smol::spawn(watch_for_dead(
        bus.clone(),
        options.clone(),
        counter.clone(),
        liveness.clone(),
        inputs.clone(),
    ));
    Ok(Node {
        bus,
        options,
        counter,
        mail,
        inputs,
        liveness,
        _tasks: vec![listening, beating, watching],
    })
}

/// Every heartbeat, looks for relays gone silent: their clients leave the roster
/// here at once (`connection-lost`), and the first relay alive also removes them
/// from the cluster's roster and frees their places.
async fn watch_for_dead(
    bus: Bus,
    options: NodeOptions,
    counter: Counter,
    liveness: Liveness,
    inputs: Sender<ClusterInput>,
) {
    let since = std::time::Instant::now();
    let c = &options.cluster;
    loop {
        smol::Timer::after(HEARTBEAT).await;
        let (dead, first) = liveness.take_dead(&options.relay, since);
        for (relay, ids) in dead {
            eprintln!(
                "p2pchat server: relay {relay} of the cluster is silent (over {} s), taken for dead: {} client(s) still on it are gone",
                DEAD_AFTER.as_secs(),
                ids.len()
            );
            for id in ids {
                let code = ErrorCode::ConnectionLost;
                if inputs.send(ClusterInput::Left { id, code }).await.is_err() {
                    return;
                }
                if first {
                    let mut tombstone = vec![b'L'];
                    tombstone.extend_from_slice(&code.to_u16().to_be_bytes());
                    let subject = format!("p2pchat.{c}.roster.{}", id.0);
                    let once = format!("dead-{relay}-{}", id.0);
                    if store(&bus, subject, tombstone, once, options.keep).await {
                        let _ = counter.release().await;
                    }
                }
            }
        }
    }
}

impl Node {
    /// Carries requests out, in the core's order, until `requests` closes: an
    /// admission the bus cannot decide in time is answered `Unavailable`; a store is
    /// tried again while NATS is away, for as long as a session is held.
    pub async fn serve(self, requests: Receiver<ClusterRequest>) {
        let Node {
            bus,
            options,
            counter,
            mail,
            inputs,
            liveness,
            _tasks,
        } = self;
        let c = options.cluster.clone();
        // Our clients' mailboxes, each read by a task of its own.
        let mut readers: HashMap<ClientId, (smol::Task<()>, Sender<u64>)> = HashMap::new();
        // Each store's ID: this relay's name and a count (JetStream drops a repeat).
        let mut stores = 0u64;
        let mut next_id = || {
            stores += 1;
            format!("{}-{stores}", options.relay)
        };
        // While NATS is away, a store is tried again for as long as a session is
        // held: what a relay took from its clients waits in its queue meanwhile.
        let within = options.keep;
        // Admissions have a lane of their own, in order: a newcomer is answered
        // (admitted, or told the bus is unreachable) even while stores wait for NATS.
        let (admit_tx, admits) = async_channel::unbounded::<p2pchat_core::ConnId>();
        let admitting = {
            let (counter, inputs, max) = (counter.clone(), inputs.clone(), options.max_clients);
            smol::spawn(async move {
                while let Ok(conn) = admits.recv().await {
                    // Well within the newcomer's handshake deadline: an answer that
                    // cannot come in time is "unreachable", said while it listens.
                    let decided =
                        smol::future::or(async { Some(counter.admit(max).await) }, async {
                            smol::Timer::after(ADMISSION_WITHIN).await;
                            None
                        })
                        .await;
                    let admission = match decided {
                        Some(Ok(Admitted::Id(id))) => Admission::Id(ClientId(id)),
                        Some(Ok(Admitted::Full { online, limit })) => {
                            Admission::Full { online, limit }
                        }
                        Some(Err(e)) => Admission::Unavailable(e.to_string()),
                        None => Admission::Unavailable(format!(
                            "no answer from NATS within {} s",
                            ADMISSION_WITHIN.as_secs()
                        )),
                    };
                    let _ = inputs
                        .send(ClusterInput::Admission { conn, admission })
                        .await;
                }
            })
        };
        // Requests are sorted as they come: admissions to their lane at once, the
        // rest, in order, to the stores below (which may wait for NATS).
        let (work_tx, work) = async_channel::unbounded::<ClusterRequest>();
        let sorting = smol::spawn(async move {
            while let Ok(request) = requests.recv().await {
                let sent = match request {
                    ClusterRequest::Admit { conn } => admit_tx.send(conn).await.is_ok(),
                    other => work_tx.send(other).await.is_ok(),
                };
                if !sent {
                    break;
                }
            }
        });
        // A request taken early (it ended a run of forwards), handled next.
        let mut next: Option<ClusterRequest> = None;
        // Receipts are gathered and stored together every RECEIPT_LINGER, beside
        // everything else (their order does not matter: each settles what it names).
        let (receipt_tx, receipt_rx) = async_channel::unbounded::<Vec<u8>>();
        let receipting = {
            let (bus, subject, relay) = (
                bus.clone(),
                format!("p2pchat.{c}.receipt"),
                options.relay.clone(),
            );
            smol::spawn(async move {
                let mut round = 0u64;
                while let Ok(first) = receipt_rx.recv().await {
                    smol::Timer::after(RECEIPT_LINGER).await;
                    let mut payload = first;
                    while payload.len() < MAX_STORE
                        && let Ok(more) = receipt_rx.try_recv()
                    {
                        payload.extend_from_slice(&more);
                    }
                    round += 1;
                    store(
                        &bus,
                        subject.clone(),
                        payload,
                        format!("{relay}-r{round}"),
                        within,
                    )
                    .await;
                }
            })
        };
        loop {
            let request = match next.take() {
                Some(r) => r,
                None => match work.recv().await {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            match request {
                ClusterRequest::Admit { .. } => {}
                ClusterRequest::Announce(ref entry) | ClusterRequest::Adopt(ref entry) => {
                    // A client that moved here (`Adopt`): its entry names this relay
                    // now (its old relay, if alive, lets it go), and its mailbox is
                    // read from its first unread letter at once.
                    let take_over = matches!(request, ClusterRequest::Adopt(_));
                    let id = entry.id;
                    let entry = entry.clone();
                    let stored =
                        publish_entry(&bus, &c, &options.relay, entry, next_id(), within, None)
                            .await;
                    if let Stored::At(sequence) = stored {
                        liveness.home(id, options.relay.clone());
                        liveness.entry_stored(id, sequence);
                    }
                    let (read_tx, read_rx) = async_channel::unbounded();
                    let reader = read_mailbox(mail.clone(), id, take_over, inputs.clone(), read_rx);
                    readers.insert(id, (smol::spawn(reader), read_tx));
                }
                // A change to an entry is made only if the entry is still the one
                // this relay last saw: a relay that was cut off from the bus while
                // its client moved to another must not overwrite the new entry.
                ClusterRequest::Update(entry) => {
                    let id = entry.id;
                    if let Some(expected) = liveness.ours(id, &options.relay) {
                        let stored = publish_entry(
                            &bus,
                            &c,
                            &options.relay,
                            entry,
                            next_id(),
                            within,
                            Some(expected),
                        )
                        .await;
                        if let Stored::At(sequence) = stored {
                            liveness.entry_stored(id, sequence);
                        }
                    }
                }
                ClusterRequest::Withdraw { id, code } => {
                    readers.remove(&id);
                    let Some(expected) = liveness.ours(id, &options.relay) else {
                        // It lives on another relay now: its place is not ours to free.
                        continue;
                    };
                    let mut tombstone = vec![b'L'];
                    tombstone.extend_from_slice(&code.to_u16().to_be_bytes());
                    let subject = format!("p2pchat.{c}.roster.{}", id.0);
                    let stored =
                        store_if(&bus, subject, tombstone, next_id(), within, Some(expected)).await;
                    if !matches!(stored, Stored::Stale) {
                        liveness.gone(id);
                        let _ = counter.release().await;
                    }
                }
                ClusterRequest::Forward { to, frames } => {
                    // The forwards waiting right behind it go in the same round: one
                    // store per mailbox (their frames back to back, in order), the
                    // mailboxes stored side by side. A mailbox's stores never overlap,
                    // so what one sender sends one reader stays in order.
                    let mut mailboxes: Vec<(ClientId, Vec<u8>)> = vec![(to, frames)];
                    while mailboxes.len() < MAX_ROUND {
                        match work.try_recv() {
                            Ok(ClusterRequest::Forward { to, frames }) => {
                                match mailboxes.iter_mut().find(|(t, _)| *t == to) {
                                    // Under NATS's message size limit (1 MiB).
                                    Some((_, all)) if all.len() + frames.len() > MAX_STORE => {
                                        next = Some(ClusterRequest::Forward { to, frames });
                                        break;
                                    }
                                    Some((_, all)) => all.extend_from_slice(&frames),
                                    None => mailboxes.push((to, frames)),
                                }
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let stores = mailboxes.into_iter().map(|(to, frames)| {
                        let (bus, subject, id) = (bus.clone(), mail.subject(to.0), next_id());
                        async move {
                            // Tried again while NATS is away.
                            if !store(&bus, subject, frames, id, within).await {
                                eprintln!(
                                    "p2pchat server: messages for client {to} could not be stored in the cluster's bus within {} s; they are lost",
                                    within.as_secs()
                                );
                            }
                        }
                    });
                    let tasks: Vec<_> = stores.map(smol::spawn).collect();
                    for task in tasks {
                        task.await;
                    }
                }
                ClusterRequest::Release { id } => {
                    // It moved to another relay, which reads its mailbox now.
                    readers.remove(&id);
                }
                ClusterRequest::MailRead { to, letter } => {
                    if let Some((_, read)) = readers.get(&to) {
                        let _ = read.try_send(letter);
                    }
                }
                ClusterRequest::Receipt { to, by, seqs } => {
                    let mut record = Vec::with_capacity(12 + 8 * seqs.len());
                    encode_receipt(&mut record, to, by, &seqs);
                    let _ = receipt_tx.send(record).await;
                }
                ClusterRequest::Broadcast { frames } => {
                    let mut payload = options.relay.as_bytes().to_vec();
                    payload.push(0);
                    payload.extend_from_slice(&frames);
                    store(&bus, format!("p2pchat.{c}.all"), payload, next_id(), within).await;
                }
            }
        }
        drop(receipt_tx);
        sorting.await;
        admitting.await;
        receipting.await;
    }
}

/// How long an admission may wait for the bus before the newcomer is told it is
/// unreachable (its handshake deadline is 10 s).
const ADMISSION_WITHIN: Duration = Duration::from_secs(3);

/// Most bytes one store carries (NATS's default limit on a message is 1 MiB; one
/// forward is at most a client's queue bound, 568 KiB).
const MAX_STORE: usize = 600 * 1024;

/// How long receipts are gathered before they are stored together (the relay
/// holds a receipt for its client up to a second anyway, for company).
const RECEIPT_LINGER: Duration = Duration::from_millis(20);

/// Most mailboxes stored side by side in one round.
const MAX_ROUND: usize = 256;

/// Pause between attempts while NATS is away.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Publishes to a stream and waits for JetStream to have it, trying again while NATS
/// is away (a restart, a reconnect) for up to `within`. Each attempt carries the same
/// message ID, so JetStream stores it once even if an earlier attempt's
/// acknowledgement was what got lost. `false` if it never got through.
async fn store(bus: &Bus, subject: String, payload: Vec<u8>, id: String, within: Duration) -> bool {
    matches!(
        store_if(bus, subject, payload, id, within, None).await,
        Stored::At(_)
    )
}

/// What became of a store.
enum Stored {
    /// Stored, at this stream sequence.
    At(u64),
    /// Refused: the subject's last message is not the one expected (another relay
    /// changed the entry since).
    Stale,
    /// Not stored in time (NATS away), or the bus is gone.
    Failed,
}

/// [`store`], and with `expected` only if the subject's last message is still at
/// that stream sequence (`Some(None)`: if the subject has none).
async fn store_if(
    bus: &Bus,
    subject: String,
    payload: Vec<u8>,
    id: String,
    within: Duration,
    expected: Option<Option<u64>>,
) -> Stored {
    let payload = Bytes::from(payload);
    let deadline = std::time::Instant::now() + within;
    loop {
        let (s, p, i) = (subject.clone(), payload.clone(), id.clone());
        let stored = bus
            .call(move |_, js| async move {
                let mut publish = async_nats::jetstream::message::PublishMessage::build()
                    .payload(p)
                    .message_id(i);
                if let Some(last) = expected {
                    publish = publish.expected_last_subject_sequence(last.unwrap_or(0));
                }
                match js.send_publish(s, publish).await {
                    Ok(ack) => match ack.await {
                        Ok(ack) => Stored::At(ack.sequence),
                        Err(e)
                            if e.kind()
                                == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
                        {
                            Stored::Stale
                        }
                        Err(_) => Stored::Failed,
                    },
                    Err(_) => Stored::Failed,
                }
            })
            .await;
        match stored {
            Ok(Stored::Failed) if std::time::Instant::now() < deadline => {
                smol::Timer::after(RETRY_PAUSE).await;
            }
            Ok(done) => return done,
            Err(_) => return Stored::Failed,
        };
    }
}

/// Publishes a client's roster entry (see [`store`]): `J`, the length and name of
/// its relay, and a `Profile` frame.
async fn publish_entry(
    bus: &Bus,
    cluster: &str,
    relay: &str,
    entry: RosterEntry,
    id: String,
    within: Duration,
    expected: Option<Option<u64>>,
) -> Stored {
    let client = entry.id;
    let mut payload = vec![b'J', u8::try_from(relay.len()).unwrap_or(u8::MAX)];
    payload.extend_from_slice(
        relay
            .as_bytes()
            .get(..usize::from(payload[1]))
            .unwrap_or_default(),
    );
    payload.extend_from_slice(&Frame::Profile(entry).to_bytes());
    let subject = format!("p2pchat.{cluster}.roster.{}", client.0);
    store_if(bus, subject, payload, id, within, expected).await
}

/// A roster message: an entry (`J`, its relay's name, a `Profile` frame), with the
/// relay's name; or a tombstone (`L` and the code).
fn roster_input(subject: &str, payload: &[u8]) -> Option<(Option<String>, ClusterInput)> {
    let id = ClientId(subject.rsplit('.').next()?.parse().ok()?);
    match payload.split_first()? {
        (b'J', rest) => {
            let (&len, rest) = rest.split_first()?;
            let relay = std::str::from_utf8(rest.get(..usize::from(len))?).ok()?;
            let frame = rest.get(usize::from(len)..)?;
            let (&ty, body) = frame.get(4..)?.split_first()?;
            match Frame::decode(ty, body).ok()? {
                Frame::Profile(entry) if entry.id == id => {
                    Some((Some(relay.to_owned()), ClusterInput::Roster(entry)))
                }
                _ => None,
            }
        }
        (b'L', code) => {
            let code = u16::from_be_bytes(code.get(..2)?.try_into().ok()?);
            let left = ClusterInput::Left {
                id,
                code: ErrorCode::from_u16(code),
            };
            Some((None, left))
        }
        _ => None,
    }
}

/// Receipts, back to back: each the sender's ID, the reader's ID, how many sequence
/// numbers, and those. Empty if anything in them does not add up.
fn receipt_inputs(mut payload: &[u8]) -> Vec<ClusterInput> {
    let mut inputs = Vec::new();
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    while !payload.is_empty() {
        let (Some(to), Some(by), Some(n)) = (word(payload, 0), word(payload, 4), word(payload, 8))
        else {
            return Vec::new();
        };
        let end = 12 + 8 * n as usize;
        let Some(seqs) = payload.get(12..end) else {
            return Vec::new();
        };
        let seqs = seqs
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
            .collect();
        inputs.push(ClusterInput::Receipt {
            to: ClientId(to),
            by: ClientId(by),
            seqs,
        });
        payload = payload.get(end..).unwrap_or_default();
    }
    inputs
}

/// One receipt, as [`receipt_inputs`] reads it.
fn encode_receipt(out: &mut Vec<u8>, to: ClientId, by: ClientId, seqs: &[u64]) {
    out.extend_from_slice(&to.0.to_be_bytes());
    out.extend_from_slice(&by.0.to_be_bytes());
    out.extend_from_slice(&u32::try_from(seqs.len()).unwrap_or(u32::MAX).to_be_bytes());
    for seq in seqs {
        out.extend_from_slice(&seq.to_be_bytes());
    }
}

/// Reads the roster stream from the start (each client's last entry) and then as
/// it grows, on the NATS thread, until the relay is gone.
async fn watch_roster(
    bus: &Bus,
    cluster: &str,
    me: &str,
    homes: Liveness,
    inputs: Sender<ClusterInput>,
) -> Result<(), BusError> {
    let me = me.to_owned();
    let stream = format!("P2PCHAT_ROSTER_{cluster}");
    let subject = format!("p2pchat.{cluster}.roster.*");
    follow(
        bus,
        stream,
        subject,
        consumer::DeliverPolicy::LastPerSubject,
        move |subject, payload, sequence| {
            let Some((relay, input)) = roster_input(subject, payload) else {
                return Vec::new();
            };
            match (&input, relay) {
                (ClusterInput::Roster(entry), Some(relay)) => {
                    let id = entry.id;
                    let moved = relay != me;
                    homes.entry_stored(id, sequence);
                    if homes.home(id, relay).is_some_and(|before| before == me) && moved {
                        // One of ours resumed its session on another relay.
                        return vec![ClusterInput::MovedAway { id }];
                    }
                }
                (ClusterInput::Left { id, .. }, _) => homes.gone(*id),
                _ => {}
            }
            vec![input]
        },
        inputs,
    )
    .await
}

/// Reads the broadcast stream from now on, skipping this relay's own.
async fn watch_broadcasts(
    bus: &Bus,
    cluster: &str,
    relay: &str,
    inputs: Sender<ClusterInput>,
) -> Result<(), BusError> {
    let stream = format!("P2PCHAT_ALL_{cluster}");
    let subject = format!("p2pchat.{cluster}.all");
    let me = relay.as_bytes().to_vec();
    follow(
        bus,
        stream,
        subject,
        consumer::DeliverPolicy::New,
        move |_, payload, _| {
            let Some(at) = payload.iter().position(|&b| b == 0) else {
                return Vec::new();
            };
            let (from, rest) = payload.split_at(at);
            if from == me.as_slice() {
                return Vec::new();
            }
            vec![ClusterInput::Broadcast {
                frames: rest.get(1..).unwrap_or_default().to_vec(),
            }]
        },
        inputs,
    )
    .await
}

/// Follows a stream with a consumer of this relay's own (no acknowledgements),
/// turning each message into inputs with `read`, until `inputs` closes; after NATS
/// went away, right after the last message seen. Returns once the consumer exists.
async fn follow(
    bus: &Bus,
    stream: String,
    subject: String,
    from: consumer::DeliverPolicy,
    read: impl Fn(&str, &[u8], u64) -> Vec<ClusterInput> + Send + 'static,
    inputs: Sender<ClusterInput>,
) -> Result<(), BusError> {
    let open: crate::pull::Open = Box::new(move |js, next| {
        let (stream, subject) = (stream.clone(), subject.clone());
        let policy = match next {
            Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            None => from,
        };
        Box::pin(async move {
            let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let consumer = stream
                .create_consumer(consumer::pull::Config {
                    deliver_policy: policy,
                    filter_subject: subject,
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        })
    });
    let read = move |m: &async_nats::jetstream::Message| {
        let sequence = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        read(m.subject.as_str(), &m.payload, sequence)
    };
    crate::pull::follow(bus, open, read, inputs).await
}

/// How long a relay waits before it tries again to open a mailbox NATS refused.
const MAILBOX_RETRY: Duration = Duration::from_millis(500);

/// How long a letter handed to a relay may go unacknowledged before JetStream offers
/// it again (a relay skips letters it has already handed over; the relay a session
/// moves to starts from the last acknowledged letter at once).
const LETTER_ACK_WAIT: Duration = Duration::from_secs(30);

/// Reads client `to`'s mailbox and hands each letter to the core; acknowledges
/// letters when the core says the client read them (`read` carries the letter's
/// number), until the task is dropped (the client left) or the relay is gone.
async fn read_mailbox(
    mail: Mail,
    to: ClientId,
    take_over: bool,
    inputs: Sender<ClusterInput>,
    read: Receiver<u64>,
) {
    // NATS may be away right now (restarting): the mailbox is opened as soon as it
    // is back, for as long as the client is ours (this task is dropped when it goes).
    let (reader, letters) = loop {
        if let Ok(reader) = mail.reader(to.0, LETTER_ACK_WAIT, take_over).await
            && let Ok(letters) = reader.letters().await
        {
            break (reader, letters);
        }
        smol::Timer::after(MAILBOX_RETRY).await;
    };
    // Handed over and not yet read, in order.
    let mut unread: std::collections::VecDeque<crate::mailbox::Letter> = Default::default();
    let mut last_handed = 0u64;
    enum Next {
        Letter(crate::mailbox::Letter),
        Read(u64),
        Done,
    }
    loop {
        let next = smol::future::or(
            async { letters.recv().await.map_or(Next::Done, Next::Letter) },
            async { read.recv().await.map_or(Next::Done, Next::Read) },
        )
        .await;
        match next {
            Next::Letter(letter) => {
                // Offered again after the ack wait, while its reader is slow: it is
                // queued already.
                if letter.sequence <= last_handed {
                    continue;
                }
                last_handed = letter.sequence;
                let input = ClusterInput::Mail {
                    to,
                    frames: letter.payload.to_vec(),
                    letter: letter.sequence,
                };
                if inputs.send(input).await.is_err() {
                    return;
                }
                unread.push_back(letter);
            }
            Next::Read(upto) => {
                let mut last = None;
                while unread.front().is_some_and(|l| l.sequence <= upto) {
                    last = unread.pop_front();
                }
                // The consumer acknowledges all up to the one named.
                if let Some(letter) = last {
                    let _ = reader.acknowledge(&letter).await;
                }
            }
            Next::Done => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_messages_read_back_and_odd_ones_are_skipped() {
        let entry = RosterEntry {
            id: ClientId(7),
            exited: false,
            away: false,
            name: "ann".into(),
            key: None,
        };
        let mut joined = vec![b'J', 2];
        joined.extend_from_slice(b"r1");
        joined.extend_from_slice(&Frame::Profile(entry.clone()).to_bytes());
        assert_eq!(
            roster_input("p2pchat.c.roster.7", &joined),
            Some((Some("r1".to_owned()), ClusterInput::Roster(entry)))
        );
        assert_eq!(
            roster_input("p2pchat.c.roster.8", &joined),
            None,
            "wrong subject"
        );
        assert_eq!(
            roster_input("p2pchat.c.roster.7", &[b'L', 0, 0]),
            Some((
                None,
                ClusterInput::Left {
                    id: ClientId(7),
                    code: ErrorCode::Normal
                }
            ))
        );
        assert_eq!(roster_input("p2pchat.c.roster.7", b"Xjunk"), None);
        let mut receipts = Vec::new();
        encode_receipt(&mut receipts, ClientId(3), ClientId(9), &[42, 43]);
        encode_receipt(&mut receipts, ClientId(4), ClientId(9), &[7]);
        assert_eq!(
            receipt_inputs(&receipts),
            [
                ClusterInput::Receipt {
                    to: ClientId(3),
                    by: ClientId(9),
                    seqs: vec![42, 43]
                },
                ClusterInput::Receipt {
                    to: ClientId(4),
                    by: ClientId(9),
                    seqs: vec![7]
                }
            ]
        );
        assert!(receipt_inputs(&receipts[..receipts.len() - 1]).is_empty());
        assert_eq!(roster_input("p2pchat.c.roster.x", &joined), None);
        assert!(valid_cluster_name("p2pchat-1_a"));
        assert!(
            !valid_cluster_name("a.b") && !valid_cluster_name("") && !valid_cluster_name("a b")
        );
    }
}
