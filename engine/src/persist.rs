//! The persistent half of the engine: the data directory, the log and checkpoints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sutra_wal::{Ack, DirStorage, Latency, LatencySnapshot, Wal, WalError};
use tracing::{info, warn};

use sutra_protocol::Concept;

use crate::clock::Clock;
use crate::config::{CheckpointConfig, PersistConfig};
use crate::counters::{EngineCounters, RecoverySummary};
use crate::datadir::{io_error, DataDir};
use crate::error::EngineError;
use crate::record::Record;
use crate::snapshot;
use crate::store::ConceptStore;
use crate::vectors::VectorStore;

/// How long a failed checkpoint (a full disk, say) waits before the next try.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(10);

/// How often the checkpointer checks whether a checkpoint is due.
const CHECKPOINT_POLL: Duration = Duration::from_millis(100);

/// What a log record is about, for the checkpointer: the server's own events never make a
/// timed checkpoint due (each checkpoint writes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum About {
    /// Data: a client's write, an eviction, an expiry.
    Data,
    /// The server's own events (`SUTRA_EVENTS`), and their expiries.
    Events,
}

pub(crate) struct Persistence {
    dir: DataDir,
    /// Vector slots in mapped segments (`MMAP_ENABLED`), or `None` to keep vectors on the heap.
    pub(crate) vectors: Option<Arc<VectorStore>>,
    wal: RwLock<Option<Wal>>,
    store: Arc<ConceptStore>,
    clock: Arc<dyn Clock>,
    vector_dimension: u32,
    checkpoint: CheckpointConfig,
    /// Serialises checkpoints (timer, shutdown and explicit calls).
    checkpointing: Mutex<()>,
    wal_bytes_since_checkpoint: AtomicU64,
    /// Of those, bytes of the server's own events: they count towards the size trigger only,
    /// so an event written about a checkpoint never causes the next one.
    event_bytes_since_checkpoint: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_lsn: AtomicU64,
    checkpoint_duration: Latency,
    /// What start-up found.
    pub(crate) recovered: RecoverySummary,
    checkpointer: Mutex<Option<(JoinHandle<()>, mpsc::Sender<()>)>>,
}

/// Moves a replayed concept's vector into a slot when vectors live in mapped segments.
fn into_slot(
    vectors: Option<&Arc<VectorStore>>,
    mut concept: Concept,
    lsn: u64,
) -> Result<Arc<Concept>, WalError> {
    if let (Some(vectors), Some(embedding)) = (vectors, &concept.embedding) {
        let slot = vectors
            .store(embedding.as_slice())
            .map_err(|error| WalError::Io {
                op: "store vector",
                file: format!("record {lsn}"),
                source: Arc::new(std::io::Error::other(error.to_string())),
            })?;
        concept.embedding = Some(slot);
    }
    Ok(Arc::new(concept))
}

fn replay_record(
    store: &ConceptStore,
    vectors: Option<&Arc<VectorStore>>,
    lsn: u64,
    payload: &[u8],
    vector_dimension: u32,
) -> Result<(), WalError> {
    match Record::decode(payload, vector_dimension) {
        Ok(Record::Put(concept)) => {
            store.upsert(&into_slot(vectors, concept, lsn)?, 0);
        }
        Ok(Record::Batch(concepts)) => {
            for concept in concepts {
                store.upsert(&into_slot(vectors, concept, lsn)?, 0);
            }
        }
        Ok(Record::Delete(id)) => {
            store.remove(&id, 0);
        }
        Ok(Record::ClearType(concept_type)) => {
            store.clear_type(&concept_type, 0);
        }
        Ok(Record::Expire { id, at_ms }) => {
            store.expire(&id, at_ms);
        }
        Ok(Record::PutSlot(..)) | Err(_) => {
            return Err(WalError::Corrupt {
                file: format!("record {lsn}"),
                offset: 0,
                reason: "checksum valid but the record cannot be decoded",
            })
        }
    }
    Ok(())
}

impl Persistence {
    pub(crate) fn open(
        config: &PersistConfig,
        vector_dimension: u32,
        store: Arc<ConceptStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Persistence>, EngineError> {
        let started = Instant::now();
        let (wal_config, checkpoint) = (&config.wal, config.checkpoint.clone());
        let dir = DataDir::open(&config.data_dir, vector_dimension)?;
        let vectors = if config.mmap_vectors {
            Some(VectorStore::open(&dir.path, vector_dimension)?)
        } else {
            None
        };
        let checkpoint_lsn =
            snapshot::load(&dir.path, vector_dimension, vectors.as_ref(), |concepts| {
                store.bulk_load(concepts);
            })?;
        if let Some(vectors) = &vectors {
            vectors.finish_claims();
        }
        let loaded = store.counters().0;
        let wal_dir = dir.wal_dir();
        let storage =
            DirStorage::open(&wal_dir).map_err(|error| io_error("open", &wal_dir, error))?;
        let (wal, recovery) = Wal::open(
            Arc::new(storage),
            wal_config,
            checkpoint_lsn,
            |lsn, payload| replay_record(&store, vectors.as_ref(), lsn, payload, vector_dimension),
        )
        .map_err(EngineError::Wal)?;
        let recovered = RecoverySummary {
            snapshot_concepts: loaded,
            replayed_records: recovery.replayed,
            dropped_tail_bytes: recovery.dropped_bytes as u64,
            concepts: store.counters().0,
            elapsed: started.elapsed(),
        };
        info!(
            path = %config.data_dir.display(),
            snapshot_lsn = checkpoint_lsn,
            snapshot_concepts = loaded,
            replayed_records = recovery.replayed,
            dropped_tail_bytes = recovery.dropped_bytes,
            concepts = store.counters().0,
            elapsed_ms = started.elapsed().as_millis(),
            "data directory recovered"
        );
        let persistence = Arc::new(Persistence {
            dir,
            vectors,
            wal: RwLock::new(Some(wal)),
            store,
            clock,
            vector_dimension,
            checkpoint,
            checkpointing: Mutex::new(()),
            wal_bytes_since_checkpoint: AtomicU64::new(0),
            event_bytes_since_checkpoint: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            checkpoint_lsn: AtomicU64::new(checkpoint_lsn),
            checkpoint_duration: Latency::default(),
            recovered,
            checkpointer: Mutex::new(None),
        });
        Self::start_checkpointer(&persistence)?;
        Ok(persistence)
    }

    fn start_checkpointer(this: &Arc<Persistence>) -> Result<(), EngineError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let weak = Arc::downgrade(this);
        let handle = std::thread::Builder::new()
            .name("sutra-checkpoint".to_owned())
            .spawn(move || {
                let mut last = Instant::now();
                let mut retry_at = Instant::now();
                // Check the triggers ten times a second (two atomic loads); a message or a
                // closed channel stops the thread.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_POLL) {
                    let Some(persistence) = weak.upgrade() else { return };
                    let written = persistence.wal_bytes_since_checkpoint.load(Ordering::Relaxed);
                    let events = persistence.event_bytes_since_checkpoint.load(Ordering::Relaxed);
                    // Events alone never make the interval due (each checkpoint writes one);
                    // they count towards the size bound like any bytes.
                    let due = (written > events && last.elapsed() >= persistence.checkpoint.interval) || (written > 0 && written >= persistence.checkpoint.wal_bytes);
                    // A poisoned log cannot be checkpointed (that was logged when it failed),
                    // and a failed checkpoint waits before it is tried again.
                    if !due || Instant::now() < retry_at || persistence.is_poisoned() {
                        continue;
                    }
                    if let Err(error) = persistence.checkpoint() {
                        warn!(%error, retry_in_secs = CHECKPOINT_RETRY.as_secs(), "checkpoint failed; the log keeps every write");
                        retry_at = Instant::now() + CHECKPOINT_RETRY;
                    }
                    last = Instant::now();
                }
            })
            .map_err(|error| EngineError::Internal { message: format!("starting the checkpoint thread: {error}") })?;
        *this
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((handle, stop));
        Ok(())
    }

    /// Appends one record; the server's own events are counted apart (see
    /// `event_bytes_since_checkpoint`).
    pub(crate) fn append(&self, payload: Vec<u8>, ack: Ack, about: About) {
        if about == About::Events {
            self.event_bytes_since_checkpoint
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        self.wal_bytes_since_checkpoint
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        match &*self.wal.read().unwrap_or_else(PoisonError::into_inner) {
            Some(wal) => wal.append_deferred(payload, ack),
            None => ack(Err(WalError::Closed)),
        }
    }

    /// Writes the appends queued by [`Persistence::append`] (see [`Wal::write_queued`]).
    pub(crate) fn write_queued(&self) {
        if let Some(wal) = &*self.wal.read().unwrap_or_else(PoisonError::into_inner) {
            wal.write_queued();
        }
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.wal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(Wal::is_poisoned)
    }

    pub(crate) fn fill_counters(&self, counters: &mut EngineCounters) {
        if let Some(wal) = &*self.wal.read().unwrap_or_else(PoisonError::into_inner) {
            let stats = wal.stats();
            counters.wal_appends = stats.appends.load(Ordering::Relaxed);
            counters.wal_batches = stats.batches.load(Ordering::Relaxed);
            counters.wal_syncs = stats.syncs.load(Ordering::Relaxed);
            counters.wal_segments = stats.segments.load(Ordering::Relaxed);
        }
        counters.checkpoints = self.checkpoints.load(Ordering::Relaxed);
        if let Some(vectors) = &self.vectors {
            (counters.vector_slots_used, counters.vector_slots_allocated) = vectors.usage();
        }
        counters.checkpoint_lsn = self.checkpoint_lsn.load(Ordering::Relaxed);
    }

    /// How long `fdatasync` of log segments and whole checkpoints took.
    pub(crate) fn latencies(&self) -> (Option<LatencySnapshot>, LatencySnapshot) {
        let sync = self
            .wal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|wal| wal.stats().sync_latency.snapshot());
        (sync, self.checkpoint_duration.snapshot())
    }

    /// Snapshots every live concept at a consistent LSN, then deletes the covered segments.
    pub(crate) fn checkpoint(&self) -> Result<(), EngineError> {
        let _one_at_a_time = self
            .checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let (sender, cut) = mpsc::channel();
        {
            let wal = self.wal.read().unwrap_or_else(PoisonError::into_inner);
            let wal = wal.as_ref().ok_or(EngineError::ShuttingDown)?;
            if wal.is_poisoned() {
                return Err(EngineError::Storage(WalError::Poisoned));
            }
            let store = Arc::clone(&self.store);
            let clock = Arc::clone(&self.clock);
            // Runs on the log thread between batches, holding the writer: the store matches
            // the log exactly.
            wal.barrier(Box::new(move |lsn| {
                let concepts = store.live_concepts(clock.now_ms());
                let _ = sender.send((lsn, concepts));
            }))
            .map_err(EngineError::Wal)?;
        }
        let (lsn, concepts) = cut.recv().map_err(|_| EngineError::ShuttingDown)?;
        let written_before = self.wal_bytes_since_checkpoint.load(Ordering::Relaxed);
        let events_before = self.event_bytes_since_checkpoint.load(Ordering::Relaxed);
        if lsn == self.checkpoint_lsn.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The snapshot carries the vectors inline: the vector segments need no sync.
        snapshot::write(&self.dir.path, lsn, self.vector_dimension, &concepts)?;
        self.checkpoint_lsn.store(lsn, Ordering::Relaxed);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_duration.record(started.elapsed());
        // Only checkpoints subtract, one at a time, so this cannot underflow.
        self.wal_bytes_since_checkpoint
            .fetch_sub(written_before, Ordering::Relaxed);
        self.event_bytes_since_checkpoint
            .fetch_sub(events_before, Ordering::Relaxed);
        if let Some(wal) = &*self.wal.read().unwrap_or_else(PoisonError::into_inner) {
            wal.truncate(lsn).map_err(EngineError::Wal)?;
        }
        info!(
            lsn,
            concepts = concepts.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "checkpoint written"
        );
        Ok(())
    }

    /// Stops the checkpointer and waits for it, unless this is the checkpointer itself (it
    /// may hold the last reference while it checks; it then ends on its own, its channel
    /// closed).
    fn stop_checkpointer(&self) {
        let taken = self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((handle, stop)) = taken {
            drop(stop);
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    /// Stops the checkpointer, writes a final checkpoint and closes the log.
    pub(crate) fn shutdown(&self) -> Result<(), EngineError> {
        self.stop_checkpointer();
        let checkpoint = if self.is_poisoned() {
            Ok(())
        } else {
            self.checkpoint()
        };
        let wal = self
            .wal
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let closed = wal.map_or(Ok(()), |wal| wal.shutdown().map_err(EngineError::Wal));
        checkpoint.and(closed)
    }
}

impl Drop for Persistence {
    /// Without `shutdown` (a crash test, or an engine dropped on an error path) the checkpointer
    /// is still stopped and joined, so no thread outlives its engine (a detached one was seen
    /// by the fuzzer's leak checker as it exited).
    fn drop(&mut self) {
        self.stop_checkpointer();
    }
}
