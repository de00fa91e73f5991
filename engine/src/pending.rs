//! A write that resolves once the log has made it durable.

use tokio::sync::oneshot;

use crate::error::EngineError;

/// A write that completes when the log acknowledges it.
#[must_use = "a write is only known to be durable once awaited"]
pub struct PendingWrite<T>(pub(crate) PendingInner<T>);

pub(crate) enum PendingInner<T> {
    Ready(Result<T, EngineError>),
    Waiting(oneshot::Receiver<Result<T, EngineError>>),
}

impl<T> PendingWrite<T> {
    pub(crate) fn ready(result: Result<T, EngineError>) -> PendingWrite<T> {
        PendingWrite(PendingInner::Ready(result))
    }

    /// Waits for durability (or failure).
    pub async fn wait(self) -> Result<T, EngineError> {
        match self.0 {
            PendingInner::Ready(result) => result,
            PendingInner::Waiting(receiver) => {
                receiver.await.unwrap_or(Err(EngineError::ShuttingDown))
            }
        }
    }

    /// Waits from synchronous code (not from an async task).
    pub fn wait_blocking(self) -> Result<T, EngineError> {
        match self.0 {
            PendingInner::Ready(result) => result,
            PendingInner::Waiting(receiver) => receiver
                .blocking_recv()
                .unwrap_or(Err(EngineError::ShuttingDown)),
        }
    }
}
