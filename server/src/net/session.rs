//! What every session shares: the connection context, how a session ends (its errors, its
//! idle and read timeouts, its close after shutdown) and the wait for its next request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Framed};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::ServerConfig;
use crate::executor::Executor;

/// Why a session ended abnormally (logged once, with the peer address).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("{0}")]
    Frame(#[from] sutra_protocol::FrameError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client did not read its responses within the idle timeout")]
    WriteTimeout,
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
}

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) executor: Arc<Executor>,
    pub(crate) config: ServerConfig,
}

/// How long a session closed by shutdown keeps reading (and discarding) what its client still
/// sends after the server's last reply.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// Closes a session that shutdown ended: sends FIN after the last reply, then reads and drops
/// the client's unread requests until it closes too or [`SHUTDOWN_LINGER`] passes. Dropping a
/// socket with unread input makes the kernel send a reset, which can destroy replies the
/// client has not read yet (a pipelining client would lose answers to writes that were made).
pub(crate) async fn close_after_shutdown(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt;
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0_u8; 8192];
    let _ = tokio::time::timeout(SHUTDOWN_LINGER, async {
        while let Ok(read) = stream.read(&mut sink).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
}

/// Waits for the next frame or line of a session. `None` means stop: shutdown began while the
/// connection was between requests, it stayed silent for the idle timeout, or a request it
/// started did not finish within the read timeout.
pub(crate) async fn next_item<C: Decoder>(
    framed: &mut Framed<TcpStream, C>,
    timer: &mut SessionTimer,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) -> Option<Option<Result<C::Item, C::Error>>> {
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            next = framed.next() => {
                timer.touch();
                return Some(next);
            }
            () = timer.due() => {}
        }
        // `Framed::next` is cancel-safe: bytes read so far stay in the read buffer.
        match timer.check(!framed.read_buffer().is_empty()) {
            Some(Expired::Idle) => {
                debug!(%peer, "closed: idle timeout");
                return None;
            }
            Some(Expired::Read) => {
                debug!(%peer, "closed: a request did not arrive completely within the read timeout");
                return None;
            }
            None => {}
        }
    }
}

/// Why a session's timer closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// Silent between requests for `IDLE_TIMEOUT_SECS`.
    Idle,
    /// A request started and did not finish within `READ_TIMEOUT_SECS`.
    Read,
}

/// The idle and read timeouts of one session, with one timer and no registration per
/// request: activity only records the time; when the timer fires the session checks whether
/// it is idle too long, or holds part of a request for too long, and re-arms it.
///
/// The start of a partial request is noticed at the first check that finds bytes waiting, so
/// a trickling client is closed between one and two read timeouts after its first byte.
pub(crate) struct SessionTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    read_timeout: Duration,
    last_activity: tokio::time::Instant,
    partial_since: Option<tokio::time::Instant>,
}

impl SessionTimer {
    pub(crate) fn new(idle_timeout: Duration, read_timeout: Duration) -> SessionTimer {
        let now = tokio::time::Instant::now();
        SessionTimer {
            sleep: Box::pin(tokio::time::sleep_until(
                now + idle_timeout.min(read_timeout),
            )),
            idle_timeout,
            read_timeout,
            last_activity: now,
            partial_since: None,
        }
    }

    /// Records a complete request: both timeouts count from now.
    pub(crate) fn touch(&mut self) {
        self.last_activity = tokio::time::Instant::now();
        self.partial_since = None;
    }

    /// Completes when a check is due.
    pub(crate) async fn due(&mut self) {
        self.sleep.as_mut().await;
    }

    /// At a due check, with whether part of a request is buffered: the reason to close, or
    /// `None` after re-arming the timer.
    pub(crate) fn check(&mut self, partial: bool) -> Option<Expired> {
        let now = tokio::time::Instant::now();
        let next = if partial {
            let since = *self.partial_since.get_or_insert(now);
            let deadline = since + self.read_timeout;
            if now >= deadline {
                return Some(Expired::Read);
            }
            deadline
        } else {
            self.partial_since = None;
            let deadline = self.last_activity + self.idle_timeout;
            if now >= deadline {
                return Some(Expired::Idle);
            }
            deadline.min(now + self.read_timeout)
        };
        self.sleep.as_mut().reset(next);
        None
    }
}
