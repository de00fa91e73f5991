//! The concept engine: the only code that changes stored state.
//!
//! Writes go through the write-ahead log (`sutra-wal`): the engine encodes a [`Record`],
//! appends it, and applies it to the in-memory store *inside the log's acknowledgement*, on
//! the WAL thread, in LSN order. So memory changes in exactly the order of the log, a write
//! is visible to readers only once it is durable under the fsync policy, and replaying the
//! log rebuilds the same state. Reads never touch the log.
//!
//! Checkpoints ([`persist`]) snapshot every live concept at a consistent LSN (taken on the
//! WAL thread between batches) and delete the log segments the snapshot covers. Start-up
//! loads the newest snapshot, then replays the log after it.
//!
//! An engine can also run without a data directory ([`Durability::InMemory`]), applying
//! writes at once; unit tests use that.
//!
//! The engine logs nothing on the request path; errors are logged once, by the session that
//! reports them. Recovery and checkpoints log at `info`, failures at `warn`/`error`.

mod capacity;
mod clock;
mod datadir;
mod mmap;
mod persist;
mod record;
mod snapshot;
mod store;
mod vectors;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sutra_protocol::{
    Concept, ConceptId, ErrorCode, QueryByType, QueryPage, StoreConcept, StoreOutcome,
};
use sutra_wal::WalError;
use tokio::sync::oneshot;

use capacity::{Admission, Bounded};
pub use capacity::{Capacity, EvictionPolicy};
pub use clock::{Clock, ManualClock, SystemClock};
pub use persist::CheckpointConfig;
use record::Record;
use store::ConceptStore;
/// The log's settings and latency figures, for the engine's users (the server configures and
/// reports them without depending on the log crate).
pub use sutra_wal::{FsyncPolicy, Latency, LatencySnapshot, WalConfig};

/// The concept type of the server's own events (`SUTRA_EVENTS`). The engine treats them as
/// bookkeeping, not data: they are stored and logged like any concept, but never counted
/// under `MAX_CONCEPTS` nor chosen for eviction, and their log bytes never make a timed
/// checkpoint due. Clients cannot store concepts of this type.
pub const EVENT_TYPE: &str = "sutra_event";

/// What start-up recovered from the data directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Concepts loaded from the newest snapshot.
    pub snapshot_concepts: u64,
    /// Log records replayed after it.
    pub replayed_records: u64,
    /// Bytes of a torn log tail dropped.
    pub dropped_tail_bytes: u64,
    /// Concepts held after recovery.
    pub concepts: u64,
    /// Time recovery took.
    pub elapsed: Duration,
}

/// Durations the engine times, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latencies {
    /// Each `fdatasync` of a log segment.
    pub wal_sync: LatencySnapshot,
    /// Each checkpoint, from the cut to the deleted segments.
    pub checkpoint: LatencySnapshot,
}

/// Where writes go.
#[derive(Debug, Clone)]
pub enum Durability {
    /// Nowhere: memory only, lost at exit.
    InMemory,
    /// A data directory with a write-ahead log and checkpoints.
    Persistent {
        /// `STORAGE_PATH`.
        data_dir: PathBuf,
        /// The log's settings.
        wal: WalConfig,
        /// When to checkpoint.
        checkpoint: CheckpointConfig,
        /// Keep vectors in memory-mapped segment files instead of on the heap.
        mmap_vectors: bool,
    },
}

/// Settings the engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// TTL for stores that carry none; `None` keeps them forever.
    pub default_ttl: Option<Duration>,
    /// Largest encoded size of one `QueryByType` page, so a page always fits one frame.
    pub max_page_bytes: usize,
    /// `VECTOR_DIMENSION`, recorded in the data directory.
    pub vector_dimension: u32,
    /// Where writes go.
    pub durability: Durability,
    /// `MAX_CONCEPTS` and `EVICTION_POLICY`; `None` keeps everything.
    pub capacity: Option<Capacity>,
}

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Too many writes are waiting for the log.
    #[error("too many writes in flight; retry later")]
    Overloaded,
    /// The store holds `MAX_CONCEPTS` and `EVICTION_POLICY` is `none`.
    #[error("the store is full: it holds MAX_CONCEPTS ({max}) concepts and EVICTION_POLICY is none; delete concepts, raise MAX_CONCEPTS or use EVICTION_POLICY=lru")]
    Full {
        /// `MAX_CONCEPTS`.
        max: u64,
    },
    /// A request is invalid for this store (not for the wire format).
    #[error("{0}")]
    Invalid(String),
    /// The write could not be made durable; it was not applied.
    #[error("the write could not be made durable and was not applied: {0}")]
    Storage(WalError),
    /// Recovery or the log failed at start-up.
    #[error("{0}")]
    Wal(WalError),
    /// A file operation failed.
    #[error("{op} {path}: {message}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// Another server holds the data directory.
    #[error("data directory {path} is in use by another sutra-storage process (its LOCK file is locked); stop that server or choose another STORAGE_PATH")]
    Locked {
        /// The directory.
        path: String,
    },
    /// The data directory cannot be used by this server.
    #[error("cannot use data directory {path}: {reason}")]
    BadDataDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A bug.
    #[error("internal error: {message}")]
    Internal {
        /// Details for the log.
        message: String,
    },
}

impl EngineError {
    /// The one place engine errors map to wire codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::NotFound { .. } => ErrorCode::NotFound,
            EngineError::ShuttingDown | EngineError::Overloaded => ErrorCode::Busy,
            EngineError::Full { .. } => ErrorCode::Full,
            EngineError::Invalid(_) => ErrorCode::InvalidArgument,
            EngineError::Storage(_) => ErrorCode::StorageUnavailable,
            EngineError::Wal(_)
            | EngineError::Io { .. }
            | EngineError::Locked { .. }
            | EngineError::BadDataDir { .. }
            | EngineError::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// The message a client may see (internal details stay in the log).
    pub fn client_message(&self) -> String {
        match self {
            EngineError::Storage(error) if error.is_disk_full() => {
                "the disk is full: the write was not stored; retry when space is available"
                    .to_owned()
            }
            EngineError::Storage(WalError::Poisoned) => {
                "the server's write-ahead log failed earlier; writes are refused until it restarts"
                    .to_owned()
            }
            EngineError::Storage(_) => {
                "the write could not be made durable and was not stored; see the server log"
                    .to_owned()
            }
            EngineError::NotFound { .. }
            | EngineError::ShuttingDown
            | EngineError::Overloaded
            | EngineError::Full { .. }
            | EngineError::Invalid(_) => self.to_string(),
            _ => "internal error; see the server log".to_owned(),
        }
    }

    /// Whether this is a write refused because the log failed earlier and the store is
    /// read-only until a restart (reported once, when the log failed).
    pub fn is_read_only(&self) -> bool {
        matches!(self, EngineError::Storage(WalError::Poisoned))
    }

    fn from_append(error: WalError) -> EngineError {
        match error {
            WalError::QueueFull => EngineError::Overloaded,
            WalError::Closed => EngineError::ShuttingDown,
            other => EngineError::Storage(other),
        }
    }
}

/// Sizes and counters for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Live concepts (including expired ones not yet removed).
    pub concepts: u64,
    /// Encoded bytes of those concepts.
    pub bytes_used: u64,
    /// Log records written.
    pub wal_appends: u64,
    /// Log batches written.
    pub wal_batches: u64,
    /// Log `fdatasync` calls.
    pub wal_syncs: u64,
    /// Log segment files.
    pub wal_segments: u64,
    /// Checkpoints completed since start.
    pub checkpoints: u64,
    /// LSN of the newest checkpoint.
    pub checkpoint_lsn: u64,
    /// Whether writes go to a data directory.
    pub persistent: bool,
    /// Vector slots holding a vector (`MMAP_ENABLED`).
    pub vector_slots_used: u64,
    /// Vector slots allocated on disk.
    pub vector_slots_allocated: u64,
    /// `MAX_CONCEPTS`; 0 when unbounded.
    pub max_concepts: u64,
    /// Concepts evicted to stay within `MAX_CONCEPTS`.
    pub evictions: u64,
    /// Expired concepts removed by the reaper.
    pub expirations: u64,
}

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

/// A write that completes when the log acknowledges it.
#[must_use = "a write is only known to be durable once awaited"]
pub struct PendingWrite<T>(PendingInner<T>);

enum PendingInner<T> {
    Ready(Result<T, EngineError>),
    Waiting(oneshot::Receiver<Result<T, EngineError>>),
}

impl<T> PendingWrite<T> {
    fn ready(result: Result<T, EngineError>) -> PendingWrite<T> {
        PendingWrite(PendingInner::Ready(result))
    }

    /// Waits for durability (or failure).
    pub async fn wait(self) -> Result<T, EngineError> {
        match self.0 {
            PendingInner::Ready(result) => result,
            PendingInner::Waiting(receiver) => {
                receiver.await.unwrap_or(Err(EngineError::ShuttingDown))
            }
        }
    }

    /// Waits from synchronous code (not from an async task).
    pub fn wait_blocking(self) -> Result<T, EngineError> {
        match self.0 {
            PendingInner::Ready(result) => result,
            PendingInner::Waiting(receiver) => receiver
                .blocking_recv()
                .unwrap_or(Err(EngineError::ShuttingDown)),
        }
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
        let store = Arc::new(ConceptStore::new());
        let persistence = match &config.durability {
            Durability::InMemory => None,
            Durability::Persistent {
                data_dir,
                wal,
                checkpoint,
                mmap_vectors,
            } => Some(persist::Persistence::open(
                data_dir,
                wal,
                checkpoint.clone(),
                config.vector_dimension,
                *mmap_vectors,
                Arc::clone(&store),
                Arc::clone(&clock),
            )?),
        };
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
        let mut index = bounded.lock();
        for concept in concepts.iter().filter(|c| c.concept_type != EVENT_TYPE) {
            index.put(Arc::clone(concept.id.as_arc()), concept.expires_at_ms);
        }
        let max = usize::try_from(bounded.capacity().max_concepts).unwrap_or(usize::MAX);
        if index.len() > max {
            if bounded.capacity().policy == EvictionPolicy::Lru {
                let mut victims = Vec::new();
                while index.len() > max {
                    match index.pop_lru() {
                        Some((victim, _)) => victims.push(victim),
                        None => break,
                    }
                }
                tracing::info!(
                    evicted = victims.len(),
                    max_concepts = max,
                    "evicting down to MAX_CONCEPTS after start-up"
                );
                drop(index);
                // Serve only once the store is within the bound.
                for eviction in self.evict(victims, now_ms) {
                    eviction.wait_blocking()?;
                }
            } else {
                tracing::warn!(
                    concepts = index.len(),
                    max_concepts = max,
                    "the store holds more than MAX_CONCEPTS and EVICTION_POLICY is none: new ids are refused until enough are deleted"
                );
            }
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

    /// Logs `record` and, once it is durable, runs `apply` (on the WAL thread, in log order).
    fn commit<T: Send + 'static>(
        &self,
        record: Result<Vec<u8>, sutra_protocol::EncodeError>,
        apply: impl FnOnce(&ConceptStore) -> T + Send + 'static,
    ) -> PendingWrite<T> {
        self.commit_as(record, false, apply)
    }

    /// [`Engine::commit`], marking the server's own events for the checkpointer.
    fn commit_as<T: Send + 'static>(
        &self,
        record: Result<Vec<u8>, sutra_protocol::EncodeError>,
        event: bool,
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
            event,
        );
        PendingWrite(PendingInner::Waiting(receiver))
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
        let mut index = bounded.lock();
        match bounded.admit(&mut index, concept.id.as_arc(), concept.expires_at_ms) {
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
        Ok(self.commit_as(record, true, move |store| outcome(store, &concept, now_ms)))
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
        let capacity = bounded.capacity();
        let mut index = bounded.lock();
        // Every distinct id of the batch is held afterwards, so they must all fit.
        let mut distinct: Vec<&Arc<str>> = ids.iter().map(|(id, _)| id).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() as u64 > capacity.max_concepts {
            return Err(EngineError::Invalid(format!(
                "the batch has {} distinct ids, more than MAX_CONCEPTS ({})",
                distinct.len(),
                capacity.max_concepts
            )));
        }
        let new_ids = distinct
            .iter()
            .filter(|id| !index.contains(&****id))
            .count() as u64;
        let room = capacity.max_concepts.saturating_sub(index.len() as u64);
        if capacity.policy == EvictionPolicy::None && new_ids > room {
            return Err(EngineError::Full {
                max: capacity.max_concepts,
            });
        }
        // The batch's held ids become the most recent first, so the evictions below never
        // pick an id of this batch: its Delete would be logged before the batch record, and
        // the id would come back untracked by the recency index, over MAX_CONCEPTS (found by
        // the engine fuzz target).
        for id in &distinct {
            index.promote(&***id);
        }
        let mut victims = Vec::new();
        for (id, expires_at_ms) in &ids {
            if let Admission::Admit(mut evicted) = bounded.admit(&mut index, id, *expires_at_ms) {
                victims.append(&mut evicted);
            }
        }
        drop(self.evict(victims, now_ms));
        Ok(self.commit(record, apply))
    }

    /// Removes every concept of a type; resolves to the number of live concepts removed.
    pub fn clear_type(&self, concept_type: String) -> Result<PendingWrite<u64>, EngineError> {
        self.check_open()?;
        let now_ms = self.clock.now_ms();
        let record = Record::ClearType(concept_type.clone()).encode();
        let _index = self.bounded.as_ref().map(|bounded| {
            let mut index = bounded.lock();
            for id in self.store.ids_of_type(&concept_type) {
                index.pop(&*id);
            }
            index
        });
        Ok(self.commit(record, move |store| store.clear_type(&concept_type, now_ms)))
    }

    /// The live concepts with these ids, in order (`None` for a missing or expired id).
    pub fn get_many(&self, ids: &[ConceptId]) -> Vec<Option<Arc<Concept>>> {
        let now_ms = self.clock.now_ms();
        let found: Vec<_> = ids.iter().map(|id| self.store.get(id, now_ms)).collect();
        if let Some(bounded) = &self.bounded {
            let mut index = bounded.lock();
            for concept in found.iter().flatten() {
                index.promote(concept.id.as_str());
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
        let _index = self.bounded.as_ref().map(|bounded| {
            let mut index = bounded.lock();
            index.pop(id.as_str());
            index
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
        let mut index = self.bounded.as_ref().map(Bounded::lock);
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
            if let Some(index) = index.as_mut().filter(|_| !event) {
                // Only if the newest store decided for the id is the expired one; a newer one
                // in the log queue keeps it (its own entry is indexed when it is applied).
                match index.peek(&*key) {
                    Some(Some(expires_at_ms)) if *expires_at_ms <= now_ms => {
                        index.pop(&*key);
                    }
                    _ => continue,
                }
            }
            let counter = Arc::clone(&self.expirations);
            let record = Record::Expire {
                id: id.clone(),
                at_ms: now_ms,
            }
            .encode();
            let _ = self.commit_as(record, event, move |store| {
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
mod tests;
