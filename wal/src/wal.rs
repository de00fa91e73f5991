//! The log's handle: opening (recovery, then the WAL thread), appends, barriers, truncation
//! and shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::channel::{Command, Shared};
use crate::config::WalConfig;
use crate::error::WalError;
use crate::io::Storage;
use crate::lsn::Lsn;
use crate::types::{Ack, Recovery, WalStats};
use crate::writer;

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
