//! Following a JetStream consumer for as long as anyone listens: a continuous pull
//! (heartbeats keep it alive, no polling) that, when NATS goes away and comes back,
//! opens again and picks up. Mailboxes and the node's streams follow this way.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_channel::Sender;
use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::pull;

use crate::bus::{Bus, BusError};

/// Pause before opening again after NATS went away.
const AGAIN_AFTER: Duration = Duration::from_millis(250);

/// Opens a pull: given the stream sequence after the last message seen (`None` at
/// first), the message stream of a consumer.
pub(crate) type Open = Box<
    dyn FnMut(
            async_nats::jetstream::Context,
            Option<u64>,
        ) -> Pin<Box<dyn Future<Output = Result<pull::Stream, String>> + Send>>
        + Send,
>;

/// Follows what `open` opens, on the bus's thread, handing `read(message)` of each
/// message to `out`, until `out` closes. Returns once the first pull is open (or
/// could not be).
pub(crate) async fn follow<T: Send + 'static>(
    bus: &Bus,
    mut open: Open,
    read: impl Fn(&Message) -> Vec<T> + Send + 'static,
    out: Sender<T>,
) -> Result<(), BusError> {
    let (ready_tx, ready) = async_channel::bounded(1);
    let job = move |_, js: async_nats::jetstream::Context| async move {
        use futures_util::StreamExt;
        let mut next: Option<u64> = None;
        let mut first = true;
        while !out.is_closed() {
            let mut messages = match open(js.clone(), next).await {
                Ok(m) => m,
                Err(e) if first => {
                    let _ = ready_tx.send(Err(BusError::Nats(e))).await;
                    return;
                }
                Err(_) => {
                    tokio::time::sleep(AGAIN_AFTER).await;
                    continue;
                }
            };
            if first {
                first = false;
                let _ = ready_tx.send(Ok(())).await;
            }
            while let Some(m) = messages.next().await {
                // An error ends this pull (NATS went away); a new one picks up.
                let Ok(m) = m else { break };
                if let Ok(info) = m.info() {
                    next = Some(info.stream_sequence + 1);
                }
                for item in read(&m) {
                    if out.send(item).await.is_err() {
                        return;
                    }
                }
            }
            tokio::time::sleep(AGAIN_AFTER).await;
        }
    };
    // The job runs for as long as `out` is open, on the NATS thread; not awaited.
    let bus = bus.clone();
    smol::spawn(async move {
        let _ = bus.call(job).await;
    })
    .detach();
    ready.recv().await.map_err(|_| BusError::Stopped)?
}
