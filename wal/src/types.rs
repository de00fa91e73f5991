//! Acknowledgements, counters and what recovery found.

use std::sync::atomic::AtomicU64;

use crate::error::WalError;
use crate::latency::Latency;
use crate::lsn::Lsn;

/// Called on the WAL thread once an append is durable under the policy (or failed).
pub type Ack = Box<dyn FnOnce(Result<Lsn, WalError>) + Send>;

/// Counters of the log's work.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Records appended and acknowledged.
    pub appends: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// `fdatasync` calls on segments.
    pub syncs: AtomicU64,
    /// Segment files currently in the log.
    pub segments: AtomicU64,
    /// Time each `fdatasync` of a segment took.
    pub sync_latency: Latency,
}

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records handed to the replay callback.
    pub replayed: u64,
    /// Segments read.
    pub segments: usize,
    /// Bytes of a torn tail that were dropped.
    pub dropped_bytes: usize,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
}
