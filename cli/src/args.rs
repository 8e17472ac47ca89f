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
}

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
    /// bytes of text per message (default 64)
    #[argh(option, default = "64")]
    pub size: usize,
    /// messages one sender may have in flight (default 64)
    #[argh(option, default = "64")]
    pub window: usize,
    /// stop after this many seconds (default 60)
    #[argh(option, default = "60")]
    pub max_seconds: u64,
    /// HOST:PORT of a relay already running (default: start `p2pchat server` and
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
    /// measure instead how fast this file is hashed (BLAKE3) the way `/send` does it,
    /// and on one core
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
    /// vanish, reconnect (default none)
    #[argh(option, default = "String::from(\"none\")")]
    pub faults: String,
    /// number of files sent (up to 200 KB each) beside the messages (default 0)
    #[argh(option, default = "0")]
    pub files: u32,
    /// simulate a direct conversation between two peers instead of a relay
    #[argh(switch)]
    pub direct: bool,
    /// print only the verdict, not the transcript
    #[argh(switch)]
    pub quiet: bool,
}
