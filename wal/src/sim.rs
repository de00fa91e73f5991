//! A simulated disk for crash tests (feature `test-util`).
//!
//! Every file keeps its *durable* bytes (as of its last `sync_data`) and the writes made
//! since. The directory keeps its durable entries (as of the last `sync_dir`). [`crash`]
//! rebuilds what a power cut could leave: each file's durable bytes plus a random prefix of
//! its unsynced writes, the last of them torn at a random byte; files created or renamed since
//! the last directory sync are lost. A log that acknowledges a record before the data and the
//! directory entry are synced loses it here, which a `kill -9` test cannot show (the page
//! cache survives a killed process).
//!
//! Faults: [`SimStorage::fail_syncs_after`] makes `sync_data` fail with EIO after N more
//! successes, and [`SimStorage::fail_allocations`] makes `allocate` fail with ENOSPC.
//!
//! [`crash`]: SimStorage::crash

#![allow(
    clippy::missing_panics_doc,
    reason = "test-only code panics on poisoned locks"
)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::io::{Storage, StorageFile};

/// A small deterministic generator (splitmix64) so crash images depend only on the seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

#[derive(Debug, Default, Clone)]
struct FileData {
    durable: Vec<u8>,
    current: Vec<u8>,
    unsynced: Vec<(u64, Vec<u8>)>,
}

fn write_into(target: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(data.len());
    if target.len() < end {
        target.resize(end, 0);
    }
    if let Some(slot) = target.get_mut(start..end) {
        slot.copy_from_slice(data);
    }
}

#[derive(Debug, Default)]
struct SimState {
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    files: HashMap<u64, FileData>,
    next_id: u64,
    syncs_before_failure: Option<u64>,
    fail_allocations: bool,
}

/// An in-memory directory with crash images. Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An independent copy of the disk as it is now.
    #[must_use]
    pub fn fork(&self) -> SimStorage {
        let state = self.lock();
        let copy = SimState {
            names: state.names.clone(),
            durable_names: state.durable_names.clone(),
            files: state.files.clone(),
            next_id: state.next_id,
            syncs_before_failure: state.syncs_before_failure,
            fail_allocations: state.fail_allocations,
        };
        SimStorage {
            state: Arc::new(Mutex::new(copy)),
        }
    }

    /// After `count` more successful `sync_data` calls, every further one fails with EIO.
    pub fn fail_syncs_after(&self, count: Option<u64>) {
        self.lock().syncs_before_failure = count;
    }

    /// Makes `allocate` fail with ENOSPC (a full disk) or succeed again.
    pub fn fail_allocations(&self, fail: bool) {
        self.lock().fail_allocations = fail;
    }

    /// Replaces the disk's contents with what a power cut at this moment could leave. The
    /// writer must be stopped first (see `Wal::halt`).
    pub fn crash(&self, rng: &mut SimRng) {
        let mut state = self.lock();
        let names = state.durable_names.clone();
        let mut files = HashMap::new();
        for id in names.values() {
            let Some(data) = state.files.get(id) else {
                continue;
            };
            let mut image = data.durable.clone();
            let keep = usize::try_from(rng.below(data.unsynced.len() as u64 + 1)).unwrap_or(0);
            for (index, (offset, bytes)) in data.unsynced.iter().take(keep).enumerate() {
                let torn = if index + 1 == keep {
                    let cut = usize::try_from(rng.below(bytes.len() as u64 + 1)).unwrap_or(0);
                    bytes.get(..cut).unwrap_or_default()
                } else {
                    bytes.as_slice()
                };
                write_into(&mut image, *offset, torn);
            }
            files.insert(
                *id,
                FileData {
                    durable: image.clone(),
                    current: image,
                    unsynced: Vec::new(),
                },
            );
        }
        state.names = names;
        state.files = files;
        state.syncs_before_failure = None;
        state.fail_allocations = false;
    }

    /// The current contents of a file, for tests that corrupt it.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = state.names.get(name)?;
        state.files.get(id).map(|data| data.current.clone())
    }

    /// Creates (or replaces) a durable file holding exactly `bytes`: a disk image from
    /// elsewhere, for the fuzz target that recovers arbitrary segment bytes.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.names.insert(name.to_owned(), id);
        state.durable_names.insert(name.to_owned(), id);
        state.files.insert(
            id,
            FileData {
                durable: bytes.to_vec(),
                current: bytes.to_vec(),
                unsynced: Vec::new(),
            },
        );
    }

    /// Overwrites bytes of a file durably, for tests that corrupt it.
    pub fn corrupt(&self, name: &str, offset: u64, bytes: &[u8]) {
        let mut state = self.lock();
        let Some(id) = state.names.get(name).copied() else {
            return;
        };
        if let Some(data) = state.files.get_mut(&id) {
            write_into(&mut data.current, offset, bytes);
            write_into(&mut data.durable, offset, bytes);
        }
    }
}

struct SimFile {
    storage: SimStorage,
    id: u64,
}

impl Storage for SimStorage {
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.lock();
        if state.names.contains_key(name) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let id = state.next_id;
        state.next_id += 1;
        state.names.insert(name.to_owned(), id);
        state.files.insert(id, FileData::default());
        Ok(Box::new(SimFile {
            storage: self.clone(),
            id,
        }))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let state = self.lock();
        let id = *state
            .names
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Box::new(SimFile {
            storage: self.clone(),
            id,
        }))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().names.keys().cloned().collect())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock();
        let id = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.names.insert(to.to_owned(), id);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        state
            .names
            .remove(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.durable_names = state.names.clone();
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.storage.lock();
        let file = state
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        write_into(&mut file.current, offset, data);
        file.unsynced.push((offset, data.to_vec()));
        Ok(())
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let state = self.storage.lock();
        Ok(state
            .files
            .get(&self.id)
            .map(|file| file.current.clone())
            .unwrap_or_default())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.storage.lock();
        if let Some(remaining) = state.syncs_before_failure {
            if remaining == 0 {
                // Like Linux after a failed writeback: the dirty pages are dropped, and a
                // later sync would report success without the data. Never rely on a retry.
                if let Some(file) = state.files.get_mut(&self.id) {
                    file.unsynced.clear();
                }
                return Err(io::Error::from_raw_os_error(5));
            }
            state.syncs_before_failure = Some(remaining - 1);
        }
        let file = state
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.durable = file.current.clone();
        file.unsynced.clear();
        Ok(())
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.storage.lock();
        if state.fail_allocations {
            return Err(io::Error::from_raw_os_error(28));
        }
        let file = state
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        // Recovery reads missing bytes as zeros, so whether the new length survives a crash
        // does not matter; keep it in both images.
        if file.current.len() < len {
            file.current.resize(len, 0);
        }
        if file.durable.len() < len {
            file.durable.resize(len, 0);
        }
        Ok(())
    }
}
