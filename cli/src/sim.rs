//! `p2pchat sim`: one simulated run, its transcript and the invariant checker's verdict.
//! This is how a failing property test is replayed: it prints this exact command.

use std::io::Write;

use p2pchat_sim::{FaultSet, RandomSpec, TextSpec};

use crate::args::SimArgs;

/// Runs the scenario; returns 0 when every invariant holds, 1 otherwise.
pub fn run(args: SimArgs) -> i32 {
    if args.plain_text {
        return run_plain_text(&args);
    }
    let faults: FaultSet = match args.faults.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("p2pchat: --faults: {e}");
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
    };
    let scenario = p2pchat_sim::random_scenario(&spec);
    let started = std::time::Instant::now();
    let (transcript, events) = p2pchat_sim::run_counting(&scenario, spec.seed);
    let simulated = started.elapsed();
    let violations = p2pchat_sim::check(&transcript);
    let checked = started.elapsed() - simulated;
    // Wall-clock figures go to stderr: stdout stays a pure function of the flags.
    eprintln!(
        "p2pchat sim: {events} events in {:.2} s ({:.0} events/s), checked in {:.2} s",
        simulated.as_secs_f64(),
        events as f64 / simulated.as_secs_f64().max(1e-9),
        checked.as_secs_f64()
    );
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        let _ = write!(out, "{transcript}");
    }
    let _ = writeln!(out, "# {}", spec.command());
    if violations.is_empty() {
        let _ = writeln!(
            out,
            "verdict: ok ({} transcript lines, {events} simulator events)",
            transcript.entries.len()
        );
        0
    } else {
        let _ = writeln!(out, "verdict: {} violation(s)", violations.len());
        for v in &violations {
            let _ = writeln!(out, "  {v}");
        }
        1
    }
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
