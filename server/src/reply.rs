//! What a request gets back: a response now, or once its write is durable; and the one
//! mapping of engine failures to protocol errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use sutra_engine::{EngineError, PendingWrite};
use sutra_protocol::{ErrorCode, Opcode, Response};

use crate::metrics::Metrics;

/// The answer to a request: now, or once a write is durable.
pub enum Reply {
    /// The response.
    Ready(Response),
    /// A write waiting for the log (or work off the runtime); resolves to its response.
    Pending(Pending),
}

/// A response still to come, timed into the request metrics when it arrives.
pub struct Pending {
    future: Pin<Box<dyn Future<Output = Response> + Send>>,
    /// The metrics, opcode and start of the request (set by the executor), recorded when the
    /// response is ready. Kept here rather than in a second boxed future around the first:
    /// one allocation less per write.
    timing: Option<(Arc<Metrics>, Opcode, Instant)>,
}

impl Pending {
    /// The response `future` will give.
    pub fn new(future: impl Future<Output = Response> + Send + 'static) -> Pending {
        Pending {
            future: Box::pin(future),
            timing: None,
        }
    }

    /// Records the request in `metrics` when the response is ready.
    pub(crate) fn timed(
        mut self,
        metrics: Arc<Metrics>,
        opcode: Opcode,
        started: Instant,
    ) -> Pending {
        self.timing = Some((metrics, opcode, started));
        self
    }
}

impl Future for Pending {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Response> {
        let this = self.get_mut();
        let response = std::task::ready!(this.future.as_mut().poll(context));
        if let Some((metrics, opcode, started)) = this.timing.take() {
            metrics.request(opcode, started.elapsed().as_secs_f64());
        }
        Poll::Ready(response)
    }
}

/// The reply to a write: its response once the log has it, or the error at once.
pub(crate) fn when_durable<T: Send + 'static>(
    write: Result<PendingWrite<T>, EngineError>,
    respond: impl FnOnce(T) -> Response + Send + 'static,
) -> Reply {
    match write {
        Ok(pending) => Reply::Pending(Pending::new(async move {
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
