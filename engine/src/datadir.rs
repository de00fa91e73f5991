//! The data directory: its lock, its manifest and durable file replacement.
//!
//! ```text
//! STORAGE_PATH/
//!   LOCK                         held (flock) while a server uses the directory
//!   MANIFEST                     format_version and vector_dimension, checked at start
//!   snapshot-<lsn 20 digits>.snap   the latest checkpoint (see snapshot.rs)
//!   wal/wal-<first lsn>.seg      write-ahead log segments (see sutra-wal)
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::EngineError;

/// The on-disk format version of the directory (manifest, snapshot and record formats).
pub(crate) const FORMAT_VERSION: u32 = 1;

const MANIFEST: &str = "MANIFEST";

#[expect(
    clippy::needless_pass_by_value,
    reason = "called from map_err, which owns the error"
)]
pub(crate) fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Io {
        op,
        path: path.display().to_string(),
        message: source.to_string(),
    }
}

/// fsyncs a directory, so that a creation, rename or removal in it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|error| io_error("sync directory", dir, error))
}

/// Writes `bytes` to `path` durably and atomically: temporary file, fsync, rename, directory
/// fsync.
pub(crate) fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let temp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|error| io_error("create", &temp, error))?;
    file.write_all(bytes)
        .map_err(|error| io_error("write", &temp, error))?;
    file.sync_all()
        .map_err(|error| io_error("sync", &temp, error))?;
    fs::rename(&temp, path).map_err(|error| io_error("rename", &temp, error))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// An open, locked data directory. The lock is released when this is dropped (or the
/// process dies: it is an `flock`, which the kernel releases with the last descriptor).
#[derive(Debug)]
pub(crate) struct DataDir {
    pub(crate) path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates or opens the directory, takes its lock and checks (or writes) its manifest.
    pub(crate) fn open(path: &Path, vector_dimension: u32) -> Result<DataDir, EngineError> {
        fs::create_dir_all(path).map_err(|error| io_error("create directory", path, error))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|error| io_error("open", &lock_path, error))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(EngineError::Locked {
                    path: path.display().to_string(),
                })
            }
            Err(TryLockError::Error(error)) => return Err(io_error("lock", &lock_path, error)),
        }
        let dir = DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        };
        dir.check_manifest(vector_dimension)?;
        Ok(dir)
    }

    fn check_manifest(&self, vector_dimension: u32) -> Result<(), EngineError> {
        let path = self.path.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let manifest = format!(
                    "# sutra-storage data directory; do not edit\nformat_version={FORMAT_VERSION}\nvector_dimension={vector_dimension}\n"
                );
                return write_file_durably(&path, manifest.as_bytes());
            }
            Err(error) => return Err(io_error("read", &path, error)),
        };
        let field = |name: &str| -> Option<u32> {
            text.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix('=')?
                    .trim()
                    .parse()
                    .ok()
            })
        };
        let bad = |reason: String| EngineError::BadDataDir {
            path: self.path.display().to_string(),
            reason,
        };
        let found_version = field("format_version")
            .ok_or_else(|| bad("MANIFEST has no format_version".to_owned()))?;
        if found_version != FORMAT_VERSION {
            return Err(bad(format!("it was written in format version {found_version}; this build reads version {FORMAT_VERSION}")));
        }
        let found_dimension = field("vector_dimension")
            .ok_or_else(|| bad("MANIFEST has no vector_dimension".to_owned()))?;
        if found_dimension != vector_dimension {
            return Err(bad(format!(
                "it holds {found_dimension}-dimensional vectors but VECTOR_DIMENSION is {vector_dimension}; start with VECTOR_DIMENSION={found_dimension} or use another STORAGE_PATH"
            )));
        }
        Ok(())
    }

    pub(crate) fn wal_dir(&self) -> PathBuf {
        self.path.join("wal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_locked_directory_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let first = DataDir::open(temp.path(), 8).unwrap();
        let error = DataDir::open(temp.path(), 8).unwrap_err();
        assert!(matches!(error, EngineError::Locked { .. }), "{error}");
        assert!(
            error.to_string().contains("another sutra-storage"),
            "{error}"
        );
        drop(first);
        assert!(DataDir::open(temp.path(), 8).is_ok());
    }

    #[test]
    fn another_vector_dimension_is_refused_with_advice() {
        let temp = tempfile::tempdir().unwrap();
        drop(DataDir::open(temp.path(), 8).unwrap());
        let error = DataDir::open(temp.path(), 16).unwrap_err();
        assert!(error.to_string().contains("VECTOR_DIMENSION=8"), "{error}");
    }

    #[test]
    fn another_format_version_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(
            temp.path().join(MANIFEST),
            "format_version=99\nvector_dimension=8\n",
        )
        .unwrap();
        let error = DataDir::open(temp.path(), 8).unwrap_err();
        assert!(error.to_string().contains("format version 99"), "{error}");
    }
}
