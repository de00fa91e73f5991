//! What the engine is opened with.

use std::path::PathBuf;
use std::time::Duration;

use sutra_wal::WalConfig;

use crate::capacity::Capacity;
use crate::index::IndexConfig;

/// Where writes go.
#[derive(Debug, Clone)]
pub enum Durability {
    /// Nowhere: memory only, lost at exit.
    InMemory,
    /// A data directory with a write-ahead log and checkpoints.
    Persistent(PersistConfig),
}

/// A persistent engine's data directory and how it is written.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// `STORAGE_PATH`.
    pub data_dir: PathBuf,
    /// The log's settings.
    pub wal: WalConfig,
    /// When to checkpoint.
    pub checkpoint: CheckpointConfig,
    /// Keep vectors in memory-mapped segment files instead of on the heap.
    pub mmap_vectors: bool,
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
    /// `VECTOR_INDEX` and the HNSW settings.
    pub index: IndexConfig,
}

/// When checkpoints happen (besides clean shutdown).
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// At most this long between checkpoints while there are writes (`CHECKPOINT_INTERVAL_SECS`).
    pub interval: Duration,
    /// Or as soon as this many log bytes were written since the last one
    /// (`CHECKPOINT_WAL_BYTES`).
    pub wal_bytes: u64,
}

impl CheckpointConfig {
    /// Default `CHECKPOINT_INTERVAL_SECS`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
    /// Default `CHECKPOINT_WAL_BYTES`: 256 MiB.
    pub const DEFAULT_WAL_BYTES: u64 = 256 * 1024 * 1024;
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: Self::DEFAULT_INTERVAL,
            wal_bytes: Self::DEFAULT_WAL_BYTES,
        }
    }
}
