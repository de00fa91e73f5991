//! Text in, vectors out: tokenize (truncating at the model's limit), group texts of similar
//! length, run the BERT forward pass in f32 on the CPU, mean-pool over the attention mask,
//! then either L2-normalise the full vector (what sentence-transformers returns) or apply the
//! Matryoshka recipe (layer_norm over the full vector, keep the first `d` values, L2).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use candle_transformers::models::nomic_bert::NomicBertModel;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::bert::{Bert, LoadError as BertLoadError};
use crate::model::{Architecture, EmbedError, ModelDir, Precision, Prefixes};

/// Most texts per forward pass. Texts are sorted by length first, so a pass of short texts
/// never pays for the padding of a long one.
pub const SUB_BATCH: usize = 64;

/// Most padded tokens (texts × longest text) per forward pass: bounds the activations'
/// memory and keeps long texts in smaller passes, where the CPU's caches still hold them.
pub const SUB_BATCH_TOKENS: usize = 2048;

/// `layer_norm` epsilon of the Matryoshka recipe.
const LAYER_NORM_EPS: f32 = 1e-5;

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        })
    }
}

/// Which vector to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Mean pooling, L2-normalised, all `hidden_size` values.
    Full,
    /// Mean pooling, layer_norm (no affine, eps 1e-5), the first `d` values, L2-normalised.
    Matryoshka(usize),
}

/// Mean-pooled output for one text, before any normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Pooled {
    /// Attention-masked mean of the last hidden states.
    pub mean: Vec<f32>,
    /// Tokens the model saw, [CLS] and [SEP] included.
    pub tokens: usize,
    /// Whether the text was cut at the model's limit.
    pub truncated: bool,
}

/// One embedded text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// The vector.
    pub vector: Vec<f32>,
    /// Tokens the model saw.
    pub tokens: usize,
    /// Whether the text was cut at the model's limit.
    pub truncated: bool,
}

impl Pooled {
    /// Applies `output` to the pooled vector.
    pub fn finish(&self, output: Output) -> Result<Embedded, EmbedError> {
        let vector = match output {
            Output::Full => l2_normalised(self.mean.clone()),
            Output::Matryoshka(dimension) => {
                if dimension > self.mean.len() || dimension == 0 {
                    return Err(EmbedError::Dimension {
                        requested: dimension,
                        hidden: self.mean.len(),
                    });
                }
                let mut normed = layer_norm(&self.mean);
                normed.truncate(dimension);
                l2_normalised(normed)
            }
        };
        Ok(Embedded {
            vector,
            tokens: self.tokens,
            truncated: self.truncated,
        })
    }
}

/// The network: this crate's own pass, or candle's for a configuration it does not cover.
enum Encoder {
    /// BERT or NomicBert on this crate's own CPU forward pass (packed texts, fused steps).
    Own(Box<Bert>),
    /// Through candle, over padded batches.
    Candle(Box<CandleModel>),
}

/// A candle model, by architecture.
enum CandleModel {
    Bert(BertModel),
    NomicBert(NomicBertModel),
}

impl CandleModel {
    /// Last hidden states, `(rows, width, hidden)`.
    fn forward(
        &self,
        ids: &Tensor,
        types: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor, candle_core::Error> {
        match self {
            CandleModel::Bert(model) => model.forward(ids, types, Some(mask)),
            CandleModel::NomicBert(model) => model.forward(ids, Some(types), Some(mask)),
        }
    }
}

/// The loaded model and tokenizer.
pub struct Pipeline {
    model: Encoder,
    tokenizer: Tokenizer,
    info: ModelDir,
    device: Device,
    pad_id: u32,
    precision: Precision,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Loads the model folder (see [`ModelDir::open`]) in f32 on the CPU.
    pub fn load(dir: &Path) -> Result<Pipeline, EmbedError> {
        Pipeline::load_with(dir, Precision::F32)
    }

    /// Loads the model folder to run in `precision`. INT8 is refused, with the reason, for an
    /// architecture that has no INT8 path (NomicBert, BERT variants the own pass lacks).
    pub fn load_with(dir: &Path, precision: Precision) -> Result<Pipeline, EmbedError> {
        let info = ModelDir::open(dir)?;
        let bad = |file: &'static str, reason: String| EmbedError::BadFile {
            dir: dir.to_path_buf(),
            file,
            reason,
        };
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|error| bad("tokenizer.json", error.to_string()))?;
        // The default model's tokenizer.json pads every text to 128 tokens and truncates at
        // 128: truncate at the model's real limit instead, and pad per sub-batch ourselves.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: info.max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|error| bad("tokenizer.json", error.to_string()))?;
        let pad_id = tokenizer.get_padding().map_or(0, |padding| padding.pad_id);
        tokenizer.with_padding(None);
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|error| bad("model.safetensors", error.to_string()))?;
        let device = Device::Cpu;
        let own = match &info.architecture {
            Architecture::Bert(config) => Bert::load(&weights, config, precision),
            Architecture::NomicBert(config) => Bert::load_nomic(&weights, config, precision),
        };
        match own {
            Ok(model) => {
                return Ok(Pipeline {
                    model: Encoder::Own(Box::new(model)),
                    tokenizer,
                    info,
                    device,
                    pad_id,
                    precision,
                })
            }
            Err(BertLoadError::Unsupported(what)) => {
                if precision != Precision::F32 {
                    return Err(EmbedError::Precision {
                        dir: dir.to_path_buf(),
                        precision,
                        reason: what,
                    });
                }
                tracing::info!("model {}: {what}; running it through candle", info.name);
            }
            Err(error) => return Err(bad("model.safetensors", error.to_string())),
        }
        // f32: candle's BERT gives NaN in f16/bf16 with an attention mask, and f32 is also
        // the fastest on these CPUs.
        let builder = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|error| bad("model.safetensors", error.to_string()))?;
        let model = match &info.architecture {
            Architecture::Bert(config) => BertModel::load(builder, config).map(CandleModel::Bert),
            Architecture::NomicBert(config) => {
                NomicBertModel::load(builder, config).map(CandleModel::NomicBert)
            }
        }
        .map_err(|error| bad("model.safetensors", error.to_string()))?;
        Ok(Pipeline {
            model: Encoder::Candle(Box::new(model)),
            tokenizer,
            info,
            device,
            pad_id,
            precision,
        })
    }

    /// The precision the model runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The model folder's facts.
    pub fn info(&self) -> &ModelDir {
        &self.info
    }

    /// Replaces the task prefixes the folder implied (configuration overrides them).
    pub fn set_prefixes(&mut self, prefixes: Prefixes) {
        self.info.prefixes = prefixes;
    }

    /// Token counts (with [CLS]/[SEP], after truncation) without running the model.
    pub fn count_tokens(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        Ok(self.encode(texts)?.iter().map(Encoding::len).collect())
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Encoding>, EmbedError> {
        self.tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|error| EmbedError::Tokenizer(error.to_string()))
    }

    /// Embeds `texts` with `output`, in order.
    pub fn embed(&self, texts: &[&str], output: Output) -> Result<Vec<Embedded>, EmbedError> {
        self.pool(texts)?
            .iter()
            .map(|pooled| pooled.finish(output))
            .collect()
    }

    /// Mean-pooled vectors of `texts`, in order. Texts are sorted by token count and run in
    /// sub-batches of at most [`SUB_BATCH`] texts and [`SUB_BATCH_TOKENS`] padded tokens,
    /// each padded only to its own longest text.
    pub fn pool(&self, texts: &[&str]) -> Result<Vec<Pooled>, EmbedError> {
        let encodings = self.encode(texts)?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&index| encodings[index].len());
        let mut pooled: Vec<Option<Pooled>> = vec![None; encodings.len()];
        for chunk in sub_batches(&order, |index| encodings[index].len()) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&index| &encodings[index]).collect();
            for (&index, result) in chunk.iter().zip(self.forward(&batch)?) {
                pooled[index] = Some(result);
            }
        }
        Ok(pooled.into_iter().flatten().collect())
    }

    fn forward(&self, batch: &[&Encoding]) -> Result<Vec<Pooled>, EmbedError> {
        let model = match &self.model {
            Encoder::Own(model) => model,
            Encoder::Candle(model) => return self.forward_padded(model, batch),
        };
        let texts: Vec<(&[u32], &[u32])> = batch
            .iter()
            .map(|encoding| (encoding.get_ids(), encoding.get_type_ids()))
            .collect();
        let means = model.pooled(&texts).map_err(EmbedError::Run)?;
        Ok(batch
            .iter()
            .zip(means)
            .map(|(encoding, mean)| Pooled {
                mean,
                tokens: encoding.len(),
                truncated: !encoding.get_overflowing().is_empty(),
            })
            .collect())
    }

    /// A candle model over the batch padded to its longest text, mean-pooled over the mask.
    fn forward_padded(
        &self,
        model: &CandleModel,
        batch: &[&Encoding],
    ) -> Result<Vec<Pooled>, EmbedError> {
        let rows = batch.len();
        let width = batch
            .iter()
            .map(|encoding| encoding.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = vec![self.pad_id; rows * width];
        let mut types = vec![0_u32; rows * width];
        let mut mask = vec![0_u32; rows * width];
        for (row, encoding) in batch.iter().enumerate() {
            let start = row * width;
            let len = encoding.len();
            ids[start..start + len].copy_from_slice(encoding.get_ids());
            types[start..start + len].copy_from_slice(encoding.get_type_ids());
            mask[start..start + len].copy_from_slice(encoding.get_attention_mask());
        }
        let tensor = |values: Vec<u32>| Tensor::from_vec(values, (rows, width), &self.device);
        let mask_tensor = tensor(mask.clone())?;
        let hidden = model
            .forward(&tensor(ids)?, &tensor(types)?, &mask_tensor)?
            .to_vec3::<f32>()?;
        Ok(batch
            .iter()
            .zip(hidden)
            .enumerate()
            .map(|(row, (encoding, states))| {
                let row_mask = &mask[row * width..(row + 1) * width];
                Pooled {
                    mean: masked_mean(&states, row_mask),
                    tokens: row_mask.iter().filter(|&&bit| bit != 0).count(),
                    truncated: !encoding.get_overflowing().is_empty(),
                }
            })
            .collect())
    }
}

/// Splits `sorted` (indexes in ascending length order) into runs of at most [`SUB_BATCH`]
/// texts whose padded size (texts × longest) stays within [`SUB_BATCH_TOKENS`]; a text longer
/// than the budget runs alone.
fn sub_batches(sorted: &[usize], length: impl Fn(usize) -> usize) -> Vec<&[usize]> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let mut end = start + 1;
        while end < sorted.len()
            && end - start < SUB_BATCH
            && (end - start + 1) * length(sorted[end]) <= SUB_BATCH_TOKENS
        {
            end += 1;
        }
        batches.push(&sorted[start..end]);
        start = end;
    }
    batches
}

/// Mean of the rows of `states` whose mask bit is set.
fn masked_mean(states: &[Vec<f32>], mask: &[u32]) -> Vec<f32> {
    let hidden = states.first().map_or(0, Vec::len);
    let mut sum = vec![0.0_f32; hidden];
    let mut count = 0.0_f32;
    for (state, &bit) in states.iter().zip(mask) {
        if bit != 0 {
            for (total, value) in sum.iter_mut().zip(state) {
                *total += value;
            }
            count += 1.0;
        }
    }
    let count = count.max(1e-9);
    for value in &mut sum {
        *value /= count;
    }
    sum
}

/// `layer_norm` without affine parameters.
#[allow(clippy::cast_precision_loss, reason = "hidden sizes are small")]
fn layer_norm(values: &[f32]) -> Vec<f32> {
    let n = values.len().max(1) as f32;
    let mean = values.iter().sum::<f32>() / n;
    let variance = values
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f32>()
        / n;
    let scale = 1.0 / (variance + LAYER_NORM_EPS).sqrt();
    values.iter().map(|value| (value - mean) * scale).collect()
}

fn l2_normalised(mut values: Vec<f32>) -> Vec<f32> {
    let norm = values
        .iter()
        .map(|value| value * value)
        .sum::<f32>()
        .sqrt()
        .max(1e-12);
    for value in &mut values {
        *value /= norm;
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_batches_respect_the_text_and_token_budgets() {
        let lengths = [10_usize; 100];
        let order: Vec<usize> = (0..100).collect();
        let sizes: Vec<usize> = sub_batches(&order, |index| lengths[index])
            .iter()
            .map(|batch| batch.len())
            .collect();
        assert_eq!(sizes, vec![SUB_BATCH, 100 - SUB_BATCH]);
        let lengths = [2, 100, 200, 600, 3000];
        let order: Vec<usize> = (0..lengths.len()).collect();
        let batches = sub_batches(&order, |index| lengths[index]);
        assert_eq!(batches, vec![&[0, 1, 2][..], &[3], &[4]]);
        assert!(sub_batches(&[], |_| 1).is_empty());
    }

    #[test]
    fn masked_mean_ignores_padding() {
        let states = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![100.0, 100.0]];
        assert_eq!(masked_mean(&states, &[1, 1, 0]), vec![2.0, 3.0]);
    }

    #[test]
    fn matryoshka_is_layer_norm_truncate_l2() {
        let pooled = Pooled {
            mean: vec![1.0, 2.0, 3.0, 4.0],
            tokens: 3,
            truncated: false,
        };
        let out = pooled.finish(Output::Matryoshka(2)).unwrap().vector;
        // layer_norm: mean 2.5, var 1.25 -> [-1.342, -0.447, ...]; first two, L2-normalised.
        let expected = l2_normalised(vec![-1.5, -0.5]);
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{out:?} vs {expected:?}");
        }
        let full = pooled.finish(Output::Full).unwrap().vector;
        let norm: f32 = full.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-6);
        assert!(pooled.finish(Output::Matryoshka(5)).is_err());
        assert!(pooled.finish(Output::Matryoshka(0)).is_err());
    }
}
