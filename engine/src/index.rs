//! The vector index: an HNSW graph ([`crate::hnsw`]) over every stored vector, kept up to
//! date behind the writes.
//!
//! # Writes never wait for the graph
//!
//! Putting a vector into an HNSW graph costs hundreds of microseconds (an `ef_construction`
//! search per layer), ten times a durable store. So the store only queues it: every stored
//! vector gets a *key*, and the key waits in `pending` until one of the indexer threads adds it
//! to the graph. A search asks the graph and compares the query with every pending vector
//! exactly, so a vector is found from the moment its store is acknowledged.
//!
//! # Keys
//!
//! A key is `type tag << 40 | sequence`: a new one for every stored vector, so an overwrite is
//! "forget the old key, queue a new one" and a stale graph entry can never be mistaken for the
//! current vector of its id. The type tag (one per concept type ever seen) lets a filtered
//! search test a graph node's type with a shift, without a lookup.
//!
//! # Correct under change
//!
//! The store calls [`VectorIndex::put`] and [`VectorIndex::forget`] under the concept's shard
//! lock, so the index follows each id's writes in order. Forgotten keys leave the graph at
//! once (the graph marks the node deleted); a key forgotten while an indexer thread is adding
//! it is deleted by that thread when it finishes. On top of that, the caller
//! checks every candidate against the store (live, of the type, current vector) and scores it
//! from the stored vector, so a result is never a deleted, expired or overwritten-away vector.
//!
//! # Locks
//!
//! `state` is held for map updates only, never across a graph operation; the graph has its
//! own fine-grained locks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use crate::error::EngineError;
use crate::hnsw::{Any, Hnsw};
use crate::similarity::{dot, unit};
use hashbrown::HashMap;
use sutra_protocol::Concept;

/// How searches are answered (`VECTOR_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexKind {
    /// An HNSW graph; a search compares the query with a few thousand vectors.
    #[default]
    Hnsw,
    /// No index: every search compares the query with every stored vector.
    Exact,
    /// No search at all (a cache shard's default: nothing to pay for).
    None,
}

/// The index's settings.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// `VECTOR_INDEX`.
    pub kind: IndexKind,
    /// `HNSW_M`: links per node and layer (the graph's memory and recall grow with it).
    pub m: usize,
    /// `HNSW_EF_CONSTRUCTION`: the candidate list while a vector is added.
    pub ef_construction: usize,
    /// `HNSW_EF_SEARCH`: the candidate list of a search that names no `ef` (at least `k`).
    pub ef_search: usize,
    /// `SEARCH_EXACT_BELOW`: a search over fewer vectors than this (all of them, or the type
    /// filtered on) compares every one instead (faster there, and exact).
    pub exact_below: usize,
    /// `HNSW_THREADS`: threads adding queued vectors to the graph.
    pub threads: usize,
}

impl IndexConfig {
    /// Default `HNSW_M`.
    pub const DEFAULT_M: usize = 16;
    /// Default `HNSW_EF_CONSTRUCTION`.
    pub const DEFAULT_EF_CONSTRUCTION: usize = 128;
    /// Default `HNSW_EF_SEARCH`.
    pub const DEFAULT_EF_SEARCH: usize = 64;
    /// Default `SEARCH_EXACT_BELOW`.
    pub const DEFAULT_EXACT_BELOW: usize = 10_000;
    /// Largest `ef` a search may ask for (and `HNSW_EF_SEARCH`, `HNSW_EF_CONSTRUCTION`).
    pub const MAX_EF: usize = 10_000;
    /// Largest `HNSW_M`.
    pub const MAX_M: usize = 128;

    /// The defaults, with `kind`.
    pub fn new(kind: IndexKind) -> IndexConfig {
        IndexConfig {
            kind,
            m: Self::DEFAULT_M,
            ef_construction: Self::DEFAULT_EF_CONSTRUCTION,
            ef_search: Self::DEFAULT_EF_SEARCH,
            exact_below: Self::DEFAULT_EXACT_BELOW,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Checks the ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.m < 2 || self.m > Self::MAX_M {
            return Err(format!("HNSW_M must be 2 to {}", Self::MAX_M));
        }
        if self.ef_construction == 0 || self.ef_construction > Self::MAX_EF {
            return Err(format!(
                "HNSW_EF_CONSTRUCTION must be 1 to {}",
                Self::MAX_EF
            ));
        }
        if self.ef_search == 0 || self.ef_search > Self::MAX_EF {
            return Err(format!("HNSW_EF_SEARCH must be 1 to {}", Self::MAX_EF));
        }
        if self.threads == 0 || self.threads > 256 {
            return Err("HNSW_THREADS must be 1 to 256".to_owned());
        }
        Ok(())
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig::new(IndexKind::Hnsw)
    }
}

/// Bits of a key holding the sequence number; the type tag sits above them.
const SEQUENCE_BITS: u32 = 40;
const SEQUENCE_MASK: u64 = (1 << SEQUENCE_BITS) - 1;
/// Most distinct types the graph tells apart (24 bits); later types share the last tag and
/// are told apart by the store.
const MAX_TAG: u64 = (1 << (64 - SEQUENCE_BITS)) - 1;

/// Vectors an indexer thread takes from the queue at once.
const BATCH: usize = 64;
/// How long an idle indexer thread sleeps before it checks whether the index still exists.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Index figures for `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Vectors in the graph.
    pub indexed: u64,
    /// Vectors waiting for an indexer thread (searched exactly meanwhile).
    pub pending: u64,
    /// Memory the graph holds (its links and its copy of the vectors), in bytes.
    pub memory_bytes: u64,
}

/// A vector waiting for the graph: a copy, so that the concept (and its vector slot) is freed
/// as soon as it is deleted, not when the indexer gets to it.
#[derive(Clone)]
struct Queued {
    id: Arc<str>,
    /// Unit length; `None` for a zero vector (similar to nothing, never a result).
    vector: Option<Arc<[f32]>>,
}

/// What the index knows of the stored vectors.
#[derive(Default)]
struct State {
    next_sequence: u64,
    tags: HashMap<Box<str>, u64>,
    /// The current key of each id with a vector.
    key_of: HashMap<Arc<str>, u64>,
    /// The id of each current key (in the graph, queued or being added).
    id_of: HashMap<u64, Arc<str>>,
    /// Keys no indexer thread has taken yet, oldest first.
    pending: BTreeMap<u64, Queued>,
    /// Keys an indexer thread is adding now (still searched exactly).
    adding: HashMap<u64, Queued>,
    /// The graph node of each current key in the graph.
    node_of: HashMap<u64, u32>,
    /// Vectors the graph could not take (it is full): searched exactly, like the queue.
    overflow: HashMap<u64, Queued>,
    /// Whether the indexer threads take queued vectors: not while start-up replays the log,
    /// whose overwrites and deletes would otherwise put vectors in the graph only to leave
    /// them there as tombstones (searched exactly from the queue meanwhile).
    running: bool,
}

impl State {
    fn tag(&mut self, concept_type: &str) -> u64 {
        if let Some(tag) = self.tags.get(concept_type) {
            return *tag;
        }
        let tag = (self.tags.len() as u64).min(MAX_TAG);
        self.tags.insert(concept_type.into(), tag);
        tag
    }

    /// Forgets `key`; returns its graph node if it has one.
    fn drop_key(&mut self, key: u64) -> Option<u32> {
        self.id_of.remove(&key);
        self.pending.remove(&key);
        self.adding.remove(&key);
        self.overflow.remove(&key);
        self.node_of.remove(&key)
    }
}

/// The HNSW graph and its queue.
pub(crate) struct VectorIndex {
    graph: Hnsw,
    state: Mutex<State>,
    work: Condvar,
    dimension: usize,
    /// `key_of.len()`, published with every change, so a search need not lock to read it.
    stored: AtomicUsize,
    /// Vectors searched exactly (queued, being added, overflow), published likewise after
    /// each change: a search that reads 0 skips the queue without taking the lock. A vector
    /// leaves the count only once the graph holds it, so nothing is missed in between.
    queued: AtomicUsize,
}

impl VectorIndex {
    /// An empty graph for `dimension`-value vectors, with its indexer threads started (they
    /// take vectors once [`VectorIndex::run`] is called, and stop within [`IDLE_WAIT`] of the
    /// index being dropped).
    pub(crate) fn start(
        config: &IndexConfig,
        dimension: usize,
    ) -> Result<Arc<VectorIndex>, EngineError> {
        config.validate().map_err(EngineError::Invalid)?;
        let index = Arc::new(VectorIndex {
            graph: Hnsw::new(dimension, config.m, config.ef_construction),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            dimension,
            stored: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
        });
        for number in 0..config.threads {
            let weak = Arc::downgrade(&index);
            std::thread::Builder::new()
                .name(format!("sutra-index-{number}"))
                .spawn(move || run_indexer(&weak))
                .map_err(|error| EngineError::Internal {
                    message: format!("vector index: starting an indexer thread: {error}"),
                })?;
        }
        Ok(index)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the counts of `state` (called under its lock, after each change).
    fn publish(&self, state: &State) {
        self.stored.store(state.key_of.len(), Ordering::Release);
        let queued = state.pending.len() + state.adding.len() + state.overflow.len();
        self.queued.store(queued, Ordering::Release);
    }

    /// Takes the concept's vector (if it has one) in place of any earlier vector of its id.
    /// Called under the id's shard lock.
    pub(crate) fn put(&self, concept: &Arc<Concept>) {
        let id = concept.id.as_arc();
        // Normalised before the lock: every store passes through it.
        let vector = concept
            .embedding
            .as_ref()
            .filter(|vector| vector.as_slice().len() == self.dimension)
            .map(|vector| unit(vector.as_slice()).map(Arc::<[f32]>::from));
        let mut state = self.state();
        let orphan = state
            .key_of
            .remove(&**id)
            .and_then(|old| state.drop_key(old));
        if let Some(vector) = vector {
            let tag = state.tag(&concept.concept_type);
            let key = tag << SEQUENCE_BITS | (state.next_sequence & SEQUENCE_MASK);
            state.next_sequence += 1;
            state.key_of.insert(Arc::clone(id), key);
            state.id_of.insert(key, Arc::clone(id));
            state.pending.insert(
                key,
                Queued {
                    id: Arc::clone(id),
                    vector,
                },
            );
            self.work.notify_one();
        }
        self.publish(&state);
        drop(state);
        if let Some(node) = orphan {
            self.graph.delete(node);
        }
    }

    /// Forgets the vector of `id`. Called under the id's shard lock.
    pub(crate) fn forget(&self, id: &str) {
        let mut state = self.state();
        let orphan = state.key_of.remove(id).and_then(|old| state.drop_key(old));
        self.publish(&state);
        drop(state);
        if let Some(node) = orphan {
            self.graph.delete(node);
        }
    }

    /// The ids whose vectors are nearest to the unit vector `query`: up to `wanted` from the
    /// graph (searched with breadth `ef`, at least `wanted`) and the best `wanted` of the
    /// vectors not in it yet, of `concept_type` unless it is empty. The caller checks each
    /// against the store and scores it.
    pub(crate) fn candidates(
        &self,
        query: &[f32],
        wanted: usize,
        ef: usize,
        concept_type: &str,
    ) -> Vec<Arc<str>> {
        // Unfiltered, with nothing queued (the steady state), the lock is not needed here.
        let (tag, queued) = if concept_type.is_empty() && self.queued.load(Ordering::Acquire) == 0 {
            (None, Vec::new())
        } else {
            let state = self.state();
            let tag = if concept_type.is_empty() {
                None
            } else {
                match state.tags.get(concept_type) {
                    Some(tag) => Some(*tag),
                    // Never stored: nothing of it in the graph or the queue.
                    None => return Vec::new(),
                }
            };
            let queued: Vec<(u64, Queued)> = state
                .pending
                .iter()
                .chain(state.adding.iter())
                .chain(state.overflow.iter())
                .filter(|(key, queued)| {
                    queued.vector.is_some() && tag.is_none_or(|tag| *key >> SEQUENCE_BITS == tag)
                })
                .map(|(key, queued)| (*key, queued.clone()))
                .collect();
            (tag, queued)
        };
        let found = match tag {
            None => self.graph.search(query, wanted, ef, &Any),
            Some(tag) => self
                .graph
                .search(query, wanted, ef, &|key: u64| key >> SEQUENCE_BITS == tag),
        };
        let mut ids: Vec<Arc<str>> = {
            let state = self.state();
            found
                .iter()
                .filter_map(|(key, _)| state.id_of.get(key).cloned())
                .collect()
        };
        let mut scored: Vec<(f32, &Arc<str>)> = queued
            .iter()
            .filter_map(|(_, queued)| Some((dot(query, queued.vector.as_deref()?), &queued.id)))
            .collect();
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        ids.extend(
            scored
                .into_iter()
                .take(wanted)
                .map(|(_, id)| Arc::clone(id)),
        );
        ids
    }

    /// Vectors stored (in the graph or queued).
    pub(crate) fn len(&self) -> usize {
        self.stored.load(Ordering::Acquire)
    }

    /// Vectors searched exactly beside the graph (queued, being added, or overflow).
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Vectors stored but not in the graph yet (searched exactly meanwhile).
    pub(crate) fn pending(&self) -> u64 {
        let state = self.state();
        (state.pending.len() + state.adding.len()) as u64
    }

    /// Figures for `/stats`.
    pub(crate) fn stats(&self) -> IndexStats {
        IndexStats {
            indexed: self.graph.len(),
            pending: self.pending(),
            memory_bytes: self.graph.memory_bytes(),
        }
    }

    /// Lets the indexer threads take queued vectors (after start-up's recovery).
    pub(crate) fn run(&self) {
        self.state().running = true;
        self.work.notify_all();
    }

    /// Waits up to [`IDLE_WAIT`] for queued vectors and takes up to [`BATCH`] of them.
    fn claim(&self) -> Vec<(u64, Queued)> {
        let mut state = self.state();
        if !state.running || state.pending.is_empty() {
            state = self
                .work
                .wait_timeout(state, IDLE_WAIT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if !state.running {
            return Vec::new();
        }
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some((key, queued)) = state.pending.pop_first() else {
                break;
            };
            state.adding.insert(key, queued.clone());
            batch.push((key, queued));
        }
        batch
    }

    /// Adds a claimed batch to the graph, then deletes what was forgotten meanwhile.
    fn add(&self, batch: Vec<(u64, Queued)>) {
        let mut added = Vec::with_capacity(batch.len());
        for (key, queued) in batch {
            // A zero vector is similar to nothing: it is never a result, and stays out.
            let node = queued
                .vector
                .as_ref()
                .and_then(|vector| self.graph.insert(key, vector));
            added.push((key, node, queued));
        }
        let mut orphans = Vec::new();
        {
            let mut state = self.state();
            for (key, node, queued) in added {
                let current = state.adding.remove(&key).is_some();
                match node {
                    Some(node) if current => {
                        state.node_of.insert(key, node);
                    }
                    // Forgotten while being added.
                    Some(node) => orphans.push(node),
                    None if current && queued.vector.is_some() => {
                        state.overflow.insert(key, queued);
                    }
                    None => {}
                }
            }
            self.publish(&state);
        }
        for node in orphans {
            self.graph.delete(node);
        }
    }

    /// The ids with a vector, for consistency checks.
    #[cfg(debug_assertions)]
    pub(crate) fn ids(&self) -> std::collections::HashSet<Arc<str>> {
        self.state().key_of.keys().cloned().collect()
    }
}

/// An indexer thread: adds queued vectors to the graph until the index is dropped.
fn run_indexer(index: &Weak<VectorIndex>) {
    loop {
        let Some(index) = index.upgrade() else {
            return;
        };
        let batch = index.claim();
        if !batch.is_empty() {
            index.add(batch);
        }
    }
}
