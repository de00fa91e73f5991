//! What the handle ([`crate::Wal`]) and the log thread share: the commands the handle sends,
//! and the state both read.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use crate::error::WalError;
use crate::lsn::Lsn;
use crate::types::{Ack, WalStats};

/// A request to the log thread. Appends are not commands: they are queued and written by
/// whichever thread leads (see [`crate::wal`]).
pub(crate) enum Command {
    /// Under `EverySec`: enough bytes are unsynced that a sync is due now.
    Sync,
    /// Under `Always`: appends are queued; the log thread writes and syncs them.
    Write,
    Barrier(Box<dyn FnOnce(Lsn) + Send>),
    Truncate {
        through_lsn: Lsn,
        done: mpsc::Sender<()>,
    },
    Shutdown(mpsc::Sender<Result<(), WalError>>),
    #[cfg(any(test, feature = "test-util"))]
    Halt(mpsc::Sender<()>),
}

pub(crate) struct Shared {
    pub(crate) poisoned: AtomicBool,
    pub(crate) stats: WalStats,
}

/// An append waiting for a writer.
pub(crate) type Queued = (Vec<u8>, Ack);
