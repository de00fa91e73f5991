//! The concept engine: the only code that changes stored state.
//!
//! Today the engine is an in-memory store (see [`store`]). The durability work slots a
//! write-ahead log under [`Engine::store`] and [`Engine::delete`]: they log, wait for the log's
//! acknowledgement, then apply to memory. Nothing above the engine (the network sessions,
//! HTTP) touches stored state directly, so that change stays inside this module.
//!
//! The engine logs nothing on the success path; errors are logged once, by the session that
//! reports them.

mod clock;
mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sutra_protocol::{
    Concept, ConceptId, ErrorCode, QueryByType, QueryPage, StoreConcept, StoreOutcome,
};

pub use clock::{Clock, ManualClock, SystemClock};
use store::ConceptStore;

/// Settings the engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// TTL for stores that carry none; `None` keeps them forever.
    pub default_ttl: Option<Duration>,
    /// Largest encoded size of one `QueryByType` page, so a page always fits one frame.
    pub max_page_bytes: usize,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No live concept has this id.
    #[error("no concept with id {id:?}")]
    NotFound {
        /// The id asked for.
        id: ConceptId,
    },
    /// The engine has been shut down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl EngineError {
    /// The one place engine errors map to wire codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::NotFound { .. } => ErrorCode::NotFound,
            EngineError::ShuttingDown => ErrorCode::Busy,
        }
    }
}

/// Counts of engine operations, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Live concepts (including expired ones not yet removed).
    pub concepts: u64,
    /// Encoded bytes of those concepts.
    pub bytes_used: u64,
}

/// The concept store with its time source.
pub struct Engine {
    store: ConceptStore,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    closed: AtomicBool,
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig, clock: Arc<dyn Clock>) -> Engine {
        Engine {
            store: ConceptStore::new(),
            clock,
            config,
            closed: AtomicBool::new(false),
        }
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.closed.load(Ordering::Acquire) {
            Err(EngineError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Inserts or replaces a concept; the server sets its creation time and expiry.
    pub fn store(&self, request: StoreConcept) -> Result<StoreOutcome, EngineError> {
        self.check_open()?;
        let now_ms = self.clock.now_ms();
        let ttl = match request.ttl_seconds {
            None => self.config.default_ttl,
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(seconds)),
        };
        let expires_at_ms = ttl.map(|ttl| {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            now_ms.saturating_add(ttl_ms)
        });
        let concept = Concept {
            id: request.id,
            content: request.content,
            concept_type: request.concept_type,
            model: request.model,
            attributes: request.attributes,
            embedding: request.embedding,
            created_at_ms: now_ms,
            expires_at_ms,
        };
        let created = self.store.upsert(&Arc::new(concept), now_ms);
        Ok(StoreOutcome {
            created,
            created_at_ms: now_ms,
            expires_at_ms,
        })
    }

    /// The live concept with this id.
    pub fn get(&self, id: &ConceptId) -> Result<Arc<Concept>, EngineError> {
        self.store
            .get(id, self.clock.now_ms())
            .ok_or_else(|| EngineError::NotFound { id: id.clone() })
    }

    /// One page of live concepts of a type, in ascending id order after the cursor.
    pub fn query_by_type(&self, query: &QueryByType) -> QueryPage {
        self.store
            .query_by_type(query, self.config.max_page_bytes, self.clock.now_ms())
    }

    /// Removes a concept; `Ok(false)` when there was none.
    pub fn delete(&self, id: &ConceptId) -> Result<bool, EngineError> {
        self.check_open()?;
        Ok(self.store.remove(id, self.clock.now_ms()))
    }

    /// Sizes for statistics.
    pub fn counters(&self) -> EngineCounters {
        self.store.counters()
    }

    /// Stops accepting writes. Reads still succeed so that in-flight sessions can finish.
    /// With the write-ahead log this is where the final sync and checkpoint happen.
    pub fn shutdown(&self) -> Result<(), EngineError> {
        self.closed.store(true, Ordering::Release);
        #[cfg(debug_assertions)]
        self.store.check_invariants();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
