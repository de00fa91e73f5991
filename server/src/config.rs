//! Configuration: the command line (with environment fallbacks) and the plain structs the
//! rest of the server receives. Nothing outside this file reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sutra_embed::{BatcherConfig, Precision};
use sutra_engine::{
    Capacity, CheckpointConfig, EvictionPolicy, FsyncPolicy, IndexConfig, IndexKind, WalConfig,
};
use sutra_protocol::Limits;

/// The embedding model the server loads for LearnConcept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The model folder.
    pub dir: PathBuf,
    /// `MATRYOSHKA_DIM`; must equal `VECTOR_DIMENSION`.
    pub matryoshka_dim: u32,
    /// The batcher's bounds.
    pub batcher: BatcherConfig,
    /// `EMBED_THREADS`: threads for the model's CPU kernels; 0 = every physical core.
    pub threads: usize,
    /// `EMBED_PRECISION`: f32 (exact) or int8.
    pub precision: Precision,
    /// `EMBED_DOCUMENT_PREFIX`: replaces the model's document prefix for learned texts.
    pub document_prefix: Option<String>,
}

impl ModelConfig {
    /// The model in `dir` with every other setting at its default (256 dimensions).
    pub fn new(dir: PathBuf) -> ModelConfig {
        ModelConfig {
            dir,
            matryoshka_dim: Limits::DEFAULT_VECTOR_DIMENSION,
            batcher: BatcherConfig::default(),
            threads: 0,
            precision: Precision::F32,
            document_prefix: None,
        }
    }
}

/// Default port in the `normal` role.
pub const DEFAULT_PORT: u16 = 50051;
/// Default port in the `cache_shard` role.
pub const DEFAULT_CACHE_SHARD_PORT: u16 = 50052;
/// Default `DEFAULT_TTL_SECONDS` in the `cache_shard` role (one day).
pub const DEFAULT_CACHE_SHARD_TTL_SECONDS: u64 = 86_400;
/// `MAX_CONCEPTS` in the cache_shard role when none is given.
pub const DEFAULT_CACHE_SHARD_MAX_CONCEPTS: u64 = 100_000;

/// `EVICTION_POLICY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvictionArg {
    /// Evict the least recently used concept.
    Lru,
    /// Refuse writes of new ids with a Full error.
    None,
}

/// `VECTOR_INDEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IndexArg {
    /// An HNSW graph: searches compare the query with a few thousand vectors.
    Hnsw,
    /// No index: every search compares the query with every stored vector.
    Exact,
    /// No search: Search requests are refused.
    None,
}

/// `--fsync` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    /// Acknowledge after fdatasync.
    Always,
    /// Acknowledge after write; fdatasync at most one second later.
    Everysec,
    /// Acknowledge after write; the OS flushes.
    Never,
}

impl From<FsyncArg> for FsyncPolicy {
    fn from(value: FsyncArg) -> FsyncPolicy {
        match value {
            FsyncArg::Always => FsyncPolicy::Always,
            FsyncArg::Everysec => FsyncPolicy::EverySec,
            FsyncArg::Never => FsyncPolicy::Never,
        }
    }
}

/// What the server is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Keeps every concept until it is deleted or its TTL passes.
    #[value(name = "normal")]
    Normal,
    /// The embedding service's persistent L2 cache: default port 50052, a default TTL of one
    /// day, and at most 100000 concepts (MAX_CONCEPTS), the least recently used evicted first.
    #[value(name = "cache_shard")]
    CacheShard,
}

impl Role {
    /// The name used on the wire and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Normal => "normal",
            Role::CacheShard => "cache_shard",
        }
    }
}

/// sutra-storage: a storage server for embeddings.
///
/// One TCP port speaks the binary protocol (PROTOCOL.md), plain-text commands for nc/telnet,
/// and HTTP (`curl /health`, `/stats`). Every option can also be set through the environment
/// variable named in brackets; a flag wins over the variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "sutra-storage", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Address to listen on. Before listening beyond loopback, protect the port: set
    /// SUTRA_AUTH_TOKEN, or keep it behind a firewall or on a private network.
    #[arg(long, env = "STORAGE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// TCP port [default: 50051, or 50052 in the cache_shard role]. 0 picks a free port.
    #[arg(long, env = "STORAGE_PORT")]
    pub port: Option<u16>,

    /// Data directory: write-ahead log, checkpoints, manifest and lock. Created if missing;
    /// a directory in use by another server, or written with another VECTOR_DIMENSION, is
    /// refused.
    #[arg(long, env = "STORAGE_PATH", default_value = "./data")]
    pub storage_path: PathBuf,

    /// When a write is acknowledged: `always` after fdatasync (nothing acknowledged is lost,
    /// even by a power cut); `everysec` after write(2), fsync at most 1 s later (a power cut
    /// can lose the last second; a crash of the process loses nothing); `never` after
    /// write(2), the OS flushes (a power cut can lose everything since the last checkpoint).
    #[arg(long, env = "WAL_FSYNC", value_enum, default_value = "always")]
    pub fsync: FsyncArg,

    /// Keep vectors in memory-mapped, preallocated segment files under STORAGE_PATH/vectors
    /// (the page cache holds them) instead of on the heap.
    #[arg(long, env = "MMAP_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub mmap_enabled: bool,

    /// Size of each write-ahead log segment file (preallocated), in bytes.
    #[arg(long, env = "WAL_SEGMENT_BYTES", default_value_t = WalConfig::DEFAULT_SEGMENT_BYTES)]
    pub wal_segment_bytes: u64,

    /// Most writes waiting for the log; beyond it writes get Busy.
    #[arg(long, env = "WAL_QUEUE_LEN", default_value_t = WalConfig::DEFAULT_QUEUE_LEN)]
    pub wal_queue_len: usize,

    /// Seconds between checkpoints while there are writes (a checkpoint snapshots the data and
    /// deletes the log it covers). A clean shutdown always checkpoints.
    #[arg(long, env = "CHECKPOINT_INTERVAL_SECS", default_value_t = CheckpointConfig::DEFAULT_INTERVAL.as_secs())]
    pub checkpoint_interval_secs: u64,

    /// Checkpoint early once this many log bytes were written since the last checkpoint.
    #[arg(long, env = "CHECKPOINT_WAL_BYTES", default_value_t = CheckpointConfig::DEFAULT_WAL_BYTES)]
    pub checkpoint_wal_bytes: u64,

    /// Number of f32 values in every embedding; stores with another length are refused with
    /// DimensionMismatch.
    #[arg(long, env = "VECTOR_DIMENSION", default_value_t = Limits::DEFAULT_VECTOR_DIMENSION)]
    pub vector_dimension: u32,

    /// Server role.
    #[arg(long, env = "SUTRA_ROLE", value_enum, default_value = "normal")]
    pub role: Role,

    /// TTL in seconds for stores that carry none [default: none in the normal role, 86400 in
    /// the cache_shard role]. 0 means no expiry.
    #[arg(long, env = "DEFAULT_TTL_SECONDS")]
    pub default_ttl_seconds: Option<u64>,

    /// Most concepts held [default: unbounded in the normal role, 100000 in the cache_shard
    /// role]. 0 means unbounded. At the bound, a store of a new id follows EVICTION_POLICY.
    #[arg(long, env = "MAX_CONCEPTS")]
    pub max_concepts: Option<u64>,

    /// Milliseconds between cycles of the TTL reaper, which removes expired concepts in the
    /// background (each cycle spends at most a quarter of this). 0 disables it; expired
    /// concepts are still never returned.
    #[arg(long, env = "REAPER_INTERVAL_MS", default_value_t = millis(ReaperConfig::DEFAULT_INTERVAL))]
    pub reaper_interval_ms: u64,

    /// Most expired concepts the reaper removes per step; a cycle repeats full steps within
    /// its time budget.
    #[arg(long, env = "REAPER_BATCH", default_value_t = ReaperConfig::DEFAULT_BATCH)]
    pub reaper_batch: usize,

    /// Embedding model folder (config.json, tokenizer.json, model.safetensors) for
    /// LearnConcept [default: the folder of MODEL_NAME under ./models, else under
    /// $XDG_DATA_HOME/sutra/models (~/.local/share/sutra/models), where scripts/fetch-model
    /// installs; with neither, the server runs without a model]. A folder given here must
    /// load, or the server does not start.
    #[arg(long, env = "SUTRA_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// The model's name, looked up as a folder under the model roots above
    /// (`nomic-ai/nomic-embed-text-v1.5` as given, then by its last part) [default:
    /// all-MiniLM-L6-v2]. A name given here must be found, or the server does not start.
    /// Ignored when SUTRA_MODEL_DIR is set.
    #[arg(long, env = "MODEL_NAME")]
    pub model_name: Option<String>,

    /// Dimension of learned vectors: the model's output after Matryoshka truncation
    /// (layer_norm, first MATRYOSHKA_DIM values, L2). Must equal VECTOR_DIMENSION.
    #[arg(long, env = "MATRYOSHKA_DIM", default_value_t = Limits::DEFAULT_VECTOR_DIMENSION)]
    pub matryoshka_dim: u32,

    /// Most texts per model run; concurrent learn requests are merged up to this.
    #[arg(long, env = "ML_BASE_MAX_BATCH_SIZE", default_value_t = BatcherConfig::DEFAULT_MAX_BATCH)]
    pub ml_base_max_batch_size: usize,

    /// Most learn requests waiting for the model; beyond it they are answered Busy.
    #[arg(long, env = "EMBED_QUEUE_LEN", default_value_t = BatcherConfig::DEFAULT_QUEUE_LEN)]
    pub embed_queue_len: usize,

    /// Longest a learn request waits for others to share its model run, in milliseconds,
    /// when the model is busy (sooner when 2 ms pass with no new request); an idle model runs
    /// a request at once. 0 never waits.
    #[arg(long, env = "ML_BASE_BATCH_TIMEOUT_MS", default_value_t = millis(BatcherConfig::DEFAULT_BATCH_TIMEOUT))]
    pub ml_base_batch_timeout_ms: u64,

    /// Threads for the model's CPU kernels; 0 = every physical core.
    #[arg(long, env = "EMBED_THREADS", default_value_t = 0)]
    pub embed_threads: usize,

    /// Arithmetic of the model's dense layers: f32 (exact) or int8 (faster; cosine ≥ 0.99 to f32 on
    /// the golden texts).
    #[arg(long, env = "EMBED_PRECISION", default_value = "f32")]
    pub embed_precision: Precision,

    /// Text put before every learned text when it is embedded (not stored) [default: the
    /// model's document prefix: `search_document: ` for nomic_bert models, none for BERT].
    #[arg(long, env = "EMBED_DOCUMENT_PREFIX")]
    pub embed_document_prefix: Option<String>,

    /// Embed learned texts through this embedding service instead of in-process: `POST
    /// {url}/embed` of an ML-base replica, HAProxy in front of several, or the embedding
    /// service (`http://ml-base-lb:8887`, as in the seed). No local model is loaded then; the
    /// service applies its model's document prefix and must serve VECTOR_DIMENSION values.
    #[arg(long, env = "SUTRA_EMBEDDING_SERVICE_URL")]
    pub embedding_service_url: Option<String>,

    /// Deadline of one call to the embedding service, in milliseconds.
    #[arg(long, env = "SUTRA_EMBEDDING_SERVICE_TIMEOUT_MS", default_value_t = millis(RemoteConfig::DEFAULT_TIMEOUT))]
    pub embedding_service_timeout_ms: u64,

    /// Further tries of a call to the embedding service that got no answer (unreachable,
    /// timed out, or 5xx); a learn request then fails with Busy, naming the URL.
    #[arg(long, env = "SUTRA_EMBEDDING_SERVICE_RETRIES", default_value_t = RemoteConfig::DEFAULT_RETRIES)]
    pub embedding_service_retries: u32,

    /// What a store of a new id does when MAX_CONCEPTS concepts are held: `lru` evicts the
    /// least recently used concept (a use is a successful get or store); `none` refuses the
    /// write with a Full error.
    #[arg(long, env = "EVICTION_POLICY", value_enum, default_value = "lru")]
    pub eviction_policy: EvictionArg,

    /// Largest binary frame payload (and text line), in bytes; at most 16777215. Larger frames
    /// get FrameTooLarge and the connection is closed.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = Limits::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: u32,

    /// Longest concept id, in bytes.
    #[arg(long, env = "MAX_ID_BYTES", default_value_t = Limits::DEFAULT_MAX_ID_BYTES)]
    pub max_id_bytes: u32,

    /// Longest concept content, in bytes.
    #[arg(long, env = "MAX_CONTENT_BYTES", default_value_t = Limits::DEFAULT_MAX_CONTENT_BYTES)]
    pub max_content_bytes: u32,

    /// Longest concept type or model name, in bytes.
    #[arg(long, env = "MAX_NAME_BYTES", default_value_t = Limits::DEFAULT_MAX_NAME_BYTES)]
    pub max_name_bytes: u32,

    /// Most attributes on one concept.
    #[arg(long, env = "MAX_ATTRIBUTES", default_value_t = Limits::DEFAULT_MAX_ATTRIBUTES)]
    pub max_attributes: u32,

    /// Most bytes of one concept's attribute keys and values together.
    #[arg(long, env = "MAX_ATTRIBUTE_BYTES", default_value_t = Limits::DEFAULT_MAX_ATTRIBUTE_BYTES)]
    pub max_attribute_bytes: u32,

    /// Largest QueryByType page; larger requested limits are clamped.
    #[arg(long, env = "MAX_QUERY_LIMIT", default_value_t = Limits::DEFAULT_MAX_QUERY_LIMIT)]
    pub max_query_limit: u32,

    /// Most ids in one GetMany, or concepts in one StoreMany.
    #[arg(long, env = "MAX_BATCH_ITEMS", default_value_t = Limits::DEFAULT_MAX_BATCH_ITEMS)]
    pub max_batch_items: u32,

    /// Most results of one Search (k)
    #[arg(long, env = "MAX_SEARCH_K", default_value_t = Limits::DEFAULT_MAX_SEARCH_K)]
    pub max_search_k: u32,

    /// How searches run [default: hnsw in the normal role, none in the cache_shard role]:
    /// `hnsw` keeps an HNSW graph of every stored vector (built in the background, so stores
    /// never wait for it; vectors waiting for it are compared exactly); `exact` compares every
    /// stored vector; `none` refuses searches and keeps no index.
    #[arg(long, env = "VECTOR_INDEX", value_enum)]
    pub vector_index: Option<IndexArg>,

    /// HNSW links per vector and layer (2-128): more is better recall and more memory.
    #[arg(long, env = "HNSW_M", default_value_t = IndexConfig::DEFAULT_M)]
    pub hnsw_m: usize,

    /// HNSW candidate list while a vector is added (1-10000): more is a better graph, built
    /// more slowly.
    #[arg(long, env = "HNSW_EF_CONSTRUCTION", default_value_t = IndexConfig::DEFAULT_EF_CONSTRUCTION)]
    pub hnsw_ef_construction: usize,

    /// HNSW candidate list of a search that names no `ef` (1-10000; a search uses at least k):
    /// more is better recall, more slowly.
    #[arg(long, env = "HNSW_EF_SEARCH", default_value_t = IndexConfig::DEFAULT_EF_SEARCH)]
    pub hnsw_ef_search: usize,

    /// Threads adding stored vectors to the HNSW graph [default: the number of cores].
    #[arg(long, env = "HNSW_THREADS")]
    pub hnsw_threads: Option<usize>,

    /// A search over fewer vectors than this (all stored ones, or the type it filters on)
    /// compares every one instead of using the graph: faster there, and exact.
    #[arg(long, env = "SEARCH_EXACT_BELOW", default_value_t = IndexConfig::DEFAULT_EXACT_BELOW)]
    pub search_exact_below: usize,

    /// Threads that serve connections (the runtime's workers), at most 1024; 0 = one per
    /// core. More threads answer more requests at once; fewer pass less data between cores,
    /// so where the clients run on the same few cores, 1 costs less CPU per write
    /// (bench/RESULTS.md). The model and the index have threads of their own (EMBED_THREADS,
    /// HNSW_THREADS).
    #[arg(long, env = "SERVER_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub server_threads: u16,

    /// Most simultaneous connections. Further clients get a Busy error and are closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = ServerConfig::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Seconds a connection may stay silent (or leave a response unread) before it is closed.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = ServerConfig::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_secs: u64,

    /// Seconds a request may take to arrive once its first byte has: a binary frame, a text
    /// line, an HTTP request head. A client that trickles bytes (slowloris) is closed. The
    /// server notices within twice this time.
    #[arg(long, env = "READ_TIMEOUT_SECS", default_value_t = ServerConfig::DEFAULT_READ_TIMEOUT.as_secs())]
    pub read_timeout_secs: u64,

    /// Milliseconds to wait for a complete first line when telling HTTP from text clients.
    #[arg(long, env = "SNIFF_TIMEOUT_MS", default_value_t = millis(ServerConfig::DEFAULT_SNIFF_TIMEOUT))]
    pub sniff_timeout_ms: u64,

    /// Bytes of encoded responses a connection may buffer before the server waits for the
    /// client to read them (pipelined clients are answered in batches up to this size).
    #[arg(long, env = "MAX_WRITE_BACKLOG_BYTES", default_value_t = ServerConfig::DEFAULT_MAX_WRITE_BACKLOG_BYTES)]
    pub max_write_backlog_bytes: usize,

    /// Seconds to let open connections finish after SIGINT/SIGTERM before exiting anyway.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = ServerConfig::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    pub shutdown_grace_secs: u64,

    /// Shared secret every connection must present first (binary Auth, text `AUTH <token>`,
    /// HTTP `Authorization: Bearer <token>`). Unset: no authentication. No TLS: see
    /// PROTOCOL.md section 9 for the threat model.
    #[arg(long, env = "SUTRA_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// A file whose content (trimmed) is the token; instead of SUTRA_AUTH_TOKEN, so the
    /// secret is not in the environment or the process list.
    #[arg(long, env = "SUTRA_AUTH_TOKEN_FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,

    /// With a token: whether Health and `GET /health` answer without it (for load balancers).
    #[arg(long, env = "SUTRA_AUTH_OPEN_HEALTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_open_health: bool,

    /// Record operational events (start with the recovery summary, stop, checkpoints,
    /// evictions, expirations, errors, read-only) as concepts of type sutra_event in this
    /// store, listed in time order by `TYPE sutra_event`: on or off (true/false, yes/no and 1/0
    /// too).
    #[arg(long, env = "SUTRA_EVENTS", default_value = "off", value_parser = clap::builder::BoolishValueParser::new(), hide_possible_values = true, action = clap::ArgAction::Set)]
    pub events: bool,

    /// Lifetime of each sutra_event, in seconds.
    #[arg(long, env = "SUTRA_EVENTS_TTL_SECS", default_value_t = EventsConfig::DEFAULT_TTL.as_secs())]
    pub events_ttl_secs: u64,

    /// Seconds between sutra_event summaries (written only when something happened).
    #[arg(long, env = "SUTRA_EVENTS_INTERVAL_SECS", default_value_t = EventsConfig::DEFAULT_INTERVAL.as_secs())]
    pub events_interval_secs: u64,
}

const AFTER_HELP: &str = "\
Logging: set RUST_LOG (default \"info\"), e.g. RUST_LOG=sutra_server=debug.

Examples:
  sutra-storage                                 # 127.0.0.1:50051, 256-dim vectors
  SUTRA_ROLE=cache_shard sutra-storage          # cache shard on 127.0.0.1:50052
  curl -s http://127.0.0.1:50051/health
  printf 'STORE d1 note hello\\nGET d1\\n' | nc -q1 127.0.0.1 50051";

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The server's settings, fixed at start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// Data directory.
    pub storage_path: PathBuf,
    /// Write-ahead log settings (its `max_record_bytes` follows `limits.max_frame_bytes`).
    pub wal: WalConfig,
    /// When to checkpoint.
    pub checkpoint: CheckpointConfig,
    /// Vectors in mapped segment files (`MMAP_ENABLED`).
    pub mmap_enabled: bool,
    /// The role.
    pub role: Role,
    /// TTL for stores without one; `None` keeps them forever.
    pub default_ttl: Option<Duration>,
    /// `MAX_CONCEPTS` and `EVICTION_POLICY`; `None` keeps everything.
    pub capacity: Option<Capacity>,
    /// `VECTOR_INDEX` and the HNSW settings.
    pub index: IndexConfig,
    /// The TTL reaper.
    pub reaper: ReaperConfig,
    /// The embedding model for LearnConcept, if any.
    pub model: Option<ModelConfig>,
    /// Learning through an embedding service instead (`SUTRA_EMBEDDING_SERVICE_URL`).
    pub embedding_service: Option<RemoteConfig>,
    /// Decoding limits, including `VECTOR_DIMENSION`.
    pub limits: Limits,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Silence allowed on a connection.
    pub idle_timeout: Duration,
    /// Time a started request has to arrive completely.
    pub read_timeout: Duration,
    /// Time allowed to tell HTTP from text.
    pub sniff_timeout: Duration,
    /// Response bytes buffered per connection before waiting for the client.
    pub max_write_backlog_bytes: usize,
    /// Time granted to open connections at shutdown.
    pub shutdown_grace: Duration,
    /// Shared-secret authentication, if required.
    pub auth: Option<AuthConfig>,
    /// Self-monitoring events (`SUTRA_EVENTS`), if on.
    pub events: Option<EventsConfig>,
}

impl ServerConfig {
    /// Default `MAX_CONNECTIONS`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    /// Default `IDLE_TIMEOUT_SECS`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    /// Default `READ_TIMEOUT_SECS`.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `SNIFF_TIMEOUT_MS`.
    pub const DEFAULT_SNIFF_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default `MAX_WRITE_BACKLOG_BYTES`.
    pub const DEFAULT_MAX_WRITE_BACKLOG_BYTES: usize = 1024 * 1024;
    /// Default `SHUTDOWN_GRACE_SECS`.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

    /// A configuration for tests: 127.0.0.1 with an OS-chosen port.
    pub fn for_tests(storage_path: PathBuf) -> ServerConfig {
        ServerConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            wal: WalConfig {
                max_record_bytes: Limits::DEFAULT_MAX_FRAME_BYTES,
                ..WalConfig::default()
            },
            checkpoint: CheckpointConfig::default(),
            mmap_enabled: true,
            storage_path,
            role: Role::Normal,
            default_ttl: None,
            capacity: None,
            index: IndexConfig::default(),
            reaper: ReaperConfig::default(),
            model: None,
            embedding_service: None,
            limits: Limits::default(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            sniff_timeout: Self::DEFAULT_SNIFF_TIMEOUT,
            max_write_backlog_bytes: Self::DEFAULT_MAX_WRITE_BACKLOG_BYTES,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            auth: None,
            events: None,
        }
    }

    /// Checks the settings that the types do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.index.validate().map_err(ConfigError::Index)?;
        if self.max_connections == 0 {
            return Err(ConfigError::Zero {
                name: "MAX_CONNECTIONS",
            });
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::Zero {
                name: "IDLE_TIMEOUT_SECS",
            });
        }
        if let Some(events) = &self.events {
            if events.ttl.is_zero() {
                return Err(ConfigError::Zero {
                    name: "SUTRA_EVENTS_TTL_SECS",
                });
            }
            if events.interval.is_zero() {
                return Err(ConfigError::Zero {
                    name: "SUTRA_EVENTS_INTERVAL_SECS",
                });
            }
        }
        if self.read_timeout.is_zero() {
            return Err(ConfigError::Zero {
                name: "READ_TIMEOUT_SECS",
            });
        }
        if self.max_write_backlog_bytes == 0 {
            return Err(ConfigError::Zero {
                name: "MAX_WRITE_BACKLOG_BYTES",
            });
        }
        Ok(())
    }
}

impl TryFrom<Cli> for ServerConfig {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<ServerConfig, ConfigError> {
        let auth = auth_config(&cli)?;
        // A folder or a name the user gave must be there; the default model is optional (the
        // server then runs without LearnConcept).
        let embedding_service = cli.embedding_service_url.as_ref().map(|url| RemoteConfig {
            url: url.clone(),
            timeout: Duration::from_millis(cli.embedding_service_timeout_ms.max(1)),
            retries: cli.embedding_service_retries,
            max_batch: cli.ml_base_max_batch_size.max(1),
        });
        let model_dir = match (&cli.model_dir, &cli.model_name) {
            // Learning goes through the service: no local model.
            _ if embedding_service.is_some() => None,
            (Some(dir), _) => Some(dir.clone()),
            (None, Some(name)) => Some(
                sutra_embed::resolve_model_dir(None, Some(name))
                    .map_err(ConfigError::ModelNotFound)?,
            ),
            (None, None) => sutra_embed::resolve_model_dir(None, None).ok(),
        };
        let port = cli.port.unwrap_or(match cli.role {
            Role::Normal => DEFAULT_PORT,
            Role::CacheShard => DEFAULT_CACHE_SHARD_PORT,
        });
        let default_ttl_seconds = cli.default_ttl_seconds.or(match cli.role {
            Role::Normal => None,
            Role::CacheShard => Some(DEFAULT_CACHE_SHARD_TTL_SECONDS),
        });
        let max_concepts = cli.max_concepts.or(match cli.role {
            Role::Normal => None,
            Role::CacheShard => Some(DEFAULT_CACHE_SHARD_MAX_CONCEPTS),
        });
        let capacity = max_concepts
            .filter(|max| *max > 0)
            .map(|max_concepts| Capacity {
                max_concepts,
                policy: match cli.eviction_policy {
                    EvictionArg::Lru => EvictionPolicy::Lru,
                    EvictionArg::None => EvictionPolicy::None,
                },
            });
        let index = index_config(&cli);
        let limits = limits(&cli);
        let config = ServerConfig {
            listen_addr: SocketAddr::new(cli.host, port),
            storage_path: cli.storage_path,
            wal: WalConfig {
                segment_bytes: cli.wal_segment_bytes,
                max_record_bytes: cli.max_frame_bytes,
                fsync: cli.fsync.into(),
                queue_len: cli.wal_queue_len,
                ..WalConfig::default()
            },
            checkpoint: CheckpointConfig {
                interval: Duration::from_secs(cli.checkpoint_interval_secs),
                wal_bytes: cli.checkpoint_wal_bytes,
            },
            mmap_enabled: cli.mmap_enabled,
            role: cli.role,
            default_ttl: default_ttl_seconds
                .filter(|seconds| *seconds > 0)
                .map(Duration::from_secs),
            capacity,
            index,
            reaper: ReaperConfig {
                interval: Duration::from_millis(cli.reaper_interval_ms),
                batch: cli.reaper_batch,
            },
            embedding_service,
            model: model_dir.map(|dir| ModelConfig {
                dir,
                matryoshka_dim: cli.matryoshka_dim,
                batcher: BatcherConfig {
                    max_batch: cli.ml_base_max_batch_size,
                    queue_len: cli.embed_queue_len,
                    batch_timeout: Duration::from_millis(cli.ml_base_batch_timeout_ms),
                },
                threads: cli.embed_threads,
                precision: cli.embed_precision,
                document_prefix: cli.embed_document_prefix.clone(),
            }),
            limits,
            max_connections: cli.max_connections,
            idle_timeout: Duration::from_secs(cli.idle_timeout_secs),
            read_timeout: Duration::from_secs(cli.read_timeout_secs),
            sniff_timeout: Duration::from_millis(cli.sniff_timeout_ms),
            max_write_backlog_bytes: cli.max_write_backlog_bytes,
            shutdown_grace: Duration::from_secs(cli.shutdown_grace_secs),
            auth,
            events: cli.events.then(|| EventsConfig {
                ttl: Duration::from_secs(cli.events_ttl_secs),
                interval: Duration::from_secs(cli.events_interval_secs),
            }),
        };
        config.validate()?;
        Ok(config)
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A protocol limit is out of range.
    #[error(transparent)]
    Limits(#[from] sutra_protocol::LimitsError),
    /// A log segment cannot hold the largest record.
    #[error("WAL_SEGMENT_BYTES ({segment_bytes}) must exceed MAX_FRAME_BYTES ({max_frame_bytes}) plus 64 bytes")]
    WalSegmentTooSmall {
        /// The configured segment size.
        segment_bytes: u64,
        /// The configured frame limit.
        max_frame_bytes: u32,
    },
    /// A setting that must be positive is zero.
    #[error("{name} must be at least 1")]
    Zero {
        /// The setting's name.
        name: &'static str,
    },
    /// The token is empty or its file unreadable.
    #[error("authentication token: {0}")]
    AuthToken(String),
    /// `MODEL_NAME` names a model that is in none of the model roots.
    #[error("MODEL_NAME: {0}")]
    ModelNotFound(String),
    /// An HNSW setting is out of range.
    #[error("{0}")]
    Index(String),
}

/// The decoding limits.
fn limits(cli: &Cli) -> Limits {
    Limits {
        max_frame_bytes: cli.max_frame_bytes,
        max_id_bytes: cli.max_id_bytes,
        max_content_bytes: cli.max_content_bytes,
        max_name_bytes: cli.max_name_bytes,
        max_attributes: cli.max_attributes,
        max_attribute_bytes: cli.max_attribute_bytes,
        max_query_limit: cli.max_query_limit,
        max_batch_items: cli.max_batch_items,
        vector_dimension: cli.vector_dimension,
        max_search_k: cli.max_search_k,
    }
}

/// `VECTOR_INDEX` (by role when unset) and the HNSW settings.
fn index_config(cli: &Cli) -> IndexConfig {
    let kind = match cli.vector_index {
        Some(IndexArg::Hnsw) => IndexKind::Hnsw,
        Some(IndexArg::Exact) => IndexKind::Exact,
        Some(IndexArg::None) => IndexKind::None,
        None => match cli.role {
            Role::Normal => IndexKind::Hnsw,
            Role::CacheShard => IndexKind::None,
        },
    };
    IndexConfig {
        kind,
        m: cli.hnsw_m,
        ef_construction: cli.hnsw_ef_construction,
        ef_search: cli.hnsw_ef_search,
        exact_below: cli.search_exact_below,
        threads: cli
            .hnsw_threads
            .unwrap_or_else(|| IndexConfig::new(kind).threads),
    }
}

fn auth_config(cli: &Cli) -> Result<Option<AuthConfig>, ConfigError> {
    let token = match (&cli.auth_token, &cli.auth_token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|error| ConfigError::AuthToken(format!("{}: {error}", path.display())))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(ConfigError::AuthToken(
            "empty (unset SUTRA_AUTH_TOKEN to run without authentication)".to_owned(),
        ));
    }
    if token.chars().any(char::is_whitespace) {
        return Err(ConfigError::AuthToken(
            "contains whitespace (text mode sends it as one word: AUTH <token>)".to_owned(),
        ));
    }
    if token.len() > sutra_protocol::MAX_TOKEN_BYTES as usize {
        return Err(ConfigError::AuthToken(format!(
            "longer than {} bytes",
            sutra_protocol::MAX_TOKEN_BYTES
        )));
    }
    Ok(Some(AuthConfig::new(&token, cli.auth_open_health)))
}

/// Variables the seed sets for a storage server that change nothing here, with what to do
/// instead; README.md has the table of every seed variable.
pub const SEED_VARIABLES_WITHOUT_EFFECT: &[(&str, &str)] = &[
    (
        "CACHE_MODE",
        "the cache role is SUTRA_ROLE=cache_shard (port 50052, a one-day TTL, LRU at MAX_CONCEPTS)",
    ),
    ("SUTRA_EDITION", "there is one edition; nothing to select"),
    ("PYTHONUNBUFFERED", "the log goes to stderr unbuffered"),
];

/// The reaper's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaperConfig {
    /// Time between cycles; zero disables the reaper.
    pub interval: Duration,
    /// Most removals per step.
    pub batch: usize,
}

impl ReaperConfig {
    /// Default `REAPER_INTERVAL_MS`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
    /// Default `REAPER_BATCH`.
    pub const DEFAULT_BATCH: usize = 1_000;
}

impl Default for ReaperConfig {
    fn default() -> ReaperConfig {
        ReaperConfig {
            interval: Self::DEFAULT_INTERVAL,
            batch: Self::DEFAULT_BATCH,
        }
    }
}

/// `SUTRA_EVENTS_*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// Lifetime of each event.
    pub ttl: Duration,
    /// Time between summaries.
    pub interval: Duration,
}

impl EventsConfig {
    /// Default `SUTRA_EVENTS_TTL_SECS`: seven days.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Default `SUTRA_EVENTS_INTERVAL_SECS`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            ttl: Self::DEFAULT_TTL,
            interval: Self::DEFAULT_INTERVAL,
        }
    }
}

/// `SUTRA_AUTH_TOKEN`: the token's SHA-256 (the token itself is not kept) and whether health
/// checks stay open.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
    /// `SUTRA_AUTH_OPEN_HEALTH`.
    pub open_health: bool,
}

impl AuthConfig {
    /// Requires `token`.
    pub fn new(token: &str, open_health: bool) -> AuthConfig {
        use sha2::Digest;
        AuthConfig {
            token_sha256: sha2::Sha256::digest(token.as_bytes()).into(),
            open_health,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("open_health", &self.open_health)
            .finish_non_exhaustive()
    }
}

/// `SUTRA_EMBEDDING_SERVICE_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Base URL (`http://ml-base-lb:8887`); `/embed` is appended.
    pub url: String,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Further tries of a call that failed for want of an answer.
    pub retries: u32,
    /// Most texts in one call.
    pub max_batch: usize,
}

impl RemoteConfig {
    /// Default `SUTRA_EMBEDDING_SERVICE_TIMEOUT_MS`: a batch of long texts on a loaded
    /// replica can take seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `SUTRA_EMBEDDING_SERVICE_RETRIES`.
    pub const DEFAULT_RETRIES: u32 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("sutra-storage").chain(args.iter().copied()))
            .map_err(|error| error.to_string())?;
        ServerConfig::try_from(cli).map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_follow_the_role() {
        let normal = parse(&[]).unwrap();
        assert_eq!(normal.listen_addr, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(normal.default_ttl, None);
        let shard = parse(&["--role", "cache_shard"]).unwrap();
        assert_eq!(shard.listen_addr.port(), DEFAULT_CACHE_SHARD_PORT);
        assert_eq!(shard.default_ttl, Some(Duration::from_secs(86_400)));
        let explicit = parse(&[
            "--role",
            "cache_shard",
            "--port",
            "6000",
            "--default-ttl-seconds",
            "0",
        ])
        .unwrap();
        assert_eq!(explicit.listen_addr.port(), 6000);
        assert_eq!(explicit.default_ttl, None);
        // The cache shard keeps no vector index unless asked.
        assert_eq!(normal.index.kind, IndexKind::Hnsw);
        assert_eq!(shard.index.kind, IndexKind::None);
        let searchable = parse(&["--role", "cache_shard", "--vector-index", "exact"]).unwrap();
        assert_eq!(searchable.index.kind, IndexKind::Exact);
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_name() {
        assert!(parse(&["--max-frame-bytes", "16777216"])
            .unwrap_err()
            .contains("MAX_FRAME_BYTES"));
        assert!(parse(&["--vector-dimension", "0"])
            .unwrap_err()
            .contains("VECTOR_DIMENSION"));
        assert!(parse(&["--max-connections", "0"])
            .unwrap_err()
            .contains("MAX_CONNECTIONS"));
        assert!(parse(&["--role", "primary"]).is_err());
        assert!(parse(&["--hnsw-m", "1"]).unwrap_err().contains("HNSW_M"));
        assert!(parse(&["--hnsw-ef-search", "0"])
            .unwrap_err()
            .contains("HNSW_EF_SEARCH"));
        assert!(parse(&["--vector-index", "flat"]).is_err());
    }

    #[test]
    fn server_threads_are_bounded() {
        let threads = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("sutra-storage").chain(args.iter().copied()))
                .map(|cli| cli.server_threads)
                .map_err(|error| error.to_string())
        };
        assert_eq!(threads(&[]), Ok(0));
        assert_eq!(threads(&["--server-threads", "1"]), Ok(1));
        assert_eq!(threads(&["--server-threads", "1024"]), Ok(1024));
        assert!(threads(&["--server-threads", "1025"]).is_err());
        assert!(threads(&["--server-threads", "-1"]).is_err());
    }

    #[test]
    fn every_option_is_documented_in_help() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for env in [
            "STORAGE_HOST",
            "STORAGE_PORT",
            "STORAGE_PATH",
            "VECTOR_DIMENSION",
            "SUTRA_ROLE",
            "DEFAULT_TTL_SECONDS",
            "MAX_CONCEPTS",
            "EVICTION_POLICY",
            "VECTOR_INDEX",
            "HNSW_M",
            "HNSW_EF_CONSTRUCTION",
            "HNSW_EF_SEARCH",
            "HNSW_THREADS",
            "SEARCH_EXACT_BELOW",
            "REAPER_INTERVAL_MS",
            "REAPER_BATCH",
            "SUTRA_MODEL_DIR",
            "MATRYOSHKA_DIM",
            "ML_BASE_MAX_BATCH_SIZE",
            "EMBED_QUEUE_LEN",
            "ML_BASE_BATCH_TIMEOUT_MS",
            "EMBED_THREADS",
            "EMBED_PRECISION",
            "EMBED_DOCUMENT_PREFIX",
            "SUTRA_AUTH_TOKEN",
            "SUTRA_AUTH_TOKEN_FILE",
            "SUTRA_AUTH_OPEN_HEALTH",
            "MAX_FRAME_BYTES",
            "MAX_ID_BYTES",
            "MAX_CONTENT_BYTES",
            "MAX_NAME_BYTES",
            "MAX_ATTRIBUTES",
            "MAX_ATTRIBUTE_BYTES",
            "MAX_QUERY_LIMIT",
            "MAX_BATCH_ITEMS",
            "SERVER_THREADS",
            "MAX_CONNECTIONS",
            "IDLE_TIMEOUT_SECS",
            "SNIFF_TIMEOUT_MS",
            "MAX_WRITE_BACKLOG_BYTES",
            "SHUTDOWN_GRACE_SECS",
            "WAL_FSYNC",
            "MMAP_ENABLED",
            "WAL_SEGMENT_BYTES",
            "WAL_QUEUE_LEN",
            "CHECKPOINT_INTERVAL_SECS",
            "CHECKPOINT_WAL_BYTES",
            "RUST_LOG",
        ] {
            assert!(help.contains(env), "--help does not mention {env}");
        }
    }

    #[test]
    fn auth_tokens_come_from_the_environment_or_a_file_and_must_be_one_word() {
        let config = parse(&["--auth-token", "s3cret"]).unwrap();
        let auth = config.auth.unwrap();
        assert_eq!(
            auth.token_sha256,
            AuthConfig::new("s3cret", true).token_sha256
        );
        assert!(auth.open_health);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "from-file\n").unwrap();
        let path = file.path().to_str().unwrap();
        let config = parse(&["--auth-token-file", path, "--auth-open-health", "false"]).unwrap();
        let auth = config.auth.unwrap();
        assert_eq!(auth, AuthConfig::new("from-file", false));
        assert!(parse(&["--auth-token", "two words"]).is_err());
        assert!(parse(&["--auth-token", ""]).is_err());
        assert!(parse(&["--auth-token-file", "/nonexistent/token"]).is_err());
        assert!(parse(&[]).unwrap().auth.is_none());
    }
}
