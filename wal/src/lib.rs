//! sutra's write-ahead log.
//!
//! A directory of fixed-size, preallocated segment files (format in [`segment`]). Records are
//! opaque byte payloads numbered by a log sequence number ([`Lsn`]); the engine above decides
//! what they mean. One writer at a time owns the files (details in [`Wal`]'s module):
//!
//! - **Group commit, on the caller's thread.** Appends join a queue; the first appender to
//!   find the writer free becomes the leader and takes every queued append (up to
//!   `max_batch_bytes`), writes them with one `write`, makes them durable with one
//!   `fdatasync` (under `Always`), then acknowledges each in LSN order by calling its
//!   callback, and looks again until the queue is empty. Appenders that find a leader at work
//!   return at once; the leader writes their records. No thread hand-off when uncontended.
//!   Under `Always` the log thread is the writer instead (a leader would hold its thread for
//!   the `fdatasync`).
//!   Callers apply the change to memory inside that callback, so memory changes in exactly
//!   the order of the log. [`Wal::append_deferred`] queues without leading, so a caller with
//!   several writes in hand gets them into one batch.
//! - **The log thread** (`sutra-wal`) does the `EverySec` syncs, the writing under `Always`,
//!   barriers (a consistent cut for checkpoints), truncation and shutdown.
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

mod channel;
mod config;
mod error;
mod io;
mod latency;
mod lsn;
pub mod segment;
#[cfg(any(test, feature = "test-util"))]
pub mod sim;
mod types;
mod wal;
mod writer;

pub use config::{FsyncPolicy, WalConfig};
pub use error::WalError;
#[cfg(feature = "test-util")]
pub use io::faults;
pub use io::{allocate, DirStorage, Storage, StorageFile};
pub use latency::{Latency, LatencySnapshot};
pub use lsn::Lsn;
pub use types::{Ack, Recovery, WalStats};
pub use wal::Wal;
pub use writer::EVERYSEC_SYNC_BYTES;

#[cfg(test)]
mod tests;
