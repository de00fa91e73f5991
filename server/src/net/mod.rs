//! Accepting connections and telling the three dialects apart.
//!
//! Every accepted connection first takes a slot from a semaphore of `MAX_CONNECTIONS`
//! permits. Without one it is answered Busy (in its own dialect, as far as that can be told
//! within the sniff timeout) and closed: excess clients are not parked in the kernel backlog.
//!
//! With a slot, the first byte decides: `0x00` is a binary frame (frames are shorter than
//! 2^24 bytes); otherwise the first line is peeked (at most [`SNIFF_BYTES`], within the sniff
//! timeout) and an HTTP/1.x request line goes to hyper, anything else to the text mode. Peeking
//! consumes nothing, so the chosen session reads the stream from its first byte.
//!
//! Logging: connection errors at `warn` with the peer address, opens and closes at `debug`.

mod binary;
mod text;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sutra_protocol::{ErrorCode, FrameCodec, Response, ResponseFrame};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::ServerConfig;
use crate::service::Service;

/// Bytes peeked to find the first line of a non-binary client.
pub const SNIFF_BYTES: usize = 1024;

/// At most this many over-limit connections are being answered Busy at once; beyond it they
/// are closed without a reply, so a connection flood cannot create unbounded tasks.
const MAX_REJECTING: usize = 64;

/// How often the sniffer looks again for the end of an incomplete first line.
const SNIFF_POLL: Duration = Duration::from_millis(5);

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
    pub(crate) service: Arc<Service>,
    pub(crate) config: ServerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Binary,
    Http,
    Text,
}

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
        let counters = &shared.service.counters;
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
                    .service
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
                    reject_busy(stream, &shared).await;
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
            crate::http::serve(
                stream,
                Arc::clone(&shared.service),
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

/// How long a session closed by shutdown keeps reading (and discarding) what its client still
/// sends after the server's last reply.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// Closes a session that shutdown ended: sends FIN after the last reply, then reads and drops
/// the client's unread requests until it closes too or [`SHUTDOWN_LINGER`] passes. Dropping a
/// socket with unread input makes the kernel send a reset, which can destroy replies the
/// client has not read yet (a pipelining client would lose answers to writes that were made).
async fn close_after_shutdown(mut stream: TcpStream) {
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
async fn next_item<C: Decoder>(
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

/// A connection's authentication state (`SUTRA_AUTH_TOKEN`): until a right token arrives,
/// every request but Auth (and Health, when open) is answered Unauthenticated.
pub(crate) struct Gate {
    authenticated: bool,
    failures: u32,
}

/// Wrong tokens after which a connection is closed.
pub(crate) const MAX_AUTH_FAILURES: u32 = 3;

/// Delay before answering a wrong token: guessing is slow.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(200);

impl Gate {
    pub(crate) fn new(service: &Service) -> Gate {
        Gate {
            authenticated: !service.requires_auth(),
            failures: 0,
        }
    }

    /// The answer when the gate answers `request` itself (Auth, or a refusal); `None` when
    /// the request may run.
    pub(crate) async fn check(
        &mut self,
        service: &Service,
        request: &sutra_protocol::Request,
        peer: SocketAddr,
        via: &'static str,
    ) -> Option<Response> {
        match request {
            sutra_protocol::Request::Auth { token } => {
                if service.check_token(token) {
                    self.authenticated = true;
                    Some(Response::Authenticated)
                } else {
                    self.failures += 1;
                    service.auth_failed(peer, via);
                    tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                    Some(Response::error(ErrorCode::Unauthenticated, "wrong token"))
                }
            }
            _ if self.authenticated => None,
            sutra_protocol::Request::Health if service.health_is_open() => None,
            _ => Some(Response::error(
                ErrorCode::Unauthenticated,
                "this server requires authentication: send Auth (text: AUTH <token>) first",
            )),
        }
    }

    /// Whether the connection gave too many wrong tokens and must close.
    pub(crate) fn exhausted(&self) -> bool {
        self.failures >= MAX_AUTH_FAILURES
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

/// Waits for the first bytes and classifies the connection; `None` when the peer closed
/// without sending anything.
async fn sniff(stream: &TcpStream, sniff_timeout: Duration) -> std::io::Result<Option<Dialect>> {
    let mut buf = [0_u8; SNIFF_BYTES];
    let first = stream.peek(&mut buf[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    if buf[0] == 0x00 {
        return Ok(Some(Dialect::Binary));
    }
    let deadline = tokio::time::Instant::now() + sniff_timeout;
    loop {
        let len = stream.peek(&mut buf).await?;
        let seen = buf.get(..len).unwrap_or_default();
        let complete = seen.contains(&b'\n');
        let undecided =
            may_become_http(seen) && len < buf.len() && tokio::time::Instant::now() < deadline;
        if complete || !undecided {
            return Ok(Some(if complete && looks_like_http(seen) {
                Dialect::Http
            } else {
                Dialect::Text
            }));
        }
        tokio::time::sleep(SNIFF_POLL).await;
    }
}

fn is_method(token: &[u8]) -> bool {
    (1..=16).contains(&token.len()) && token.iter().all(u8::is_ascii_uppercase)
}

/// `METHOD SP request-target SP HTTP/1.x`, with an optional trailing `\r`.
fn is_http_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|byte| *byte == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_method(method)
        && !target.is_empty()
        && target.iter().all(u8::is_ascii_graphic)
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// Whether an incomplete first line could still turn out to be an HTTP request line.
fn may_become_http(prefix: &[u8]) -> bool {
    let mut parts = prefix.splitn(3, |byte| *byte == b' ');
    let method = parts.next().unwrap_or_default();
    let Some(target) = parts.next() else {
        return method.len() <= 16 && method.iter().all(u8::is_ascii_uppercase);
    };
    if !is_method(method) || !target.iter().all(u8::is_ascii_graphic) {
        return false;
    }
    match parts.next() {
        None => true,
        Some(version) => {
            let version = version.strip_suffix(b"\r").unwrap_or(version);
            b"HTTP/1.1".starts_with(version) || b"HTTP/1.0".starts_with(version)
        }
    }
}

/// Whether the first bytes of a connection are (or may become) an HTTP request line.
fn looks_like_http(seen: &[u8]) -> bool {
    match seen.iter().position(|byte| *byte == b'\n') {
        Some(end) => is_http_request_line(seen.get(..end).unwrap_or_default()),
        None => may_become_http(seen),
    }
}

/// Answers an over-limit connection with Busy in its dialect, then closes it.
async fn reject_busy(mut stream: TcpStream, shared: &Shared) {
    const MESSAGE: &str = "too many connections (MAX_CONNECTIONS reached); retry later";
    let mut prefix = [0_u8; 32];
    let peeked = tokio::time::timeout(shared.config.sniff_timeout, stream.peek(&mut prefix)).await;
    let seen = match peeked {
        Ok(Ok(len)) => prefix.get(..len).unwrap_or_default(),
        _ => &[],
    };
    let reply: Vec<u8> = if seen.first().is_none_or(|byte| *byte == 0x00) {
        let mut dst = BytesMut::new();
        let frame = ResponseFrame {
            request_id: 0,
            opcode: 0,
            response: Response::error(ErrorCode::Busy, MESSAGE),
        };
        if FrameCodec::new(shared.config.limits.max_frame_bytes)
            .encode(frame, &mut dst)
            .is_err()
        {
            return;
        }
        dst.to_vec()
    } else if looks_like_http(seen) {
        let body = crate::json::failure(ErrorCode::Busy, MESSAGE).to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    } else {
        let mut line = crate::json::failure(ErrorCode::Busy, MESSAGE).to_string();
        line.push('\n');
        line.into_bytes()
    };
    let write = async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(shared.config.sniff_timeout, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_are_recognised() {
        assert!(is_http_request_line(b"GET /health HTTP/1.1\r"));
        assert!(is_http_request_line(b"POST /embed HTTP/1.0"));
        assert!(!is_http_request_line(b"GET doc-1"));
        assert!(!is_http_request_line(b"GET doc 1"));
        assert!(!is_http_request_line(b"get /health HTTP/1.1"));
        assert!(!is_http_request_line(b"GET /health HTTP/2"));
        assert!(!is_http_request_line(b"GET /a b HTTP/1.1"));
    }

    #[test]
    fn incomplete_lines_are_judged_conservatively() {
        assert!(may_become_http(b"GE"));
        assert!(may_become_http(b"GET /hea"));
        assert!(may_become_http(b"GET /health HTT"));
        assert!(!may_become_http(b"get"));
        assert!(!may_become_http(b"GET /health X"));
        assert!(!may_become_http(b"STORE d1 note"));
    }
}
