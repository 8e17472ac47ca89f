//! Micro-benchmark of the simulator: events per second for a seeded many-client run,
//! with and without faults. `cargo bench -p p2pchat-sim` (figures in BENCHMARKS.md).

use divan::counter::ItemsCount;
use p2pchat_sim::{FaultSet, RandomSpec};

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
    };
    let scenario = p2pchat_sim::random_scenario(&spec);
    let (_, events) = p2pchat_sim::run_counting(&scenario, spec.seed);
    bencher
        .counter(ItemsCount::new(events))
        .bench(|| p2pchat_sim::run_counting(divan::black_box(&scenario), spec.seed));
}
