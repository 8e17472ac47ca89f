//! `p2pchat bench`: runs the load generator of `p2pchat-bench` and prints its summary.

use std::time::Duration;

use p2pchat_bench::{ClientKind, LoadConfig, Pattern, Target};

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
    let kinds = [args.insecure, args.raw_frames, args.sealed_frames];
    if kinds.iter().filter(|&&k| k).count() > 1 {
        eprintln!(
            "p2pchat: --insecure, --raw-frames and --sealed-frames each choose the clients: give one"
        );
        return 2;
    }
    if args.sealed_frames && (args.text || args.reference || args.ncat) {
        eprintln!(
            "p2pchat: --sealed-frames are p2pchat frames on an encrypted link; plain text (--text, --reference, --ncat) has no records"
        );
        return 2;
    }
    if let Some(list) = &args.sweep {
        return sweep(&args, list);
    }
    if let Some(path) = &args.hash_file {
        return hash_speed(path);
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
        Some(addrs) => match addrs
            .split(',')
            .map(|a| a.trim().parse())
            .collect::<Result<Vec<std::net::SocketAddr>, _>>()
        {
            Ok(addrs) => Target::Existing(addrs),
            Err(_) => {
                eprintln!(
                    "p2pchat: --server {addrs}: expected IP:PORT, or several comma-separated (the relays of a cluster), e.g. 127.0.0.1:65432"
                );
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
        burst: args.burst,
        size: args.size.max(24),
        window: args.window,
        max_duration: Duration::from_secs(args.max_seconds),
        plain_text: args.text || args.reference,
        broker: args.ncat,
        kind: kind(&args),
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

/// Default total rate of a sweep's paced runs, in messages per second.
const SWEEP_RATE: u64 = 20_000;

/// Runs a sweep and prints its table (and writes its chart).
fn sweep(args: &BenchArgs, list: &str) -> i32 {
    let clients: Result<Vec<u32>, _> = list.split(',').map(|n| n.trim().parse()).collect();
    let clients = match clients {
        Ok(c) if !c.is_empty() && c.iter().all(|&n| n >= 2) => c,
        _ => {
            eprintln!(
                "p2pchat: --sweep {list}: expected numbers of clients (each at least 2), e.g. 2,100,1000"
            );
            return 2;
        }
    };
    let program = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("p2pchat: cannot find this program to start a server: {e}");
            return 1;
        }
    };
    let rate = args.rate.unwrap_or(SWEEP_RATE);
    let config = p2pchat_bench::sweep::SweepConfig {
        clients,
        messages: args.messages,
        rate,
        paced_seconds: args.paced_seconds.max(1),
        program,
        kind: kind(args),
    };
    let rows = match p2pchat_bench::sweep::run(&config, |line| eprintln!("p2pchat bench: {line}")) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("p2pchat: bench failed: {e}");
            return 1;
        }
    };
    print!("{}", p2pchat_bench::sweep::table(&rows, rate));
    if let Some(path) = &args.plot {
        let svg = p2pchat_bench::sweep::chart(&rows, rate);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("p2pchat: --plot {}: {e}", path.display());
            return 1;
        }
        eprintln!("p2pchat bench: chart written to {}", path.display());
    }
    0
}

/// Times BLAKE3 over a file: on every core (reading overlapped), then on one core, as
/// `/send` hashes while it sends; prints MiB/s for each.
fn hash_speed(path: &std::path::Path) -> i32 {
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            eprintln!("p2pchat: --hash-file {}: {e}", path.display());
            return 1;
        }
    };
    let mib = size as f64 / (1024.0 * 1024.0);
    let started = std::time::Instant::now();
    if let Err(e) = p2pchat_client::transfer::hash_whole_file(path) {
        eprintln!("p2pchat: --hash-file {}: {e}", path.display());
        return 1;
    }
    let all = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let one = std::fs::File::open(path).and_then(|mut f| {
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut f, &mut hasher)?;
        Ok(hasher.finalize())
    });
    if let Err(e) = one {
        eprintln!("p2pchat: --hash-file {}: {e}", path.display());
        return 1;
    }
    let single = started.elapsed().as_secs_f64();
    println!(
        "BLAKE3 of {mib:.0} MiB: {:.0} MiB/s on every core, {:.0} MiB/s on one core (as /send hashes while it sends)",
        mib / all.max(1e-9),
        mib / single.max(1e-9)
    );
    0
}

/// Which p2pchat clients the flags ask for.
fn kind(args: &BenchArgs) -> ClientKind {
    if args.raw_frames {
        ClientKind::RawFrames
    } else if args.sealed_frames {
        ClientKind::SealedFrames
    } else if args.insecure {
        ClientKind::Insecure
    } else {
        ClientKind::Encrypted
    }
}
