//! sutra's write-ahead log.
//!
//! A directory of fixed-size, preallocated segment files (format in [`segment`]). Records are
//! opaque byte payloads numbered by a log sequence number ([`Lsn`]); the engine above decides
//! what they mean. One dedicated thread (`sutra-wal`) owns the files and does all writing:
//!
//! - **Group commit.** Appends queue up while the thread writes; it takes every queued append
//!   (up to `max_batch_bytes`), writes them with one `write`, makes them durable with one
//!   `fdatasync`, then acknowledges each in LSN order by calling its callback on the WAL
//!   thread. Callers apply the change to memory inside that callback, so memory changes in
//!   exactly the order of the log.
//! - **Policies** ([`FsyncPolicy`]): `Always` acknowledges after `fdatasync`; `EverySec`
//!   after the write, syncing at most one second later (and whenever
//!   [`EVERYSEC_SYNC_BYTES`] are unsynced, so a heavy writer never meets one long sync);
//!   `Never` after the write.
//! - **Poisoning.** A failed write or sync is never retried: the kernel may already have
//!   dropped the dirty pages, so a retry that succeeds proves nothing. The batch's appends get
//!   the error, the log refuses every later append ([`WalError::Poisoned`]), and a restart
//!   recovers what was durable.
//! - **Files** are created as a temporary file, allocated, written, synced, renamed into
//!   place, then the directory is synced; deletions are followed by a directory sync too.
//! - **Recovery** ([`Wal::open`]) replays records after a checkpoint's LSN, truncates a torn
//!   tail (logging how many bytes were dropped) and refuses to start on corruption in the
//!   middle of the log.
//!
//! This crate knows nothing of concepts, vectors, networking or tokio. Its file access goes
//! through [`Storage`], so tests can inject failures and simulate power cuts (`test-util`).
//!
//! Logging: recovery results at `info`, a dropped torn tail at `warn`, a poisoning at `error`.

#![deny(clippy::indexing_slicing)]

mod io;
mod latency;
pub mod segment;
#[cfg(any(test, feature = "test-util"))]
pub mod sim;
mod writer;

pub use writer::EVERYSEC_SYNC_BYTES;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[cfg(feature = "test-util")]
pub use io::faults;
pub use io::{allocate, DirStorage, Storage, StorageFile};
pub use latency::{Latency, LatencySnapshot};

/// A log sequence number: the first record is 1, each record one more.
pub type Lsn = u64;

/// Called on the WAL thread once an append is durable under the policy (or failed).
pub type Ack = Box<dyn FnOnce(Result<Lsn, WalError>) + Send>;

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
    /// Most appends waiting for the WAL thread; beyond it appends fail with
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

enum Command {
    Append {
        payload: Vec<u8>,
        ack: Ack,
    },
    Barrier(Box<dyn FnOnce(Lsn) + Send>),
    Truncate {
        through_lsn: Lsn,
    },
    Shutdown(mpsc::Sender<Result<(), WalError>>),
    #[cfg(any(test, feature = "test-util"))]
    Halt(mpsc::Sender<()>),
}

pub(crate) struct Shared {
    poisoned: AtomicBool,
    stats: WalStats,
}

/// The log: a handle to the WAL thread.
pub struct Wal {
    commands: SyncSender<Command>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    max_record_bytes: u32,
}

impl Wal {
    /// Recovers the log in `storage` and starts the WAL thread. Every record with an LSN
    /// above `checkpoint_lsn` is passed to `replay`, in order, before this returns.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: &WalConfig,
        checkpoint_lsn: Lsn,
        replay: impl FnMut(Lsn, &[u8]) -> Result<(), WalError>,
    ) -> Result<(Wal, Recovery), WalError> {
        config.validate()?;
        let shared = Arc::new(Shared {
            poisoned: AtomicBool::new(false),
            stats: WalStats::default(),
        });
        let (writer, recovery) = writer::Writer::recover(
            storage,
            config.clone(),
            checkpoint_lsn,
            replay,
            Arc::clone(&shared),
        )?;
        let (commands, receiver) = mpsc::sync_channel(config.queue_len);
        let thread = std::thread::Builder::new()
            .name("sutra-wal".to_owned())
            .spawn(move || writer.run(&receiver))
            .map_err(|error| WalError::io("spawn", "sutra-wal thread", error))?;
        let max_record_bytes = config.max_record_bytes;
        Ok((
            Wal {
                commands,
                thread: Some(thread),
                shared,
                max_record_bytes,
            },
            recovery,
        ))
    }

    /// Queues `payload`; `ack` runs on the WAL thread when it is durable under the policy, or
    /// with the error if it cannot be. Never blocks.
    pub fn append(&self, payload: Vec<u8>, ack: Ack) {
        if self.shared.poisoned.load(Ordering::Acquire) {
            ack(Err(WalError::Poisoned));
            return;
        }
        if payload.is_empty() {
            ack(Err(WalError::EmptyRecord));
            return;
        }
        if payload.len() > self.max_record_bytes as usize {
            ack(Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: self.max_record_bytes,
            }));
            return;
        }
        match self.commands.try_send(Command::Append { payload, ack }) {
            Err(TrySendError::Full(Command::Append { ack, .. })) => ack(Err(WalError::QueueFull)),
            Err(TrySendError::Disconnected(Command::Append { ack, .. })) => {
                ack(Err(WalError::Closed));
            }
            // Sent, or (impossible) another command came back.
            Ok(()) | Err(_) => {}
        }
    }

    /// Runs `then` on the WAL thread after every append queued before it has been written and
    /// acknowledged, with the last LSN written. A consistent cut for checkpoints. Blocks only
    /// while the queue is full.
    pub fn barrier(&self, then: Box<dyn FnOnce(Lsn) + Send>) -> Result<(), WalError> {
        self.commands
            .send(Command::Barrier(then))
            .map_err(|_| WalError::Closed)
    }

    /// Deletes the segments whose records all have LSNs up to `through_lsn` (covered by a
    /// durable checkpoint). The active segment is never deleted.
    pub fn truncate(&self, through_lsn: Lsn) -> Result<(), WalError> {
        self.commands
            .send(Command::Truncate { through_lsn })
            .map_err(|_| WalError::Closed)
    }

    /// Whether the log refuses writes after a failure.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// The log's counters.
    pub fn stats(&self) -> &WalStats {
        &self.shared.stats
    }

    /// Writes and syncs everything queued, then stops the WAL thread.
    pub fn shutdown(mut self) -> Result<(), WalError> {
        let (reply, result) = mpsc::channel();
        self.commands
            .send(Command::Shutdown(reply))
            .map_err(|_| WalError::Closed)?;
        let result = result.recv().map_err(|_| WalError::Closed)?;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result
    }

    /// Stops the WAL thread at once, without writing or syncing what is queued: a simulated
    /// crash for tests. Queued appends are never acknowledged.
    #[cfg(any(test, feature = "test-util"))]
    pub fn halt(mut self) {
        let (reply, done) = mpsc::channel();
        if self.commands.send(Command::Halt(reply)).is_ok() {
            let _ = done.recv();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Last resort only: `shutdown` is the way to stop the log and learn whether the final
        // sync worked. Dropping the sender ends the thread after it drains the queue.
        if let Some(thread) = self.thread.take() {
            let (reply, _) = mpsc::channel();
            let _ = self.commands.send(Command::Shutdown(reply));
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
