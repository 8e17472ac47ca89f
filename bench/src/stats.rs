//! Latency samples and their percentiles.

/// Latencies in microseconds, kept whole so that percentiles are exact.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples: Vec<u32>,
}

/// Summary of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: u32,
    /// 99th percentile.
    pub p99: u32,
    /// 99.9th percentile.
    pub p999: u32,
    /// Largest sample.
    pub max: u32,
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, micros: u64) {
        self.samples.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The percentiles (nearest-rank).
    pub fn percentiles(&mut self) -> Percentiles {
        if self.samples.is_empty() {
            return Percentiles::default();
        }
        self.samples.sort_unstable();
        let at = |q: f64| {
            let rank =
                ((q * self.samples.len() as f64).ceil() as usize).clamp(1, self.samples.len());
            self.samples[rank - 1]
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: *self.samples.last().unwrap_or(&0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for v in 1..=1000 {
            l.record(v);
        }
        let p = l.percentiles();
        assert_eq!((p.p50, p.p99, p.p999, p.max), (500, 990, 999, 1000));
    }
}
