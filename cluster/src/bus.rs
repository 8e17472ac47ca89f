//! The message bus between relays: a NATS connection, used from smol.
//!
//! async-nats runs on tokio (its connection handler is a tokio task), p2pchat runs
//! on smol. The client lives on a thread of its own with a current-thread tokio
//! runtime; smol code hands it jobs (a closure that gets the client and JetStream and
//! returns a future) over an async-channel and awaits the answer on another. Why a
//! thread rather than async-compat: the relay's core runs single-threaded on its own
//! thread, and NATS's I/O (framing, PINGs, reconnects, JetStream acks) then runs on
//! a second core instead of interleaving with it; and the tokio runtime's life is
//! the bus's, stopped when the bus is dropped, not a process-wide global.

use std::future::Future;
use std::pin::Pin;

use async_channel::{Receiver, Sender};
use async_nats::jetstream;
use bytes::Bytes;

/// A job for the NATS thread.
type Job = Box<
    dyn FnOnce(async_nats::Client, jetstream::Context) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

/// Why the bus could not do something.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS server could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL(s) given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The bus's thread is gone (the bus was closed, or its runtime failed).
    #[error("the NATS connection's thread has stopped")]
    Stopped,
    /// NATS refused or failed an operation.
    #[error("NATS: {0}")]
    Nats(String),
}

/// A message that came off the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// Its subject.
    pub subject: String,
    /// Its bytes.
    pub payload: Bytes,
}

/// One connection to NATS, usable from any executor.
#[derive(Clone)]
pub struct Bus {
    jobs: Sender<Job>,
}

impl Bus {
    /// Connects to NATS at `url` (several comma-separated URLs are tried in turn, and
    /// reconnected to) and starts the bus's thread.
    pub async fn connect(url: &str) -> Result<Bus, BusError> {
        let (jobs, incoming) = async_channel::unbounded::<Job>();
        let (ready_tx, ready) = async_channel::bounded(1);
        let url_owned = url.to_owned();
        let spawned = std::thread::Builder::new()
            .name("p2pchat-nats".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.try_send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // Several servers of one NATS cluster, comma-separated: any that
                    // answers will do, and the client fails over between them.
                    let servers: Vec<&str> = url_owned
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect();
                    let client = match async_nats::connect(servers).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.try_send(Err(e.to_string()));
                            return;
                        }
                    };
                    let js = jetstream::new(client.clone());
                    let _ = ready_tx.try_send(Ok(()));
                    while let Ok(job) = incoming.recv().await {
                        tokio::spawn(job(client.clone(), js.clone()));
                    }
                    // The bus was dropped: say goodbye in order.
                    let _ = client.flush().await;
                });
            });
        if let Err(e) = spawned {
            return Err(BusError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            });
        }
        match ready.recv().await {
            Ok(Ok(())) => Ok(Bus { jobs }),
            Ok(Err(reason)) => Err(BusError::Connect {
                url: url.to_owned(),
                reason,
            }),
            Err(_) => Err(BusError::Stopped),
        }
    }

    /// Runs `job` on the NATS thread and gives its result.
    pub async fn call<T, F, Fut>(&self, job: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(async_nats::Client, jetstream::Context) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = async_channel::bounded(1);
        let job: Job = Box::new(move |client, js| {
            Box::pin(async move {
                let _ = tx.send(job(client, js).await).await;
            })
        });
        self.jobs.send(job).await.map_err(|_| BusError::Stopped)?;
        rx.recv().await.map_err(|_| BusError::Stopped)
    }

    /// Opens a JetStream stream, creating it if this is the first relay: `subject`
    /// (wildcards allowed), messages kept for `max_age` (zero: for ever), and with
    /// `last_only` one message kept per subject (a roster).
    pub async fn open_stream(
        &self,
        name: String,
        subject: String,
        max_age: std::time::Duration,
        last_only: bool,
    ) -> Result<(), BusError> {
        let config = async_nats::jetstream::stream::Config {
            name,
            subjects: vec![subject],
            max_age,
            max_messages_per_subject: if last_only { 1 } else { 0 },
            ..Default::default()
        };
        self.ensure_stream(config).await
    }

    /// Makes the stream `config` describes unless it exists. Relays of a cluster that
    /// start at the same moment race to make it: the loser's create fails (2.9 says
    /// the subjects overlap), and it finds the winner's stream instead.
    pub async fn ensure_stream(
        &self,
        config: async_nats::jetstream::stream::Config,
    ) -> Result<(), BusError> {
        self.call(move |_, js| async move {
            let name = config.name.clone();
            match js.get_or_create_stream(config).await {
                Ok(_) => Ok(()),
                Err(lost) => js
                    .get_stream(&name)
                    .await
                    .map(|_| ())
                    .map_err(|_| BusError::Nats(lost.to_string())),
            }
        })
        .await?
    }

    /// Publishes `payload` on `subject` (core NATS: at most once, in order per
    /// publisher), flushed to the server before it returns.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        self.call(move |client, _| async move {
            client
                .publish(subject, payload)
                .await
                .map_err(|e| BusError::Nats(e.to_string()))?;
            client
                .flush()
                .await
                .map_err(|e| BusError::Nats(e.to_string()))
        })
        .await?
    }

    /// Subscribes to `subject` (wildcards allowed); messages arrive on the receiver
    /// until it is dropped. The subscription is in place when this returns.
    pub async fn subscribe(&self, subject: String) -> Result<Receiver<BusMessage>, BusError> {
        let (tx, rx) = async_channel::unbounded();
        let (ready_tx, ready) = async_channel::bounded(1);
        let jobs = self.jobs.clone();
        let job: Job = Box::new(move |client, _| {
            Box::pin(async move {
                use futures_util::StreamExt;
                let mut sub = match client.subscribe(subject).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BusError::Nats(e.to_string()))).await;
                        return;
                    }
                };
                // In place once the server has seen it: a flush only empties our
                // buffer, so a round trip follows (a request nobody answers; the server
                // says so after it handled what came before on this connection).
                let flushed = client.flush().await;
                let _ = client
                    .request("_p2pchat_sync.subscribe", Bytes::new())
                    .await;
                let _ = ready_tx
                    .send(flushed.map_err(|e| BusError::Nats(e.to_string())))
                    .await;
                while let Some(m) = sub.next().await {
                    let message = BusMessage {
                        subject: m.subject.to_string(),
                        payload: m.payload,
                    };
                    if tx.send(message).await.is_err() {
                        break;
                    }
                }
                let _ = sub.unsubscribe().await;
            })
        });
        jobs.send(job).await.map_err(|_| BusError::Stopped)?;
        ready.recv().await.map_err(|_| BusError::Stopped)??;
        Ok(rx)
    }
}
