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

/// What a batch of stores needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BatchAdmission {
    /// Room is there; these ids must be evicted first.
    Admit(Vec<Arc<str>>),
    /// The batch has more distinct ids than `MAX_CONCEPTS`: it could never be held.
    TooMany {
        /// Distinct ids in the batch.
        distinct: usize,
    },
    /// The store has no room for the batch's new ids and the policy refuses.
    Full,
}

/// What the recency index found at start-up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Restored {
    /// Within `MAX_CONCEPTS`, or trimmed to it: these ids must be evicted (oldest first).
    Within(Vec<Arc<str>>),
    /// Over `MAX_CONCEPTS` with the policy `none`: this many are held; new ids are refused
    /// until enough are deleted.
    Over(usize),
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

    /// The index, locked: decisions are made, and their records appended to the log, while
    /// the returned guard is held, so the log holds them in decision order.
    pub(crate) fn lock(&self) -> Recency<'_> {
        Recency {
            capacity: self.capacity,
            index: self.index.lock().unwrap_or_else(PoisonError::into_inner),
        }
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
        self.lock().touch(id);
    }
}

/// The locked recency index and its verbs: every decision about which ids a bounded store
/// holds is one of these, made under the lock.
pub(crate) struct Recency<'a> {
    capacity: Capacity,
    index: MutexGuard<'a, LruCache<Arc<str>, Option<u64>>>,
}

impl Recency<'_> {
    fn max(&self) -> usize {
        usize::try_from(self.capacity.max_concepts).unwrap_or(usize::MAX)
    }

    /// Ids held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Start-up: holds `ids` (oldest first, each with its expiry) and trims to
    /// `MAX_CONCEPTS` when the policy allows it (the bound may have been lowered since).
    pub(crate) fn restore(
        &mut self,
        ids: impl IntoIterator<Item = (Arc<str>, Option<u64>)>,
    ) -> Restored {
        for (id, expires_at_ms) in ids {
            self.index.put(id, expires_at_ms);
        }
        let max = self.max();
        if self.index.len() <= max {
            return Restored::Within(Vec::new());
        }
        if self.capacity.policy == EvictionPolicy::None {
            return Restored::Over(self.index.len());
        }
        let mut victims = Vec::new();
        while self.index.len() > max {
            match self.index.pop_lru() {
                Some((victim, _)) => victims.push(victim),
                None => break,
            }
        }
        Restored::Within(victims)
    }

    /// Decides a store of `id` (expiring at `expires_at_ms`) and records it as the most
    /// recently used.
    pub(crate) fn admit(&mut self, id: &Arc<str>, expires_at_ms: Option<u64>) -> Admission {
        if let Some(expiry) = self.index.get_mut(&**id) {
            *expiry = expires_at_ms;
            return Admission::Admit(Vec::new());
        }
        let max = self.max();
        let mut victims = Vec::new();
        if self.index.len() >= max {
            if self.capacity.policy == EvictionPolicy::None {
                return Admission::Full;
            }
            while self.index.len() >= max {
                match self.index.pop_lru() {
                    Some((victim, _)) => victims.push(victim),
                    None => break,
                }
            }
        }
        self.index.put(Arc::clone(id), expires_at_ms);
        Admission::Admit(victims)
    }

    /// Decides a batch of stores (later items win): every distinct id is held afterwards,
    /// so they must all fit. The batch's held ids become the most recent first, so its
    /// evictions never pick an id of the batch: that Delete would be logged before the batch
    /// record, and the id would come back untracked, over `MAX_CONCEPTS` (found by the engine
    /// fuzz target).
    pub(crate) fn admit_batch(&mut self, ids: &[(Arc<str>, Option<u64>)]) -> BatchAdmission {
        let mut distinct: Vec<&Arc<str>> = ids.iter().map(|(id, _)| id).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() as u64 > self.capacity.max_concepts {
            return BatchAdmission::TooMany {
                distinct: distinct.len(),
            };
        }
        let new_ids = distinct
            .iter()
            .filter(|id| !self.index.contains(&***id))
            .count() as u64;
        let room = self
            .capacity
            .max_concepts
            .saturating_sub(self.index.len() as u64);
        if self.capacity.policy == EvictionPolicy::None && new_ids > room {
            return BatchAdmission::Full;
        }
        for id in &distinct {
            self.index.promote(&***id);
        }
        let mut victims = Vec::new();
        for (id, expires_at_ms) in ids {
            if let Admission::Admit(mut evicted) = self.admit(id, *expires_at_ms) {
                victims.append(&mut evicted);
            }
        }
        BatchAdmission::Admit(victims)
    }

    /// A use of `id` (a get), if held.
    pub(crate) fn touch(&mut self, id: &str) {
        self.index.promote(id);
    }

    /// `id` is no longer held (a delete).
    pub(crate) fn forget(&mut self, id: &str) {
        self.index.pop(id);
    }

    /// None of `ids` is held any more (a type cleared).
    pub(crate) fn forget_all(&mut self, ids: impl IntoIterator<Item = Arc<str>>) {
        for id in ids {
            self.index.pop(&*id);
        }
    }

    /// The reaper found `id`'s applied store expired: forgets it and returns true only if
    /// the newest decided store of the id is that one; a newer store still in the log queue
    /// keeps it (its own entry is indexed when it is applied) and the expiry is not logged.
    pub(crate) fn expire_if_due(&mut self, id: &str, now_ms: u64) -> bool {
        match self.index.peek(id) {
            Some(Some(expires_at_ms)) if *expires_at_ms <= now_ms => {
                self.index.pop(id);
                true
            }
            _ => false,
        }
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
            assert_eq!(index.admit(&id(name), None), Admission::Admit(vec![]));
        }
        drop(index);
        bounded.touch("a");
        let mut index = bounded.lock();
        assert_eq!(index.admit(&id("d"), None), Admission::Admit(vec![id("b")]));
        // Storing a held id again is a use, not an insertion.
        assert_eq!(index.admit(&id("c"), None), Admission::Admit(vec![]));
        assert_eq!(index.admit(&id("e"), None), Admission::Admit(vec![id("a")]));
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn policy_none_refuses_new_ids_when_full_but_accepts_updates() {
        let bounded = Bounded::new(Capacity {
            max_concepts: 1,
            policy: EvictionPolicy::None,
        });
        let mut index = bounded.lock();
        assert_eq!(index.admit(&id("a"), None), Admission::Admit(vec![]));
        assert_eq!(index.admit(&id("b"), None), Admission::Full);
        assert_eq!(index.admit(&id("a"), None), Admission::Admit(vec![]));
        assert_eq!(index.len(), 1);
    }
}
