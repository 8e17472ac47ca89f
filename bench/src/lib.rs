//! # p2pchat-bench
//!
//! A load generator for p2pchat relays over real TCP on 127.0.0.1: it starts a relay
//! (`p2pchat server`) as a child process, or uses one already running, connects N
//! clients, drives a pattern (ring, random, broadcast), flat out or paced, and reports
//! delivered messages per second, delivery latency (p50 / p99 / p99.9 / max), errors,
//! and the server's RSS per idle connection, peak RSS and CPU time (from /proc).
//!
//! It is a benchmark: it measures and reports, and asserts nothing about time.

mod dialect;
mod load;
pub mod plot;
pub mod reference;
mod server_proc;
mod stats;
pub mod sweep;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use load::{ClientKind, LoadConfig, LoadReport, Pattern};
pub use server_proc::{ServerProc, Usage, usage_of};
pub use stats::{Latencies, Percentiles};

/// Where the relay under test comes from.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start `PROGRAM server` on a free loopback port (RSS and CPU are measured).
    Spawn(PathBuf),
    /// Use relays already listening there (no RSS or CPU figures); with several
    /// (the relays of a cluster), clients are spread over them in turn.
    Existing(Vec<SocketAddr>),
    /// Start `PROGRAM bench --serve-reference` (the minimal reference relay; drive it
    /// with `plain_text`).
    SpawnReference(PathBuf),
    /// Start `ncat --broker` (Debian package `ncat`); broadcast only.
    SpawnNcat,
}

/// One bench run's results.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// The load's figures.
    pub load: LoadReport,
    /// Server RSS before any client connected, in KiB (0 when not measured).
    pub rss_before_kib: u64,
    /// Server RSS with every client connected and idle, in KiB.
    pub rss_idle_kib: u64,
    /// Server usage at the end (peak RSS, CPU time).
    pub end: Usage,
    /// Server CPU time spent during the load phase, in ms.
    pub load_cpu_ms: u64,
    /// Server CPU time of the whole run, in ms: connecting, the load, and the
    /// clients closing. The load phase ends with the generator's last delivery, so
    /// work the relay still does for it afterwards (the last acknowledgements) is
    /// counted here only; compare relays on this figure.
    pub run_cpu_ms: u64,
}

impl BenchReport {
    /// Server memory per idle connection, in bytes.
    pub fn rss_per_idle_connection(&self) -> u64 {
        let clients = u64::from(self.load.clients.max(1));
        self.rss_idle_kib.saturating_sub(self.rss_before_kib) * 1024 / clients
    }

    /// A one-line summary, the format BENCHMARKS.md quotes.
    pub fn summary(&self) -> String {
        let l = &self.load;
        let mut s = format!(
            "clients {} (connected in {:.1} s) | delivered {}/{} in {:.2} s = {:.0} msg/s | latency p50 {} us p99 {} us p99.9 {} us max {} us | errors {}",
            l.clients,
            l.connect_time.as_secs_f64(),
            l.delivered,
            l.expected,
            l.elapsed.as_secs_f64(),
            l.rate(),
            l.latency.p50,
            l.latency.p99,
            l.latency.p999,
            l.latency.max,
            l.errors
        );
        if self.rss_idle_kib > 0 {
            s.push_str(&format!(
                " | server RSS idle {} KiB ({} B/conn), peak {} KiB, CPU {} ms during load, {} ms in all ({:.0} ns a message)",
                self.rss_idle_kib,
                self.rss_per_idle_connection(),
                self.end.peak_rss_kib,
                self.load_cpu_ms,
                self.run_cpu_ms,
                self.run_cpu_ms as f64 * 1e6 / l.delivered.max(1) as f64
            ));
        }
        s
    }
}

/// Raises this process's open-file limit as far as allowed; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(0),
    }
}

/// Runs one bench: starts or reaches the relay, connects, loads, measures.
pub fn run(target: &Target, config: &LoadConfig) -> Result<BenchReport, String> {
    let limit = raise_fd_limit();
    let needed = u64::from(config.clients) + 64;
    if limit != 0 && limit < needed {
        return Err(format!(
            "{} clients need {needed} open files but the limit is {limit}; raise it with `ulimit -n {needed}`",
            config.clients
        ));
    }
    let server = match target {
        Target::SpawnNcat => Some(
            ServerProc::start_ncat().map_err(|e| format!("could not start ncat --broker: {e}"))?,
        ),
        Target::SpawnReference(program) => Some(
            ServerProc::start_reference(program)
                .map_err(|e| format!("could not start the reference relay: {e}"))?,
        ),
        Target::Spawn(program) => Some(
            ServerProc::start(
                program,
                config.clients + 16,
                config.kind.needs_insecure_relay(),
            )
            .map_err(|e| format!("could not start the relay: {e}"))?,
        ),
        Target::Existing(_) => None,
    };
    let addrs = match (&server, target) {
        (Some(s), _) => vec![s.addr],
        (None, Target::Existing(addrs)) if !addrs.is_empty() => addrs.clone(),
        (None, _) => return Err("no server".into()),
    };
    // Let the server settle before the baseline.
    std::thread::sleep(Duration::from_millis(100));
    let before = server.as_ref().map(|s| s.usage()).unwrap_or_default();
    let mut idle = Usage::default();
    let mut end = Usage::default();
    let load = load::run(
        &addrs,
        config,
        || {
            if let Some(s) = &server {
                std::thread::sleep(Duration::from_millis(200));
                idle = s.usage();
            }
            if addrs.len() > 1 {
                // The relays of a cluster learn each other's clients through the
                // bus, a little after they are admitted (docs/SCALING.md): a message
                // to an ID its sender's relay has not heard of yet is refused as
                // unknown, as it would be for a person typing an ID nobody announced.
                std::thread::sleep(Duration::from_secs(1));
            }
        },
        || end = server.as_ref().map(|s| s.usage()).unwrap_or_default(),
    )?;
    // The clients are closed: let the relay see them go before the last reading.
    let after = server
        .as_ref()
        .map(|s| {
            std::thread::sleep(Duration::from_millis(300));
            s.usage()
        })
        .unwrap_or_default();
    Ok(BenchReport {
        load,
        rss_before_kib: before.rss_kib,
        rss_idle_kib: idle.rss_kib,
        end,
        load_cpu_ms: end.cpu_ms.saturating_sub(idle.cpu_ms),
        run_cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms),
    })
}
