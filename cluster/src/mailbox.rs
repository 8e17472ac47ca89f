//! Mailboxes in JetStream: what a relay holds for a client survives the relay.
//!
//! One stream per cluster, `P2PCHAT_MAIL_CLUSTER`, with one subject per client,
//! `p2pchat.CLUSTER.mail.ID`, keeping each message for the resume grace (`max_age`).
//! A message is put with a publish that JetStream acknowledges once it has stored it:
//! only then may the relay tell the sender it has it. The relay that holds the
//! client reads its mailbox through a durable consumer named after the client, and
//! acknowledges each message once the client confirmed it. If that relay dies, the
//! relay the client resumes on opens the same consumer: what was acknowledged is not
//! sent again, what was not is redelivered (after the consumer's `ack_wait`).

use std::time::Duration;

use async_nats::jetstream::consumer;
use bytes::Bytes;

use crate::bus::{Bus, BusError};

/// A message from a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// Its place in the cluster's mail stream.
    pub sequence: u64,
    /// Its bytes.
    pub payload: Bytes,
    /// Where its acknowledgement goes.
    ack: String,
}

/// The cluster's mail stream.
#[derive(Clone)]
pub struct Mail {
    bus: Bus,
    cluster: String,
    stream: String,
}

impl Mail {
    /// Opens (creating it if this is the first relay) the mail stream of `cluster`,
    /// keeping messages for `keep`.
    pub async fn open(bus: &Bus, cluster: &str, keep: Duration) -> Result<Mail, BusError> {
        let stream = format!("P2PCHAT_MAIL_{cluster}");
        let subject = format!("p2pchat.{cluster}.mail.*");
        bus.open_stream(stream.clone(), subject, keep, false)
            .await?;
        Ok(Mail {
            bus: bus.clone(),
            cluster: cluster.to_owned(),
            stream,
        })
    }

    /// The subject of client `to`'s mailbox.
    pub fn subject(&self, to: u32) -> String {
        format!("p2pchat.{}.mail.{to}", self.cluster)
    }

    /// Stores `payload` for client `to`; returns once JetStream has stored it, with
    /// its sequence.
    pub async fn put(&self, to: u32, payload: Bytes) -> Result<u64, BusError> {
        let subject = format!("p2pchat.{}.mail.{to}", self.cluster);
        self.bus
            .call(move |_, js| async move {
                let ack = js
                    .publish(subject, payload)
                    .await
                    .map_err(|e| BusError::Nats(e.to_string()))?
                    .await
                    .map_err(|e| BusError::Nats(e.to_string()))?;
                Ok(ack.sequence)
            })
            .await?
    }

    /// Reads client `to`'s mailbox from where it was last acknowledged (by any relay);
    /// a message read and not acknowledged within `ack_wait` is delivered again.
    /// With `take_over` (the client's session moved here from a relay that may have
    /// died holding letters unacknowledged), the reading restarts at once from the
    /// first letter not acknowledged, instead of waiting out `ack_wait` for those.
    pub async fn reader(
        &self,
        to: u32,
        ack_wait: Duration,
        take_over: bool,
    ) -> Result<MailReader, BusError> {
        let name = format!("client-{to}");
        let mut config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("p2pchat.{}.mail.{to}", self.cluster),
            // Acknowledging a letter acknowledges those before it: a client reads
            // its mailbox in order.
            ack_policy: consumer::AckPolicy::All,
            ack_wait,
            ..Default::default()
        };
        let stream = self.stream.clone();
        self.bus
            .call(move |_, js| async move {
                let stream = js
                    .get_stream(stream)
                    .await
                    .map_err(|e| BusError::Nats(e.to_string()))?;
                if take_over && let Ok(info) = stream.consumer_info(&name).await {
                    // Made again, from the first letter nobody acknowledged: what the
                    // old reader held unacknowledged comes now, in order.
                    let start_sequence = info.ack_floor.stream_sequence + 1;
                    stream
                        .delete_consumer(&name)
                        .await
                        .map_err(|e| BusError::Nats(e.to_string()))?;
                    config.deliver_policy =
                        consumer::DeliverPolicy::ByStartSequence { start_sequence };
                }
                stream
                    .get_or_create_consumer(&name, config)
                    .await
                    .map(|_| ())
                    .map_err(|e| BusError::Nats(e.to_string()))
            })
            .await??;
        Ok(MailReader {
            bus: self.bus.clone(),
            stream: self.stream.clone(),
            consumer: format!("client-{to}"),
        })
    }
}

/// One client's mailbox, being read.
pub struct MailReader {
    bus: Bus,
    stream: String,
    consumer: String,
}

impl MailReader {
    /// Up to `max` letters not yet acknowledged, waiting at most `wait` for the first.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Letter>, BusError> {
        let (stream, name) = (self.stream.clone(), self.consumer.clone());
        self.bus
            .call(move |_, js| async move {
                use futures_util::StreamExt;
                let consumer: consumer::PullConsumer = js
                    .get_consumer_from_stream(name, stream)
                    .await
                    .map_err(|e| BusError::Nats(e.to_string()))?;
                let mut batch = consumer
                    .fetch()
                    .max_messages(max)
                    .expires(wait)
                    .messages()
                    .await
                    .map_err(|e| BusError::Nats(e.to_string()))?;
                let mut letters = Vec::new();
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| BusError::Nats(e.to_string()))?;
                    let sequence = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                    let ack = m.reply.as_ref().map(|r| r.to_string()).unwrap_or_default();
                    letters.push(Letter {
                        sequence,
                        payload: m.payload.clone(),
                        ack,
                    });
                }
                Ok(letters)
            })
            .await?
    }

    /// Every letter not yet acknowledged, as it arrives (a continuous pull with
    /// heartbeats: no polling), until the receiver is dropped.
    pub async fn letters(&self) -> Result<async_channel::Receiver<Letter>, BusError> {
        let (tx, rx) = async_channel::bounded(256);
        let (stream, name) = (self.stream.clone(), self.consumer.clone());
        // The durable consumer picks up where its acknowledgements say.
        let open: crate::pull::Open = Box::new(move |js, _| {
            let (stream, name) = (stream.clone(), name.clone());
            Box::pin(async move {
                let consumer: consumer::PullConsumer = js
                    .get_consumer_from_stream(name, stream)
                    .await
                    .map_err(|e| e.to_string())?;
                consumer.messages().await.map_err(|e| e.to_string())
            })
        });
        let read = |m: &async_nats::jetstream::Message| {
            vec![Letter {
                sequence: m.info().map(|i| i.stream_sequence).unwrap_or(0),
                payload: m.payload.clone(),
                ack: m.reply.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            }]
        };
        crate::pull::follow(&self.bus, open, read, tx).await?;
        Ok(rx)
    }

    /// The client confirmed `letter`, and every letter before it: they are not
    /// delivered again, by any relay.
    pub async fn acknowledge(&self, letter: &Letter) -> Result<(), BusError> {
        let ack = letter.ack.clone();
        self.bus
            .call(move |client, _| async move {
                // A request, not a publish: the server answers once the ack is
                // recorded, so a relay that dies right after has not lost it.
                client
                    .request(ack, Bytes::from_static(b"+ACK"))
                    .await
                    .map(|_| ())
                    .map_err(|e| BusError::Nats(e.to_string()))
            })
            .await?
    }
}
