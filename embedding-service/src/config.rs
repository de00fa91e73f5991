//! Command line and environment of both roles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sutra_embed::BatcherConfig;
pub use sutra_protocol::embed_json::TextLimits;

/// sutra's embedding service: `serve` answers `/embed` from an L1 cache, a sutra-storage
/// cache shard (L2) and the model; `ml-base` serves the model alone, as a replica behind a
/// `serve` (ML_BASE_URL) or HAProxy.
#[derive(Debug, Parser)]
#[command(name = "sutra-embedding-service", version, max_term_width = 100)]
pub struct ServiceCli {
    /// The role.
    #[command(subcommand)]
    pub role: ServiceRole,
}

/// The two roles.
#[derive(Debug, Subcommand)]
pub enum ServiceRole {
    /// The embedding service (port 8888): HTTP /embed, /v1/embeddings, /cache/stats,
    /// /cache/clear, /health.
    Serve(ServeArgs),
    /// An ML-base replica (port 8887): HTTP /embed and /health for the model alone.
    MlBase(MlBaseArgs),
}

/// The model run in-process (by `ml-base`, and by `serve` without ML_BASE_URL).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model folder (config.json, tokenizer.json, model.safetensors) [default: the
    /// folder of MODEL_NAME under ./models, else under $XDG_DATA_HOME/sutra/models
    /// (~/.local/share/sutra/models), where scripts/fetch-model installs].
    #[arg(long, env = "SUTRA_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// The model's name, looked up as a folder under the model roots above
    /// (`nomic-ai/nomic-embed-text-v1.5` as given, then by its last part) [default:
    /// all-MiniLM-L6-v2]. Ignored when SUTRA_MODEL_DIR is set.
    #[arg(long, env = "MODEL_NAME")]
    pub model_name: Option<String>,
    /// Dimension of the vectors served: Matryoshka truncation (layer_norm, first
    /// MATRYOSHKA_DIM values, L2).
    #[arg(long, env = "MATRYOSHKA_DIM", default_value_t = 256)]
    pub matryoshka_dim: usize,
    /// Most texts per model run; concurrent requests are merged up to it.
    #[arg(long, env = "ML_BASE_MAX_BATCH_SIZE", default_value_t = BatcherConfig::DEFAULT_MAX_BATCH)]
    pub ml_base_max_batch_size: usize,
    /// Longest a request waits for others to share a model run when the model is busy, in
    /// milliseconds (sooner when 2 ms pass with no new request); an idle model runs a request
    /// at once.
    #[arg(long, env = "ML_BASE_BATCH_TIMEOUT_MS", default_value_t = 50)]
    pub ml_base_batch_timeout_ms: u64,
    /// Most requests waiting for the model; beyond it they get 503.
    #[arg(long, env = "EMBED_QUEUE_LEN", default_value_t = BatcherConfig::DEFAULT_QUEUE_LEN)]
    pub embed_queue_len: usize,
    /// Threads for the model's CPU kernels; 0 = every physical core.
    #[arg(long, env = "EMBED_THREADS", default_value_t = 0)]
    pub embed_threads: usize,
    /// Arithmetic of the model's dense layers: f32 (exact) or int8 (faster; cosine ≥ 0.99 to f32 on
    /// the golden texts).
    #[arg(long, env = "EMBED_PRECISION", default_value = "f32")]
    pub embed_precision: sutra_embed::Precision,
    /// Most texts in one request.
    #[arg(long, env = "EMBED_MAX_TEXTS", default_value_t = TextLimits::DEFAULT_MAX_TEXTS)]
    pub embed_max_texts: usize,
    /// Longest text, in bytes (longer texts are refused; texts over the model's token limit
    /// are truncated and flagged in the answer).
    #[arg(long, env = "EMBED_MAX_TEXT_BYTES", default_value_t = TextLimits::DEFAULT_MAX_TEXT_BYTES)]
    pub embed_max_text_bytes: usize,
}

/// `ml-base` flags.
#[derive(Debug, Clone, Args)]
pub struct MlBaseArgs {
    /// Address to listen on.
    #[arg(long, env = "ML_BASE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "ML_BASE_PORT", default_value_t = 8887)]
    pub port: u16,
    /// This replica's name in answers and logs [default: ml-base-<pid>].
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `serve` flags.
#[derive(Debug, Clone, Args)]
#[allow(clippy::struct_excessive_bools, reason = "flags")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "EMBEDDING_SERVICE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "EMBEDDING_SERVICE_PORT", default_value_t = 8888)]
    pub port: u16,
    /// ML-base replicas, comma-separated base URLs (`http://10.0.0.5:8887,...`); without
    /// it the model runs in-process.
    #[arg(long, env = "ML_BASE_URL", value_delimiter = ',')]
    pub ml_base_url: Vec<String>,
    /// Milliseconds between health checks of each replica.
    #[arg(long, env = "ML_BASE_HEALTH_INTERVAL_MS", default_value_t = 2000)]
    pub ml_base_health_interval_ms: u64,
    /// Failed health checks in a row that take a replica out (HAProxy's `fall`).
    #[arg(long, env = "ML_BASE_FALL", default_value_t = 2)]
    pub ml_base_fall: u32,
    /// Passed health checks in a row that put a replica back (HAProxy's `rise`).
    #[arg(long, env = "ML_BASE_RISE", default_value_t = 2)]
    pub ml_base_rise: u32,
    /// Timeout of one request to a replica, in milliseconds.
    #[arg(long, env = "ML_BASE_TIMEOUT_MS", default_value_t = 30_000)]
    pub ml_base_timeout_ms: u64,
    /// Most embeddings held in the in-process L1 cache; 0 turns L1 off.
    #[arg(long, env = "EMBEDDING_CACHE_SIZE", default_value_t = 50_000)]
    pub embedding_cache_size: u64,
    /// Seconds an L1 entry lives.
    #[arg(long, env = "EMBEDDING_CACHE_TTL", default_value_t = 3600)]
    pub embedding_cache_ttl: u64,
    /// Use a sutra-storage cache shard as L2.
    #[arg(long, env = "SUTRA_CACHE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub sutra_cache_enabled: bool,
    /// The cache shard's host.
    #[arg(long, env = "SUTRA_CACHE_HOST", default_value = "127.0.0.1")]
    pub sutra_cache_host: String,
    /// The cache shard's port.
    #[arg(long, env = "SUTRA_CACHE_PORT", default_value_t = 50052)]
    pub sutra_cache_port: u16,
    /// Seconds an L2 entry lives (the shard reaps it after).
    #[arg(long, env = "SUTRA_CACHE_TTL", default_value_t = 86_400)]
    pub sutra_cache_ttl: u64,
    /// Deadline of one L2 lookup, in milliseconds: a slower shard is skipped (counted as down)
    /// and probed again after a second, or at once after a successful write-back.
    #[arg(long, env = "SUTRA_CACHE_TIMEOUT_MS", default_value_t = 500)]
    pub sutra_cache_timeout_ms: u64,
    /// Deadline of one L2 write-back StoreMany, in milliseconds (retried 3 times before its
    /// entries are dropped). Write-backs are off the request path, so this can be generous.
    #[arg(long, env = "SUTRA_CACHE_WRITE_TIMEOUT_MS", default_value_t = 5000)]
    pub sutra_cache_write_timeout_ms: u64,
    /// Most entries waiting to be written back to L2; beyond it new ones are dropped (and
    /// counted in /cache/stats as l2.write_backs.dropped).
    #[arg(long, env = "SUTRA_CACHE_WRITE_QUEUE", default_value_t = L2Config::DEFAULT_WRITE_QUEUE)]
    pub sutra_cache_write_queue: u64,
    /// The cache shard's SUTRA_AUTH_TOKEN, when it requires one.
    #[arg(long, env = "SUTRA_CACHE_AUTH_TOKEN", hide_env_values = true)]
    pub sutra_cache_auth_token: Option<String>,
    /// The model, when no ML_BASE_URL is given.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The in-process model.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// The folder (`SUTRA_MODEL_DIR`), if given.
    pub dir: Option<PathBuf>,
    /// The name to look up otherwise (`MODEL_NAME`; `sutra_embed::resolve_model_dir`).
    pub name: Option<String>,
    /// Output dimension.
    pub dimension: usize,
    /// The batcher's bounds.
    pub batcher: BatcherConfig,
    /// `EMBED_PRECISION`.
    pub precision: sutra_embed::Precision,
}

impl ModelArgs {
    fn local(&self) -> LocalModel {
        LocalModel {
            dir: self.model_dir.clone(),
            name: self.model_name.clone(),
            dimension: self.matryoshka_dim,
            batcher: BatcherConfig {
                max_batch: self.ml_base_max_batch_size,
                queue_len: self.embed_queue_len,
                batch_timeout: Duration::from_millis(self.ml_base_batch_timeout_ms),
            },
            precision: self.embed_precision,
        }
    }

    fn limits(&self) -> TextLimits {
        TextLimits {
            max_texts: self.embed_max_texts.max(1),
            max_text_bytes: self.embed_max_text_bytes.max(1),
        }
    }
}

/// Replica balancing and health checks.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Base URLs.
    pub urls: Vec<String>,
    /// Between health checks.
    pub health_interval: Duration,
    /// Failed checks in a row that take a replica out.
    pub fall: u32,
    /// Passed checks in a row that put it back.
    pub rise: u32,
    /// Per request.
    pub timeout: Duration,
}

/// The L2 cache shard.
#[derive(Debug, Clone)]
pub struct L2Config {
    /// `host:port`.
    pub addr: String,
    /// Entry lifetime.
    pub ttl: Duration,
    /// One lookup's deadline.
    pub timeout: Duration,
    /// One write-back's deadline.
    pub write_timeout: Duration,
    /// Most entries queued for write-back.
    pub write_queue: u64,
    /// The shard's token, if it requires one.
    pub auth_token: Option<String>,
}

impl L2Config {
    /// Default `SUTRA_CACHE_WRITE_QUEUE`: about 20 MB of 256-dim vectors and their texts.
    pub const DEFAULT_WRITE_QUEUE: u64 = 10_000;
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where to listen.
    pub listen: String,
    /// In-process model (used when `replicas` is `None`).
    pub local: LocalModel,
    /// ML-base replicas.
    pub replicas: Option<ReplicaConfig>,
    /// L1 capacity (entries).
    pub l1_capacity: u64,
    /// L1 entry lifetime.
    pub l1_ttl: Duration,
    /// L2, if enabled.
    pub l2: Option<L2Config>,
    /// Request bounds.
    pub limits: TextLimits,
    /// `EMBED_THREADS`.
    pub threads: usize,
}

impl ServiceConfig {
    /// A test configuration: in-process model from `dir`, no L2, port 0.
    pub fn for_tests(dir: PathBuf) -> ServiceConfig {
        ServiceConfig {
            listen: "127.0.0.1:0".to_owned(),
            local: LocalModel {
                dir: Some(dir),
                name: None,
                dimension: 256,
                batcher: BatcherConfig::default(),
                precision: sutra_embed::Precision::F32,
            },
            replicas: None,
            l1_capacity: 50_000,
            l1_ttl: Duration::from_secs(3600),
            l2: None,
            limits: TextLimits::default(),
            threads: 0,
        }
    }
}

impl From<&ServeArgs> for ServiceConfig {
    fn from(args: &ServeArgs) -> ServiceConfig {
        ServiceConfig {
            listen: listen(&args.host, args.port),
            local: args.model.local(),
            replicas: (!args.ml_base_url.is_empty()).then(|| ReplicaConfig {
                urls: args.ml_base_url.clone(),
                health_interval: Duration::from_millis(args.ml_base_health_interval_ms.max(10)),
                fall: args.ml_base_fall.max(1),
                rise: args.ml_base_rise.max(1),
                timeout: Duration::from_millis(args.ml_base_timeout_ms.max(1)),
            }),
            l1_capacity: args.embedding_cache_size,
            l1_ttl: Duration::from_secs(args.embedding_cache_ttl.max(1)),
            l2: args.sutra_cache_enabled.then(|| L2Config {
                addr: format!("{}:{}", args.sutra_cache_host, args.sutra_cache_port),
                ttl: Duration::from_secs(args.sutra_cache_ttl),
                timeout: Duration::from_millis(args.sutra_cache_timeout_ms.max(1)),
                write_timeout: Duration::from_millis(args.sutra_cache_write_timeout_ms.max(1)),
                write_queue: args.sutra_cache_write_queue,
                auth_token: args.sutra_cache_auth_token.clone(),
            }),
            limits: args.model.limits(),
            threads: args.model.embed_threads,
        }
    }
}

/// Everything `ml-base` needs.
#[derive(Debug, Clone)]
pub struct MlBaseConfig {
    /// Where to listen.
    pub listen: String,
    /// This replica's name.
    pub instance_id: String,
    /// The model.
    pub model: LocalModel,
    /// Request bounds.
    pub limits: TextLimits,
    /// `EMBED_THREADS`.
    pub threads: usize,
}

impl From<&MlBaseArgs> for MlBaseConfig {
    fn from(args: &MlBaseArgs) -> MlBaseConfig {
        MlBaseConfig {
            listen: listen(&args.host, args.port),
            instance_id: args
                .instance_id
                .clone()
                .unwrap_or_else(|| format!("ml-base-{}", std::process::id())),
            model: args.model.local(),
            limits: args.model.limits(),
            threads: args.model.embed_threads,
        }
    }
}

fn listen(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// Variables the seed sets for the embedding service and ML-base replicas that change
/// nothing here, with what to do instead; README.md has the table of every seed variable.
pub const SEED_VARIABLES_WITHOUT_EFFECT: &[(&str, &str)] = &[
    ("SUTRA_EDITION", "there is one edition; nothing to select"),
    (
        "ML_BASE_MODEL_UNLOAD_TIMEOUT",
        "a replica keeps its model loaded (about 90 MB for the default model) and answers at once; there is no idle unload",
    ),
    ("PYTHONUNBUFFERED", "the log goes to stderr unbuffered"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_names_every_environment_variable() {
        let mut command = ServiceCli::command();
        for sub in ["serve", "ml-base"] {
            let help = command
                .find_subcommand_mut(sub)
                .map(|sub| sub.render_long_help().to_string())
                .unwrap_or_default();
            let names: &[&str] = if sub == "serve" {
                &[
                    "EMBEDDING_SERVICE_PORT",
                    "ML_BASE_URL",
                    "ML_BASE_FALL",
                    "ML_BASE_RISE",
                    "EMBEDDING_CACHE_SIZE",
                    "EMBEDDING_CACHE_TTL",
                    "SUTRA_CACHE_ENABLED",
                    "SUTRA_CACHE_HOST",
                    "SUTRA_CACHE_PORT",
                    "SUTRA_CACHE_TTL",
                    "SUTRA_CACHE_WRITE_TIMEOUT_MS",
                    "SUTRA_CACHE_WRITE_QUEUE",
                    "EMBED_MAX_TEXTS",
                    "EMBED_PRECISION",
                ]
            } else {
                &[
                    "ML_BASE_HOST",
                    "ML_BASE_PORT",
                    "INSTANCE_ID",
                    "ML_BASE_MAX_BATCH_SIZE",
                    "ML_BASE_BATCH_TIMEOUT_MS",
                    "SUTRA_MODEL_DIR",
                    "MATRYOSHKA_DIM",
                    "EMBED_THREADS",
                    "EMBED_PRECISION",
                ]
            };
            for name in names {
                assert!(help.contains(name), "{sub} --help lacks {name}");
            }
        }
    }

    #[test]
    fn serve_flags_become_a_config() {
        let cli = ServiceCli::parse_from([
            "sutra-embedding-service",
            "serve",
            "--port",
            "0",
            "--ml-base-url",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--sutra-cache-enabled",
            "false",
        ]);
        let ServiceRole::Serve(args) = cli.role else {
            panic!("serve")
        };
        let config = ServiceConfig::from(&args);
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.replicas.map(|r| r.urls.len()), Some(2));
        assert!(config.l2.is_none());
        assert!(config.limits.max_body_bytes() > config.limits.max_text_bytes);
    }
}
