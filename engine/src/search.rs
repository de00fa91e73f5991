//! Exact nearest-neighbour search: the cosine similarity of the query with every stored vector
//! (of a type, or of all), the best `k` kept in a bounded heap, the shards split between
//! threads when there are many vectors. It is also the ground truth an index is measured by.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use hashbrown::HashSet;
use std::sync::Arc;

use sutra_protocol::Concept;

use crate::index::VectorIndex;
use crate::similarity::{cosine, unit};
use crate::store::ConceptStore;

/// Below this many stored concepts one thread scans them all (threads cost more than they
/// save on a few milliseconds of work).
const PARALLEL_MIN_CONCEPTS: u64 = 20_000;

/// Most threads one search uses.
const MAX_THREADS: usize = 4;

/// A result: the concept and its cosine similarity to the query.
#[derive(Debug, Clone)]
pub struct Neighbour {
    /// The stored concept.
    pub concept: Arc<Concept>,
    /// Cosine similarity, -1 to 1 (0 against a zero vector).
    pub score: f32,
}

impl Neighbour {
    /// Better first: higher score, then the smaller id.
    fn rank(&self, other: &Neighbour) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.concept.id.as_str().cmp(other.concept.id.as_str()))
    }
}

/// Heap entry ordered so that the worst kept result is on top.
struct Worst(Neighbour);

impl PartialEq for Worst {
    fn eq(&self, other: &Worst) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Worst) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Worst) -> Ordering {
        self.0.rank(&other.0)
    }
}

/// The best `k` of what it is offered.
struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1)),
        }
    }

    /// Offers `concept` with `score`; its pointer is copied only if it is kept.
    fn offer_ref(&mut self, concept: &Arc<Concept>, score: f32) {
        let beaten = self.heap.len() >= self.k
            && self.heap.peek().is_some_and(|worst| {
                score
                    .total_cmp(&worst.0.score)
                    .then_with(|| worst.0.concept.id.as_str().cmp(concept.id.as_str()))
                    != Ordering::Greater
            });
        if !beaten {
            self.offer(Neighbour {
                concept: Arc::clone(concept),
                score,
            });
        }
    }

    fn offer(&mut self, candidate: Neighbour) {
        if self.heap.len() < self.k {
            self.heap.push(Worst(candidate));
        } else if self
            .heap
            .peek()
            .is_some_and(|worst| candidate.rank(&worst.0) == Ordering::Less)
        {
            self.heap.pop();
            self.heap.push(Worst(candidate));
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for Worst(neighbour) in other.heap {
            self.offer(neighbour);
        }
        self
    }

    fn into_sorted(self) -> Vec<Neighbour> {
        let mut all: Vec<Neighbour> = self.heap.into_iter().map(|worst| worst.0).collect();
        all.sort_by(Neighbour::rank);
        all
    }
}

/// The `k` live concepts with an embedding most similar to `query` (of `concept_type` when it
/// is not empty), best first, ties by id.
pub(crate) fn exact(
    store: &ConceptStore,
    query: &[f32],
    k: usize,
    concept_type: &str,
    now_ms: u64,
) -> Vec<Neighbour> {
    let Some(query) = unit(query) else {
        return Vec::new();
    };
    let consider = |top: &mut TopK, concept: &Arc<Concept>| {
        if let Some(embedding) = &concept.embedding {
            top.offer_ref(concept, cosine(&query, embedding.as_slice()));
        }
    };
    if !concept_type.is_empty() {
        let mut top = TopK::new(k);
        for concept in store.live_of_type(concept_type, now_ms) {
            consider(&mut top, &concept);
        }
        return top.into_sorted();
    }
    let shards = store.shard_count();
    let threads = if store.counters().0 >= PARALLEL_MIN_CONCEPTS {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_THREADS)
    } else {
        1
    };
    let scan = |range: std::ops::Range<usize>| {
        let mut top = TopK::new(k);
        for shard in range {
            store.for_each_live_in_shard(shard, now_ms, |concept| consider(&mut top, concept));
        }
        top
    };
    if threads == 1 {
        return scan(0..shards).into_sorted();
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|part| {
                let range = shards * part / threads..shards * (part + 1) / threads;
                scope.spawn(move || scan(range))
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|worker| worker.join().ok())
            .fold(TopK::new(k), TopK::merge)
            .into_sorted()
    })
}

/// What a search found, and how.
#[derive(Debug, Clone)]
pub struct Found {
    /// Best first, ties by id.
    pub neighbours: Vec<Neighbour>,
    /// Whether every stored vector (of the type) was compared.
    pub exact: bool,
}

/// The `k` live concepts nearest to `query` by the index: its candidates (the graph's `ef`
/// best and the best of the vectors it has not taken in yet), each checked against the store
/// (live, of the type, with a vector) and scored from its stored vector.
pub(crate) fn approximate(
    store: &ConceptStore,
    index: &VectorIndex,
    query: &[f32],
    k: usize,
    ef: usize,
    concept_type: &str,
    now_ms: u64,
) -> Vec<Neighbour> {
    let Some(query) = unit(query) else {
        return Vec::new();
    };
    let mut top = TopK::new(k);
    let mut seen = HashSet::new();
    for id in index.candidates(&query, k, ef, concept_type) {
        let Some(concept) = store.peek(&id, now_ms) else {
            continue;
        };
        if !seen.insert(id) || (!concept_type.is_empty() && concept.concept_type != concept_type) {
            continue;
        }
        if let Some(embedding) = &concept.embedding {
            top.offer_ref(&concept, cosine(&query, embedding.as_slice()));
        }
    }
    top.into_sorted()
}
