//! `GET /metrics` in Prometheus' text format (`prometheus-client`): requests and latency per
//! endpoint and status, cache hits and misses per tier, texts per request, texts sent to the
//! model, L2 and replica health.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a finished HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`/embed`, ...), or `other`.
    pub endpoint: String,
    /// The HTTP status code.
    pub status: u16,
}

/// Labels of a per-endpoint series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The route.
    pub endpoint: String,
}

/// Labels of a cache tier.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// `l1`, `l2`, or `total` (per text, either tier).
    pub tier: &'static str,
}

/// Labels of an upstream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Replica URL, or `in-process`.
    pub url: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

fn batch_histogram() -> Histogram {
    // 1 to 512 texts.
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// Every series the service exports.
pub struct ServiceMetrics {
    registry: Registry,
    /// Finished requests.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency, seconds.
    pub latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Cache hits per tier.
    pub hits: Family<TierLabels, Counter>,
    /// Cache misses per tier.
    pub misses: Family<TierLabels, Counter>,
    /// Texts per embedding request.
    pub batch_texts: Histogram,
    /// Texts sent to the model (after both caches and deduplication).
    pub model_texts: Counter,
    /// 1 when the last L2 round trip reached the shard.
    pub l2_up: Gauge,
    /// 1 per healthy upstream.
    pub upstream_healthy: Family<UpstreamLabels, Gauge>,
}

impl Default for ServiceMetrics {
    fn default() -> ServiceMetrics {
        let mut registry = Registry::with_prefix("sutra_embedding");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let hits = Family::<TierLabels, Counter>::default();
        let misses = Family::<TierLabels, Counter>::default();
        let batch_texts = batch_histogram();
        let model_texts = Counter::default();
        let l2_up = Gauge::default();
        let upstream_healthy = Family::<UpstreamLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency in the service",
            latency.clone(),
        );
        registry.register("cache_hits", "Texts answered by a cache tier", hits.clone());
        registry.register(
            "cache_misses",
            "Texts a cache tier did not have",
            misses.clone(),
        );
        registry.register(
            "request_texts",
            "Texts per embedding request",
            batch_texts.clone(),
        );
        registry.register(
            "model_texts",
            "Texts sent to the model",
            model_texts.clone(),
        );
        registry.register(
            "l2_up",
            "Whether the L2 cache shard answered last time",
            l2_up.clone(),
        );
        registry.register(
            "upstream_healthy",
            "Whether a model upstream is in rotation",
            upstream_healthy.clone(),
        );
        ServiceMetrics {
            registry,
            requests,
            latency,
            hits,
            misses,
            batch_texts,
            model_texts,
            l2_up,
            upstream_healthy,
        }
    }
}

impl ServiceMetrics {
    /// Counts a hit in `tier`.
    pub fn hit(&self, tier: &'static str, count: u64) {
        self.hits.get_or_create(&TierLabels { tier }).inc_by(count);
    }

    /// Counts a miss in `tier`.
    pub fn miss(&self, tier: &'static str, count: u64) {
        self.misses
            .get_or_create(&TierLabels { tier })
            .inc_by(count);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Middleware: counts and times every request by route and status.
pub async fn track(
    State(metrics): State<Arc<ServiceMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .latency
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics` body with its content type.
pub fn exposition(metrics: &ServiceMetrics) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
