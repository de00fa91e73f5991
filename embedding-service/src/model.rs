//! Where embeddings come from: the in-process pipeline, or ML-base replicas balanced by least
//! outstanding requests, health-checked with HAProxy-style `fall`/`rise` thresholds, a failed
//! replica taken out at once and the request retried on another.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sutra_embed::{Batcher, EmbedError, Output, Task};
use tokio_util::sync::CancellationToken;

use crate::config::ReplicaConfig;

/// One computed embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Computed {
    /// The vector (unit length).
    pub vector: Vec<f32>,
    /// Whether the text was cut at the model's token limit.
    pub truncated: bool,
    /// Tokens the model saw.
    pub tokens: usize,
}

/// Why the model could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Every replica is down or the local queue is full: retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// The model failed on this input (500).
    #[error("{0}")]
    Failed(String),
}

pub use sutra_protocol::embed_json::ReplicaRequest;

/// `POST /embed` answer of an ML-base replica.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaResponse {
    /// One vector per text.
    pub embeddings: Vec<Vec<f32>>,
    /// Their dimension.
    pub dimension: usize,
    /// The model's name.
    pub model: String,
    /// The replica.
    pub instance_id: String,
    /// Per text: cut at the token limit.
    #[serde(default)]
    pub truncated: Vec<bool>,
    /// Per text: tokens the model saw.
    #[serde(default)]
    pub tokens: Vec<usize>,
}

/// `GET /health` answer of an ML-base replica.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaHealth {
    /// `ok`.
    pub status: String,
    /// The model's name.
    pub model: String,
    /// Output dimension.
    pub dimension: usize,
    /// The replica.
    pub instance_id: String,
}

/// The model behind the service.
#[derive(Clone)]
pub enum ModelSource {
    /// In-process pipeline.
    Local {
        /// Its batcher.
        batcher: Batcher,
        /// Output dimension.
        dimension: usize,
    },
    /// ML-base replicas.
    Replicas(Arc<Replicas>),
}

impl ModelSource {
    /// The model's name (the cache keys' namespace); `None` until a replica has answered.
    pub fn model(&self) -> Option<String> {
        match self {
            ModelSource::Local { batcher, .. } => Some(batcher.info().name.clone()),
            ModelSource::Replicas(replicas) => replicas.model(),
        }
    }

    /// Embeds `texts` (document prefix applied here for the in-process model; replicas apply
    /// their own), in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Computed>, ModelError> {
        match self {
            ModelSource::Local { batcher, dimension } => {
                let prefixes = &batcher.info().prefixes;
                let texts = texts
                    .iter()
                    .map(|text| prefixes.apply(Task::Document, text))
                    .collect();
                let embedded = batcher
                    .embed(texts, Output::Matryoshka(*dimension))
                    .await
                    .map_err(|error| match error {
                        EmbedError::Busy | EmbedError::Stopped => {
                            ModelError::Unavailable(error.to_string())
                        }
                        other => ModelError::Failed(other.to_string()),
                    })?;
                Ok(embedded
                    .into_iter()
                    .map(|item| Computed {
                        vector: item.vector,
                        truncated: item.truncated,
                        tokens: item.tokens,
                    })
                    .collect())
            }
            ModelSource::Replicas(replicas) => replicas.embed(texts).await,
        }
    }

    /// Upstream health for `/health`, `/cache/stats` and logs.
    pub fn upstreams(&self) -> Vec<serde_json::Value> {
        match self {
            ModelSource::Local { .. } => {
                vec![serde_json::json!({"url": "in-process", "healthy": true})]
            }
            ModelSource::Replicas(replicas) => replicas.snapshot(),
        }
    }
}

/// One ML-base replica's state.
#[derive(Debug)]
pub struct Replica {
    /// Base URL.
    pub url: String,
    healthy: AtomicBool,
    outstanding: AtomicUsize,
    passes: AtomicU32,
    failures: AtomicU32,
    /// Requests sent (answered or not).
    pub requests: AtomicU64,
}

impl Replica {
    fn new(url: &str) -> Replica {
        Replica {
            url: url.trim_end_matches('/').to_owned(),
            // Optimistic: a replica is used until it fails, so the service answers at once.
            healthy: AtomicBool::new(true),
            outstanding: AtomicUsize::new(0),
            passes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// Whether it is in rotation.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

/// The replica set.
#[derive(Debug)]
pub struct Replicas {
    members: Vec<Replica>,
    config: ReplicaConfig,
    http: reqwest::Client,
    model: RwLock<Option<String>>,
    next: AtomicUsize,
}

/// Decrements a replica's outstanding count when the request ends, however it ends.
struct Outstanding<'a>(&'a Replica);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Replicas {
    /// The set, and its health checker running until `shutdown`.
    pub fn start(
        config: ReplicaConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Replicas>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let replicas = Arc::new(Replicas {
            members: config.urls.iter().map(|url| Replica::new(url)).collect(),
            config,
            http,
            model: RwLock::new(None),
            next: AtomicUsize::new(0),
        });
        tokio::spawn(Arc::clone(&replicas).check_health(shutdown));
        Ok(replicas)
    }

    /// The replicas.
    pub fn replicas(&self) -> &[Replica] {
        &self.members
    }

    fn model(&self) -> Option<String> {
        self.model.read().ok().and_then(|model| model.clone())
    }

    /// The healthy replica with the fewest requests in flight, ties broken round-robin;
    /// `exclude` are replicas this request already failed on.
    fn pick(&self, exclude: &[usize]) -> Option<usize> {
        let count = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|index| !exclude.contains(index) && self.members[*index].is_healthy())
            .min_by_key(|index| self.members[*index].outstanding.load(Ordering::Acquire))
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Computed>, ModelError> {
        let request = ReplicaRequest {
            texts,
            normalize: true,
        };
        let mut tried = Vec::new();
        let mut last_error = String::from("no healthy ML-base replica");
        while let Some(index) = self.pick(&tried) {
            tried.push(index);
            let replica = &self.members[index];
            replica.outstanding.fetch_add(1, Ordering::AcqRel);
            let _outstanding = Outstanding(replica);
            replica.requests.fetch_add(1, Ordering::Relaxed);
            match self.call(replica, &request).await {
                Ok(answer) => return Ok(answer),
                Err(CallError::Input(message)) => return Err(ModelError::Failed(message)),
                Err(CallError::Replica(message)) => {
                    // Out of rotation at once; the health checker puts it back after `rise`
                    // passed checks.
                    if replica.healthy.swap(false, Ordering::AcqRel) {
                        tracing::warn!(url = %replica.url, %message, "ML-base replica failed; taken out, retrying elsewhere");
                    }
                    replica.passes.store(0, Ordering::Release);
                    last_error = format!("{}: {message}", replica.url);
                }
            }
        }
        Err(ModelError::Unavailable(last_error))
    }

    async fn call(
        &self,
        replica: &Replica,
        request: &ReplicaRequest,
    ) -> Result<Vec<Computed>, CallError> {
        let response = self
            .http
            .post(format!("{}/embed", replica.url))
            .json(request)
            .send()
            .await
            .map_err(|error| CallError::Replica(error.to_string()))?;
        let status = response.status();
        if status.is_client_error() {
            let body = response.text().await.unwrap_or_default();
            return Err(CallError::Input(format!(
                "ML-base refused the input: {body}"
            )));
        }
        if !status.is_success() {
            return Err(CallError::Replica(format!("status {status}")));
        }
        let answer: ReplicaResponse = response
            .json()
            .await
            .map_err(|error| CallError::Replica(format!("unreadable answer: {error}")))?;
        if answer.embeddings.len() != request.texts.len() {
            return Err(CallError::Replica(format!(
                "{} embeddings for {} texts",
                answer.embeddings.len(),
                request.texts.len()
            )));
        }
        self.learn_model(&answer.model);
        let (truncated, tokens) = (answer.truncated, answer.tokens);
        Ok(answer
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, vector)| Computed {
                vector,
                truncated: truncated.get(index).copied().unwrap_or(false),
                tokens: tokens.get(index).copied().unwrap_or(0),
            })
            .collect())
    }

    fn learn_model(&self, model: &str) {
        if let Ok(mut known) = self.model.write() {
            if known.as_deref() != Some(model) {
                if let Some(previous) = known.as_deref() {
                    tracing::warn!(previous, model, "ML-base replicas serve different models");
                }
                *known = Some(model.to_owned());
            }
        }
    }

    async fn check_health(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.health_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            for replica in &self.members {
                let passed = match self
                    .http
                    .get(format!("{}/health", replica.url))
                    .timeout(self.config.health_interval.max(Duration::from_millis(500)))
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => {
                        match response.json::<ReplicaHealth>().await {
                            Ok(health) => {
                                self.learn_model(&health.model);
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    _ => false,
                };
                self.record_check(replica, passed);
            }
        }
    }

    fn record_check(&self, replica: &Replica, ok: bool) {
        if ok {
            replica.failures.store(0, Ordering::Release);
            let in_a_row = replica.passes.fetch_add(1, Ordering::AcqRel) + 1;
            if in_a_row >= self.config.rise && !replica.healthy.swap(true, Ordering::AcqRel) {
                tracing::info!(url = %replica.url, "ML-base replica healthy again; back in rotation");
            }
        } else {
            replica.passes.store(0, Ordering::Release);
            let failures = replica.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if failures >= self.config.fall && replica.healthy.swap(false, Ordering::AcqRel) {
                tracing::warn!(url = %replica.url, "ML-base replica failed its health checks; taken out");
            }
        }
    }

    fn snapshot(&self) -> Vec<serde_json::Value> {
        self.members
            .iter()
            .map(|replica| {
                serde_json::json!({
                    "url": replica.url,
                    "healthy": replica.is_healthy(),
                    "outstanding": replica.outstanding.load(Ordering::Relaxed),
                    "requests": replica.requests.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

enum CallError {
    /// The replica refused the input (4xx): another replica would too.
    Input(String),
    /// The replica failed (connection, timeout, 5xx, bad answer): try another.
    Replica(String),
}
