//! Executes requests against the engine and keeps the server's counters. The binary, text
//! and HTTP sessions all go through [`Service`], so they answer identically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sutra_protocol::{ErrorCode, HealthInfo, Limits, Request, Response, StatsSnapshot};

use crate::config::Role;
use crate::engine::Engine;

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
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The request executor shared by every connection.
pub struct Service {
    engine: Engine,
    role: Role,
    limits: Limits,
    started: Instant,
    pub(crate) counters: ServerCounters,
}

impl Service {
    /// A service over `engine`.
    pub fn new(engine: Engine, role: Role, limits: Limits) -> Service {
        Service {
            engine,
            role,
            limits,
            started: Instant::now(),
            counters: ServerCounters::default(),
        }
    }

    /// The decoding limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs one request.
    pub fn call(&self, request: Request) -> Response {
        let response = match request {
            Request::Health => Response::Health(self.health()),
            Request::Stats => Response::Stats(self.stats()),
            Request::StoreConcept(store) => {
                bump(&self.counters.stores);
                self.engine
                    .store(store)
                    .map_or_else(|error| engine_error(&error), Response::Stored)
            }
            Request::GetConceptById { id } => {
                bump(&self.counters.gets);
                self.engine.get(&id).map_or_else(
                    |error| {
                        bump(&self.counters.gets_not_found);
                        engine_error(&error)
                    },
                    Response::Concept,
                )
            }
            Request::QueryByType(query) => {
                bump(&self.counters.queries);
                Response::Page(self.engine.query_by_type(&query))
            }
            Request::Delete { id } => {
                bump(&self.counters.deletes);
                self.engine.delete(&id).map_or_else(
                    |error| engine_error(&error),
                    |existed| Response::Deleted { existed },
                )
            }
        };
        self.count_response(&response);
        response
    }

    /// Counts a response in `requests_total` / `errors_total`. Sessions call this for errors
    /// they produce themselves (undecodable requests).
    pub fn count_response(&self, response: &Response) {
        bump(&self.counters.requests_total);
        if matches!(response, Response::Error(_)) {
            bump(&self.counters.errors_total);
        }
    }

    /// Liveness facts.
    pub fn health(&self) -> HealthInfo {
        HealthInfo {
            status: "ok".to_owned(),
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
        let pairs: [(&str, u64); 13] = [
            ("concepts", engine.concepts),
            ("bytes_used", engine.bytes_used),
            ("uptime_seconds", self.started.elapsed().as_secs()),
            ("connections_current", load(&counters.connections_current)),
            ("connections_total", load(&counters.connections_total)),
            ("connections_rejected", load(&counters.connections_rejected)),
            ("requests_total", load(&counters.requests_total)),
            ("errors_total", load(&counters.errors_total)),
            ("stores", load(&counters.stores)),
            ("gets", load(&counters.gets)),
            ("gets_not_found", load(&counters.gets_not_found)),
            ("queries", load(&counters.queries)),
            ("deletes", load(&counters.deletes)),
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

fn engine_error(error: &crate::engine::EngineError) -> Response {
    Response::error(error.code(), error.to_string())
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
