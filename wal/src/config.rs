//! The log's settings.

use std::time::Duration;

use crate::error::WalError;
use crate::segment;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After `fdatasync`: an acknowledged record survives a power cut.
    Always,
    /// After `write`; `fdatasync` at most `sync_interval` later. A power cut (not a process
    /// crash) can lose the last interval's acknowledged records.
    EverySec,
    /// After `write`; the OS flushes when it likes. A power cut can lose any record written
    /// since the last checkpoint or segment roll.
    Never,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Size of each segment file.
    pub segment_bytes: u64,
    /// Largest payload accepted.
    pub max_record_bytes: u32,
    /// When appends are acknowledged.
    pub fsync: FsyncPolicy,
    /// Longest time written records stay unsynced under `EverySec`.
    pub sync_interval: Duration,
    /// Most payload bytes written in one batch.
    pub max_batch_bytes: usize,
    /// Most appends waiting to be written; beyond it appends fail with
    /// [`WalError::QueueFull`].
    pub queue_len: usize,
}

impl WalConfig {
    /// Default `segment_bytes`: 64 MiB.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
    /// Default `max_batch_bytes`: 4 MiB.
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
    /// Default `queue_len`.
    pub const DEFAULT_QUEUE_LEN: usize = 16 * 1024;

    /// Checks that a record of the maximum size fits in a segment.
    pub fn validate(&self) -> Result<(), WalError> {
        let largest = segment::record_span(self.max_record_bytes as usize)
            .and_then(|span| span.checked_add(segment::SEGMENT_HEADER_BYTES))
            .map_or(u64::MAX, |bytes| bytes as u64);
        if largest > self.segment_bytes {
            return Err(WalError::Config {
                reason: "WAL_SEGMENT_BYTES is smaller than the largest record",
            });
        }
        if self.queue_len == 0 || self.max_batch_bytes == 0 {
            return Err(WalError::Config {
                reason: "WAL queue length and batch size must be positive",
            });
        }
        Ok(())
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            max_record_bytes: 16 * 1024 * 1024,
            fsync: FsyncPolicy::Always,
            sync_interval: Duration::from_secs(1),
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
            queue_len: Self::DEFAULT_QUEUE_LEN,
        }
    }
}
