//! The ML-base role: the model alone over HTTP. `POST /embed {"texts": [...], "normalize":
//! true}` → `{"embeddings", "dimension", "model", "instance_id", "truncated", "tokens"}`;
//! `GET /health` → 200 with the model, dimension and instance id once the model is loaded,
//! 503 before. Concurrent requests are merged by the pipeline's dynamic batcher.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sutra_embed::{Batcher, EmbedError, Output, Task};
use sutra_protocol::embed_json as request;

use crate::config::{LocalModel, MlBaseConfig, TextLimits};
use crate::http::HttpError;
use crate::model::{ReplicaHealth, ReplicaResponse};

/// Loads `model` off the async workers and starts its batcher.
pub async fn load(model: &LocalModel) -> anyhow::Result<Batcher> {
    let dir = sutra_embed::resolve_model_dir(model.dir.as_deref(), model.name.as_deref())
        .map_err(anyhow::Error::msg)?;
    let precision = model.precision;
    let pipeline = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || sutra_embed::Pipeline::load_with(&dir, precision))
            .await??
    };
    let hidden = pipeline.info().hidden_size;
    anyhow::ensure!(
        model.dimension > 0 && model.dimension <= hidden,
        "MATRYOSHKA_DIM ({}) must be between 1 and the model's hidden size ({hidden})",
        model.dimension
    );
    tracing::info!(model = %pipeline.info().name, dir = %dir.display(), hidden, dimension = model.dimension, precision = %precision, "embedding model loaded");
    Ok(Batcher::spawn(pipeline, model.batcher)?)
}

/// An ML-base replica's state: the batcher once loaded.
pub struct MlBase {
    instance_id: String,
    dimension: usize,
    limits: TextLimits,
    batcher: OnceLock<Batcher>,
}

impl MlBase {
    /// A replica whose model is not loaded yet (`/health` answers 503 until
    /// [`MlBase::set_model`]).
    pub fn new(config: &MlBaseConfig) -> Arc<MlBase> {
        Arc::new(MlBase {
            instance_id: config.instance_id.clone(),
            dimension: config.model.dimension,
            limits: config.limits,
            batcher: OnceLock::new(),
        })
    }

    /// The loaded model.
    pub fn set_model(&self, batcher: Batcher) {
        let _ = self.batcher.set(batcher);
    }
}

/// The router of `ml-base`.
pub fn router(state: Arc<MlBase>) -> Router {
    let body_limit = state.limits.max_body_bytes();
    Router::new()
        .route("/embed", post(embed))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn not_loaded() -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the model is still loading",
    )
}

async fn embed(
    State(state): State<Arc<MlBase>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReplicaResponse>, HttpError> {
    let request = request::replica(&body?, &state.limits)?;
    let batcher = state.batcher.get().ok_or_else(not_loaded)?;
    let prefixes = &batcher.info().prefixes;
    let texts = request
        .texts
        .iter()
        .map(|text| prefixes.apply(Task::Document, text))
        .collect();
    let embedded = batcher
        .embed(texts, Output::Matryoshka(state.dimension))
        .await
        .map_err(|error| match error {
            EmbedError::Busy | EmbedError::Stopped => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            other => HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })?;
    Ok(Json(ReplicaResponse {
        truncated: embedded.iter().map(|item| item.truncated).collect(),
        tokens: embedded.iter().map(|item| item.tokens).collect(),
        embeddings: embedded.into_iter().map(|item| item.vector).collect(),
        dimension: state.dimension,
        model: batcher.info().name.clone(),
        instance_id: state.instance_id.clone(),
    }))
}

async fn health(State(state): State<Arc<MlBase>>) -> Result<Json<ReplicaHealth>, HttpError> {
    let batcher = state.batcher.get().ok_or_else(not_loaded)?;
    Ok(Json(ReplicaHealth {
        status: "ok".to_owned(),
        model: batcher.info().name.clone(),
        dimension: state.dimension,
        instance_id: state.instance_id.clone(),
    }))
}
