//! Swarm testing: many seeds, each with its own size, fault mix and traffic shape,
//! run on every core. Not every fault in every run: a fault that hides another (a
//! relay restart wiping out the state a resume bug would corrupt) then runs without
//! it in some seeds, as in TigerBeetle's VOPR and in the swarm-testing paper by Groce
//! et al. Each seed's run is a pure function of the seed, so a failure is replayed by
//! the one command it prints, down to the same transcript hash.

use core::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::judged::{JudgedRun, run_judged};
use crate::random::{FaultSet, RandomSpec, Traffic};
use crate::rng::Rng;

/// The run a swarm gives `seed`: its size, faults and traffic are drawn from the seed
/// (most runs small, a few with hundreds of clients).
pub fn swarm_spec(seed: u64) -> RandomSpec {
    let mut rng = Rng::new(seed ^ 0x5_3A2A_11ED);
    let direct = rng.chance(15);
    let clients = match rng.below(100) {
        _ if direct => 2,
        0..70 => rng.between(2, 12),
        70..95 => rng.between(13, 60),
        _ => rng.between(61, 200),
    } as u32;
    let messages = (clients as u64 * rng.between(2, 30)).min(4_000) as u32;
    let flags: [bool; 9] = core::array::from_fn(|_| rng.chance(50));
    // Uniform traffic makes every client agree keys with every other: past 60
    // clients that is most of the run's time, so big runs are chat-shaped.
    let traffic = if clients > 60 || rng.chance(50) {
        Traffic::Chat
    } else {
        Traffic::Uniform
    };
    // A full relay now and then, one client short (a quarter of the runs is enough
    // to prove refusals): a refused client never sends what it was scripted to, and
    // nobody holds its ID, so two refused of seven made runs whose workload mostly
    // could not happen (seed 12466 of the first 15,000).
    let max_clients = if rng.chance(25) {
        clients.saturating_sub(1).max(1)
    } else {
        clients
    };
    let mut faults = FaultSet::from_flags(flags);
    // At a full relay, a user who starts again after losing its link is turned away
    // (its old session holds the slot until the relay gives it up), and simulated
    // users do not try again later: such runs collapse with nothing wrong (swarm
    // seeds 3225, 9288 and 10618). Reconnects are proved at relays with room.
    if max_clients < clients {
        faults.reconnect = false;
    }
    RandomSpec {
        seed,
        clients,
        messages,
        max_clients,
        faults,
        direct,
        files: rng.below(4) as u32,
        traffic,
    }
}

/// What a swarm did.
#[derive(Debug, Clone, Default)]
pub struct SwarmReport {
    /// Runs completed.
    pub runs: u64,
    /// Simulator events in all.
    pub events: u64,
    /// Messages delivered in all.
    pub delivered: u64,
    /// The runs that failed, in seed order.
    pub failures: Vec<JudgedRun>,
}

/// Runs every seed of `seeds` ([`swarm_spec`]) on `jobs` threads; `done` is told of
/// each run as it ends (in no particular order).
pub fn run_swarm(
    seeds: Range<u64>,
    jobs: usize,
    done: &(dyn Fn(&JudgedRun) + Sync),
) -> SwarmReport {
    let next = AtomicU64::new(seeds.start);
    let report = Mutex::new(SwarmReport::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let run = run_judged(&swarm_spec(seed), None);
                    done(&run);
                    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                    r.runs += 1;
                    r.events += run.stats.events;
                    r.delivered += run.verdict.workload.delivered;
                    if !run.ok() {
                        r.failures.push(run);
                    }
                }
            });
        }
    });
    let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
    report.failures.sort_by_key(|r| r.spec.seed);
    report
}

/// Parses `A..B` (B excluded) or a single seed `A`.
pub fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let number = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("{t:?} is not a seed number"))
    };
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if b <= a {
                return Err(format!("the range {a}..{b} holds no seed"));
            }
            Ok(a..b)
        }
        None => {
            let a = number(s)?;
            Ok(a..a.saturating_add(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse() {
        assert_eq!(parse_seeds("1..5"), Ok(1..5));
        assert_eq!(parse_seeds("7"), Ok(7..8));
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("x..3").is_err());
    }

    #[test]
    fn a_seed_always_gives_the_same_run() {
        assert_eq!(swarm_spec(11), swarm_spec(11));
        let sizes: std::collections::BTreeSet<u32> =
            (0..200).map(|s| swarm_spec(s).clients).collect();
        assert!(sizes.len() > 30, "sizes vary: {sizes:?}");
    }
}
