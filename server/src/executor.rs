//! Executes requests against the engine and keeps the server's counters. The binary, text
//! and HTTP sessions all go through the [`Executor`], so they answer identically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sutra_engine::Engine;
use sutra_protocol::{ErrorCode, HealthInfo, Limits, Request, Response, StatsSnapshot};

use crate::auth::Auth;
use crate::config::{AuthConfig, Role};
use crate::learn::{self, Embedder, Learning};
use crate::metrics::Metrics;
use crate::reply::{engine_error, when_durable, Reply};
use crate::search;

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
    searches: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The request executor shared by every connection.
pub struct Executor {
    engine: Arc<Engine>,
    embedder: Option<Embedder>,
    role: Role,
    limits: Limits,
    started: Instant,
    pub(crate) counters: ServerCounters,
    metrics: Arc<Metrics>,
    auth: Auth,
}

impl Executor {
    /// An executor over `engine`.
    pub fn new(engine: Engine, role: Role, limits: Limits) -> Executor {
        Executor {
            engine: Arc::new(engine),
            embedder: None,
            role,
            limits,
            started: Instant::now(),
            counters: ServerCounters::default(),
            metrics: Arc::new(Metrics::default()),
            auth: Auth::new(None),
        }
    }

    /// Adds the embedding model for LearnConcept.
    #[must_use]
    pub fn with_embedder(mut self, embedder: Option<Embedder>) -> Executor {
        self.embedder = embedder;
        self
    }

    /// Requires every connection to authenticate with `auth`'s token.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<AuthConfig>) -> Executor {
        self.auth = Auth::new(auth);
        self
    }

    /// Authentication: whether it is required, and the token check.
    pub fn auth(&self) -> &Auth {
        &self.auth
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
    /// [`Executor::count_response`].
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
                Reply::Pending(pending.timed(Arc::clone(&self.metrics), opcode, started))
            }
        }
    }

    /// The Prometheus exposition of this server (`GET /metrics`).
    pub fn metrics_text(&self) -> String {
        self.metrics.encode(&self.stats(), self.engine.latencies())
    }

    fn run(&self, request: Request) -> Reply {
        match request {
            // Connections authenticate at their gate (auth::Gate); this is reached only on a
            // server without a token.
            Request::Auth { .. } => Reply::Ready(Response::Authenticated),
            Request::Health => Reply::Ready(Response::Health(self.health())),
            Request::Stats => Reply::Ready(Response::Stats(self.stats())),
            Request::Search(query) => {
                bump(&self.counters.searches);
                search::search(
                    Arc::clone(&self.engine),
                    self.embedder.clone(),
                    &self.limits,
                    query,
                )
            }
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
                learn::learn(
                    self.embedder.clone(),
                    Arc::clone(&self.engine),
                    vec![learn],
                    Learning::One,
                )
            }
            Request::LearnBatch(learns) => {
                self.counters
                    .stores
                    .fetch_add(learns.len() as u64, Ordering::Relaxed);
                learn::learn(
                    self.embedder.clone(),
                    Arc::clone(&self.engine),
                    learns,
                    Learning::Batch,
                )
            }
            Request::ClearType { concept_type } => {
                bump(&self.counters.clears);
                when_durable(self.engine.clear_type(concept_type), |removed| {
                    Response::Cleared { removed }
                })
            }
        }
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
            model: self
                .embedder
                .as_ref()
                .and_then(Embedder::model_name)
                .unwrap_or_default(),
        }
    }

    /// Every counter, by name (the names are documented in PROTOCOL.md).
    pub fn stats(&self) -> StatsSnapshot {
        let engine = self.engine.counters();
        let index = self.engine.index_stats().unwrap_or_default();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        let gets = load(&counters.gets);
        let misses = load(&counters.gets_not_found);
        let limits = &self.limits;
        let pairs: [(&str, u64); 44] = [
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
            ("searches", load(&counters.searches)),
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
            ("index_vectors", index.indexed),
            ("index_pending", index.pending),
            ("index_memory_bytes", index.memory_bytes),
            (
                "index_bytes_per_vector",
                index.memory_bytes.checked_div(index.indexed).unwrap_or(0),
            ),
            // The limits a client sizes its requests by (GetMany, StoreMany, ids).
            ("max_frame_bytes", u64::from(limits.max_frame_bytes)),
            ("max_id_bytes", u64::from(limits.max_id_bytes)),
            ("max_content_bytes", u64::from(limits.max_content_bytes)),
            ("max_name_bytes", u64::from(limits.max_name_bytes)),
            ("max_attributes", u64::from(limits.max_attributes)),
            ("max_attribute_bytes", u64::from(limits.max_attribute_bytes)),
            ("max_query_limit", u64::from(limits.max_query_limit)),
            ("max_batch_items", u64::from(limits.max_batch_items)),
            ("max_search_k", u64::from(limits.max_search_k)),
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
