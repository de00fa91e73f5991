//! A write that resolves once the log has made it durable.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::error::EngineError;
use crate::persist::Persistence;

/// A write that completes when the log acknowledges it.
///
/// Its log record is queued, not yet written: waiting (or dropping this) writes it, with
/// every record queued beside it. So the writes of a pipeline of requests, made one after
/// another and then awaited, share one log write.
#[must_use = "a write is only known to be durable once awaited"]
pub struct PendingWrite<T>(pub(crate) PendingInner<T>);

pub(crate) enum PendingInner<T> {
    Ready(Result<T, EngineError>),
    Waiting(oneshot::Receiver<Result<T, EngineError>>, Queued),
}

/// Writes the log's queue when dropped: a pending write is never left unwritten, whether it
/// is awaited or dropped.
pub(crate) struct Queued(pub(crate) Arc<Persistence>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.write_queued();
    }
}

impl<T> PendingWrite<T> {
    pub(crate) fn ready(result: Result<T, EngineError>) -> PendingWrite<T> {
        PendingWrite(PendingInner::Ready(result))
    }

    /// Waits for durability (or failure).
    ///
    /// First it yields once to the runtime, so that the other tasks ready on this thread
    /// (other connections' requests) queue their records too and one write carries them
    /// all, as an event loop writes its log once per turn.
    pub async fn wait(self) -> Result<T, EngineError> {
        match self.0 {
            PendingInner::Ready(result) => result,
            PendingInner::Waiting(receiver, queued) => {
                tokio::task::yield_now().await;
                drop(queued);
                receiver.await.unwrap_or(Err(EngineError::ShuttingDown))
            }
        }
    }

    /// Waits from synchronous code (not from an async task).
    pub fn wait_blocking(self) -> Result<T, EngineError> {
        match self.0 {
            PendingInner::Ready(result) => result,
            PendingInner::Waiting(receiver, queued) => {
                drop(queued);
                receiver
                    .blocking_recv()
                    .unwrap_or(Err(EngineError::ShuttingDown))
            }
        }
    }
}
