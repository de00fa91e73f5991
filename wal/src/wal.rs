//! The log's handle: opening (recovery, then the log thread), appends, barriers, truncation
//! and shutdown.
//!
//! Appends are written by the thread that makes them, not handed to a log thread: an append
//! joins a queue, and the first appender to find the writer free becomes the leader, writing
//! every queued record as one batch (one `pwrite`, and under `Always` one `fdatasync`: group
//! commit) and running their acknowledgements, then looking again until the queue is empty.
//! Appenders that find a leader at work return at once; the leader writes their records
//! too. So an uncontended write costs no thread hand-off and no wake-up at all (the hand-off
//! to a log thread and back was the largest cost of a store beyond the network; see
//! bench/RESULTS.md), and contended writes still share one write and one sync.
//!
//! The log thread (`sutra-wal`) keeps the rest: under `EverySec` it syncs once an interval
//! has passed or [`crate::EVERYSEC_SYNC_BYTES`] are unsynced (leaders never sync under
//! `EverySec`, so a request never waits for a sync the policy does not promise it), and it
//! runs barriers, truncation and shutdown, each after writing what is queued.
//!
//! Under `Always` the log thread also does the writing: appenders queue and wake it. A
//! leader would hold a runtime thread for the whole `fdatasync`, and the requests that
//! thread was serving would wait with it; with the log thread syncing, the runtime keeps
//! reading requests meanwhile, and they form the next group commit (measured: 55k against
//! 46k stores/s with 50 clients; bench/RESULTS.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::channel::{Command, Queued, Shared};
use crate::config::{FsyncPolicy, WalConfig};
use crate::error::WalError;
use crate::io::Storage;
use crate::lsn::Lsn;
use crate::types::{Ack, Recovery, WalStats};
use crate::writer::Writer;

/// Control commands waiting for the log thread (appends do not go through it).
const COMMAND_QUEUE_LEN: usize = 64;

/// The log: its writer, the queue of appends waiting for it, and the log thread.
pub struct Wal {
    core: Arc<Core>,
    thread: Option<JoinHandle<()>>,
    max_record_bytes: u32,
}

/// What appenders and the log thread share.
struct Core {
    shared: Arc<Shared>,
    /// Appends not yet written, in order; `None` once the log is closed.
    queue: Mutex<Option<Vec<Queued>>>,
    /// The writer, and a batch buffer kept for reuse; whoever holds it writes. The writer
    /// is `None` once the log is closed.
    writer: Mutex<Leader>,
    /// Set by a leader that found an `EverySec` sync due; the log thread does it.
    sync_wanted: AtomicBool,
    /// Under `Always`: set by an appender that woke the log thread, cleared by the log thread
    /// before it writes the queue (so one wake-up serves every append queued until then).
    write_wanted: AtomicBool,
    /// Appenders lead (every policy but `Always`), or leave the writing to the log thread.
    appenders_lead: bool,
    commands: SyncSender<Command>,
    queue_len: usize,
    max_batch_bytes: usize,
}

/// What the thread that writes holds.
struct Leader {
    writer: Option<Writer>,
    batch: Vec<Queued>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Core {
    /// Gets the queued appends written: by this thread, or by the log thread under `Always`.
    fn write_queued(&self) {
        if self.appenders_lead {
            self.lead();
        } else if !self.write_wanted.swap(true, Ordering::SeqCst) {
            // Full means the log thread has commands waiting; it writes the queue before each.
            let _ = self.commands.try_send(Command::Write);
        }
    }

    /// Writes the queue while the writer is free; returns when the queue is empty or another
    /// thread holds the writer (that thread looks at the queue again before it lets go).
    fn lead(&self) {
        loop {
            let mut writer = match self.writer.try_lock() {
                Ok(writer) => writer,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            self.drain(&mut writer, false);
            drop(writer);
            // An append queued after the drain and before the unlock found the writer taken
            // and left its record to us: look again.
            if lock(&self.queue).as_ref().is_none_or(Vec::is_empty) {
                return;
            }
        }
    }

    /// Writes every queued append in batches of at most `max_batch_bytes`. `may_sync`: this
    /// is the log thread, which does `EverySec` syncs itself.
    fn drain(&self, leader: &mut Leader, may_sync: bool) {
        loop {
            let Leader { writer, batch } = leader;
            self.take_batch(batch);
            if batch.is_empty() {
                return;
            }
            let Some(writer) = writer.as_mut() else {
                for (_, ack) in batch.drain(..) {
                    ack(Err(WalError::Closed));
                }
                return;
            };
            if writer.commit(batch, may_sync) && !self.sync_wanted.swap(true, Ordering::AcqRel) {
                // Full means the log thread has commands to run: it looks at syncs after each.
                let _ = self.commands.try_send(Command::Sync);
            }
        }
    }

    /// Moves the next batch from the queue into `batch` (empty when the queue is).
    fn take_batch(&self, batch: &mut Vec<Queued>) {
        let mut queue = lock(&self.queue);
        let Some(queue) = queue.as_mut() else {
            return;
        };
        let mut bytes = 0_usize;
        let count = queue
            .iter()
            .take_while(|(payload, _)| {
                let first = bytes == 0;
                bytes = bytes.saturating_add(payload.len());
                first || bytes <= self.max_batch_bytes
            })
            .count();
        if count == queue.len() {
            // The queue keeps the buffer the batch had; neither allocates again.
            std::mem::swap(queue, batch);
        } else {
            batch.extend(queue.drain(..count));
        }
    }

    /// The log thread: syncs under `EverySec`, runs control commands.
    fn run(&self, commands: &Receiver<Command>, fsync: FsyncPolicy) {
        let mut next_check = Instant::now();
        loop {
            // Under EverySec a timeout (`None`) means a sync may be due. The log's own handle
            // in `self.commands` keeps the channel open: commands end only with Shutdown.
            let command = if fsync == FsyncPolicy::EverySec {
                match commands.recv_timeout(next_check.saturating_duration_since(Instant::now())) {
                    Err(RecvTimeoutError::Timeout) => None,
                    received => received.ok(),
                }
            } else {
                commands.recv().ok()
            };
            self.write_wanted.store(false, Ordering::SeqCst);
            let mut guard = lock(&self.writer);
            self.drain(&mut guard, true);
            match command {
                None | Some(Command::Sync | Command::Write) => {}
                Some(Command::Barrier(then)) => {
                    then(guard.writer.as_ref().map_or(0, Writer::last_lsn));
                }
                Some(Command::Truncate { through_lsn, done }) => {
                    if let Some(Err(error)) = guard
                        .writer
                        .as_mut()
                        .map(|writer| writer.truncate(through_lsn))
                    {
                        tracing::warn!(%error, "could not delete WAL segments covered by a checkpoint");
                    }
                    let _ = done.send(());
                }
                Some(Command::Shutdown(reply)) => {
                    drop(guard);
                    self.close(Some(reply));
                    return;
                }
                #[cfg(any(test, feature = "test-util"))]
                Some(Command::Halt(reply)) => {
                    // A simulated crash: what is queued is dropped, never acknowledged.
                    drop(lock(&self.queue).take());
                    guard.writer = None;
                    let _ = reply.send(());
                    return;
                }
            }
            self.sync_wanted.store(false, Ordering::Release);
            if let Some(writer) = guard.writer.as_mut() {
                writer.sync_if_due();
                next_check = writer.next_sync_check();
            }
            drop(guard);
            self.lead();
        }
    }

    /// Closes the queue, writes what it held, syncs, and drops the writer.
    fn close(&self, reply: Option<mpsc::Sender<Result<(), WalError>>>) {
        let mut guard = lock(&self.writer);
        let rest = lock(&self.queue).take().unwrap_or_default();
        let result = match guard.writer.as_mut() {
            Some(writer) => {
                let mut rest = rest;
                if !rest.is_empty() {
                    writer.commit(&mut rest, true);
                }
                writer.close()
            }
            None => {
                for (_, ack) in rest {
                    ack(Err(WalError::Closed));
                }
                Err(WalError::Closed)
            }
        };
        guard.writer = None;
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

impl Wal {
    /// Recovers the log in `storage` and starts the log thread. Every record with an LSN
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
        let (writer, recovery) = Writer::recover(
            storage,
            config.clone(),
            checkpoint_lsn,
            replay,
            Arc::clone(&shared),
        )?;
        let (commands, receiver) = mpsc::sync_channel(COMMAND_QUEUE_LEN);
        let core = Arc::new(Core {
            shared,
            queue: Mutex::new(Some(Vec::new())),
            writer: Mutex::new(Leader {
                writer: Some(writer),
                batch: Vec::new(),
            }),
            sync_wanted: AtomicBool::new(false),
            write_wanted: AtomicBool::new(false),
            appenders_lead: config.fsync != FsyncPolicy::Always,
            commands,
            queue_len: config.queue_len,
            max_batch_bytes: config.max_batch_bytes,
        });
        let fsync = config.fsync;
        let thread = std::thread::Builder::new()
            .name("sutra-wal".to_owned())
            .spawn({
                let core = Arc::clone(&core);
                move || core.run(&receiver, fsync)
            })
            .map_err(|error| WalError::io("spawn", "sutra-wal thread", error))?;
        let max_record_bytes = config.max_record_bytes;
        Ok((
            Wal {
                core,
                thread: Some(thread),
                max_record_bytes,
            },
            recovery,
        ))
    }

    /// Appends `payload` and writes it (with whatever else is queued) unless another thread
    /// is writing, which then writes it; under `Always` the log thread writes and syncs it.
    /// `ack` runs when the record is durable under the policy, or with the error if it
    /// cannot be: often before this returns, otherwise on the thread that wrote it. Never
    /// waits for another writer or for a sync.
    pub fn append(&self, payload: Vec<u8>, ack: Ack) {
        if self.queue(payload, ack) {
            self.core.write_queued();
        }
    }

    /// Queues `payload` without writing it: a later [`Wal::write_queued`] (or append) by any
    /// thread writes it, in one batch with the records queued around it. For a caller that
    /// makes several appends before it waits for them (a pipeline of requests): they share
    /// one write instead of one each. The caller must call `write_queued` before it waits.
    pub fn append_deferred(&self, payload: Vec<u8>, ack: Ack) {
        self.queue(payload, ack);
    }

    /// Writes every queued append unless another thread is writing them (under `Always`:
    /// wakes the log thread to write them).
    pub fn write_queued(&self) {
        self.core.write_queued();
    }

    /// Queues an append; `false` (after running `ack` with the error) when it is refused.
    fn queue(&self, payload: Vec<u8>, ack: Ack) -> bool {
        if self.core.shared.poisoned.load(Ordering::Acquire) {
            ack(Err(WalError::Poisoned));
            return false;
        }
        if payload.is_empty() {
            ack(Err(WalError::EmptyRecord));
            return false;
        }
        if payload.len() > self.max_record_bytes as usize {
            ack(Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: self.max_record_bytes,
            }));
            return false;
        }
        let refused = {
            let mut queue = lock(&self.core.queue);
            match queue.as_mut() {
                None => Some((ack, WalError::Closed)),
                Some(queue) if queue.len() >= self.core.queue_len => {
                    Some((ack, WalError::QueueFull))
                }
                Some(queue) => {
                    queue.push((payload, ack));
                    None
                }
            }
        };
        match refused {
            Some((ack, error)) => {
                ack(Err(error));
                false
            }
            None => true,
        }
    }

    /// Runs `then` on the log thread after every append queued before it has been written
    /// and acknowledged, with the last LSN written, while no other append is written: a
    /// consistent cut for checkpoints. Blocks only while the command queue is full.
    pub fn barrier(&self, then: Box<dyn FnOnce(Lsn) + Send>) -> Result<(), WalError> {
        self.core
            .commands
            .send(Command::Barrier(then))
            .map_err(|_| WalError::Closed)
    }

    /// Deletes the segments whose records all have LSNs up to `through_lsn` (covered by a
    /// durable checkpoint), on the log thread, and returns once it has. The active segment
    /// is never deleted. A segment that cannot be deleted is logged and left for the next
    /// truncation.
    pub fn truncate(&self, through_lsn: Lsn) -> Result<(), WalError> {
        let (done, finished) = mpsc::channel();
        self.core
            .commands
            .send(Command::Truncate { through_lsn, done })
            .map_err(|_| WalError::Closed)?;
        finished.recv().map_err(|_| WalError::Closed)
    }

    /// Whether the log refuses writes after a failure.
    pub fn is_poisoned(&self) -> bool {
        self.core.shared.poisoned.load(Ordering::Acquire)
    }

    /// The log's counters.
    pub fn stats(&self) -> &WalStats {
        &self.core.shared.stats
    }

    /// Writes and syncs everything queued, then stops the log thread; later appends fail
    /// with [`WalError::Closed`].
    pub fn shutdown(mut self) -> Result<(), WalError> {
        let (reply, result) = mpsc::channel();
        self.core
            .commands
            .send(Command::Shutdown(reply))
            .map_err(|_| WalError::Closed)?;
        let result = result.recv().map_err(|_| WalError::Closed)?;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result
    }

    /// Stops the log at once, without writing or syncing what is queued: a simulated crash
    /// for tests. Queued appends are never acknowledged.
    #[cfg(any(test, feature = "test-util"))]
    pub fn halt(mut self) {
        let (reply, done) = mpsc::channel();
        if self.core.commands.send(Command::Halt(reply)).is_ok() {
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
        // sync worked.
        if let Some(thread) = self.thread.take() {
            let (reply, _) = mpsc::channel();
            let _ = self.core.commands.send(Command::Shutdown(reply));
            let _ = thread.join();
        }
    }
}
