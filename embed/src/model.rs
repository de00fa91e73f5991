//! A local model folder: which files it must have, what its configuration says, and the
//! errors that name the folder and the file when something is wrong.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// A required file is missing from the model folder.
    #[error("model folder {dir}: {file} is missing (run ./scripts/fetch-model for the default model, or point SUTRA_MODEL_DIR at a sentence-transformers folder)")]
    MissingFile {
        /// The folder.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// A file exists but cannot be used.
    #[error("model folder {dir}: {file} is unusable: {reason}")]
    BadFile {
        /// The folder.
        dir: PathBuf,
        /// The file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The configuration names an architecture this build cannot run.
    #[error("model folder {dir}: model_type {model_type:?} is not supported (supported: bert and BERT-family models such as all-MiniLM, bge, e5)")]
    Unsupported {
        /// The folder.
        dir: PathBuf,
        /// `model_type` from config.json.
        model_type: String,
    },
    /// A requested output dimension is larger than the model's.
    #[error("dimension {requested} is larger than the model's hidden size {hidden}")]
    Dimension {
        /// Asked for.
        requested: usize,
        /// The model's.
        hidden: usize,
    },
    /// Tokenisation failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The forward pass failed.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// The batcher's queue is full.
    #[error("the embedding queue is full; retry later")]
    Busy,
    /// The batcher has stopped.
    #[error("the embedding worker has stopped")]
    Stopped,
    /// A batched model run failed (every request in the batch gets this).
    #[error("embedding failed: {0}")]
    Run(String),
}

/// `sentence_bert_config.json`.
#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// `1_Pooling/config.json`: only mean pooling is supported.
#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// The fields of config.json that decide how the model is run.
#[derive(Debug, Deserialize)]
struct Architecture {
    model_type: Option<String>,
    hidden_size: usize,
    max_position_embeddings: usize,
}

/// A model folder, checked: every file exists and its configuration is readable.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The folder.
    pub dir: PathBuf,
    /// A short model name (the folder's name).
    pub name: String,
    /// config.json, parsed for candle's BERT.
    pub bert: candle_transformers::models::bert::Config,
    /// Hidden size (the full embedding dimension).
    pub hidden_size: usize,
    /// Longest input in tokens, [CLS] and [SEP] included: sentence-transformers'
    /// `max_seq_length`, else `max_position_embeddings`, at most 512.
    pub max_tokens: usize,
}

/// Most tokens any input may have (BERT's position table).
pub const MAX_TOKENS: usize = 512;

impl ModelDir {
    /// Checks the folder: config.json, tokenizer.json and model.safetensors must exist;
    /// sentence_bert_config.json and 1_Pooling/config.json are read when present.
    pub fn open(dir: &Path) -> Result<ModelDir, EmbedError> {
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            require(dir, file)?;
        }
        let config_text = read(dir, "config.json")?;
        let architecture: Architecture = parse(dir, "config.json", &config_text)?;
        let model_type = architecture
            .model_type
            .clone()
            .unwrap_or_else(|| "bert".to_owned());
        if model_type != "bert" {
            return Err(EmbedError::Unsupported {
                dir: dir.to_path_buf(),
                model_type,
            });
        }
        let bert = parse(dir, "config.json", &config_text)?;
        let mut max_tokens = architecture.max_position_embeddings;
        if dir.join("sentence_bert_config.json").is_file() {
            let text = read(dir, "sentence_bert_config.json")?;
            let config: SentenceBertConfig = parse(dir, "sentence_bert_config.json", &text)?;
            if let Some(length) = config.max_seq_length {
                max_tokens = max_tokens.min(length);
            }
        }
        if dir.join("1_Pooling/config.json").is_file() {
            let text = read(dir, "1_Pooling/config.json")?;
            let pooling: PoolingConfig = parse(dir, "1_Pooling/config.json", &text)?;
            if !pooling.pooling_mode_mean_tokens {
                return Err(EmbedError::BadFile {
                    dir: dir.to_path_buf(),
                    file: "1_Pooling/config.json",
                    reason: "only mean pooling (pooling_mode_mean_tokens) is supported".to_owned(),
                });
            }
        }
        let name = dir.file_name().map_or_else(
            || "model".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            name,
            bert,
            hidden_size: architecture.hidden_size,
            max_tokens: max_tokens.clamp(2, MAX_TOKENS),
        })
    }
}

fn require(dir: &Path, file: &'static str) -> Result<(), EmbedError> {
    if dir.join(file).is_file() {
        Ok(())
    } else {
        Err(EmbedError::MissingFile {
            dir: dir.to_path_buf(),
            file,
        })
    }
}

pub(crate) fn read(dir: &Path, file: &'static str) -> Result<String, EmbedError> {
    std::fs::read_to_string(dir.join(file)).map_err(|error| EmbedError::BadFile {
        dir: dir.to_path_buf(),
        file,
        reason: error.to_string(),
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    dir: &Path,
    file: &'static str,
    text: &str,
) -> Result<T, EmbedError> {
    serde_json::from_str(text).map_err(|error| EmbedError::BadFile {
        dir: dir.to_path_buf(),
        file,
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "max_position_embeddings": 512,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
        "pad_token_id": 0}"#;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn missing_files_are_named() {
        let dir = folder(&[("config.json", CONFIG), ("tokenizer.json", "{}")]);
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("model.safetensors is missing"), "{error}");
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = folder(&[
            ("config.json", "{not json"),
            ("tokenizer.json", "{}"),
            ("model.safetensors", ""),
        ]);
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("config.json is unusable"), "{error}");
    }

    #[test]
    fn max_tokens_comes_from_sentence_bert_config_and_architecture_is_checked() {
        let dir = folder(&[
            ("config.json", CONFIG),
            ("tokenizer.json", "{}"),
            ("model.safetensors", ""),
            ("sentence_bert_config.json", r#"{"max_seq_length": 256}"#),
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode_mean_tokens": true}"#,
            ),
        ]);
        let model = ModelDir::open(dir.path()).unwrap();
        assert_eq!((model.max_tokens, model.hidden_size), (256, 8));
        std::fs::write(
            dir.path().join("config.json"),
            CONFIG.replace("\"bert\"", "\"nomic_bert\""),
        )
        .unwrap();
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("nomic_bert"), "{error}");
        std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true}"#,
        )
        .unwrap();
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("mean pooling"), "{error}");
    }
}
