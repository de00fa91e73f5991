//! `MAX_CONCEPTS` and eviction: which ids a bounded store holds, in least-recently-used
//! order.
//!
//! The index lists every id that is stored *or whose store is in the log queue*, so it is
//! decided before a write is logged whether the write needs room. Decisions and log appends
//! happen under one lock, so the log holds them in decision order: an eviction's Delete is
//! always logged after every earlier write of the victim and before any later one, and replay
//! reaches the same state. Evictions are plain Delete records that share the group commit of
//! the store that caused them (no fsync of their own).
//!
//! A "use" is a successful get or a store. After a restart the order is rebuilt from creation
//! times (oldest first), since reads are not logged.
//!
//! Each entry keeps the expiry of the id's newest decided store, so that the TTL reaper
//! (which sees the applied store) can tell whether a newer store is still in the log queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

/// What a full store does with a write of a new id (`EVICTION_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Remove the least recently used concept.
    Lru,
    /// Refuse the write with a `Full` error.
    None,
}

/// `MAX_CONCEPTS` with its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Most concepts held (at least 1).
    pub max_concepts: u64,
    /// What happens at the bound.
    pub policy: EvictionPolicy,
}

/// The recency index of a bounded store.
pub(crate) struct Bounded {
    capacity: Capacity,
    index: Mutex<LruCache<Arc<str>, Option<u64>>>,
    evictions: Arc<AtomicU64>,
}

/// What a store of one id needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Room is there (or the id is already held); these ids must be evicted first.
    Admit(Vec<Arc<str>>),
    /// The store is full and the policy refuses.
    Full,
}

impl Bounded {
    pub(crate) fn new(capacity: Capacity) -> Bounded {
        Bounded {
            capacity,
            index: Mutex::new(LruCache::unbounded()),
            evictions: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The lock under which decisions are made and their records appended.
    pub(crate) fn lock(&self) -> MutexGuard<'_, LruCache<Arc<str>, Option<u64>>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts evictions applied (shared with the apply callbacks).
    pub(crate) fn evictions(&self) -> &Arc<AtomicU64> {
        &self.evictions
    }

    /// Evictions applied so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Marks `id` as just used, if held.
    pub(crate) fn touch(&self, id: &str) {
        self.lock().promote(id);
    }

    /// Decides a store of `id` (expiring at `expires_at_ms`) under `index` (the guard from
    /// [`Bounded::lock`]) and records it as the most recently used.
    pub(crate) fn admit(
        &self,
        index: &mut LruCache<Arc<str>, Option<u64>>,
        id: &Arc<str>,
        expires_at_ms: Option<u64>,
    ) -> Admission {
        if let Some(expiry) = index.get_mut(&**id) {
            *expiry = expires_at_ms;
            return Admission::Admit(Vec::new());
        }
        let max = usize::try_from(self.capacity.max_concepts).unwrap_or(usize::MAX);
        let mut victims = Vec::new();
        if index.len() >= max {
            if self.capacity.policy == EvictionPolicy::None {
                return Admission::Full;
            }
            while index.len() >= max {
                match index.pop_lru() {
                    Some((victim, _)) => victims.push(victim),
                    None => break,
                }
            }
        }
        index.put(Arc::clone(id), expires_at_ms);
        Admission::Admit(victims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let bounded = Bounded::new(Capacity {
            max_concepts: 3,
            policy: EvictionPolicy::Lru,
        });
        let mut index = bounded.lock();
        for name in ["a", "b", "c"] {
            assert_eq!(
                bounded.admit(&mut index, &id(name), None),
                Admission::Admit(vec![])
            );
        }
        drop(index);
        bounded.touch("a");
        let mut index = bounded.lock();
        assert_eq!(
            bounded.admit(&mut index, &id("d"), None),
            Admission::Admit(vec![id("b")])
        );
        // Storing a held id again is a use, not an insertion.
        assert_eq!(
            bounded.admit(&mut index, &id("c"), None),
            Admission::Admit(vec![])
        );
        assert_eq!(
            bounded.admit(&mut index, &id("e"), None),
            Admission::Admit(vec![id("a")])
        );
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn policy_none_refuses_new_ids_when_full_but_accepts_updates() {
        let bounded = Bounded::new(Capacity {
            max_concepts: 1,
            policy: EvictionPolicy::None,
        });
        let mut index = bounded.lock();
        assert_eq!(
            bounded.admit(&mut index, &id("a"), None),
            Admission::Admit(vec![])
        );
        assert_eq!(bounded.admit(&mut index, &id("b"), None), Admission::Full);
        assert_eq!(
            bounded.admit(&mut index, &id("a"), None),
            Admission::Admit(vec![])
        );
        assert_eq!(index.len(), 1);
    }
}
