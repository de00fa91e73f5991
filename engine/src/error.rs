//! Why an engine operation failed, and the one mapping of those failures to wire codes.

use sutra_protocol::{ConceptId, ErrorCode};
use sutra_wal::WalError;

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No live concept has this id.
    #[error("no concept with id {id:?}")]
    NotFound {
        /// The id asked for.
        id: ConceptId,
    },
    /// The engine has been shut down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Too many writes are waiting for the log.
    #[error("too many writes in flight; retry later")]
    Overloaded,
    /// The store holds `MAX_CONCEPTS` and `EVICTION_POLICY` is `none`.
    #[error("the store is full: it holds MAX_CONCEPTS ({max}) concepts and EVICTION_POLICY is none; delete concepts, raise MAX_CONCEPTS or use EVICTION_POLICY=lru")]
    Full {
        /// `MAX_CONCEPTS`.
        max: u64,
    },
    /// A request is invalid for this store (not for the wire format).
    #[error("{0}")]
    Invalid(String),
    /// The write could not be made durable; it was not applied.
    #[error("the write could not be made durable and was not applied: {0}")]
    Storage(WalError),
    /// Recovery or the log failed at start-up.
    #[error("{0}")]
    Wal(WalError),
    /// A file operation failed.
    #[error("{op} {path}: {message}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// Another server holds the data directory.
    #[error("data directory {path} is in use by another sutra-storage process (its LOCK file is locked); stop that server or choose another STORAGE_PATH")]
    Locked {
        /// The directory.
        path: String,
    },
    /// The data directory cannot be used by this server.
    #[error("cannot use data directory {path}: {reason}")]
    BadDataDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A bug.
    #[error("internal error: {message}")]
    Internal {
        /// Details for the log.
        message: String,
    },
}

impl EngineError {
    /// The one place engine errors map to wire codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::NotFound { .. } => ErrorCode::NotFound,
            EngineError::ShuttingDown | EngineError::Overloaded => ErrorCode::Busy,
            EngineError::Full { .. } => ErrorCode::Full,
            EngineError::Invalid(_) => ErrorCode::InvalidArgument,
            EngineError::Storage(_) => ErrorCode::StorageUnavailable,
            EngineError::Wal(_)
            | EngineError::Io { .. }
            | EngineError::Locked { .. }
            | EngineError::BadDataDir { .. }
            | EngineError::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// The message a client may see (internal details stay in the log).
    pub fn client_message(&self) -> String {
        match self {
            EngineError::Storage(error) if error.is_disk_full() => {
                "the disk is full: the write was not stored; retry when space is available"
                    .to_owned()
            }
            EngineError::Storage(WalError::Poisoned) => {
                "the server's write-ahead log failed earlier; writes are refused until it restarts"
                    .to_owned()
            }
            EngineError::Storage(_) => {
                "the write could not be made durable and was not stored; see the server log"
                    .to_owned()
            }
            EngineError::NotFound { .. }
            | EngineError::ShuttingDown
            | EngineError::Overloaded
            | EngineError::Full { .. }
            | EngineError::Invalid(_) => self.to_string(),
            _ => "internal error; see the server log".to_owned(),
        }
    }

    /// Whether this is a write refused because the log failed earlier and the store is
    /// read-only until a restart (reported once, when the log failed).
    pub fn is_read_only(&self) -> bool {
        matches!(self, EngineError::Storage(WalError::Poisoned))
    }

    pub(crate) fn from_append(error: WalError) -> EngineError {
        match error {
            WalError::QueueFull => EngineError::Overloaded,
            WalError::Closed => EngineError::ShuttingDown,
            other => EngineError::Storage(other),
        }
    }
}
