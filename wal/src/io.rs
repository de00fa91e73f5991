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
        match rustix::fs::fallocate(&self.0, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            // Filesystems without fallocate: write zeros, which allocates just the same.
            Err(rustix::io::Errno::OPNOTSUPP) => {
                let zeros = vec![0_u8; 1 << 20];
                let mut offset = 0;
                while offset < len {
                    let chunk = usize::try_from((len - offset).min(zeros.len() as u64))
                        .unwrap_or(zeros.len());
                    self.0
                        .write_all_at(zeros.get(..chunk).unwrap_or(&zeros), offset)?;
                    offset += chunk as u64;
                }
                Ok(())
            }
            Err(errno) => Err(errno.into()),
        }
    }
}
