//! What the handle ([`crate::Wal`]) and the WAL thread share: the commands the handle sends,
//! and the state both read.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use crate::error::WalError;
use crate::lsn::Lsn;
use crate::types::{Ack, WalStats};

/// A request to the WAL thread.
pub(crate) enum Command {
    Append {
        payload: Vec<u8>,
        ack: Ack,
    },
    Barrier(Box<dyn FnOnce(Lsn) + Send>),
    Truncate {
        through_lsn: Lsn,
    },
    Shutdown(mpsc::Sender<Result<(), WalError>>),
    #[cfg(any(test, feature = "test-util"))]
    Halt(mpsc::Sender<()>),
}

pub(crate) struct Shared {
    pub(crate) poisoned: AtomicBool,
    pub(crate) stats: WalStats,
}
