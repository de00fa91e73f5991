//! The embedding service's HTTP API: `POST /embed`, `POST /v1/embeddings` (OpenAI-style),
//! `GET /cache/stats`, `POST /cache/clear`, `GET /health`.
//!
//! A request's texts are deduplicated, looked up in L1, the L1 misses in L2 with one GetMany,
//! and only what is still missing goes to the model, in one call. Answers keep the request's
//! order whatever mix of hits and misses it had. New vectors go into L1 at once and are
//! queued to be written back to L2 after the answer (bounded; see [`crate::cache`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sutra_protocol::embed_json as request;
use tokio_util::sync::CancellationToken;

use crate::cache::{key, Counters, Key, L1, L2};
use crate::config::{ServiceConfig, TextLimits};
use crate::http::HttpError;
use crate::metrics::{self, ServiceMetrics, UpstreamLabels};
use crate::model::{Computed, ModelError, ModelSource, Replicas};

/// The service's state.
pub struct Service {
    model: ModelSource,
    dimension: usize,
    l1: L1,
    l2: Option<Arc<L2>>,
    limits: TextLimits,
    requests: AtomicU64,
    texts: Counters,
    metrics: Arc<ServiceMetrics>,
}

impl Service {
    /// Loads the in-process model (or starts the replica set and its health checks, which
    /// stop with `shutdown`) and sets up the caches.
    pub async fn start(
        config: &ServiceConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Service>> {
        let model = match &config.replicas {
            Some(replicas) => ModelSource::Replicas(Replicas::start(replicas.clone(), shutdown)?),
            None => {
                let batcher = crate::ml_base::load(&config.local).await?;
                ModelSource::Local {
                    batcher,
                    dimension: config.local.dimension,
                }
            }
        };
        Ok(Arc::new(Service {
            model,
            dimension: config.local.dimension,
            l1: L1::new(config.l1_capacity, config.l1_ttl),
            l2: config.l2.clone().map(L2::start),
            limits: config.limits,
            requests: AtomicU64::new(0),
            texts: Counters::default(),
            metrics: Arc::new(ServiceMetrics::default()),
        }))
    }

    /// The model source (tests read replica counters from it).
    pub fn model(&self) -> &ModelSource {
        &self.model
    }

    /// Embeddings for `texts` in order, and how many of them came from a cache.
    async fn embed(
        &self,
        texts: &[String],
        ttl_seconds: Option<u64>,
    ) -> Result<(Vec<Arc<Computed>>, usize), HttpError> {
        request::check_texts(texts, &self.limits)?;
        let model = self.model.model().ok_or_else(|| {
            HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no ML-base replica has answered yet",
            )
        })?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        // Each distinct text once, in first-seen order; `slots[i]` is text i's distinct index.
        let mut distinct: Vec<&str> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let slots: Vec<usize> = texts
            .iter()
            .map(|text| {
                *seen.entry(text.as_str()).or_insert_with(|| {
                    distinct.push(text);
                    distinct.len() - 1
                })
            })
            .collect();
        let keys: Vec<Key> = distinct.iter().map(|text| key(&model, text)).collect();
        let mut found: Vec<Option<Arc<Computed>>> = keys.iter().map(|k| self.l1.get(k)).collect();
        let mut cached: Vec<bool> = found.iter().map(Option::is_some).collect();
        let l1_hits = cached.iter().filter(|hit| **hit).count() as u64;
        self.metrics
            .batch_texts
            .observe(f64::from(u32::try_from(texts.len()).unwrap_or(u32::MAX)));
        self.metrics.hit("l1", l1_hits);
        self.metrics.miss("l1", distinct.len() as u64 - l1_hits);

        self.fill_from_l2(&model, &distinct, &keys, &mut found, &mut cached)
            .await;

        let missing: Vec<usize> = (0..distinct.len())
            .filter(|&index| found[index].is_none())
            .collect();
        if !missing.is_empty() {
            self.metrics.model_texts.inc_by(missing.len() as u64);
            let computed = self
                .model
                .embed(missing.iter().map(|&i| distinct[i].to_owned()).collect())
                .await
                .map_err(|error| match error {
                    ModelError::Unavailable(message) => {
                        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message)
                    }
                    ModelError::Failed(message) => {
                        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
                    }
                })?;
            let mut write_back = Vec::with_capacity(missing.len());
            for (&index, computed) in missing.iter().zip(computed) {
                let computed = Arc::new(computed);
                self.l1.insert(keys[index], Arc::clone(&computed));
                write_back.push((distinct[index].to_owned(), Arc::clone(&computed)));
                found[index] = Some(computed);
            }
            self.write_back(&model, write_back, ttl_seconds);
        }
        let hits = slots.iter().filter(|&&slot| cached[slot]).count();
        self.texts.hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.texts
            .misses
            .fetch_add((texts.len() - hits) as u64, Ordering::Relaxed);
        self.metrics.hit("total", hits as u64);
        self.metrics.miss("total", (texts.len() - hits) as u64);
        let answers = slots
            .iter()
            .map(|&slot| found[slot].clone())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "lost an answer"))?;
        Ok((answers, hits))
    }

    /// Looks the L1 misses up in L2 (one GetMany) and promotes the hits to L1.
    async fn fill_from_l2(
        &self,
        model: &str,
        distinct: &[&str],
        keys: &[Key],
        found: &mut [Option<Arc<Computed>>],
        cached: &mut [bool],
    ) {
        let Some(l2) = &self.l2 else { return };
        let misses: Vec<usize> = (0..distinct.len())
            .filter(|&index| found[index].is_none())
            .collect();
        let asked: Vec<&str> = misses.iter().map(|&index| distinct[index]).collect();
        let Some(answers) = l2.get_many(model, &asked, self.dimension).await else {
            return;
        };
        let l2_hits = answers.iter().filter(|answer| answer.is_some()).count() as u64;
        self.metrics.hit("l2", l2_hits);
        self.metrics.miss("l2", answers.len() as u64 - l2_hits);
        for (&index, answer) in misses.iter().zip(answers) {
            if let Some(computed) = answer {
                let computed = Arc::new(computed);
                self.l1.insert(keys[index], Arc::clone(&computed));
                found[index] = Some(computed);
                cached[index] = true;
            }
        }
    }

    fn write_back(
        &self,
        model: &str,
        entries: Vec<(String, Arc<Computed>)>,
        ttl_seconds: Option<u64>,
    ) {
        // Queued even while lookups skip the shard: a stalled shard that comes back gets
        // what was computed meanwhile.
        if let Some(l2) = &self.l2 {
            l2.write_back(model, entries, ttl_seconds);
        }
    }

    fn stats(&self) -> serde_json::Value {
        let (l2_counters, l2_enabled, backend) = match &self.l2 {
            Some(l2) => (
                l2.counters.json(),
                l2.is_up(),
                format!("sutra-storage cache shard {}", l2.addr()),
            ),
            None => (Counters::default().json(), false, "disabled".to_owned()),
        };
        let mut l2 = l2_counters;
        l2["enabled"] = l2_enabled.into();
        l2["backend"] = backend.into();
        if let Some(shard) = &self.l2 {
            l2["write_backs"] = shard.writes.json();
        }
        let mut l1 = self.l1.counters.json();
        l1["size"] = self.l1.size().into();
        // Every field of `total` counts texts, as the seed's does (`requests` = hits +
        // misses = texts looked up); HTTP requests are `http_requests`.
        let mut total = self.texts.json();
        total["requests"] =
            (total["hits"].as_u64().unwrap_or(0) + total["misses"].as_u64().unwrap_or(0)).into();
        total["http_requests"] = self.requests.load(Ordering::Relaxed).into();
        serde_json::json!({"l1": l1, "l2": l2, "total": total})
    }
}

/// The router of `serve`.
pub fn router(service: Arc<Service>) -> Router {
    let body_limit = service.limits.max_body_bytes();
    let metrics = Arc::clone(&service.metrics);
    Router::new()
        .route("/embed", post(embed))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/cache/stats", get(cache_stats))
        .route("/cache/clear", post(cache_clear))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(service)
}

async fn metrics_text(State(service): State<Arc<Service>>) -> axum::response::Response {
    let metrics = &service.metrics;
    metrics
        .l2_up
        .set(i64::from(service.l2.as_ref().is_some_and(|l2| l2.is_up())));
    for upstream in service.model.upstreams() {
        let url = upstream["url"].as_str().unwrap_or("").to_owned();
        let healthy = upstream["healthy"] == serde_json::Value::Bool(true);
        metrics
            .upstream_healthy
            .get_or_create(&UpstreamLabels { url })
            .set(i64::from(healthy));
    }
    metrics::exposition(metrics)
}

async fn embed(
    State(service): State<Arc<Service>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let started = Instant::now();
    let request = request::embed(&body?, &service.limits)?;
    if let Some(model_id) = &request.model_id {
        tracing::debug!(model_id, "model_id is ignored; this service has one model");
    }
    let (computed, cached) = service
        .embed(&request.texts, request.cache_ttl_seconds)
        .await?;
    Ok(Json(serde_json::json!({
        "embeddings": computed.iter().map(|item| &item.vector).collect::<Vec<_>>(),
        "dimension": service.dimension,
        "model": service.model.model(),
        "processing_time_ms": millis(started.elapsed()),
        "cached_count": cached,
        "batch_size": request.texts.len(),
        "truncated": computed.iter().map(|item| item.truncated).collect::<Vec<_>>(),
    })))
}

#[allow(clippy::cast_precision_loss, reason = "a duration for people")]
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

async fn openai_embeddings(
    State(service): State<Arc<Service>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let request = request::openai(&body?, &service.limits, service.dimension)?;
    let (texts, dimensions) = (&request.texts, request.dimensions);
    if let Some(model) = &request.model {
        tracing::debug!(model, "model is ignored; this service has one model");
    }
    let (computed, _) = service.embed(texts, None).await?;
    let tokens: usize = computed.iter().map(|item| item.tokens).sum();
    let data: Vec<serde_json::Value> = computed
        .iter()
        .enumerate()
        .map(|(index, item)| {
            serde_json::json!({
                "object": "embedding",
                "index": index,
                "embedding": shorten(&item.vector, dimensions),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": data,
        "model": service.model.model(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// The first `dimensions` values, L2-normalised again: for a Matryoshka vector this equals
/// running the recipe with the smaller dimension (layer_norm is over the full vector, and the
/// final L2 only rescales).
fn shorten(vector: &[f32], dimensions: usize) -> Vec<f32> {
    let mut short = vector[..dimensions.min(vector.len())].to_vec();
    let norm = short.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    for value in &mut short {
        *value /= norm;
    }
    short
}

async fn cache_stats(State(service): State<Arc<Service>>) -> Json<serde_json::Value> {
    Json(service.stats())
}

/// Empties both tiers and, as the seed does, starts the counters of `/cache/stats` again from
/// zero (the Prometheus counters of `/metrics` never go back).
async fn cache_clear(State(service): State<Arc<Service>>) -> Json<serde_json::Value> {
    let l1 = service.l1.size();
    service.l1.clear();
    service.l1.counters.reset();
    service.texts.reset();
    service.requests.store(0, Ordering::Relaxed);
    if let Some(shard) = &service.l2 {
        shard.counters.reset();
        shard.writes.reset();
    }
    let l2 = match &service.l2 {
        Some(shard) => match shard.clear().await {
            Ok(removed) => serde_json::json!({"cleared": removed}),
            Err(error) => serde_json::json!({"error": error}),
        },
        None => serde_json::json!({"enabled": false}),
    };
    Json(serde_json::json!({"l1": {"cleared": l1}, "l2": l2}))
}

async fn health(State(service): State<Arc<Service>>) -> (StatusCode, Json<serde_json::Value>) {
    let upstreams = service.model.upstreams();
    let model = service.model.model();
    let serving = model.is_some()
        && upstreams
            .iter()
            .any(|upstream| upstream["healthy"] == serde_json::Value::Bool(true));
    let l2 = service.l2.as_ref().map_or_else(
        || serde_json::json!({"enabled": false}),
        |shard| serde_json::json!({"enabled": shard.is_up(), "addr": shard.addr()}),
    );
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if serving { "ok" } else { "unavailable" },
            "model": model,
            "dimension": service.dimension,
            "l2": l2,
            "upstreams": upstreams,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_a_matryoshka_vector_renormalises() {
        let short = shorten(&[0.6, 0.0, 0.8], 2);
        assert_eq!(short, vec![1.0, 0.0]);
    }
}
