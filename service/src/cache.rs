//! The two cache tiers and their counters.
//!
//! - **L1**: in-process, a `moka` cache bounded by entries (`EMBEDDING_CACHE_SIZE`) with a
//!   time to live (`EMBEDDING_CACHE_TTL`), keyed by the full sha256 of (model, text).
//! - **L2**: a sutra-storage cache shard. Each entry is a concept of type `embedding_cache`
//!   with id `emb:{model}:{first 16 hex digits of sha256(text)}` (the seed's key), the text
//!   as content and the vector as its embedding. A 64-bit key prefix collides about once in
//!   2^32 texts; since the text is stored beside the vector, a hit whose content differs from
//!   the asked text is treated as a miss (and overwritten), so a collision costs a model run,
//!   never a wrong vector. One GetMany per request; write-backs are StoreMany calls spawned
//!   after the answer. When the shard is unreachable the service goes on without it, reports
//!   `l2.enabled = false`, and tries it again at most once per [`L2_RETRY`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sutra_client::sutra_protocol::{ConceptId, StoreConcept, Vector};
use sutra_client::{Client, ClientConfig};
use tokio::sync::Mutex;

use crate::config::L2Config;
use crate::model::Computed;

/// Concept type of L2 entries (what `/cache/clear` clears on the shard).
pub const L2_TYPE: &str = "embedding_cache";

/// Least time between attempts to reach a shard that was down.
pub const L2_RETRY: Duration = Duration::from_secs(1);

/// A cache key: sha256 over the model name, a zero byte and the text.
pub type Key = [u8; 32];

/// The key of `text` under `model`.
pub fn key(model: &str, text: &str) -> Key {
    let mut hash = Sha256::new();
    hash.update(model.as_bytes());
    hash.update([0]);
    hash.update(text.as_bytes());
    hash.finalize().into()
}

/// The L2 concept id of `text` under `model`: the seed's `emb:{model}:{16 hex}`.
pub fn l2_id(model: &str, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let prefix = u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    format!("emb:{model}:{prefix:016x}")
}

/// Hits and misses of one tier.
#[derive(Debug, Default)]
pub struct Counters {
    /// Answered from this tier.
    pub hits: AtomicU64,
    /// Asked and not found.
    pub misses: AtomicU64,
}

impl Counters {
    /// Back to zero (`/cache/clear`).
    pub fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
    }

    /// `{hits, misses, hit_rate}`.
    pub fn json(&self) -> serde_json::Value {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        serde_json::json!({"hits": hits, "misses": misses, "hit_rate": rate(hits, misses)})
    }
}

#[allow(clippy::cast_precision_loss, reason = "a ratio for people")]
fn rate(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

/// The in-process tier; `EMBEDDING_CACHE_SIZE=0` turns it off (every lookup misses).
pub struct L1 {
    cache: Option<moka::sync::Cache<Key, Arc<Computed>>>,
    /// Its counters.
    pub counters: Counters,
}

impl L1 {
    /// At most `capacity` entries, each living `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> L1 {
        L1 {
            cache: (capacity > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build()
            }),
            counters: Counters::default(),
        }
    }

    /// Looks `key` up, counting the hit or miss.
    pub fn get(&self, key: &Key) -> Option<Arc<Computed>> {
        let found = self.cache.as_ref().and_then(|cache| cache.get(key));
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `value` under `key`.
    pub fn insert(&self, key: Key, value: Arc<Computed>) {
        if let Some(cache) = &self.cache {
            cache.insert(key, value);
        }
    }

    /// Entries held (approximate while writes are pending).
    pub fn size(&self) -> u64 {
        self.cache.as_ref().map_or(0, |cache| {
            cache.run_pending_tasks();
            cache.entry_count()
        })
    }

    /// Empties it.
    pub fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
            cache.run_pending_tasks();
        }
    }
}

/// The cache-shard tier.
pub struct L2 {
    client: Client,
    config: L2Config,
    up: AtomicBool,
    /// When the shard was last found down (for [`L2_RETRY`]).
    down_since: Mutex<Option<Instant>>,
    /// Its counters.
    pub counters: Counters,
    /// Write-backs that failed (the shard was down or refused them).
    pub write_errors: AtomicU64,
}

impl L2 {
    /// A client for the shard at `config.addr`; it connects on first use.
    pub fn new(config: L2Config) -> L2 {
        let client = Client::lazy(
            config.addr.clone(),
            ClientConfig {
                connect_timeout: config.timeout,
                request_timeout: config.timeout,
                auth_token: config.auth_token.clone(),
                ..ClientConfig::default()
            },
        );
        L2 {
            client,
            config,
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            counters: Counters::default(),
            write_errors: AtomicU64::new(0),
        }
    }

    /// Whether the last round trip reached the shard.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The shard's address.
    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    /// Whether to try the shard now: it is up, or it was down for at least [`L2_RETRY`].
    async fn should_try(&self) -> bool {
        if self.is_up() {
            return true;
        }
        let mut down_since = self.down_since.lock().await;
        match *down_since {
            Some(since) if since.elapsed() < L2_RETRY => false,
            _ => {
                // This caller probes; others wait for the next window.
                *down_since = Some(Instant::now());
                true
            }
        }
    }

    async fn mark(&self, ok: bool, error: Option<&str>) {
        let was_up = self.up.swap(ok, Ordering::AcqRel);
        if ok && !was_up {
            tracing::info!(addr = %self.config.addr, "L2 cache shard reachable again");
            *self.down_since.lock().await = None;
        } else if !ok && was_up {
            tracing::warn!(addr = %self.config.addr, error = error.unwrap_or(""), "L2 cache shard unreachable; serving from L1 and the model");
            *self.down_since.lock().await = Some(Instant::now());
        }
    }

    /// One GetMany for `texts` under `model`: a vector per text that the shard holds for
    /// exactly that text, of dimension `dimension`. `None` when the shard is not used now.
    pub async fn get_many(
        &self,
        model: &str,
        texts: &[&str],
        dimension: usize,
    ) -> Option<Vec<Option<Computed>>> {
        if texts.is_empty() || !self.should_try().await {
            return None;
        }
        let ids: Vec<String> = texts.iter().map(|text| l2_id(model, text)).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        match self.client.get_many(&refs).await {
            Ok(found) => {
                self.mark(true, None).await;
                let answers: Vec<Option<Computed>> = found
                    .into_iter()
                    .zip(texts)
                    .map(|(concept, text)| {
                        let concept = concept?;
                        let vector = concept.embedding.as_ref()?;
                        (concept.content == *text && vector.as_slice().len() == dimension).then(
                            || Computed {
                                vector: vector.as_slice().to_vec(),
                                truncated: concept.attributes.contains_key("truncated"),
                                tokens: concept
                                    .attributes
                                    .get("tokens")
                                    .and_then(|tokens| tokens.parse().ok())
                                    .unwrap_or(0),
                            },
                        )
                    })
                    .collect();
                let hits = answers.iter().filter(|answer| answer.is_some()).count() as u64;
                self.counters.hits.fetch_add(hits, Ordering::Relaxed);
                self.counters
                    .misses
                    .fetch_add(answers.len() as u64 - hits, Ordering::Relaxed);
                Some(answers)
            }
            Err(error) => {
                self.mark(false, Some(&error.to_string())).await;
                None
            }
        }
    }

    /// Writes `entries` (text, computed) back in one StoreMany, living `ttl_seconds` (or
    /// `SUTRA_CACHE_TTL`). Callers spawn it.
    pub async fn store_many(
        &self,
        model: &str,
        entries: Vec<(String, Arc<Computed>)>,
        ttl_seconds: Option<u64>,
    ) {
        if entries.is_empty() || !self.is_up() {
            return;
        }
        let ttl = ttl_seconds.unwrap_or(self.config.ttl.as_secs());
        let stores: Result<Vec<StoreConcept>, String> = entries
            .into_iter()
            .map(|(text, computed)| {
                let id = ConceptId::parse(&l2_id(model, &text)).map_err(|e| e.to_string())?;
                let dimension =
                    u32::try_from(computed.vector.len()).map_err(|error| error.to_string())?;
                let vector = Vector::new(computed.vector.clone(), dimension)
                    .map_err(|error| error.to_string())?;
                let mut store = StoreConcept::new(id, text);
                store.concept_type = L2_TYPE.to_owned();
                store.model = model.to_owned();
                store.embedding = Some(vector);
                store.ttl_seconds = Some(ttl);
                store
                    .attributes
                    .insert("tokens".to_owned(), computed.tokens.to_string());
                if computed.truncated {
                    store
                        .attributes
                        .insert("truncated".to_owned(), "true".to_owned());
                }
                Ok(store)
            })
            .collect();
        let result = match stores {
            Ok(stores) => self
                .client
                .store_many(stores)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string()),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, "L2 write-back failed");
        }
    }

    /// Removes every L2 entry (ClearType `embedding_cache`); the number removed.
    pub async fn clear(&self) -> Result<u64, String> {
        self.client
            .clear_type(L2_TYPE)
            .await
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_ids_are_the_seeds_keys() {
        let id = l2_id("all-MiniLM-L6-v2", "hello");
        // sha256("hello") = 2cf24dba5fb0a30e...
        assert_eq!(id, "emb:all-MiniLM-L6-v2:2cf24dba5fb0a30e");
        assert_ne!(key("a", "bc"), key("ab", "c"));
    }

    #[test]
    fn l1_counts_hits_and_misses() {
        let l1 = L1::new(10, Duration::from_secs(60));
        let k = key("m", "t");
        assert!(l1.get(&k).is_none());
        l1.insert(
            k,
            Arc::new(Computed {
                vector: vec![1.0],
                truncated: false,
                tokens: 3,
            }),
        );
        assert!(l1.get(&k).is_some());
        assert_eq!(l1.counters.hits.load(Ordering::Relaxed), 1);
        assert_eq!(l1.counters.misses.load(Ordering::Relaxed), 1);
        assert_eq!(l1.size(), 1);
        l1.clear();
        assert_eq!(l1.size(), 0);
        let off = L1::new(0, Duration::from_secs(60));
        off.insert(
            k,
            Arc::new(Computed {
                vector: vec![1.0],
                truncated: false,
                tokens: 1,
            }),
        );
        assert!(off.get(&k).is_none());
    }
}
