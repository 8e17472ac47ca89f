//! The relay server over TCP: an accept loop, a reader and a writer per connection,
//! and one task that owns the [`RelayServer`] and is the only one to touch it.
//!
//! Readers feed the core through a bounded channel, so a flood of bytes slows its own
//! reader rather than growing memory; what the core sends is bounded per connection by
//! the core itself ([`p2pchat_core::Limits::max_outbound_bytes`]), so the writers'
//! queues are bounded too. Inputs are handled in batches before outputs are flushed, so
//! that a busy server writes many frames per system call.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use p2pchat_core::{ConnId, Limits, RelayServer, ServerEvent};
use smol::net::{TcpListener, TcpStream};

use crate::clock::Clock;
use crate::conn::{ConnIo, IoEvent, spawn_conn};
use crate::error::BindError;

/// How many inputs the core task handles before it flushes outputs.
const BATCH: usize = 256;

/// Capacity of the channel from the connection tasks to the core task.
const INPUT_QUEUE: usize = 4096;

/// How long a connection the core closed may take to go away before it is forced.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// How long a shutdown waits for clients to read their goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// One line for the server's log: what the core reported, and the remote address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLog {
    /// What happened.
    pub event: ServerEvent,
    /// The remote address of the connection it concerns, when known.
    pub peer: Option<SocketAddr>,
}

enum Input {
    Accepted(TcpStream, SocketAddr),
    Io(ConnId, IoEvent),
}

/// A relay server bound to an address and ready to run.
#[derive(Debug)]
pub struct Relay {
    listener: TcpListener,
    limits: Limits,
}

/// Stops a running relay: every client is told the server is shutting down.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Sender<()>,
}

/// The relay's side of a [`ShutdownHandle`], passed to [`Relay::run`].
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: Receiver<()>,
}

impl ShutdownHandle {
    /// A handle and the signal it fires.
    pub fn new() -> (ShutdownHandle, ShutdownSignal) {
        let (tx, rx) = async_channel::bounded(1);
        (ShutdownHandle { tx }, ShutdownSignal { rx })
    }

    /// Asks the relay to shut down; [`Relay::run`] returns once clients are gone.
    pub fn shutdown(&self) {
        let _ = self.tx.try_send(());
    }
}

impl Relay {
    /// Binds the listening socket.
    pub async fn bind(addr: SocketAddr, limits: Limits) -> Result<Relay, BindError> {
        let listener = crate::connect::listen(addr).await?;
        Ok(Relay { listener, limits })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves clients until `shutdown` fires, then says goodbye to everyone and returns.
    /// Log lines go to `log`; dropping its receiver is fine.
    pub async fn run(self, log: Sender<RelayLog>, shutdown: ShutdownSignal) {
        let clock = Clock::new();
        let (input_tx, input_rx) = async_channel::bounded(INPUT_QUEUE);
        let accept = smol::spawn(accept_loop(self.listener, input_tx.clone()));
        let mut core = CoreTask {
            server: RelayServer::new(self.limits),
            conns: BTreeMap::new(),
            input_tx,
            log,
            clock,
        };
        core.run(input_rx, shutdown.rx).await;
        drop(accept);
    }
}

async fn accept_loop(listener: TcpListener, input: Sender<Input>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if input.send(Input::Accepted(stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or a connection reset
                // before accept: back off briefly and keep serving who we have.
                let pause = if e.raw_os_error() == Some(24) || e.raw_os_error() == Some(23) {
                    Duration::from_millis(100)
                } else {
                    Duration::from_millis(5)
                };
                smol::Timer::after(pause).await;
            }
        }
    }
}

struct Conn {
    io: ConnIo,
    peer: SocketAddr,
}

struct CoreTask {
    server: RelayServer,
    conns: BTreeMap<ConnId, Conn>,
    input_tx: Sender<Input>,
    log: Sender<RelayLog>,
    clock: Clock,
}

enum Wake {
    Input(Input),
    Timer,
    Shutdown,
    Stopped,
}

impl CoreTask {
    async fn run(&mut self, inputs: Receiver<Input>, shutdown: Receiver<()>) {
        let mut shutting_down_until = None;
        loop {
            let deadline = self.server.poll_timeout().map(|t| self.clock.instant(t));
            let deadline = match (deadline, shutting_down_until) {
                (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                (a, b) => a.or(b),
            };
            let wake = smol::future::or(
                async {
                    match inputs.recv().await {
                        Ok(input) => Wake::Input(input),
                        Err(_) => Wake::Stopped,
                    }
                },
                smol::future::or(
                    async {
                        match deadline {
                            Some(at) => {
                                smol::Timer::at(at).await;
                                Wake::Timer
                            }
                            None => std::future::pending().await,
                        }
                    },
                    async {
                        if shutting_down_until.is_some() {
                            std::future::pending::<()>().await;
                        }
                        let _ = shutdown.recv().await;
                        Wake::Shutdown
                    },
                ),
            )
            .await;
            match wake {
                Wake::Input(input) => {
                    self.handle(input);
                    for _ in 1..BATCH {
                        match inputs.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Timer => self.server.handle_timeout(self.clock.now()),
                Wake::Shutdown => {
                    self.server.shutdown(self.clock.now());
                    shutting_down_until = Some(std::time::Instant::now() + SHUTDOWN_GRACE);
                }
                Wake::Stopped => return,
            }
            self.flush();
            if let Some(until) = shutting_down_until
                && (self.conns.is_empty() || std::time::Instant::now() >= until)
            {
                for conn in self.conns.values() {
                    conn.io.abort();
                }
                return;
            }
        }
    }

    fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Accepted(stream, peer) => {
                let conn = self.server.handle_connected(now);
                let io = spawn_conn(stream, self.input_tx.clone(), move |e| Input::Io(conn, e));
                self.conns.insert(conn, Conn { io, peer });
            }
            Input::Io(conn, IoEvent::Received(bytes)) => {
                self.server.handle_bytes(conn, &bytes, now)
            }
            Input::Io(conn, IoEvent::Written(n)) => self.server.handle_written(conn, n),
            Input::Io(conn, IoEvent::Closed) => {
                // Bytes the core queued for this connection earlier in the batch (the
                // reason it was cut off, say) go to its writer before it is forgotten.
                self.flush();
                self.server.handle_closed(conn, now);
                // Log while the remote address is still known.
                self.log_events();
                if let Some(c) = self.conns.remove(&conn) {
                    c.io.close(CLOSE_DEADLINE);
                }
            }
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.server.poll_transmit() {
            if let Some(c) = self.conns.get(&t.conn) {
                c.io.write(t.bytes);
            }
        }
        while let Some(conn) = self.server.poll_close() {
            if let Some(c) = self.conns.get(&conn) {
                c.io.close(CLOSE_DEADLINE);
            }
        }
        self.log_events();
    }

    fn log_events(&mut self) {
        while let Some(event) = self.server.poll_event() {
            let conn = match &event {
                ServerEvent::Admitted { conn, .. }
                | ServerEvent::Refused { conn, .. }
                | ServerEvent::Left { conn, .. }
                | ServerEvent::Dropped { conn, .. } => Some(*conn),
                ServerEvent::Exited { .. } => None,
            };
            let peer = conn.and_then(|c| self.conns.get(&c)).map(|c| c.peer);
            let _ = self.log.try_send(RelayLog { event, peer });
        }
    }
}
