//! Accepting connections and telling the three dialects apart.
//!
//! Every accepted connection first takes a slot from a semaphore of `MAX_CONNECTIONS`
//! permits. Without one it is answered Busy (in its own dialect, as far as that can be told
//! within the sniff timeout) and closed: excess clients are not parked in the kernel backlog.
//!
//! With a slot, the first byte decides: `0x00` is a binary frame (frames are shorter than
//! 2^24 bytes); otherwise the first line is peeked (at most [`sniff::SNIFF_BYTES`], within the sniff
//! timeout) and an HTTP/1.x request line goes to hyper, anything else to the text mode. Peeking
//! consumes nothing, so the chosen session reads the stream from its first byte.
//!
//! Logging: connection errors at `warn` with the peer address, opens and closes at `debug`.

mod binary;
mod busy;
mod http;
mod session;
mod sniff;
mod text;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use busy::reject_busy;
pub(crate) use session::Shared;
use sniff::{sniff, Dialect};

/// At most this many over-limit connections are being answered Busy at once; beyond it they
/// are closed without a reply, so a connection flood cannot create unbounded tasks.
const MAX_REJECTING: usize = 64;

/// Accepts until `shutdown` is cancelled. Sessions are spawned on `tracker` with a child of
/// `shutdown`, so they stop between requests.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning; the listener stays usable.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let counters = &shared.executor.counters;
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
            counters.connections_total.fetch_add(1, Ordering::Relaxed);
            counters.connections_current.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::clone(&shared);
            let token = shutdown.child_token();
            tracker.spawn(async move {
                serve(stream, peer, &shared, token, permit).await;
                shared
                    .executor
                    .counters
                    .connections_current
                    .fetch_sub(1, Ordering::Relaxed);
            });
        } else {
            counters
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            warn!(%peer, limit = shared.config.max_connections, "connection refused: MAX_CONNECTIONS reached");
            if let Ok(permit) = Arc::clone(&rejecting).try_acquire_owned() {
                let shared = Arc::clone(&shared);
                tracker.spawn(async move {
                    reject_busy(
                        stream,
                        shared.config.sniff_timeout,
                        shared.config.limits.max_frame_bytes,
                    )
                    .await;
                    drop(permit);
                });
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let dialect = tokio::select! {
        () = shutdown.cancelled() => return,
        dialect = tokio::time::timeout(shared.config.idle_timeout, sniff(&stream, shared.config.sniff_timeout)) => dialect,
    };
    let dialect = match dialect {
        Ok(Ok(Some(dialect))) => dialect,
        Ok(Ok(None)) => return, // Closed before sending anything.
        Ok(Err(error)) => {
            warn!(%peer, %error, "connection error before the first request");
            return;
        }
        Err(_) => {
            debug!(%peer, "closed: nothing sent within the idle timeout");
            return;
        }
    };
    debug!(%peer, ?dialect, "connection open");
    let result = match dialect {
        Dialect::Binary => binary::serve(stream, peer, shared, &shutdown).await,
        Dialect::Text => text::serve(stream, peer, shared, &shutdown).await,
        Dialect::Http => {
            http::serve(
                stream,
                Arc::clone(&shared.executor),
                shared.config.read_timeout,
                &shutdown,
            )
            .await
        }
    };
    match result {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(error) => warn!(%peer, %error, "connection error"),
    }
    drop(permit);
}
