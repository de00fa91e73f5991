//! The log's writer: recovery at open, then group commits (by whichever thread leads,
//! see [`crate::wal`]), syncs, segment rolls and truncation.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::{error, info, warn};

use crate::channel::Shared;
use crate::config::{FsyncPolicy, WalConfig};
use crate::error::WalError;
use crate::io::{Storage, StorageFile};
use crate::lsn::Lsn;
use crate::segment::{self, SEGMENT_HEADER_BYTES};
use crate::types::{Ack, Recovery};

/// Under [`FsyncPolicy::EverySec`], the log also syncs once this many bytes are unsynced,
/// so a heavy writer pays several short syncs instead of one long stall per second. It
/// only makes writes durable sooner than the policy promises.
pub const EVERYSEC_SYNC_BYTES: u64 = 1024 * 1024;

/// A fresh random CRC seed, so bytes left from an older file can never validate.
fn random_seed() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    #[expect(
        clippy::cast_possible_truncation,
        reason = "any 32 bits of a random hash will do"
    )]
    let seed = RandomState::new().hash_one(nanos) as u32;
    seed
}

/// Whether a write of the batch buffer is also made durable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Written; synced later, by the policy.
    Write,
    /// Written and synced before the batch is acknowledged.
    AndSync,
}

struct ActiveSegment {
    name: String,
    file: Box<dyn StorageFile>,
    seed: u32,
    offset: u64,
    /// Bytes written since the last sync.
    dirty: bool,
    /// How many bytes were written since the last sync.
    unsynced_bytes: u64,
}

pub(crate) struct Writer {
    storage: Arc<dyn Storage>,
    config: WalConfig,
    shared: Arc<Shared>,
    /// First LSN of every segment, active one included.
    segments: BTreeMap<Lsn, String>,
    active: Option<ActiveSegment>,
    next_lsn: Lsn,
    last_sync: Instant,
    /// Reused encode buffer for batches.
    scratch: Vec<u8>,
    /// Reused list of a batch's LSNs and acknowledgements.
    written: Vec<(Lsn, Ack)>,
}

/// The segments in the directory by first LSN. Leftover temporary files (a segment whose
/// creation was interrupted before its rename) were never part of the log and are removed.
fn list_segments(storage: &dyn Storage) -> Result<BTreeMap<Lsn, String>, WalError> {
    let mut names = BTreeMap::new();
    for name in storage
        .list()
        .map_err(|error| WalError::io("list", "wal directory", error))?
    {
        if let Some(first_lsn) = segment::parse_segment_name(&name) {
            names.insert(first_lsn, name);
        } else if std::path::Path::new(&name)
            .extension()
            .is_some_and(|extension| extension == "tmp")
        {
            storage
                .remove(&name)
                .map_err(|error| WalError::io("remove", &name, error))?;
        }
    }
    Ok(names)
}

/// Zeroes a torn tail so that a later recovery does not see it again.
fn drop_torn_tail(
    file: &mut dyn StorageFile,
    name: &str,
    offset: usize,
    dropped_bytes: usize,
) -> Result<(), WalError> {
    warn!(file = %name, offset, dropped_bytes, "dropped the torn tail of the write-ahead log");
    file.write_at(offset as u64, &vec![0_u8; dropped_bytes])
        .map_err(|error| WalError::io("write", name, error))?;
    file.sync_data()
        .map_err(|error| WalError::io("sync", name, error))
}

impl Writer {
    pub(crate) fn recover(
        storage: Arc<dyn Storage>,
        config: WalConfig,
        checkpoint_lsn: Lsn,
        mut replay: impl FnMut(Lsn, &[u8]) -> Result<(), WalError>,
        shared: Arc<Shared>,
    ) -> Result<(Writer, Recovery), WalError> {
        let names = list_segments(&*storage)?;
        let mut expected = checkpoint_lsn.saturating_add(1);
        let mut replayed = 0_u64;
        let mut dropped_bytes = 0;
        let mut active = None;
        let count = names.len();
        for (index, (first_lsn, name)) in names.iter().enumerate() {
            let is_last = index + 1 == count;
            let mut file = storage
                .open(name)
                .map_err(|error| WalError::io("open", name, error))?;
            let bytes = file
                .read_all()
                .map_err(|error| WalError::io("read", name, error))?;
            let scan = segment::scan_segment(&bytes, name, config.max_record_bytes)?;
            if scan.header.first_lsn != *first_lsn {
                return Err(WalError::Corrupt {
                    file: name.clone(),
                    offset: 16,
                    reason: "first LSN differs from the file name",
                });
            }
            if *first_lsn > expected {
                return Err(WalError::Gap {
                    expected,
                    found: *first_lsn,
                });
            }
            for record in &scan.records {
                if record.lsn >= expected {
                    replay(record.lsn, record.payload)?;
                    replayed += 1;
                    expected = record.lsn + 1;
                }
            }
            if scan.dropped_bytes > 0 {
                if !is_last {
                    return Err(WalError::Corrupt {
                        file: name.clone(),
                        offset: scan.end_offset as u64,
                        reason: "invalid bytes at the end of a segment that is not the last one",
                    });
                }
                dropped_bytes = scan.dropped_bytes;
                drop_torn_tail(&mut *file, name, scan.end_offset, scan.dropped_bytes)?;
            }
            let next_in_segment = scan
                .records
                .last()
                .map_or(scan.header.first_lsn, |record| record.lsn + 1);
            expected = expected.max(next_in_segment);
            if is_last {
                active = Some(ActiveSegment {
                    name: name.clone(),
                    file,
                    seed: scan.header.seed,
                    offset: scan.end_offset as u64,
                    dirty: false,
                    unsynced_bytes: 0,
                });
            }
        }
        shared
            .stats
            .segments
            .store(names.len() as u64, Ordering::Relaxed);
        info!(
            segments = count,
            replayed,
            next_lsn = expected,
            "write-ahead log recovered"
        );
        let writer = Writer {
            storage,
            config,
            shared,
            segments: names,
            active,
            next_lsn: expected,
            last_sync: Instant::now(),
            scratch: Vec::new(),
            written: Vec::new(),
        };
        Ok((
            writer,
            Recovery {
                replayed,
                segments: count,
                dropped_bytes,
                next_lsn: expected,
            },
        ))
    }

    /// The last LSN written (0 before the first record).
    pub(crate) fn last_lsn(&self) -> Lsn {
        self.next_lsn.saturating_sub(1)
    }

    /// When the log thread should next look at the log: under `EverySec` with unsynced
    /// writes, when they are due; otherwise one interval from now (a write made meanwhile is
    /// then synced at most one interval late, as the policy allows).
    pub(crate) fn next_sync_check(&self) -> Instant {
        let dirty = self.active.as_ref().is_some_and(|active| active.dirty);
        if dirty {
            self.last_sync + self.config.sync_interval
        } else {
            Instant::now() + self.config.sync_interval
        }
    }

    /// Under `EverySec`: syncs when an interval has passed since the last sync or
    /// [`EVERYSEC_SYNC_BYTES`] are unsynced.
    pub(crate) fn sync_if_due(&mut self) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let due = active.dirty
            && (self.last_sync.elapsed() >= self.config.sync_interval
                || active.unsynced_bytes >= EVERYSEC_SYNC_BYTES);
        if self.config.fsync == FsyncPolicy::EverySec && due {
            let _ = self.sync_if_dirty();
        }
    }

    /// Makes everything written durable, for shutdown.
    pub(crate) fn close(&mut self) -> Result<(), WalError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        self.sync_if_dirty()
    }

    fn poison(&self, error: &WalError) {
        if !self.shared.poisoned.swap(true, Ordering::AcqRel) {
            error!(%error, "write-ahead log failed; refusing all further writes until restart");
        }
    }

    /// Writes, syncs (per policy) and acknowledges one batch. Under `EverySec` it syncs
    /// only when `may_sync` (the log thread); elsewhere it returns `true` when a sync is due
    /// ([`EVERYSEC_SYNC_BYTES`] unsynced, or an interval passed), for the log thread to do.
    pub(crate) fn commit(&mut self, batch: &mut Vec<(Vec<u8>, Ack)>, may_sync: bool) -> bool {
        if self.shared.poisoned.load(Ordering::Acquire) {
            for (_, ack) in batch.drain(..) {
                ack(Err(WalError::Poisoned));
            }
            return false;
        }
        // Kept between batches, so a batch allocates nothing.
        let mut written = std::mem::take(&mut self.written);
        self.scratch.clear();
        let mut records = batch.drain(..);
        while let Some((payload, ack)) = records.next() {
            let span = segment::record_span(payload.len()).unwrap_or(usize::MAX) as u64;
            let fits = self.active.as_ref().is_some_and(|active| {
                active.offset + self.scratch.len() as u64 + span <= self.config.segment_bytes
            });
            if !fits {
                // Finish the current segment durably, then open the next one.
                if let Err(error) = self.flush_scratch(Flush::AndSync) {
                    self.fail(&error, &mut written);
                    ack(Err(error.clone()));
                    records.for_each(|(_, ack)| ack(Err(error.clone())));
                    return false;
                }
                if let Err(error) = self.roll() {
                    // The records before the roll are durable in the previous segment. The
                    // rest never reached the disk: with a full disk the log stays usable and
                    // the next batch tries to create the segment again.
                    self.acknowledge(&mut written);
                    if !error.is_disk_full() {
                        self.poison(&error);
                    }
                    ack(Err(error.clone()));
                    records.for_each(|(_, ack)| ack(Err(error.clone())));
                    return false;
                }
            }
            let lsn = self.next_lsn;
            let seed = self.active.as_ref().map_or(0, |active| active.seed);
            segment::encode_record(&mut self.scratch, seed, lsn, &payload);
            self.next_lsn += 1;
            written.push((lsn, ack));
        }
        let unsynced = self
            .active
            .as_ref()
            .map_or(0, |active| active.unsynced_bytes)
            + self.scratch.len() as u64;
        // Under EverySec a heavy writer also syncs every EVERYSEC_SYNC_BYTES: one fdatasync
        // of a whole second of writes stalls the log for tens of milliseconds, several small
        // ones do not (measured in bench/RESULTS.md).
        let every_sec_due = self.config.fsync == FsyncPolicy::EverySec
            && (self.last_sync.elapsed() >= self.config.sync_interval
                || unsynced >= EVERYSEC_SYNC_BYTES);
        let sync = self.config.fsync == FsyncPolicy::Always || (every_sec_due && may_sync);
        match self.flush_scratch(if sync { Flush::AndSync } else { Flush::Write }) {
            Ok(()) => self.acknowledge(&mut written),
            Err(error) => self.fail(&error, &mut written),
        }
        self.written = written;
        every_sec_due && !sync
    }

    fn acknowledge(&self, written: &mut Vec<(Lsn, Ack)>) {
        if written.is_empty() {
            return;
        }
        self.shared.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .appends
            .fetch_add(written.len() as u64, Ordering::Relaxed);
        for (lsn, ack) in written.drain(..) {
            ack(Ok(lsn));
        }
    }

    /// Fails records whose write or sync failed. They may be partly on disk and their LSNs
    /// are spent, so the log cannot continue past them: it is poisoned.
    fn fail(&self, error: &WalError, written: &mut Vec<(Lsn, Ack)>) {
        self.poison(error);
        for (_, ack) in written.drain(..) {
            ack(Err(error.clone()));
        }
    }

    /// Writes the scratch buffer at the end of the active segment, and syncs it with
    /// [`Flush::AndSync`].
    fn flush_scratch(&mut self, flush: Flush) -> Result<(), WalError> {
        let Some(active) = self.active.as_mut() else {
            return if self.scratch.is_empty() {
                Ok(())
            } else {
                Err(WalError::Closed)
            };
        };
        if !self.scratch.is_empty() {
            active
                .file
                .write_at(active.offset, &self.scratch)
                .map_err(|error| WalError::io("write", &active.name, error))?;
            active.offset += self.scratch.len() as u64;
            active.unsynced_bytes += self.scratch.len() as u64;
            active.dirty = true;
            self.scratch.clear();
        }
        if flush == Flush::AndSync && active.dirty {
            let started = Instant::now();
            active
                .file
                .sync_data()
                .map_err(|error| WalError::io("sync", &active.name, error))?;
            self.shared.stats.sync_latency.record(started.elapsed());
            active.dirty = false;
            active.unsynced_bytes = 0;
            self.last_sync = Instant::now();
            self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn sync_if_dirty(&mut self) -> Result<(), WalError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        let result = self.flush_scratch(Flush::AndSync);
        if let Err(error) = &result {
            self.poison(error);
        }
        result
    }

    /// Creates the segment that starts at `next_lsn`: temporary file, allocation, header,
    /// sync, rename, directory sync.
    fn roll(&mut self) -> Result<(), WalError> {
        let first_lsn = self.next_lsn;
        let name = segment::segment_name(first_lsn);
        let temp = format!("{name}.tmp");
        let seed = random_seed();
        let create = || -> Result<Box<dyn StorageFile>, WalError> {
            let mut file = self
                .storage
                .create(&temp)
                .map_err(|error| WalError::io("create", &temp, error))?;
            file.allocate(self.config.segment_bytes)
                .map_err(|error| WalError::io("allocate", &temp, error))?;
            file.write_at(0, &segment::encode_header(seed, first_lsn))
                .map_err(|error| WalError::io("write", &temp, error))?;
            file.sync_data()
                .map_err(|error| WalError::io("sync", &temp, error))?;
            self.storage
                .rename(&temp, &name)
                .map_err(|error| WalError::io("rename", &temp, error))?;
            self.storage
                .sync_dir()
                .map_err(|error| WalError::io("sync", "wal directory", error))?;
            Ok(file)
        };
        match create() {
            Ok(file) => {
                self.segments.insert(first_lsn, name.clone());
                self.shared
                    .stats
                    .segments
                    .store(self.segments.len() as u64, Ordering::Relaxed);
                self.active = Some(ActiveSegment {
                    name,
                    file,
                    seed,
                    offset: SEGMENT_HEADER_BYTES as u64,
                    dirty: false,
                    unsynced_bytes: 0,
                });
                Ok(())
            }
            Err(error) => {
                // Leave no half-made segment behind; the next batch tries again.
                let _ = self.storage.remove(&temp);
                Err(error)
            }
        }
    }

    pub(crate) fn truncate(&mut self, through_lsn: Lsn) -> Result<(), WalError> {
        let firsts: Vec<Lsn> = self.segments.keys().copied().collect();
        let mut removed = false;
        for pair in firsts.windows(2) {
            let (Some(first), Some(next_first)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            // Every record of this segment is below the next segment's first LSN.
            if next_first.saturating_sub(1) <= through_lsn {
                if let Some(name) = self.segments.remove(first) {
                    self.storage
                        .remove(&name)
                        .map_err(|error| WalError::io("remove", &name, error))?;
                    removed = true;
                }
            }
        }
        if removed {
            self.storage
                .sync_dir()
                .map_err(|error| WalError::io("sync", "wal directory", error))?;
        }
        self.shared
            .stats
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
