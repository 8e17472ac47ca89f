//! The command line, as argh structures: one subcommand per way of using p2pchat.

use argh::FromArgs;

/// Chat over TCP, directly between two machines or through a relay server.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Listen(ListenArgs),
    Connect(ConnectArgs),
    Server(ServerArgs),
    Join(JoinArgs),
    Bench(BenchArgs),
    Sim(SimArgs),
    Id(IdArgs),
    Web(WebArgs),
}

/// Chat in your browser: a local web app on 127.0.0.1, reached through the URL it
/// prints (which carries a secret token).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "web")]
pub struct WebArgs {
    /// address to listen on (default 127.0.0.1; anything else lets other machines
    /// reach the app, guarded by the token alone)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub bind: String,
    /// port to listen on (default 8432; when it is taken, a free one is used)
    #[argh(option)]
    pub port: Option<u16>,
    /// where received files go (default: the current folder)
    #[argh(option, default = "std::path::PathBuf::from(\".\")")]
    pub download_dir: std::path::PathBuf,
}

/// Show this installation's key fingerprint (created on first use), which others
/// compare, or pin with --expect.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "id")]
pub struct IdArgs {}

/// Wait for one peer to connect, then chat with it (direct chat).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "listen")]
pub struct ListenArgs {
    /// address to listen on (default 0.0.0.0; use :: for IPv6)
    #[argh(option, default = "String::from(\"0.0.0.0\")")]
    pub bind: String,
    /// port to listen on (default 65432; 0 picks a free one)
    #[argh(option, default = "p2pchat_tcp::DEFAULT_PORT")]
    pub port: u16,
    /// your nickname, shown to the peer
    #[argh(option, default = "String::new()")]
    pub name: String,
    /// print one JSON object per event instead of text lines
    #[argh(switch)]
    pub json: bool,
    /// history file for this conversation (default: one per peer under
    /// ~/.local/share/p2pchat/history/)
    #[argh(option)]
    pub history: Option<std::path::PathBuf>,
    /// keep no history
    #[argh(switch)]
    pub no_history: bool,
    /// how many earlier lines to show when the conversation starts (default 20)
    #[argh(option, default = "20")]
    pub history_lines: usize,
    /// accept every file offered, without asking
    #[argh(switch)]
    pub auto_accept: bool,
    /// where received files go (default: the current folder)
    #[argh(option, default = "std::path::PathBuf::from(\".\")")]
    pub download_dir: std::path::PathBuf,
    /// also accept a peer that does not encrypt (--insecure on its side); the
    /// conversation is then in the clear
    #[argh(switch)]
    pub insecure: bool,
    /// the key fingerprint the peer must have (see `p2pchat id`); others are refused
    #[argh(option)]
    pub expect: Option<String>,
    /// how long the conversation waits for the peer to come back after a lost
    /// connection, in seconds (default 60; 0: it ends at once)
    #[argh(
        option,
        default = "p2pchat_core::Limits::default().resume_grace.as_secs()"
    )]
    pub resume_grace: u64,
    /// start a new conversation instead of resuming the one a previous `listen` on
    /// this address left when its process died (saved under the data folder, in
    /// sessions/)
    #[argh(switch)]
    pub new_session: bool,
}

/// Connect to a peer running `p2pchat listen` and chat with it (direct chat).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "connect")]
pub struct ConnectArgs {
    /// HOST or HOST:PORT of the listening peer (default port 65432)
    #[argh(positional)]
    pub host: String,
    /// your nickname, shown to the peer
    #[argh(option, default = "String::new()")]
    pub name: String,
    /// print one JSON object per event instead of text lines
    #[argh(switch)]
    pub json: bool,
    /// speak plain text lines (to `nc -l` or the original app) instead of p2pchat
    #[argh(switch)]
    pub text: bool,
    /// history file for this conversation (default: one per peer under
    /// ~/.local/share/p2pchat/history/)
    #[argh(option)]
    pub history: Option<std::path::PathBuf>,
    /// keep no history
    #[argh(switch)]
    pub no_history: bool,
    /// how many earlier lines to show when the conversation starts (default 20)
    #[argh(option, default = "20")]
    pub history_lines: usize,
    /// accept every file offered, without asking
    #[argh(switch)]
    pub auto_accept: bool,
    /// where received files go (default: the current folder)
    #[argh(option, default = "std::path::PathBuf::from(\".\")")]
    pub download_dir: std::path::PathBuf,
    /// talk in the clear: do not encrypt (the other side must allow it); for
    /// benchmarks and plain-text tools, never across the internet
    #[argh(switch)]
    pub insecure: bool,
    /// the cipher to propose: auto (the default: aes-256-gcm where this processor has
    /// AES instructions, else chacha20-poly1305), aes-256-gcm or chacha20-poly1305;
    /// the other side follows the proposal
    #[argh(option, default = "CipherChoice::Auto", from_str_fn(parse_cipher))]
    pub cipher: CipherChoice,
    /// the key fingerprint the peer must have (see `p2pchat id`); without it, the key
    /// seen at the first conversation with this address is remembered and required
    #[argh(option)]
    pub expect: Option<String>,
    /// start a new conversation instead of resuming the one a previous `connect` to
    /// the same peer left when its process died (saved under the data folder, in
    /// sessions/)
    #[argh(switch)]
    pub new_session: bool,
}

/// Run a relay server that many `p2pchat join` clients connect to.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "server")]
pub struct ServerArgs {
    /// address to listen on (default 0.0.0.0; use :: for IPv6)
    #[argh(option, default = "String::from(\"0.0.0.0\")")]
    pub bind: String,
    /// port to listen on (default 65432; 0 picks a free one)
    #[argh(option, default = "p2pchat_tcp::DEFAULT_PORT")]
    pub port: u16,
    /// clients admitted at once; the next one is refused (default 256; 3 gives the
    /// original three-client setup)
    #[argh(option, default = "p2pchat_core::Limits::default().max_clients")]
    pub max_clients: u32,
    /// also admit clients that do not encrypt (--insecure on their side); their
    /// traffic is then in the clear
    #[argh(switch)]
    pub insecure: bool,
    /// admit only clients that give this password (or set P2PCHAT_PASSWORD); it is
    /// checked inside the secure handshake and never travels
    #[argh(option)]
    pub password: Option<String>,
    /// connections one network address may hold at once; the next is refused
    /// (default 64; 0: no limit)
    #[argh(
        option,
        default = "p2pchat_core::Limits::default().max_connections_per_address"
    )]
    pub max_per_address: u32,
    /// chat messages a second one client may send (bursts of as many); a client that
    /// sends faster is read from more slowly and told so, nothing is dropped
    /// (default 20000; 0: no limit)
    #[argh(option, default = "p2pchat_core::Limits::default().message_rate")]
    pub message_rate: u32,
    /// how long a client whose connection was lost keeps its ID and the messages
    /// sent to it, for it to come back and resume, in seconds (default 60; 0: none)
    #[argh(
        option,
        default = "p2pchat_core::Limits::default().resume_grace.as_secs()"
    )]
    pub resume_grace: u64,
    /// be one of several relays that act as one, over NATS (JetStream):
    /// nats://HOST:PORT, several comma-separated; IDs, the client limit and
    /// routing are cluster-wide (docs/SCALING.md)
    #[argh(option)]
    pub cluster: Option<String>,
    /// the cluster's name: relays with the same NATS and name are one (default
    /// p2pchat; letters, digits, - and _)
    #[argh(option, default = "String::from(\"p2pchat\")")]
    pub cluster_name: String,
}

/// Join a relay server: get an ID, then send `ID message` to another client.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "join")]
pub struct JoinArgs {
    /// HOST or HOST:PORT of the relay (default port 65432)
    #[argh(positional)]
    pub host: String,
    /// your nickname, shown to the others
    #[argh(option, default = "String::new()")]
    pub name: String,
    /// print one JSON object per event instead of text lines
    #[argh(switch)]
    pub json: bool,
    /// append a transcript of everything this client shows to FILE
    #[argh(option)]
    pub log: Option<std::path::PathBuf>,
    /// accept every file offered, without asking
    #[argh(switch)]
    pub auto_accept: bool,
    /// where received files go (default: the current folder)
    #[argh(option, default = "std::path::PathBuf::from(\".\")")]
    pub download_dir: std::path::PathBuf,
    /// talk to the relay in the clear: do not encrypt (the relay must allow it); for
    /// benchmarks, never across the internet
    #[argh(switch)]
    pub insecure: bool,
    /// the relay's password (or set P2PCHAT_PASSWORD)
    #[argh(option)]
    pub password: Option<String>,
    /// the cipher to propose: auto (the default: aes-256-gcm where this processor has
    /// AES instructions, else chacha20-poly1305), aes-256-gcm or chacha20-poly1305;
    /// the other side follows the proposal
    #[argh(option, default = "CipherChoice::Auto", from_str_fn(parse_cipher))]
    pub cipher: CipherChoice,
    /// the key fingerprint the relay must have (its operator's `p2pchat id`); without
    /// it, the key seen at the first visit to this address is remembered and required
    #[argh(option)]
    pub expect: Option<String>,
    /// when the connection to the relay is lost, stop instead of getting back (by
    /// default the client dials again and resumes its session, or, if the relay no
    /// longer holds it, joins again as a new client, for up to two minutes)
    #[argh(switch)]
    pub no_reconnect: bool,
    /// start a new session instead of resuming the one a previous `join` to the same
    /// relay left when its process died (it is saved under the data folder, in
    /// sessions/)
    #[argh(switch)]
    pub new_session: bool,
}

/// Measure a relay over 127.0.0.1: throughput, latency, server memory and CPU.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
    /// number of clients (default 100)
    #[argh(option, default = "100")]
    pub clients: u32,
    /// messages to send in all (default 100000)
    #[argh(option, default = "100_000")]
    pub messages: u64,
    /// ring, random or broadcast (default ring)
    #[argh(option, default = "String::from(\"ring\")")]
    pub pattern: String,
    /// total send rate in messages per second, each message written on its own
    /// (default: flat out, batched)
    #[argh(option)]
    pub rate: Option<u64>,
    /// with --rate: the most messages a sender that fell behind its schedule writes
    /// at once (default 1: each on its own)
    #[argh(option, default = "1")]
    pub burst: usize,
    /// bytes of text per message (default 64)
    #[argh(option, default = "64")]
    pub size: usize,
    /// messages one sender may have in flight (default 64)
    #[argh(option, default = "64")]
    pub window: usize,
    /// stop after this many seconds (default 60)
    #[argh(option, default = "60")]
    pub max_seconds: u64,
    /// IP:PORT of a relay already running, or several comma-separated (a cluster's
    /// relays: clients are spread over them in turn) (default: start `p2pchat server` and
    /// measure its memory and CPU too)
    #[argh(option)]
    pub server: Option<String>,
    /// drive the relay in plain text (`ID text` lines), as nc would
    #[argh(switch)]
    pub text: bool,
    /// measure the minimal reference relay instead of p2pchat (implies --text)
    #[argh(switch)]
    pub reference: bool,
    /// run the minimal reference relay on 127.0.0.1 (used by --reference)
    #[argh(switch)]
    pub serve_reference: bool,
    /// measure `ncat --broker` instead (broadcast pattern; Debian package ncat)
    #[argh(switch)]
    pub ncat: bool,
    /// p2pchat clients in the clear, and the relay started with --insecure (to see
    /// what encryption costs; the default is encrypted, as people run it)
    #[argh(switch)]
    pub insecure: bool,
    /// clients that write and read frames in place, in the clear (the cheapest client
    /// there is, to measure the relay alone; the relay runs --insecure)
    #[argh(switch)]
    pub raw_frames: bool,
    /// the same frames as --raw-frames, written and read in place, but on an
    /// encrypted link (a real client's handshake, then records): the cheapest
    /// encrypted client, to measure what encryption costs the relay alone
    #[argh(switch)]
    pub sealed_frames: bool,
    /// run a sweep instead: for each number of clients in this comma-separated list,
    /// p2pchat and the reference relay flat out (--messages) and paced (--rate,
    /// default 20000); prints a Markdown table
    #[argh(option)]
    pub sweep: Option<String>,
    /// with --sweep: write a chart of throughput and p99 latency against the number
    /// of clients to this SVG file
    #[argh(option)]
    pub plot: Option<std::path::PathBuf>,
    /// with --sweep: how long each paced run lasts, in seconds (default 3)
    #[argh(option, default = "3")]
    pub paced_seconds: u64,
    /// measure instead how fast this file is hashed (BLAKE3): on every core, and on
    /// one core (as `/send` hashes while it sends)
    #[argh(option)]
    pub hash_file: Option<std::path::PathBuf>,
}

/// Run one simulated scenario (deterministic: the same flags give the same transcript)
/// and check its invariants.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sim")]
pub struct SimArgs {
    /// seed of the scenario and of the network's randomness (default 1)
    #[argh(option, default = "1")]
    pub seed: u64,
    /// run relays of a cluster on a simulated bus instead (bus delays, relay deaths;
    /// the relays, clients and messages drawn from the seed)
    #[argh(switch)]
    pub cluster: bool,
    /// number of clients (default 5)
    #[argh(option, default = "5")]
    pub clients: u32,
    /// number of messages (default 20)
    #[argh(option, default = "20")]
    pub messages: u32,
    /// the relay's client limit (default: as many as there are clients)
    #[argh(option)]
    pub max_clients: Option<u32>,
    /// faults to inject: all, none, or a list of split, jitter, reset, stall, cut,
    /// vanish, reconnect, restart, crash (default none)
    #[argh(option, default = "String::from(\"none\")")]
    pub faults: String,
    /// number of files sent (up to 200 KB each) beside the messages (default 0)
    #[argh(option, default = "0")]
    pub files: u32,
    /// simulate a direct conversation between two peers instead of a relay
    #[argh(switch)]
    pub direct: bool,
    /// how messages are addressed: uniform (random pairs, 1 in 10 to everyone) or
    /// chat (a few partners each, a few announcers; for thousands of clients)
    /// (default uniform)
    #[argh(option, default = "String::from(\"uniform\")")]
    pub traffic: String,
    /// run a swarm instead of one run: every seed of A..B (B excluded), each with its
    /// own size, faults and traffic drawn from the seed, on every core; a failure
    /// prints the command that replays it
    #[argh(option)]
    pub seeds: Option<String>,
    /// with --seeds: threads to run on (default: one per core)
    #[argh(option)]
    pub jobs: Option<usize>,
    /// print only the verdict, not the transcript
    #[argh(switch)]
    pub quiet: bool,
    /// run plain-text senders (nc-like, --clients of them, --messages lines each)
    /// against a relay (or with --direct a listener) whose driver runs behind its
    /// sockets, and check that no line is split or merged
    #[argh(switch)]
    pub plain_text: bool,
    /// with --plain-text: how far behind its sockets the receiver may run, in
    /// milliseconds (default 2000)
    #[argh(option, default = "2000")]
    pub lag_ms: u64,
    /// with --plain-text: the most bytes one read takes, 1 for byte-by-byte reads, 0
    /// for everything waiting (default 0)
    #[argh(option, default = "0")]
    pub max_read: usize,
    /// with --plain-text: one more sender that speaks as the original app did (each
    /// message one send, no newline)
    #[argh(switch)]
    pub original_app: bool,
}

/// `--cipher`: a cipher, or the faster one on this processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherChoice {
    /// [`p2pchat_core::RecordCipher::fastest_here`].
    Auto,
    /// This one.
    Fixed(p2pchat_core::RecordCipher),
}

impl CipherChoice {
    /// The cipher to propose.
    pub fn resolve(self) -> p2pchat_core::RecordCipher {
        match self {
            CipherChoice::Auto => p2pchat_core::RecordCipher::fastest_here(),
            CipherChoice::Fixed(cipher) => cipher,
        }
    }
}

fn parse_cipher(value: &str) -> Result<CipherChoice, String> {
    if value == "auto" {
        return Ok(CipherChoice::Auto);
    }
    p2pchat_core::RecordCipher::from_name(value)
        .map(CipherChoice::Fixed)
        .ok_or_else(|| {
            format!("unknown cipher `{value}`: use auto, aes-256-gcm or chacha20-poly1305")
        })
}
