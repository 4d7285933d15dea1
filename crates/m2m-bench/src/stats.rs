//! Latency histograms, rates, and the median/min/max summary over repeated runs.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies of one kind of operation, in nanoseconds (1 ns .. 100 s, 3 significant
/// digits: 0.1 % resolution, a few tens of KiB per histogram).
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty recorder.
    pub fn new() -> Self {
        let hist = match Histogram::new_with_bounds(1, 100_000_000_000, 3) {
            Ok(h) => h,
            Err(_) => unreachable!("constant, valid histogram bounds"),
        };
        Latency { hist }
    }

    /// Records one operation.
    pub fn record(&mut self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.max(1));
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Operations recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The `q` quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        round1(self.hist.value_at_quantile(q) as f64 / 1_000.0)
    }

    /// `{count, mean_us, p50_us, p90_us, p99_us, p999_us, max_us}`.
    pub fn summary(&self) -> Value {
        if self.hist.is_empty() {
            return json!({ "count": 0 });
        }
        json!({
            "count": self.hist.len(),
            "mean_us": round1(self.hist.mean() / 1_000.0),
            "p50_us": self.quantile_us(0.50),
            "p90_us": self.quantile_us(0.90),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "max_us": round1(self.hist.max() as f64 / 1_000.0),
        })
    }
}

/// Rounds to one decimal (JSON stays readable).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// `count / seconds`, 0 for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 {
        0.0
    } else {
        round1(count as f64 / s)
    }
}

/// For each figure present in the runs' `"figures"` objects: `{median, min, max, spread_pct,
/// runs}`. `spread_pct` is (max − min) / median.
pub fn summarize(runs: &[Value]) -> Value {
    let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        if let Some(figures) = run.get("figures").and_then(Value::as_object) {
            for (name, v) in figures {
                if let Some(x) = v.as_f64() {
                    all.entry(name.clone()).or_default().push(x);
                }
            }
        }
    }
    let mut out = Map::new();
    for (name, mut values) in all {
        let runs = values.clone();
        values.sort_by(f64::total_cmp);
        let median = median_sorted(&values);
        let (min, max) = (values[0], values[values.len() - 1]);
        let spread = if median != 0.0 {
            round1((max - min) / median.abs() * 100.0)
        } else {
            0.0
        };
        out.insert(
            name,
            json!({ "median": median, "min": min, "max": max, "spread_pct": spread, "runs": runs }),
        );
    }
    Value::Object(out)
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        round3((v[n / 2 - 1] + v[n / 2]) / 2.0)
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds: the workspace's one
/// grammar ([`m2m_agent::duration`]). Zero is allowed: a bench's `0s` warm-up or pause is
/// none.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    m2m_agent::duration::parse(text, m2m_agent::duration::Zero::Allowed)
}

/// [`parse_duration`] for a period, where zero is refused: an interval of `0s` would have
/// every agent heartbeat in a busy loop.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    m2m_agent::duration::parse(text, m2m_agent::duration::Zero::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_interval("0s").is_err());
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn summary_takes_median_and_range() {
        let runs = vec![
            json!({"figures": {"a": 3.0, "b": 1.0}}),
            json!({"figures": {"a": 1.0, "b": 1.0}}),
            json!({"figures": {"a": 2.0, "b": 1.0}}),
        ];
        let s = summarize(&runs);
        assert_eq!(s["a"]["median"], json!(2.0));
        assert_eq!(s["a"]["min"], json!(1.0));
        assert_eq!(s["a"]["max"], json!(3.0));
        assert_eq!(s["a"]["spread_pct"], json!(100.0));
        assert_eq!(s["b"]["spread_pct"], json!(0.0));
    }

    #[test]
    fn latency_quantiles() {
        let mut l = Latency::new();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s["count"], json!(100));
        let p50 = s["p50_us"].as_f64().unwrap();
        assert!((49.0..=51.0).contains(&p50), "{p50}");
    }
}
