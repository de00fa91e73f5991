//! What the engine reports about itself: counters, recovery and latencies.

use std::time::Duration;

use sutra_wal::LatencySnapshot;

/// What start-up recovered from the data directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Concepts loaded from the newest snapshot.
    pub snapshot_concepts: u64,
    /// Log records replayed after it.
    pub replayed_records: u64,
    /// Bytes of a torn log tail dropped.
    pub dropped_tail_bytes: u64,
    /// Concepts held after recovery.
    pub concepts: u64,
    /// Time recovery took.
    pub elapsed: Duration,
}

/// Durations the engine times, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latencies {
    /// Each `fdatasync` of a log segment.
    pub wal_sync: LatencySnapshot,
    /// Each checkpoint, from the cut to the deleted segments.
    pub checkpoint: LatencySnapshot,
}

/// Sizes and counters for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Live concepts (including expired ones not yet removed).
    pub concepts: u64,
    /// Encoded bytes of those concepts.
    pub bytes_used: u64,
    /// Log records written.
    pub wal_appends: u64,
    /// Log batches written.
    pub wal_batches: u64,
    /// Log `fdatasync` calls.
    pub wal_syncs: u64,
    /// Log segment files.
    pub wal_segments: u64,
    /// Checkpoints completed since start.
    pub checkpoints: u64,
    /// LSN of the newest checkpoint.
    pub checkpoint_lsn: u64,
    /// Whether writes go to a data directory.
    pub persistent: bool,
    /// Vector slots holding a vector (`MMAP_ENABLED`).
    pub vector_slots_used: u64,
    /// Vector slots allocated on disk.
    pub vector_slots_allocated: u64,
    /// `MAX_CONCEPTS`; 0 when unbounded.
    pub max_concepts: u64,
    /// Concepts evicted to stay within `MAX_CONCEPTS`.
    pub evictions: u64,
    /// Expired concepts removed by the reaper.
    pub expirations: u64,
}
