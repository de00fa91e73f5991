//! sutra's embedding service, in two roles of one binary (`sutra-embedding-service`):
//!
//! - **ML-base** ([`ml_base`]): serves the model over HTTP (`POST /embed`, `GET /health`);
//!   concurrent requests are merged by the pipeline's dynamic batcher.
//! - **Embedding service** ([`api`]): `POST /embed` (and OpenAI-style `POST /v1/embeddings`)
//!   answered from an in-process L1 cache, then a sutra-storage cache shard (L2, survives
//!   restarts), and only then the model: in-process, or ML-base replicas balanced by least
//!   outstanding requests with health checks and failover ([`model`]); `GET /metrics` in
//!   Prometheus' format ([`metrics`]).

pub mod api;
pub mod cache;
pub mod config;
pub mod http;
pub mod metrics;
pub mod ml_base;
pub mod model;
/// The JSON request bodies (they live with the other wire formats, in `sutra-protocol`).
pub use sutra_protocol::embed_json as request;

pub use config::{MlBaseConfig, ServiceConfig};
pub use http::{serve, HttpError};
