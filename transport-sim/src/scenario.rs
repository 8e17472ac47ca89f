//! What a simulated run does: who joins when, what each one types, which faults hit
//! which link, and how the network behaves. A scenario plus a seed is a whole run.

use core::time::Duration;

use p2pchat_core::{ClientId, Limits};

/// The two topologies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// A relay server and any number of clients.
    Relay,
    /// Two direct peers: client 0 accepts, client 1 connects.
    Direct,
}

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A relay client ID.
    Id(u32),
    /// Every other relay client.
    All,
    /// The other direct peer.
    Peer,
}

/// Something that happens to one client at a moment of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The user sends a message.
    Send {
        /// Its addressee.
        to: Target,
        /// The text.
        text: String,
    },
    /// The user offers a file of `size` bytes (generated content) to `to`.
    SendFile {
        /// Its addressee (`Id` on a relay, `Peer` in direct chat).
        to: Target,
        /// Its size in bytes.
        size: u64,
    },
    /// The user says `exit`.
    Exit,
    /// The user leaves at once (Ctrl-C).
    Leave,
    /// The connection is reset (both sides notice).
    Reset,
    /// The client stops reading for this long (its socket buffers fill up).
    Stall(Duration),
    /// The link goes dead silently: nothing gets through, nobody is told.
    Cut,
    /// The client's machine disappears: it stops doing anything, and its link is cut.
    Vanish,
    /// The user connects again as a new client (after a reset, a cut, leaving...).
    Reconnect,
    /// The client's process is killed (`kill -9`: its connection ends, its memory is
    /// gone) and started again after this long, with nothing but the session it
    /// saved (see `RelayClient::save`), as `p2pchat join` or `connect`/`listen` are.
    Crash(Duration),
}

/// One client's part in the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPlan {
    /// Nickname.
    pub name: String,
    /// When it connects.
    pub join_at: Duration,
    /// What happens to it, at times measured from the start of the run, in order.
    pub actions: Vec<(Duration, Action)>,
}

/// How the simulated network behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// One-way delay of every byte.
    pub latency: Duration,
    /// Extra random delay, up to this much (bytes still arrive in order).
    pub jitter: Duration,
    /// Writes are cut into pieces of at most this many bytes (1 means byte by byte);
    /// piece sizes are random between 1 and this.
    pub max_chunk: usize,
    /// Whether pieces that have arrived may be handed over together in one read.
    pub coalesce: bool,
    /// Bytes one direction of a link holds (socket buffers on both ends); a writer
    /// waits when it is full.
    pub buffer: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            max_chunk: 64 * 1024,
            coalesce: true,
            buffer: 256 * 1024,
        }
    }
}

/// A whole run's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Relay or direct.
    pub topology: Topology,
    /// The protocol limits (the relay's `max_clients` among them).
    pub limits: Limits,
    /// The network.
    pub network: NetworkConfig,
    /// The clients, in the order they were written.
    pub clients: Vec<ClientPlan>,
    /// How long after the last scripted moment the run may take to settle.
    pub settle: Duration,
    /// Whether the machines encrypt (the default, as in real use); `false` runs
    /// everything in the clear, as with `--insecure`.
    pub encrypted: bool,
    /// When the relay process dies, and for how long (a crash and restart: every
    /// connection reset, every session forgotten).
    pub server_restarts: Vec<(Duration, Duration)>,
}

impl Scenario {
    /// An empty relay scenario with room for `max_clients`.
    pub fn relay(max_clients: u32) -> Self {
        Scenario {
            topology: Topology::Relay,
            limits: Limits {
                max_clients,
                ..Limits::default()
            },
            network: NetworkConfig::default(),
            clients: Vec::new(),
            settle: Duration::from_secs(180),
            encrypted: true,
            server_restarts: Vec::new(),
        }
    }

    /// Schedules a crash of the relay at `at`, back after `downtime`.
    pub fn restart_server(&mut self, at: Duration, downtime: Duration) -> &mut Self {
        self.server_restarts.push((at, downtime));
        self
    }

    /// An empty direct scenario: client 0 (`name_a`, listening) and client 1
    /// (`name_b`, connecting at `connect_at`).
    pub fn direct(name_a: &str, name_b: &str, connect_at: Duration) -> Self {
        let mut s = Scenario::relay(2);
        s.topology = Topology::Direct;
        s.clients = vec![
            ClientPlan {
                name: name_a.into(),
                join_at: Duration::ZERO,
                actions: Vec::new(),
            },
            ClientPlan {
                name: name_b.into(),
                join_at: connect_at,
                actions: Vec::new(),
            },
        ];
        s
    }

    /// Adds a client that connects at `at`; returns its index.
    pub fn join(&mut self, name: &str, at: Duration) -> usize {
        self.clients.push(ClientPlan {
            name: name.into(),
            join_at: at,
            actions: Vec::new(),
        });
        self.clients.len() - 1
    }

    /// Schedules `action` for client `client` at `at`.
    pub fn at(&mut self, at: Duration, client: usize, action: Action) -> &mut Self {
        if let Some(plan) = self.clients.get_mut(client) {
            plan.actions.push((at, action));
            plan.actions.sort_by_key(|(t, _)| *t);
        }
        self
    }

    /// Schedules a message from `client` to relay ID `to`.
    pub fn send(&mut self, at: Duration, client: usize, to: u32, text: &str) -> &mut Self {
        self.at(
            at,
            client,
            Action::Send {
                to: Target::Id(to),
                text: text.into(),
            },
        )
    }

    /// The last scripted moment.
    pub fn last_moment(&self) -> Duration {
        self.clients
            .iter()
            .flat_map(|c| std::iter::once(c.join_at).chain(c.actions.iter().map(|(t, _)| *t)))
            .chain(self.server_restarts.iter().map(|&(t, down)| t + down))
            .max()
            .unwrap_or_default()
    }

    /// Whether the target is a client ID that the relay may assign.
    pub fn id_of(target: Target) -> Option<ClientId> {
        match target {
            Target::Id(id) => Some(ClientId(id)),
            Target::All => Some(ClientId::BROADCAST),
            Target::Peer => None,
        }
    }
}

/// Shorthand for milliseconds.
pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
