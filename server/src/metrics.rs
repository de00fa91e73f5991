//! `GET /metrics` on the storage port, in Prometheus' text format (`prometheus-client`):
//! requests and latency histograms per opcode, errors per code, and every `Stats` counter
//! (connections, concepts, WAL appends/batches/syncs, checkpoints, cache hits, misses,
//! evictions, expirations) under the `sutra_` prefix; with a data directory also histograms
//! of log `fdatasync` latency and checkpoint duration.

use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sutra_engine::{Latencies, LatencySnapshot};
use sutra_protocol::{ErrorCode, Opcode, StatsSnapshot};

/// A histogram kept elsewhere (by the log or the engine), exposed as it is at scrape time.
#[derive(Debug)]
struct ConstHistogram(LatencySnapshot);

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum_seconds,
            self.0.count,
            &self.0.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Per-opcode labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpcodeLabels {
    /// The opcode's name (`StoreConcept`, ...).
    pub opcode: &'static str,
}

/// Per-error labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The error code's name (`NotFound`, ...).
    pub code: &'static str,
}

fn latency_histogram() -> Histogram {
    // 10 µs to ~10 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 21))
}

/// Series recorded as requests run; the `Stats` counters are read at scrape time.
pub struct Metrics {
    requests: Family<OpcodeLabels, Counter>,
    latency: Family<OpcodeLabels, Histogram, fn() -> Histogram>,
    errors: Family<CodeLabels, Counter>,
    /// Each opcode's two series, looked up in the families once (on its first request, so
    /// the exposition lists only opcodes that were used): a family lookup takes a lock and
    /// hashes the labels, twice per request, which was 5% of the server's CPU under a
    /// pipelined read load.
    by_opcode: [OnceLock<(Counter, Histogram)>; Opcode::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            by_opcode: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

/// `Stats` counters that only grow (exported as counters; the rest are gauges). The
/// protocol's `requests_total` and `errors_total` are left out: the labelled series above
/// carry them.
const MONOTONIC: [&str; 16] = [
    "connections_total",
    "connections_rejected",
    "stores",
    "gets",
    "gets_not_found",
    "hits",
    "misses",
    "evictions",
    "expirations",
    "queries",
    "deletes",
    "clears",
    "wal_appends",
    "wal_batches",
    "wal_syncs",
    "checkpoints",
];

impl Metrics {
    /// Records one answered request: its opcode and how long it took.
    pub fn request(&self, opcode: Opcode, seconds: f64) {
        let labels = || OpcodeLabels {
            opcode: opcode.name(),
        };
        let cell = Opcode::ALL
            .iter()
            .position(|known| *known == opcode)
            .and_then(|index| self.by_opcode.get(index));
        let Some(cell) = cell else {
            // Every opcode has a cell; this keeps the series right if one ever lacks it.
            self.requests.get_or_create(&labels()).inc();
            self.latency.get_or_create(&labels()).observe(seconds);
            return;
        };
        let (requests, latency) = cell.get_or_init(|| {
            (
                self.requests.get_or_create(&labels()).clone(),
                self.latency.get_or_create(&labels()).clone(),
            )
        });
        requests.inc();
        latency.observe(seconds);
    }

    /// Records an error answer.
    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabels { code: code.name() })
            .inc();
    }

    /// The exposition: the recorded series, `stats`, and the engine's histograms.
    pub fn encode(&self, stats: &StatsSnapshot, latencies: Option<Latencies>) -> String {
        let mut registry = Registry::with_prefix("sutra");
        registry.register(
            "requests",
            "Requests answered, by opcode",
            self.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a decoded request to its answer (writes: until durable), by opcode",
            self.latency.clone(),
        );
        registry.register("errors", "Error answers, by code", self.errors.clone());
        for (name, value) in &stats.counters {
            if name == "requests_total" || name == "errors_total" {
                continue;
            }
            let help = format!("Stats counter {name} (see PROTOCOL.md)");
            if MONOTONIC.contains(&name.as_str()) {
                let name = name.strip_suffix("_total").unwrap_or(name);
                registry.register(name, help, ConstCounter::new(*value));
            } else {
                registry.register(
                    name,
                    help,
                    ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)),
                );
            }
        }
        if let Some(latencies) = latencies {
            registry.register(
                "wal_fsync_duration_seconds",
                "Time of each fdatasync of a log segment",
                ConstHistogram(latencies.wal_sync),
            );
            registry.register(
                "checkpoint_duration_seconds",
                "Time of each checkpoint (snapshot written, covered log segments deleted)",
                ConstHistogram(latencies.checkpoint),
            );
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_labelled_series_and_the_stats() {
        let metrics = Metrics::default();
        metrics.request(Opcode::StoreConcept, 0.000_2);
        metrics.error(ErrorCode::NotFound);
        let stats = StatsSnapshot {
            role: "normal".to_owned(),
            vector_dimension: 4,
            counters: vec![
                ("concepts".to_owned(), 7),
                ("connections_total".to_owned(), 3),
                ("requests_total".to_owned(), 9),
            ],
        };
        let wal_sync = sutra_engine::Latency::default();
        wal_sync.record(std::time::Duration::from_micros(300));
        let latencies = Latencies {
            wal_sync: wal_sync.snapshot(),
            checkpoint: LatencySnapshot::default(),
        };
        let text = metrics.encode(&stats, Some(latencies));
        for line in [
            r#"sutra_requests_total{opcode="StoreConcept"} 1"#,
            r#"sutra_errors_total{code="NotFound"} 1"#,
            "sutra_concepts 7",
            "sutra_connections_total 3",
            r#"sutra_request_duration_seconds_count{opcode="StoreConcept"} 1"#,
            "sutra_wal_fsync_duration_seconds_count 1",
            r#"sutra_wal_fsync_duration_seconds_bucket{le="0.00032"} 1"#,
            r#"sutra_wal_fsync_duration_seconds_bucket{le="0.00016"} 0"#,
            r#"sutra_wal_fsync_duration_seconds_bucket{le="+Inf"} 1"#,
            "# TYPE sutra_checkpoint_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("sutra_requests_total_total"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
