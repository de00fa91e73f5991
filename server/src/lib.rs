//! sutra-storage: the concept store and its TCP server.
//!
//! - [`config`]: the command line with environment fallbacks, turned into [`ServerConfig`]
//!   and the settings of every other room; the ground floor: it imports no other module.
//!   Nothing else reads the environment.
//! - [`engine`] (the `sutra-engine` crate): the concept store (sharded map + type index, TTL
//!   via an injected clock), made durable by the write-ahead log (`sutra-wal`) and
//!   checkpoints in `STORAGE_PATH`.
//!   Only the engine changes stored state.
//! - [`executor`]: executes a [`sutra_protocol::Request`] against the engine and keeps
//!   counters; the binary, text and HTTP sessions all go through it. [`learn`] embeds the
//!   texts of LearnConcept/LearnBatch (in process, or through [`remote`]); `reply` maps engine
//!   failures to protocol errors.
//! - [`auth`]: `SUTRA_AUTH_TOKEN`, its check and each connection's gate.
//! - `net`: the accept loop and the connection limit (`net/mod.rs`), first-byte sniffing
//!   (`sniff`), the Busy answer (`busy`), what sessions share (`session`), and the three
//!   dialects: `binary`, `text` and `http` (`GET /health`, `/stats`, `/metrics`,
//!   `POST /api/learn`, axum over hyper).
//! - [`reaper`]: removes expired concepts in the background.
//! - [`events`]: self-monitoring events (`SUTRA_EVENTS=on`) stored as `sutra_event` concepts.
//! - [`metrics`]: `GET /metrics` in Prometheus' text format.
//!
//! [`Server::bind`] then [`Server::run`] with a cancellation token: cancelling stops the
//! accept loop, lets every connection finish the request it is executing, waits up to the
//! shutdown grace period, then shuts the engine down.

pub mod auth;
pub mod config;
pub mod events;
pub use sutra_engine as engine;
pub mod executor;
mod json;
pub mod learn;
pub mod metrics;
mod net;
pub mod reaper;
pub mod remote;
mod reply;
mod search;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{AuthConfig, Cli, ModelConfig, Role, ServerConfig};
pub use engine::{Capacity, EvictionPolicy, IndexConfig, IndexKind};
use engine::{Clock, Durability, Engine, EngineConfig, EngineError, PersistConfig, SystemClock};
use executor::Executor;

/// Connections the kernel holds for the accept loop (what `TcpListener::bind` uses); the
/// server's own bound is `MAX_CONNECTIONS`.
const LISTEN_BACKLOG: u32 = 1024;

/// Bytes reserved in a frame for everything in a `QueryByType` response but its concepts:
/// the header, status, count and the next cursor (itself bounded by `max_id_bytes`).
const PAGE_OVERHEAD_BYTES: usize = 64;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine failed to open or to shut down cleanly.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The embedding model could not be loaded or does not fit the store.
    #[error("embedding model: {0}")]
    Model(String),
}

/// Loads the model off the async workers and checks it against the store's dimension.
async fn load_model(
    model: &ModelConfig,
    vector_dimension: u32,
) -> Result<learn::Embedder, ServerError> {
    if model.matryoshka_dim != vector_dimension {
        return Err(ServerError::Model(format!(
            "MATRYOSHKA_DIM ({}) must equal VECTOR_DIMENSION ({vector_dimension}): learned vectors are stored as they are",
            model.matryoshka_dim
        )));
    }
    let (dir, precision) = (model.dir.clone(), model.precision);
    let mut pipeline =
        tokio::task::spawn_blocking(move || sutra_embed::Pipeline::load_with(&dir, precision))
            .await
            .map_err(|error| ServerError::Model(error.to_string()))?
            .map_err(|error| ServerError::Model(error.to_string()))?;
    if let Some(document) = &model.document_prefix {
        let mut prefixes = pipeline.info().prefixes.clone();
        prefixes.document.clone_from(document);
        pipeline.set_prefixes(prefixes);
    }
    let hidden = pipeline.info().hidden_size;
    if model.matryoshka_dim as usize > hidden {
        return Err(ServerError::Model(format!(
            "MATRYOSHKA_DIM ({}) is larger than the model's hidden size ({hidden})",
            model.matryoshka_dim
        )));
    }
    info!(
        model = %pipeline.info().name,
        dir = %model.dir.display(),
        hidden,
        dimension = model.matryoshka_dim,
        threads = sutra_embed::threads(),
        precision = %pipeline.precision(),
        document_prefix = %pipeline.info().prefixes.document,
        "embedding model loaded"
    );
    let batcher = sutra_embed::Batcher::spawn(pipeline, model.batcher)
        .map_err(|error| ServerError::Model(format!("starting the embedding worker: {error}")))?;
    Ok(learn::Embedder::new(batcher, model.matryoshka_dim))
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<net::Shared>,
}

impl Server {
    /// Validates `config`, builds the engine and binds the listener (port 0 picks a free one).
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        Self::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Server::bind`] with a chosen clock, for tests of time-dependent behaviour.
    pub async fn bind_with_clock(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        let max_page_bytes = (config.limits.max_frame_bytes as usize)
            .saturating_sub(PAGE_OVERHEAD_BYTES + config.limits.max_id_bytes as usize);
        let engine_config = EngineConfig {
            default_ttl: config.default_ttl,
            capacity: config.capacity,
            index: config.index.clone(),
            max_page_bytes,
            vector_dimension: config.limits.vector_dimension,
            durability: Durability::Persistent(PersistConfig {
                data_dir: config.storage_path.clone(),
                wal: config.wal.clone(),
                checkpoint: config.checkpoint.clone(),
                mmap_vectors: config.mmap_enabled,
            }),
        };
        // Recovery reads files and may take a while: keep it off the async workers.
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config, clock))
            .await
            .map_err(|error| {
                ServerError::Engine(EngineError::Internal {
                    message: error.to_string(),
                })
            })??;
        // The port is taken now (a second server fails here, before loading a model) but
        // connections are accepted only once the server can answer them: a client or a
        // health check that connects while the model loads is refused, not left waiting.
        let bind_error = |source| ServerError::Bind {
            addr: config.listen_addr,
            source,
        };
        let socket = if config.listen_addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(config.listen_addr)?;
            Ok(socket)
        })
        .map_err(bind_error)?;
        let embedder = match (&config.embedding_service, &config.model) {
            (Some(remote), _) => {
                info!(url = %remote.url, timeout_ms = remote.timeout.as_millis(), retries = remote.retries, "learning through the embedding service (SUTRA_EMBEDDING_SERVICE_URL)");
                let remote = remote::Remote::new(remote.clone()).map_err(ServerError::Model)?;
                Some(learn::Embedder::remote(
                    remote,
                    config.limits.vector_dimension,
                ))
            }
            (None, Some(model)) => Some(load_model(model, config.limits.vector_dimension).await?),
            (None, None) => {
                info!("no embedding model: LearnConcept answers NoModel (run ./scripts/fetch-model or set SUTRA_MODEL_DIR)");
                None
            }
        };
        let executor = Arc::new(
            Executor::new(engine, config.role, config.limits.clone())
                .with_embedder(embedder)
                .with_auth(config.auth.clone()),
        );
        let listener = socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
        Ok(Server {
            listener,
            shared: Arc::new(net::Shared { executor, config }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TCP listener always has a local address; fall back to the configured one.
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.listen_addr)
    }

    /// Serves until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Server { listener, shared } = self;
        let tracker = TaskTracker::new();
        let reaper = tokio::spawn(reaper::run(
            Arc::clone(&shared.executor),
            shared.config.reaper,
            shutdown.clone(),
        ));
        let events = shared.config.events.map(|config| {
            let events = Arc::new(events::Events::new(Arc::clone(&shared.executor), config));
            let addr = listener.local_addr().ok();
            let summaries = {
                let events = Arc::clone(&events);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Some(addr) = addr {
                        events.started(addr).await;
                    }
                    events.run(shutdown).await;
                })
            };
            (events, summaries)
        });
        net::accept_loop(listener, Arc::clone(&shared), shutdown, &tracker).await;
        let _ = reaper.await;
        if let Some((events, summaries)) = events {
            let _ = summaries.await;
            events.stopping().await;
        }
        // The listener is dropped: new connections are refused from here on.
        tracker.close();
        let grace = shared.config.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                open = tracker.len(),
                ?grace,
                "connections still open after the shutdown grace period"
            );
        }
        shared.executor.engine().shutdown()?;
        info!("shutdown complete");
        Ok(())
    }
}
