//! The load generator: N framed p2pchat clients on one thread, each a reader task and
//! a writer task, driving a chosen pattern and timing every delivery.
//!
//! It is built to cost little next to the server it measures: one thread, async I/O,
//! frames batched into one write where the pattern allows, and the core's own decoder.
//! Senders are paced by a window of messages in flight (closed loop), so that a fast
//! generator cannot make the relay cut its own receivers off as slow consumers.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use p2pchat_core::{ClientId, Frame, FrameDecoder, Hello, MAGIC, Payload, Role};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::stats::{Latencies, Percentiles};

/// Who sends to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Client i sends to client i + 1 (the last to the first).
    Ring,
    /// Each message goes to a random other client (seeded, reproducible).
    Random,
    /// Client 0 sends every message to all others.
    Broadcast,
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ring" => Ok(Pattern::Ring),
            "random" => Ok(Pattern::Random),
            "broadcast" => Ok(Pattern::Broadcast),
            other => Err(format!(
                "unknown pattern {other:?}: use ring, random or broadcast"
            )),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Number of clients.
    pub clients: u32,
    /// Messages to send in all (each broadcast counts once).
    pub messages: u64,
    /// Who sends to whom.
    pub pattern: Pattern,
    /// Total send rate in messages per second; `None` sends flat out.
    pub rate: Option<u64>,
    /// Bytes of text per message (at least enough for the timestamp).
    pub size: usize,
    /// Messages one sender may have in flight.
    pub window: usize,
    /// Give up after this long.
    pub max_duration: Duration,
    /// Speak plain-text lines (`ID text` out, `FROM text` in) instead of p2pchat
    /// frames: drives p2pchat's relay as `nc` would, or the minimal reference relay.
    pub plain_text: bool,
    /// Raw lines to a broadcast-only broker (`ncat --broker`): no IDs, no greeting;
    /// every line reaches every other client. Use with [`Pattern::Broadcast`].
    pub broker: bool,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Clients connected and admitted.
    pub clients: u32,
    /// Time to connect and admit them all.
    pub connect_time: Duration,
    /// Messages sent.
    pub sent: u64,
    /// Deliveries received (a broadcast counts once per recipient).
    pub delivered: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Error or close frames received, and clients lost.
    pub errors: u64,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    /// Delivery latency.
    pub latency: Percentiles,
}

impl LoadReport {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.delivered as f64 / secs
        } else {
            0.0
        }
    }
}

struct Shared {
    start: Instant,
    latencies: Latencies,
    delivered: u64,
    expected: u64,
    errors: u64,
    sent: u64,
    last_delivery: Instant,
    done: Option<Sender<()>>,
}

struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    id: ClientId,
    /// Plain text: bytes read past the greeting.
    leftover: Vec<u8>,
}

/// Connects `config.clients` clients to the relay at `addr`, calls `connected` once
/// all are admitted (to sample the idle server), then runs the load.
pub fn run(
    addr: SocketAddr,
    config: &LoadConfig,
    connected: impl FnOnce(),
) -> Result<LoadReport, String> {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(run_on(&ex, addr, config, connected)))
}

async fn run_on(
    ex: &smol::LocalExecutor<'_>,
    addr: SocketAddr,
    config: &LoadConfig,
    connected: impl FnOnce(),
) -> Result<LoadReport, String> {
    let n = config.clients as usize;
    if n < 2 {
        return Err("at least 2 clients are needed".into());
    }
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for chunk_start in (0..n).step_by(128) {
        let tasks: Vec<_> = (chunk_start..n.min(chunk_start + 128))
            .map(|i| ex.spawn(connect_one(addr, i, config.plain_text, config.broker)))
            .collect();
        for t in tasks {
            clients.push(t.await?);
        }
    }
    let connect_time = t0.elapsed();
    clients.sort_by_key(|c| c.id);
    connected();

    let index_of: std::collections::HashMap<ClientId, usize> =
        clients.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let ids: Vec<ClientId> = clients.iter().map(|c| c.id).collect();
    let senders: Vec<usize> = match config.pattern {
        Pattern::Broadcast => vec![0],
        _ => (0..n).collect(),
    };
    let expected = match config.pattern {
        Pattern::Broadcast => config.messages * (n as u64 - 1),
        _ => config.messages,
    };
    let (done_tx, done_rx) = async_channel::bounded(1);
    let start = Instant::now();
    let shared = Rc::new(RefCell::new(Shared {
        start,
        latencies: Latencies::default(),
        delivered: 0,
        expected,
        errors: 0,
        sent: 0,
        last_delivery: start,
        done: Some(done_tx),
    }));
    let tokens: Rc<Vec<(Sender<()>, Receiver<()>)>> = Rc::new(
        (0..n)
            .map(|_| async_channel::bounded(config.window.max(1)))
            .collect(),
    );
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (reader, writer) = (client.stream.clone(), client.stream);
        let witness = match config.pattern {
            Pattern::Broadcast => i == 1,
            _ => true,
        };
        tasks.push(ex.spawn(read_loop(
            reader,
            (config.plain_text || config.broker).then_some(TextMode {
                leftover: client.leftover,
                broker: config.broker,
            }),
            client.decoder,
            shared.clone(),
            tokens.clone(),
            index_of.clone(),
            witness,
        )));
        if let Some(k) = senders.iter().position(|&s| s == i) {
            let quota = config.messages / senders.len() as u64
                + u64::from((k as u64) < config.messages % senders.len() as u64);
            let plan = SendPlan {
                me: i,
                ids: ids.clone(),
                quota,
                pattern: config.pattern,
                interval: config
                    .rate
                    .map(|r| Duration::from_secs_f64(senders.len() as f64 / r.max(1) as f64)),
                offset_fraction: k as f64 / senders.len() as f64,
                size: config.size,
                plain_text: config.plain_text,
                broker: config.broker,
            };
            tasks.push(ex.spawn(write_loop(writer, plan, shared.clone(), tokens.clone())));
        }
    }
    // A progress line a second on stderr, so a long run shows it is alive.
    let progress_shared = shared.clone();
    let progress = ex.spawn(async move {
        let mut tick = 0u64;
        loop {
            smol::Timer::after(Duration::from_secs(1)).await;
            tick += 1;
            let s = progress_shared.borrow();
            eprintln!(
                "p2pchat bench: {tick} s: {} of {} delivered, {} errors",
                s.delivered, s.expected, s.errors
            );
        }
    });
    let timeout = async {
        smol::Timer::after(config.max_duration).await;
    };
    smol::future::or(
        async {
            let _ = done_rx.recv().await;
        },
        timeout,
    )
    .await;
    drop(progress);
    let mut s = shared.borrow_mut();
    let elapsed = s.last_delivery.saturating_duration_since(start);
    let latency = s.latencies.percentiles();
    drop(tasks);
    Ok(LoadReport {
        clients: n as u32,
        connect_time,
        sent: s.sent,
        delivered: s.delivered,
        expected,
        errors: s.errors,
        elapsed,
        latency,
    })
}

async fn connect_one(
    addr: SocketAddr,
    i: usize,
    plain_text: bool,
    broker: bool,
) -> Result<Client, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("client {i}: could not connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    if broker {
        // A broker has no IDs: a client is known by the order it connected in.
        return Ok(Client {
            stream,
            decoder: FrameDecoder::without_magic(1),
            id: ClientId(i as u32),
            leftover: Vec::new(),
        });
    }
    if plain_text {
        return connect_text(stream, i).await;
    }
    let mut hello = MAGIC.to_vec();
    Frame::Hello(Hello {
        min_version: 1,
        max_version: p2pchat_core::PROTOCOL_VERSION,
        capabilities: 0,
        role: Role::RelayClient,
        name: String::new(),
    })
    .encode(&mut hello);
    stream
        .write_all(&hello)
        .await
        .map_err(|e| format!("client {i}: {e}"))?;
    let mut decoder = FrameDecoder::new(p2pchat_core::Limits::default().max_frame_len);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("client {i}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "client {i}: the server closed the connection during the handshake"
            ));
        }
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| format!("client {i}: {e}"))?
        {
            match frame {
                Frame::Welcome(w) => {
                    return Ok(Client {
                        leftover: Vec::new(),
                        stream,
                        decoder,
                        id: w.client_id,
                    });
                }
                Frame::Refused(r) => return Err(format!("client {i}: refused: {}", r.reason)),
                _ => {}
            }
        }
    }
}

/// A plain-text client: an empty line to be admitted, then the greeting's ID.
async fn connect_text(mut stream: TcpStream, i: usize) -> Result<Client, String> {
    stream
        .write_all(b"\n")
        .await
        .map_err(|e| format!("client {i}: {e}"))?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("client {i}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "client {i}: the server closed the connection before giving an ID"
            ));
        }
        got.extend_from_slice(&buf[..n]);
        while let Some(pos) = got.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = got.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(rest) = line.strip_prefix("* you are client ") {
                let id: u32 = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| format!("client {i}: unreadable greeting {line:?}"))?;
                return Ok(Client {
                    stream,
                    decoder: FrameDecoder::without_magic(1),
                    id: ClientId(id),
                    leftover: got,
                });
            }
            if line.contains("full") {
                return Err(format!("client {i}: refused: {}", line.trim()));
            }
        }
    }
}

struct SendPlan {
    me: usize,
    ids: Vec<ClientId>,
    quota: u64,
    pattern: Pattern,
    interval: Option<Duration>,
    offset_fraction: f64,
    size: usize,
    plain_text: bool,
    broker: bool,
}

impl SendPlan {
    fn target(&self, rng: &mut u64) -> ClientId {
        let n = self.ids.len();
        match self.pattern {
            Pattern::Broadcast => ClientId::BROADCAST,
            Pattern::Ring => self.ids[(self.me + 1) % n],
            Pattern::Random => {
                // xorshift64: deterministic per client, cheap.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let other = (*rng % (n as u64 - 1)) as usize;
                self.ids[if other >= self.me { other + 1 } else { other }]
            }
        }
    }
}

/// Most frames put into one write when sending flat out.
const BATCH: usize = 64;

async fn write_loop(
    mut stream: TcpStream,
    plan: SendPlan,
    shared: Rc<RefCell<Shared>>,
    tokens: Rc<Vec<(Sender<()>, Receiver<()>)>>,
) {
    let start = shared.borrow().start;
    let (token, _) = &tokens[plan.me];
    let mut rng =
        0x9E37_79B9_7F4A_7C15u64 ^ (plan.me as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
    let mut out = Vec::with_capacity(BATCH * (plan.size + 32));
    let mut seq = 0u64;
    let mut next_at = plan
        .interval
        .map(|iv| start + iv.mul_f64(plan.offset_fraction));
    while seq < plan.quota {
        if let (Some(at), Some(iv)) = (next_at, plan.interval) {
            smol::Timer::at(at).await;
            next_at = Some(at + iv);
        }
        if token.send(()).await.is_err() {
            return;
        }
        out.clear();
        let mut in_batch = 1;
        loop {
            seq += 1;
            let stamp = start.elapsed().as_micros();
            let mut text = format!("{stamp} ");
            while text.len() < plan.size {
                text.push('x');
            }
            let to = plan.target(&mut rng);
            if plan.broker {
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            } else if plan.plain_text {
                let line = if to.is_broadcast() {
                    format!("/all {text}\n")
                } else {
                    format!("{to} {text}\n")
                };
                out.extend_from_slice(line.as_bytes());
            } else {
                Frame::Chat {
                    to,
                    seq,
                    payload: Payload::text(&text),
                }
                .encode(&mut out);
            }
            // Paced senders write each message on its own; flat-out ones batch.
            if plan.interval.is_some()
                || in_batch >= BATCH
                || seq >= plan.quota
                || token.try_send(()).is_err()
            {
                break;
            }
            in_batch += 1;
        }
        shared.borrow_mut().sent += in_batch as u64;
        if stream.write_all(&out).await.is_err() {
            shared.borrow_mut().errors += 1;
            return;
        }
    }
}

/// Reads deliveries; `text` is `Some(bytes already read)` for a plain-text client.
/// How a plain-text client reads: bytes already read past its greeting, and whether
/// the relay is a broker (lines carry no sender).
struct TextMode {
    leftover: Vec<u8>,
    broker: bool,
}

async fn read_loop(
    mut stream: TcpStream,
    text: Option<TextMode>,
    mut decoder: FrameDecoder,
    shared: Rc<RefCell<Shared>>,
    tokens: Rc<Vec<(Sender<()>, Receiver<()>)>>,
    index_of: std::collections::HashMap<ClientId, usize>,
    witness: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let plain_text = text.is_some();
    let broker = text.as_ref().is_some_and(|t| t.broker);
    let mut lines = text.map(|t| t.leftover).unwrap_or_default();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                shared.borrow_mut().errors += 1;
                return;
            }
            Ok(n) => n,
        };
        if plain_text {
            lines.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(pos) = lines[start..].iter().position(|&b| b == b'\n') {
                let line = &lines[start..start + pos];
                start += pos + 1;
                if line.first() == Some(&b'*') {
                    continue; // status lines
                }
                let text = String::from_utf8_lossy(line);
                let mut parts = text.split(' ');
                // A broker's lines carry no sender: the only sender is client 0.
                let from = if broker {
                    Some(0)
                } else {
                    parts.next().and_then(|f| f.parse::<u32>().ok())
                };
                let stamp = parts.next().and_then(|t| t.parse::<u64>().ok());
                if let Some(from) = from {
                    record_delivery(&shared, &tokens, &index_of, witness, ClientId(from), stamp);
                }
            }
            lines.drain(..start);
            continue;
        }
        decoder.push(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    shared.borrow_mut().errors += 1;
                    return;
                }
            };
            match frame {
                Frame::Deliver { from, payload, .. } => {
                    let sent_at = payload
                        .as_text()
                        .and_then(|t| t.split(' ').next())
                        .and_then(|t| t.parse::<u64>().ok());
                    record_delivery(&shared, &tokens, &index_of, witness, from, sent_at);
                }
                Frame::Error(_) | Frame::Close { .. } => shared.borrow_mut().errors += 1,
                _ => {}
            }
        }
    }
}

/// Counts one delivery, records its latency, and returns a window token to its sender.
fn record_delivery(
    shared: &Rc<RefCell<Shared>>,
    tokens: &Rc<Vec<(Sender<()>, Receiver<()>)>>,
    index_of: &std::collections::HashMap<ClientId, usize>,
    witness: bool,
    from: ClientId,
    sent_at: Option<u64>,
) {
    let now = Instant::now();
    let mut s = shared.borrow_mut();
    if let Some(sent_at) = sent_at {
        let now_micros = now.saturating_duration_since(s.start).as_micros() as u64;
        s.latencies.record(now_micros.saturating_sub(sent_at));
    }
    s.delivered += 1;
    s.last_delivery = now;
    if s.delivered >= s.expected
        && let Some(done) = s.done.take()
    {
        let _ = done.try_send(());
    }
    drop(s);
    if witness && let Some(&i) = index_of.get(&from) {
        let _ = tokens[i].1.try_recv();
    }
}
