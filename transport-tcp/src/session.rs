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

use std::time::Duration;

use async_channel::{Receiver, Sender};
use p2pchat_core::{
    ClientEvent, ClientId, Limits, Peer, PeerEvent, PeerSide, RelayClient, SendError, Timestamp,
};
use p2pchat_core::{Hash, PeerRef, TransferId};
use smol::net::TcpStream;

use crate::clock::Clock;
use crate::conn::{IoEvent, spawn_conn};

/// How long a session that wants to close waits for the transport before giving up.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Capacity of the command channel.
const COMMAND_QUEUE: usize = 64;

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
    /// Bytes to write.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// An event for the user.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// The next deadline.
    fn poll_timeout(&self) -> Option<Timestamp>;
    /// Whether to close the transport after writing everything.
    fn wants_close(&self) -> bool;
}

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
    /// Offer a file (its BLAKE3 hash computed by the caller).
    Offer {
        /// The addressee (relay) or `None` (direct).
        to: PeerRef,
        /// The name the receiver sees.
        name: String,
        /// Size in bytes.
        size: u64,
        /// BLAKE3 hash of the whole file.
        hash: Hash,
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
    };
}

/// Room a command needs beyond its text: frame header and fields.
const FRAME_OVERHEAD: usize = 32;

impl Machine for RelayClient {
    type Event = ClientEvent;
    type Command = ClientCommand;

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
                    FileCommand::Offer {
                        to,
                        name,
                        size,
                        hash,
                    } => self.offer_file(peer(to)?, &name, size, hash, now).map(drop),
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

    fn apply(&mut self, command: PeerCommand, now: Timestamp) -> Result<(), SendError> {
        match command {
            PeerCommand::Send(text) => self.send_chat(&text, now).map(drop),
            PeerCommand::Exit => {
                self.exit(now);
                Ok(())
            }
            PeerCommand::Leave => {
                self.leave(now);
                Ok(())
            }
            PeerCommand::File(cmd) => {
                match cmd {
                    FileCommand::Offer {
                        name, size, hash, ..
                    } => return self.offer_file(&name, size, hash, now).map(drop),
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

    forward_to_inherent!(Peer, PeerEvent);
}

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
) -> Result<ClientSession, String> {
    let clock = Clock::new();
    let machine = RelayClient::new(name, limits, clock.now())?;
    Ok(start(stream, machine, clock))
}

/// Starts one side of a direct chat on an open stream.
pub fn start_peer(
    stream: TcpStream,
    side: PeerSide,
    name: &str,
    limits: Limits,
) -> Result<PeerSession, String> {
    let clock = Clock::new();
    let machine = Peer::new(side, name, limits, clock.now())?;
    Ok(start(stream, machine, clock))
}

/// Starts a plain-text conversation (with `nc -l` or the original app) on an open stream.
pub fn start_plain_text_peer(stream: TcpStream, limits: Limits) -> PeerSession {
    let clock = Clock::new();
    let machine = Peer::new_plain_text(limits, clock.now());
    start(stream, machine, clock)
}

/// Starts driving `machine` over `stream` on the smol executor.
pub fn start<M: Machine>(stream: TcpStream, machine: M, clock: Clock) -> Session<M> {
    let (command_tx, command_rx) = async_channel::bounded(COMMAND_QUEUE);
    let (event_tx, event_rx) = async_channel::unbounded();
    smol::spawn(drive(stream, machine, clock, command_rx, event_tx)).detach();
    Session {
        commands: command_tx,
        events: event_rx,
    }
}

enum Wake<C> {
    Io(IoEvent),
    Command(C),
    CommandsGone,
    Timer,
}

async fn drive<M: Machine>(
    stream: TcpStream,
    mut machine: M,
    clock: Clock,
    commands: Receiver<M::Command>,
    events: Sender<SessionEvent<M::Event>>,
) {
    let (io_tx, io_rx) = async_channel::bounded(256);
    let io = spawn_conn(stream, io_tx, |e| e);
    let mut waiting: Option<M::Command> = None;
    let mut commands_open = true;
    let mut close_sent = false;
    loop {
        // Carry out what the machine asks.
        while let Some(bytes) = machine.poll_transmit() {
            io.write(bytes);
        }
        if machine.wants_close() && !close_sent {
            close_sent = true;
            io.close(CLOSE_DEADLINE);
        }
        while let Some(e) = machine.poll_event() {
            let _ = events.send(SessionEvent::Core(e)).await;
        }
        if let Some(cmd) = waiting.take() {
            if machine.has_room_for(&cmd) {
                if let Err(e) = machine.apply(cmd, clock.now()) {
                    let _ = events.send(SessionEvent::Rejected(e)).await;
                }
                continue;
            }
            waiting = Some(cmd);
        }

        let deadline = machine.poll_timeout().map(|t| clock.instant(t));
        let take_commands = commands_open && waiting.is_none();
        let wake = smol::future::or(
            async {
                match io_rx.recv().await {
                    Ok(e) => Wake::Io(e),
                    Err(_) => Wake::Io(IoEvent::Closed),
                }
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
        )
        .await;
        let now = clock.now();
        match wake {
            Wake::Io(IoEvent::Received(bytes)) => machine.handle_bytes(&bytes, now),
            Wake::Io(IoEvent::Written(n)) => machine.handle_written(n),
            Wake::Io(IoEvent::Closed) => {
                io.close(CLOSE_DEADLINE);
                machine.handle_closed(now);
                while let Some(e) = machine.poll_event() {
                    let _ = events.send(SessionEvent::Core(e)).await;
                }
                return;
            }
            Wake::Command(cmd) => waiting = Some(cmd),
            Wake::CommandsGone => commands_open = false,
            Wake::Timer => machine.handle_timeout(now),
        }
    }
}
