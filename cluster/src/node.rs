//! A relay's node in the cluster: carries the core's [`ClusterRequest`]s out on NATS
//! and turns what NATS delivers into [`ClusterInput`]s (docs/SCALING.md).
//!
//! - `Admit`: the cluster's admission counter ([`crate::admission`]).
//! - `Announce`, `Update`, `Withdraw`: the client's entry on its subject of the
//!   roster stream (`P2PCHAT_ROSTER_C`, one message kept per subject), which every
//!   relay reads from the start (the last entry of each client) and then as it
//!   grows; a withdrawal is a tombstone entry, and frees the client's place.
//! - `Forward`: the client's mailbox ([`crate::mailbox`]); each relay reads the
//!   mailboxes of its own clients and acknowledges what it handed to the core.
//! - `Broadcast`: the broadcast stream (`P2PCHAT_ALL_C`), read by every relay from
//!   when it started, skipping its own.
//!
//! Order: requests are carried out one at a time, in the order the core made them,
//! so one sender's messages reach the bus in order, and a stream keeps that order.

use std::collections::HashMap;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_nats::jetstream::{consumer, stream};
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

/// A relay's node, joined to its cluster and ready to carry requests out.
pub struct Node {
    bus: Bus,
    options: NodeOptions,
    counter: Counter,
    mail: Mail,
    inputs: Sender<ClusterInput>,
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
    open_stream(
        &bus,
        roster,
        format!("p2pchat.{c}.roster.*"),
        Duration::ZERO,
        true,
    )
    .await?;
    let all = format!("P2PCHAT_ALL_{c}");
    open_stream(&bus, all, format!("p2pchat.{c}.all"), options.keep, false).await?;
    watch_roster(&bus, &c, inputs.clone()).await?;
    watch_broadcasts(&bus, &c, &options.relay, inputs.clone()).await?;
    Ok(Node {
        bus,
        options,
        counter,
        mail,
        inputs,
    })
}

impl Node {
    /// Carries requests out, one at a time in the core's order, until `requests`
    /// closes. A single operation that fails is answered to the core (an admission
    /// the bus could not decide is `Unavailable`) or retried once.
    pub async fn serve(self, requests: Receiver<ClusterRequest>) {
        let Node {
            bus,
            options,
            counter,
            mail,
            inputs,
        } = self;
        let c = options.cluster.clone();
        // Our clients' mailboxes, each read by a task of its own.
        let mut readers: HashMap<ClientId, smol::Task<()>> = HashMap::new();
        while let Ok(request) = requests.recv().await {
            match request {
                ClusterRequest::Admit { conn } => {
                    let admission = match counter.admit(options.max_clients).await {
                        Ok(Admitted::Id(id)) => Admission::Id(ClientId(id)),
                        Ok(Admitted::Full { online, limit }) => Admission::Full { online, limit },
                        Err(e) => Admission::Unavailable(e.to_string()),
                    };
                    let _ = inputs
                        .send(ClusterInput::Admission { conn, admission })
                        .await;
                }
                ClusterRequest::Announce(entry) => {
                    let id = entry.id;
                    publish_entry(&bus, &c, entry).await;
                    let reader = read_mailbox(mail.clone(), id, inputs.clone());
                    readers.insert(id, smol::spawn(reader));
                }
                ClusterRequest::Update(entry) => publish_entry(&bus, &c, entry).await,
                ClusterRequest::Withdraw { id, code } => {
                    readers.remove(&id);
                    let _ = counter.release().await;
                    let mut tombstone = vec![b'L'];
                    tombstone.extend_from_slice(&code.to_u16().to_be_bytes());
                    store(&bus, format!("p2pchat.{c}.roster.{}", id.0), tombstone).await;
                }
                ClusterRequest::Forward { to, frames } => {
                    // Stored before anything else is done: JetStream has it, or the
                    // error is retried once (a NATS reconnect under way).
                    let frames = Bytes::from(frames);
                    if mail.put(to.0, frames.clone()).await.is_err() {
                        let _ = mail.put(to.0, frames).await;
                    }
                }
                ClusterRequest::Broadcast { frames } => {
                    let mut payload = options.relay.as_bytes().to_vec();
                    payload.push(0);
                    payload.extend_from_slice(&frames);
                    store(&bus, format!("p2pchat.{c}.all"), payload).await;
                }
            }
        }
    }
}

/// Opens (creating it if needed) a stream; `last_only` keeps one message per
/// subject (the roster).
async fn open_stream(
    bus: &Bus,
    name: String,
    subject: String,
    max_age: Duration,
    last_only: bool,
) -> Result<(), BusError> {
    let config = stream::Config {
        name,
        subjects: vec![subject],
        max_age,
        max_messages_per_subject: if last_only { 1 } else { 0 },
        ..Default::default()
    };
    bus.call(move |_, js| async move {
        js.get_or_create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Nats(e.to_string()))
    })
    .await?
}

/// Publishes to a stream and waits for JetStream to have it (retried once).
async fn store(bus: &Bus, subject: String, payload: Vec<u8>) {
    let payload = Bytes::from(payload);
    for _ in 0..2 {
        let (s, p) = (subject.clone(), payload.clone());
        let stored = bus
            .call(move |_, js| async move {
                match js.publish(s, p).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                }
            })
            .await;
        if stored.unwrap_or(false) {
            return;
        }
    }
}

async fn publish_entry(bus: &Bus, cluster: &str, entry: RosterEntry) {
    let id = entry.id;
    let mut payload = vec![b'J'];
    payload.extend_from_slice(&Frame::Profile(entry).to_bytes());
    store(bus, format!("p2pchat.{cluster}.roster.{}", id.0), payload).await;
}

/// A roster message: an entry (`J` and a `Profile` frame) or a tombstone (`L` and
/// the code).
fn roster_input(subject: &str, payload: &[u8]) -> Option<ClusterInput> {
    let id = ClientId(subject.rsplit('.').next()?.parse().ok()?);
    match payload.split_first()? {
        (b'J', frame) => {
            let (&ty, body) = frame.get(4..)?.split_first()?;
            match Frame::decode(ty, body).ok()? {
                Frame::Profile(entry) if entry.id == id => Some(ClusterInput::Roster(entry)),
                _ => None,
            }
        }
        (b'L', code) => {
            let code = u16::from_be_bytes(code.get(..2)?.try_into().ok()?);
            Some(ClusterInput::Left {
                id,
                code: ErrorCode::from_u16(code),
            })
        }
        _ => None,
    }
}

/// Reads the roster stream from the start (each client's last entry) and then as
/// it grows, on the NATS thread, until the relay is gone.
async fn watch_roster(
    bus: &Bus,
    cluster: &str,
    inputs: Sender<ClusterInput>,
) -> Result<(), BusError> {
    let stream = format!("P2PCHAT_ROSTER_{cluster}");
    let subject = format!("p2pchat.{cluster}.roster.*");
    follow(
        bus,
        stream,
        subject,
        consumer::DeliverPolicy::LastPerSubject,
        roster_input,
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
        move |_, payload| {
            let at = payload.iter().position(|&b| b == 0)?;
            let (from, rest) = payload.split_at(at);
            (from != me.as_slice()).then(|| ClusterInput::Broadcast {
                frames: rest.get(1..).unwrap_or_default().to_vec(),
            })
        },
        inputs,
    )
    .await
}

/// Follows a stream with a consumer of this relay's own (no acknowledgements),
/// turning each message into an input with `read`, until `inputs` closes. Returns
/// once the consumer exists.
async fn follow(
    bus: &Bus,
    stream: String,
    subject: String,
    from: consumer::DeliverPolicy,
    read: impl Fn(&str, &[u8]) -> Option<ClusterInput> + Send + 'static,
    inputs: Sender<ClusterInput>,
) -> Result<(), BusError> {
    let (ready_tx, ready) = async_channel::bounded(1);
    let job = move |_, js: async_nats::jetstream::Context| async move {
        use futures_util::StreamExt;
        let made = async {
            let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            stream
                .create_consumer(consumer::pull::Config {
                    deliver_policy: from,
                    filter_subject: subject,
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())
        };
        let consumer = match made.await {
            Ok(c) => {
                let _ = ready_tx.send(Ok(())).await;
                c
            }
            Err(e) => {
                let _ = ready_tx.send(Err(BusError::Nats(e))).await;
                return;
            }
        };
        // A continuous pull (heartbeats keep it alive): messages arrive as the
        // stream grows, with no polling.
        let Ok(mut messages) = consumer.messages().await else {
            return;
        };
        while let Some(m) = messages.next().await {
            let Ok(m) = m else { continue };
            if let Some(input) = read(m.subject.as_str(), &m.payload)
                && inputs.send(input).await.is_err()
            {
                return;
            }
        }
    };
    // The job runs for the relay's life on the NATS thread; it is not awaited.
    let bus = bus.clone();
    smol::spawn(async move {
        let _ = bus.call(job).await;
    })
    .detach();
    ready.recv().await.map_err(|_| BusError::Stopped)?
}

/// Reads client `to`'s mailbox and hands each letter to the core, acknowledging it
/// once handed over, until the task is dropped (the client left) or the relay is
/// gone.
async fn read_mailbox(mail: Mail, to: ClientId, inputs: Sender<ClusterInput>) {
    let Ok(reader) = mail.reader(to.0, Duration::from_secs(5)).await else {
        return;
    };
    let Ok(letters) = reader.letters().await else {
        return;
    };
    while let Ok(letter) = letters.recv().await {
        let input = ClusterInput::Mail {
            to,
            frames: letter.payload.to_vec(),
        };
        if inputs.send(input).await.is_err() {
            return;
        }
        let _ = reader.acknowledge(&letter).await;
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
        let mut joined = vec![b'J'];
        joined.extend_from_slice(&Frame::Profile(entry.clone()).to_bytes());
        assert_eq!(
            roster_input("p2pchat.c.roster.7", &joined),
            Some(ClusterInput::Roster(entry))
        );
        assert_eq!(
            roster_input("p2pchat.c.roster.8", &joined),
            None,
            "wrong subject"
        );
        assert_eq!(
            roster_input("p2pchat.c.roster.7", &[b'L', 0, 0]),
            Some(ClusterInput::Left {
                id: ClientId(7),
                code: ErrorCode::Normal
            })
        );
        assert_eq!(roster_input("p2pchat.c.roster.7", b"Xjunk"), None);
        assert_eq!(roster_input("p2pchat.c.roster.x", &joined), None);
        assert!(valid_cluster_name("p2pchat-1_a"));
        assert!(
            !valid_cluster_name("a.b") && !valid_cluster_name("") && !valid_cluster_name("a b")
        );
    }
}
