//! A hierarchical navigable small world graph (Malkov & Yashunin, 2016) over unit vectors,
//! similarity = inner product; concurrent adds, searches and deletions.
//!
//! Written here because measurement said so: on this project's machines usearch 2.26 built and
//! searched at about half hnswlib's rate with the same M and ef_construction
//! (bench/RESULTS.md), and the other crates either cannot add after a build
//! (instant-distance) or delete (hnsw_rs).
//!
//! # Layout
//!
//! Nodes are numbered in insertion order and live in fixed-size chunks created on first use,
//! so the graph grows without ever moving a node: readers need no lock to reach one. Within a
//! chunk each property is an array indexed by the node's slot: vectors back to back, each
//! after its layer-0 neighbour list (`[count, ids...]`, atomics; [`VectorSlots`]), keys,
//! deleted flags and, for the few nodes above layer 0, their upper lists. A node's vector and
//! links are thus one computed address, which a search prefetches.
//!
//! # Concurrency
//!
//! A node's vector is published and all its own neighbour lists are written before any link
//! to it is, so a reader never follows a link to nothing, nor to a dead end. Writers change a
//! node's list under that node's lock, with release stores; readers read lists without locks,
//! with acquire loads (so a node reached through a link has a visible vector), and may see a
//! list mid-update: every id in it is a published node either way, which is all a search
//! needs. The entry point is one atomic word, changed under a lock.
//!
//! # Deletion
//!
//! A deleted node keeps its place in the graph (its links still route searches) but is never
//! a result. Its memory comes back when the index is rebuilt (at the next start).

use std::cell::RefCell;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::similarity::dot;
use crate::slots::{prefetch, VectorSlots};

/// Nodes per chunk.
const CHUNK_BITS: u32 = 13;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Chunks the graph may have (2^27 nodes, some 175 GB of 256-dim vectors; the chunk table
/// itself is 256 KB).
const MAX_CHUNKS: usize = 1 << 14;
/// The highest layer a node may get.
const MAX_LEVEL: usize = 16;
/// The entry word when the graph is empty.
const NO_ENTRY: u64 = u64::MAX;

/// A node id and its distance (`-similarity`: smaller is nearer) to some query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Near {
    pub(crate) distance: f32,
    pub(crate) node: u32,
}

impl PartialEq for Near {
    fn eq(&self, other: &Near) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Near) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Near) -> CmpOrdering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.node.cmp(&other.node))
    }
}

/// `CHUNK` nodes, each property an array by slot.
struct Chunk {
    /// Each node's vector, after its layer-0 list (`m0 + 1` words: `[count, ids...]`).
    vectors: VectorSlots,
    keys: Box<[AtomicU64]>,
    deleted: Box<[AtomicBool]>,
    /// Layers 1..=level of the nodes above layer 0: `level × (m + 1)` words.
    upper: Box<[OnceLock<Box<[AtomicU32]>>]>,
    /// Held while the node's lists change.
    locks: Box<[Mutex<()>]>,
}

impl Chunk {
    fn new(dimension: usize, m0: usize) -> Chunk {
        Chunk {
            vectors: VectorSlots::new(CHUNK, dimension, m0 + 1),
            keys: (0..CHUNK).map(|_| AtomicU64::new(0)).collect(),
            deleted: (0..CHUNK).map(|_| AtomicBool::new(false)).collect(),
            upper: (0..CHUNK).map(|_| OnceLock::new()).collect(),
            locks: (0..CHUNK).map(|_| Mutex::new(())).collect(),
        }
    }

    fn bytes(&self) -> usize {
        self.vectors.bytes()
            + self.keys.len() * 8
            + self.deleted.len()
            + self.upper.len() * std::mem::size_of::<OnceLock<Box<[AtomicU32]>>>()
            + self.locks.len() * std::mem::size_of::<Mutex<()>>()
    }
}

/// Reads a `[count, ids...]` list into `into`.
fn read_list(list: &[AtomicU32], into: &mut Vec<u32>) {
    into.clear();
    let Some((count, ids)) = list.split_first() else {
        return;
    };
    let count = (count.load(Ordering::Acquire) as usize).min(ids.len());
    into.extend(ids[..count].iter().map(|id| id.load(Ordering::Acquire)));
}

/// Writes `ids` (as many as fit) into a `[count, ids...]` list.
fn write_list(list: &[AtomicU32], ids: &[u32]) {
    let Some((count, slots)) = list.split_first() else {
        return;
    };
    let kept = ids.len().min(slots.len());
    for (slot, id) in slots.iter().zip(&ids[..kept]) {
        slot.store(*id, Ordering::Release);
    }
    #[expect(clippy::cast_possible_truncation, reason = "at most 2 * M_MAX")]
    count.store(kept as u32, Ordering::Release);
}

/// Per-thread scratch: the visited marks of one search.
#[derive(Default)]
struct Visited {
    /// Two bytes a node (as hnswlib), so the marks of a large graph stay in cache.
    marks: Vec<u16>,
    epoch: u16,
}

impl Visited {
    fn start(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes.next_power_of_two(), 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `node`; returns whether it was new (nodes added after the search began are
    /// never new).
    fn visit(&mut self, node: u32) -> bool {
        let Some(mark) = self.marks.get_mut(node as usize) else {
            return false;
        };
        let new = *mark != self.epoch;
        *mark = self.epoch;
        new
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

/// Which nodes a search may return.
pub(crate) trait Accept {
    /// Whether the node with this key may be a result.
    fn accept(&self, key: u64) -> bool;

    /// Whether every key is accepted (so keys need not be read).
    fn takes_all(&self) -> bool {
        false
    }
}

/// Every node.
pub(crate) struct Any;

impl Accept for Any {
    fn accept(&self, _key: u64) -> bool {
        true
    }

    fn takes_all(&self) -> bool {
        true
    }
}

impl<F: Fn(u64) -> bool> Accept for F {
    fn accept(&self, key: u64) -> bool {
        self(key)
    }
}

/// The graph.
pub(crate) struct Hnsw {
    dimension: usize,
    /// Links per node above layer 0.
    m: usize,
    /// Links per node on layer 0 (2 M).
    m0: usize,
    ef_construction: usize,
    level_scale: f64,
    chunks: Box<[OnceLock<Box<Chunk>>]>,
    next: AtomicU32,
    /// `level << 32 | node`, or [`NO_ENTRY`].
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    live: AtomicU64,
    bytes: AtomicU64,
}

/// splitmix64: a node's level comes from its id, so no random state is shared.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

impl Hnsw {
    pub(crate) fn new(dimension: usize, m: usize, ef_construction: usize) -> Hnsw {
        Hnsw {
            dimension,
            m,
            m0: 2 * m,
            ef_construction,
            #[expect(clippy::cast_precision_loss, reason = "m is small")]
            level_scale: 1.0 / (m as f64).ln(),
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            next: AtomicU32::new(0),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            live: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn place(&self, id: u32) -> Option<(&Chunk, usize)> {
        let id = id as usize;
        let chunk: &Chunk = self.chunks.get(id >> CHUNK_BITS)?.get()?;
        Some((chunk, id & (CHUNK - 1)))
    }

    fn vector(&self, id: u32) -> Option<&[f32]> {
        let (chunk, slot) = self.place(id)?;
        chunk.vectors.read(slot)
    }

    fn prefetch(&self, id: u32) {
        if let Some((chunk, slot)) = self.place(id) {
            chunk.vectors.prefetch(slot);
        }
    }

    /// `id`'s `[count, ids...]` list on `layer`, if it reaches that layer.
    fn list(&self, id: u32, layer: usize) -> Option<&[AtomicU32]> {
        let (chunk, slot) = self.place(id)?;
        if layer == 0 {
            chunk.vectors.links(slot)
        } else {
            let width = self.m + 1;
            chunk.upper[slot]
                .get()?
                .get((layer - 1) * width..layer * width)
        }
    }

    fn neighbours(&self, id: u32, layer: usize, into: &mut Vec<u32>) {
        match self.list(id, layer) {
            Some(list) => read_list(list, into),
            None => into.clear(),
        }
    }

    /// Whether a search may return `id`: not deleted, and accepted.
    fn takes(&self, id: u32, accept: &impl Accept, deleted_too: bool) -> bool {
        if accept.takes_all() && (deleted_too || self.len() == self.nodes() as u64) {
            // Nothing to look up (a deletion racing with this search is caught by the caller,
            // which checks every result against the store).
            return true;
        }
        self.place(id).is_some_and(|(chunk, slot)| {
            (deleted_too || !chunk.deleted[slot].load(Ordering::Relaxed))
                && accept.accept(chunk.keys[slot].load(Ordering::Relaxed))
        })
    }

    fn level_of(&self, id: u32) -> usize {
        #[expect(clippy::cast_precision_loss, reason = "53 bits are plenty")]
        let uniform = ((mix(u64::from(id)) >> 11) as f64 + 0.5) / (1_u64 << 53) as f64;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a small positive number"
        )]
        let level = (-uniform.ln() * self.level_scale) as usize;
        level.min(MAX_LEVEL)
    }

    fn capacity(&self, layer: usize) -> usize {
        if layer == 0 {
            self.m0
        } else {
            self.m
        }
    }

    fn distance(&self, query: &[f32], id: u32) -> f32 {
        self.vector(id)
            .map_or(f32::INFINITY, |vector| -dot(query, vector))
    }

    /// Nodes ever added (deleted ones included).
    pub(crate) fn nodes(&self) -> usize {
        self.next.load(Ordering::Acquire) as usize
    }

    /// Nodes not deleted.
    pub(crate) fn len(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Bytes the graph holds: vectors, neighbour lists and bookkeeping.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn entry(&self) -> Option<(u32, usize)> {
        let word = self.entry.load(Ordering::Acquire);
        #[expect(clippy::cast_possible_truncation, reason = "unpacking")]
        (word != NO_ENTRY).then_some((word as u32, (word >> 32) as usize))
    }

    /// The best `ef` nodes of `layer` reachable from `start` (nearest first), of those
    /// `accept` takes and not deleted unless `deleted_too`.
    fn search_layer(
        &self,
        query: &[f32],
        start: &[Near],
        ef: usize,
        layer: usize,
        accept: &impl Accept,
        deleted_too: bool,
    ) -> Vec<Near> {
        VISITED.with(|visited| {
            let mut visited = visited.borrow_mut();
            visited.start(self.nodes());
            let mut candidates: BinaryHeap<Reverse<Near>> = BinaryHeap::with_capacity(ef * 4);
            let mut results: BinaryHeap<Near> = BinaryHeap::with_capacity(ef + 1);
            for near in start {
                visited.visit(near.node);
                candidates.push(Reverse(*near));
                if self.takes(near.node, accept, deleted_too) {
                    results.push(*near);
                }
            }
            let mut neighbours = Vec::with_capacity(self.m0);
            let mut fresh = Vec::with_capacity(self.m0);
            while let Some(Reverse(nearest)) = candidates.pop() {
                if let Some(Reverse(next)) = candidates.peek() {
                    if let Some(first) = self.list(next.node, layer).and_then(<[_]>::first) {
                        prefetch(first);
                    }
                }
                if results.len() >= ef
                    && results
                        .peek()
                        .is_some_and(|worst| nearest.distance > worst.distance)
                {
                    break;
                }
                self.neighbours(nearest.node, layer, &mut neighbours);
                fresh.clear();
                fresh.extend(neighbours.iter().copied().filter(|id| visited.visit(*id)));
                for &id in &fresh {
                    self.prefetch(id);
                }
                for &id in &fresh {
                    let Some(vector) = self.vector(id) else {
                        continue;
                    };
                    let distance = -dot(query, vector);
                    let worst = results.peek().map_or(f32::INFINITY, |worst| worst.distance);
                    if results.len() < ef || distance < worst {
                        let near = Near { distance, node: id };
                        candidates.push(Reverse(near));
                        if self.takes(id, accept, deleted_too) {
                            results.push(near);
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            results.into_sorted_vec()
        })
    }

    /// Walks down from the top layer to `down_to + 1`, one nearest node per layer.
    fn descend(&self, query: &[f32], entry: (u32, usize), down_to: usize) -> Near {
        let mut nearest = Near {
            distance: self.distance(query, entry.0),
            node: entry.0,
        };
        let mut neighbours = Vec::with_capacity(self.m);
        for layer in (down_to + 1..=entry.1).rev() {
            let mut changed = true;
            while changed {
                changed = false;
                self.neighbours(nearest.node, layer, &mut neighbours);
                for &id in &neighbours {
                    let distance = self.distance(query, id);
                    if distance < nearest.distance {
                        nearest = Near { distance, node: id };
                        changed = true;
                    }
                }
            }
        }
        nearest
    }

    /// The `k` nearest nodes to the unit vector `query` that `accept` takes, searched with
    /// breadth `ef` (at least `k`): (key, similarity), best first.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: &impl Accept,
    ) -> Vec<(u64, f32)> {
        let Some(entry) = self.entry() else {
            return Vec::new();
        };
        let start = self.descend(query, entry, 0);
        let found = self.search_layer(query, &[start], ef.max(k), 0, accept, false);
        found
            .into_iter()
            .take(k)
            .filter_map(|near| {
                let (chunk, slot) = self.place(near.node)?;
                Some((chunk.keys[slot].load(Ordering::Relaxed), -near.distance))
            })
            .collect()
    }

    /// hnswlib's neighbour heuristic: from `candidates` (nearest first), keep one only if it
    /// is nearer to the new node than to every neighbour kept so far; at most `max`.
    fn select(&self, candidates: &[Near], max: usize) -> Vec<u32> {
        let mut kept: Vec<(Near, &[f32])> = Vec::with_capacity(max);
        for candidate in candidates {
            if kept.len() >= max {
                break;
            }
            let Some(vector) = self.vector(candidate.node) else {
                continue;
            };
            let diverse = kept
                .iter()
                .all(|(_, other)| -dot(vector, other) > candidate.distance);
            if diverse {
                kept.push((*candidate, vector));
            }
        }
        kept.into_iter().map(|(near, _)| near.node).collect()
    }

    /// Adds `to` to `from`'s list on `layer`; a full list is pruned by the heuristic.
    fn link(&self, from: u32, to: u32, layer: usize) {
        let (Some((chunk, slot)), Some(list), Some(vector)) =
            (self.place(from), self.list(from, layer), self.vector(from))
        else {
            return;
        };
        let _guard = chunk.locks[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ids = Vec::with_capacity(self.m0 + 1);
        read_list(list, &mut ids);
        if ids.contains(&to) {
            return;
        }
        let capacity = self.capacity(layer);
        ids.push(to);
        if ids.len() <= capacity {
            write_list(list, &ids);
            return;
        }
        let mut candidates: Vec<Near> = ids
            .iter()
            .map(|&id| Near {
                distance: self.distance(vector, id),
                node: id,
            })
            .collect();
        candidates.sort_unstable();
        let kept = self.select(&candidates, capacity);
        write_list(list, &kept);
    }

    /// Adds a unit vector under `key`; returns its node id, or `None` when the graph is full
    /// (2^27 nodes) or the vector has another dimension.
    pub(crate) fn insert(&self, key: u64, vector: &[f32]) -> Option<u32> {
        if vector.len() != self.dimension {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::AcqRel);
        let level = self.level_of(id);
        let index = id as usize;
        let chunk = self.chunks.get(index >> CHUNK_BITS)?.get_or_init(|| {
            let chunk = Chunk::new(self.dimension, self.m0);
            self.bytes
                .fetch_add(chunk.bytes() as u64, Ordering::Relaxed);
            Box::new(chunk)
        });
        let slot = index & (CHUNK - 1);
        chunk.keys[slot].store(key, Ordering::Relaxed);
        if level > 0 {
            let words = level * (self.m + 1);
            let _ = chunk.upper[slot].set((0..words).map(|_| AtomicU32::new(0)).collect());
            self.bytes.fetch_add(words as u64 * 4, Ordering::Relaxed);
        }
        // Publishes the vector (and, before it, the key and the lists).
        chunk.vectors.write(slot, vector);
        self.live.fetch_add(1, Ordering::Relaxed);
        let query = chunk.vectors.read(slot)?;

        let entry = match self.entry() {
            Some(entry) => entry,
            None => {
                let _guard = self
                    .entry_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match self.entry() {
                    Some(entry) => entry,
                    None => {
                        self.entry
                            .store((level as u64) << 32 | u64::from(id), Ordering::Release);
                        return Some(id);
                    }
                }
            }
        };
        // Every list of the new node is set before any node links to it: another thread
        // that reaches it then finds a complete node, never a dead end.
        let mut nearest = self.descend(query, entry, level);
        let mut chosen_per_layer = Vec::with_capacity(level + 1);
        for layer in (0..=level.min(entry.1)).rev() {
            let found =
                self.search_layer(query, &[nearest], self.ef_construction, layer, &Any, true);
            let found: Vec<Near> = found.into_iter().filter(|near| near.node != id).collect();
            // M links of its own on every layer, as hnswlib makes; layer 0 lists fill up to
            // 2 M with the links of later nodes.
            let chosen = self.select(&found, self.m);
            if let Some(list) = self.list(id, layer) {
                let _guard = chunk.locks[slot]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                write_list(list, &chosen);
            }
            chosen_per_layer.push((layer, chosen));
            if let Some(first) = found.first() {
                nearest = *first;
            }
        }
        for (layer, chosen) in chosen_per_layer {
            for neighbour in chosen {
                self.link(neighbour, id, layer);
            }
        }
        if level > entry.1 {
            let _guard = self
                .entry_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if self.entry().is_none_or(|(_, top)| level > top) {
                self.entry
                    .store((level as u64) << 32 | u64::from(id), Ordering::Release);
            }
        }
        Some(id)
    }

    /// Marks a node deleted: it still routes searches but is never a result.
    pub(crate) fn delete(&self, id: u32) {
        if let Some((chunk, slot)) = self.place(id) {
            if !chunk.deleted[slot].swap(true, Ordering::AcqRel) {
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::similarity::unit;

    fn vector(seed: u64, dimension: usize) -> Vec<f32> {
        let values: Vec<f32> = (0..dimension as u64)
            .map(|i| {
                #[expect(clippy::cast_precision_loss, reason = "test data")]
                let value = (mix(seed * 1_000 + i) >> 40) as f32 / (1_u64 << 24) as f32;
                value - 0.5
            })
            .collect();
        unit(&values).unwrap()
    }

    #[test]
    fn finds_each_vector_and_skips_deleted_ones() {
        let graph = Hnsw::new(16, 8, 64);
        for seed in 0..2_000 {
            graph.insert(seed, &vector(seed, 16)).unwrap();
        }
        assert_eq!(graph.len(), 2_000);
        let mut found = 0;
        for seed in 0..2_000 {
            let best = graph.search(&vector(seed, 16), 1, 32, &Any);
            found += usize::from(best.first().is_some_and(|(key, _)| *key == seed));
        }
        assert!(found >= 1_990, "{found} of 2000 found themselves");
        for id in 0..1_000 {
            graph.delete(id);
        }
        assert_eq!(graph.len(), 1_000);
        for seed in 0..50 {
            let results = graph.search(&vector(seed, 16), 10, 64, &Any);
            assert_eq!(results.len(), 10);
            assert!(results.iter().all(|(key, _)| *key >= 1_000));
            assert!(results.windows(2).all(|pair| pair[0].1 >= pair[1].1));
        }
        let even = graph.search(&vector(7, 16), 10, 64, &|key: u64| key.is_multiple_of(2));
        assert!(even
            .iter()
            .all(|(key, _)| key.is_multiple_of(2) && *key >= 1_000));
    }

    #[test]
    fn levels_thin_out_geometrically() {
        let graph = Hnsw::new(4, 16, 32);
        let above: usize = (0..100_000).filter(|id| graph.level_of(*id) > 0).count();
        // P(level > 0) = 1/M.
        assert!((5_000..7_500).contains(&above), "{above}");
    }
}
