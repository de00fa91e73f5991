//! The [`Engine`]: every read and write of the store, each write logged before it is applied.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sutra_protocol::{Concept, ConceptId, QueryByType, QueryPage, StoreConcept, StoreOutcome};
use tokio::sync::oneshot;

use crate::capacity::{Admission, BatchAdmission, Bounded, Restored};
use crate::clock::Clock;
use crate::config::{Durability, EngineConfig};
use crate::counters::{EngineCounters, Latencies, RecoverySummary};
use crate::error::EngineError;
use crate::index::{IndexConfig, IndexKind, IndexStats, VectorIndex};
use crate::pending::{PendingInner, PendingWrite, Queued};
use crate::persist::{self, About};
use crate::record::{self, Record};
use crate::search::{self, Found, Neighbour};
use crate::store::ConceptStore;

/// The concept type of the server's own events (`SUTRA_EVENTS`). The engine treats them as
/// bookkeeping, not data: they are stored and logged like any concept, but never counted
/// under `MAX_CONCEPTS` nor chosen for eviction, and their log bytes never make a timed
/// checkpoint due. Clients cannot store concepts of this type.
pub const EVENT_TYPE: &str = "sutra_event";

/// Widest graph search [`Engine::search_is_quick`] calls quick (some 0.1-0.5 ms at 256
/// dimensions; hnswlib's ef 512 reaches recall 0.999 on real text).
pub const QUICK_SEARCH_MAX_EF: usize = 512;

/// Most vectors a quick search compares exactly beside the graph (some 0.5 ms).
pub const QUICK_SEARCH_MAX_QUEUED: usize = 10_000;

/// Refuses a client's store of the events' type: only [`Engine::record_event`] writes it, so
/// nothing a client stores escapes `MAX_CONCEPTS`.
fn refuse_event_type(request: &StoreConcept) -> Result<(), EngineError> {
    if request.concept_type == EVENT_TYPE {
        return Err(EngineError::Invalid(format!(
            "type {EVENT_TYPE:?} is reserved for the server's own events (SUTRA_EVENTS)"
        )));
    }
    Ok(())
}

/// Applies one stored concept and describes the result.
fn outcome(store: &ConceptStore, concept: &Arc<Concept>, now_ms: u64) -> StoreOutcome {
    let created = store.upsert(concept, now_ms);
    StoreOutcome {
        created,
        created_at_ms: now_ms,
        expires_at_ms: concept.expires_at_ms,
    }
}

/// The concept store with its time source and, when persistent, its log.
pub struct Engine {
    store: Arc<ConceptStore>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    closed: AtomicBool,
    persistence: Option<Arc<persist::Persistence>>,
    bounded: Option<Bounded>,
    /// Concepts the reaper removed.
    expirations: Arc<AtomicU64>,
}

impl Engine {
    /// Opens the engine: for [`Durability::Persistent`] this locks the data directory, checks
    /// its manifest, loads the newest snapshot, replays the log and starts the checkpointer.
    /// Blocking; call it off the async runtime.
    pub fn open(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Engine, EngineError> {
        let index = match config.index.kind {
            IndexKind::Hnsw => Some(VectorIndex::start(
                &config.index,
                config.vector_dimension as usize,
            )?),
            IndexKind::Exact | IndexKind::None => None,
        };
        let store = Arc::new(ConceptStore::new(index));
        let persistence = match &config.durability {
            Durability::InMemory => None,
            Durability::Persistent(persist) => Some(persist::Persistence::open(
                persist,
                config.vector_dimension,
                Arc::clone(&store),
                Arc::clone(&clock),
            )?),
        };
        // Recovered: what the log replayed is final, so the graph takes only current vectors.
        if let Some(index) = store.index() {
            index.run();
        }
        let bounded = config.capacity.map(Bounded::new);
        let engine = Engine {
            store,
            clock,
            config,
            closed: AtomicBool::new(false),
            persistence,
            bounded,
            expirations: Arc::new(AtomicU64::new(0)),
        };
        engine.rebuild_recency()?;
        Ok(engine)
    }

    /// Fills the recency index from the recovered store, oldest first (reads are not
    /// logged), and evicts down to `MAX_CONCEPTS` if it was lowered since the last run.
    fn rebuild_recency(&self) -> Result<(), EngineError> {
        let Some(bounded) = &self.bounded else {
            return Ok(());
        };
        let now_ms = self.clock.now_ms();
        // Time 0: every concept, expired ones too (they count until the reaper removes them).
        let mut concepts = self.store.live_concepts(0);
        concepts.sort_by(|a, b| {
            (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str()))
        });
        let restored = bounded.lock().restore(
            concepts
                .iter()
                .filter(|concept| concept.concept_type != EVENT_TYPE)
                .map(|concept| (Arc::clone(concept.id.as_arc()), concept.expires_at_ms)),
        );
        let max_concepts = bounded.capacity().max_concepts;
        match restored {
            Restored::Within(victims) if victims.is_empty() => {}
            Restored::Within(victims) => {
                tracing::info!(
                    evicted = victims.len(),
                    max_concepts,
                    "evicting down to MAX_CONCEPTS after start-up"
                );
                // Serve only once the store is within the bound.
                for eviction in self.evict(victims, now_ms) {
                    eviction.wait_blocking()?;
                }
            }
            Restored::Over(concepts) => tracing::warn!(
                concepts,
                max_concepts,
                "the store holds more than MAX_CONCEPTS and EVICTION_POLICY is none: new ids are refused until enough are deleted"
            ),
        }
        Ok(())
    }

    /// Logs a Delete for each victim (the caller holds the recency lock, so they land in
    /// decision order); they share the group commit of the write that needed the room.
    /// Requests need not wait for the returned writes: the write behind them is acknowledged
    /// after them.
    fn evict(&self, victims: Vec<Arc<str>>, now_ms: u64) -> Vec<PendingWrite<()>> {
        let Some(bounded) = &self.bounded else {
            return Vec::new();
        };
        victims
            .into_iter()
            .filter_map(|victim| ConceptId::parse(&victim).ok())
            .map(|id| {
                let counter = Arc::clone(bounded.evictions());
                let record = Record::Delete(id.clone()).encode();
                self.commit(record, move |store| {
                    if store.remove(&id, now_ms) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect()
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.closed.load(Ordering::Acquire) {
            Err(EngineError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Logs `record` and, once it is durable, runs `apply` (on the thread that writes the
    /// batch, in log order). The record is queued; the returned write writes it when awaited
    /// or dropped.
    fn commit<T: Send + 'static>(
        &self,
        record: Result<Vec<u8>, sutra_protocol::EncodeError>,
        apply: impl FnOnce(&ConceptStore) -> T + Send + 'static,
    ) -> PendingWrite<T> {
        self.commit_as(record, About::Data, apply)
    }

    /// [`Engine::commit`], marking the server's own events for the checkpointer.
    fn commit_as<T: Send + 'static>(
        &self,
        record: Result<Vec<u8>, sutra_protocol::EncodeError>,
        about: About,
        apply: impl FnOnce(&ConceptStore) -> T + Send + 'static,
    ) -> PendingWrite<T> {
        let Some(persistence) = &self.persistence else {
            return PendingWrite::ready(Ok(apply(&self.store)));
        };
        let payload = match record {
            Ok(payload) => payload,
            Err(error) => {
                return PendingWrite::ready(Err(EngineError::Internal {
                    message: format!("encoding a log record: {error}"),
                }))
            }
        };
        let (sender, receiver) = oneshot::channel();
        let store = Arc::clone(&self.store);
        persistence.append(
            payload,
            Box::new(move |result| {
                let outcome = result
                    .map(|_| apply(&store))
                    .map_err(EngineError::from_append);
                let _ = sender.send(outcome);
            }),
            about,
        );
        PendingWrite(PendingInner::Waiting(
            receiver,
            Queued(Arc::clone(persistence)),
        ))
    }

    /// Inserts or replaces a concept; the server sets its creation time and expiry (absolute,
    /// so replay never extends it).
    pub fn store(&self, request: StoreConcept) -> Result<PendingWrite<StoreOutcome>, EngineError> {
        self.check_open()?;
        refuse_event_type(&request)?;
        let now_ms = self.clock.now_ms();
        let concept = self.build_concept(request, now_ms)?;
        let record = record::encode_put(&concept);
        let Some(bounded) = &self.bounded else {
            return Ok(self.commit(record, move |store| outcome(store, &concept, now_ms)));
        };
        // Held until the record is appended: decided and logged in one order.
        let mut recency = bounded.lock();
        match recency.admit(concept.id.as_arc(), concept.expires_at_ms) {
            Admission::Full => Err(EngineError::Full {
                max: bounded.capacity().max_concepts,
            }),
            Admission::Admit(victims) => {
                drop(self.evict(victims, now_ms));
                Ok(self.commit(record, move |store| outcome(store, &concept, now_ms)))
            }
        }
    }

    /// Stores one of the server's own events (type [`EVENT_TYPE`]): logged and durable like a
    /// store, but outside `MAX_CONCEPTS` (it neither takes room nor evicts a user's concept)
    /// and not a reason for a timed checkpoint. Events are few (at most one per
    /// `SUTRA_EVENTS_INTERVAL_SECS` and kind) and expire by their TTL.
    pub fn record_event(
        &self,
        mut request: StoreConcept,
    ) -> Result<PendingWrite<StoreOutcome>, EngineError> {
        self.check_open()?;
        request.concept_type = EVENT_TYPE.to_owned();
        let now_ms = self.clock.now_ms();
        let concept = self.build_concept(request, now_ms)?;
        let record = record::encode_put(&concept);
        Ok(self.commit_as(record, About::Events, move |store| {
            outcome(store, &concept, now_ms)
        }))
    }

    /// Stores several concepts as one log record: after a crash all of them are there or
    /// none. Later items win over earlier ones with the same id.
    pub fn store_many(
        &self,
        requests: Vec<StoreConcept>,
    ) -> Result<PendingWrite<Vec<StoreOutcome>>, EngineError> {
        self.check_open()?;
        for request in &requests {
            refuse_event_type(request)?;
        }
        let now_ms = self.clock.now_ms();
        let concepts = requests
            .into_iter()
            .map(|request| self.build_concept(request, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<(Arc<str>, Option<u64>)> = concepts
            .iter()
            .map(|concept| (Arc::clone(concept.id.as_arc()), concept.expires_at_ms))
            .collect();
        let record = record::encode_batch(&concepts);
        let apply = move |store: &ConceptStore| {
            concepts
                .iter()
                .map(|concept| outcome(store, concept, now_ms))
                .collect()
        };
        let Some(bounded) = &self.bounded else {
            return Ok(self.commit(record, apply));
        };
        let max = bounded.capacity().max_concepts;
        let mut recency = bounded.lock();
        let victims = match recency.admit_batch(&ids) {
            BatchAdmission::Admit(victims) => victims,
            BatchAdmission::TooMany { distinct } => {
                return Err(EngineError::Invalid(format!(
                    "the batch has {distinct} distinct ids, more than MAX_CONCEPTS ({max})"
                )))
            }
            BatchAdmission::Full => return Err(EngineError::Full { max }),
        };
        drop(self.evict(victims, now_ms));
        Ok(self.commit(record, apply))
    }

    /// Removes every concept of a type; resolves to the number of live concepts removed.
    pub fn clear_type(&self, concept_type: String) -> Result<PendingWrite<u64>, EngineError> {
        self.check_open()?;
        let now_ms = self.clock.now_ms();
        let record = Record::ClearType(concept_type.clone()).encode();
        let _recency = self.bounded.as_ref().map(|bounded| {
            let mut recency = bounded.lock();
            recency.forget_all(self.store.ids_of_type(&concept_type));
            recency
        });
        Ok(self.commit(record, move |store| store.clear_type(&concept_type, now_ms)))
    }

    /// The live concepts with these ids, in order (`None` for a missing or expired id).
    pub fn get_many(&self, ids: &[ConceptId]) -> Vec<Option<Arc<Concept>>> {
        let now_ms = self.clock.now_ms();
        let found: Vec<_> = ids.iter().map(|id| self.store.get(id, now_ms)).collect();
        if let Some(bounded) = &self.bounded {
            let mut recency = bounded.lock();
            for concept in found.iter().flatten() {
                recency.touch(concept.id.as_str());
            }
        }
        found
    }

    /// The concept a store request creates: server times, absolute expiry, and (with mapped
    /// vector segments) the vector copied into a fresh slot, so that a full disk fails the
    /// request here and not after the log has accepted it.
    fn build_concept(
        &self,
        request: StoreConcept,
        now_ms: u64,
    ) -> Result<Arc<Concept>, EngineError> {
        let ttl = match request.ttl_seconds {
            None => self.config.default_ttl,
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(seconds)),
        };
        let expires_at_ms = ttl
            .map(|ttl| now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
        let vectors = self
            .persistence
            .as_ref()
            .and_then(|persistence| persistence.vectors.as_ref());
        let embedding = match (vectors, request.embedding) {
            (Some(vectors), Some(embedding)) => Some(vectors.store(embedding.as_slice())?),
            (_, embedding) => embedding,
        };
        Ok(Arc::new(Concept {
            id: request.id,
            content: request.content,
            concept_type: request.concept_type,
            model: request.model,
            attributes: request.attributes,
            embedding,
            created_at_ms: now_ms,
            expires_at_ms,
        }))
    }

    /// The live concept with this id.
    pub fn get(&self, id: &ConceptId) -> Result<Arc<Concept>, EngineError> {
        let concept = self
            .store
            .get(id, self.clock.now_ms())
            .ok_or_else(|| EngineError::NotFound { id: id.clone() })?;
        if let Some(bounded) = &self.bounded {
            bounded.touch(id.as_str());
        }
        Ok(concept)
    }

    /// The `k` live concepts with an embedding most similar (cosine) to `query`, of
    /// `concept_type` unless it is empty: best first, ties by id; exact (every vector is
    /// compared). The query must have `VECTOR_DIMENSION` values (the protocol checks).
    pub fn search_exact(&self, query: &[f32], k: usize, concept_type: &str) -> Vec<Neighbour> {
        search::exact(&self.store, query, k, concept_type, self.clock.now_ms())
    }

    /// The `k` live concepts with an embedding most similar (cosine) to `query`, of
    /// `concept_type` unless it is empty: best first, ties by id. Exact when asked, when
    /// `VECTOR_INDEX=exact`, or when the vectors searched (all, or the type's) are fewer than
    /// `SEARCH_EXACT_BELOW`; otherwise through the index, with search breadth `ef` (0: the
    /// default `HNSW_EF_SEARCH`). Refused with `VECTOR_INDEX=none`.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        concept_type: &str,
        exact: bool,
        ef: usize,
    ) -> Result<Found, EngineError> {
        let settings = &self.config.index;
        if settings.kind == IndexKind::None {
            return Err(EngineError::Invalid(
                "search is off on this server (VECTOR_INDEX=none, a cache shard's default); start it with VECTOR_INDEX=exact or hnsw".to_owned(),
            ));
        }
        if ef > IndexConfig::MAX_EF {
            return Err(EngineError::Invalid(format!(
                "ef {ef} is over the limit of {}",
                IndexConfig::MAX_EF
            )));
        }
        let now_ms = self.clock.now_ms();
        let ef = self.breadth(ef);
        Ok(match self.graph_for(concept_type, exact, ef) {
            Some(index) => Found {
                neighbours: search::approximate(
                    &self.store,
                    index,
                    query,
                    k,
                    ef,
                    concept_type,
                    now_ms,
                ),
                exact: false,
            },
            None => Found {
                neighbours: search::exact(&self.store, query, k, concept_type, now_ms),
                exact: true,
            },
        })
    }

    /// A search's breadth: `ef`, or `HNSW_EF_SEARCH` for 0.
    fn breadth(&self, ef: usize) -> usize {
        if ef == 0 {
            self.config.index.ef_search
        } else {
            ef
        }
    }

    /// The index, when a search with these settings (`ef` resolved) walks its graph.
    fn graph_for(&self, concept_type: &str, exact: bool, ef: usize) -> Option<&Arc<VectorIndex>> {
        self.store
            .index()
            .filter(|index| !exact && self.graph_pays(index.len(), concept_type, ef))
    }

    /// Whether [`Engine::search`] with these arguments takes well under a millisecond: a walk
    /// of the graph no wider than [`QUICK_SEARCH_MAX_EF`], with at most
    /// [`QUICK_SEARCH_MAX_QUEUED`] vectors compared exactly beside it (those the graph has not
    /// taken in yet). A server runs such searches where the request arrived, and the others
    /// (scans) on threads of their own. A guess: the answer may change before the search runs.
    pub fn search_is_quick(&self, concept_type: &str, exact: bool, ef: usize) -> bool {
        let ef = self.breadth(ef);
        ef <= QUICK_SEARCH_MAX_EF
            && self
                .graph_for(concept_type, exact, ef)
                .is_some_and(|index| index.queued() <= QUICK_SEARCH_MAX_QUEUED)
    }

    /// Whether the graph beats comparing every vector searched: `stored` vectors in all, those
    /// of `concept_type` when it is not empty. Below `SEARCH_EXACT_BELOW` the scan is cheap
    /// (0 always takes the graph: for measurements). A filter keeping a share `s` of the
    /// vectors makes a graph walk visit about 4·M·ef/s nodes (it passes over the others), each
    /// about 1.5 times the cost of a scanned vector, while the scan costs one comparison per
    /// vector of the type: the graph pays when type² ≥ 6·M·ef·stored. Unfiltered, that is
    /// stored ≥ 6·M·ef (6,144 at the defaults).
    fn graph_pays(&self, stored: usize, concept_type: &str, ef: usize) -> bool {
        let settings = &self.config.index;
        if settings.exact_below == 0 {
            return true;
        }
        let searched = if concept_type.is_empty() {
            stored
        } else {
            self.store.type_len(concept_type)
        };
        let (searched, stored) = (searched as u128, stored as u128);
        searched >= settings.exact_below as u128
            && searched * searched >= 6 * settings.m as u128 * ef.max(1) as u128 * stored
    }

    /// The vector index's figures; `None` without one (`VECTOR_INDEX` exact or none).
    pub fn index_stats(&self) -> Option<IndexStats> {
        self.store.index().map(|index| index.stats())
    }

    /// Stored vectors the index has not taken in yet (cheap: no walk of the graph); `None`
    /// without an index.
    pub fn index_pending(&self) -> Option<u64> {
        self.store.index().map(|index| index.pending())
    }

    /// `VECTOR_INDEX`.
    pub fn index_kind(&self) -> IndexKind {
        self.config.index.kind
    }

    /// One page of live concepts of a type, in ascending id order after the cursor.
    pub fn query_by_type(&self, query: &QueryByType) -> QueryPage {
        self.store
            .query_by_type(query, self.config.max_page_bytes, self.clock.now_ms())
    }

    /// Removes a concept; resolves to `false` when there was none.
    pub fn delete(&self, id: &ConceptId) -> Result<PendingWrite<bool>, EngineError> {
        self.check_open()?;
        let now_ms = self.clock.now_ms();
        let id = id.clone();
        let record = Record::Delete(id.clone()).encode();
        let _recency = self.bounded.as_ref().map(|bounded| {
            let mut recency = bounded.lock();
            recency.forget(id.as_str());
            recency
        });
        Ok(self.commit(record, move |store| store.remove(&id, now_ms)))
    }

    /// One step of the TTL reaper: logs an Expire for up to `max` concepts whose expiry is
    /// due, earliest first, and returns how many it logged (`max` means more may be due).
    ///
    /// Redis's active expire cycle samples random keys with a TTL and repeats while a
    /// quarter of a sample was expired, within a time budget. An index ordered by expiry time
    /// finds exactly the due concepts instead (O(log n) per store with a TTL); the bounded
    /// work per step and the time budget per cycle (`crate::reaper`) are the same idea.
    pub fn reap_expired(&self, max: usize) -> usize {
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        let now_ms = self.clock.now_ms();
        let due = self.store.take_due(now_ms, max);
        if due.is_empty() {
            return 0;
        }
        let mut recency = self.bounded.as_ref().map(Bounded::lock);
        let mut logged = 0;
        for (_, key) in due {
            let Ok(id) = ConceptId::parse(&key) else {
                continue;
            };
            // Events are outside the recency index and outside the `expirations` count (an
            // event about expired events would be a loop).
            let event = self
                .store
                .get(&id, 0)
                .is_some_and(|concept| concept.concept_type == EVENT_TYPE);
            if let Some(recency) = recency.as_mut().filter(|_| !event) {
                if !recency.expire_if_due(&key, now_ms) {
                    continue;
                }
            }
            let counter = Arc::clone(&self.expirations);
            let record = Record::Expire {
                id: id.clone(),
                at_ms: now_ms,
            }
            .encode();
            let about = if event { About::Events } else { About::Data };
            let _ = self.commit_as(record, about, move |store| {
                if store.expire(&id, now_ms) && !event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
            logged += 1;
        }
        logged
    }

    /// `DEFAULT_TTL_SECONDS`, if any.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.config.default_ttl
    }

    /// Whether writes are accepted (false after a log failure, until restart).
    pub fn is_writable(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self
                .persistence
                .as_ref()
                .is_none_or(|persistence| !persistence.is_poisoned())
    }

    /// Sizes for statistics.
    pub fn counters(&self) -> EngineCounters {
        let (concepts, bytes_used) = self.store.counters();
        let mut counters = EngineCounters {
            concepts,
            bytes_used,
            ..EngineCounters::default()
        };
        if let Some(bounded) = &self.bounded {
            counters.max_concepts = bounded.capacity().max_concepts;
            counters.evictions = bounded.evicted();
        }
        counters.expirations = self.expirations.load(Ordering::Relaxed);
        if let Some(persistence) = &self.persistence {
            counters.persistent = true;
            persistence.fill_counters(&mut counters);
        }
        counters
    }

    /// What start-up recovered; `None` in memory.
    pub fn recovery(&self) -> Option<RecoverySummary> {
        self.persistence
            .as_ref()
            .map(|persistence| persistence.recovered)
    }

    /// Durations of log `fdatasync`s and of checkpoints; `None` in memory.
    pub fn latencies(&self) -> Option<Latencies> {
        self.persistence.as_ref().map(|persistence| {
            let (wal_sync, checkpoint) = persistence.latencies();
            Latencies {
                wal_sync: wal_sync.unwrap_or_default(),
                checkpoint,
            }
        })
    }

    /// Writes a checkpoint now (a no-op in memory).
    pub fn checkpoint(&self) -> Result<(), EngineError> {
        match &self.persistence {
            Some(persistence) => persistence.checkpoint(),
            None => Ok(()),
        }
    }

    /// Stops accepting writes, writes a final checkpoint, syncs and closes the log. Reads still
    /// succeed so that in-flight sessions can finish.
    pub fn shutdown(&self) -> Result<(), EngineError> {
        self.closed.store(true, Ordering::Release);
        #[cfg(debug_assertions)]
        self.store.check_invariants();
        match &self.persistence {
            Some(persistence) => persistence.shutdown(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
