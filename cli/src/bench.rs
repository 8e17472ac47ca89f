//! `p2pchat bench`: runs the load generator of `p2pchat-bench` and prints its summary.

use std::time::Duration;

use p2pchat_bench::{LoadConfig, Pattern, Target};

use crate::args::BenchArgs;

/// Runs one bench; returns the exit status.
pub fn run(args: BenchArgs) -> i32 {
    if args.serve_reference {
        return match p2pchat_bench::reference::serve(
            "127.0.0.1:0".parse().expect("a literal address"),
        ) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("p2pchat: reference relay: {e}");
                1
            }
        };
    }
    let pattern: Pattern = match if args.ncat {
        "broadcast".parse()
    } else {
        args.pattern.parse()
    } {
        Ok(p) => p,
        Err(e) => {
            eprintln!("p2pchat: --pattern: {e}");
            return 2;
        }
    };
    let target = match &args.server {
        Some(addr) => match addr.parse() {
            Ok(addr) => Target::Existing(addr),
            Err(_) => {
                eprintln!("p2pchat: --server {addr}: expected IP:PORT, e.g. 127.0.0.1:65432");
                return 2;
            }
        },
        None if args.ncat => Target::SpawnNcat,
        None => match std::env::current_exe() {
            Ok(exe) if args.reference => Target::SpawnReference(exe),
            Ok(exe) => Target::Spawn(exe),
            Err(e) => {
                eprintln!("p2pchat: cannot find this program to start a server: {e}");
                return 1;
            }
        },
    };
    let config = LoadConfig {
        clients: args.clients,
        messages: args.messages,
        pattern,
        rate: args.rate,
        size: args.size.max(24),
        window: args.window,
        max_duration: Duration::from_secs(args.max_seconds),
        plain_text: args.text || args.reference,
        broker: args.ncat,
    };
    eprintln!(
        "p2pchat bench: {} clients, {} messages, {:?}, {}",
        config.clients,
        config.messages,
        pattern,
        config
            .rate
            .map_or("flat out".to_owned(), |r| format!("paced at {r} msg/s"))
    );
    match p2pchat_bench::run(&target, &config) {
        Ok(report) => {
            println!("{}", report.summary());
            i32::from(report.load.delivered < report.load.expected || report.load.errors > 0)
        }
        Err(e) => {
            eprintln!("p2pchat: bench failed: {e}");
            1
        }
    }
}
