//! Micro-benchmark of the simulator: events per second for a seeded many-client run,
//! with and without faults. `cargo bench -p p2pchat-sim` (figures in BENCHMARKS.md).

use divan::counter::ItemsCount;
use p2pchat_sim::{FaultSet, RandomSpec};

/// Entries are dropped as they come: the figure is the simulator's alone.
struct Discard;

impl p2pchat_sim::Observer for Discard {
    fn observe(&mut self, _: &p2pchat_sim::Entry) {}
}

fn main() {
    divan::main();
}

/// One seeded relay run of 100 clients and 2,000 messages, simulated end to end; the
/// counter is the simulator's own event count (deliveries, timers, faults, ...).
#[divan::bench(args = ["none", "all"])]
fn relay_run(bencher: divan::Bencher, faults: &str) {
    let spec = RandomSpec {
        seed: 7,
        clients: 100,
        messages: 2_000,
        max_clients: 100,
        faults: faults.parse::<FaultSet>().expect("a fault list"),
        direct: false,
        files: 0,
        traffic: p2pchat_sim::Traffic::Uniform,
    };
    let scenario = p2pchat_sim::random_scenario(&spec);
    let events = p2pchat_sim::run_observed(&scenario, spec.seed, &mut Discard).events;
    bencher
        .counter(ItemsCount::new(events))
        .bench(|| p2pchat_sim::run_observed(divan::black_box(&scenario), spec.seed, &mut Discard));
}
