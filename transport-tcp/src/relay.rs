//! The relay server over TCP: an accept loop, one reader task per connection, and the
//! [`RelayServer`] they share on one thread.
//!
//! Why this shape: a relay's cost is per wake-up, not per byte. Every hop between tasks
//! (reader to core, core to writer, writer back to core with "written") is a wake-up,
//! and for unbatched chat each hop costs more than routing the message. So a reader
//! that has bytes calls the core itself, and the core's output is written straight to
//! the target sockets with a non-blocking write, in the same turn. Only a socket that
//! is full gets a writer task, which waits for room and drains that connection's
//! backlog. The backlog is bounded by the core
//! ([`p2pchat_core::Limits::max_outbound_bytes`] counts bytes until they are written),
//! so a client that does not read is cut off rather than growing memory.
//!
//! Everything runs on the thread that runs [`Relay::run`] (a `LocalExecutor`), so the
//! shared state is a `RefCell` borrowed briefly, never across an `.await`. A connection
//! holds no buffer of its own while idle: reads go through one buffer per relay.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use p2pchat_core::{
    ClusterInput, ClusterRequest, ConnId, Limits, RelayServer, Security, ServerEvent,
};
use smol::{Async, LocalExecutor, Timer};

use crate::clock::Clock;
use crate::error::BindError;

/// Size of the one read buffer the relay's connections share.
const READ_BUFFER: usize = 64 * 1024;

/// How long a connection the core closed may take to go away before it is forced.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// How long a closed connection waits for the other side's FIN after sending its own,
/// so that a reset does not destroy the last bytes on their way.
const LINGER: Duration = Duration::from_secs(2);

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

/// A relay server bound to an address and ready to run.
#[derive(Debug)]
pub struct Relay {
    listener: smol::net::TcpListener,
    limits: Limits,
    security: Security,
    cluster: Option<ClusterLink>,
}

/// A relay's link to the bus of its cluster (docs/SCALING.md): the core's requests
/// go out on one channel, the bus's answers and news come in on the other. Whoever
/// holds the other ends (`p2pchat-cluster`'s node, over NATS) carries them out.
#[derive(Debug)]
pub struct ClusterLink {
    /// Where the core's requests go.
    pub requests: Sender<ClusterRequest>,
    /// What the bus tells the relay.
    pub inputs: Receiver<ClusterInput>,
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
    /// Binds the listening socket. `security` is the relay's key, whether it admits
    /// clients that do not encrypt, and its password (see [`RelayServer::new`]).
    pub async fn bind(
        addr: SocketAddr,
        limits: Limits,
        security: Security,
    ) -> Result<Relay, BindError> {
        let listener = crate::connect::listen(addr).await?;
        Ok(Relay {
            listener,
            limits,
            security,
            cluster: None,
        })
    }

    /// Makes this relay one of a cluster, linked to its bus.
    pub fn in_cluster(mut self, link: ClusterLink) -> Relay {
        self.cluster = Some(link);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves clients until `shutdown` fires, then says goodbye to everyone and returns.
    /// Log lines go to `log`; dropping its receiver is fine.
    ///
    /// The relay runs entirely on the thread that polls this future (its tasks share
    /// the core without locks), so the future is not `Send`: run it with
    /// `smol::block_on`, or use [`Relay::spawn`] for a thread of its own.
    pub async fn run(self, log: Sender<RelayLog>, shutdown: ShutdownSignal) {
        let ex = Rc::new(LocalExecutor::new());
        let (timer_tx, timer_rx) = async_channel::bounded(1);
        let (server, cluster) = match self.cluster {
            Some(link) => (
                RelayServer::clustered(self.limits, self.security),
                Some(link),
            ),
            None => (RelayServer::new(self.limits, self.security), None),
        };
        let cluster_requests = cluster.as_ref().map(|l| l.requests.clone());
        let hub = Rc::new(RefCell::new(Hub {
            server,
            cluster_requests,
            conns: HashMap::new(),
            clock: Clock::new(),
            log,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            timer_at: None,
            timer_wake: timer_tx,
            ex: Some(ex.clone()),
            me: std::rc::Weak::new(),
        }));
        hub.borrow_mut().me = Rc::downgrade(&hub);
        if let Some(link) = cluster {
            ex.spawn(cluster_loop(hub.clone(), link.inputs)).detach();
        }
        ex.run(serve(hub.clone(), self.listener, timer_rx, shutdown.rx))
            .await;
        // Break the cycle hub -> executor -> tasks -> hub, so that every socket closes.
        let ex_in_hub = hub.borrow_mut().ex.take();
        drop(ex_in_hub);
        hub.borrow_mut().conns.clear();
        drop(ex);
    }

    /// Runs the relay on a thread of its own; the thread ends after `shutdown` fires
    /// and clients are gone.
    pub fn spawn(
        self,
        log: Sender<RelayLog>,
        shutdown: ShutdownSignal,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || smol::block_on(self.run(log, shutdown)))
    }
}

/// Accepts connections until shutdown, then shuts down in order.
async fn serve(
    hub: Rc<RefCell<Hub>>,
    listener: smol::net::TcpListener,
    timer_wake: Receiver<()>,
    shutdown: Receiver<()>,
) {
    let Some(ex) = hub.borrow().ex.clone() else {
        return;
    };
    let timers = ex.spawn(timer_loop(hub.clone(), timer_wake));
    // The accept loop is a task of its own, not part of this future: the executor
    // polls the future it runs each time it wakes from a sleep, and a pending
    // `accept` polled that way tries `accept(2)` again and re-arms the listener
    // (`async-io` assumes a poll means readiness). Beside a relay waking thousands of
    // times a second that was two wasted system calls per wake-up.
    let accepting = ex.spawn(accept_loop(hub.clone(), listener));
    let _ = shutdown.recv().await;
    drop(accepting);
    {
        let mut h = hub.borrow_mut();
        let now = h.clock.now();
        h.server.shutdown(now);
        h.flush();
    }
    let until = Instant::now() + SHUTDOWN_GRACE;
    while !hub.borrow().conns.is_empty() && Instant::now() < until {
        Timer::after(Duration::from_millis(20)).await;
    }
    for c in hub.borrow().conns.values() {
        let _ = c.stream.get_ref().shutdown(Shutdown::Both);
    }
    drop(timers);
}

async fn accept_loop(hub: Rc<RefCell<Hub>>, listener: smol::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let stream: Arc<Async<TcpStream>> = stream.into();
                let mut h = hub.borrow_mut();
                let now = h.clock.now();
                let conn = h.server.handle_connected_from(peer.ip(), now);
                h.conns.insert(
                    conn,
                    Conn {
                        stream: stream.clone(),
                        peer,
                        backlog: Vec::new(),
                        writing: false,
                        closing: false,
                        fin_sent: false,
                        gone: false,
                    },
                );
                h.spawn(read_loop(hub.clone(), conn, stream));
                h.flush();
            }
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or a connection reset
                // before accept: back off briefly and keep serving who we have.
                let pause = if matches!(e.raw_os_error(), Some(23 | 24)) {
                    Duration::from_millis(100)
                } else {
                    Duration::from_millis(5)
                };
                Timer::after(pause).await;
            }
        }
    }
}

/// Waits for bytes on one connection and hands each read to the core. A client
/// over the relay's message rate is not read from until the core says (TCP then
/// slows the client down; nothing is dropped).
///
/// When the core asks for an idle check (a plain-text client that never sent a
/// newline has a partial line), the reader also wakes at that time and reads: bytes
/// that were waiting go to the core as usual, and only a read that finds nothing is
/// reported as a pause. However late this task runs, the sender's pause is never
/// confused with bytes the relay has not got to yet.
async fn read_loop(hub: Rc<RefCell<Hub>>, conn: ConnId, stream: Arc<Async<TcpStream>>) {
    loop {
        let check = {
            let h = hub.borrow();
            h.server.read_idle_check(conn).map(|t| h.clock.instant(t))
        };
        let readable = match check {
            None => stream.readable().await,
            Some(at) => {
                smol::future::or(stream.readable(), async {
                    Timer::at(at).await;
                    Ok(())
                })
                .await
            }
        };
        if readable.is_err() {
            break;
        }
        let pause = {
            let mut h = hub.borrow_mut();
            let h = &mut *h;
            match stream.get_ref().read(&mut h.read_buf) {
                Ok(0) => {
                    // The other side finished sending: its last line is complete.
                    let now = h.clock.now();
                    h.server.handle_end_of_stream(conn, now);
                    break;
                }
                Ok(n) => {
                    let now = h.clock.now();
                    let bytes = h.read_buf.get(..n).unwrap_or_default();
                    h.server.handle_bytes(conn, bytes, now);
                    h.flush();
                    h.server.read_paused_until(conn).map(|t| h.clock.instant(t))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if check.is_some() {
                        let now = h.clock.now();
                        h.server.handle_read_idle(conn, now);
                        h.flush();
                    }
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(_) => break,
            }
        };
        if let Some(at) = pause {
            Timer::at(at).await;
        }
    }
    hub.borrow_mut().on_closed(conn);
}

/// Drains the backlog of a connection whose socket was full, waiting for room.
async fn write_loop(hub: Rc<RefCell<Hub>>, conn: ConnId, stream: Arc<Async<TcpStream>>) {
    loop {
        let batch = {
            let mut h = hub.borrow_mut();
            let Some(c) = h.conns.get_mut(&conn) else {
                return;
            };
            if c.backlog.is_empty() {
                c.writing = false;
                let (closing, gone) = (c.closing, c.gone);
                if gone {
                    h.conns.remove(&conn);
                } else if closing {
                    h.send_fin(conn);
                }
                return;
            }
            std::mem::take(&mut c.backlog)
        };
        let mut written = 0;
        while written < batch.len() {
            let rest = batch.get(written..).unwrap_or_default();
            match stream.write_with(|s| (&*s).write(rest)).await {
                Ok(0) | Err(_) => {
                    let _ = stream.get_ref().shutdown(Shutdown::Both);
                    let mut h = hub.borrow_mut();
                    if let Some(c) = h.conns.get_mut(&conn) {
                        c.writing = false;
                        c.backlog = Vec::new();
                        if c.gone {
                            h.conns.remove(&conn);
                        }
                    }
                    return;
                }
                Ok(n) => written += n,
            }
        }
        let mut h = hub.borrow_mut();
        h.server.handle_written(conn, written);
        h.flush();
    }
}

/// Re-arms one timer from the core's next deadline; `wake` says the deadline moved
/// earlier.
async fn timer_loop(hub: Rc<RefCell<Hub>>, wake: Receiver<()>) {
    loop {
        let at = hub.borrow().timer_at;
        smol::future::or(
            async {
                match at {
                    Some(at) => {
                        Timer::at(at).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            },
            async {
                let _ = wake.recv().await;
            },
        )
        .await;
        let mut h = hub.borrow_mut();
        let now = h.clock.now();
        if h.server.poll_timeout().is_some_and(|t| t <= now) {
            h.server.handle_timeout(now);
        }
        h.flush();
    }
}

/// Hands what the cluster's bus says to the core, and carries out what follows.
async fn cluster_loop(hub: Rc<RefCell<Hub>>, inputs: Receiver<ClusterInput>) {
    while let Ok(input) = inputs.recv().await {
        let mut h = hub.borrow_mut();
        let now = h.clock.now();
        h.server.handle_cluster(input, now);
        h.flush();
    }
}

/// One connection, as the driver sees it.
struct Conn {
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    /// Bytes the socket would not take yet, in order; a writer task drains them.
    backlog: Vec<u8>,
    /// Whether a writer task is draining `backlog`.
    writing: bool,
    /// The core asked to close once everything queued is written.
    closing: bool,
    /// Our FIN is sent.
    fin_sent: bool,
    /// The reader is done and the core forgot the connection; the entry stays only
    /// until its writer has written what was left.
    gone: bool,
}

/// What the relay's tasks share: the core and the sockets.
struct Hub {
    server: RelayServer,
    /// Where the core's requests for the cluster's bus go (a relay of a cluster).
    cluster_requests: Option<Sender<ClusterRequest>>,
    conns: HashMap<ConnId, Conn>,
    clock: Clock,
    log: Sender<RelayLog>,
    read_buf: Box<[u8]>,
    /// The deadline the timer task sleeps towards.
    timer_at: Option<Instant>,
    timer_wake: Sender<()>,
    ex: Option<Rc<LocalExecutor<'static>>>,
    me: std::rc::Weak<RefCell<Hub>>,
}

impl Hub {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        if let Some(ex) = &self.ex {
            ex.spawn(task).detach();
        }
    }

    /// Carries out everything the core asked for: writes, closes, log lines, and the
    /// timer's next deadline.
    fn flush(&mut self) {
        while let Some(t) = self.server.poll_transmit() {
            self.send(t.conn, t.bytes);
        }
        while let Some(request) = self.server.poll_cluster() {
            if let Some(requests) = &self.cluster_requests {
                let _ = requests.try_send(request);
            }
        }
        while let Some(conn) = self.server.poll_close() {
            self.close(conn);
        }
        self.log_events();
        let next = self.server.poll_timeout().map(|t| self.clock.instant(t));
        if next != self.timer_at {
            let earlier = match (next, self.timer_at) {
                (Some(new), Some(old)) => new < old,
                (Some(_), None) => true,
                (None, _) => false,
            };
            self.timer_at = next;
            if earlier {
                let _ = self.timer_wake.try_send(());
            }
        }
    }

    /// Writes at once what the socket takes; the rest waits for a writer task.
    fn send(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.writing {
            c.backlog.extend_from_slice(&bytes);
            return;
        }
        let written = match c.stream.get_ref().write(&bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                // The connection is broken; its reader will see it and report it.
                let _ = c.stream.get_ref().shutdown(Shutdown::Both);
                return;
            }
        };
        if written < bytes.len() {
            c.backlog = bytes;
            c.backlog.drain(..written);
            c.writing = true;
            let stream = c.stream.clone();
            let me = self.me.clone();
            self.spawn(async move {
                if let Some(hub) = me.upgrade() {
                    write_loop(hub, conn, stream).await;
                }
            });
        }
        if written > 0 {
            self.server.handle_written(conn, written);
        }
    }

    /// The core wants `conn` closed after what is queued; a connection that does not
    /// go away in time is forced.
    fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.closing = true;
        let deadline = Arc::downgrade(&c.stream);
        if !c.writing {
            self.send_fin(conn);
        }
        self.spawn(force_close_after(deadline, CLOSE_DEADLINE));
    }

    /// Sends our FIN; the reader keeps reading (the core ignores it) until the other
    /// side closes too, or the linger time runs out.
    fn send_fin(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.fin_sent {
            return;
        }
        c.fin_sent = true;
        let _ = c.stream.get_ref().shutdown(Shutdown::Write);
        let weak = Arc::downgrade(&c.stream);
        self.spawn(force_close_after(weak, LINGER));
    }

    /// The reader is done: the core forgets the connection (after what it queued
    /// earlier, such as the reason it was cut off, went to the socket).
    fn on_closed(&mut self, conn: ConnId) {
        self.flush();
        let now = self.clock.now();
        self.server.handle_closed(conn, now);
        // Log while the remote address is still known.
        self.log_events();
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.writing {
                c.gone = true;
            } else {
                self.conns.remove(&conn);
            }
        }
        self.flush();
    }

    fn log_events(&mut self) {
        while let Some(event) = self.server.poll_event() {
            let conn = match &event {
                ServerEvent::Admitted { conn, .. }
                | ServerEvent::Refused { conn, .. }
                | ServerEvent::Left { conn, .. }
                | ServerEvent::Resumed { conn, .. }
                | ServerEvent::Dropped { conn, .. } => Some(*conn),
                ServerEvent::Exited { .. } | ServerEvent::Parked { .. } => None,
            };
            let peer = conn.and_then(|c| self.conns.get(&c)).map(|c| c.peer);
            let _ = self.log.try_send(RelayLog { event, peer });
        }
    }
}

/// Ends a connection that is still open after `after` (it would not read its last
/// bytes, or would not close).
async fn force_close_after(stream: Weak<Async<TcpStream>>, after: Duration) {
    Timer::after(after).await;
    if let Some(stream) = stream.upgrade() {
        let _ = stream.get_ref().shutdown(Shutdown::Both);
    }
}
