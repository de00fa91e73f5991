//! Learning through an embedding service (`SUTRA_EMBEDDING_SERVICE_URL`), as the seed's
//! storage server embeds through the ML-base pool: HTTP `POST {url}/embed` with
//! `{"texts": [...]}`, answered by an ML-base replica, HAProxy in front of several, or the
//! embedding service's own `/embed` (which adds its caches). This is how learning scales past
//! the cores of the storage machine; in-process embedding (the default) saves the network hop.
//!
//! A learn request's texts go in calls of at most `ML_BASE_MAX_BATCH_SIZE` texts, each under
//! `SUTRA_EMBEDDING_SERVICE_TIMEOUT_MS`, retried `SUTRA_EMBEDDING_SERVICE_RETRIES` times when
//! the service cannot be reached, times out or answers 5xx (never on 4xx: the same request
//! would be refused again). The texts are sent as they are: the service applies its model's
//! document prefix, as the in-process path does, so the vectors are the same.

use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::config::RemoteConfig;

/// Wait before retry `n` (1-based): `n` times this.
const BACKOFF: Duration = Duration::from_millis(200);

/// One text's vector and what the model saw of it (in-process learning makes the same).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The vector, as the service returned it.
    pub vector: Vec<f32>,
    /// Tokens the model saw (0 when the service does not say).
    pub tokens: usize,
    /// Whether the text was cut at the model's token limit.
    pub truncated: bool,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No answer after every try (down, unreachable, timing out, or 5xx).
    #[error("the embedding service at {url} did not answer after {tries} tries: {last}")]
    Unavailable {
        /// The endpoint.
        url: String,
        /// Calls made.
        tries: u32,
        /// The last failure.
        last: String,
    },
    /// An answer that cannot be used (4xx, or not the `/embed` JSON).
    #[error("the embedding service at {url} refused the texts: {message}")]
    Refused {
        /// The endpoint.
        url: String,
        /// What it said, or what was wrong with the answer.
        message: String,
    },
}

/// The `/embed` answer fields both ML-base and the embedding service send.
#[derive(Debug, Deserialize)]
struct Answer {
    embeddings: Vec<Vec<f32>>,
    model: String,
    #[serde(default)]
    truncated: Vec<bool>,
    #[serde(default)]
    tokens: Vec<usize>,
}

/// The HTTP client of one embedding service.
#[derive(Debug)]
pub struct Remote {
    client: reqwest::Client,
    endpoint: String,
    config: RemoteConfig,
    /// The model name of the last answer (for `/health`).
    model: Mutex<Option<String>>,
}

impl Remote {
    /// A client for `config.url`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS backend is needed for `http://`).
    pub fn new(config: RemoteConfig) -> Result<Remote, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Remote {
            client,
            endpoint: format!("{}/embed", config.url.trim_end_matches('/')),
            config,
            model: Mutex::new(None),
        })
    }

    /// The service's base URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// The model the service last reported, if it has answered.
    pub fn model(&self) -> Option<String> {
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Embeds `texts` in order; the model's name and one vector per text.
    ///
    /// # Errors
    /// [`RemoteError`] when a call fails after its retries or the answer is unusable.
    pub async fn embed(&self, texts: &[String]) -> Result<(String, Vec<Embedding>), RemoteError> {
        let mut vectors = Vec::with_capacity(texts.len());
        let mut model = String::new();
        for chunk in texts.chunks(self.config.max_batch.max(1)) {
            let answer = self.call(chunk).await?;
            if answer.embeddings.len() != chunk.len() {
                return Err(self.refused(format!(
                    "{} vectors for {} texts",
                    answer.embeddings.len(),
                    chunk.len()
                )));
            }
            for (index, vector) in answer.embeddings.into_iter().enumerate() {
                vectors.push(Embedding {
                    vector,
                    tokens: answer.tokens.get(index).copied().unwrap_or(0),
                    truncated: answer.truncated.get(index).copied().unwrap_or(false),
                });
            }
            model = answer.model;
        }
        *self
            .model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(model.clone());
        Ok((model, vectors))
    }

    async fn call(&self, texts: &[String]) -> Result<Answer, RemoteError> {
        let body = serde_json::json!({ "texts": texts });
        let mut tries = 0;
        loop {
            tries += 1;
            let last = match self.client.post(&self.endpoint).json(&body).send().await {
                Ok(response) if response.status().is_success() => {
                    return response
                        .json::<Answer>()
                        .await
                        .map_err(|error| self.refused(format!("not the /embed answer: {error}")));
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    return Err(self.refused(format!("{status}: {text}")));
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(error) => error_chain(&error),
            };
            if tries > self.config.retries {
                return Err(RemoteError::Unavailable {
                    url: self.endpoint.clone(),
                    tries,
                    last,
                });
            }
            tracing::debug!(url = %self.endpoint, tries, error = %last, "embedding service call failed; retrying");
            tokio::time::sleep(BACKOFF * tries).await;
        }
    }

    fn refused(&self, message: String) -> RemoteError {
        RemoteError::Refused {
            url: self.endpoint.clone(),
            message,
        }
    }
}

/// An error with its causes ("error sending request: ... Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
