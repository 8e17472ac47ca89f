//! Cluster-wide IDs and the cluster-wide client limit, in one JetStream key-value
//! entry updated with compare-and-set.
//!
//! Every relay of a cluster admits through the same entry, `admission` in the bucket
//! `p2pchat-CLUSTER`: its value is `NEXT ONLINE` (the next ID to hand out, and how
//! many clients are admitted). A relay reads it with its revision and writes
//! `NEXT+1 ONLINE+1` only if the revision is still the one it read; when another
//! relay wrote first, it reads again and retries. So IDs are unique across the
//! cluster and in the order the admissions were decided, and no more than the limit
//! are ever admitted at once, with no lock and no leader: the stream under the bucket
//! orders the writes.

use async_nats::jetstream::{kv, stream};
use bytes::Bytes;

use crate::bus::{Bus, BusError};

/// The key the counter lives under.
const KEY: &str = "admission";

/// How many times a relay retries a write that lost the race before giving up (each
/// loss means another relay admitted someone: progress was made).
const MAX_RACES: u32 = 1_000;

/// What an admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Admitted with this ID.
    Id(u32),
    /// The cluster is full: `online` clients, at most `limit`.
    Full {
        /// Clients admitted now.
        online: u32,
        /// The cluster's limit.
        limit: u32,
    },
}

/// The cluster's admission counter.
#[derive(Clone)]
pub struct Admission {
    bus: Bus,
    bucket: String,
}

impl Admission {
    /// The counter of cluster `cluster` (its bucket is created if it is the first
    /// relay).
    pub async fn open(bus: &Bus, cluster: &str) -> Result<Admission, BusError> {
        let bucket = format!("p2pchat-{cluster}");
        // The bucket's stream, made as JetStream's key-value layer makes it
        // (async-nats's `create_key_value` asks for server 2.10 settings that
        // Debian's 2.9 does not answer in a shape it reads).
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            ..Default::default()
        };
        bus.ensure_stream(config).await?;
        Ok(Admission {
            bus: bus.clone(),
            bucket,
        })
    }

    /// Admits one client if the cluster has room under `limit`.
    pub async fn admit(&self, limit: u32) -> Result<Admitted, BusError> {
        self.change(move |next, online| {
            if online >= limit {
                Err(Admitted::Full { online, limit })
            } else {
                Ok((next + 1, online + 1, Admitted::Id(next)))
            }
        })
        .await
    }

    /// A client left for good: its place is free again (its ID is never reused).
    pub async fn release(&self) -> Result<(), BusError> {
        self.change(|next, online| Ok((next, online.saturating_sub(1), ())))
            .await
            .map(|_| ())
    }

    /// Applies `step` to `(next, online)` with compare-and-set, retrying lost races.
    /// `step` gives the new pair and the answer, or (`Err`) an answer without a
    /// write.
    async fn change<T: Send + 'static>(
        &self,
        step: impl Fn(u32, u32) -> Result<(u32, u32, T), T> + Send + 'static,
    ) -> Result<T, BusError> {
        let bucket = self.bucket.clone();
        self.bus
            .call(move |_, js| async move {
                let store = js
                    .get_key_value(bucket)
                    .await
                    .map_err(|e| BusError::Nats(e.to_string()))?;
                for _ in 0..MAX_RACES {
                    let entry = store
                        .entry(KEY)
                        .await
                        .map_err(|e| BusError::Nats(e.to_string()))?;
                    let (next, online, revision) = match &entry {
                        Some(e) if e.operation == kv::Operation::Put => {
                            let (n, o) = parse(&e.value)?;
                            (n, o, Some(e.revision))
                        }
                        _ => (0, 0, None),
                    };
                    let (new_next, new_online, answer) = match step(next, online) {
                        Ok(change) => change,
                        Err(answer) => return Ok(answer),
                    };
                    let value = Bytes::from(format!("{new_next} {new_online}"));
                    let written = match revision {
                        Some(revision) => store
                            .update(KEY, value, revision)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                        None => store
                            .create(KEY, value)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
                    };
                    match written {
                        Ok(()) => return Ok(answer),
                        // Another relay wrote first: read again.
                        Err(true) => continue,
                        Err(false) => {
                            return Err(BusError::Nats(format!(
                                "cannot update {KEY} in the cluster's bucket"
                            )));
                        }
                    }
                }
                Err(BusError::Nats(format!(
                    "{MAX_RACES} admissions in a row lost the race; the cluster is overloaded"
                )))
            })
            .await?
    }
}

/// `NEXT ONLINE`.
fn parse(value: &[u8]) -> Result<(u32, u32), BusError> {
    let text = std::str::from_utf8(value).unwrap_or("");
    let mut parts = text.split(' ').map(str::parse::<u32>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(next)), Some(Ok(online)), None) => Ok((next, online)),
        _ => Err(BusError::Nats(format!(
            "the cluster's admission entry holds {text:?}, not `NEXT ONLINE`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_reads_back_or_says_what_it_holds() {
        assert_eq!(parse(b"7 3").ok(), Some((7, 3)));
        assert!(parse(b"7").is_err());
        assert!(parse(b"x 3").is_err());
        assert!(parse(b"1 2 3").is_err());
    }
}
