//! Single-connection sessions: a relay client ([`ClientSession`]) or one side of a
//! direct chat ([`PeerSession`]) over one TCP stream.
//!
//! Both machines have the same driver-facing shape, captured by [`Machine`], so one
//! generic task drives either: it owns the machine, feeds it bytes, timer expiries and
//! the user's commands, writes what it produces and forwards its events. A frontend
//! holds only the two channel ends: commands in, events out. When the event channel
//! closes, the session is over.
//!
//! Commands are taken only while the outbound queue has room, so a user (or a script)
//! typing faster than the network carries waits instead of losing messages.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use p2pchat_core::{
    ClientEvent, ClientId, Limits, Peer, PeerEvent, PeerSide, RelayClient, SavePoint, Security,
    SendError, Timestamp,
};
use p2pchat_core::{Hash, PeerRef, TransferId};
use smol::Async;
use smol::net::TcpStream;

use crate::clock::Clock;

/// How long a session that wants to close waits for the transport before giving up.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Capacity of the command channel.
const COMMAND_QUEUE: usize = 64;

/// How many commands the driver takes early, beyond the channel's, so that a
/// frontend stuck handing one over can show what it was handed (see
/// `Inbox::let_frontend_commit`): a user pasting a few thousand lines at once.
const COMMAND_BACKLOG: usize = 4096;

/// The driver-facing surface shared by [`RelayClient`] and [`Peer`].
pub trait Machine: Send + 'static {
    /// What the user should see.
    type Event: Send + 'static;
    /// What the user can ask for.
    type Command: Send + 'static;

    /// Carries out a command.
    fn apply(&mut self, command: Self::Command, now: Timestamp) -> Result<(), SendError>;
    /// Whether `command` can be taken now without overflowing the outbound queue.
    fn has_room_for(&self, command: &Self::Command) -> bool;
    /// Bytes arrived.
    fn handle_bytes(&mut self, bytes: &[u8], now: Timestamp);
    /// Bytes were written.
    fn handle_written(&mut self, n: usize);
    /// The transport ended.
    fn handle_closed(&mut self, now: Timestamp);
    /// A deadline passed.
    fn handle_timeout(&mut self, now: Timestamp);
    /// When to look whether the connection has more to read, and report
    /// [`Machine::handle_read_idle`] if not (see [`Peer::read_idle_check`]).
    fn read_idle_check(&self) -> Option<Timestamp> {
        None
    }
    /// A read found nothing more to read.
    fn handle_read_idle(&mut self, _now: Timestamp) {}
    /// The other side finished sending (EOF, not a reset); `handle_closed` follows.
    fn handle_end_of_stream(&mut self, _now: Timestamp) {}
    /// Bytes to write.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// An event for the user.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// The next deadline.
    fn poll_timeout(&self) -> Option<Timestamp>;
    /// Whether to close the transport after writing everything.
    fn wants_close(&self) -> bool;
    /// When to open a new transport for a session whose connection was lost (see
    /// [`RelayClient::poll_reconnect`]); `None` when there is nothing to get back to.
    fn poll_reconnect(&self) -> Option<Timestamp> {
        None
    }
    /// A new transport is open for the session.
    fn handle_reconnected(&mut self, _now: Timestamp) {}
    /// Where the session stands for saving (see [`RelayClient::save_point`]);
    /// `None` while there is nothing to save.
    fn save_point(&self) -> Option<SavePoint> {
        None
    }
    /// The session, saved (see [`RelayClient::save`]).
    fn save(&mut self) -> Option<Vec<u8>> {
        None
    }
    /// Opening a new transport failed.
    fn handle_reconnect_failed(&mut self, _now: Timestamp) {}
}

/// Opens a new connection to the same place, for a session that lost its own: the
/// driver calls it when the machine wants to get back ([`Machine::poll_reconnect`]).
pub type Redial =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> + Send + Sync>;

/// What a session reports: the machine's events, and commands it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent<E> {
    /// An event of the machine.
    Core(E),
    /// A command was refused; nothing was sent.
    Rejected(SendError),
}

/// File-transfer commands, answering the machine's `FileEvent`s. `peer` is the other
/// side's relay ID (ignored in direct chat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCommand {
    /// Offer a file (its hash follows the last chunk: [`FileCommand::Hashed`]).
    Offer {
        /// The addressee (relay) or `None` (direct).
        to: PeerRef,
        /// The name the receiver sees.
        name: String,
        /// Size in bytes.
        size: u64,
    },
    /// Accept an offer, holding `offset` bytes already (resume).
    Accept {
        /// The sender.
        from: PeerRef,
        /// Its transfer.
        transfer: TransferId,
        /// Bytes already held.
        offset: u64,
        /// Their BLAKE3 hash.
        prefix_hash: Hash,
    },
    /// Decline an offer.
    Decline {
        /// The sender.
        from: PeerRef,
        /// Its transfer.
        transfer: TransferId,
        /// Why.
        reason: String,
    },
    /// Start sending an accepted file from `offset`.
    Start {
        /// Our transfer.
        transfer: TransferId,
        /// Where to start.
        offset: u64,
    },
    /// A chunk the machine asked for.
    Data {
        /// Our transfer.
        transfer: TransferId,
        /// Where it starts.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The BLAKE3 hash of a whole file we send, once its last chunk was handed over.
    Hashed {
        /// Our transfer.
        transfer: TransferId,
        /// BLAKE3 of every byte of the file.
        hash: Hash,
    },
    /// A received file is written up to `written`.
    Written {
        /// The sender.
        from: PeerRef,
        /// Its transfer.
        transfer: TransferId,
        /// Bytes written.
        written: u64,
    },
    /// A received file's hash was checked.
    Finish {
        /// The sender.
        from: PeerRef,
        /// Its transfer.
        transfer: TransferId,
        /// Whether it matched.
        ok: bool,
        /// If not, why.
        reason: String,
    },
    /// Abandon a transfer.
    Cancel {
        /// The other side.
        peer: PeerRef,
        /// The transfer.
        transfer: TransferId,
        /// Whether we are its sender.
        outgoing: bool,
        /// Why.
        reason: String,
    },
}

/// Commands for a relay client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Send text to one client.
    Send {
        /// The recipient.
        to: ClientId,
        /// The text.
        text: String,
    },
    /// Send text to every other client.
    Broadcast(String),
    /// Ask for the roster.
    Who,
    /// Say exit: send no more, keep receiving.
    Exit,
    /// Leave now.
    Leave,
    /// A file-transfer step.
    File(FileCommand),
}

/// Commands for a direct peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCommand {
    /// Send text.
    Send(String),
    /// Say exit: send no more, keep receiving.
    Exit,
    /// The user's input ended: say exit, and do not wait for a lost peer when
    /// nothing sent is unconfirmed ([`Peer::end_of_input`]).
    EndOfInput,
    /// Leave now.
    Leave,
    /// A file-transfer step.
    File(FileCommand),
}

/// The part of [`Machine`] that both machines implement by calling their own methods
/// of the same names.
macro_rules! forward_to_inherent {
    ($machine:ident, $event:ty) => {
        fn handle_bytes(&mut self, bytes: &[u8], now: Timestamp) {
            $machine::handle_bytes(self, bytes, now);
        }
        fn handle_written(&mut self, n: usize) {
            $machine::handle_written(self, n);
        }
        fn handle_closed(&mut self, now: Timestamp) {
            $machine::handle_closed(self, now);
        }
        fn handle_timeout(&mut self, now: Timestamp) {
            $machine::handle_timeout(self, now);
        }
        fn poll_transmit(&mut self) -> Option<Vec<u8>> {
            $machine::poll_transmit(self)
        }
        fn poll_event(&mut self) -> Option<$event> {
            $machine::poll_event(self)
        }
        fn poll_timeout(&self) -> Option<Timestamp> {
            $machine::poll_timeout(self)
        }
        fn wants_close(&self) -> bool {
            $machine::wants_close(self)
        }
        fn poll_reconnect(&self) -> Option<Timestamp> {
            $machine::poll_reconnect(self)
        }
        fn handle_reconnected(&mut self, now: Timestamp) {
            $machine::handle_reconnected(self, now);
        }
        fn handle_reconnect_failed(&mut self, now: Timestamp) {
            $machine::handle_reconnect_failed(self, now);
        }
    };
}

/// Room a command needs beyond its text: frame header and fields.
const FRAME_OVERHEAD: usize = 32;

impl Machine for RelayClient {
    type Event = ClientEvent;
    type Command = ClientCommand;

    fn save_point(&self) -> Option<SavePoint> {
        RelayClient::save_point(self)
    }

    fn save(&mut self) -> Option<Vec<u8>> {
        RelayClient::save(self)
    }

    fn apply(&mut self, command: ClientCommand, now: Timestamp) -> Result<(), SendError> {
        match command {
            ClientCommand::Send { to, text } => self.send_chat(to, &text, now).map(drop),
            ClientCommand::Broadcast(text) => self.broadcast(&text, now).map(drop),
            ClientCommand::Who => {
                self.request_roster(now);
                Ok(())
            }
            ClientCommand::Exit => {
                self.exit(now);
                Ok(())
            }
            ClientCommand::Leave => {
                self.leave(now);
                Ok(())
            }
            ClientCommand::File(cmd) => {
                let peer = |p: PeerRef| p.ok_or(SendError::InvalidRecipient(ClientId::BROADCAST));
                match cmd {
                    FileCommand::Offer { to, name, size } => {
                        self.offer_file(peer(to)?, &name, size, now).map(drop)
                    }
                    FileCommand::Accept {
                        from,
                        transfer,
                        offset,
                        prefix_hash,
                    } => {
                        self.accept_file(peer(from)?, transfer, offset, prefix_hash, now);
                        Ok(())
                    }
                    FileCommand::Decline {
                        from,
                        transfer,
                        reason,
                    } => {
                        self.decline_file(peer(from)?, transfer, &reason, now);
                        Ok(())
                    }
                    FileCommand::Start { transfer, offset } => {
                        self.start_sending(transfer, offset, now);
                        Ok(())
                    }
                    FileCommand::Data {
                        transfer,
                        offset,
                        data,
                    } => {
                        self.file_data(transfer, offset, data, now);
                        Ok(())
                    }
                    FileCommand::Hashed { transfer, hash } => {
                        self.file_hashed(transfer, hash, now);
                        Ok(())
                    }
                    FileCommand::Written {
                        from,
                        transfer,
                        written,
                    } => {
                        self.chunk_written(peer(from)?, transfer, written, now);
                        Ok(())
                    }
                    FileCommand::Finish {
                        from,
                        transfer,
                        ok,
                        reason,
                    } => {
                        self.finish_receiving(peer(from)?, transfer, ok, &reason, now);
                        Ok(())
                    }
                    FileCommand::Cancel {
                        peer: p,
                        transfer,
                        outgoing,
                        reason,
                    } => {
                        self.cancel_file(peer(p)?, transfer, outgoing, &reason, now);
                        Ok(())
                    }
                }
            }
        }
    }

    fn has_room_for(&self, command: &ClientCommand) -> bool {
        match command {
            ClientCommand::Send { text, .. } | ClientCommand::Broadcast(text) => {
                self.is_closed() || RelayClient::has_room_for(self, text.len() + FRAME_OVERHEAD)
            }
            _ => true,
        }
    }

    forward_to_inherent!(RelayClient, ClientEvent);
}

impl Machine for Peer {
    type Event = PeerEvent;
    type Command = PeerCommand;

    fn save_point(&self) -> Option<SavePoint> {
        Peer::save_point(self)
    }

    fn save(&mut self) -> Option<Vec<u8>> {
        Peer::save(self)
    }

    fn apply(&mut self, command: PeerCommand, now: Timestamp) -> Result<(), SendError> {
        match command {
            PeerCommand::Send(text) => self.send_chat(&text, now).map(drop),
            PeerCommand::Exit => {
                self.exit(now);
                Ok(())
            }
            PeerCommand::EndOfInput => {
                self.end_of_input(now);
                Ok(())
            }
            PeerCommand::Leave => {
                self.leave(now);
                Ok(())
            }
            PeerCommand::File(cmd) => {
                match cmd {
                    FileCommand::Offer { name, size, .. } => {
                        return self.offer_file(&name, size, now).map(drop);
                    }
                    FileCommand::Accept {
                        transfer,
                        offset,
                        prefix_hash,
                        ..
                    } => {
                        self.accept_file(transfer, offset, prefix_hash, now);
                    }
                    FileCommand::Decline {
                        transfer, reason, ..
                    } => {
                        self.decline_file(transfer, &reason, now);
                    }
                    FileCommand::Start { transfer, offset } => {
                        self.start_sending(transfer, offset, now);
                    }
                    FileCommand::Data {
                        transfer,
                        offset,
                        data,
                    } => {
                        self.file_data(transfer, offset, data, now);
                    }
                    FileCommand::Hashed { transfer, hash } => {
                        self.file_hashed(transfer, hash, now);
                    }
                    FileCommand::Written {
                        transfer, written, ..
                    } => self.chunk_written(transfer, written, now),
                    FileCommand::Finish {
                        transfer,
                        ok,
                        reason,
                        ..
                    } => {
                        self.finish_receiving(transfer, ok, &reason, now);
                    }
                    FileCommand::Cancel {
                        transfer,
                        outgoing,
                        reason,
                        ..
                    } => {
                        self.cancel_file(transfer, outgoing, &reason, now);
                    }
                }
                Ok(())
            }
        }
    }

    fn has_room_for(&self, command: &PeerCommand) -> bool {
        match command {
            PeerCommand::Send(text) => {
                self.is_over() || Peer::has_room_for(self, text.len() + FRAME_OVERHEAD)
            }
            _ => true,
        }
    }

    fn read_idle_check(&self) -> Option<Timestamp> {
        Peer::read_idle_check(self)
    }

    fn handle_read_idle(&mut self, now: Timestamp) {
        Peer::handle_read_idle(self, now);
    }

    fn handle_end_of_stream(&mut self, now: Timestamp) {
        Peer::handle_end_of_stream(self, now);
    }

    forward_to_inherent!(Peer, PeerEvent);
}

/// Where a driver keeps a machine's saved session, so that a process started again
/// after this one died can come back to it (see [`RelayClient::save`]).
///
/// Saving is in two steps. Whenever the session changed, the driver *prepares* the
/// new saved session (written durably beside the one in place), hands on the events
/// that changed it, lets the frontend run, and *commits* it (puts it in place,
/// atomically) before it writes anything more to the network: so what the other
/// side holds of ours, and what we acknowledged, are never ahead of what is saved.
/// A frontend that shows events may commit itself, right before it shows them
/// (`commit` is then a no-op for the driver): a process killed at any instant has
/// then either shown an event and saved it as received, or neither, but for the
/// instant between those two calls.
pub trait SessionStore: Send {
    /// Writes `saved` durably, beside the saved session in place.
    fn prepare(&mut self, saved: &[u8]);
    /// Puts the last prepared session in place; nothing if none waits.
    fn commit(&mut self);
    /// Whether a prepared session waits to be committed.
    fn is_pending(&self) -> bool;
    /// Forgets the saved session: there is none another process could resume now
    /// (it ended, or a file transfer is under way).
    fn clear(&mut self);
}

/// How many times the driver lets the frontend run, waiting for it to show what it
/// was handed and commit, before it commits itself (see [`SessionStore`]).
const COMMIT_WAITS: usize = 64;

/// A running session: send commands, receive events. Dropping it does not stop the
/// session; send the machine's leave command for that.
#[derive(Debug)]
pub struct Session<M: Machine> {
    /// Where commands go. Sending waits while the network is behind.
    pub commands: Sender<M::Command>,
    /// Where events come from. Closed when the session is over.
    pub events: Receiver<SessionEvent<M::Event>>,
}

/// A relay client session.
pub type ClientSession = Session<RelayClient>;
/// A direct-chat session.
pub type PeerSession = Session<Peer>;

/// Starts a relay client on an open stream.
pub fn start_client(
    stream: TcpStream,
    name: &str,
    limits: Limits,
    security: Security,
) -> Result<ClientSession, String> {
    let clock = Clock::new();
    let machine = RelayClient::new(name, limits, security, clock.now())?;
    Ok(start(stream, machine, clock))
}

/// Starts one side of a direct chat on an open stream.
pub fn start_peer(
    stream: TcpStream,
    side: PeerSide,
    name: &str,
    limits: Limits,
    security: Security,
) -> Result<PeerSession, String> {
    let clock = Clock::new();
    let machine = Peer::new(side, name, limits, security, clock.now())?;
    Ok(start(stream, machine, clock))
}

/// Starts a plain-text conversation (with `nc -l` or the original app) on an open stream.
pub fn start_plain_text_peer(stream: TcpStream, limits: Limits) -> PeerSession {
    let clock = Clock::new();
    let machine = Peer::new_plain_text(limits, clock.now());
    start(stream, machine, clock)
}

/// Starts driving `machine` over `stream` on smol's executor.
pub fn start<M: Machine>(stream: TcpStream, machine: M, clock: Clock) -> Session<M> {
    let (session, driver) = prepare(stream, machine, clock);
    smol::spawn(driver).detach();
    session
}

/// Like [`start`], but hands back the driver for the caller to run, for example on
/// the same thread as its user interface (with `smol::future::zip`), so that no
/// message or file chunk crosses threads between the two. The session is over when
/// the driver returns.
pub fn prepare<M: Machine>(stream: TcpStream, machine: M, clock: Clock) -> (Session<M>, Driver) {
    prepare_with_redial(stream, machine, clock, None, None)
}

/// Like [`prepare`], for a machine that can get back to its session after a lost
/// connection: `redial` opens the next connection when the machine asks for one,
/// and `store`, if given, keeps the session saved so that a new process can come
/// back to it after this one died.
pub fn prepare_with_redial<M: Machine>(
    stream: TcpStream,
    machine: M,
    clock: Clock,
    redial: Option<Redial>,
    store: Option<Box<dyn SessionStore>>,
) -> (Session<M>, Driver) {
    let (command_tx, command_rx) = async_channel::bounded(COMMAND_QUEUE);
    let (event_tx, event_rx) = async_channel::unbounded();
    let driver = Driver(Box::pin(drive(
        stream, machine, clock, command_rx, event_tx, redial, store,
    )));
    let session = Session {
        commands: command_tx,
        events: event_rx,
    };
    (session, driver)
}

/// The task that drives one session: await it (or spawn it) to run the session.
pub struct Driver(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver")
    }
}

enum Wake<C> {
    Readable,
    Writable,
    Command(C),
    CommandsGone,
    Timer,
}

/// One connection's socket as the driver sees it: bytes are written straight from the
/// machine's queue, and only what the socket would not take waits in `backlog`.
struct Socket {
    stream: Arc<Async<std::net::TcpStream>>,
    backlog: Vec<u8>,
    read_buf: Vec<u8>,
    /// When the machine asked to close, and when our FIN went out.
    close_requested: Option<Instant>,
    fin_sent: Option<Instant>,
}

/// What a read found.
enum Read {
    Bytes(usize),
    Nothing,
    /// The other side finished sending.
    End,
    /// The connection failed (reset, or another error).
    Failed,
}

impl Socket {
    /// Writes what the socket takes now; returns how many bytes of `bytes` went out
    /// (the rest waits in the backlog, behind whatever was already waiting).
    fn send(&mut self, bytes: Vec<u8>) -> usize {
        if !self.backlog.is_empty() {
            self.backlog.extend_from_slice(&bytes);
            return 0;
        }
        let written = match self.stream.get_ref().write(&bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                // Broken: the next read reports it.
                let _ = self.stream.get_ref().shutdown(Shutdown::Both);
                return 0;
            }
        };
        if written < bytes.len() {
            self.backlog = bytes;
            self.backlog.drain(..written);
        }
        written
    }

    /// Writes some of the backlog once the socket has room; returns how much.
    fn drain(&mut self) -> usize {
        match self.stream.get_ref().write(&self.backlog) {
            Ok(n) => {
                self.backlog.drain(..n);
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                let _ = self.stream.get_ref().shutdown(Shutdown::Both);
                self.backlog.clear();
                0
            }
        }
    }

    fn read(&mut self) -> Read {
        match self.stream.get_ref().read(&mut self.read_buf) {
            Ok(0) => Read::End,
            Ok(n) => Read::Bytes(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Read::Nothing
            }
            Err(_) => Read::Failed,
        }
    }

    /// The moment a closing connection is forced shut: the other side did not read
    /// our last bytes, or did not answer our FIN.
    fn force_close_at(&self) -> Option<Instant> {
        let by_request = self.close_requested.map(|t| t + CLOSE_DEADLINE);
        let by_fin = self.fin_sent.map(|t| t + LINGER);
        match (by_request, by_fin) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// How long a closed connection waits for the other side's FIN after sending its own,
/// so that a reset does not destroy the last bytes on their way.
const LINGER: Duration = Duration::from_secs(2);

/// Size of one read: large, so that few file chunks (48 KiB) straddle two reads (the
/// unfinished one is copied aside until the next read completes it).
const READ_CHUNK: usize = 256 * 1024;

/// What the driver keeps across the connections of one session.
struct Inbox<M: Machine> {
    commands: Receiver<M::Command>,
    events: Sender<SessionEvent<M::Event>>,
    /// A command taken but not yet carried out (waiting for room).
    waiting: Option<M::Command>,
    commands_open: bool,
    /// Where the session is saved, and where it stood when last saved.
    store: Option<Box<dyn SessionStore>>,
    saved_at: Option<SavePoint>,
    /// Commands taken early, to unblock a frontend (see `let_frontend_commit`);
    /// they come before the channel's.
    backlog: VecDeque<M::Command>,
}

impl<M: Machine> Inbox<M> {
    /// Takes the next command, if there is one and none is waiting already.
    fn try_take(&mut self) {
        if self.waiting.is_some() {
            return;
        }
        if let Some(cmd) = self.backlog.pop_front() {
            self.waiting = Some(cmd);
            return;
        }
        if self.commands_open {
            match self.commands.try_recv() {
                Ok(cmd) => self.waiting = Some(cmd),
                Err(async_channel::TryRecvError::Closed) => self.commands_open = false,
                Err(async_channel::TryRecvError::Empty) => {}
            }
        }
    }

    /// Saves the session if it changed since it was last saved.
    fn checkpoint(&mut self, machine: &mut M) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let point = machine.save_point();
        if point == self.saved_at {
            return;
        }
        if point.is_none() {
            store.clear();
            self.saved_at = None;
            return;
        }
        if let Some(saved) = machine.save() {
            store.prepare(&saved);
            self.saved_at = point;
        }
    }

    /// Puts the prepared session in place (before anything goes out).
    fn commit(&mut self) {
        if let Some(store) = self.store.as_mut() {
            store.commit();
        }
    }

    /// Forwards the machine's events (after saving what they changed).
    async fn forward(&mut self, machine: &mut M) {
        self.checkpoint(machine);
        let mut any = false;
        while let Some(e) = machine.poll_event() {
            let _ = self.events.send(SessionEvent::Core(e)).await;
            any = true;
        }
        if any {
            self.let_frontend_commit().await;
        }
        self.commit();
    }

    /// Lets the frontend (on this thread) show what it was handed and commit the
    /// saved session right before, so that what is saved as received and what was
    /// shown do not drift apart: a process killed between the two would resume
    /// without showing them. A frontend that is stuck handing over a command gets
    /// it taken. Bounded: then the driver commits itself.
    async fn let_frontend_commit(&mut self) {
        for _ in 0..COMMIT_WAITS {
            if !self.store.as_ref().is_some_and(|s| s.is_pending()) {
                return;
            }
            // A frontend stuck handing over a command could not show anything.
            while self.backlog.len() < COMMAND_BACKLOG {
                match self.commands.try_recv() {
                    Ok(cmd) => self.backlog.push_back(cmd),
                    Err(_) => break,
                }
            }
            smol::future::yield_now().await;
        }
    }

    /// Carries out the commands that are there (and have room), without waiting.
    async fn apply_ready(&mut self, machine: &mut M, clock: &Clock) {
        loop {
            self.try_take();
            let Some(cmd) = self.waiting.take() else {
                return;
            };
            if !machine.has_room_for(&cmd) {
                self.waiting = Some(cmd);
                return;
            }
            if let Err(e) = machine.apply(cmd, clock.now()) {
                let _ = self.events.send(SessionEvent::Rejected(e)).await;
            }
        }
    }
}

async fn drive<M: Machine>(
    stream: TcpStream,
    mut machine: M,
    clock: Clock,
    commands: Receiver<M::Command>,
    events: Sender<SessionEvent<M::Event>>,
    redial: Option<Redial>,
    store: Option<Box<dyn SessionStore>>,
) {
    let mut inbox = Inbox::<M> {
        commands,
        events,
        waiting: None,
        commands_open: true,
        store,
        saved_at: None,
        backlog: VecDeque::new(),
    };
    let mut stream = Some(stream);
    loop {
        if let Some(stream) = stream.take() {
            drive_connection(stream, &mut machine, &clock, &mut inbox).await;
        }
        // The connection is gone. A session that goes on dials again when its
        // machine says; meanwhile what the user types is taken (it waits in the
        // session) and the machine's deadlines still run.
        let (Some(redial), Some(at)) = (redial.as_ref(), machine.poll_reconnect()) else {
            return;
        };
        if !wait_away(&mut machine, &clock, &mut inbox, clock.instant(at)).await {
            continue;
        }
        match dial(redial, &mut machine, &clock, &mut inbox).await {
            Dialled::Connected(s) => {
                let _ = s.set_nodelay(true);
                machine.handle_reconnected(clock.now());
                stream = Some(s);
            }
            Dialled::Failed => machine.handle_reconnect_failed(clock.now()),
            Dialled::NotWanted => {}
        }
        inbox.forward(&mut machine).await;
    }
}

/// How a dial ended.
enum Dialled {
    Connected(TcpStream),
    Failed,
    /// The machine stopped wanting the connection meanwhile (it gave up, or the
    /// user left).
    NotWanted,
}

/// Opens the next connection (dialling, or waiting for one to come in), at most
/// [`crate::CONNECT_TIMEOUT`], while taking commands and running the machine's
/// deadlines: a listening side may wait long, and its grace period must still end.
async fn dial<M: Machine>(
    redial: &Redial,
    machine: &mut M,
    clock: &Clock,
    inbox: &mut Inbox<M>,
) -> Dialled {
    let give_up = Instant::now() + crate::CONNECT_TIMEOUT;
    let mut dialling = redial();
    loop {
        inbox.apply_ready(machine, clock).await;
        inbox.forward(machine).await;
        if machine.poll_reconnect().is_none() {
            return Dialled::NotWanted;
        }
        match wait_idle(machine, clock, inbox, give_up, dialling.as_mut()).await {
            Some(Ok(stream)) => return Dialled::Connected(stream),
            Some(Err(_)) => return Dialled::Failed,
            None if Instant::now() >= give_up => return Dialled::Failed,
            None => {}
        }
    }
}

/// Waits, with no connection, until `until` (then `true`: dial now), taking commands
/// and running the machine's deadlines; `false` when the machine no longer wants to
/// dial at that time (it gave up, or the user left).
async fn wait_away<M: Machine>(
    machine: &mut M,
    clock: &Clock,
    inbox: &mut Inbox<M>,
    until: Instant,
) -> bool {
    loop {
        inbox.apply_ready(machine, clock).await;
        inbox.forward(machine).await;
        match machine.poll_reconnect() {
            Some(at) if clock.instant(at) <= until => {}
            _ => return false,
        }
        if Instant::now() >= until {
            return true;
        }
        wait_idle(machine, clock, inbox, until, std::future::pending::<()>()).await;
    }
}

/// One wait with no connection, shared by [`wait_away`] and [`dial`]: until the first
/// of `also` finishing (its output is returned), a command (kept in the inbox for the
/// caller to apply), `until`, or the machine's next deadline (which then runs).
async fn wait_idle<M: Machine, T>(
    machine: &mut M,
    clock: &Clock,
    inbox: &mut Inbox<M>,
    until: Instant,
    also: impl Future<Output = T>,
) -> Option<T> {
    let deadline = machine
        .poll_timeout()
        .map_or(until, |t| clock.instant(t).min(until));
    let take_commands = inbox.commands_open && inbox.waiting.is_none();
    let commands = inbox.commands.clone();
    let woke = smol::future::or(
        async { Some(also.await) },
        smol::future::or(
            async {
                if !take_commands {
                    return std::future::pending().await;
                }
                match commands.recv().await {
                    Ok(c) => inbox.waiting = Some(c),
                    Err(_) => inbox.commands_open = false,
                }
                None
            },
            async {
                smol::Timer::at(deadline).await;
                None
            },
        ),
    )
    .await;
    // A connection that came is handed over first; its machine runs what is due.
    if woke.is_none()
        && machine
            .poll_timeout()
            .is_some_and(|t| clock.instant(t) <= Instant::now())
    {
        machine.handle_timeout(clock.now());
    }
    woke
}

/// Drives one connection of the session until it ends (EOF, an error, or our own
/// close ran its course), then tells the machine.
async fn drive_connection<M: Machine>(
    stream: TcpStream,
    machine: &mut M,
    clock: &Clock,
    inbox: &mut Inbox<M>,
) {
    let _ = stream.set_nodelay(true);
    let mut socket = Socket {
        stream: stream.into(),
        backlog: Vec::new(),
        read_buf: vec![0; READ_CHUNK],
        close_requested: None,
        fin_sent: None,
    };
    loop {
        // Nothing goes out that the saved session does not know of.
        inbox.forward(machine).await;
        // Carry out what the machine asks.
        while let Some(bytes) = machine.poll_transmit() {
            let written = socket.send(bytes);
            if written > 0 {
                machine.handle_written(written);
            }
        }
        if machine.wants_close() && machine.poll_reconnect().is_some() {
            // The machine gave up on this connection (it went silent) and wants the
            // next one: no point waiting for this one's goodbye.
            break;
        }
        if machine.wants_close() && socket.close_requested.is_none() {
            socket.close_requested = Some(Instant::now());
        }
        if socket.close_requested.is_some()
            && socket.fin_sent.is_none()
            && socket.backlog.is_empty()
        {
            let _ = socket.stream.get_ref().shutdown(Shutdown::Write);
            socket.fin_sent = Some(Instant::now());
        }
        inbox.forward(machine).await;
        // Commands are taken whenever they are there, not only when nothing else woke
        // the loop: a socket that is always readable must not starve them.
        inbox.try_take();
        if let Some(cmd) = inbox.waiting.take() {
            if machine.has_room_for(&cmd) {
                if let Err(e) = machine.apply(cmd, clock.now()) {
                    let _ = inbox.events.send(SessionEvent::Rejected(e)).await;
                }
                continue;
            }
            inbox.waiting = Some(cmd);
        }

        let idle_check = machine.read_idle_check().map(|t| clock.instant(t));
        let deadline = [
            machine.poll_timeout().map(|t| clock.instant(t)),
            socket.force_close_at(),
            idle_check,
        ]
        .into_iter()
        .flatten()
        .min();
        let take_commands = inbox.commands_open && inbox.waiting.is_none();
        let has_backlog = !socket.backlog.is_empty();
        let stream = socket.stream.clone();
        let commands = inbox.commands.clone();
        let wake = smol::future::or(
            async {
                match stream.readable().await {
                    Ok(()) => Wake::Readable,
                    Err(_) => Wake::Readable,
                }
            },
            smol::future::or(
                async {
                    if !has_backlog {
                        return std::future::pending().await;
                    }
                    let _ = stream.writable().await;
                    Wake::Writable
                },
                smol::future::or(
                    async {
                        if !take_commands {
                            return std::future::pending().await;
                        }
                        match commands.recv().await {
                            Ok(c) => Wake::Command(c),
                            Err(_) => Wake::CommandsGone,
                        }
                    },
                    async {
                        match deadline {
                            Some(at) => {
                                smol::Timer::at(at).await;
                                Wake::Timer
                            }
                            None => std::future::pending().await,
                        }
                    },
                ),
            ),
        )
        .await;
        let now = clock.now();
        match wake {
            Wake::Readable => match socket.read() {
                Read::Bytes(n) => {
                    let bytes = socket.read_buf.get(..n).unwrap_or_default();
                    machine.handle_bytes(bytes, now);
                }
                Read::Nothing => {}
                Read::End => {
                    machine.handle_end_of_stream(now);
                    break;
                }
                Read::Failed => break,
            },
            Wake::Writable => {
                let written = socket.drain();
                if written > 0 {
                    machine.handle_written(written);
                }
            }
            Wake::Command(cmd) => inbox.waiting = Some(cmd),
            Wake::CommandsGone => inbox.commands_open = false,
            Wake::Timer => {}
        }
        // A plain-text sender's pause counts only if a read finds nothing: bytes that
        // waited while this task was busy are read first (docs/PROTOCOL.md, 10).
        if idle_check.is_some_and(|at| Instant::now() >= at) {
            match socket.read() {
                Read::Bytes(n) => {
                    let bytes = socket.read_buf.get(..n).unwrap_or_default();
                    machine.handle_bytes(bytes, clock.now());
                }
                Read::Nothing => machine.handle_read_idle(clock.now()),
                Read::End => {
                    machine.handle_end_of_stream(clock.now());
                    break;
                }
                Read::Failed => break,
            }
        }
        // Deadlines are checked after every wake-up, for the same reason as commands.
        if deadline.is_some_and(|at| Instant::now() >= at) {
            if socket
                .force_close_at()
                .is_some_and(|at| Instant::now() >= at)
            {
                break;
            }
            machine.handle_timeout(clock.now());
        }
    }
    // The connection is over. What the machine still had queued goes out if the
    // socket takes it at once.
    socket.drain();
    while let Some(bytes) = machine.poll_transmit() {
        socket.send(bytes);
    }
    let _ = socket.stream.get_ref().shutdown(Shutdown::Both);
    machine.handle_closed(clock.now());
    inbox.forward(machine).await;
}
