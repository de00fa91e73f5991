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
pub mod metrics;
pub mod ml_base;
pub mod model;
/// The JSON request bodies (they live with the other wire formats, in `sutra-protocol`).
pub use sutra_protocol::embed_json as request;

pub use config::{MlBaseConfig, ServiceConfig};

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A JSON error body with an HTTP status: every bad request gets one, never a bare status.
#[derive(Debug)]
pub struct HttpError {
    /// The status.
    pub status: axum::http::StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

impl HttpError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// `status` with `message`.
    pub fn new(status: axum::http::StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

impl axum::response::IntoResponse for HttpError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({
            "error": {"status": self.status.as_u16(), "message": self.message}
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<axum::extract::rejection::BytesRejection> for HttpError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> HttpError {
        HttpError::new(rejection.status(), rejection.body_text())
    }
}

impl From<request::RequestError> for HttpError {
    fn from(error: request::RequestError) -> HttpError {
        let status = axum::http::StatusCode::from_u16(error.status)
            .unwrap_or(axum::http::StatusCode::BAD_REQUEST);
        HttpError::new(status, error.message)
    }
}
