//! Plain-text senders against a receiver whose driver runs behind: the proof that a
//! pause never cuts a line in two (docs/PROTOCOL.md, section 10).
//!
//! The main simulator reads every byte the moment it arrives, so it cannot show what
//! goes wrong when a relay is seconds behind its sockets. Here the receiver (the real
//! [`RelayServer`], or the real [`Peer`] of `p2pchat listen`) is driven the way the
//! TCP driver drives it, with the lag made explicit and seeded:
//!
//! - bytes land in a connection's socket buffer as the network delivers them (in
//!   order, in random pieces, with jitter);
//! - the driver reads a connection some random time later (up to `max_lag`), in reads
//!   of random size (down to one byte) or everything waiting at once;
//! - when the core asks for an idle check (`read_idle_check`), the driver comes back
//!   some random time after that moment and reads: waiting bytes are handed over, and
//!   only a read that finds nothing is reported (`handle_read_idle`).
//!
//! Line-by-line senders (`nc`) write each line in pieces, sometimes with long pauses
//! in the middle of a line once they have sent their first newline; the original
//! app's sender writes each message with one write and no newline, a person's pause
//! apart. The verdict: every newline-terminated line arrives whole and alone, in
//! order; every message of the original app arrives whole, in order, never split
//! (several may share a line when the driver was too far behind to see the pause
//! between them; with no lag, one line each).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use core::time::Duration;

use p2pchat_core::{ConnId, Limits, Peer, PeerEvent, PeerSide, RelayServer, Security, Timestamp};

use crate::rng::Rng;

/// The parameters of one plain-text run; with the seed, the whole run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSpec {
    /// Seeds everything random in the run.
    pub seed: u64,
    /// Line-by-line senders (on a direct conversation: 1 if there is no original-app
    /// sender, else none).
    pub senders: u32,
    /// Lines (or messages) each sender writes.
    pub lines: u32,
    /// Whether a sender speaks as the original app did (no newline ever).
    pub original_app: bool,
    /// How far behind its sockets the receiver's driver may run.
    pub max_lag: Duration,
    /// The most bytes one read takes (1: byte by byte); 0: everything waiting.
    pub max_read: usize,
    /// A direct conversation (`p2pchat listen` and one plain-text peer) instead of a
    /// relay.
    pub direct: bool,
}

impl TextSpec {
    /// The command line that replays this run.
    pub fn command(&self) -> String {
        let mut cmd = format!(
            "p2pchat sim --plain-text --seed {} --clients {} --messages {} --lag-ms {} --max-read {}",
            self.seed,
            self.senders,
            self.lines,
            self.max_lag.as_millis(),
            self.max_read
        );
        if self.original_app {
            cmd.push_str(" --original-app");
        }
        if self.direct {
            cmd.push_str(" --direct");
        }
        cmd
    }
}

/// One line the receiver got, from which sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLineSeen {
    /// When (simulated time since the start).
    pub at: Duration,
    /// Which sender (by its index in the run).
    pub sender: usize,
    /// The text, as the receiver shows it.
    pub text: String,
}

/// What a plain-text run did, and the verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextRun {
    /// The command that replays it.
    pub command: String,
    /// Every line the receiver got, in order.
    pub seen: Vec<TextLineSeen>,
    /// Reads the driver made.
    pub reads: u64,
    /// Idle checks the driver made.
    pub checks: u64,
    /// Idle checks that found nothing to read.
    pub idle_reports: u64,
    /// Lines the line-by-line senders sent.
    pub sent_lines: u64,
    /// Messages the original app sent.
    pub sent_messages: u64,
    /// What broke the rules, in words (empty: all held).
    pub violations: Vec<String>,
}

impl fmt::Display for TextRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.seen {
            writeln!(
                f,
                "{:>8.3}s from s{}: {}",
                line.at.as_secs_f64(),
                line.sender,
                line.text
            )?;
        }
        writeln!(f, "# {}", self.command)?;
        writeln!(
            f,
            "sent {} lines and {} newline-less messages; received {} lines; {} reads, {} idle checks ({} found nothing)",
            self.sent_lines,
            self.sent_messages,
            self.seen.len(),
            self.reads,
            self.checks,
            self.idle_reports
        )?;
        if self.violations.is_empty() {
            writeln!(f, "verdict: ok")
        } else {
            writeln!(f, "verdict: {} violation(s)", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  {v}")?;
            }
            Ok(())
        }
    }
}

/// The limits of the run: the defaults (a 200 ms pause, 16 KiB lines), with room for
/// everything the receiver is sent (this run is about lines, not slow consumers).
fn limits() -> Limits {
    Limits {
        max_outbound_bytes: 64 * 1024 * 1024,
        message_rate: 0,
        max_connections_per_address: 0,
        ..Limits::default()
    }
}

/// A write a sender makes: its bytes, and when.
#[derive(Debug, Clone)]
struct Write {
    at: Timestamp,
    bytes: Vec<u8>,
}

/// What a sender is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Lines ending in `\n` (`nc`, `telnet`).
    Lines,
    /// Messages with no newline, one write each (the original app).
    OriginalApp,
}

/// One sender: what it will write, and what the receiver must see from it.
#[derive(Debug, Clone)]
struct Sender {
    kind: Kind,
    writes: Vec<Write>,
    /// Lines (without the newline), or the original app's messages.
    units: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Sender `.0` makes its write `.1`.
    Write(usize, usize),
    /// A piece of a write lands in connection `.0`'s socket.
    Arrive(usize, Vec<u8>),
    /// The driver gets round to reading connection `.0`.
    Read(usize),
    /// The driver looks at connection `.0` for the idle check due at `.1`.
    Check(usize, Timestamp),
    /// Connection `.0`'s sender closes it (after its last byte).
    Fin(usize),
    /// The relay's timer (greetings, sweeps), due at `.0`.
    Timer(Timestamp),
}

/// The receiver under test.
enum Receiver {
    Relay {
        server: Box<RelayServer>,
        /// The connection of each sender, and of the reading client (last).
        conns: Vec<ConnId>,
        /// The sender behind each client ID (IDs follow first bytes, not connections).
        senders_by_id: BTreeMap<u32, usize>,
        /// What the relay wrote to the reading client, not yet split into lines.
        pending: Vec<u8>,
        /// The relay's own timer, as last scheduled.
        timer: Option<Timestamp>,
    },
    Direct(Box<Peer>),
}

/// A connection as the driver sees it.
#[derive(Debug, Default)]
struct Socket {
    /// Arrived and not yet read.
    buffered: VecDeque<u8>,
    /// A read is scheduled.
    read_scheduled: bool,
    /// The idle check the core asked for, as last scheduled.
    check: Option<Timestamp>,
    /// The last byte has been written; a FIN follows it.
    fin: bool,
    closed: bool,
    /// When the network will have delivered everything written so far.
    last_arrival: Timestamp,
}

struct TextSim {
    spec: TextSpec,
    rng: Rng,
    now: Timestamp,
    queue: BTreeMap<(Timestamp, u64), Ev>,
    next: u64,
    senders: Vec<Sender>,
    sockets: Vec<Socket>,
    receiver: Receiver,
    run: TextRun,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The pause that ends a newline-less message (the core's default).
const PAUSE: Duration = ms(200);

/// The network's one-way delay, and the most jitter added to it. Jitter stays well
/// under the pause: bytes of one write arrive close together, as on a real network.
const LATENCY: Duration = ms(2);
const JITTER_MS: u64 = 20;

/// Runs `spec`: the receiver's lines and the verdict.
pub fn run_plain_text(spec: &TextSpec) -> TextRun {
    match TextSim::new(spec.clone()) {
        Ok(mut sim) => {
            sim.run_to_end();
            sim.judge();
            sim.run
        }
        Err(why) => TextRun {
            command: spec.command(),
            violations: vec![format!("the run could not start: {why}")],
            ..TextRun::default()
        },
    }
}

impl TextSim {
    fn new(spec: TextSpec) -> Result<TextSim, String> {
        let mut rng = Rng::new(spec.seed ^ 0x7E47_11E5);
        let mut senders = Vec::new();
        let line_senders = if spec.direct {
            u32::from(!spec.original_app)
        } else {
            spec.senders
        };
        for s in 0..line_senders as usize {
            senders.push(line_sender(&mut rng, s, spec.lines, spec.direct));
        }
        if spec.original_app {
            let index = senders.len();
            senders.push(app_sender(&mut rng, index, spec.lines, spec.direct));
        }
        let receiver = if spec.direct {
            let peer = Peer::new(
                PeerSide::Acceptor,
                "listener",
                limits(),
                Security::insecure(),
                Timestamp::ZERO,
            )?;
            Receiver::Direct(Box::new(peer))
        } else {
            Receiver::Relay {
                server: Box::new(RelayServer::new(limits(), Security::insecure())),
                conns: Vec::new(),
                senders_by_id: BTreeMap::new(),
                pending: Vec::new(),
                timer: None,
            }
        };
        let mut sim = TextSim {
            sockets: senders.iter().map(|_| Socket::default()).collect(),
            queue: BTreeMap::new(),
            next: 0,
            now: Timestamp::ZERO,
            run: TextRun {
                command: spec.command(),
                ..TextRun::default()
            },
            spec,
            rng,
            senders,
            receiver,
        };
        sim.connect_all();
        Ok(sim)
    }

    /// Opens every connection: on a relay, the reading client first (it joins with an
    /// empty line, so it is client 0, the address of every line), then the senders.
    fn connect_all(&mut self) {
        if let Receiver::Relay { server, conns, .. } = &mut self.receiver {
            let reader = server.handle_connected(Timestamp::ZERO);
            server.handle_bytes(reader, b"\n", Timestamp::ZERO);
            for _ in 0..self.senders.len() {
                conns.push(server.handle_connected(Timestamp::ZERO));
            }
            conns.push(reader);
        }
        self.collect_output();
        for s in 0..self.senders.len() {
            for w in 0..self.senders[s].writes.len() {
                let at = self.senders[s].writes[w].at;
                self.schedule(at, Ev::Write(s, w));
            }
        }
    }

    fn schedule(&mut self, at: Timestamp, ev: Ev) {
        self.queue.insert((at, self.next), ev);
        self.next += 1;
    }

    /// A random delay of the driver: it gets round to things late, by up to `max_lag`
    /// (often not at all late, sometimes very).
    fn lag(&mut self) -> Duration {
        let max = self.spec.max_lag.as_micros() as u64;
        match self.rng.below(4) {
            0 => Duration::ZERO,
            1 => Duration::from_micros(self.rng.below(max / 10 + 1)),
            _ => Duration::from_micros(self.rng.below(max + 1)),
        }
    }

    fn run_to_end(&mut self) {
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            self.now = self.now.max(at);
            match ev {
                Ev::Write(s, w) => self.write(s, w),
                Ev::Arrive(s, bytes) => {
                    self.sockets[s].buffered.extend(bytes);
                    self.want_read(s);
                }
                Ev::Read(s) => {
                    self.sockets[s].read_scheduled = false;
                    self.read(s);
                }
                Ev::Check(s, due) => self.check(s, due),
                Ev::Fin(s) => {
                    self.sockets[s].fin = true;
                    self.want_read(s);
                }
                Ev::Timer(due) => self.timer(due),
            }
        }
    }

    /// A sender writes: the network delivers its bytes in random pieces, in order.
    fn write(&mut self, s: usize, w: usize) {
        let bytes = self.senders[s].writes[w].bytes.clone();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = (self.rng.between(1, 64) as usize).min(rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            let jitter = Duration::from_millis(self.rng.below(JITTER_MS + 1));
            let at = (self.now + LATENCY + jitter).max(self.sockets[s].last_arrival);
            self.sockets[s].last_arrival = at;
            self.schedule(at, Ev::Arrive(s, piece.to_vec()));
        }
        if w + 1 == self.senders[s].writes.len() {
            // The sender is done: it closes after a while (a person, then Ctrl-D).
            let at = self.sockets[s].last_arrival + ms(5_000);
            self.schedule(at, Ev::Fin(s));
        }
    }

    /// Bytes (or the FIN) are waiting: the driver will read them, when it gets round
    /// to it.
    fn want_read(&mut self, s: usize) {
        if self.sockets[s].read_scheduled || self.sockets[s].closed {
            return;
        }
        self.sockets[s].read_scheduled = true;
        let at = self.now + self.lag();
        self.schedule(at, Ev::Read(s));
    }

    /// One read: some or all of what is waiting, then the EOF once all is read.
    fn read(&mut self, s: usize) {
        if self.sockets[s].closed {
            return;
        }
        self.run.reads += 1;
        let waiting = self.sockets[s].buffered.len();
        if waiting == 0 {
            if self.sockets[s].fin {
                self.close(s);
            }
            return;
        }
        let n = match self.spec.max_read {
            0 => waiting,
            max => (self.rng.between(1, max as u64) as usize).min(waiting),
        };
        let bytes: Vec<u8> = self.sockets[s].buffered.drain(..n).collect();
        let now = self.now;
        match &mut self.receiver {
            Receiver::Relay { server, conns, .. } => server.handle_bytes(conns[s], &bytes, now),
            Receiver::Direct(peer) => peer.handle_bytes(&bytes, now),
        }
        self.collect_output();
        if !self.sockets[s].buffered.is_empty() || self.sockets[s].fin {
            // The driver loops while its socket has more.
            self.want_read(s);
        }
        self.schedule_check(s);
    }

    /// Asks the core when to look at the connection again; the driver comes back then,
    /// or later.
    fn schedule_check(&mut self, s: usize) {
        let due = match &self.receiver {
            Receiver::Relay { server, conns, .. } => server.read_idle_check(conns[s]),
            Receiver::Direct(peer) => peer.read_idle_check(),
        };
        if due == self.sockets[s].check {
            return;
        }
        self.sockets[s].check = due;
        if let Some(due) = due {
            let at = due.max(self.now) + self.lag();
            self.schedule(at, Ev::Check(s, due));
        }
    }

    /// The driver looks at a connection for its idle check: it reads, and only a read
    /// that finds nothing is a pause.
    fn check(&mut self, s: usize, due: Timestamp) {
        if self.sockets[s].check != Some(due) || self.sockets[s].closed {
            return;
        }
        self.run.checks += 1;
        self.sockets[s].check = None;
        if !self.sockets[s].buffered.is_empty() {
            self.read(s);
            return;
        }
        self.run.idle_reports += 1;
        let now = self.now;
        match &mut self.receiver {
            Receiver::Relay { server, conns, .. } => server.handle_read_idle(conns[s], now),
            Receiver::Direct(peer) => peer.handle_read_idle(now),
        }
        self.collect_output();
        self.schedule_check(s);
    }

    fn timer(&mut self, due: Timestamp) {
        if let Receiver::Relay { server, timer, .. } = &mut self.receiver
            && *timer == Some(due)
        {
            *timer = None;
            server.handle_timeout(self.now);
        }
        self.collect_output();
    }

    fn close(&mut self, s: usize) {
        self.sockets[s].closed = true;
        let now = self.now;
        match &mut self.receiver {
            Receiver::Relay { server, conns, .. } => {
                server.handle_end_of_stream(conns[s], now);
                server.handle_closed(conns[s], now);
            }
            Receiver::Direct(peer) => {
                peer.handle_end_of_stream(now);
                peer.handle_closed(now);
            }
        }
        self.collect_output();
    }

    /// Takes what the receiver produced: the reading client's lines (relay), or the
    /// listener's messages (direct). Everything else the relay writes is confirmed
    /// written and dropped.
    fn collect_output(&mut self) {
        let at = self.now.saturating_duration_since(Timestamp::ZERO);
        // The relay's timers (sweeps) run while anyone is connected: the run ends
        // when every sender has closed, not when the relay runs out of deadlines.
        let running = self.sockets.iter().any(|s| !s.closed);
        match &mut self.receiver {
            Receiver::Relay {
                server,
                conns,
                senders_by_id,
                pending,
                timer,
            } => {
                let reader = conns.last().copied();
                while let Some(t) = server.poll_transmit() {
                    server.handle_written(t.conn, t.bytes.len());
                    if Some(t.conn) == reader {
                        pending.extend_from_slice(&t.bytes);
                    }
                }
                while server.poll_close().is_some() {}
                while server.poll_event().is_some() {}
                for (s, conn) in conns.iter().enumerate() {
                    if let Some(id) = server.client_id(*conn) {
                        senders_by_id.entry(id.0).or_insert(s);
                    }
                }
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line[..end]).into_owned();
                    if line.starts_with("* ") {
                        continue; // its ID, joins, departures
                    }
                    let (from, text) = line.split_once(' ').unwrap_or((&line, ""));
                    let sender = from
                        .parse::<u32>()
                        .ok()
                        .and_then(|id| senders_by_id.get(&id).copied())
                        .unwrap_or(usize::MAX);
                    self.run.seen.push(TextLineSeen {
                        at,
                        sender,
                        text: text.to_owned(),
                    });
                }
                let next = server.poll_timeout();
                if next != *timer
                    && running
                    && let Some(due) = next
                {
                    *timer = Some(due);
                    let when = due.max(self.now);
                    self.queue.insert((when, self.next), Ev::Timer(due));
                    self.next += 1;
                }
            }
            Receiver::Direct(peer) => {
                while peer.poll_transmit().is_some() {}
                while let Some(e) = peer.poll_event() {
                    if let PeerEvent::Message { text, .. } = e {
                        self.run.seen.push(TextLineSeen {
                            at,
                            sender: 0,
                            text,
                        });
                    }
                }
            }
        }
    }

    /// Compares what the receiver got from each sender with what it sent.
    fn judge(&mut self) {
        let mut got: Vec<Vec<String>> = vec![Vec::new(); self.senders.len()];
        for line in &self.run.seen {
            match got.get_mut(line.sender) {
                Some(lines) => lines.push(line.text.clone()),
                None => self
                    .run
                    .violations
                    .push(format!("a line from no sender of the run: {:?}", line.text)),
            }
        }
        for (s, sender) in self.senders.iter().enumerate() {
            let lines = &got[s];
            match sender.kind {
                Kind::Lines => {
                    self.run.sent_lines += sender.units.len() as u64;
                    if *lines != sender.units {
                        let first = lines
                            .iter()
                            .zip(&sender.units)
                            .position(|(a, b)| a != b)
                            .unwrap_or(lines.len().min(sender.units.len()));
                        self.run.violations.push(format!(
                            "s{s} sent {} lines, {} arrived; the first that differs (line {first}): sent {:?}, got {:?}",
                            sender.units.len(),
                            lines.len(),
                            sender.units.get(first),
                            lines.get(first)
                        ));
                    }
                }
                Kind::OriginalApp => {
                    self.run.sent_messages += sender.units.len() as u64;
                    let problem = app_problem(&sender.units, lines, self.spec.max_lag.is_zero());
                    if let Some(p) = problem {
                        self.run
                            .violations
                            .push(format!("s{s} (the original app): {p}"));
                    }
                }
            }
        }
    }
}

/// What is wrong with the lines the original app's messages arrived as, if anything:
/// each line must be whole messages, in order, all of them; with a driver that never
/// lags, one line each. (The first message's relay address is not part of its text;
/// a later message merged into a line keeps its address, as typed.)
fn app_problem(sent: &[String], lines: &[String], no_lag: bool) -> Option<String> {
    let mut next = 0;
    for (k, line) in lines.iter().enumerate() {
        let mut rebuilt = String::new();
        let start = next;
        while rebuilt.len() < line.len() + 2 && next < sent.len() {
            rebuilt.push_str(&sent[next]);
            next += 1;
            if strip_address(&rebuilt) == line.as_str() {
                break;
            }
        }
        if strip_address(&rebuilt) != line.as_str() {
            return Some(format!(
                "line {k} {line:?} is not whole messages (from message {start})"
            ));
        }
        if no_lag && next - start > 1 {
            return Some(format!(
                "line {k} {line:?} merged messages {start}..{next} with no driver lag"
            ));
        }
    }
    (next != sent.len()).then(|| format!("{} of {} messages arrived", next, sent.len()))
}

/// A relay message's text: the line without its `ID ` address (unchanged on a direct
/// conversation, where messages carry none).
fn strip_address(raw: &str) -> &str {
    match raw.split_once(' ') {
        Some((id, text)) if id.parse::<u32>().is_ok() => text,
        _ => raw,
    }
}

/// A line-by-line sender: each line written in one to three pieces close together;
/// after its first line, now and then a long pause in the middle of a line (a slow
/// typist on `telnet`, a congested link).
fn line_sender(rng: &mut Rng, s: usize, lines: u32, direct: bool) -> Sender {
    let mut at = Timestamp::ZERO + ms(10 + s as u64);
    let mut writes = Vec::new();
    let mut units = Vec::new();
    for k in 0..lines {
        let pad: String = (0..rng.below(40)).map(|_| 'x').collect();
        let text = format!("s{s} line {k}{pad}");
        let raw = if direct {
            format!("{text}\n")
        } else {
            format!("0 {text}\n")
        };
        units.push(text);
        let bytes = raw.into_bytes();
        let cuts = rng.below(3) as usize;
        let mut points: Vec<usize> = (0..cuts)
            .map(|_| rng.between(1, bytes.len() as u64 - 1) as usize)
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut start = 0;
        for end in points.into_iter().chain([bytes.len()]) {
            if end <= start {
                continue;
            }
            writes.push(Write {
                at,
                bytes: bytes[start..end].to_vec(),
            });
            start = end;
            // Within the first line, pieces come close together (it is not yet known
            // to be a line-by-line sender); later, sometimes seconds apart.
            at += if k > 0 && rng.chance(10) {
                ms(rng.between(300, 3_000))
            } else {
                ms(rng.below(50))
            };
        }
        at += ms(rng.below(30));
    }
    Sender {
        kind: Kind::Lines,
        writes,
        units,
    }
}

/// The original app's sender: each message one write, no newline, a person's pause
/// (over twice the 200 ms) between them.
fn app_sender(rng: &mut Rng, s: usize, messages: u32, direct: bool) -> Sender {
    let mut at = Timestamp::ZERO + ms(10 + s as u64);
    let mut writes = Vec::new();
    let mut units = Vec::new();
    for k in 0..messages {
        let pad: String = (0..rng.below(40)).map(|_| 'y').collect();
        let raw = if direct {
            format!("app message {k}{pad}")
        } else {
            format!("0 app message {k}{pad}")
        };
        units.push(raw.clone());
        writes.push(Write {
            at,
            bytes: raw.into_bytes(),
        });
        at += PAUSE * 2 + ms(JITTER_MS) + ms(rng.below(500));
    }
    Sender {
        kind: Kind::OriginalApp,
        writes,
        units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_and_split_messages_are_told_apart() {
        let sent: Vec<String> = ["0 a b", "0 c", "0 d"].map(String::from).to_vec();
        let whole = ["a b", "c", "d"].map(String::from).to_vec();
        assert_eq!(app_problem(&sent, &whole, true), None);
        let merged = ["a b0 c", "d"].map(String::from).to_vec();
        assert_eq!(app_problem(&sent, &merged, false), None);
        assert!(
            app_problem(&sent, &merged, true).is_some(),
            "no lag, no merge"
        );
        let split = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert!(app_problem(&sent, &split, false).is_some());
        let lost = ["a b", "c"].map(String::from).to_vec();
        assert!(app_problem(&sent, &lost, false).is_some());
    }
}
