//! Why the log failed.

use std::sync::Arc;

use crate::lsn::Lsn;

/// Why the log failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file operation failed.
    #[error("{op} {file}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        file: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// A segment is damaged somewhere other than its tail.
    #[error("WAL segment {file} is corrupt at byte {offset}: {reason}; refusing to start (restore the data directory from a backup or move the damaged file away)")]
    Corrupt {
        /// The file.
        file: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A segment was written by another format version.
    #[error("WAL segment {file} has format version {found}; this build reads version {supported}")]
    UnsupportedFormat {
        /// The file.
        file: String,
        /// Its version.
        found: u32,
        /// The supported version.
        supported: u32,
    },
    /// Records between the checkpoint and the log are missing.
    #[error("WAL is missing records {expected} to {found} (segments deleted or lost); refusing to start")]
    Gap {
        /// The next LSN recovery needed.
        expected: Lsn,
        /// The LSN it found instead.
        found: Lsn,
    },
    /// An earlier write or sync failed; the log accepts nothing until restart.
    #[error("the write-ahead log failed earlier and refuses writes until the server restarts")]
    Poisoned,
    /// The payload is larger than `max_record_bytes`.
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge {
        /// Its size.
        len: usize,
        /// The maximum.
        max: u32,
    },
    /// An empty payload (records are never empty; an empty one is a caller bug).
    #[error("empty log record")]
    EmptyRecord,
    /// Too many appends are waiting.
    #[error("write-ahead log queue is full")]
    QueueFull,
    /// The log has shut down.
    #[error("write-ahead log is closed")]
    Closed,
    /// The configuration is unusable.
    #[error("invalid WAL configuration: {reason}")]
    Config {
        /// Why.
        reason: &'static str,
    },
}

impl WalError {
    pub(crate) fn io(op: &'static str, file: &str, source: std::io::Error) -> WalError {
        WalError::Io {
            op,
            file: file.to_owned(),
            source: Arc::new(source),
        }
    }

    /// Whether the error is a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}
