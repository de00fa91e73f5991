//! The narrow file-I/O seam under the log: a directory of named files.
//!
//! [`DirStorage`] is the real implementation. The `test-util` feature adds
//! [`SimStorage`](crate::sim::SimStorage), which remembers which bytes were synced and can
//! produce the file images a power cut would leave. Everything the log does to the disk goes
//! through these two traits, so fault injection sees every write and every sync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory of files.
pub trait Storage: Send + Sync + 'static {
    /// Creates a new, empty file; fails if it exists.
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Deletes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
}

/// One open file.
pub trait StorageFile: Send {
    /// Writes all of `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Reads the whole file.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Makes written data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Reserves `len` bytes of real disk space (not a sparse file), so that a full disk is
    /// reported here and not in the middle of later writes.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
}

/// Files in a real directory.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Uses `dir`, creating it if needed.
    pub fn open(dir: &Path) -> io::Result<DirStorage> {
        fs::create_dir_all(dir)?;
        Ok(DirStorage {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

struct DirFile(File);

impl Storage for DirStorage {
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(name))?;
        Ok(Box::new(DirFile(file)))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        // NOTE: never create or truncate here: opening is for files recovery found.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(false)
            .truncate(false)
            .open(self.path(name))?;
        Ok(Box::new(DirFile(file)))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl StorageFile for DirFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut file = &self.0;
        std::io::Seek::rewind(&mut file)?;
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        allocate(&self.0, len)
    }
}

/// Reserves the first `len` bytes of `file` on disk (not a sparse file), so that a full disk
/// fails here and not in a later write or a page fault of a mapping. `fallocate`, or on
/// filesystems without it (`EOPNOTSUPP`: FUSE, some network filesystems) zeros written, which
/// allocate just the same, only slower. Used for log segments and vector segments alike.
///
/// # Errors
/// The I/O error, a full disk (`ENOSPC`) included.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    // (Under `test-util`, `faults` can make it take the fallback, as EOPNOTSUPP would.)
    #[cfg(feature = "test-util")]
    if faults::fallocate_unsupported() {
        faults::record_fallback(len);
        return write_zeros(file, len);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => write_zeros(file, len),
        Err(errno) => Err(errno.into()),
    }
}

fn write_zeros(file: &File, len: u64) -> io::Result<()> {
    let zeros = vec![0_u8; 1 << 20];
    let mut offset = 0;
    while offset < len {
        let chunk = usize::try_from((len - offset).min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all_at(zeros.get(..chunk).unwrap_or(&zeros), offset)?;
        offset += chunk as u64;
    }
    Ok(())
}

/// Fault injection for tests of the layers above (feature `test-util`).
#[cfg(feature = "test-util")]
pub mod faults {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, PoisonError};

    static FALLOCATE_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

    /// Makes [`allocate`](super::allocate) behave as on a filesystem whose `fallocate` fails
    /// with `EOPNOTSUPP` (process-wide; the fallback allocates the same bytes, so other
    /// tests running meanwhile only get slower).
    pub fn set_fallocate_unsupported(unsupported: bool) {
        FALLOCATE_UNSUPPORTED.store(unsupported, Ordering::Relaxed);
    }

    /// Whether [`set_fallocate_unsupported`] is on.
    pub fn fallocate_unsupported() -> bool {
        FALLOCATE_UNSUPPORTED.load(Ordering::Relaxed)
    }

    static FALLBACKS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    pub(super) fn record_fallback(len: u64) {
        FALLBACKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(len);
    }

    /// The lengths allocated by the zero fallback since the last call (so a test can tell
    /// that a given kind of file went through [`allocate`](super::allocate)).
    pub fn take_fallback_lengths() -> Vec<u64> {
        std::mem::take(&mut *FALLBACKS.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn the_zero_fallback_allocates_every_block() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let len = 3 * (1 << 20) + 5;
        write_zeros(&file, len).unwrap();
        let metadata = file.metadata().unwrap();
        assert_eq!(metadata.len(), len);
        assert!(metadata.blocks() * 512 >= len);
        allocate(&file, len).unwrap();
    }
}
