//! Executes requests against the engine and keeps the server's counters. The binary, text
//! and HTTP sessions all go through [`Service`], so they answer identically.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sutra_embed::{Batcher, EmbedError, Output, Task};
use sutra_protocol::{
    ConceptId, ErrorCode, HealthInfo, LearnConcept, Learned, Limits, Request, Response,
    StatsSnapshot, StoreConcept, Vector,
};

use crate::config::Role;
use crate::engine::Engine;
use crate::remote::{Embedding, Remote, RemoteError};

/// The embedding model behind LearnConcept, in-process or behind an embedding service, and
/// the stored dimension.
#[derive(Debug, Clone)]
pub struct Embedder {
    source: Source,
    dimension: u32,
}

#[derive(Debug, Clone)]
enum Source {
    /// The model's batcher in this process.
    Local(Batcher),
    /// `SUTRA_EMBEDDING_SERVICE_URL`.
    Remote(Arc<Remote>),
}

impl Embedder {
    /// An embedder producing `dimension`-value Matryoshka vectors in this process.
    pub fn new(batcher: Batcher, dimension: u32) -> Embedder {
        Embedder {
            source: Source::Local(batcher),
            dimension,
        }
    }

    /// An embedder calling the embedding service behind `remote`, whose vectors must have
    /// `dimension` values.
    pub fn remote(remote: Remote, dimension: u32) -> Embedder {
        Embedder {
            source: Source::Remote(Arc::new(remote)),
            dimension,
        }
    }

    /// The model's name (its folder's name), stored as each learned concept's `model`; for an
    /// embedding service, the name it last answered with (`None` before its first answer).
    pub fn model_name(&self) -> Option<String> {
        match &self.source {
            Source::Local(batcher) => Some(batcher.info().name.clone()),
            Source::Remote(remote) => remote.model(),
        }
    }

    /// The embedding service's URL, when learning goes through one.
    pub fn service_url(&self) -> Option<&str> {
        match &self.source {
            Source::Local(_) => None,
            Source::Remote(remote) => Some(remote.url()),
        }
    }

    /// The model's name and one vector per text (documents: the model's document prefix is
    /// applied, here or by the service).
    async fn embed(&self, texts: Vec<String>) -> Result<(String, Vec<Embedding>), Response> {
        let dimension = self.dimension as usize;
        match &self.source {
            Source::Local(batcher) => {
                let prefixes = &batcher.info().prefixes;
                let texts = texts
                    .iter()
                    .map(|text| prefixes.apply(Task::Document, text))
                    .collect();
                let vectors = batcher
                    .embed(texts, Output::Matryoshka(dimension))
                    .await
                    .map_err(|error| embed_error(&error))?;
                let embedded = vectors
                    .into_iter()
                    .map(|item| Embedding {
                        vector: item.vector,
                        tokens: item.tokens,
                        truncated: item.truncated,
                    })
                    .collect();
                Ok((batcher.info().name.clone(), embedded))
            }
            Source::Remote(remote) => {
                let (model, vectors) = remote.embed(&texts).await.map_err(|error| {
                    tracing::warn!(%error, "learn failed");
                    let code = match error {
                        RemoteError::Unavailable { .. } => ErrorCode::Busy,
                        RemoteError::Refused { .. } => ErrorCode::Internal,
                    };
                    Response::error(code, error.to_string())
                })?;
                if let Some(other) = vectors.iter().find(|item| item.vector.len() != dimension) {
                    return Err(Response::error(
                        ErrorCode::Internal,
                        format!(
                            "the embedding service at {} answers {}-value vectors and VECTOR_DIMENSION is {dimension}: set its MATRYOSHKA_DIM to {dimension}",
                            remote.url(),
                            other.vector.len()
                        ),
                    ));
                }
                Ok((model, vectors))
            }
        }
    }
}

/// The id of a learn request without one: `learn-` and the first 32 hex digits of
/// sha256(model, 0x00, content), so the same text learned twice with one model is one concept.
pub fn derived_id(model: &str, content: &str) -> String {
    let digest = Sha256::new()
        .chain_update(model.as_bytes())
        .chain_update([0_u8])
        .chain_update(content.as_bytes())
        .finalize();
    let mut id = String::with_capacity(38);
    id.push_str("learn-");
    for byte in digest.iter().take(16) {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// The answer to a request: now, or once a write is durable.
pub enum Reply {
    /// The response.
    Ready(Response),
    /// A write waiting for the log; resolves to its response.
    Pending(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// The server version reported by Health.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Server-wide counters. Relaxed atomics: they are statistics, not synchronisation.
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub(crate) connections_current: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    requests_total: AtomicU64,
    errors_total: AtomicU64,
    stores: AtomicU64,
    gets: AtomicU64,
    gets_not_found: AtomicU64,
    queries: AtomicU64,
    deletes: AtomicU64,
    clears: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The request executor shared by every connection.
pub struct Service {
    engine: Arc<Engine>,
    embedder: Option<Embedder>,
    role: Role,
    limits: Limits,
    started: Instant,
    pub(crate) counters: ServerCounters,
    metrics: Arc<crate::metrics::Metrics>,
    auth: Option<crate::config::AuthConfig>,
    auth_log: std::sync::Mutex<Option<Instant>>,
    auth_failures_unlogged: AtomicU64,
}

impl Service {
    /// A service over `engine`.
    pub fn new(engine: Engine, role: Role, limits: Limits) -> Service {
        Service {
            engine: Arc::new(engine),
            embedder: None,
            role,
            limits,
            started: Instant::now(),
            counters: ServerCounters::default(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            auth: None,
            auth_log: std::sync::Mutex::new(None),
            auth_failures_unlogged: AtomicU64::new(0),
        }
    }

    /// Adds the embedding model for LearnConcept.
    #[must_use]
    pub fn with_embedder(mut self, embedder: Option<Embedder>) -> Service {
        self.embedder = embedder;
        self
    }

    /// Requires every connection to authenticate with `auth`'s token.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<crate::config::AuthConfig>) -> Service {
        self.auth = auth;
        self
    }

    /// Whether connections must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// Whether Health and `GET /health` answer unauthenticated connections.
    pub fn health_is_open(&self) -> bool {
        self.auth.as_ref().is_none_or(|auth| auth.open_health)
    }

    /// Whether `token` is the server's (constant time over SHA-256 digests).
    pub fn check_token(&self, token: &str) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        self.auth.as_ref().is_none_or(|auth| {
            let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            digest.ct_eq(&auth.token_sha256).into()
        })
    }

    /// Logs a failed authentication from `peer`, at most one line a second (the lines in
    /// between are counted in the next one).
    pub fn auth_failed(&self, peer: std::net::SocketAddr, via: &'static str) {
        let Ok(mut last) = self.auth_log.lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) {
            self.auth_failures_unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let unlogged = self.auth_failures_unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(%peer, via, unlogged, "authentication failed");
    }

    /// The embedding model, if the server has one.
    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.as_ref()
    }

    /// The decoding limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs one request. Reads and failures are answered at once; a write is answered when
    /// the log has made it durable ([`Reply::Pending`]). Callers count the final response with
    /// [`Service::count_response`].
    pub fn call(&self, request: Request) -> Reply {
        let opcode = request.opcode();
        let started = Instant::now();
        match self.run(request) {
            Reply::Ready(response) => {
                self.metrics
                    .request(opcode, started.elapsed().as_secs_f64());
                Reply::Ready(response)
            }
            Reply::Pending(pending) => {
                let metrics = Arc::clone(&self.metrics);
                Reply::Pending(Box::pin(async move {
                    let response = pending.await;
                    metrics.request(opcode, started.elapsed().as_secs_f64());
                    response
                }))
            }
        }
    }

    /// The Prometheus exposition of this server (`GET /metrics`).
    pub fn metrics_text(&self) -> String {
        self.metrics.encode(&self.stats(), self.engine.latencies())
    }

    fn run(&self, request: Request) -> Reply {
        match request {
            // Connections authenticate at their gate (net::Gate); this is reached only on a
            // server without a token.
            Request::Auth { .. } => Reply::Ready(Response::Authenticated),
            Request::Health => Reply::Ready(Response::Health(self.health())),
            Request::Stats => Reply::Ready(Response::Stats(self.stats())),
            Request::StoreConcept(store) => {
                bump(&self.counters.stores);
                when_durable(self.engine.store(store), Response::Stored)
            }
            Request::GetConceptById { id } => {
                bump(&self.counters.gets);
                Reply::Ready(self.engine.get(&id).map_or_else(
                    |error| {
                        bump(&self.counters.gets_not_found);
                        engine_error(&error)
                    },
                    Response::Concept,
                ))
            }
            Request::QueryByType(query) => {
                bump(&self.counters.queries);
                Reply::Ready(Response::Page(self.engine.query_by_type(&query)))
            }
            Request::Delete { id } => {
                bump(&self.counters.deletes);
                when_durable(self.engine.delete(&id), |existed| Response::Deleted {
                    existed,
                })
            }
            Request::GetMany { ids } => Reply::Ready(self.get_many(&ids)),
            Request::StoreMany(stores) => {
                self.counters
                    .stores
                    .fetch_add(stores.len() as u64, Ordering::Relaxed);
                when_durable(self.engine.store_many(stores), Response::StoredMany)
            }
            Request::LearnConcept(learn) => {
                bump(&self.counters.stores);
                self.learn(vec![learn], false)
            }
            Request::LearnBatch(learns) => {
                self.counters
                    .stores
                    .fetch_add(learns.len() as u64, Ordering::Relaxed);
                self.learn(learns, true)
            }
            Request::ClearType { concept_type } => {
                bump(&self.counters.clears);
                when_durable(self.engine.clear_type(concept_type), |removed| {
                    Response::Cleared { removed }
                })
            }
        }
    }

    /// LearnConcept and LearnBatch: embed on the model's worker, then store like
    /// StoreConcept/StoreMany; the reply waits for both.
    fn learn(&self, learns: Vec<LearnConcept>, batch: bool) -> Reply {
        let Some(model_worker) = self.embedder.clone() else {
            return Reply::Ready(Response::error(
                ErrorCode::NoModel,
                "this server has no embedding model: start it with --model-dir/SUTRA_MODEL_DIR (./scripts/fetch-model fetches the default)",
            ));
        };
        let engine = Arc::clone(&self.engine);
        Reply::Pending(Box::pin(async move {
            let texts = learns.iter().map(|learn| learn.content.clone()).collect();
            let (model, vectors) = match model_worker.embed(texts).await {
                Ok(embedded) => embedded,
                Err(response) => return response,
            };
            let mut stores = Vec::with_capacity(learns.len());
            let mut facts = Vec::with_capacity(learns.len());
            for (learn, item) in learns.into_iter().zip(vectors) {
                let id = match learn.id {
                    Some(id) => id,
                    None => match ConceptId::parse(&derived_id(&model, &learn.content)) {
                        Ok(id) => id,
                        Err(error) => {
                            return Response::error(ErrorCode::Internal, error.to_string())
                        }
                    },
                };
                let vector = match Vector::new(item.vector, model_worker.dimension) {
                    Ok(vector) => vector,
                    Err(error) => return Response::error(ErrorCode::Internal, error.to_string()),
                };
                facts.push((
                    id.to_string(),
                    u32::try_from(item.tokens).unwrap_or(u32::MAX),
                    item.truncated,
                ));
                stores.push(StoreConcept {
                    id,
                    content: learn.content,
                    concept_type: learn.concept_type,
                    model: model.clone(),
                    attributes: learn.attributes,
                    embedding: Some(vector),
                    ttl_seconds: learn.ttl_seconds,
                });
            }
            let learned = |outcomes: Vec<sutra_protocol::StoreOutcome>| -> Vec<Learned> {
                facts
                    .into_iter()
                    .zip(outcomes)
                    .map(|((id, tokens, truncated), outcome)| Learned {
                        id,
                        outcome,
                        tokens,
                        truncated,
                    })
                    .collect()
            };
            if batch {
                match engine.store_many(stores) {
                    Ok(pending) => match pending.wait().await {
                        Ok(outcomes) => Response::LearnedMany(learned(outcomes)),
                        Err(error) => engine_error(&error),
                    },
                    Err(error) => engine_error(&error),
                }
            } else {
                let Some(store) = stores.pop() else {
                    return Response::error(ErrorCode::Internal, "no text to learn");
                };
                match engine.store(store) {
                    Ok(pending) => match pending.wait().await {
                        Ok(outcome) => learned(vec![outcome]).pop().map_or_else(
                            || Response::error(ErrorCode::Internal, "no outcome"),
                            Response::Learned,
                        ),
                        Err(error) => engine_error(&error),
                    },
                    Err(error) => engine_error(&error),
                }
            }
        }))
    }

    /// `GetMany`: every id in order, refused as a whole when the answer would not fit a frame.
    fn get_many(&self, ids: &[sutra_protocol::ConceptId]) -> Response {
        let found = self.engine.get_many(ids);
        let misses = found.iter().filter(|item| item.is_none()).count();
        self.counters
            .gets
            .fetch_add(found.len() as u64, Ordering::Relaxed);
        self.counters
            .gets_not_found
            .fetch_add(misses as u64, Ordering::Relaxed);
        // Header, status, count, and one option tag per item, plus each concept found.
        let bytes = found
            .iter()
            .flatten()
            .fold(16 + found.len(), |sum, concept| {
                sum.saturating_add(concept.encoded_len())
            });
        if bytes > self.limits.max_frame_bytes as usize {
            return Response::error(
                ErrorCode::InvalidArgument,
                format!("the {} concepts found take {bytes} bytes, more than MAX_FRAME_BYTES ({}); ask for fewer ids", found.len() - misses, self.limits.max_frame_bytes),
            );
        }
        Response::Many(found)
    }

    /// Runs one request to completion.
    pub async fn call_and_wait(&self, request: Request) -> Response {
        let response = match self.call(request) {
            Reply::Ready(response) => response,
            Reply::Pending(pending) => pending.await,
        };
        self.count_response(&response);
        response
    }

    /// Counts a response in `requests_total` / `errors_total`. Sessions call this for errors
    /// they produce themselves (undecodable requests).
    pub fn count_response(&self, response: &Response) {
        bump(&self.counters.requests_total);
        if let Response::Error(error) = response {
            bump(&self.counters.errors_total);
            self.metrics.error(error.code);
        }
    }

    /// Liveness facts.
    pub fn health(&self) -> HealthInfo {
        HealthInfo {
            status: if self.engine.is_writable() {
                "ok"
            } else {
                "read_only"
            }
            .to_owned(),
            role: self.role.as_str().to_owned(),
            vector_dimension: self.limits.vector_dimension,
            concepts: self.engine.counters().concepts,
            version: VERSION.to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// Every counter, by name (the names are documented in PROTOCOL.md).
    pub fn stats(&self) -> StatsSnapshot {
        let engine = self.engine.counters();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        let gets = load(&counters.gets);
        let misses = load(&counters.gets_not_found);
        let pairs: [(&str, u64); 30] = [
            ("concepts", engine.concepts),
            ("bytes_used", engine.bytes_used),
            ("uptime_seconds", self.started.elapsed().as_secs()),
            ("connections_current", load(&counters.connections_current)),
            ("connections_total", load(&counters.connections_total)),
            ("connections_rejected", load(&counters.connections_rejected)),
            ("requests_total", load(&counters.requests_total)),
            ("errors_total", load(&counters.errors_total)),
            ("stores", load(&counters.stores)),
            ("gets", gets),
            ("gets_not_found", misses),
            ("hits", gets.saturating_sub(misses)),
            ("misses", misses),
            ("evictions", engine.evictions),
            ("expirations", engine.expirations),
            ("max_concepts", engine.max_concepts),
            (
                "default_ttl_seconds",
                self.engine.default_ttl().map_or(0, |ttl| ttl.as_secs()),
            ),
            ("queries", load(&counters.queries)),
            ("deletes", load(&counters.deletes)),
            ("clears", load(&counters.clears)),
            ("wal_appends", engine.wal_appends),
            ("wal_batches", engine.wal_batches),
            ("wal_syncs", engine.wal_syncs),
            ("wal_segments", engine.wal_segments),
            ("checkpoints", engine.checkpoints),
            ("checkpoint_lsn", engine.checkpoint_lsn),
            ("writable", u64::from(self.engine.is_writable())),
            ("persistent", u64::from(engine.persistent)),
            ("vector_slots_used", engine.vector_slots_used),
            ("vector_slots_allocated", engine.vector_slots_allocated),
        ];
        StatsSnapshot {
            role: self.role.as_str().to_owned(),
            vector_dimension: self.limits.vector_dimension,
            counters: pairs
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }
}

/// The reply to a write: its response once the log has it, or the error at once.
fn when_durable<T: Send + 'static>(
    write: Result<crate::engine::PendingWrite<T>, crate::engine::EngineError>,
    respond: impl FnOnce(T) -> Response + Send + 'static,
) -> Reply {
    match write {
        Ok(pending) => Reply::Pending(Box::pin(async move {
            pending
                .wait()
                .await
                .map_or_else(|error| engine_error(&error), respond)
        })),
        Err(error) => Reply::Ready(engine_error(&error)),
    }
}

fn engine_error(error: &crate::engine::EngineError) -> Response {
    // A poisoned log was reported once, when it failed; do not log every refused write.
    let refused = matches!(
        error,
        crate::engine::EngineError::Storage(sutra_wal::WalError::Poisoned)
    );
    if !refused
        && matches!(
            error.code(),
            ErrorCode::Internal | ErrorCode::StorageUnavailable
        )
    {
        tracing::warn!(%error, "request failed");
    }
    Response::error(error.code(), error.client_message())
}

fn embed_error(error: &EmbedError) -> Response {
    match error {
        EmbedError::Busy => Response::error(ErrorCode::Busy, error.to_string()),
        _ => {
            tracing::warn!(%error, "learn failed");
            Response::error(ErrorCode::Internal, format!("embedding failed: {error}"))
        }
    }
}

/// An error response for a request that could not be decoded.
pub fn decode_error(error: &sutra_protocol::DecodeError) -> Response {
    Response::error(error.code(), error.to_string())
}

/// The reply sent when a response could not be encoded (a bug: limits are validated so that
/// every response fits a frame).
pub fn internal_error() -> Response {
    Response::error(ErrorCode::Internal, "internal error; see the server log")
}
