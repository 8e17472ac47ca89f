//! The relay's side of the session layer (`crate::session`): acknowledgements both
//! ways, `Delivered` receipts, and sessions held for clients whose connection was
//! lost, until they come back (`Resume`) or the grace period ends.
//!
//! Why the relay holds more than a queue: a client on bad Wi-Fi loses its connection
//! while messages are on their way to it. The relay keeps what it sent each client
//! until the client acknowledges it, so that it can send it again on the client's
//! next connection, and it holds the client's ID meanwhile. For senders, it turns
//! those acknowledgements into receipts: `Delivered { seq }` once every recipient of
//! every message up to `seq` has read it, or an `Error { undelivered }` naming the
//! recipient that left for good before reading it. So no message is lost without its
//! sender hearing of it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Client, ConnState, Connection, RelayServer, ServerEvent, error_report};
use crate::decode::RawFrame;
use crate::error::ErrorCode;
use crate::frame::Frame;
use crate::id::{ClientId, ConnId};
use crate::outbound::Outbound;
use crate::secure::PublicKey;
use crate::session::{Retained, same_token};
use crate::time::Timestamp;

/// A connection whose `Hello` comes back to a session: what it proved so far, kept
/// until its `Resume` says which session.
#[derive(Debug, Clone)]
pub(super) struct Returning {
    key: Option<PublicKey>,
    /// It can move to this relay from another of its cluster (`CAP_MOVES`).
    moves: bool,
}

/// One `Deliver` a client has not yet acknowledged: where it ends in the client's
/// session stream, and whose message it is.
#[derive(Debug, Clone, Copy)]
struct Owing {
    end: u64,
    from: ClientId,
    seq: u64,
}

/// A broadcast batch a client has not yet acknowledged all of: where it starts in the
/// client's session stream, whose messages they are, and each one's sequence number
/// and end within the batch (the same for every recipient, so shared: one entry per
/// recipient, not one per message per recipient, which was a fifth of the relay's
/// CPU in a broadcast to 1,000).
#[derive(Debug, Clone)]
struct OwedBatch {
    start: u64,
    from: ClientId,
    messages: Arc<[(u64, usize)]>,
    /// The first message not yet acknowledged.
    next: usize,
    /// How many of `messages` were queued to this client (all, unless its queue
    /// filled up partway).
    queued: usize,
}

impl OwedBatch {
    /// Where the next message not yet acknowledged ends in the client's stream.
    fn next_end(&self) -> Option<u64> {
        let &(_, end) = self.messages.get(..self.queued)?.get(self.next)?;
        Some(self.start + end as u64)
    }
}

/// How long an `Ack` or a receipt (`Delivered`) for a client with nothing else
/// queued waits to ride with other traffic. Long enough that a client sending now
/// and then usually gives it company (at 10,000 paced clients, 100 ms left most
/// riders alone: a lone write each, and the relay's CPU near its limit); short enough
/// for a receipt (what a bot waiting for one sees) and for the window in which a
/// relay crash leaves a delivered message unconfirmed.
pub(super) const RIDER_DELAY: core::time::Duration = core::time::Duration::from_millis(1_000);

/// Riders fall due on ticks of this, so that a busy relay wakes for them a few
/// dozen times a second, not once each; and a tick's lone writes are only those
/// queued during one tick (on ticks as long as the 1 s delay, 10,000 clients sending
/// 5,000 msg/s in all saw a p99 of 30 ms, against 9 ms on these).
const RIDER_TICK: core::time::Duration = core::time::Duration::from_millis(50);

/// When a rider queued at `now` must go: `RIDER_DELAY` on, rounded up to a tick.
fn rider_tick(now: Timestamp) -> Timestamp {
    let tick = RIDER_TICK.as_micros() as u64;
    let due = (now + RIDER_DELAY).as_micros();
    Timestamp::from_micros(due.div_ceil(tick) * tick)
}

/// The deliveries a client had not acknowledged when it left for good.
pub(super) type Owed = VecDeque<(ClientId, u64)>;

/// An admitted client's session (it offered `CAP_RESUME`).
#[derive(Debug, Clone)]
pub(super) struct ClientSession {
    /// What it must show to come back to this session.
    pub(super) token: [u8; 16],
    /// Bytes of its session stream handled.
    received: u64,
    /// What the last `Ack` we sent it said.
    ack_sent: u64,
    /// Deliveries to it not yet acknowledged, in stream order: single ones, and
    /// broadcast batches (the two interleave by stream offset).
    owing: VecDeque<Owing>,
    owing_batches: VecDeque<OwedBatch>,
    /// Its own messages routed to recipients that have not all acknowledged them:
    /// sequence number and how many acknowledgements are still owed, in order.
    in_flight: VecDeque<(u64, u32)>,
    /// What the last `Delivered` we sent it said.
    delivered_sent: u64,
    /// Whether it is listed in `RelayServer::delivered_due` already.
    due: bool,
    /// Whether its `Ack` or receipt waits among `RelayServer::riders`, and which of
    /// its entries there is the live one (an entry left by one that rode along
    /// meanwhile must not force out the next).
    pub(super) rider: bool,
    rider_gen: u32,
}

impl ClientSession {
    /// Counts a frame of the client's that is being handled.
    pub(super) fn count_received(&mut self, raw: &RawFrame<'_>) {
        self.received += raw.session_bytes();
    }

    /// The client now owes an acknowledgement for `from`'s message `seq`, which ends
    /// at offset `end` of its stream.
    pub(super) fn owe(&mut self, end: u64, from: ClientId, seq: u64) {
        self.owing.push_back(Owing { end, from, seq });
    }

    /// The client now owes acknowledgements for the first `queued` of `from`'s
    /// broadcast `messages` (sequence number, end within the batch), queued to it
    /// from offset `start` of its stream.
    pub(super) fn owe_batch(
        &mut self,
        start: u64,
        from: ClientId,
        messages: &Arc<[(u64, usize)]>,
        queued: usize,
    ) {
        if queued > 0 {
            self.owing_batches.push_back(OwedBatch {
                start,
                from,
                messages: Arc::clone(messages),
                next: 0,
                queued,
            });
        }
    }

    /// Takes the next delivery acknowledged by `upto`, in stream order.
    fn pop_acknowledged(&mut self, upto: u64) -> Option<(ClientId, u64)> {
        let one = self.owing.front().map(|o| o.end).filter(|&end| end <= upto);
        let batch = self
            .owing_batches
            .front()
            .and_then(OwedBatch::next_end)
            .filter(|&end| end <= upto);
        match (one, batch) {
            (Some(a), b) if b.is_none_or(|b| a < b) => {
                self.owing.pop_front().map(|o| (o.from, o.seq))
            }
            (_, Some(_)) => {
                let b = self.owing_batches.front_mut()?;
                let seq = b.messages.get(b.next).map(|&(seq, _)| seq)?;
                b.next += 1;
                let from = b.from;
                if b.next >= b.queued {
                    self.owing_batches.pop_front();
                }
                Some((from, seq))
            }
            _ => None,
        }
    }
}

/// Takes what a departing client still owed acknowledgements for.
pub(super) fn take_owed(client: &mut Client) -> Owed {
    client
        .session
        .as_mut()
        .map(|s| {
            let mut owed: Vec<(u64, ClientId, u64)> = std::mem::take(&mut s.owing)
                .into_iter()
                .map(|o| (o.end, o.from, o.seq))
                .collect();
            for b in std::mem::take(&mut s.owing_batches) {
                let rest = b.messages.get(b.next..b.queued).unwrap_or_default();
                owed.extend(
                    rest.iter()
                        .map(|&(seq, end)| (b.start + end as u64, b.from, seq)),
                );
            }
            owed.sort_unstable_by_key(|&(end, _, _)| end);
            owed.into_iter().map(|(_, from, seq)| (from, seq)).collect()
        })
        .unwrap_or_default()
}

impl RelayServer {
    /// A fresh session for a client being admitted, with a token from the relay's
    /// injected randomness.
    pub(super) fn new_session(&mut self) -> Box<ClientSession> {
        let seed = self.entropy.next_seed();
        let mut token = [0u8; 16];
        token.copy_from_slice(seed.get(..16).unwrap_or(&[0; 16]));
        Box::new(ClientSession {
            token,
            received: 0,
            ack_sent: 0,
            owing: VecDeque::new(),
            owing_batches: VecDeque::new(),
            in_flight: VecDeque::new(),
            delivered_sent: 0,
            due: false,
            rider: false,
            rider_gen: 0,
        })
    }

    pub(super) fn has_session(&self, conn: ConnId) -> bool {
        matches!(
            self.conns.get(&conn).map(|c| &c.state),
            Some(ConnState::Admitted(Client {
                session: Some(_),
                ..
            }))
        )
    }

    /// A client's `Hello` (and handshake) passed: it comes back to a session, which
    /// its `Resume` names next.
    pub(super) fn await_resume(&mut self, conn: ConnId, key: Option<PublicKey>, moves: bool) {
        if let Some(Connection {
            state: ConnState::Handshaking { resume, .. },
            ..
        }) = self.conns.get_mut(&conn)
        {
            *resume = Some(Box::new(Returning { key, moves }));
        }
    }

    /// A `Resume` from a connection whose `Hello` said it comes back: if it names a
    /// session we hold, with its token, its key and a stream offset we can resend
    /// from, the session moves to this connection; otherwise the connection is
    /// refused (`resume-failed`) and the client joins anew.
    pub(super) fn on_resume(
        &mut self,
        conn: ConnId,
        id: ClientId,
        token: [u8; 16],
        received: u64,
        now: Timestamp,
    ) {
        let returning = match self.conns.get_mut(&conn).map(|c| &mut c.state) {
            Some(ConnState::Handshaking { resume, .. }) => resume.take(),
            _ => None,
        };
        let Some(returning) = returning else {
            let detail = "Resume from a connection whose Hello did not say it resumes";
            self.drop_pending(conn, ErrorCode::UnexpectedFrame, detail);
            return;
        };
        let grace = self.limits.resume_grace.as_secs();
        let old = self.clients.get(&id).copied().filter(|old| {
            matches!(
                self.conns.get(old).map(|c| &c.state),
                Some(ConnState::Admitted(Client {
                    session: Some(s),
                    key,
                    ..
                })) if same_token(&s.token, &token) && *key == returning.key
            )
        });
        let Some(old) = old else {
            // Not ours: perhaps a session another relay of the cluster held.
            if returning.moves && self.adopt_moved(conn, id, returning.key, received, now) {
                return;
            }
            let reason = format!(
                "this relay does not hold a session for client {id} (it restarted, or more than {grace} s passed); join again as a new client"
            );
            self.refuse(conn, ErrorCode::ResumeFailed, reason);
            return;
        };
        let Some(mut c) = self.conns.remove(&old) else {
            return;
        };
        let Some(mut retained) = c.out.take_retained() else {
            self.conns.insert(old, c);
            return;
        };
        if received < retained.base() || received > retained.end() {
            c.out
                .adopt_retained(retained, self.limits.relay_queue_bytes());
            self.conns.insert(old, c);
            let reason = format!(
                "client {id} claims to hold {received} bytes of its session, which this relay never sent or already saw acknowledged"
            );
            self.refuse(conn, ErrorCode::ResumeFailed, reason);
            return;
        }
        let _ = retained.acknowledge(received);
        let ConnState::Admitted(mut client) = std::mem::replace(&mut c.state, ConnState::Closing)
        else {
            return;
        };
        match c.parked_until.take() {
            Some(until) => {
                self.parked.remove(&(until, old));
            }
            None => {
                // Its old connection still looked alive: it is not; close it quietly.
                self.conns.insert(old, c);
                self.closes.push_back(old);
            }
        }
        client.last_heard = now;
        let their_received = client.session.as_ref().map_or(0, |s| s.received);
        let max = self.limits.relay_queue_bytes();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let ConnState::Handshaking { deadline, .. } = c.state {
            self.deadlines.remove(&(deadline, conn));
        }
        c.out.push(&Frame::Resumed {
            received: their_received,
        });
        c.out.adopt_retained(retained, max);
        let _ = c.out.resend_from(received);
        c.state = ConnState::Admitted(client);
        self.clients.insert(id, conn);
        self.mark_ready(conn);
        self.events.push_back(ServerEvent::Resumed { conn, id });
        self.publish_presence(conn);
        self.told_held.retain(|&(away, _)| away != id);
        if self.presence_on() {
            self.notify_others(id, &Frame::Back { id });
        }
        // What it holds counts as acknowledged.
        self.settle_acknowledged(conn, received);
    }

    /// An `Ack` from a client: it handled our stream up to `received`.
    pub(super) fn on_ack(&mut self, conn: ConnId, received: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Err(beyond) = c.out.acknowledge(received) {
            let detail = format!(
                "acknowledged {} bytes of a stream of {}",
                beyond.claimed, beyond.sent
            );
            self.close_client(conn, ErrorCode::MalformedFrame, detail, false);
            return;
        }
        self.settle_acknowledged(conn, received);
    }

    /// The deliveries to `conn` up to stream offset `upto` were read: their senders
    /// owe one acknowledgement less. (The hot path of receipts: one acknowledgement
    /// covers a read's worth of deliveries, mostly from few senders, so each run of
    /// one sender's is settled with one lookup.)
    fn settle_acknowledged(&mut self, conn: ConnId, upto: u64) {
        let mut read = std::mem::take(&mut self.settling);
        let mut reader = None;
        let mut via_mail = false;
        if let Some(ConnState::Admitted(Client {
            id,
            session: Some(session),
            via_mail: mailed,
            ..
        })) = self.conns.get_mut(&conn).map(|c| &mut c.state)
        {
            reader = Some(*id);
            via_mail = *mailed;
            while let Some(delivery) = session.pop_acknowledged(upto) {
                read.push(delivery);
            }
        }
        if let (Some(id), Some(cluster)) = (reader, self.cluster.as_mut()) {
            cluster.letters_read(id, upto);
        }
        let mut start = 0;
        while let Some(&(from, _)) = read.get(start) {
            let run = read
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|&&(f, _)| f == from)
                .count();
            let settled = read.get(start..start + run).unwrap_or_default();
            // Came through the bus: from another relay, or to or from a session that
            // moved here.
            let mailed = via_mail
                || self
                    .clients
                    .get(&from)
                    .and_then(|c| self.conns.get(c))
                    .is_some_and(|c| c.is_remote() || c.via_mail());
            match (mailed, reader, self.cluster.as_mut()) {
                // Its relay tells the sender (through the bus, even when that is this
                // relay, for a reader whose messages all come through its mailbox:
                // they wait for the receipt there).
                (true, Some(by), Some(cluster)) => {
                    cluster.receipt(from, by, settled.iter().map(|&(_, s)| s).collect());
                }
                _ => self.settle_run(from, settled),
            }
            start += run;
        }
        read.clear();
        self.settling = read;
    }

    /// One of `from`'s recipients acknowledged (or will never acknowledge) its
    /// message `seq`.
    pub(super) fn settle(&mut self, from: ClientId, seq: u64) {
        self.settle_run(from, &[(from, seq)]);
    }

    /// Settles, for one recipient, messages of `from` (in increasing order).
    fn settle_run(&mut self, from: ClientId, run: &[(ClientId, u64)]) {
        let Some(&sender) = self.clients.get(&from) else {
            return;
        };
        if self.routing.0 == Some(sender) {
            // Messages of the read under way may be among them (their recipient was
            // cut off meanwhile).
            self.apply_routed();
        }
        let Some(ConnState::Admitted(Client {
            session: Some(session),
            ..
        })) = self.conns.get_mut(&sender).map(|c| &mut c.state)
        else {
            return;
        };
        let mut at = 0;
        for &(_, seq) in run {
            // In order of sequence number, as the run is: look where the last one was
            // first (the front, for a sender writing to one client).
            if session.in_flight.get(at).is_none_or(|&(s, _)| s != seq) {
                at = session.in_flight.partition_point(|&(s, _)| s < seq);
            }
            if let Some(entry) = session.in_flight.get_mut(at)
                && entry.0 == seq
            {
                entry.1 = entry.1.saturating_sub(1);
                at += 1;
            }
        }
        if !session.due {
            session.due = true;
            self.delivered_due.push(sender);
        }
    }

    /// A message of the client on `sender` numbered `seq` was routed; it waits for
    /// `owed` acknowledgements (0: it is settled already, delivered to clients
    /// without a session or refused with an `Error`).
    pub(super) fn routed(&mut self, sender: ConnId, seq: u64, owed: u32) {
        // The connection being read routes every message of its read: collected, and
        // added to its session in one go at the end of the read.
        if self.routing.0 == Some(sender) {
            self.routing.1.push((seq, owed));
            return;
        }
        if let Some(ConnState::Admitted(Client {
            session: Some(session),
            ..
        })) = self.conns.get_mut(&sender).map(|c| &mut c.state)
        {
            if owed > 0 {
                session.in_flight.push_back((seq, owed));
            }
            if !session.due {
                session.due = true;
                self.delivered_due.push(sender);
            }
        }
    }

    /// Starts collecting what the read of `conn` routes.
    pub(super) fn begin_routing(&mut self, conn: ConnId) {
        self.routing.0 = Some(conn);
    }

    /// Adds what the read under way routed to its sender's session.
    pub(super) fn apply_routed(&mut self) {
        let Some(sender) = self.routing.0 else {
            return;
        };
        let mut batch = std::mem::take(&mut self.routing.1);
        if let Some(ConnState::Admitted(Client {
            session: Some(session),
            ..
        })) = self.conns.get_mut(&sender).map(|c| &mut c.state)
            && !batch.is_empty()
        {
            session
                .in_flight
                .extend(batch.iter().copied().filter(|&(_, owed)| owed > 0));
            if !session.due {
                session.due = true;
                self.delivered_due.push(sender);
            }
        }
        batch.clear();
        self.routing.1 = batch;
    }

    /// Ends the read under way: what it routed goes to its sender's session.
    pub(super) fn end_routing(&mut self) {
        self.apply_routed();
        self.routing.0 = None;
    }

    /// Sends what waits for the clients whose acknowledgement or receipt became due
    /// in this input (or, with `force`, for every client still waiting): its `Ack`
    /// (how much of its stream was handled) and its receipt (`Delivered`: up to which
    /// sequence number its messages are settled). Both ride with whatever else is
    /// queued for the client; for a client with nothing queued they wait for
    /// company (the next bytes queued for it, see `mark_ready`) up to `RIDER_DELAY`,
    /// on their own they would cost a write, a wake-up and a packet each, which
    /// doubled the relay's work when every client sends.
    pub(super) fn flush_delivered(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let mut due = std::mem::take(&mut self.delivered_due);
        due.sort_unstable();
        due.dedup();
        for conn in due.iter().copied() {
            self.emit_riders(conn, false);
        }
        due.clear();
        self.delivered_due = due;
        // Those that waited their time go on their own: they fall due on ticks, so
        // these are the ones queued during one `RIDER_TICK`.
        while let Some(&(at, conn, generation)) = self.riders.front() {
            if at > now {
                break;
            }
            self.riders.pop_front();
            let live = matches!(
                self.conns.get(&conn).map(|c| &c.state),
                Some(ConnState::Admitted(Client { session: Some(s), .. }))
                    if s.rider && s.rider_gen == generation
            );
            if live {
                self.emit_riders(conn, true);
            }
        }
    }

    /// When the first `Ack` or receipt that waits for company must go on its own.
    pub(super) fn riders_deadline(&self) -> Option<Timestamp> {
        self.riders.front().map(|&(at, _, _)| at)
    }

    /// Queues client `conn`'s `Ack` and receipt if they are due and have company (or
    /// `force`); else it waits among the riders.
    pub(super) fn emit_riders(&mut self, conn: ConnId, force: bool) {
        if self.routing.0 == Some(conn) {
            // A notice to this client in the middle of routing its read (a `Held`)
            // makes its receipt ride along: the messages of the read routed so far
            // must be counted first, or the receipt would cover them unsettled.
            self.apply_routed();
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let parked = c.parked_until.is_some();
        let mut send_now = force || parked || c.out.has_queued();
        let ConnState::Admitted(client) = &mut c.state else {
            return;
        };
        // Much unacknowledged: the client holds it for us; tell it now.
        if let Some(s) = client.session.as_ref() {
            send_now |= s.received - s.ack_sent >= 16 * 1024;
        }
        let last_seq = client.last_seq;
        let Some(session) = client.session.as_mut() else {
            return;
        };
        session.due = false;
        while session
            .in_flight
            .front()
            .is_some_and(|&(_, owed)| owed == 0)
        {
            session.in_flight.pop_front();
        }
        let upto = session
            .in_flight
            .front()
            .map_or(last_seq, |&(seq, _)| seq.saturating_sub(1));
        let receipt = upto > session.delivered_sent;
        let ack = !parked && session.received > session.ack_sent;
        if !receipt && !ack {
            session.rider = false;
            return;
        }
        if !send_now {
            if !session.rider {
                session.rider = true;
                session.rider_gen = session.rider_gen.wrapping_add(1);
                self.riders
                    .push_back((rider_tick(self.now), conn, session.rider_gen));
            }
            return;
        }
        session.rider = false;
        let received = session.received;
        if receipt {
            session.delivered_sent = upto;
        }
        // Past the bound a new `Ack` waits (it is never what cuts a client off).
        if ack && c.out.push_ack(received) {
            session.ack_sent = received;
        } else if ack {
            session.rider = true;
            session.rider_gen = session.rider_gen.wrapping_add(1);
            self.riders
                .push_back((rider_tick(self.now), conn, session.rider_gen));
        }
        if receipt {
            self.enqueue(conn, &Frame::Delivered { seq: upto });
        }
        self.mark_ready(conn);
    }

    /// Now and then (with the sweep for silent clients): clients with nothing in
    /// flight give back the memory their session bookkeeping grew to.
    pub(super) fn release_idle_buffers(&mut self) {
        for conn in self.clients.values() {
            let Some(c) = self.conns.get_mut(conn) else {
                continue;
            };
            c.out.release_if_idle();
            if let ConnState::Admitted(Client {
                session: Some(session),
                ..
            }) = &mut c.state
            {
                if session.owing.is_empty() && session.owing.capacity() > 16 {
                    session.owing = VecDeque::new();
                }
                if session.owing_batches.is_empty() && session.owing_batches.capacity() > 16 {
                    session.owing_batches = VecDeque::new();
                }
                if session.in_flight.is_empty() && session.in_flight.capacity() > 16 {
                    session.in_flight = VecDeque::new();
                }
            }
        }
    }

    /// After a read from a client: its `Ack` is due (see `flush_delivered`).
    pub(super) fn send_ack(&mut self, conn: ConnId, now: Timestamp) {
        if self.has_session(conn) {
            self.delivered_due.push(conn);
        }
        self.flush_delivered(now);
    }

    /// Client `id` left for good: the senders of the deliveries it never read are told
    /// they did not reach it.
    pub(super) fn report_undelivered(&mut self, id: ClientId, code: ErrorCode, owed: Owed) {
        for (from, seq) in owed {
            if from == id {
                continue;
            }
            if let Some(&sender) = self.clients.get(&from) {
                let message = format!(
                    "your message {seq} did not reach client {id}: it left ({code}) before reading it"
                );
                let report = error_report(ErrorCode::Undelivered, seq, Some(id), message);
                self.enqueue(sender, &report);
            }
            self.settle(from, seq);
        }
    }

    /// Holds `client`'s session after its connection was lost (`code`), with the
    /// session stream it had not acknowledged, until it comes back or the grace
    /// period ends. It stays online meanwhile: others may write to it.
    pub(super) fn park(
        &mut self,
        client: Client,
        retained: Option<Retained>,
        code: ErrorCode,
        now: Timestamp,
    ) {
        let until = now + self.limits.resume_grace;
        let id = client.id;
        let handle = ConnId(self.next_conn);
        self.next_conn += 1;
        let mut out = Outbound::new(self.limits.relay_queue_bytes());
        out.adopt_retained(
            retained.unwrap_or_default(),
            self.limits.relay_queue_bytes(),
        );
        let connection = Connection::without_transport(client, out, Some(until), code);
        self.conns.insert(handle, connection);
        self.clients.insert(id, handle);
        self.parked.insert((until, handle));
        self.publish_presence(handle);
        self.events
            .push_back(ServerEvent::Parked { id, code, until });
        if self.presence_on() {
            let grace_ms = u32::try_from(self.limits.resume_grace.as_millis()).unwrap_or(u32::MAX);
            self.notify_others(id, &Frame::Away { id, code, grace_ms });
        }
    }

    /// A client with a session went silent: its connection is closed without a word
    /// (it may be half open, and the client may still be there to resume), and its
    /// session is held.
    pub(super) fn park_silent(&mut self, conn: ConnId, now: Timestamp) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ConnState::Admitted(client) = std::mem::replace(&mut c.state, ConnState::Closing)
        else {
            return;
        };
        let retained = c.out.take_retained();
        c.out.discard_queued();
        self.closes.push_back(conn);
        self.park(client, retained, ErrorCode::PeerTimeout, now);
    }

    /// Ends the sessions whose grace period is over: those clients are gone.
    pub(super) fn expire_parked(&mut self, now: Timestamp) {
        while let Some(&(until, conn)) = self.parked.first() {
            if until > now {
                break;
            }
            let grace = self.limits.resume_grace.as_secs();
            let code = self
                .conns
                .get(&conn)
                .map_or(ErrorCode::ConnectionLost, |c| c.lost_by);
            let detail = format!(
                "its connection was lost ({code}) and it did not come back within {grace} s"
            );
            self.close_client(conn, code, detail, false);
            // `close_client` forgets a held session; make sure the loop advances.
            self.parked.remove(&(until, conn));
            self.conns.remove(&conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use crate::test_support::{Wire, party_security};
    use crate::{ClientEvent, ClientId, ErrorCode, Limits, Timestamp};

    const T: Timestamp = Timestamp::ZERO;

    /// The texts client `i` was shown, in order, from whom.
    fn texts(w: &mut Wire, i: usize) -> Vec<(u32, String)> {
        w.take_messages(i)
    }

    #[test]
    fn a_client_that_comes_back_gets_its_id_and_loses_and_repeats_nothing() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let b = w.join("b");
        w.client(a).send_chat(ClientId(1), "one", T).unwrap();
        w.pump();
        // Two more reach the relay, but b stops reading and its link breaks before
        // they arrive.
        w.clients[b].stalled = true;
        w.client(a).send_chat(ClientId(1), "two", T).unwrap();
        w.client(a).send_chat(ClientId(1), "three", T).unwrap();
        w.pump();
        w.cut(b);
        assert!(
            w.take_events(b)
                .iter()
                .any(|e| matches!(e, ClientEvent::ConnectionLost { .. }))
        );
        // While b is away: a writes to it (held for it), and b types (kept).
        w.client(a).send_chat(ClientId(1), "four", T).unwrap();
        w.client(b)
            .send_chat(ClientId(0), "typed while away", T)
            .unwrap();
        w.pump();
        assert_eq!(w.server.online(), 2, "b's place is held");
        assert!(w.client(b).poll_reconnect().is_some());
        w.reconnect(b);
        let events = w.take_events(b);
        assert!(
            events.contains(&ClientEvent::Resumed { id: ClientId(1) }),
            "{events:?}"
        );
        let shown: Vec<String> = events
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message { text, .. } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(shown, ["two", "three", "four"]);
        assert_eq!(texts(&mut w, a), vec![(1, "typed while away".to_owned())]);
        // And it goes on as before, nothing shown twice.
        w.client(a).send_chat(ClientId(1), "five", T).unwrap();
        w.pump();
        assert_eq!(texts(&mut w, b), vec![(0, "five".to_owned())]);
        assert_eq!(w.client(b).id(), Some(ClientId(1)));
    }

    #[test]
    fn an_away_client_is_announced_marked_in_rosters_and_its_senders_told_once() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let b = w.join("b");
        let c = w.join("c");
        w.pump();
        w.take_events(a);
        w.take_events(c);
        w.cut(b);
        let grace = Limits::default().resume_grace;
        let away = ClientEvent::Away {
            id: ClientId(1),
            code: ErrorCode::ConnectionLost,
            wait: grace,
        };
        assert!(w.take_events(c).contains(&away), "c sees b away at once");
        assert!(w.take_events(a).contains(&away));
        // Two messages to b: the sender is told once that they wait, and until when.
        let seq = w.client(a).send_chat(ClientId(1), "one", T).unwrap();
        w.client(a).send_chat(ClientId(1), "two", T).unwrap();
        w.pump();
        let held: Vec<ClientEvent> = w
            .take_events(a)
            .into_iter()
            .filter(|e| matches!(e, ClientEvent::Held { .. }))
            .collect();
        assert_eq!(
            held,
            vec![ClientEvent::Held {
                to: ClientId(1),
                seq,
                wait: grace
            }]
        );
        assert!(
            w.take_events(c)
                .iter()
                .all(|e| !matches!(e, ClientEvent::Held { .. })),
            "only the sender is told"
        );
        // `/who` marks it.
        w.client(c).request_roster(T);
        w.pump();
        let roster = w.take_events(c).into_iter().find_map(|e| match e {
            ClientEvent::Roster { entries, .. } => Some(entries),
            _ => None,
        });
        let marks: Vec<(u32, bool)> = roster
            .unwrap_or_default()
            .iter()
            .map(|e| (e.id.0, e.away))
            .collect();
        assert_eq!(marks, vec![(0, false), (1, true), (2, false)]);
        // Back: everyone is told, and b gets what waited.
        w.reconnect(b);
        assert!(
            w.take_events(c)
                .contains(&ClientEvent::Back { id: ClientId(1) })
        );
        let got: Vec<String> = w.take_messages(b).into_iter().map(|(_, t)| t).collect();
        assert_eq!(got, ["one", "two"]);
        // A later absence tells the sender again.
        w.cut(b);
        w.client(a).send_chat(ClientId(1), "three", T).unwrap();
        w.pump();
        assert!(
            w.take_events(a)
                .iter()
                .any(|e| matches!(e, ClientEvent::Held { .. }))
        );
    }

    #[test]
    fn a_sender_is_told_what_never_reached_a_client_that_did_not_come_back() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let b = w.join("b");
        w.clients[b].stalled = true;
        let seq = w.client(a).send_chat(ClientId(1), "unread", T).unwrap();
        w.pump();
        w.cut(b);
        w.take_events(a);
        let grace = Limits::default().resume_grace;
        w.advance(T + grace);
        let events = w.take_events(a);
        let undelivered = events.iter().position(|e| {
            matches!(e, ClientEvent::Error(r) if r.code == ErrorCode::Undelivered
                && r.seq == seq && r.subject == Some(ClientId(1)))
        });
        let left = events.iter().position(|e| {
            matches!(
                e,
                ClientEvent::Left {
                    id: ClientId(1),
                    code: ErrorCode::ConnectionLost
                }
            )
        });
        assert!(
            undelivered.is_some() && left.is_some(),
            "the sender learns which message, then that b left: {events:?}"
        );
        assert!(
            events.contains(&ClientEvent::Delivered { seq }),
            "{events:?}"
        );
        // b gave up too (its own grace ended); a late dial would be refused.
        let b_events = w.take_events(b);
        assert!(
            b_events.iter().any(|e| matches!(
                e,
                ClientEvent::Disconnected {
                    code: ErrorCode::ResumeFailed,
                    ..
                }
            )),
            "{b_events:?}"
        );
    }

    #[test]
    fn a_relay_that_forgot_the_session_refuses_the_resume_and_the_client_names_its_gap() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let _b = w.join("b");
        w.cut(a);
        let seq = w
            .client(a)
            .send_chat(ClientId(1), "typed while away", T)
            .unwrap();
        w.take_events(a);
        // The relay restarts: a new one, with the same key, knows nothing of a.
        w.server =
            crate::RelayServer::new(Limits::default(), crate::test_support::relay_security());
        for other in 0..w.clients.len() {
            w.clients[other].closed = true;
        }
        w.reconnect(a);
        let events = w.take_events(a);
        assert!(
            events.contains(&ClientEvent::Unconfirmed {
                messages: vec![(seq, ClientId(1))]
            }),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| matches!(
                e,
                ClientEvent::Disconnected {
                    code: ErrorCode::ResumeFailed,
                    reason,
                } if reason.contains("new client")
            )),
            "{events:?}"
        );
    }

    #[test]
    fn a_wrong_token_cannot_take_a_session() {
        let mut w = Wire::insecure(Limits::default());
        let _a = w.join("a");
        let b = w.join("b");
        w.cut(b);
        let conn = w.server.handle_connected(w.now);
        let mut bytes = crate::MAGIC.to_vec();
        let hello = crate::Hello {
            resuming: true,
            ..crate::handshake::our_hello(crate::Role::RelayClient, "b", crate::CAP_RESUME)
        };
        crate::Frame::Hello(hello).encode(&mut bytes);
        crate::Frame::Resume {
            id: ClientId(1),
            token: [0; 16],
            received: 0,
        }
        .encode(&mut bytes);
        w.server.handle_bytes(conn, &bytes, w.now);
        w.pump();
        let sent = w.raw.remove(&conn).unwrap_or_default();
        let mut d = crate::FrameDecoder::new(u32::MAX);
        d.push(&sent);
        let refused = std::iter::from_fn(|| d.next_frame().ok().flatten()).find_map(|f| match f {
            crate::Frame::Refused(r) => Some(r),
            _ => None,
        });
        assert_eq!(refused.map(|r| r.code), Some(ErrorCode::ResumeFailed));
        assert!(w.raw_closed.contains(&conn));
        // The real b still gets back.
        w.reconnect(b);
        assert!(
            w.take_events(b)
                .contains(&ClientEvent::Resumed { id: ClientId(1) })
        );
    }

    #[test]
    fn another_key_with_the_right_token_cannot_take_a_session() {
        let mut w = Wire::new(Limits::default());
        let _a = w.join("a");
        let b = w.join("b");
        w.cut(b);
        // A thief that somehow learnt b's token, but holds another key.
        let thief = w.join_with("b", party_security(9));
        w.take_events(thief);
        let token_holder = w.clients[b].client.session_for_tests();
        w.cut(thief);
        w.clients[thief].client.take_session_for_tests(token_holder);
        w.reconnect(thief);
        let events = w.take_events(thief);
        assert!(
            events.iter().any(|e| matches!(
                e,
                ClientEvent::Disconnected {
                    code: ErrorCode::ResumeFailed,
                    ..
                }
            )),
            "{events:?}"
        );
        w.reconnect(b);
        assert!(
            w.take_events(b)
                .contains(&ClientEvent::Resumed { id: ClientId(1) })
        );
    }

    #[test]
    fn a_client_whose_old_connection_still_looks_open_takes_its_session_over() {
        let mut w = Wire::new(Limits::default());
        let a = w.join("a");
        let b = w.join("b");
        // b's side saw the connection die; the relay did not (a half-open link).
        w.clients[b].closed = true;
        w.client(b).handle_closed(T);
        let old = w.clients[b].conn;
        w.client(a)
            .send_chat(ClientId(1), "to the old link", T)
            .unwrap();
        w.pump();
        w.reconnect(b);
        let events = w.take_events(b);
        assert!(
            events.contains(&ClientEvent::Resumed { id: ClientId(1) }),
            "{events:?}"
        );
        assert!(
            events.iter().any(
                |e| matches!(e, ClientEvent::Message { text, .. } if text == "to the old link")
            ),
            "{events:?}"
        );
        assert!(w.raw_closed.contains(&old) || w.server.client_id(old).is_none());
        assert_eq!(w.server.online(), 2);
        let _ = Duration::ZERO;
    }
}
