//! Learning: LearnConcept and LearnBatch embed their texts with the server's model (in this
//! process, or through an embedding service) and store the vectors like StoreConcept and
//! StoreMany.

use std::fmt::Write as _;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sutra_embed::{Batcher, EmbedError, Output, Task};
use sutra_engine::Engine;
use sutra_protocol::{ConceptId, ErrorCode, LearnConcept, Learned, Response, StoreConcept, Vector};

use crate::remote::{Embedding, Remote, RemoteError};
use crate::reply::{engine_error, Pending, Reply};

/// Whether a learn answers as LearnConcept (one text) or LearnBatch (several, all or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learning {
    /// LearnConcept: one text, answered with one `Learned`.
    One,
    /// LearnBatch: the texts stored as one write, answered with every `Learned`.
    Batch,
}

/// The embedding model behind LearnConcept, in-process or behind an embedding service, and
/// the stored dimension.
#[derive(Debug, Clone)]
pub struct Embedder {
    source: Source,
    dimension: u32,
}

#[derive(Debug, Clone)]
enum Source {
    /// The model's batcher in this process.
    Local(Batcher),
    /// `SUTRA_EMBEDDING_SERVICE_URL`.
    Remote(Arc<Remote>),
}

impl Embedder {
    /// An embedder producing `dimension`-value Matryoshka vectors in this process.
    pub fn new(batcher: Batcher, dimension: u32) -> Embedder {
        Embedder {
            source: Source::Local(batcher),
            dimension,
        }
    }

    /// An embedder calling the embedding service behind `remote`, whose vectors must have
    /// `dimension` values.
    pub fn remote(remote: Remote, dimension: u32) -> Embedder {
        Embedder {
            source: Source::Remote(Arc::new(remote)),
            dimension,
        }
    }

    /// The model's name (its folder's name), stored as each learned concept's `model`; for an
    /// embedding service, the name it last answered with (`None` before its first answer).
    pub fn model_name(&self) -> Option<String> {
        match &self.source {
            Source::Local(batcher) => Some(batcher.info().name.clone()),
            Source::Remote(remote) => remote.model(),
        }
    }

    /// The embedding service's URL, when learning goes through one.
    pub fn service_url(&self) -> Option<&str> {
        match &self.source {
            Source::Local(_) => None,
            Source::Remote(remote) => Some(remote.url()),
        }
    }

    /// One query's vector, with the model's query prefix (an in-process model only: an
    /// embedding service embeds documents).
    pub(crate) async fn embed_query(&self, text: String) -> Result<Vec<f32>, Response> {
        let Source::Local(batcher) = &self.source else {
            return Err(Response::error(
                ErrorCode::NoModel,
                "a text search needs the model in this process (an embedding service embeds documents only): search by vector",
            ));
        };
        let text = batcher.info().prefixes.apply(Task::Query, &text);
        let mut vectors = batcher
            .embed(vec![text], Output::Matryoshka(self.dimension as usize))
            .await
            .map_err(|error| embed_error(&error))?;
        vectors
            .pop()
            .map(|item| item.vector)
            .ok_or_else(|| Response::error(ErrorCode::Internal, "the model returned no vector"))
    }

    /// The model's name and one vector per text (documents: the model's document prefix is
    /// applied, here or by the service).
    async fn embed(&self, texts: Vec<String>) -> Result<(String, Vec<Embedding>), Response> {
        let dimension = self.dimension as usize;
        match &self.source {
            Source::Local(batcher) => {
                let prefixes = &batcher.info().prefixes;
                let texts = texts
                    .iter()
                    .map(|text| prefixes.apply(Task::Document, text))
                    .collect();
                let vectors = batcher
                    .embed(texts, Output::Matryoshka(dimension))
                    .await
                    .map_err(|error| embed_error(&error))?;
                let embedded = vectors
                    .into_iter()
                    .map(|item| Embedding {
                        vector: item.vector,
                        tokens: item.tokens,
                        truncated: item.truncated,
                    })
                    .collect();
                Ok((batcher.info().name.clone(), embedded))
            }
            Source::Remote(remote) => {
                let (model, vectors) = remote.embed(&texts).await.map_err(|error| {
                    tracing::warn!(%error, "learn failed");
                    let code = match error {
                        RemoteError::Unavailable { .. } => ErrorCode::Busy,
                        RemoteError::Refused { .. } => ErrorCode::Internal,
                    };
                    Response::error(code, error.to_string())
                })?;
                if let Some(other) = vectors.iter().find(|item| item.vector.len() != dimension) {
                    return Err(Response::error(
                        ErrorCode::Internal,
                        format!(
                            "the embedding service at {} answers {}-value vectors and VECTOR_DIMENSION is {dimension}: set its MATRYOSHKA_DIM to {dimension}",
                            remote.url(),
                            other.vector.len()
                        ),
                    ));
                }
                Ok((model, vectors))
            }
        }
    }
}

/// The id of a learn request without one: `learn-` and the first 32 hex digits of
/// sha256(model, 0x00, content), so the same text learned twice with one model is one concept.
pub fn derived_id(model: &str, content: &str) -> String {
    let digest = Sha256::new()
        .chain_update(model.as_bytes())
        .chain_update([0_u8])
        .chain_update(content.as_bytes())
        .finalize();
    let mut id = String::with_capacity(38);
    id.push_str("learn-");
    for byte in digest.iter().take(16) {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// LearnConcept and LearnBatch: embed on the model's worker, then store like
/// StoreConcept/StoreMany; the reply waits for both.
pub(crate) fn learn(
    worker: Option<Embedder>,
    engine: Arc<Engine>,
    learns: Vec<LearnConcept>,
    learning: Learning,
) -> Reply {
    let Some(model_worker) = worker else {
        return Reply::Ready(Response::error(
            ErrorCode::NoModel,
            "this server has no embedding model: start it with --model-dir/SUTRA_MODEL_DIR (./scripts/fetch-model fetches the default)",
        ));
    };
    Reply::Pending(Pending::new(async move {
        let texts = learns.iter().map(|learn| learn.content.clone()).collect();
        let (model, vectors) = match model_worker.embed(texts).await {
            Ok(embedded) => embedded,
            Err(response) => return response,
        };
        let mut stores = Vec::with_capacity(learns.len());
        let mut facts = Vec::with_capacity(learns.len());
        for (learn, item) in learns.into_iter().zip(vectors) {
            let id = match learn.id {
                Some(id) => id,
                None => match ConceptId::parse(&derived_id(&model, &learn.content)) {
                    Ok(id) => id,
                    Err(error) => return Response::error(ErrorCode::Internal, error.to_string()),
                },
            };
            let vector = match Vector::new(item.vector, model_worker.dimension) {
                Ok(vector) => vector,
                Err(error) => return Response::error(ErrorCode::Internal, error.to_string()),
            };
            facts.push((
                id.to_string(),
                u32::try_from(item.tokens).unwrap_or(u32::MAX),
                item.truncated,
            ));
            stores.push(StoreConcept {
                id,
                content: learn.content,
                concept_type: learn.concept_type,
                model: model.clone(),
                attributes: learn.attributes,
                embedding: Some(vector),
                ttl_seconds: learn.ttl_seconds,
            });
        }
        let learned = |outcomes: Vec<sutra_protocol::StoreOutcome>| -> Vec<Learned> {
            facts
                .into_iter()
                .zip(outcomes)
                .map(|((id, tokens, truncated), outcome)| Learned {
                    id,
                    outcome,
                    tokens,
                    truncated,
                })
                .collect()
        };
        if learning == Learning::Batch {
            match engine.store_many(stores) {
                Ok(pending) => match pending.wait().await {
                    Ok(outcomes) => Response::LearnedMany(learned(outcomes)),
                    Err(error) => engine_error(&error),
                },
                Err(error) => engine_error(&error),
            }
        } else {
            let Some(store) = stores.pop() else {
                return Response::error(ErrorCode::Internal, "no text to learn");
            };
            match engine.store(store) {
                Ok(pending) => match pending.wait().await {
                    Ok(outcome) => learned(vec![outcome]).pop().map_or_else(
                        || Response::error(ErrorCode::Internal, "no outcome"),
                        Response::Learned,
                    ),
                    Err(error) => engine_error(&error),
                },
                Err(error) => engine_error(&error),
            }
        }
    }))
}

fn embed_error(error: &EmbedError) -> Response {
    match error {
        EmbedError::Busy => Response::error(ErrorCode::Busy, error.to_string()),
        _ => {
            tracing::warn!(%error, "learn failed");
            Response::error(ErrorCode::Internal, format!("embedding failed: {error}"))
        }
    }
}
