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
    #[error("model folder {dir}: model_type {model_type:?} is not supported (supported: bert and BERT-family models such as all-MiniLM, bge, e5; nomic_bert such as nomic-embed-text-v1.5)")]
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
    /// The architecture has no path in the requested precision.
    #[error("model folder {dir}: EMBED_PRECISION={precision} needs the crate's own forward pass, which does not cover this model ({reason}); it runs in f32 only: unset EMBED_PRECISION or set it to f32")]
    Precision {
        /// The folder.
        dir: PathBuf,
        /// Asked for.
        precision: Precision,
        /// What the own pass lacks.
        reason: &'static str,
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

/// `config_sentence_transformers.json`: the task prompts some models ship.
#[derive(Debug, Default, Deserialize)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: std::collections::HashMap<String, String>,
}

/// The field of config.json that decides which architecture reads the rest.
#[derive(Debug, Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

/// The fields of a BERT config.json that size the model.
#[derive(Debug, Deserialize)]
struct BertSizes {
    hidden_size: usize,
    max_position_embeddings: usize,
}

/// The fields of a NomicBert config.json that candle's module ignores but we must honour.
#[derive(Debug, Deserialize)]
struct NomicExtras {
    /// Positions the model was trained on; beyond them nomic applies dynamic NTK rotary
    /// scaling, which candle's module lacks, so inputs are truncated at this length.
    max_trained_positions: Option<usize>,
    /// Present in nomic-embed-text-v1.5 (null there): only used beyond the trained positions.
    rotary_scaling_factor: Option<f64>,
}

/// The network a model folder holds.
#[derive(Debug, Clone)]
pub enum Architecture {
    /// BERT and BERT-family models (all-MiniLM, bge, e5), candle's `bert` module.
    Bert(candle_transformers::models::bert::Config),
    /// NomicBert (nomic-embed-text-v1.5): rotary positions, SwiGLU, fused QKV; candle's
    /// `nomic_bert` module.
    NomicBert(candle_transformers::models::nomic_bert::Config),
}

impl Architecture {
    /// Multiply-add FLOPs (2 per multiply-add) of the matrix products in one forward pass
    /// over `rows` texts padded to `width` tokens: the projections, the feed-forward and
    /// attention's two products. Everything else is a rounding error at these sizes.
    #[allow(clippy::cast_precision_loss, reason = "an estimate")]
    pub fn forward_flops(&self, rows: usize, width: usize) -> f64 {
        let (hidden, inner, layers, ffn_matrices) = match self {
            Architecture::Bert(config) => (
                config.hidden_size,
                config.intermediate_size,
                config.num_hidden_layers,
                2.0,
            ),
            Architecture::NomicBert(config) => (config.n_embd, config.n_inner, config.n_layer, 3.0),
        };
        let (h, i, w) = (hidden as f64, inner as f64, width as f64);
        let per_token = 8.0 * h * h + 2.0 * ffn_matrices * h * i + 4.0 * w * h;
        per_token * (rows * width) as f64 * layers as f64
    }
}

/// Texts prepended to inputs by task: retrieval models trained with prefixes (nomic's
/// `search_document: ` / `search_query: `) embed worse without them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes {
    /// Before texts that are stored (LearnConcept, `sutra-embed --task document`).
    pub document: String,
    /// Before texts that are searched with (`--task query`).
    pub query: String,
}

/// What a text is embedded for, which decides its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    /// A text to be stored and found later.
    #[default]
    Document,
    /// A text to search with.
    Query,
}

impl Prefixes {
    /// The prefixes nomic-embed-text-v1.5 was trained with.
    pub fn nomic() -> Prefixes {
        Prefixes {
            document: "search_document: ".to_owned(),
            query: "search_query: ".to_owned(),
        }
    }

    /// The prefix for `task`.
    pub fn get(&self, task: Task) -> &str {
        match task {
            Task::Document => &self.document,
            Task::Query => &self.query,
        }
    }

    /// `text` with the prefix for `task` in front.
    pub fn apply(&self, task: Task, text: &str) -> String {
        let prefix = self.get(task);
        let mut out = String::with_capacity(prefix.len() + text.len());
        out.push_str(prefix);
        out.push_str(text);
        out
    }
}

/// A model folder, checked: every file exists and its configuration is readable.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The folder.
    pub dir: PathBuf,
    /// A short model name (the folder's name).
    pub name: String,
    /// config.json, parsed for the architecture it names.
    pub architecture: Architecture,
    /// Hidden size (the full embedding dimension).
    pub hidden_size: usize,
    /// Longest input in tokens, [CLS] and [SEP] included: sentence-transformers'
    /// `max_seq_length`, else `max_position_embeddings` (NomicBert: `max_trained_positions`),
    /// at most 512.
    pub max_tokens: usize,
    /// Task prefixes: `config_sentence_transformers.json`'s `prompts` (`document`/`query`)
    /// when present, else the model family's (nomic_bert: `search_document: `/
    /// `search_query: `), else none. Callers may override them.
    pub prefixes: Prefixes,
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
        let ModelType { model_type } = parse(dir, "config.json", &config_text)?;
        let model_type = model_type.unwrap_or_else(|| "bert".to_owned());
        let (architecture, hidden_size, mut max_tokens, mut prefixes) = match model_type.as_str() {
            "bert" => {
                let sizes: BertSizes = parse(dir, "config.json", &config_text)?;
                let bert = parse(dir, "config.json", &config_text)?;
                (
                    Architecture::Bert(bert),
                    sizes.hidden_size,
                    sizes.max_position_embeddings,
                    Prefixes::default(),
                )
            }
            "nomic_bert" => open_nomic(dir, &config_text)?,
            _ => {
                return Err(EmbedError::Unsupported {
                    dir: dir.to_path_buf(),
                    model_type,
                })
            }
        };
        if dir.join("config_sentence_transformers.json").is_file() {
            let text = read(dir, "config_sentence_transformers.json")?;
            let config: SentenceTransformersConfig =
                parse(dir, "config_sentence_transformers.json", &text)?;
            if let Some(document) = config.prompts.get("document") {
                prefixes.document.clone_from(document);
            }
            if let Some(query) = config.prompts.get("query") {
                prefixes.query.clone_from(query);
            }
        }
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
            architecture,
            hidden_size,
            max_tokens: max_tokens.clamp(2, MAX_TOKENS),
            prefixes,
        })
    }
}

/// config.json of a `nomic_bert` model: the architecture, hidden size, token limit and the
/// family's task prefixes.
fn open_nomic(
    dir: &Path,
    config_text: &str,
) -> Result<(Architecture, usize, usize, Prefixes), EmbedError> {
    let config: candle_transformers::models::nomic_bert::Config =
        parse(dir, "config.json", config_text)?;
    let extras: NomicExtras = parse(dir, "config.json", config_text)?;
    if config.n_head == 0 || !config.n_embd.is_multiple_of(config.n_head) {
        return Err(bad_config(
            dir,
            format!(
                "n_embd {} is not a multiple of n_head {}",
                config.n_embd, config.n_head
            ),
        ));
    }
    if config.activation_function != "swiglu" {
        return Err(bad_config(
            dir,
            format!(
                "activation_function {:?}: only swiglu is supported for nomic_bert",
                config.activation_function
            ),
        ));
    }
    #[allow(clippy::float_cmp, reason = "an exact configuration value")]
    if config.rotary_emb_fraction != 1.0 {
        return Err(bad_config(
            dir,
            format!(
                "rotary_emb_fraction {}: only 1.0 (rotary on the whole head) is supported",
                config.rotary_emb_fraction
            ),
        ));
    }
    let trained = extras.max_trained_positions.unwrap_or(config.n_positions);
    if let Some(factor) = extras.rotary_scaling_factor {
        tracing::debug!(
            factor,
            trained,
            "rotary_scaling_factor is ignored: inputs are truncated at the trained positions"
        );
    }
    let hidden = config.n_embd;
    let positions = trained.min(config.n_positions);
    Ok((
        Architecture::NomicBert(config),
        hidden,
        positions,
        Prefixes::nomic(),
    ))
}

fn bad_config(dir: &Path, reason: String) -> EmbedError {
    EmbedError::BadFile {
        dir: dir.to_path_buf(),
        file: "config.json",
        reason,
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

/// The arithmetic of the model's dense layers (`EMBED_PRECISION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout: the model's own function (cosine ≥ 0.999 to sentence-transformers).
    #[default]
    F32,
    /// Dense layers in INT8 (weights per output column, activations per token, exact integer
    /// sums); attention, softmax, layer norms and activations in f32.
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> Result<Precision, String> {
        match text.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "int8" | "i8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision {other:?} (f32 or int8)")),
        }
    }
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
        assert_eq!(model.prefixes, Prefixes::default());
        std::fs::write(
            dir.path().join("config.json"),
            CONFIG.replace("\"bert\"", "\"roberta\""),
        )
        .unwrap();
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("roberta"), "{error}");
        std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true}"#,
        )
        .unwrap();
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("mean pooling"), "{error}");
    }

    const NOMIC: &str = r#"{"model_type": "nomic_bert", "vocab_size": 10, "n_embd": 8,
        "n_head": 2, "n_layer": 1, "n_inner": 16, "n_positions": 8192,
        "max_trained_positions": 2048, "rotary_scaling_factor": null,
        "activation_function": "swiglu", "rotary_emb_fraction": 1.0}"#;

    #[test]
    fn nomic_bert_is_truncated_at_trained_positions_and_gets_task_prefixes() {
        let dir = folder(&[
            ("config.json", NOMIC),
            ("tokenizer.json", "{}"),
            ("model.safetensors", ""),
        ]);
        let model = ModelDir::open(dir.path()).unwrap();
        assert!(matches!(model.architecture, Architecture::NomicBert(_)));
        assert_eq!((model.max_tokens, model.hidden_size), (MAX_TOKENS, 8));
        assert_eq!(model.prefixes, Prefixes::nomic());
        assert_eq!(
            model.prefixes.apply(Task::Query, "cats"),
            "search_query: cats"
        );
        std::fs::write(
            dir.path().join("config_sentence_transformers.json"),
            r#"{"prompts": {"query": "q: ", "document": "d: "}}"#,
        )
        .unwrap();
        let model = ModelDir::open(dir.path()).unwrap();
        assert_eq!(model.prefixes.get(Task::Document), "d: ");
        std::fs::write(
            dir.path().join("config.json"),
            NOMIC.replace("\"swiglu\"", "\"gelu\""),
        )
        .unwrap();
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("only swiglu"), "{error}");
        std::fs::write(
            dir.path().join("config.json"),
            NOMIC.replace(
                "\"rotary_emb_fraction\": 1.0",
                "\"rotary_emb_fraction\": 0.5",
            ),
        )
        .unwrap();
        let error = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("rotary_emb_fraction"), "{error}");
    }
}
