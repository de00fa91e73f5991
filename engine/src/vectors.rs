//! Vectors in fixed-slot, memory-mapped segment files (`MMAP_ENABLED`), not on the heap.
//!
//! `STORAGE_PATH/vectors/vectors-<n, 6 digits>.seg` holds slots `n * SLOTS..(n + 1) * SLOTS`;
//! slot `s` is `VECTOR_DIMENSION` f32 little-endian values at byte
//! `(s % SLOTS) * VECTOR_DIMENSION * 4`, with `SLOTS` = [`slots_per_segment`]. Segments are
//! created preallocated (`fallocate`, or zeros written where the filesystem has none: a full disk fails the creation, never a later write
//! through the mapping), synced, renamed into place, and the directory synced.
//!
//! Durability: the segments are never a source of truth. The log record of a write carries
//! the whole vector, and so does the snapshot a checkpoint writes; the segments hold the
//! vectors for reading (in the page cache, which can drop cold ones and read them back) and
//! are never synced: the kernel writes them back when it likes, and recovery copies every
//! vector into a slot again. A slot is released when the last reference to its concept is
//! dropped, and only then reused. Snapshots written before that change name slots instead
//! (PutSlot); loading one claims the named slots, which its checkpoint had synced, and a
//! slot it names is reused only after a later delete or overwrite of its concept, which is in
//! the log and is replayed first.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sutra_protocol::{Vector, VectorSource};

use super::datadir::{io_error, sync_dir};
use super::mmap::MappedSegment;
use crate::error::EngineError;

/// Target size of one vector segment file.
const SEGMENT_TARGET_BYTES: usize = 8 * 1024 * 1024;

/// Slots per segment for a dimension: fixed by the dimension, so it never changes for a data
/// directory (whose manifest fixes the dimension).
pub(crate) fn slots_per_segment(dimension: u32) -> u32 {
    let slot_bytes = (dimension as usize).saturating_mul(4).max(1);
    u32::try_from((SEGMENT_TARGET_BYTES / slot_bytes).max(1)).unwrap_or(u32::MAX)
}

fn segment_name(index: usize) -> String {
    format!("vectors-{index:06}.seg")
}

#[derive(Default)]
struct Slots {
    free: Vec<u32>,
    /// Slots below this were handed out at some point; above it, never.
    next_unused: u32,
}

/// The vector segments of one data directory.
pub(crate) struct VectorStore {
    dir: PathBuf,
    dimension: u32,
    per_segment: u32,
    segments: RwLock<Vec<Arc<MappedSegment>>>,
    slots: Mutex<Slots>,
    /// During recovery: which existing slots the snapshot uses.
    claimed: Mutex<Option<Vec<bool>>>,
    /// Held while a segment file is being made, so two threads never make the same one.
    creating: Mutex<()>,
}

/// One slot, owned by one concept's vector. Dropping the last reference frees the slot.
pub(crate) struct Slot {
    store: Arc<VectorStore>,
    segment: Arc<MappedSegment>,
    index: u32,
}

impl VectorSource for Slot {
    fn values(&self) -> &[f32] {
        let within = (self.index % self.store.per_segment) as usize;
        self.segment.read(
            within * self.store.dimension as usize,
            self.store.dimension as usize,
        )
    }

    fn location(&self) -> Option<u64> {
        Some(u64::from(self.index))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.store
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free
            .push(self.index);
    }
}

impl VectorStore {
    /// Maps every existing segment of `data_dir/vectors` and starts recovery bookkeeping.
    pub(crate) fn open(data_dir: &Path, dimension: u32) -> Result<Arc<VectorStore>, EngineError> {
        let dir = data_dir.join("vectors");
        fs::create_dir_all(&dir).map_err(|error| io_error("create directory", &dir, error))?;
        let mut segments = Vec::new();
        loop {
            let path = dir.join(segment_name(segments.len()));
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => segments.push(Arc::new(
                    MappedSegment::map(&file).map_err(|error| io_error("map", &path, error))?,
                )),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                Err(error) => return Err(io_error("open", &path, error)),
            }
        }
        let per_segment = slots_per_segment(dimension);
        let existing = u32::try_from(segments.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(per_segment);
        Ok(Arc::new(VectorStore {
            dir,
            dimension,
            per_segment,
            segments: RwLock::new(segments),
            slots: Mutex::new(Slots {
                free: Vec::new(),
                next_unused: existing,
            }),
            claimed: Mutex::new(Some(vec![false; existing as usize])),
            creating: Mutex::new(()),
        }))
    }

    fn segment(&self, index: u32) -> Option<Arc<MappedSegment>> {
        let segment = (index / self.per_segment) as usize;
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(segment)
            .cloned()
    }

    /// Takes a slot named by the snapshot (recovery only).
    pub(crate) fn claim(self: &Arc<Self>, index: u32) -> Result<Vector, String> {
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        let used = claimed
            .as_mut()
            .and_then(|used| used.get_mut(index as usize))
            .ok_or_else(|| format!("vector slot {index} does not exist"))?;
        if std::mem::replace(used, true) {
            return Err(format!("vector slot {index} is used twice"));
        }
        let segment = self
            .segment(index)
            .ok_or_else(|| format!("vector slot {index} does not exist"))?;
        let slot = Slot {
            store: Arc::clone(self),
            segment,
            index,
        };
        Vector::from_source(Arc::new(slot), self.dimension).map_err(|error| error.to_string())
    }

    /// Ends recovery's claiming: every existing slot the snapshot did not name is free.
    pub(crate) fn finish_claims(&self) {
        let claimed = self
            .claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // Highest first, so that `pop` hands out low slots first.
        slots.free.extend(
            (0..claimed.len())
                .rev()
                .filter(|index| !claimed.get(*index).copied().unwrap_or(true))
                .filter_map(|index| u32::try_from(index).ok()),
        );
    }

    /// Copies `values` into a free slot (creating a segment if needed) and returns the vector
    /// that owns the slot.
    pub(crate) fn store(self: &Arc<Self>, values: &[f32]) -> Result<Vector, EngineError> {
        let index = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.free.pop() {
                Some(index) => index,
                None => {
                    let index = slots.next_unused;
                    if index.is_multiple_of(self.per_segment) && self.segment(index).is_none() {
                        // Normally made ahead (below); this is the fallback.
                        self.ensure_segment((index / self.per_segment) as usize)?;
                    }
                    slots.next_unused =
                        index.checked_add(1).ok_or_else(|| EngineError::Internal {
                            message: "vector slots exhausted".to_owned(),
                        })?;
                    index
                }
            }
        };
        let segment = self.segment(index).ok_or_else(|| EngineError::Internal {
            message: format!("vector slot {index} has no segment"),
        })?;
        let within = index % self.per_segment;
        if within == self.per_segment / 2 {
            // Halfway through a segment, this store makes the next one, outside the slot
            // lock: other stores go on, and none waits for a file creation at the boundary.
            // A failure here (a full disk) is reported by the store that needs the segment.
            let next = (index / self.per_segment) as usize + 1;
            if let Err(error) = self.ensure_segment(next) {
                tracing::warn!(%error, "could not make the next vector segment ahead");
            }
        }
        segment.write(within as usize * self.dimension as usize, values);
        let slot = Slot {
            store: Arc::clone(self),
            segment,
            index,
        };
        Vector::from_source(Arc::new(slot), self.dimension).map_err(|error| EngineError::Internal {
            message: error.to_string(),
        })
    }

    /// Makes segments up to number `number` exist: temporary file, allocation, sync, rename,
    /// directory sync, each. Readers and slot users are not blocked while a file is made.
    fn ensure_segment(&self, number: usize) -> Result<(), EngineError> {
        let _creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let next = self
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            if next > number {
                return Ok(());
            }
            let segment = self.create_segment(next)?;
            self.segments
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(segment);
        }
    }

    fn create_segment(&self, number: usize) -> Result<Arc<MappedSegment>, EngineError> {
        let path = self.dir.join(segment_name(number));
        let temp = path.with_extension("tmp");
        let bytes = u64::from(self.per_segment) * u64::from(self.dimension) * 4;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|error| io_error("create", &temp, error))?;
        // fallocate, or zeros written where the filesystem has none (FUSE, NFS...).
        if let Err(error) = sutra_wal::allocate(&file, bytes) {
            let _ = fs::remove_file(&temp);
            return Err(EngineError::Storage(sutra_wal::WalError::Io {
                op: "allocate",
                file: temp.display().to_string(),
                source: Arc::new(error),
            }));
        }
        file.sync_all()
            .map_err(|error| io_error("sync", &temp, error))?;
        fs::rename(&temp, &path).map_err(|error| io_error("rename", &temp, error))?;
        sync_dir(&self.dir)?;
        Ok(Arc::new(
            MappedSegment::map(&file).map_err(|error| io_error("map", &path, error))?,
        ))
    }

    /// Slots in use and slots allocated on disk.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let allocated = self
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64
            * u64::from(self.per_segment);
        (
            u64::from(slots.next_unused).saturating_sub(slots.free.len() as u64),
            allocated,
        )
    }
}
