//! Per-test results and their three renderings: redis-benchmark-like text, redis-benchmark's
//! CSV columns, and JSON.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::Test;

/// Highest latency the histograms hold (longer ones are clamped to it), in microseconds.
pub const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low 1, high > 2 * low, sigfig 3).
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).unwrap_or_else(|_| unreachable!())
}

/// What one connection (or a whole test) counted.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every answered request, in microseconds.
    pub histogram: Histogram<u64>,
    /// Answers with status ok.
    pub ok: u64,
    /// Gets and deletes answered NotFound.
    pub misses: u64,
    /// Error answers other than those misses.
    pub errors: u64,
    /// The first error answer's message, to show what went wrong.
    pub first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            histogram: new_histogram(),
            ok: 0,
            misses: 0,
            errors: 0,
            first_error: None,
        }
    }
}

impl Tally {
    /// Records one answer's latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram
            .saturating_record(micros.clamp(1, MAX_LATENCY_MICROS));
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.ok += other.ok;
        self.misses += other.misses;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Answered requests.
    pub fn requests(&self) -> u64 {
        self.ok + self.misses + self.errors
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Mean.
    pub avg: f64,
    /// Lowest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Highest.
    pub max: f64,
}

impl LatencySummary {
    /// The summary of a microsecond histogram.
    #[allow(
        clippy::cast_precision_loss,
        reason = "microsecond counts far below 2^52"
    )]
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary {
                avg: 0.0,
                min: 0.0,
                p50: 0.0,
                p90: 0.0,
                p95: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |quantile: f64| ms(histogram.value_at_quantile(quantile));
        LatencySummary {
            avg: histogram.mean() / 1000.0,
            min: ms(histogram.min()),
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(histogram.max()),
        }
    }
}

/// The result of one test.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// Which test.
    pub test: Test,
    /// Everything counted.
    pub tally: Tally,
    /// Wall time from the first request sent to the last answer.
    pub elapsed: Duration,
}

/// The JSON shape of one test.
#[derive(Debug, Clone, Serialize)]
pub struct TestJson {
    /// Test name.
    pub test: Test,
    /// Answered requests.
    pub requests: u64,
    /// Answers with status ok.
    pub ok: u64,
    /// Gets and deletes answered NotFound.
    pub misses: u64,
    /// Other error answers.
    pub errors: u64,
    /// The first error's message.
    pub first_error: Option<String>,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// Answered requests per second.
    pub rps: f64,
    /// Latency in milliseconds.
    pub latency_ms: LatencySummary,
}

impl TestReport {
    /// Answered requests per second.
    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    pub fn rps(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.tally.requests() as f64 / seconds
        } else {
            0.0
        }
    }

    /// The JSON view.
    pub fn to_json(&self) -> TestJson {
        TestJson {
            test: self.test,
            requests: self.tally.requests(),
            ok: self.tally.ok,
            misses: self.tally.misses,
            errors: self.tally.errors,
            first_error: self.tally.first_error.clone(),
            duration_s: self.elapsed.as_secs_f64(),
            rps: self.rps(),
            latency_ms: LatencySummary::of(&self.tally.histogram),
        }
    }
}

/// The run's settings, echoed in the reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `host:port`.
    pub address: String,
    /// Connections.
    pub clients: u32,
    /// Pipeline depth.
    pub pipeline: u32,
    /// Content bytes per store.
    pub content_bytes: u32,
    /// Vector dimension per store.
    pub vector_dimension: u32,
    /// Bytes of one StoreConcept frame.
    pub store_frame_bytes: usize,
    /// Keys the ids range over.
    pub keyspace: u64,
    /// Items per GetMany and StoreMany request.
    pub batch: u32,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Target requests/s in open loop.
    pub rate: Option<u64>,
    /// Load generator threads.
    pub threads: u16,
}

/// The whole JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct RunJson {
    /// Settings.
    #[serde(flatten)]
    pub info: RunInfo,
    /// One entry per test, in run order.
    pub tests: Vec<TestJson>,
}

/// redis-benchmark's CSV header (`--csv`), so tables of both tools line up.
pub const CSV_HEADER: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"";

/// One CSV row in redis-benchmark's columns (test names upper-case, like `"SET"`).
pub fn csv_row(report: &TestReport) -> String {
    let latency = LatencySummary::of(&report.tally.histogram);
    format!(
        "\"{}\",\"{:.2}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\"",
        report.test.name().to_uppercase(),
        report.rps(),
        latency.avg,
        latency.min,
        latency.p50,
        latency.p95,
        latency.p99,
        latency.max,
    )
}

/// The quiet (`-q`) line.
pub fn quiet_line(report: &TestReport) -> String {
    let latency = LatencySummary::of(&report.tally.histogram);
    format!(
        "{}: {:.2} requests per second, p50={:.3} msec",
        report.test.name().to_uppercase(),
        report.rps(),
        latency.p50
    )
}

/// The full text block of one test, in redis-benchmark's layout.
pub fn text_block(report: &TestReport, info: &RunInfo) -> String {
    let latency = LatencySummary::of(&report.tally.histogram);
    let mut out = String::new();
    let _ = writeln!(out, "====== {} ======", report.test.name().to_uppercase());
    let _ = writeln!(
        out,
        "  {} requests completed in {:.2} seconds",
        report.tally.requests(),
        report.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  {} parallel clients, pipeline {}, {}",
        info.clients,
        info.pipeline,
        match info.rate {
            Some(rate) => format!("open loop at {rate} requests/s"),
            None => "closed loop".to_owned(),
        }
    );
    let _ = writeln!(
        out,
        "  {} bytes per store ({} bytes content, {}-dim vector), keyspace {}",
        info.store_frame_bytes, info.content_bytes, info.vector_dimension, info.keyspace
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "throughput summary: {:.2} requests per second",
        report.rps()
    );
    let _ = writeln!(out, "latency summary (msec):");
    let _ = writeln!(
        out,
        "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "avg", "min", "p50", "p90", "p99", "p99.9", "max"
    );
    let _ = writeln!(
        out,
        "  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        latency.avg, latency.min, latency.p50, latency.p90, latency.p99, latency.p999, latency.max
    );
    let _ = write!(
        out,
        "  ok {}, misses {}, errors {}",
        report.tally.ok, report.tally.misses, report.tally.errors
    );
    if let Some(error) = &report.tally.first_error {
        let _ = write!(out, " (first: {error})");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> TestReport {
        let mut tally = Tally::default();
        // 1..=1000 microseconds: p50 = 0.5 ms, p99 = 0.99 ms, max 1 ms.
        for micros in 1..=1000 {
            tally.record(Duration::from_micros(micros));
        }
        tally.ok = 990;
        tally.misses = 8;
        tally.errors = 2;
        tally.first_error = Some("Busy: too many connections".to_owned());
        TestReport {
            test: Test::Get,
            tally,
            elapsed: Duration::from_millis(500),
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            address: "127.0.0.1:50051".to_owned(),
            clients: 50,
            pipeline: 16,
            content_bytes: 176,
            vector_dimension: 256,
            store_frame_bytes: 1251,
            keyspace: 100_000,
            batch: 64,
            mode: "closed",
            rate: None,
            threads: 1,
        }
    }

    #[test]
    fn summary_reads_the_histogram() {
        let latency = LatencySummary::of(&report().tally.histogram);
        assert!((latency.p50 - 0.5).abs() < 0.001, "{latency:?}");
        assert!((latency.p99 - 0.99).abs() < 0.001, "{latency:?}");
        assert!((latency.p999 - 0.999).abs() < 0.001, "{latency:?}");
        assert!((latency.avg - 0.5005).abs() < 0.001, "{latency:?}");
        assert!((latency.min - 0.001).abs() < 1e-9 && (latency.max - 1.0).abs() < 0.001);
        assert!(LatencySummary::of(&new_histogram()).p99.abs() < f64::EPSILON);
    }

    #[test]
    fn rps_counts_every_answer() {
        assert!((report().rps() - 2000.0).abs() < 1e-6);
        let empty = TestReport {
            elapsed: Duration::ZERO,
            ..report()
        };
        assert!(empty.rps().abs() < f64::EPSILON);
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut total = Tally::default();
        total.merge(&report().tally);
        total.merge(&report().tally);
        assert_eq!((total.ok, total.misses, total.errors), (1980, 16, 4));
        assert_eq!(total.histogram.len(), 2000);
        assert!(total.first_error.is_some());
    }

    #[test]
    fn latencies_beyond_the_bound_are_clamped_not_lost() {
        let mut tally = Tally::default();
        tally.record(Duration::from_secs(10 * 3600));
        tally.record(Duration::ZERO);
        assert_eq!(tally.histogram.len(), 2);
        assert!(tally.histogram.max() >= MAX_LATENCY_MICROS - MAX_LATENCY_MICROS / 1000);
    }

    #[test]
    fn csv_uses_redis_benchmark_columns() {
        assert_eq!(CSV_HEADER.split(',').count(), 8);
        let row = csv_row(&report());
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 8);
        assert_eq!(fields[0], "\"GET\"");
        assert_eq!(fields[1], "\"2000.00\"");
        assert_eq!(fields[4], "\"0.500\"");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let document = RunJson {
            info: info(),
            tests: vec![report().to_json()],
        };
        let value = serde_json::to_value(&document).unwrap();
        for field in [
            "address",
            "clients",
            "pipeline",
            "store_frame_bytes",
            "mode",
            "tests",
        ] {
            assert!(value.get(field).is_some(), "missing {field}: {value}");
        }
        let test = &value["tests"][0];
        assert_eq!(test["test"], "get");
        assert_eq!(test["requests"], 1000);
        assert_eq!(test["errors"], 2);
        assert_eq!(test["misses"], 8);
        for field in ["avg", "min", "p50", "p90", "p95", "p99", "p999", "max"] {
            assert!(
                test["latency_ms"][field].is_f64(),
                "latency_ms.{field}: {test}"
            );
        }
    }

    #[test]
    fn text_block_reads_like_redis_benchmark() {
        let text = text_block(&report(), &info());
        assert!(text.starts_with("====== GET ======\n"), "{text}");
        assert!(
            text.contains("1000 requests completed in 0.50 seconds"),
            "{text}"
        );
        assert!(
            text.contains("throughput summary: 2000.00 requests per second"),
            "{text}"
        );
        assert!(text.contains("first: Busy"), "{text}");
        assert_eq!(
            quiet_line(&report()),
            "GET: 2000.00 requests per second, p50=0.500 msec"
        );
    }
}
