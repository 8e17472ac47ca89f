//! `p2pchat sim`: one simulated run, its transcript and the invariant checker's
//! verdict, or a swarm of seeds (`--seeds A..B`). This is how a failing property
//! test or swarm seed is replayed: it prints this exact command.
//!
//! The run is judged as it goes (`p2pchat_sim::run_judged`): the transcript is
//! printed line by line and never kept, so runs of millions of events need no more
//! memory than their machines. Stdout is a pure function of the flags (the
//! transcript, its hash, the workload figures, the verdict); wall-clock figures go to
//! stderr.

use std::io::{BufWriter, Write};
use std::time::Instant;

use p2pchat_sim::{Entry, FaultSet, JudgedRun, Observer, RandomSpec, TextSpec, Traffic};

use crate::args::SimArgs;

/// Relays of a cluster on a simulated bus, seed `seed`: what it did and what it broke.
fn run_cluster(seed: u64) -> i32 {
    let spec = p2pchat_sim::ClusterSpec::random(seed);
    println!(
        "# p2pchat sim --cluster --seed {seed}: {} relays, {} clients, {} messages, bus delays up to {} ms, relay deaths: {}, a relay cut off from the bus: {}",
        spec.relays,
        spec.clients,
        spec.messages,
        spec.max_bus_delay.as_millis(),
        if spec.deaths { "yes" } else { "no" },
        if spec.cut { "yes" } else { "no" }
    );
    let run = p2pchat_sim::run_cluster(seed, &spec);
    println!(
        "# sent {}, received {}, confirmed delivered {}, relays died {}, cut off {}, clients told to join again {}, sessions moved {}",
        run.sent, run.received, run.confirmed, run.deaths, run.cuts, run.expelled, run.moved
    );
    if run.violations.is_empty() {
        println!("verdict: ok");
        0
    } else {
        for v in &run.violations {
            println!("violation: {v}");
        }
        println!("verdict: {} violations", run.violations.len());
        1
    }
}

/// Runs the scenario (or the swarm); returns 0 when every invariant holds, 1
/// otherwise, 2 for bad flags.
pub fn run(args: SimArgs) -> i32 {
    if args.plain_text {
        return run_plain_text(&args);
    }
    if args.cluster {
        return run_cluster(args.seed);
    }
    if let Some(seeds) = &args.seeds {
        return run_swarm(seeds, args.jobs);
    }
    let faults: FaultSet = match args.faults.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("p2pchat: --faults: {e}");
            return 2;
        }
    };
    let traffic: Traffic = match args.traffic.parse() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("p2pchat: --traffic: {e}");
            return 2;
        }
    };
    let spec = RandomSpec {
        seed: args.seed,
        clients: args.clients,
        messages: args.messages,
        max_clients: args.max_clients.unwrap_or(args.clients),
        faults,
        direct: args.direct,
        files: args.files,
        traffic,
    };
    let started = Instant::now();
    let mut printer = Printer(BufWriter::with_capacity(1 << 16, std::io::stdout().lock()));
    let run = if args.quiet {
        p2pchat_sim::run_judged(&spec, None)
    } else {
        p2pchat_sim::run_judged(&spec, Some(&mut printer))
    };
    let wall = started.elapsed();
    let mut out = printer.0;
    print_verdict(&mut out, &run);
    let _ = out.flush();
    eprintln!(
        "p2pchat sim: {} events, {:.1} s simulated, in {:.2} s of wall time ({:.0} events/s)",
        run.stats.events,
        run.stats.simulated.as_secs_f64(),
        wall.as_secs_f64(),
        run.stats.events as f64 / wall.as_secs_f64().max(1e-9)
    );
    i32::from(!run.ok())
}

/// Prints each entry as it happens.
struct Printer<W: Write>(W);

impl<W: Write> Observer for Printer<W> {
    fn observe(&mut self, entry: &Entry) {
        let _ = writeln!(self.0, "{entry}");
    }
}

/// The replay command, the workload, the hash and the verdict.
fn print_verdict(out: &mut impl Write, run: &JudgedRun) {
    let _ = writeln!(out, "# {}", run.spec.command());
    let _ = writeln!(out, "# {}", run.verdict.workload);
    let _ = writeln!(
        out,
        "# transcript: {} lines, hash {}",
        run.entries, run.hash
    );
    if run.ok() {
        let _ = writeln!(
            out,
            "verdict: ok ({} transcript lines, {} simulator events)",
            run.entries, run.stats.events
        );
    } else {
        let _ = writeln!(
            out,
            "verdict: {} violation(s)",
            run.verdict.violations.len()
        );
        for v in run.verdict.violations.iter().take(50) {
            let _ = writeln!(out, "  {v}");
        }
        if run.verdict.violations.len() > 50 {
            let _ = writeln!(out, "  ... and {} more", run.verdict.violations.len() - 50);
        }
    }
}

/// `--seeds A..B`: every seed on every core; each failure with its replay command.
fn run_swarm(seeds: &str, jobs: Option<usize>) -> i32 {
    let range = match p2pchat_sim::parse_seeds(seeds) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p2pchat: --seeds: {e}");
            return 2;
        }
    };
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    println!(
        "swarm: seeds {}..{} ({} runs) on {jobs} threads",
        range.start,
        range.end,
        range.end - range.start
    );
    let started = Instant::now();
    let report = p2pchat_sim::run_swarm(range.clone(), jobs, &|run| {
        if !run.ok() {
            eprintln!("swarm: seed {} FAILED", run.spec.seed);
        }
    });
    let wall = started.elapsed();
    for run in &report.failures {
        print!("{}", run.failure_report(5));
    }
    println!(
        "swarm: {} runs, {} failed, {} messages delivered, {} events in {:.1} s ({:.0} events/s)",
        report.runs,
        report.failures.len(),
        report.delivered,
        report.events,
        wall.as_secs_f64(),
        report.events as f64 / wall.as_secs_f64().max(1e-9)
    );
    i32::from(!report.failures.is_empty())
}

/// `--plain-text`: lines against a lagging driver; 0 when none was split or merged.
fn run_plain_text(args: &SimArgs) -> i32 {
    let spec = TextSpec {
        seed: args.seed,
        senders: args.clients,
        lines: args.messages,
        original_app: args.original_app,
        max_lag: std::time::Duration::from_millis(args.lag_ms),
        max_read: args.max_read,
        direct: args.direct,
    };
    let run = p2pchat_sim::run_plain_text(&spec);
    let mut out = std::io::stdout().lock();
    if args.quiet {
        let _ = writeln!(out, "# {}", run.command);
        let verdict = run.to_string();
        for line in verdict.lines().skip_while(|l| !l.starts_with("verdict")) {
            let _ = writeln!(out, "{line}");
        }
    } else {
        let _ = write!(out, "{run}");
    }
    i32::from(!run.violations.is_empty())
}
