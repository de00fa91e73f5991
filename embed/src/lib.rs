//! sutra's embedding pipeline: a local BERT-family model on candle (f32, CPU), mean pooling,
//! Matryoshka truncation (layer_norm → first `d` values → L2), and a dynamic batcher on its
//! own thread. No networking: the storage server and the embedding service call it
//! in-process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sutra_embed::EmbedError> {
//! use sutra_embed::{Batcher, BatcherConfig, Output, Pipeline};
//! let pipeline = Pipeline::load(std::path::Path::new("models/all-MiniLM-L6-v2"))?;
//! let batcher = Batcher::spawn(pipeline, BatcherConfig::default()).expect("thread");
//! let vectors = batcher.embed(vec!["hello".to_owned()], Output::Matryoshka(256)).await?;
//! assert_eq!(vectors[0].vector.len(), 256);
//! # Ok(()) }
//! ```

mod batcher;
mod model;
mod pipeline;

pub use batcher::{Batcher, BatcherConfig};
pub use model::{EmbedError, ModelDir, MAX_TOKENS};
pub use pipeline::{Embedded, Output, Pipeline, Pooled, SUB_BATCH};

/// The default model folder, relative to the working directory (`scripts/fetch-model`).
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
