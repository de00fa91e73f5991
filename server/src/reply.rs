//! What a request gets back: a response now, or once its write is durable; and the one
//! mapping of engine failures to protocol errors.

use std::future::Future;
use std::pin::Pin;

use sutra_engine::{EngineError, PendingWrite};
use sutra_protocol::{ErrorCode, Response};

/// The answer to a request: now, or once a write is durable.
pub enum Reply {
    /// The response.
    Ready(Response),
    /// A write waiting for the log; resolves to its response.
    Pending(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// The reply to a write: its response once the log has it, or the error at once.
pub(crate) fn when_durable<T: Send + 'static>(
    write: Result<PendingWrite<T>, EngineError>,
    respond: impl FnOnce(T) -> Response + Send + 'static,
) -> Reply {
    match write {
        Ok(pending) => Reply::Pending(Box::pin(async move {
            pending
                .wait()
                .await
                .map_or_else(|error| engine_error(&error), respond)
        })),
        Err(error) => Reply::Ready(engine_error(&error)),
    }
}

pub(crate) fn engine_error(error: &EngineError) -> Response {
    // A poisoned log was reported once, when it failed; do not log every refused write.
    if !error.is_read_only()
        && matches!(
            error.code(),
            ErrorCode::Internal | ErrorCode::StorageUnavailable
        )
    {
        tracing::warn!(%error, "request failed");
    }
    Response::error(error.code(), error.client_message())
}

/// An error response for a request that could not be decoded.
pub fn decode_error(error: &sutra_protocol::DecodeError) -> Response {
    Response::error(error.code(), error.to_string())
}

/// The reply sent when a response could not be encoded (a bug: limits are validated so that
/// every response fits a frame).
pub fn internal_error() -> Response {
    Response::error(ErrorCode::Internal, "internal error; see the server log")
}
