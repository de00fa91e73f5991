//! The two cache tiers and their counters.
//!
//! - **L1**: in-process, a `moka` cache bounded by entries (`EMBEDDING_CACHE_SIZE`) with a
//!   time to live (`EMBEDDING_CACHE_TTL`), keyed by the full sha256 of (model, text).
//! - **L2**: a sutra-storage cache shard. Each entry is a concept of type `embedding_cache`
//!   with id `emb:{model}:{first 16 hex digits of sha256(text)}` (the seed's key), the text
//!   as content and the vector as its embedding. A 64-bit key prefix collides about once in
//!   2^32 texts; since the text is stored beside the vector, a hit whose content differs from
//!   the asked text is treated as a miss (and overwritten), so a collision costs a model run,
//!   never a wrong vector. One GetMany per request, under the read deadline
//!   (`SUTRA_CACHE_TIMEOUT_MS`): a slow or unreachable shard costs a request at most that,
//!   and the service goes on without it (`l2.enabled = false`), trying it again at most once
//!   per [`L2_RETRY`] and at once after any successful write-back.
//!
//!   Write-backs never wait on the answer and never switch L2 off: they join a queue bounded
//!   by entries (`SUTRA_CACHE_WRITE_QUEUE`) that one task drains as StoreMany calls of up to
//!   [`WRITE_BATCH`] entries over their own connection, each under its own deadline
//!   (`SUTRA_CACHE_WRITE_TIMEOUT_MS`) and retried [`WRITE_RETRIES`] times. An entry is dropped
//!   only when the queue is full or its retries are spent, and counted
//!   (`l2.write_backs.dropped`): a shard that stalls for a second loses nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sutra_client::sutra_protocol::{ConceptId, StoreConcept, Vector};
use sutra_client::{Client, ClientConfig};
use tokio::sync::{mpsc, Mutex};

use crate::config::L2Config;
use crate::model::Computed;

/// Concept type of L2 entries (what `/cache/clear` clears on the shard).
pub const L2_TYPE: &str = "embedding_cache";

/// Least time between attempts to reach a shard that was down.
pub const L2_RETRY: Duration = Duration::from_secs(1);

/// Most entries in one write-back StoreMany (the shard's default `MAX_BATCH_ITEMS`).
pub const WRITE_BATCH: usize = 256;

/// Retries of a failed write-back StoreMany before its entries are dropped.
pub const WRITE_RETRIES: u32 = 3;

/// Wait before retry `n` (1-based): `n` times this.
const WRITE_BACKOFF: Duration = Duration::from_millis(200);

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
    /// Lookups, under the read deadline.
    reader: Client,
    /// Write-backs, on a connection of their own under the write deadline: a slow write never
    /// delays a lookup queued behind it.
    writer: Client,
    config: L2Config,
    up: AtomicBool,
    /// When the shard was last found down (for [`L2_RETRY`]).
    down_since: Mutex<Option<Instant>>,
    /// Its lookup counters.
    pub counters: Counters,
    /// Write-backs waiting for the writer task.
    queue: mpsc::UnboundedSender<Vec<StoreConcept>>,
    /// Its write-back counters.
    pub writes: WriteCounters,
}

/// What became of write-backs (entries, not calls).
#[derive(Debug, Default)]
pub struct WriteCounters {
    /// Entries in the queue now (bounded by `SUTRA_CACHE_WRITE_QUEUE`).
    pub queued: AtomicU64,
    /// Entries the shard acknowledged.
    pub written: AtomicU64,
    /// StoreMany calls that failed and were tried again.
    pub retries: AtomicU64,
    /// Entries given up: the queue was full, or every retry failed.
    pub dropped: AtomicU64,
}

impl WriteCounters {
    /// `{queued, written, retries, dropped}`.
    pub fn json(&self) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "queued": load(&self.queued),
            "written": load(&self.written),
            "retries": load(&self.retries),
            "dropped": load(&self.dropped),
        })
    }

    /// Back to zero, but for `queued` (`/cache/clear`).
    pub fn reset(&self) {
        self.written.store(0, Ordering::Relaxed);
        self.retries.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
    }
}

impl L2 {
    /// Clients for the shard at `config.addr` (they connect on first use) and the
    /// write-back task, which ends when the returned `L2` is dropped. Call within a runtime.
    pub fn start(config: L2Config) -> Arc<L2> {
        let client = |timeout| {
            Client::lazy(
                config.addr.clone(),
                ClientConfig {
                    connect_timeout: timeout,
                    request_timeout: timeout,
                    auth_token: config.auth_token.clone(),
                    ..ClientConfig::default()
                },
            )
        };
        let (queue, pending) = mpsc::unbounded_channel();
        let l2 = Arc::new(L2 {
            reader: client(config.timeout),
            writer: client(config.write_timeout),
            config,
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            counters: Counters::default(),
            queue,
            writes: WriteCounters::default(),
        });
        tokio::spawn(write_backs(Arc::downgrade(&l2), pending));
        l2
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
        match self.reader.get_many(&refs).await {
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

    /// Queues `entries` (text, computed) to be written back, living `ttl_seconds` (or
    /// `SUTRA_CACHE_TTL`); returns at once. Counted as dropped when the queue is full.
    pub fn write_back(
        &self,
        model: &str,
        entries: Vec<(String, Arc<Computed>)>,
        ttl_seconds: Option<u64>,
    ) {
        if entries.is_empty() {
            return;
        }
        let ttl = ttl_seconds.unwrap_or(self.config.ttl.as_secs());
        let stores: Vec<StoreConcept> = entries
            .into_iter()
            .filter_map(|(text, computed)| {
                let id = ConceptId::parse(&l2_id(model, &text)).ok()?;
                let dimension = u32::try_from(computed.vector.len()).ok()?;
                let vector = Vector::new(computed.vector.clone(), dimension).ok()?;
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
                Some(store)
            })
            .collect();
        let count = stores.len() as u64;
        let queued = self.writes.queued.fetch_add(count, Ordering::AcqRel) + count;
        if queued > self.config.write_queue || self.queue.send(stores).is_err() {
            self.writes.queued.fetch_sub(count, Ordering::AcqRel);
            self.writes.dropped.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// One StoreMany of a write-back batch, retried; whether the shard took it.
    async fn write(&self, stores: Vec<StoreConcept>) -> bool {
        let count = stores.len() as u64;
        let mut attempt = 0;
        loop {
            match self.writer.store_many(stores.clone()).await {
                Ok(_) => {
                    self.writes.written.fetch_add(count, Ordering::Relaxed);
                    // The shard answers: lookups need not wait for the next probe.
                    self.mark(true, None).await;
                    return true;
                }
                Err(error) if attempt < WRITE_RETRIES => {
                    attempt += 1;
                    self.writes.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, attempt, "L2 write-back failed; retrying");
                    tokio::time::sleep(WRITE_BACKOFF * attempt).await;
                }
                Err(error) => {
                    self.writes.dropped.fetch_add(count, Ordering::Relaxed);
                    tracing::warn!(%error, entries = count, "L2 write-back failed after {WRITE_RETRIES} retries; entries dropped");
                    return false;
                }
            }
        }
    }

    /// Removes every L2 entry (ClearType `embedding_cache`); the number removed.
    pub async fn clear(&self) -> Result<u64, String> {
        self.reader
            .clear_type(L2_TYPE)
            .await
            .map_err(|error| error.to_string())
    }
}

/// The write-back task: takes what is queued, up to [`WRITE_BATCH`] entries per StoreMany,
/// until the `L2` is dropped.
async fn write_backs(l2: Weak<L2>, mut pending: mpsc::UnboundedReceiver<Vec<StoreConcept>>) {
    let mut batch: Vec<StoreConcept> = Vec::new();
    while let Some(first) = pending.recv().await {
        batch.extend(first);
        while batch.len() < WRITE_BATCH {
            match pending.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let Some(l2) = l2.upgrade() else { return };
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(WRITE_BATCH));
            let stores = std::mem::replace(&mut batch, rest);
            let count = stores.len() as u64;
            l2.write(stores).await;
            l2.writes.queued.fetch_sub(count, Ordering::AcqRel);
        }
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
