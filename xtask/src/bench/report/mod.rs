//! Statistics, the targets, `results.json` and `BENCHMARKS.md`: the
//! results of one run here, each output in a file of its own.

mod json;
mod markdown;
mod stats;
mod targets;

pub use json::*;
pub use markdown::*;
pub use stats::*;
pub use targets::*;

use std::fmt::Write as _;

use super::{
    overhead::{Config, Tracked, Untracked, REDIS, WORKLOADS},
    pipeline::{Footprint, Latency, ScanSet, Throughput, RATES},
    Machine,
};

/// Everything one run measured.
pub struct Results {
    pub smoke: bool,
    /// The benchmarks run ([`super::SECTIONS`]; all but with `--only`).
    pub ran: Vec<&'static str>,
    pub machine: Machine,
    pub untracked: Untracked,
    pub tracked: Tracked,
    pub throughput: Throughput,
    pub scan: Vec<ScanSet>,
    pub latency: Latency,
    pub footprint: Footprint,
    pub scale: super::scale::Scale,
    pub tls: super::tls::TlsBench,
    /// Seconds per benchmark, and in all.
    pub durations: Vec<(String, f64)>,
    pub total_secs: f64,
    pub notes: Vec<String>,
}

impl Results {
    pub fn ran(&self, section: &str) -> bool {
        self.ran.contains(&section)
    }
}

/// One target, judged.
pub struct Target {
    pub id: &'static str,
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
    /// "by how much", signed words: "met by ...", "missed by ...".
    pub margin: String,
}

impl Target {
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        }
    }
}

impl Untracked {
    pub fn samples(&self, c: Config) -> Option<&super::overhead::ConfigSamples> {
        self.configs.iter().find(|s| s.config == c)
    }

    pub fn median_ns(&self, c: Config, w: usize) -> Option<f64> {
        self.samples(c).map(|s| median(&s.ns[w]))
    }

    /// Ratio of medians to "none".
    pub fn ratio(&self, c: Config, w: usize) -> Option<f64> {
        Some(self.median_ns(c, w)? / self.median_ns(Config::None, w)?)
    }

    /// Per-round ratios to the "none" run of the same round.
    pub fn round_ratios(&self, c: Config, w: usize) -> Vec<f64> {
        match (self.samples(c), self.samples(Config::None)) {
            (Some(a), Some(n)) => a.ns[w].iter().zip(&n.ns[w]).map(|(x, y)| x / y).collect(),
            _ => Vec::new(),
        }
    }
}

impl Throughput {
    pub fn at(&self, rate: u64) -> Vec<&super::pipeline::TpRun> {
        self.runs.iter().filter(|r| r.rate == rate).collect()
    }

    /// The median of `f` over the runs at `rate` (0: saturated).
    pub fn median_at(&self, rate: u64, f: impl Fn(&super::pipeline::TpRun) -> f64) -> f64 {
        median(&self.at(rate).into_iter().map(f).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(median(&v), 2.5);
        assert_eq!(pct(&v, 0.0), 1.0);
        assert_eq!(pct(&v, 100.0), 4.0);
        assert_eq!(pct(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn json_renders_and_escapes() {
        let j = J::obj(vec![
            ("a", J::s("x\"y")),
            ("b", J::nums(&[1.0, 2.5])),
            ("c", J::Null),
        ]);
        assert_eq!(
            j.render(),
            "{\n  \"a\": \"x\\\"y\",\n  \"b\": [1, 2.5],\n  \"c\": null\n}\n"
        );
    }

    #[test]
    fn thousands_groups() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    #[test]
    fn exponent_of_a_square() {
        let v = [(100, 1.0, 0.0), (200, 4.0, 0.0), (400, 16.0, 0.0)];
        assert!((growth_exponent(&v).unwrap() - 2.0).abs() < 1e-9);
    }
}
