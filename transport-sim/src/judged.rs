//! One random run judged as it goes: each entry is handed to the invariant checker
//! and to the run's fingerprint the moment it happens, and is then dropped. Nothing
//! of the transcript is kept, so a run of tens of millions of events fits in the
//! memory of its machines. `p2pchat sim` and the swarm of seeds use it.
//!
//! It also holds the checker's proof at scale: [`Corruption`] breaks a run on
//! purpose (a delivery dropped, duplicated or moved) between the simulator and the
//! checker, and the checker must name it.

use crate::check::{Checker, Verdict};
use crate::random::{RandomSpec, random_scenario};
use crate::sim::{RunStats, run_info, run_observed};
use crate::transcript::{Entry, Observer, Record, TranscriptHash};

/// A finished run and what the checker made of it.
#[derive(Debug, Clone)]
pub struct JudgedRun {
    /// What was run (its `command()` replays it).
    pub spec: RandomSpec,
    /// The violations and the workload figures.
    pub verdict: Verdict,
    /// The transcript's fingerprint ([`TranscriptHash`]).
    pub hash: String,
    /// Transcript entries (lines, when printed).
    pub entries: u64,
    /// What it cost the simulator.
    pub stats: RunStats,
    /// The entry the [`Corruption`] changed, as printed (tests of the checker).
    pub corrupted: Option<String>,
}

impl JudgedRun {
    /// Whether every invariant held and the workload did not collapse.
    pub fn ok(&self) -> bool {
        self.verdict.violations.is_empty()
    }

    /// What a failed run says: its seed, the one command that replays it (down to
    /// the same transcript hash) and its first violations, the first broken rule
    /// first.
    pub fn failure_report(&self, at_most: usize) -> String {
        let mut out = format!(
            "seed {} FAILED: replay with\n    {}\n  transcript hash {}; {}\n",
            self.spec.seed,
            self.spec.command(),
            self.hash,
            self.verdict.workload
        );
        for v in self.verdict.violations.iter().take(at_most) {
            out.push_str(&format!("  {v}\n"));
        }
        if self.verdict.violations.len() > at_most {
            let more = self.verdict.violations.len() - at_most;
            out.push_str(&format!("  ... and {more} more\n"));
        }
        out
    }
}

/// A deliberate defect, for tests of the checker only: the `n`th delivery of the run
/// (counting from 0) is dropped, shown twice, or shown after the next delivery to
/// the same reader from the same sender, as a buggy client would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The delivery never shows.
    Drop(u64),
    /// The delivery shows twice.
    Duplicate(u64),
    /// The delivery shows after the next one from the same sender to the same reader.
    Reorder(u64),
}

/// Runs `spec`, judging it as it goes; `also` sees every entry too (to print it).
pub fn run_judged(spec: &RandomSpec, also: Option<&mut dyn Observer>) -> JudgedRun {
    judged(spec, also, None)
}

/// Runs `spec` with `corruption` applied to what the checker sees (tests only).
pub fn run_corrupted(spec: &RandomSpec, corruption: Corruption) -> JudgedRun {
    judged(spec, None, Some(corruption))
}

fn judged(
    spec: &RandomSpec,
    also: Option<&mut dyn Observer>,
    corruption: Option<Corruption>,
) -> JudgedRun {
    let scenario = random_scenario(spec);
    let mut judge = Judge {
        checker: Checker::new(run_info(&scenario)),
        hash: TranscriptHash::default(),
        entries: 0,
        also,
        corruption,
        deliveries: 0,
        held: None,
        corrupted: None,
    };
    let stats = run_observed(&scenario, spec.seed, &mut judge);
    if let Some(late) = judge.held.take() {
        judge.pass(&late);
    }
    JudgedRun {
        spec: spec.clone(),
        hash: judge.hash.hex(),
        entries: judge.entries,
        corrupted: judge.corrupted,
        verdict: judge.checker.finish(),
        stats,
    }
}

/// Sees each entry once and passes it on to the checker, the fingerprint and
/// whoever else watches, after the corruption (if any) had its way with it.
struct Judge<'a> {
    checker: Checker,
    hash: TranscriptHash,
    entries: u64,
    also: Option<&'a mut dyn Observer>,
    corruption: Option<Corruption>,
    /// Deliveries seen so far.
    deliveries: u64,
    /// A delivery being moved (`Reorder`): it goes out after the next one like it.
    held: Option<Entry>,
    /// The entry the corruption changed.
    corrupted: Option<String>,
}

impl Judge<'_> {
    fn pass(&mut self, entry: &Entry) {
        self.entries += 1;
        self.checker.observe(entry);
        self.hash.observe(entry);
        if let Some(also) = self.also.as_mut() {
            also.observe(entry);
        }
    }
}

/// The reader and sender of a delivery.
fn route(entry: &Entry) -> Option<(usize, Option<p2pchat_core::ClientId>)> {
    match entry.record {
        Record::Delivered { client, from, .. } => Some((client, from)),
        _ => None,
    }
}

impl Observer for Judge<'_> {
    fn observe(&mut self, entry: &Entry) {
        let Some(r) = route(entry) else {
            self.pass(entry);
            return;
        };
        let n = self.deliveries;
        self.deliveries += 1;
        let hit = match self.corruption {
            Some(Corruption::Drop(k) | Corruption::Duplicate(k) | Corruption::Reorder(k)) => k == n,
            None => false,
        };
        if hit {
            self.corrupted = Some(entry.to_string());
        }
        match self.corruption {
            Some(Corruption::Drop(k)) if k == n => {}
            Some(Corruption::Duplicate(k)) if k == n => {
                self.pass(entry);
                self.pass(entry);
            }
            Some(Corruption::Reorder(k)) if k == n => self.held = Some(entry.clone()),
            _ => {
                self.pass(entry);
                if self.held.as_ref().and_then(route) == Some(r)
                    && let Some(late) = self.held.take()
                {
                    self.pass(&late);
                }
            }
        }
    }
}
