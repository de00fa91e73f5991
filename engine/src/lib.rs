//! The concept engine: the only code that changes stored state.
//!
//! Writes go through the write-ahead log (`sutra-wal`): the engine encodes a [`Record`],
//! appends it, and applies it to the in-memory store *inside the log's acknowledgement*, on
//! whichever thread wrote the batch (usually the request's own), in LSN order. So memory changes in exactly the order of the log, a write
//! is visible to readers only once it is durable under the fsync policy, and replaying the
//! log rebuilds the same state. Reads never touch the log.
//!
//! Checkpoints (`persist`) snapshot every live concept at a consistent LSN (taken on the
//! log thread between batches, while no other batch is written) and delete the log segments the snapshot covers. Start-up
//! loads the newest snapshot, then replays the log after it.
//!
//! An engine can also run without a data directory ([`Durability::InMemory`]), applying
//! writes at once; unit tests use that.
//!
//! The engine logs nothing on the request path; errors are logged once, by the session that
//! reports them. Recovery and checkpoints log at `info`, failures at `warn`/`error`.

mod capacity;
mod clock;
mod config;
mod counters;
mod datadir;
mod engine;
mod error;
mod hnsw;
mod index;
mod mmap;
mod pending;
mod persist;
mod record;
mod search;
mod similarity;
mod slots;
mod snapshot;
#[cfg(test)]
mod storage_md;
mod store;
mod vectors;

pub use capacity::{Capacity, EvictionPolicy};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CheckpointConfig, Durability, EngineConfig, PersistConfig};
pub use counters::{EngineCounters, Latencies, RecoverySummary};
pub use engine::{Engine, EVENT_TYPE};
pub use error::EngineError;
pub use index::{IndexConfig, IndexKind, IndexStats};
pub use pending::PendingWrite;
pub use search::{Found, Neighbour};
/// The log's settings and latency figures, for the engine's users (the server configures and
/// reports them without depending on the log crate).
pub use sutra_wal::{FsyncPolicy, Latency, LatencySnapshot, WalConfig};
