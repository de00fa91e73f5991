//! The in-memory concept store: a sharded id map plus a sharded type index.
//!
//! # Concurrency
//!
//! Concepts live in `SHARD_COUNT` shards, each a `RwLock<HashMap<id, Arc<Concept>>>`, so
//! readers on different shards never contend and readers on one shard share a read lock.
//! Values are `Arc<Concept>`: a read clones a pointer, never the concept.
//!
//! The type index maps a type to the ordered set of its ids (a `BTreeSet`, which gives
//! `QueryByType` its stable, cursor-based paging), sharded by type.
//!
//! Lock order: a writer takes its concept shard, then (while holding it) the type shard. A
//! query takes a type shard alone, releases it, then takes concept shards. No thread ever
//! holds a type shard while waiting for a concept shard, so there is no deadlock, and because
//! writers update both under the concept shard's lock, two writers on the same id cannot leave
//! the index disagreeing with the map.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, HashMap};
use sutra_protocol::{Concept, ConceptId, QueryByType, QueryPage};

use crate::index::VectorIndex;

/// Number of shards in each map: enough that 2-16 cores rarely meet on one lock.
const SHARD_COUNT: usize = 64;
const _: () = assert!(SHARD_COUNT.is_power_of_two());

type ConceptShard = HashMap<Arc<str>, Arc<Concept>>;
type TypeShard = HashMap<Box<str>, BTreeSet<Arc<str>>>;

/// A lock whose poisoning (a panic while held) does not take the server down: the data under
/// it is only ever changed by single, complete insert/remove calls.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn is_live(concept: &Concept, now_ms: u64) -> bool {
    concept
        .expires_at_ms
        .is_none_or(|expires_at_ms| expires_at_ms > now_ms)
}

pub(super) struct ConceptStore {
    hasher: DefaultHashBuilder,
    concepts: Box<[RwLock<ConceptShard>]>,
    types: Box<[RwLock<TypeShard>]>,
    concept_count: AtomicU64,
    bytes_used: AtomicU64,
    /// (expires_at_ms, id) of every stored concept with an expiry, for the reaper.
    expiry: Mutex<BTreeSet<(u64, Arc<str>)>>,
    /// The vector index (`VECTOR_INDEX=hnsw`), told of every change under the id's shard lock.
    index: Option<Arc<VectorIndex>>,
}

impl ConceptStore {
    pub(super) fn new(index: Option<Arc<VectorIndex>>) -> ConceptStore {
        ConceptStore {
            index,
            hasher: DefaultHashBuilder::default(),
            concepts: (0..SHARD_COUNT).map(|_| RwLock::default()).collect(),
            types: (0..SHARD_COUNT).map(|_| RwLock::default()).collect(),
            concept_count: AtomicU64::new(0),
            bytes_used: AtomicU64::new(0),
            expiry: Mutex::new(BTreeSet::new()),
        }
    }

    fn shard_index(&self, key: &str) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "only the low bits pick a shard"
        )]
        let hash = self.hasher.hash_one(key) as usize;
        hash & (SHARD_COUNT - 1)
    }

    fn concept_shard(&self, id: &str) -> &RwLock<ConceptShard> {
        let index = self.shard_index(id);
        self.concepts
            .get(index)
            .unwrap_or_else(|| unreachable!("shard index is masked"))
    }

    fn type_shard(&self, concept_type: &str) -> &RwLock<TypeShard> {
        let index = self.shard_index(concept_type);
        self.types
            .get(index)
            .unwrap_or_else(|| unreachable!("shard index is masked"))
    }

    fn index_insert(&self, concept_type: &str, id: &Arc<str>) {
        let mut shard = write(self.type_shard(concept_type));
        match shard.get_mut(concept_type) {
            Some(ids) => {
                ids.insert(Arc::clone(id));
            }
            None => {
                shard.insert(concept_type.into(), BTreeSet::from([Arc::clone(id)]));
            }
        }
    }

    fn index_remove(&self, concept_type: &str, id: &str) {
        let mut shard = write(self.type_shard(concept_type));
        if let Some(ids) = shard.get_mut(concept_type) {
            ids.remove(id);
            if ids.is_empty() {
                shard.remove(concept_type);
            }
        }
    }

    /// Inserts or replaces; returns whether the id was new (an expired concept counts as
    /// absent).
    pub(super) fn upsert(&self, concept: &Arc<Concept>, now_ms: u64) -> bool {
        let id = Arc::clone(concept.id.as_arc());
        let new_bytes = concept.encoded_len() as u64;
        let mut shard = write(self.concept_shard(&id));
        let previous = shard.insert(Arc::clone(&id), Arc::clone(concept));
        if let Some(index) = &self.index {
            index.put(concept);
        }
        if previous.as_ref().and_then(|old| old.expires_at_ms) != concept.expires_at_ms {
            let mut expiry = self.expiry();
            if let Some(at) = previous.as_ref().and_then(|old| old.expires_at_ms) {
                expiry.remove(&(at, Arc::clone(&id)));
            }
            if let Some(at) = concept.expires_at_ms {
                expiry.insert((at, Arc::clone(&id)));
            }
        }
        if let Some(old) = &previous {
            if old.concept_type != concept.concept_type {
                self.index_remove(&old.concept_type, &id);
                self.index_insert(&concept.concept_type, &id);
            }
            self.bytes_used
                .fetch_sub(old.encoded_len() as u64, Ordering::Relaxed);
        } else {
            self.index_insert(&concept.concept_type, &id);
            self.concept_count.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_used.fetch_add(new_bytes, Ordering::Relaxed);
        drop(shard);
        previous.is_none_or(|old| !is_live(&old, now_ms))
    }

    /// Loads a snapshot into an empty store. The type index is built once at the end from
    /// sorted ids (a bulk build), instead of one ordered insert per concept: at a million
    /// concepts, ordered inserts spend most of the restart comparing ids.
    pub(super) fn bulk_load(&self, concepts: impl IntoIterator<Item = Concept>) {
        let mut by_type: HashMap<String, Vec<Arc<str>>> = HashMap::new();
        for concept in concepts {
            let concept = Arc::new(concept);
            let id = Arc::clone(concept.id.as_arc());
            let bytes = concept.encoded_len() as u64;
            let mut shard = write(self.concept_shard(&id));
            let previous = shard.insert(Arc::clone(&id), Arc::clone(&concept));
            debug_assert!(previous.is_none(), "snapshot ids are unique");
            if let Some(index) = &self.index {
                index.put(&concept);
            }
            drop(shard);
            if let Some(at) = concept.expires_at_ms {
                self.expiry().insert((at, Arc::clone(&id)));
            }
            match by_type.get_mut(concept.concept_type.as_str()) {
                Some(ids) => ids.push(id),
                None => {
                    by_type.insert(concept.concept_type.clone(), vec![id]);
                }
            }
            self.concept_count.fetch_add(1, Ordering::Relaxed);
            self.bytes_used.fetch_add(bytes, Ordering::Relaxed);
        }
        for (concept_type, mut ids) in by_type {
            // Snapshots are written in map order: one sort per type builds the index.
            ids.sort_unstable();
            let set: BTreeSet<Arc<str>> = ids.into_iter().collect();
            write(self.type_shard(&concept_type)).insert(concept_type.into_boxed_str(), set);
        }
    }

    /// The live concept with this id. An expired one is removed on the way.
    pub(super) fn get(&self, id: &ConceptId, now_ms: u64) -> Option<Arc<Concept>> {
        let concept = read(self.concept_shard(id.as_str()))
            .get(id.as_str())
            .cloned()?;
        if is_live(&concept, now_ms) {
            Some(concept)
        } else {
            self.remove_if_expired(id.as_str(), now_ms);
            None
        }
    }

    fn remove_if_expired(&self, id: &str, now_ms: u64) {
        let mut shard = write(self.concept_shard(id));
        if shard
            .get(id)
            .is_some_and(|concept| !is_live(concept, now_ms))
        {
            if let Some(removed) = shard.remove(id) {
                self.forget(&removed);
            }
        }
    }

    /// Unlinks a concept its caller removed from the map, still holding the id's shard lock
    /// (so that the index cannot forget a newer vector of the id).
    fn forget(&self, removed: &Concept) {
        if let Some(index) = &self.index {
            index.forget(removed.id.as_str());
        }
        if let Some(at) = removed.expires_at_ms {
            self.expiry().remove(&(at, Arc::clone(removed.id.as_arc())));
        }
        self.index_remove(&removed.concept_type, removed.id.as_str());
        self.concept_count.fetch_sub(1, Ordering::Relaxed);
        self.bytes_used
            .fetch_sub(removed.encoded_len() as u64, Ordering::Relaxed);
    }

    /// Removes the id; returns whether a live concept was removed.
    pub(super) fn remove(&self, id: &ConceptId, now_ms: u64) -> bool {
        let mut shard = write(self.concept_shard(id.as_str()));
        let Some(removed) = shard.remove(id.as_str()) else {
            return false;
        };
        self.forget(&removed);
        is_live(&removed, now_ms)
    }

    fn expiry(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, Arc<str>)>> {
        self.expiry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes up to `max` entries of the expiry index that are due at `now_ms`, earliest
    /// first. The caller logs an Expire for each; a concept stored again meanwhile has a new
    /// entry of its own.
    pub(super) fn take_due(&self, now_ms: u64, max: usize) -> Vec<(u64, Arc<str>)> {
        let mut expiry = self.expiry();
        let mut due = Vec::new();
        while due.len() < max {
            match expiry.first() {
                Some((at, _)) if *at <= now_ms => {
                    if let Some(entry) = expiry.pop_first() {
                        due.push(entry);
                    }
                }
                _ => break,
            }
        }
        due
    }

    /// Removes the id if its concept expires at or before `at_ms`; returns whether it did.
    pub(super) fn expire(&self, id: &ConceptId, at_ms: u64) -> bool {
        let mut shard = write(self.concept_shard(id.as_str()));
        let expired = shard
            .get(id.as_str())
            .and_then(|concept| concept.expires_at_ms)
            .is_some_and(|expires_at_ms| expires_at_ms <= at_ms);
        if !expired {
            return false;
        }
        match shard.remove(id.as_str()) {
            Some(removed) => {
                self.forget(&removed);
                true
            }
            None => false,
        }
    }

    /// Entries in the expiry index (for the invariant checks of debug builds).
    #[cfg(debug_assertions)]
    pub(super) fn expiry_len(&self) -> usize {
        self.expiry().len()
    }

    /// The ids of a type (live or expired).
    pub(super) fn ids_of_type(&self, concept_type: &str) -> Vec<Arc<str>> {
        read(self.type_shard(concept_type))
            .get(concept_type)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many concepts (live or expired) a type holds.
    pub(super) fn type_len(&self, concept_type: &str) -> usize {
        read(self.type_shard(concept_type))
            .get(concept_type)
            .map_or(0, BTreeSet::len)
    }

    /// The index, when there is one.
    pub(super) fn index(&self) -> Option<&Arc<VectorIndex>> {
        self.index.as_ref()
    }

    /// The live concept with this id, without removing it if it expired (for searches, which
    /// hold no write locks).
    pub(super) fn peek(&self, id: &str, now_ms: u64) -> Option<Arc<Concept>> {
        read(self.concept_shard(id))
            .get(id)
            .filter(|concept| is_live(concept, now_ms))
            .cloned()
    }

    /// Removes every concept of a type; returns how many of them were live.
    pub(super) fn clear_type(&self, concept_type: &str, now_ms: u64) -> u64 {
        let ids = self.ids_of_type(concept_type);
        let mut removed = 0;
        for id in ids {
            let mut shard = write(self.concept_shard(&id));
            // Re-check under the lock: a concurrent store may have changed its type.
            if shard
                .get(&*id)
                .is_some_and(|concept| concept.concept_type == concept_type)
            {
                if let Some(concept) = shard.remove(&*id) {
                    self.forget(&concept);
                    removed += u64::from(is_live(&concept, now_ms));
                }
            }
        }
        removed
    }

    /// The next ids of a type after `after`, at most `count`.
    fn ids_after(&self, concept_type: &str, after: &str, count: usize) -> Vec<Arc<str>> {
        let shard = read(self.type_shard(concept_type));
        let Some(ids) = shard.get(concept_type) else {
            return Vec::new();
        };
        let lower = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after)
        };
        ids.range::<str, _>((lower, Bound::Unbounded))
            .take(count)
            .cloned()
            .collect()
    }

    /// One page of live concepts of a type after the cursor, at most `query.limit` concepts
    /// and `max_page_bytes` encoded bytes (but always at least one concept when any remain).
    /// `next_cursor` is non-empty only when another live concept follows the page.
    pub(super) fn query_by_type(
        &self,
        query: &QueryByType,
        max_page_bytes: usize,
        now_ms: u64,
    ) -> QueryPage {
        let limit = (query.limit as usize).max(1);
        let mut concepts: Vec<Arc<Concept>> = Vec::with_capacity(limit.min(1024));
        let mut page_bytes = 0_usize;
        let mut cursor: Arc<str> = Arc::from(query.cursor.as_str());
        loop {
            // One more id than still needed tells whether another page exists. The loop only
            // repeats when ids were skipped (deleted, expired or retyped since the index was
            // read), and each pass moves the cursor forward, so it ends.
            let wanted = limit - concepts.len() + 1;
            let ids = self.ids_after(&query.concept_type, &cursor, wanted);
            let exhausted = ids.len() < wanted;
            let Some(batch_end) = ids.last().cloned() else {
                return QueryPage {
                    concepts,
                    next_cursor: String::new(),
                };
            };
            for id in ids {
                let Some(concept) = read(self.concept_shard(&id)).get(&*id).cloned() else {
                    continue;
                };
                if !is_live(&concept, now_ms) || concept.concept_type != query.concept_type {
                    continue;
                }
                let size = concept.encoded_len();
                let over_budget =
                    !concepts.is_empty() && page_bytes.saturating_add(size) > max_page_bytes;
                if concepts.len() == limit || over_budget {
                    let next_cursor = concepts
                        .last()
                        .map(|last| last.id.as_str().to_owned())
                        .unwrap_or_default();
                    return QueryPage {
                        concepts,
                        next_cursor,
                    };
                }
                page_bytes = page_bytes.saturating_add(size);
                concepts.push(concept);
            }
            if exhausted {
                return QueryPage {
                    concepts,
                    next_cursor: String::new(),
                };
            }
            cursor = batch_end;
        }
    }

    /// (concepts, encoded bytes).
    pub(super) fn counters(&self) -> (u64, u64) {
        (
            self.concept_count.load(Ordering::Relaxed),
            self.bytes_used.load(Ordering::Relaxed),
        )
    }

    /// How many concept shards there are.
    pub(super) fn shard_count(&self) -> usize {
        self.concepts.len()
    }

    /// Runs `visit` on each live concept of shard `shard`, under the shard's read lock (one
    /// of 64: writers to it wait, readers do not). Copying the pointers out first cost an
    /// atomic increment and decrement per concept, a quarter of an exact search.
    pub(super) fn for_each_live_in_shard(
        &self,
        shard: usize,
        now_ms: u64,
        mut visit: impl FnMut(&Arc<Concept>),
    ) {
        let Some(lock) = self.concepts.get(shard) else {
            return;
        };
        for concept in read(lock)
            .values()
            .filter(|concept| is_live(concept, now_ms))
        {
            visit(concept);
        }
    }

    /// The live concepts of one type (through the type index).
    pub(super) fn live_of_type(&self, concept_type: &str, now_ms: u64) -> Vec<Arc<Concept>> {
        self.ids_of_type(concept_type)
            .into_iter()
            .filter_map(|id| {
                read(self.concept_shard(&id))
                    .get(&id)
                    .filter(|concept| is_live(concept, now_ms))
                    .cloned()
            })
            .collect()
    }

    /// Every live concept, for a checkpoint. Pointer copies only; shard by shard.
    pub(super) fn live_concepts(&self, now_ms: u64) -> Vec<Arc<Concept>> {
        let mut concepts = Vec::with_capacity(
            usize::try_from(self.concept_count.load(Ordering::Relaxed)).unwrap_or(0),
        );
        for shard in &*self.concepts {
            concepts.extend(
                read(shard)
                    .values()
                    .filter(|concept| is_live(concept, now_ms))
                    .cloned(),
            );
        }
        concepts
    }

    /// Checks that the map, the index and the counters agree. Only valid while no writer runs.
    #[cfg(debug_assertions)]
    pub(super) fn check_invariants(&self) {
        let mut count = 0_u64;
        let mut bytes = 0_u64;
        let mut expiring = 0_usize;
        for shard in &*self.concepts {
            for (id, concept) in read(shard).iter() {
                assert_eq!(&**id, concept.id.as_str());
                if let Some(at) = concept.expires_at_ms {
                    expiring += 1;
                    assert!(
                        self.expiry().contains(&(at, Arc::clone(id))),
                        "concept {id} missing from the expiry index"
                    );
                }
                let indexed = read(self.type_shard(&concept.concept_type))
                    .get(concept.concept_type.as_str())
                    .is_some_and(|ids| ids.contains(&**id));
                assert!(indexed, "concept {id} missing from the type index");
                count += 1;
                bytes += concept.encoded_len() as u64;
            }
        }
        let mut indexed = 0_u64;
        for shard in &*self.types {
            for ids in read(shard).values() {
                assert!(!ids.is_empty(), "empty type sets are removed");
                indexed += ids.len() as u64;
            }
        }
        assert_eq!(indexed, count, "type index and map disagree");
        assert_eq!(self.expiry_len(), expiring, "expiry index and map disagree");
        if let Some(index) = &self.index {
            let mut with_vectors = std::collections::HashSet::new();
            for shard in &*self.concepts {
                for (id, concept) in read(shard).iter() {
                    if concept.embedding.is_some() {
                        with_vectors.insert(Arc::clone(id));
                    }
                }
            }
            assert!(index.ids() == with_vectors, "vector index and map disagree");
        }
        assert_eq!(self.counters(), (count, bytes));
    }
}
