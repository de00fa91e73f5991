//! The JSON request bodies of the embedding service's HTTP endpoints (`POST /embed`,
//! `POST /v1/embeddings`, an ML-base replica's `POST /embed`), parsed and checked as a pure
//! function of the bytes: no model, no cache, no network. Every handler goes through here, so
//! a body is refused (400 for broken JSON, 422 for well-formed JSON of the wrong shape, 413
//! over a limit) before anything runs.
//!
//! A wire format like the rest of this crate, behind the `embed-json` feature (it needs
//! `serde`): the embedding service and the fuzz target `service_json` use it without building
//! the model.

use serde::{Deserialize, Serialize};

/// Request bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Most texts per request.
    pub max_texts: usize,
    /// Longest text in bytes.
    pub max_text_bytes: usize,
}

impl TextLimits {
    /// Default `EMBED_MAX_TEXTS`.
    pub const DEFAULT_MAX_TEXTS: usize = 256;
    /// Default `EMBED_MAX_TEXT_BYTES`.
    pub const DEFAULT_MAX_TEXT_BYTES: usize = 65_536;

    /// The largest request body these limits allow (JSON escaping at most doubles a text).
    pub fn max_body_bytes(&self) -> usize {
        self.max_texts
            .saturating_mul(self.max_text_bytes.saturating_mul(2).saturating_add(8))
            .saturating_add(4096)
    }
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_texts: Self::DEFAULT_MAX_TEXTS,
            max_text_bytes: Self::DEFAULT_MAX_TEXT_BYTES,
        }
    }
}

/// A refused body: the HTTP status and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// 400, 413 or 422.
    pub status: u16,
    /// What is wrong, naming the field or limit.
    pub message: String,
}

impl RequestError {
    fn bad(message: impl Into<String>) -> RequestError {
        RequestError {
            status: 400,
            message: message.into(),
        }
    }

    fn too_large(message: String) -> RequestError {
        RequestError {
            status: 413,
            message,
        }
    }
}

/// Parses a JSON body: broken JSON is 400, the wrong shape 422 (as axum's `Json` does).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|error| {
        let status = match error.classify() {
            serde_json::error::Category::Data => 422,
            _ => 400,
        };
        RequestError {
            status,
            message: format!("invalid JSON body: {error}"),
        }
    })
}

/// Refuses an empty list, too many texts, or a text over `max_text_bytes`.
pub fn check_texts(texts: &[String], limits: &TextLimits) -> Result<(), RequestError> {
    if texts.is_empty() {
        return Err(RequestError::bad("texts is empty"));
    }
    if texts.len() > limits.max_texts {
        return Err(RequestError::too_large(format!(
            "{} texts; at most {} per request (EMBED_MAX_TEXTS)",
            texts.len(),
            limits.max_texts
        )));
    }
    if let Some((index, text)) = texts
        .iter()
        .enumerate()
        .find(|(_, text)| text.len() > limits.max_text_bytes)
    {
        return Err(RequestError::too_large(format!(
            "texts[{index}] is {} bytes; at most {} (EMBED_MAX_TEXT_BYTES)",
            text.len(),
            limits.max_text_bytes
        )));
    }
    Ok(())
}

/// `POST /embed` body of the embedding service (the seed's).
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    /// The texts, answered in order.
    pub texts: Vec<String>,
    /// Accepted for compatibility; the answer names the model that served.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Must be absent or true.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// L2 lifetime of the vectors this request computes (default `SUTRA_CACHE_TTL`).
    #[serde(default)]
    pub cache_ttl_seconds: Option<u64>,
}

/// Parses and checks a `POST /embed` body.
pub fn embed(body: &[u8], limits: &TextLimits) -> Result<EmbedRequest, RequestError> {
    let request: EmbedRequest = parse_json(body)?;
    if request.normalize == Some(false) {
        return Err(RequestError::bad(
            "normalize=false is not supported: vectors are always unit length (Matryoshka: layer_norm, truncate, L2)",
        ));
    }
    check_texts(&request.texts, limits)?;
    Ok(request)
}

/// OpenAI's `input`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct OpenAiBody {
    input: Input,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// A checked `POST /v1/embeddings` request.
#[derive(Debug)]
pub struct OpenAiRequest {
    /// `input` as a list.
    pub texts: Vec<String>,
    /// Accepted and ignored (one model per service).
    pub model: Option<String>,
    /// Leading dimensions to return, 1..=`dimension`.
    pub dimensions: usize,
}

/// Parses and checks a `POST /v1/embeddings` body (OpenAI's) for a model of `dimension`.
pub fn openai(
    body: &[u8],
    limits: &TextLimits,
    dimension: usize,
) -> Result<OpenAiRequest, RequestError> {
    let request: OpenAiBody = parse_json(body)?;
    if let Some(format) = request.encoding_format.as_deref() {
        if format != "float" {
            return Err(RequestError::bad(format!(
                "encoding_format {format:?}: only \"float\" is supported"
            )));
        }
    }
    let dimensions = request.dimensions.unwrap_or(dimension);
    if dimensions == 0 || dimensions > dimension {
        return Err(RequestError::bad(format!(
            "dimensions must be between 1 and {dimension}"
        )));
    }
    let texts = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
    };
    check_texts(&texts, limits)?;
    Ok(OpenAiRequest {
        texts,
        model: request.model,
        dimensions,
    })
}

/// `POST /embed` body of an ML-base replica.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaRequest {
    /// Texts; the replica puts its model's document prefix before each.
    pub texts: Vec<String>,
    /// Must be true (vectors are always unit length).
    #[serde(default = "yes")]
    pub normalize: bool,
}

fn yes() -> bool {
    true
}

/// Parses and checks an ML-base `POST /embed` body.
pub fn replica(body: &[u8], limits: &TextLimits) -> Result<ReplicaRequest, RequestError> {
    let request: ReplicaRequest = parse_json(body)?;
    if !request.normalize {
        return Err(RequestError::bad(
            "normalize=false is not supported: vectors are always unit length",
        ));
    }
    check_texts(&request.texts, limits)?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_bounded() {
        let limits = TextLimits {
            max_texts: 2,
            max_text_bytes: 3,
        };
        assert!(check_texts(&[], &limits).is_err());
        assert!(check_texts(&["a".into(), "b".into()], &limits).is_ok());
        let too_many = check_texts(&["a".into(), "b".into(), "c".into()], &limits);
        assert_eq!(too_many.map_err(|e| e.status), Err(413));
        assert!(check_texts(&["abcd".into()], &limits).is_err());
    }

    #[test]
    fn broken_json_is_400_and_the_wrong_shape_422() {
        let limits = TextLimits::default();
        let status = |body: &str| {
            embed(body.as_bytes(), &limits)
                .map(|_| ())
                .map_err(|e| e.status)
        };
        assert_eq!(status(r#"{"texts": ["a"]}"#), Ok(()));
        assert_eq!(status(r#"{"texts": ["a""#), Err(400));
        assert_eq!(status("\u{0}"), Err(400));
        assert_eq!(status(r#"{"texts": 5}"#), Err(422));
        assert_eq!(status(r#"{"text": ["a"]}"#), Err(422));
        assert_eq!(status(r#"{"texts": ["a"], "normalize": false}"#), Err(400));
        assert_eq!(status(r#"{"texts": []}"#), Err(400));
    }

    #[test]
    fn openai_input_is_one_string_or_a_list_and_dimensions_are_bounded() {
        let limits = TextLimits::default();
        let one = openai(br#"{"input": "a"}"#, &limits, 256).unwrap();
        assert_eq!((one.texts, one.dimensions), (vec!["a".to_owned()], 256));
        let many = openai(br#"{"input": ["a", "b"], "dimensions": 64}"#, &limits, 256).unwrap();
        assert_eq!((many.texts.len(), many.dimensions), (2, 64));
        for body in [
            r#"{"input": "a", "dimensions": 0}"#,
            r#"{"input": "a", "dimensions": 257}"#,
            r#"{"input": "a", "encoding_format": "base64"}"#,
        ] {
            assert_eq!(
                openai(body.as_bytes(), &limits, 256).unwrap_err().status,
                400,
                "{body}"
            );
        }
    }
}
