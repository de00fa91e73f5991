//! Authentication (`SUTRA_AUTH_TOKEN`), for every dialect: the token's digest, the check in
//! constant time, the rate-limited log of failures, and the per-connection [`Gate`] of the
//! binary and text sessions (HTTP checks each request's header with the same [`Auth`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest;
use subtle::ConstantTimeEq;
use sutra_protocol::{ErrorCode, Request, Response};

use crate::config::AuthConfig;

/// The server's authentication: `None` config means none is required.
#[derive(Debug)]
pub struct Auth {
    config: Option<AuthConfig>,
    last_logged: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Auth {
    pub(crate) fn new(config: Option<AuthConfig>) -> Auth {
        Auth {
            config,
            last_logged: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Whether connections must authenticate.
    pub fn requires(&self) -> bool {
        self.config.is_some()
    }

    /// Whether Health and `GET /health` answer unauthenticated connections.
    pub fn health_is_open(&self) -> bool {
        self.config.as_ref().is_none_or(|auth| auth.open_health)
    }

    /// Whether `token` is the server's (constant time over SHA-256 digests).
    pub fn check_token(&self, token: &str) -> bool {
        self.config.as_ref().is_none_or(|auth| {
            let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            digest.ct_eq(&auth.token_sha256).into()
        })
    }

    /// Logs a failed authentication from `peer`, at most one line a second (the lines in
    /// between are counted in the next one).
    pub fn failed(&self, peer: SocketAddr, via: &'static str) {
        let Ok(mut last) = self.last_logged.lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(%peer, via, unlogged, "authentication failed");
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
    pub(crate) fn new(auth: &Auth) -> Gate {
        Gate {
            authenticated: !auth.requires(),
            failures: 0,
        }
    }

    /// The answer when the gate answers `request` itself (Auth, or a refusal); `None` when
    /// the request may run.
    pub(crate) async fn check(
        &mut self,
        auth: &Auth,
        request: &Request,
        peer: SocketAddr,
        via: &'static str,
    ) -> Option<Response> {
        match request {
            Request::Auth { token } => {
                if auth.check_token(token) {
                    self.authenticated = true;
                    Some(Response::Authenticated)
                } else {
                    self.failures += 1;
                    auth.failed(peer, via);
                    tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                    Some(Response::error(ErrorCode::Unauthenticated, "wrong token"))
                }
            }
            _ if self.authenticated => None,
            Request::Health if auth.health_is_open() => None,
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
