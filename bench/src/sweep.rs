//! A sweep: the same loads at several numbers of clients, p2pchat beside the minimal
//! reference relay in the same run, as a table and a chart.
//!
//! Absolute figures on a shared machine move by 2x from one run to the next, so
//! BENCHMARKS.md quotes ratios measured side by side; one command produces them all.

use std::path::PathBuf;
use std::time::Duration;

use crate::plot::{Panel, Series};
use crate::{BenchReport, LoadConfig, Pattern, Target};

/// What a sweep runs.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// The numbers of clients.
    pub clients: Vec<u32>,
    /// Messages per flat-out run.
    pub messages: u64,
    /// Rate of the paced runs, in messages per second.
    pub rate: u64,
    /// How long each paced run lasts.
    pub paced_seconds: u64,
    /// The p2pchat binary (it also serves the reference).
    pub program: PathBuf,
    /// Which p2pchat clients to run.
    pub kind: crate::ClientKind,
}

/// The four runs at one number of clients.
#[derive(Debug, Clone, Default)]
pub struct SweepRow {
    /// Number of clients.
    pub clients: u32,
    /// p2pchat, flat out.
    pub flat: BenchReport,
    /// The reference, flat out.
    pub flat_reference: BenchReport,
    /// p2pchat, paced.
    pub paced: BenchReport,
    /// The reference, paced.
    pub paced_reference: BenchReport,
}

/// Runs the sweep; `progress` is told each run's summary as it ends.
pub fn run(config: &SweepConfig, mut progress: impl FnMut(&str)) -> Result<Vec<SweepRow>, String> {
    let mut rows = Vec::new();
    for &n in &config.clients {
        let flat = LoadConfig {
            clients: n,
            messages: config.messages,
            pattern: Pattern::Ring,
            rate: None,
            burst: 1,
            size: 64,
            window: 64,
            max_duration: Duration::from_secs(120),
            plain_text: false,
            broker: false,
            kind: config.kind,
        };
        let paced = LoadConfig {
            rate: Some(config.rate),
            messages: config.rate * config.paced_seconds,
            window: 1000,
            ..flat.clone()
        };
        let reference = |c: &LoadConfig| LoadConfig {
            plain_text: true,
            ..c.clone()
        };
        let mut one = |label: &str, target: Target, c: LoadConfig| {
            let report = crate::run(&target, &c)?;
            progress(&format!("{n} clients, {label}: {}", report.summary()));
            Ok::<_, String>(report)
        };
        let ours = || Target::Spawn(config.program.clone());
        let theirs = || Target::SpawnReference(config.program.clone());
        rows.push(SweepRow {
            clients: n,
            flat: one("p2pchat flat out", ours(), flat.clone())?,
            flat_reference: one("reference flat out", theirs(), reference(&flat))?,
            paced: one("p2pchat paced", ours(), paced.clone())?,
            paced_reference: one("reference paced", theirs(), reference(&paced))?,
        });
    }
    Ok(rows)
}

/// The sweep as a Markdown table.
pub fn table(rows: &[SweepRow], rate: u64) -> String {
    let mut out = format!(
        "| clients | flat out: p2pchat msg/s | reference msg/s | p2pchat / reference | paced {rate} msg/s: p2pchat p99 | reference p99 | p2pchat p99.9 | reference p99.9 | p2pchat RSS per idle conn | reference RSS per idle conn |\n|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let ratio = r.flat.load.rate() / r.flat_reference.load.rate().max(1.0);
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} B | {} B |\n",
            r.clients,
            thousands(r.flat.load.rate() as u64),
            thousands(r.flat_reference.load.rate() as u64),
            ratio,
            micros(r.paced.load.latency.p99),
            micros(r.paced_reference.load.latency.p99),
            micros(r.paced.load.latency.p999),
            micros(r.paced_reference.load.latency.p999),
            thousands(r.paced.rss_per_idle_connection()),
            thousands(r.paced_reference.rss_per_idle_connection()),
        ));
    }
    out
}

/// The sweep as a two-panel chart: flat-out throughput and paced p99 against N.
pub fn chart(rows: &[SweepRow], rate: u64) -> String {
    let line = |name: &str, f: &dyn Fn(&SweepRow) -> f64| Series {
        name: name.to_owned(),
        points: rows.iter().map(|r| (f64::from(r.clients), f(r))).collect(),
    };
    let throughput = Panel {
        title: "Relay throughput, flat out (ring, 64-byte messages)".into(),
        y_label: "delivered messages / s".into(),
        log_y: false,
        series: vec![
            line("p2pchat", &|r| r.flat.load.rate()),
            line("minimal reference relay", &|r| r.flat_reference.load.rate()),
        ],
    };
    let latency = Panel {
        title: format!("p99 latency, paced at {} msg/s in all", thousands(rate)),
        y_label: "p99 latency (µs)".into(),
        log_y: true,
        series: vec![
            line("p2pchat", &|r| f64::from(r.paced.load.latency.p99)),
            line("minimal reference relay", &|r| {
                f64::from(r.paced_reference.load.latency.p99)
            }),
        ],
    };
    crate::plot::svg(&[throughput, latency], "clients (log scale)")
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as "850 µs" or "2.1 ms".
fn micros(us: u32) -> String {
    if us >= 1000 {
        format!("{:.1} ms", f64::from(us) / 1000.0)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(2100), "2.1 ms");
    }
}
