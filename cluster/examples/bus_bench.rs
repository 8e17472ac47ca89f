//! What the bus costs on this machine, for docs/SCALING.md: core NATS messages a
//! second (64 bytes, one publisher, one subscriber), JetStream stores a second
//! (acknowledged one by one, and 256 in flight), and admissions a second by
//! compare-and-set, against a `nats-server -js` started here.
//!
//! `cargo run --release -p p2pchat-cluster --example bus_bench`

use std::time::{Duration, Instant};

use bytes::Bytes;
use p2pchat_cluster::{Admission, Bus, Mail, NatsServer};

fn main() {
    let nats = NatsServer::start().unwrap_or_else(|e| {
        eprintln!("bus_bench: {e}");
        std::process::exit(1);
    });
    smol::block_on(async {
        let a = Bus::connect(&nats.url()).await.expect("connected");
        let b = Bus::connect(&nats.url()).await.expect("connected");
        let payload = Bytes::from(vec![b'x'; 64]);

        // Core NATS: publish N; the subscriber, on another connection, counts them
        // on the NATS thread (what arrives, and when the last one did).
        let n = 1_000_000u32;
        let (ready_tx, ready) = async_channel::bounded(1);
        let counting = b.call(move |client, _| async move {
            use futures_util::StreamExt;
            let mut sub = client.subscribe("bench.core").await.expect("subscribed");
            let _ = client.flush().await;
            let _ = ready_tx.send(()).await;
            let mut got = 0u32;
            let mut first = None;
            let mut last = Instant::now();
            while got < n {
                match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
                    Ok(Some(_)) => {
                        got += 1;
                        last = Instant::now();
                        first.get_or_insert(last);
                    }
                    _ => break,
                }
            }
            (got, first.map(|f| last.duration_since(f)))
        });
        let publishing = async {
            let _ = ready.recv().await;
            let p = payload.clone();
            let started = Instant::now();
            a.call(move |client, _| async move {
                for _ in 0..n {
                    let _ = client.publish("bench.core", p.clone()).await;
                }
                let _ = client.flush().await;
            })
            .await
            .expect("published");
            started.elapsed()
        };
        let ((got, span), sent_in) =
            smol::future::zip(async { counting.await.expect("counted") }, publishing).await;
        let span = span.unwrap_or_default().as_secs_f64().max(1e-9);
        println!(
            "core NATS, 64 B, 1 publisher -> 1 subscriber: published {n} in {:.2} s ({:.0}/s); received {got} ({:.0}/s); {} dropped (at most once: a subscriber that falls behind loses messages)",
            sent_in.as_secs_f64(),
            f64::from(n) / sent_in.as_secs_f64(),
            f64::from(got) / span,
            n - got
        );

        // JetStream: one at a time, each acknowledged before the next.
        let mail = Mail::open(&a, "bench", Duration::from_secs(60))
            .await
            .expect("stream");
        let m = 2_000u32;
        let started = Instant::now();
        for _ in 0..m {
            mail.put(1, payload.clone()).await.expect("stored");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "JetStream store, 64 B, acknowledged one by one: {m} in {secs:.2} s = {:.0} msg/s ({:.0} us each)",
            f64::from(m) / secs,
            secs * 1e6 / f64::from(m)
        );

        // JetStream: 256 in flight.
        let m = 50_000u32;
        let p = payload.clone();
        let started = Instant::now();
        a.call(move |_, js| async move {
            let mut acks = std::collections::VecDeque::new();
            for _ in 0..m {
                if let Ok(ack) = js.publish("p2pchat.bench.mail.2", p.clone()).await {
                    acks.push_back(ack);
                }
                if acks.len() >= 256
                    && let Some(ack) = acks.pop_front()
                {
                    let _ = ack.await;
                }
            }
            for ack in acks {
                let _ = ack.await;
            }
        })
        .await
        .expect("stored");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "JetStream store, 64 B, 256 in flight: {m} in {secs:.2} s = {:.0} msg/s",
            f64::from(m) / secs
        );

        // Admissions by compare-and-set, one relay.
        let admission = Admission::open(&a, "bench").await.expect("bucket");
        let k = 2_000u32;
        let started = Instant::now();
        for _ in 0..k {
            admission.admit(u32::MAX).await.expect("admitted");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "admissions (read + compare-and-set), one relay: {k} in {secs:.2} s = {:.0}/s ({:.0} us each)",
            f64::from(k) / secs,
            secs * 1e6 / f64::from(k)
        );
    });
}
