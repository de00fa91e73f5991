//! BERT's forward pass on the CPU, written for throughput: the texts of a batch are packed
//! end to end (no padding, so no attention mask and no work on pad tokens), the three
//! attention projections are one product, biases and residuals are added by the products
//! themselves, and the element-wise steps (GELU with a vectorised erf, layer norm, softmax)
//! are vectorised. Several texts are shared out between the cores in groups of whole texts,
//! each group's pass on one core; a single text is split into bands of tokens, one per core,
//! that meet only at each attention (a text of a few tokens splits each step instead:
//! products by panels, attention by head, element-wise steps by rows).
//!
//! It computes the same function as candle's `bert` module (post-norm BERT with absolute
//! positions), checked by the golden tests and by a reference test on random weights.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
use candle_transformers::models::nomic_bert::Config as NomicConfig;
use rayon::prelude::*;

use crate::kernels::{self, Accumulate, Packed, PackedInt8, QuantizedRows, Rhs, Shape};
use crate::model::Precision;

/// Rows per task of the element-wise steps: enough work to be worth a hand-off.
const ROWS_PER_TASK: usize = 16;

/// Texts up to this many tokens attend without gemm (`kernels::attention_direct`).
const DIRECT_ATTENTION_TOKENS: usize = 32;

/// Tokens each thread takes at least before a pass splits its tokens into bands, one per
/// thread, that meet only at each attention (`Bert::pass`). Below it f32 splits every step
/// across the threads (at a few tokens each core then streams half the weights, not all of
/// them: a 6-token text 750 against 560 embeddings/s on two Zen 4 cores), and INT8 runs on
/// one thread (its products take a few microseconds, less than the hand-offs of a split).
const BAND_TOKENS: usize = 6;

/// Why the weights cannot be used by this encoder.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A tensor is missing or has another shape.
    #[error("{0}")]
    Tensor(String),
    /// The configuration asks for something this encoder does not compute.
    #[error("unsupported configuration: {0}")]
    Unsupported(&'static str),
}

/// A dense layer, weight stored input-major (`inputs × outputs`, row-major) until packed.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    outputs: usize,
}

/// A dense layer ready to run.
struct Dense {
    weight: Weights,
    bias: Vec<f32>,
}

/// A dense layer's weights in the precision it runs in.
enum Weights {
    F32(Packed),
    Int8(PackedInt8),
}

impl Weights {
    fn outputs(&self) -> usize {
        match self {
            Weights::F32(packed) => packed.outputs(),
            Weights::Int8(packed) => packed.outputs(),
        }
    }
}

impl Dense {
    fn new(linear: Linear, precision: Precision) -> Dense {
        let inputs = linear.weight.len() / linear.outputs.max(1);
        let weight = match precision {
            Precision::F32 => Weights::F32(Packed::new(&linear.weight, inputs, linear.outputs)),
            Precision::Int8 => {
                Weights::Int8(PackedInt8::new(&linear.weight, inputs, linear.outputs))
            }
        };
        Dense {
            weight,
            bias: linear.bias,
        }
    }
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value side by side: `hidden × 3·hidden`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    mlp: Mlp,
    output_norm: Norm,
}

/// The feed-forward block.
enum Mlp {
    /// BERT: `down(act(up(x)))`.
    Plain { up: Dense, down: Dense },
    /// NomicBert's SwiGLU: `down(value(x) · silu(gate(x)))`, value and gate as one product
    /// with their outputs side by side.
    SwiGlu { value_gate: Dense, down: Dense },
}

impl Mlp {
    /// Width of the hidden activation.
    fn inner(&self) -> usize {
        match self {
            Mlp::Plain { up, .. } => up.weight.outputs(),
            Mlp::SwiGlu { value_gate, .. } => value_gate.weight.outputs(),
        }
    }
}

/// Where the layer norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// After each residual sum (BERT, nomic-embed-text).
    Post,
    /// Before each block, on its input (`prenorm: true`).
    Pre,
}

/// Rotary position tables (GPT-NeoX layout: each head's halves rotate as pairs).
struct Rotary {
    /// Pairs per head (head size / 2).
    half: usize,
    /// cos and sin of position · frequency, `positions × half` each.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rotary {
    /// Tables for heads of `head` values, `positions` positions, frequencies
    /// `base^(-2i / head)`; computed in f32 as candle's `nomic_bert` does.
    fn new(head: usize, positions: usize, base: f32) -> Rotary {
        let half = head / 2;
        #[allow(
            clippy::cast_precision_loss,
            reason = "head sizes and positions are small"
        )]
        let frequencies: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf(2.0 * i as f32 / head as f32))
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for position in 0..positions {
            for frequency in &frequencies {
                #[allow(clippy::cast_precision_loss, reason = "positions are small")]
                let angle = position as f32 * frequency;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Rotary { half, cos, sin }
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

/// A loaded BERT-family encoder: BERT, or NomicBert (rotary positions, SwiGLU, optional
/// biases).
pub struct Bert {
    word: Vec<f32>,
    /// Absolute position embeddings (BERT); NomicBert rotates instead.
    position: Option<Vec<f32>>,
    rotary: Option<Rotary>,
    placement: Placement,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    activation: Activation,
    eps: f32,
    vocab: usize,
    positions: usize,
    token_types: usize,
    precision: Precision,
    /// Buffers kept between passes, one set per group of texts run at once.
    scratch: Mutex<Vec<Scratch>>,
}

/// The tensors of a safetensors file, by name, with the prefix the checkpoint uses.
struct Tensors {
    map: HashMap<String, Tensor>,
    prefix: String,
}

impl Tensors {
    /// The tensors of `safetensors` under the first of `prefixes` (then `<model_type>.`) that
    /// holds the word embeddings: checkpoints name the same tensors with or without their
    /// model's name in front.
    fn open(
        safetensors: &[u8],
        prefixes: &[&str],
        model_type: Option<&str>,
    ) -> Result<Tensors, LoadError> {
        let map = candle_core::safetensors::load_buffer(safetensors, &Device::Cpu)
            .map_err(|error| LoadError::Tensor(error.to_string()))?;
        let mut candidates: Vec<String> = prefixes.iter().map(|&p| p.to_owned()).collect();
        if let Some(model_type) = model_type {
            candidates.push(format!("{model_type}."));
        }
        let prefix = candidates
            .into_iter()
            .find(|prefix| map.contains_key(&format!("{prefix}embeddings.word_embeddings.weight")))
            .ok_or_else(|| {
                LoadError::Tensor("tensor embeddings.word_embeddings.weight is missing".into())
            })?;
        Ok(Tensors { map, prefix })
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let full = format!("{}{name}", self.prefix);
        let tensor = self
            .map
            .get(&full)
            .ok_or_else(|| LoadError::Tensor(format!("tensor {full} is missing")))?;
        if tensor.dims() != shape {
            return Err(LoadError::Tensor(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                tensor.dims()
            )));
        }
        tensor
            .to_dtype(DType::F32)
            .and_then(|tensor| tensor.flatten_all())
            .and_then(|tensor| tensor.to_vec1::<f32>())
            .map_err(|error| LoadError::Tensor(format!("tensor {full}: {error}")))
    }

    /// A torch `Linear` (`weight` outputs × inputs, `bias` outputs), stored input-major.
    fn linear(&self, name: &str, inputs: usize, outputs: usize) -> Result<Linear, LoadError> {
        let weight = self.get(&format!("{name}.weight"), &[outputs, inputs])?;
        Ok(Linear {
            weight: transpose(&weight, outputs, inputs),
            bias: self.get(&format!("{name}.bias"), &[outputs])?,
            outputs,
        })
    }

    /// A `Linear` whose bias the configuration may leave out (zeros then).
    fn linear_with(
        &self,
        name: &str,
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Linear, LoadError> {
        if bias {
            return self.linear(name, inputs, outputs);
        }
        let weight = self.get(&format!("{name}.weight"), &[outputs, inputs])?;
        Ok(Linear {
            weight: transpose(&weight, outputs, inputs),
            bias: vec![0.0; outputs],
            outputs,
        })
    }

    fn norm(&self, name: &str, width: usize) -> Result<Norm, LoadError> {
        Ok(Norm {
            weight: self.get(&format!("{name}.weight"), &[width])?,
            bias: self.get(&format!("{name}.bias"), &[width])?,
        })
    }
}

/// `rows × cols` row-major into `cols × rows` row-major.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for (row, chunk) in values.chunks_exact(cols).enumerate() {
        for (col, &value) in chunk.iter().enumerate() {
            out[col * rows + row] = value;
        }
    }
    out
}

impl Bert {
    /// Loads the weights of a safetensors file for `config`.
    pub fn load(
        safetensors: &[u8],
        config: &Config,
        precision: Precision,
    ) -> Result<Bert, LoadError> {
        if config.position_embedding_type != PositionEmbeddingType::Absolute {
            return Err(LoadError::Unsupported(
                "position_embedding_type other than absolute",
            ));
        }
        let (hidden, heads, inner) = (
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
        );
        if heads == 0 || hidden % heads != 0 {
            return Err(LoadError::Unsupported(
                "hidden_size not a multiple of the heads",
            ));
        }
        let tensors = Tensors::open(safetensors, &["", "bert."], config.model_type.as_deref())?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let p = format!("encoder.layer.{index}");
                let query = tensors.linear(&format!("{p}.attention.self.query"), hidden, hidden)?;
                let key = tensors.linear(&format!("{p}.attention.self.key"), hidden, hidden)?;
                let value = tensors.linear(&format!("{p}.attention.self.value"), hidden, hidden)?;
                let dense = |linear| Dense::new(linear, precision);
                Ok(Layer {
                    qkv: dense(concatenate_outputs(&[query, key, value], hidden)),
                    attention_out: dense(tensors.linear(
                        &format!("{p}.attention.output.dense"),
                        hidden,
                        hidden,
                    )?),
                    attention_norm: tensors
                        .norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                    mlp: Mlp::Plain {
                        up: dense(tensors.linear(
                            &format!("{p}.intermediate.dense"),
                            hidden,
                            inner,
                        )?),
                        down: dense(tensors.linear(&format!("{p}.output.dense"), inner, hidden)?),
                    },
                    output_norm: tensors.norm(&format!("{p}.output.LayerNorm"), hidden)?,
                })
            })
            .collect::<Result<Vec<Layer>, LoadError>>()?;
        #[allow(clippy::cast_possible_truncation, reason = "an epsilon")]
        let eps = config.layer_norm_eps as f32;
        Ok(Bert {
            word: tensors.get(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, hidden],
            )?,
            position: Some(tensors.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, hidden],
            )?),
            rotary: None,
            placement: Placement::Post,
            token_type: tensors.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, hidden],
            )?,
            embedding_norm: tensors.norm("embeddings.LayerNorm", hidden)?,
            layers,
            hidden,
            heads,
            activation: match config.hidden_act {
                HiddenAct::Gelu => Activation::GeluErf,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
            eps,
            vocab: config.vocab_size,
            positions: config.max_position_embeddings,
            token_types: config.type_vocab_size,
            precision,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Loads NomicBert weights (nomic-embed-text: rotary positions, fused QKV, SwiGLU, biases
    /// as the configuration says) for `config`.
    pub fn load_nomic(
        safetensors: &[u8],
        config: &NomicConfig,
        precision: Precision,
    ) -> Result<Bert, LoadError> {
        if config.activation_function != "swiglu" {
            return Err(LoadError::Unsupported(
                "activation_function other than swiglu",
            ));
        }
        if config.rotary_emb_interleaved {
            return Err(LoadError::Unsupported("interleaved rotary embeddings"));
        }
        if (config.rotary_emb_fraction - 1.0).abs() > f64::EPSILON {
            return Err(LoadError::Unsupported("rotary_emb_fraction other than 1"));
        }
        let (hidden, heads) = (config.n_embd, config.n_head);
        if heads == 0 || hidden % heads != 0 || (hidden / heads) % 2 != 0 {
            return Err(LoadError::Unsupported(
                "hidden size not an even head size times the heads",
            ));
        }
        let tensors = Tensors::open(safetensors, &[""], config.model_type.as_deref())?;
        let layers = (0..config.n_layer)
            .map(|index| nomic_layer(&tensors, index, config, precision))
            .collect::<Result<Vec<Layer>, LoadError>>()?;
        let (token_type, token_types) = if config.type_vocab_size > 0 {
            (
                tensors.get(
                    "embeddings.token_type_embeddings.weight",
                    &[config.type_vocab_size, hidden],
                )?,
                config.type_vocab_size,
            )
        } else {
            (vec![0.0; hidden], 1)
        };
        #[allow(clippy::cast_possible_truncation, reason = "an epsilon and a base")]
        let (eps, base) = (
            config.layer_norm_epsilon as f32,
            config.rotary_emb_base as f32,
        );
        Ok(Bert {
            word: tensors.get(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, hidden],
            )?,
            position: None,
            rotary: Some(Rotary::new(hidden / heads, config.n_positions, base)),
            placement: if config.prenorm {
                Placement::Pre
            } else {
                Placement::Post
            },
            token_type,
            embedding_norm: tensors.norm("emb_ln", hidden)?,
            layers,
            hidden,
            heads,
            activation: Activation::GeluErf,
            eps,
            vocab: config.vocab_size,
            positions: config.n_positions,
            token_types,
            precision,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// The attention-masked mean of the last hidden states of each text (`ids` and token
    /// types per text), in order. An empty text gets zeros.
    ///
    /// Several texts are split into groups of whole texts, one per core, each run through the
    /// whole model on its own core (or its share of the cores, when there are more cores than
    /// texts): at a few dozen tokens a step takes a few microseconds, and handing the halves of
    /// each step between the cores (some 60 times a pass) cost more than the halves saved
    /// (a short batch of 8 on two cores: 1,500 → 2,200 embeddings/s in INT8, 640 → 760 in
    /// f32). One text, or texts too uneven to share out, run as one pass split into bands of
    /// tokens (`Bert::pass`).
    pub fn pooled(&self, texts: &[(&[u32], &[u32])]) -> Result<Vec<Vec<f32>>, String> {
        let mut lengths = Vec::with_capacity(texts.len());
        for (ids, types) in texts {
            if ids.len() != types.len() {
                return Err("token ids and token types differ in length".into());
            }
            if ids.len() > self.positions {
                return Err(format!(
                    "{} tokens is more than the model's {} positions",
                    ids.len(),
                    self.positions
                ));
            }
            lengths.push(ids.len());
        }
        let threads = rayon::current_num_threads();
        let groups = text_groups(&lengths, threads);
        // One pass at a time uses the buffers (the batcher's thread); another caller gets
        // fresh ones rather than waiting.
        let mut reused = self.scratch.try_lock().ok();
        let mut fresh = Vec::new();
        let scratches = reused.as_deref_mut().unwrap_or(&mut fresh);
        if scratches.len() < groups.len() {
            scratches.resize_with(groups.len(), Scratch::default);
        }
        let share = (threads / groups.len()).max(1);
        // INT8 too short for bands runs on one thread (`BAND_TOKENS`).
        let threads_for = |group: &std::ops::Range<usize>| {
            let tokens: usize = lengths[group.clone()].iter().sum();
            if self.precision == Precision::Int8 && bands(tokens, share) == 1 {
                1
            } else {
                share
            }
        };
        if let [whole] = groups.as_slice() {
            return self.pass(&texts[whole.clone()], &mut scratches[0], threads_for(whole));
        }
        let parts: Vec<Result<Vec<Vec<f32>>, String>> = groups
            .par_iter()
            .zip(scratches.par_iter_mut())
            .with_max_len(1)
            .map(|(group, scratch)| self.pass(&texts[group.clone()], scratch, threads_for(group)))
            .collect();
        let mut pooled = Vec::with_capacity(texts.len());
        for part in parts {
            pooled.extend(part?);
        }
        Ok(pooled)
    }

    /// [`Bert::pooled`] of `texts` (checked) in one pass over them all on `threads` threads.
    ///
    /// With enough tokens for each thread its own band of them (`bands`), every step from one
    /// attention to the next is the band's own (products, layer norms and the feed-forward
    /// are row by row): the cores meet once a layer, when each needs every token's keys and
    /// values, rather than at every step. The next layer's query, key and value go to the
    /// other half of `qkv` while the other bands still read this layer's. Fewer tokens split
    /// every step across the threads instead (one band, `threads` for each step).
    fn pass(
        &self,
        texts: &[(&[u32], &[u32])],
        scratch: &mut Scratch,
        threads: usize,
    ) -> Result<Vec<Vec<f32>>, String> {
        let hidden = self.hidden;
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        for (ids, _) in texts {
            offsets.push(offsets.last().copied().unwrap_or(0) + ids.len());
        }
        let total = offsets.last().copied().unwrap_or(0);
        let inner = self.layers.first().map_or(0, |layer| layer.mlp.inner());
        let count = bands(total, threads);
        let share = (threads / count).max(1);
        scratch.fit(total, count, hidden, inner);
        let Scratch {
            states,
            qkv: [even, odd],
            bands: work,
        } = scratch;
        let states = &mut states[..total * hidden];
        self.embed_tokens(texts, states, threads)?;
        let ranges: Vec<Range<usize>> = (0..count)
            .map(|band| total * band / count..total * (band + 1) / count)
            .collect();
        let (even, odd) = (
            &mut even[..total * 3 * hidden],
            &mut odd[..total * 3 * hidden],
        );
        // Layer l attends over the query, key and value in `even` (l even) or `odd`, and
        // projects layer l + 1's into the other.
        for step in 0..=self.layers.len() {
            let (current, next) = if step % 2 == 0 {
                (&*odd, &mut *even)
            } else {
                (&*even, &mut *odd)
            };
            let attend = step.checked_sub(1).and_then(|l| self.layers.get(l));
            let project = self.layers.get(step);
            for_bands(
                &ranges,
                hidden,
                states,
                next,
                work,
                |rows, states, next, work| {
                    if let Some(layer) = attend {
                        self.attend_and_feed(
                            layer,
                            current,
                            &offsets,
                            rows.clone(),
                            states,
                            work,
                            share,
                        );
                    }
                    if let Some(layer) = project {
                        self.project(layer, &offsets, rows, states, next, work, share);
                    }
                },
            );
        }
        Ok(offsets
            .windows(2)
            .map(|window| {
                let rows = &states[window[0] * hidden..window[1] * hidden];
                let mut mean = vec![0.0_f32; hidden];
                for row in rows.chunks_exact(hidden) {
                    kernels::add(&mut mean, row);
                }
                #[allow(clippy::cast_precision_loss, reason = "token counts are small")]
                let inverse = 1.0 / (window[1] - window[0]).max(1) as f32;
                for value in &mut mean {
                    *value *= inverse;
                }
                mean
            })
            .collect())
    }

    /// Word + position + token type embeddings, layer-normed, into `states`.
    fn embed_tokens(
        &self,
        texts: &[(&[u32], &[u32])],
        states: &mut [f32],
        threads: usize,
    ) -> Result<(), String> {
        let hidden = self.hidden;
        let mut rows = states.chunks_exact_mut(hidden);
        for (ids, types) in texts {
            for (position, (&id, &kind)) in ids.iter().zip(types.iter()).enumerate() {
                let (id, kind) = (id as usize, kind as usize);
                if id >= self.vocab || kind >= self.token_types {
                    return Err(format!(
                        "token {id} (type {kind}) is outside the model's vocabulary"
                    ));
                }
                let Some(row) = rows.next() else {
                    return Err("token count changed while embedding".into());
                };
                row.copy_from_slice(&self.word[id * hidden..(id + 1) * hidden]);
                if let Some(table) = &self.position {
                    kernels::add(row, &table[position * hidden..(position + 1) * hidden]);
                }
                kernels::add(row, &self.token_type[kind * hidden..(kind + 1) * hidden]);
            }
        }
        let norm = &self.embedding_norm;
        par_rows(states, hidden, threads, |rows| {
            kernels::layer_norm_rows(rows, &norm.weight, &norm.bias, self.eps);
        });
        Ok(())
    }

    /// The query, key and value of `layer` for the tokens `rows` (their `states`) into `qkv`
    /// (`rows × 3·hidden`), rotated when the model rotates.
    #[allow(
        clippy::too_many_arguments,
        reason = "the layer, the rows and their buffers"
    )]
    fn project(
        &self,
        layer: &Layer,
        offsets: &[usize],
        rows: Range<usize>,
        states: &[f32],
        qkv: &mut [f32],
        work: &mut Work,
        threads: usize,
    ) {
        let hidden = self.hidden;
        let input: &[f32] = if self.placement == Placement::Pre {
            let normed = &mut work.normed[..states.len()];
            normed.copy_from_slice(states);
            self.norm_rows(normed, &layer.attention_norm, threads);
            normed
        } else {
            states
        };
        linear(
            input,
            hidden,
            &layer.qkv,
            qkv,
            Accumulate::Overwrite,
            threads,
            &mut work.quantized,
        );
        if let Some(rotary) = &self.rotary {
            self.rotate(qkv, offsets, rows, rotary, threads);
        }
    }

    /// The rest of `layer` for the tokens `rows`, in place on their `states`: attention over
    /// every token's query, key and value in `qkv` (`total × 3·hidden`), then the output
    /// product, the feed-forward and the layer norms. Post-norm: states = LN(states +
    /// attend(states)), then the same for the feed-forward; pre-norm: states = states +
    /// attend(LN(states)), the same way round.
    #[allow(
        clippy::too_many_arguments,
        reason = "the layer, the rows and their buffers"
    )]
    fn attend_and_feed(
        &self,
        layer: &Layer,
        qkv: &[f32],
        offsets: &[usize],
        rows: Range<usize>,
        states: &mut [f32],
        work: &mut Work,
        threads: usize,
    ) {
        let pre = self.placement == Placement::Pre;
        let context = &mut work.context[..states.len()];
        self.attention(qkv, offsets, rows, context, threads);
        linear(
            context,
            self.hidden,
            &layer.attention_out,
            states,
            Accumulate::Add,
            threads,
            &mut work.quantized,
        );
        if pre {
            let normed = &mut work.normed[..states.len()];
            normed.copy_from_slice(states);
            self.norm_rows(normed, &layer.output_norm, threads);
        } else {
            self.norm_rows(states, &layer.attention_norm, threads);
        }
        self.feed_forward(&layer.mlp, states, self.placement, work, threads);
        if !pre {
            self.norm_rows(states, &layer.output_norm, threads);
        }
    }

    /// Layer norm of each row of `rows`, in place.
    fn norm_rows(&self, rows: &mut [f32], norm: &Norm, threads: usize) {
        par_rows(rows, self.hidden, threads, |block| {
            kernels::layer_norm_rows(block, &norm.weight, &norm.bias, self.eps);
        });
    }

    /// `states += mlp(input)`, the input being `states` (post-norm) or `buffers.normed`
    /// (pre-norm, already normed).
    fn feed_forward(
        &self,
        mlp: &Mlp,
        states: &mut [f32],
        placement: Placement,
        buffers: &mut Work,
        threads: usize,
    ) {
        let hidden = self.hidden;
        let total = states.len() / hidden;
        let quantized = &mut buffers.quantized;
        let normed = &buffers.normed[..total * hidden];
        let inner = mlp.inner();
        let up = &mut buffers.up[..total * inner];
        let input: &[f32] = if placement == Placement::Pre {
            normed
        } else {
            states
        };
        match mlp {
            Mlp::Plain { up: weights, down } => {
                let activation = self.activation;
                let activate = move |rows: &mut [f32]| match activation {
                    Activation::GeluErf => kernels::gelu_erf(rows),
                    Activation::GeluTanh => kernels::gelu_tanh(rows),
                    Activation::Relu => kernels::relu(rows),
                };
                // f32 applies the activation to each panel of the up product as it is computed;
                // INT8 to each block of rows as it is quantised for the down product, while the
                // block is in cache: one pass over the widest buffer of the layer, not two.
                let int8 = matches!(down.weight, Weights::Int8(_));
                linear_then(
                    input,
                    hidden,
                    weights,
                    up,
                    Accumulate::Overwrite,
                    threads,
                    quantized,
                    (!int8).then_some(&activate),
                );
                match &down.weight {
                    Weights::Int8(weight) => {
                        quantized.quantize_after(up, total, inner, threads, activate);
                        kernels::matmul_int8(
                            states,
                            quantized,
                            weight,
                            &down.bias,
                            Accumulate::Add,
                            threads,
                        );
                    }
                    Weights::F32(_) => {
                        linear(up, inner, down, states, Accumulate::Add, threads, quantized);
                    }
                }
            }
            Mlp::SwiGlu { value_gate, down } => {
                linear(
                    input,
                    hidden,
                    value_gate,
                    up,
                    Accumulate::Overwrite,
                    threads,
                    quantized,
                );
                let half = inner / 2;
                let gated = &mut buffers.gated[..total * half];
                up.par_chunks(inner * ROWS_PER_TASK)
                    .zip(gated.par_chunks_mut(half * ROWS_PER_TASK))
                    .with_min_len(min_len(threads))
                    .for_each(|(rows, out)| {
                        for (row, out) in rows.chunks_exact(inner).zip(out.chunks_exact_mut(half)) {
                            let (value, gate) = row.split_at(half);
                            out.copy_from_slice(value);
                            kernels::silu_mul(gate, out);
                        }
                    });
                linear(
                    gated,
                    half,
                    down,
                    states,
                    Accumulate::Add,
                    threads,
                    quantized,
                );
            }
        }
    }

    /// Rotates the query and key of every head of the tokens `rows` (their `qkv`) by each
    /// token's position in its text.
    fn rotate(
        &self,
        qkv: &mut [f32],
        offsets: &[usize],
        rows: Range<usize>,
        rotary: &Rotary,
        threads: usize,
    ) {
        let hidden = self.hidden;
        let head = hidden / self.heads;
        let positions: Vec<usize> = offsets
            .windows(2)
            .flat_map(|window| 0..window[1] - window[0])
            .skip(rows.start)
            .take(rows.len())
            .collect();
        let half = rotary.half;
        qkv.par_chunks_mut(3 * hidden)
            .zip(positions.par_iter())
            .with_min_len(min_len(threads))
            .for_each(|(row, &position)| {
                let cos = &rotary.cos[position * half..(position + 1) * half];
                let sin = &rotary.sin[position * half..(position + 1) * half];
                // Query and key: the first two thirds of the row, head after head.
                kernels::rotate_halves(&mut row[..2 * hidden], head, cos, sin);
            });
    }

    /// Scaled dot-product attention, every head, of the tokens `rows` over the tokens of
    /// their own texts, into `context` (`rows × hidden`, heads side by side as BERT
    /// concatenates them). `qkv` holds every token's query, key and value.
    fn attention(
        &self,
        qkv: &[f32],
        offsets: &[usize],
        rows: Range<usize>,
        context: &mut [f32],
        threads: usize,
    ) {
        let (hidden, heads) = (self.hidden, self.heads);
        let head = hidden / heads;
        #[allow(clippy::cast_precision_loss, reason = "head sizes are small")]
        let scale = 1.0 / (head as f32).sqrt();
        let stride = 3 * hidden;
        // Each text with tokens in `rows`: the queries that are in `rows`, and its keys.
        let texts: Vec<(Range<usize>, Range<usize>)> = offsets
            .windows(2)
            .map(|window| window[0]..window[1])
            .filter(|keys| !keys.is_empty() && keys.start < rows.end && rows.start < keys.end)
            .map(|keys| (keys.start.max(rows.start)..keys.end.min(rows.end), keys))
            .collect();
        let tasks: Vec<(usize, usize)> = (0..texts.len())
            .flat_map(|text| (0..heads).map(move |h| (text, h)))
            .collect();
        let outputs: Vec<(usize, usize, Vec<f32>)> = tasks
            .into_par_iter()
            .with_min_len(min_len(threads))
            .map_init(Vec::new, |scores, (text, h)| {
                let (queries, keys) = &texts[text];
                let (count, len) = (queries.len(), keys.len());
                let mut out = vec![0.0_f32; count * head];
                let q = queries.start * stride + h * head;
                let k = keys.start * stride + hidden + h * head;
                let v = k + hidden;
                scores.resize(count * len, 0.0);
                if len <= DIRECT_ATTENTION_TOKENS {
                    kernels::attention_direct(
                        &qkv[q..],
                        &qkv[k..],
                        &qkv[v..],
                        stride,
                        head,
                        len,
                        scale,
                        scores,
                        &mut out,
                    );
                    return (text, h, out);
                }
                kernels::matmul(
                    scores,
                    Shape::dense(count, len),
                    &qkv[q..],
                    Shape {
                        rows: count,
                        cols: head,
                        stride,
                    },
                    &qkv[k..],
                    stride,
                    Rhs::Transposed,
                    scale,
                    Accumulate::Overwrite,
                    1,
                );
                kernels::softmax_rows(scores, len);
                kernels::matmul(
                    &mut out,
                    Shape::dense(count, head),
                    scores,
                    Shape::dense(count, len),
                    &qkv[v..],
                    stride,
                    Rhs::RowMajor,
                    1.0,
                    Accumulate::Overwrite,
                    1,
                );
                (text, h, out)
            })
            .collect();
        for (text, h, out) in outputs {
            let first = texts[text].0.start - rows.start;
            for (row, values) in out.chunks_exact(head).enumerate() {
                let at = (first + row) * hidden + h * head;
                context[at..at + head].copy_from_slice(values);
            }
        }
    }
}

/// Layer `index` of a NomicBert checkpoint.
fn nomic_layer(
    tensors: &Tensors,
    index: usize,
    config: &NomicConfig,
    precision: Precision,
) -> Result<Layer, LoadError> {
    let (hidden, inner) = (config.n_embd, config.n_inner);
    let p = format!("encoder.layers.{index}");
    let dense = |linear| Dense::new(linear, precision);
    let (attention_bias, up_bias) = (config.qkv_proj_bias, config.mlp_fc1_bias);
    let value = tensors.linear_with(&format!("{p}.mlp.fc11"), hidden, inner, up_bias)?;
    let gate = tensors.linear_with(&format!("{p}.mlp.fc12"), hidden, inner, up_bias)?;
    Ok(Layer {
        qkv: dense(tensors.linear_with(
            &format!("{p}.attn.Wqkv"),
            hidden,
            3 * hidden,
            attention_bias,
        )?),
        attention_out: dense(tensors.linear_with(
            &format!("{p}.attn.out_proj"),
            hidden,
            hidden,
            attention_bias,
        )?),
        attention_norm: tensors.norm(&format!("{p}.norm1"), hidden)?,
        mlp: Mlp::SwiGlu {
            value_gate: dense(concatenate_outputs(&[value, gate], hidden)),
            down: dense(tensors.linear_with(
                &format!("{p}.mlp.fc2"),
                inner,
                hidden,
                config.mlp_fc2_bias,
            )?),
        },
        output_norm: tensors.norm(&format!("{p}.norm2"), hidden)?,
    })
}

/// `output [+]= input · W + b` over `rows × width` inputs. With [`Accumulate::Add`] the bias
/// and the product are added to what `output` holds (the residual).
fn linear(
    input: &[f32],
    width: usize,
    layer: &Dense,
    output: &mut [f32],
    mode: Accumulate,
    threads: usize,
    quantized: &mut QuantizedRows,
) {
    linear_then(input, width, layer, output, mode, threads, quantized, None);
}

/// A step run in place on whole rows of activations (an activation function).
type RowStep = dyn Fn(&mut [f32]) + Sync;

/// [`linear`], then `finish` on the output (an activation), if any: in f32 on each panel as it
/// is computed, in INT8 in a pass of its own (the INT8 feed-forward quantises the activation
/// with the next product's input instead, `QuantizedRows::quantize_after`).
#[allow(
    clippy::too_many_arguments,
    reason = "a product names its operands and mode"
)]
fn linear_then(
    input: &[f32],
    width: usize,
    layer: &Dense,
    output: &mut [f32],
    mode: Accumulate,
    threads: usize,
    quantized: &mut QuantizedRows,
    finish: Option<&RowStep>,
) {
    let rows = input.len() / width.max(1);
    match &layer.weight {
        Weights::F32(weight) => {
            kernels::matmul_packed(
                output,
                input,
                rows,
                weight,
                &layer.bias,
                mode,
                |rows| finish.iter().for_each(|finish| finish(rows)),
                threads,
            );
        }
        Weights::Int8(weight) => {
            quantized.quantize(input, rows, width, threads);
            // The bias goes in with the products' dequantisation: no pass of its own.
            kernels::matmul_int8(output, quantized, weight, &layer.bias, mode, threads);
            if let Some(finish) = finish {
                par_rows(output, layer.weight.outputs(), threads, finish);
            }
        }
    }
}

/// Splits texts of `lengths` tokens into consecutive groups, at most one per thread, of about
/// the same number of tokens, no group more than a quarter over an even share (else one
/// group: a long text beside short ones is better served by one pass in bands).
fn text_groups(lengths: &[usize], threads: usize) -> Vec<std::ops::Range<usize>> {
    let total: usize = lengths.iter().sum();
    let count = threads.min(lengths.len());
    let whole = std::iter::once(0..lengths.len()).collect();
    if count <= 1 {
        return whole;
    }
    let mut groups = Vec::with_capacity(count);
    let (mut start, mut seen) = (0, 0);
    for (index, &length) in lengths.iter().enumerate() {
        let next = groups.len() + 1;
        // Close the group before this text when the text would carry it further past its
        // share than stopping short of it leaves it.
        let share = total * next / count;
        if next < count && index > start && seen + length / 2 > share {
            groups.push(start..index);
            start = index;
        }
        seen += length;
    }
    groups.push(start..lengths.len());
    let largest = groups
        .iter()
        .map(|group| lengths[group.clone()].iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    if groups.len() < count || largest * count * 4 > total * 5 {
        return whole;
    }
    groups
}

/// The least items per rayon task: no split at all on one thread.
fn min_len(threads: usize) -> usize {
    if threads <= 1 {
        usize::MAX
    } else {
        1
    }
}

/// Runs `step` over `values` in blocks of whole rows (`width` values each), on every core
/// when there is enough of them and more than one thread.
fn par_rows(values: &mut [f32], width: usize, threads: usize, step: impl Fn(&mut [f32]) + Sync) {
    let block = ROWS_PER_TASK * width.max(1);
    if threads <= 1 || values.len() <= block {
        step(values);
    } else {
        values.par_chunks_mut(block).for_each(&step);
    }
}

/// How many bands a pass over `tokens` tokens on `threads` threads splits them into.
fn bands(tokens: usize, threads: usize) -> usize {
    threads.min(tokens / BAND_TOKENS).max(1)
}

/// Runs `step` on each band of tokens (`ranges`, consecutive from 0) with its rows of
/// `states` (`hidden` wide) and of `qkv` (`3·hidden` wide) and its own buffers, the bands in
/// parallel (one on the calling thread when there is only one).
fn for_bands(
    ranges: &[Range<usize>],
    hidden: usize,
    states: &mut [f32],
    qkv: &mut [f32],
    work: &mut [Work],
    step: impl Fn(Range<usize>, &mut [f32], &mut [f32], &mut Work) + Sync,
) {
    let mut parts = Vec::with_capacity(ranges.len());
    let (mut states, mut qkv) = (states, qkv);
    for (range, work) in ranges.iter().zip(work.iter_mut()) {
        let (band_states, rest_states) = states.split_at_mut(range.len() * hidden);
        let (band_qkv, rest_qkv) = qkv.split_at_mut(range.len() * 3 * hidden);
        parts.push((range.clone(), band_states, band_qkv, work));
        (states, qkv) = (rest_states, rest_qkv);
    }
    if let [(range, states, qkv, work)] = parts.as_mut_slice() {
        step(range.clone(), states, qkv, work);
        return;
    }
    parts
        .into_par_iter()
        .with_max_len(1)
        .for_each(|(range, states, qkv, work)| step(range, states, qkv, work));
}

/// The activations of a forward pass, kept between passes: fresh pages cost the kernel a
/// clearing each (4% of a pass when they were allocated per call).
#[derive(Default)]
struct Scratch {
    states: Vec<f32>,
    /// Query, key and value of every token, for the layer being attended and the next.
    qkv: [Vec<f32>; 2],
    /// The buffers of each band of tokens.
    bands: Vec<Work>,
}

/// The buffers one band of tokens works in between two attentions.
#[derive(Default)]
struct Work {
    context: Vec<f32>,
    up: Vec<f32>,
    /// Layer-normed block inputs (pre-norm models).
    normed: Vec<f32>,
    /// SwiGLU's product of value and gate.
    gated: Vec<f32>,
    /// The input of an INT8 product, quantised.
    quantized: QuantizedRows,
}

impl Scratch {
    /// Grows the buffers to hold `tokens` tokens in `bands` bands (never shrinks: the largest
    /// pass so far, at most SUB_BATCH_TOKENS tokens or one text at the model's limit).
    fn fit(&mut self, tokens: usize, bands: usize, hidden: usize, inner: usize) {
        if self.bands.len() < bands {
            self.bands.resize_with(bands, Work::default);
        }
        // A band holds at most tokens / bands rounded up.
        let most = tokens.div_ceil(bands.max(1));
        let [even, odd] = &mut self.qkv;
        let mut buffers = vec![
            (&mut self.states, tokens * hidden),
            (even, tokens * 3 * hidden),
            (odd, tokens * 3 * hidden),
        ];
        for work in &mut self.bands[..bands] {
            buffers.push((&mut work.context, most * hidden));
            buffers.push((&mut work.up, most * inner));
            buffers.push((&mut work.normed, most * hidden));
            buffers.push((&mut work.gated, most * inner));
        }
        for (buffer, len) in buffers {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
        }
    }
}

/// Query, key and value layers as one layer with their outputs side by side.
fn concatenate_outputs(parts: &[Linear], inputs: usize) -> Linear {
    let outputs: usize = parts.iter().map(|part| part.outputs).sum();
    let mut weight = Vec::with_capacity(inputs * outputs);
    for row in 0..inputs {
        for part in parts {
            weight.extend_from_slice(&part.weight[row * part.outputs..(row + 1) * part.outputs]);
        }
    }
    Linear {
        weight,
        bias: parts
            .iter()
            .flat_map(|part| part.bias.iter().copied())
            .collect(),
        outputs,
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::float_cmp,
    reason = "small test sizes; a text alone and in a batch must agree exactly"
)]
mod tests {
    use super::*;
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::BertModel;

    const VOCAB: usize = 20;

    /// Random tensors (uniform around an offset, from a seeded generator) gathered under
    /// their names, and written out as one safetensors file.
    struct RandomTensors {
        rng: fastrand::Rng,
        tensors: HashMap<String, Tensor>,
    }

    impl RandomTensors {
        fn new(seed: u64) -> RandomTensors {
            RandomTensors {
                rng: fastrand::Rng::with_seed(seed),
                tensors: HashMap::new(),
            }
        }

        fn add(&mut self, name: String, shape: &[usize], offset: f32) {
            let count = shape.iter().product();
            let values: Vec<f32> = (0..count).map(|_| offset + self.rng.f32() - 0.5).collect();
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor");
            self.tensors.insert(name, tensor);
        }

        /// The safetensors bytes (candle writes only to a path).
        fn safetensors(&self) -> Vec<u8> {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("model.safetensors");
            candle_core::safetensors::save(&self.tensors, &path).expect("saved");
            std::fs::read(&path).expect("read back")
        }
    }

    /// A random-weight BERT with sizes that are not multiples of the SIMD widths or of a
    /// weight panel (hidden 40 in 4 heads of 10, feed-forward 100), saved as safetensors with
    /// the names under `prefix`.
    fn random_model(act: HiddenAct, prefix: &str) -> (Config, Vec<u8>) {
        let config = Config {
            vocab_size: VOCAB,
            hidden_size: 40,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 100,
            hidden_act: act,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            ..Config::default()
        };
        let mut tensors = RandomTensors::new(11);
        let mut add = |name: String, shape: &[usize], offset: f32| {
            tensors.add(format!("{prefix}{name}"), shape, offset);
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        add("embeddings.word_embeddings.weight".into(), &[VOCAB, h], 0.0);
        add(
            "embeddings.position_embeddings.weight".into(),
            &[64, h],
            0.0,
        );
        add(
            "embeddings.token_type_embeddings.weight".into(),
            &[2, h],
            0.0,
        );
        add("embeddings.LayerNorm.weight".into(), &[h], 1.0);
        add("embeddings.LayerNorm.bias".into(), &[h], 0.0);
        for layer in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{layer}");
            for (name, outputs, inputs) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ] {
                add(format!("{p}.{name}.weight"), &[outputs, inputs], 0.0);
                add(format!("{p}.{name}.bias"), &[outputs], 0.0);
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                add(format!("{p}.{name}.weight"), &[h], 1.0);
                add(format!("{p}.{name}.bias"), &[h], 0.0);
            }
        }
        (config, tensors.safetensors())
    }

    /// candle's BertModel over the padded batch with an attention mask, mean-pooled.
    fn candle_pooled(
        config: &Config,
        weights: &[u8],
        texts: &[(Vec<u32>, Vec<u32>)],
    ) -> Vec<Vec<f32>> {
        let builder =
            VarBuilder::from_buffered_safetensors(weights.to_vec(), DType::F32, &Device::Cpu)
                .expect("var builder");
        let model = BertModel::load(builder, config).expect("candle loads it");
        let width = texts.iter().map(|(ids, _)| ids.len()).max().unwrap_or(1);
        let pad = |values: &[u32], fill: u32| {
            let mut row = values.to_vec();
            row.resize(width, fill);
            row
        };
        let ids: Vec<u32> = texts.iter().flat_map(|(ids, _)| pad(ids, 0)).collect();
        let types: Vec<u32> = texts.iter().flat_map(|(_, types)| pad(types, 0)).collect();
        let mask: Vec<u32> = texts
            .iter()
            .flat_map(|(ids, _)| pad(&vec![1; ids.len()], 0))
            .collect();
        let tensor = |values: Vec<u32>| {
            Tensor::from_vec(values, (texts.len(), width), &Device::Cpu).expect("tensor")
        };
        let states = model
            .forward(&tensor(ids), &tensor(types), Some(&tensor(mask)))
            .and_then(|states| states.to_vec3::<f32>())
            .expect("candle runs");
        states
            .iter()
            .zip(texts)
            .map(|(rows, (ids, _))| {
                let mut mean = vec![0.0_f32; config.hidden_size];
                for row in &rows[..ids.len()] {
                    for (m, v) in mean.iter_mut().zip(row) {
                        *m += v / ids.len() as f32;
                    }
                }
                mean
            })
            .collect()
    }

    /// The largest absolute difference between two vectors, value by value.
    fn worst_difference(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0_f32, f32::max)
    }

    #[test]
    fn packed_forward_matches_candles_padded_bert() {
        let texts: Vec<(Vec<u32>, Vec<u32>)> = vec![
            (vec![2, 5, 6, 7, 3], vec![0; 5]),
            (
                vec![2, 9, 3, 10, 11, 12, 13, 3],
                vec![0, 0, 0, 1, 1, 1, 1, 1],
            ),
            (vec![2, 3], vec![0, 0]),
            ((0..30).map(|i| i % VOCAB as u32).collect(), vec![1; 30]),
            // Longer than DIRECT_ATTENTION_TOKENS: attention through gemm.
            (
                (0..50).map(|i| (i * 7) % VOCAB as u32).collect(),
                vec![0; 50],
            ),
        ];
        for (act, prefix) in [
            (HiddenAct::Gelu, ""),
            (HiddenAct::GeluApproximate, "bert."),
            (HiddenAct::Relu, ""),
        ] {
            let (config, weights) = random_model(act, prefix);
            let ours = Bert::load(&weights, &config, Precision::F32).expect("our encoder loads it");
            let refs: Vec<(&[u32], &[u32])> = texts
                .iter()
                .map(|(ids, types)| (ids.as_slice(), types.as_slice()))
                .collect();
            let expected = candle_pooled(&config, &weights, &texts);
            // One thread; two (the texts in two groups, one per thread); three (too uneven for
            // three groups: one pass in three bands of tokens, across the texts' boundaries).
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool");
                let pooled = pool.install(|| ours.pooled(&refs)).expect("runs");
                assert_eq!(pooled.len(), texts.len());
                for (index, (a, b)) in pooled.iter().zip(&expected).enumerate() {
                    let worst = worst_difference(a, b);
                    assert!(
                        worst < 1e-4,
                        "{act:?}, {threads} threads, text {index}: worst difference {worst}"
                    );
                }
                // Alone or in a batch, a text gets the same vector: a short one (every step
                // split) and a long one (in bands of tokens, one per thread).
                for index in [1, 4] {
                    let alone = pool
                        .install(|| ours.pooled(&refs[index..=index]))
                        .expect("runs");
                    assert_eq!(alone[0], pooled[index], "{threads} threads, text {index}");
                }
            }
        }
    }

    #[test]
    fn a_pass_takes_a_band_per_thread_of_at_least_band_tokens() {
        assert_eq!(bands(0, 2), 1);
        assert_eq!(bands(2 * BAND_TOKENS - 1, 2), 1);
        assert_eq!(bands(2 * BAND_TOKENS, 2), 2);
        assert_eq!(bands(129, 2), 2);
        assert_eq!(bands(129, 1), 1);
        assert_eq!(bands(3 * BAND_TOKENS + 1, 4), 3);
        assert_eq!(bands(1000, 4), 4);
    }

    #[test]
    fn texts_are_shared_out_in_order_by_tokens() {
        let groups = |lengths: &[usize], threads| text_groups(lengths, threads);
        assert_eq!(groups(&[12; 8], 2), vec![0..4, 4..8]);
        assert_eq!(groups(&[12; 8], 3), vec![0..3, 3..5, 5..8]);
        assert_eq!(groups(&[12; 8], 1), vec![0..8]);
        assert_eq!(groups(&[12], 2), vec![0..1]);
        assert_eq!(groups(&[], 2), vec![0..0]);
        assert_eq!(groups(&[12, 12], 16), vec![0..1, 1..2]);
        // Sorted by length, as the pipeline hands them over: the split follows the tokens.
        assert_eq!(groups(&[5, 8, 10, 20, 30, 40], 2), vec![0..4, 4..6]);
        assert_eq!(groups(&[2, 2, 2, 2, 2, 2, 2, 2, 16], 2), vec![0..8, 8..9]);
        // A long text beside short ones: no even share, one pass in bands of tokens instead.
        assert_eq!(groups(&[3, 3, 60], 2), vec![0..3]);
        assert_eq!(groups(&[0, 0, 0], 2), vec![0..3]);
        // Every group holds a text and every text one group, in order.
        for lengths in [
            vec![1, 2, 3, 4, 5, 6, 7],
            vec![9; 31],
            vec![1, 100, 100, 100],
        ] {
            for threads in 1..6 {
                let found = groups(&lengths, threads);
                assert!(found.len() <= threads.max(1));
                assert_eq!(found.first().map(|group| group.start), Some(0));
                assert_eq!(found.last().map(|group| group.end), Some(lengths.len()));
                assert!(found.windows(2).all(|pair| pair[0].end == pair[1].start));
                assert!(found.iter().all(|group| !group.is_empty()) || lengths.is_empty());
            }
        }
    }

    /// A random-weight NomicBert (hidden 24 in 2 heads of 12, SwiGLU inner 40) saved as
    /// safetensors, biases and norm placement as given.
    fn random_nomic(prenorm: bool, biases: bool) -> (NomicConfig, Vec<u8>) {
        let config = NomicConfig {
            vocab_size: VOCAB,
            n_embd: 24,
            n_head: 2,
            n_layer: 2,
            n_inner: 40,
            n_positions: 64,
            qkv_proj_bias: biases,
            mlp_fc1_bias: biases,
            mlp_fc2_bias: biases,
            prenorm,
            ..NomicConfig::default()
        };
        let mut tensors = RandomTensors::new(13);
        let mut add = |name: String, shape: &[usize], offset: f32| {
            tensors.add(name, shape, offset);
        };
        let (h, i) = (config.n_embd, config.n_inner);
        add("embeddings.word_embeddings.weight".into(), &[VOCAB, h], 0.0);
        add(
            "embeddings.token_type_embeddings.weight".into(),
            &[2, h],
            0.0,
        );
        add("emb_ln.weight".into(), &[h], 1.0);
        add("emb_ln.bias".into(), &[h], 0.0);
        for layer in 0..config.n_layer {
            let p = format!("encoder.layers.{layer}");
            for (name, outputs, inputs) in [
                ("attn.Wqkv", 3 * h, h),
                ("attn.out_proj", h, h),
                ("mlp.fc11", i, h),
                ("mlp.fc12", i, h),
                ("mlp.fc2", h, i),
            ] {
                add(format!("{p}.{name}.weight"), &[outputs, inputs], 0.0);
                if biases {
                    add(format!("{p}.{name}.bias"), &[outputs], 0.0);
                }
            }
            for name in ["norm1", "norm2"] {
                add(format!("{p}.{name}.weight"), &[h], 1.0);
                add(format!("{p}.{name}.bias"), &[h], 0.0);
            }
        }
        (config, tensors.safetensors())
    }

    #[test]
    fn own_nomic_pass_matches_candles_nomic_bert() {
        use candle_transformers::models::nomic_bert::NomicBertModel;
        let texts: Vec<(Vec<u32>, Vec<u32>)> = vec![
            (vec![2, 5, 6, 7, 3], vec![0; 5]),
            (vec![2, 9, 3], vec![0; 3]),
            (
                (0..40).map(|i| (i * 3) % VOCAB as u32).collect(),
                vec![0; 40],
            ),
        ];
        for (prenorm, biases) in [(false, false), (true, true), (false, true)] {
            let (config, weights) = random_nomic(prenorm, biases);
            let ours = Bert::load_nomic(&weights, &config, Precision::F32).expect("loads");
            let refs: Vec<(&[u32], &[u32])> = texts
                .iter()
                .map(|(ids, types)| (ids.as_slice(), types.as_slice()))
                .collect();
            // Two threads: too uneven for two groups, so one pass in two bands of tokens (the
            // rotation and the pre-norm in each band); one and three threads the same.
            let on = |threads: usize, model: &Bert| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool")
                    .install(|| model.pooled(&refs))
                    .expect("runs")
            };
            let pooled = on(2, &ours);
            for threads in [1, 3] {
                let other = on(threads, &ours);
                for (a, b) in other.iter().zip(&pooled) {
                    assert!(worst_difference(a, b) < 1e-5, "{threads} threads");
                }
            }
            let builder =
                VarBuilder::from_buffered_safetensors(weights.clone(), DType::F32, &Device::Cpu)
                    .expect("var builder");
            let model = NomicBertModel::load(builder, &config).expect("candle loads it");
            for (index, (ids, types)) in texts.iter().enumerate() {
                let tensor = |values: &[u32]| {
                    Tensor::from_vec(values.to_vec(), (1, values.len()), &Device::Cpu)
                        .expect("tensor")
                };
                let states = model
                    .forward(&tensor(ids), Some(&tensor(types)), None)
                    .and_then(|states| states.to_vec3::<f32>())
                    .expect("candle runs");
                let mut mean = vec![0.0_f32; config.n_embd];
                for row in &states[0] {
                    for (m, v) in mean.iter_mut().zip(row) {
                        *m += v / ids.len() as f32;
                    }
                }
                let worst = worst_difference(&mean, &pooled[index]);
                assert!(
                    worst < 1e-4,
                    "prenorm {prenorm}, biases {biases}, text {index}: worst difference {worst}"
                );
            }
            // INT8 loads too, and stays near f32.
            let int8 = Bert::load_nomic(&weights, &config, Precision::Int8).expect("loads");
            let quantised = on(2, &int8);
            for (a, b) in quantised.iter().zip(&pooled) {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!(dot / (norm(a) * norm(b)) > 0.99);
            }
        }
        let (mut config, weights) = random_nomic(false, false);
        config.rotary_emb_interleaved = true;
        assert!(matches!(
            Bert::load_nomic(&weights, &config, Precision::F32),
            Err(LoadError::Unsupported(_))
        ));
    }

    #[test]
    fn bad_tokens_and_lengths_are_errors_not_panics() {
        let (config, weights) = random_model(HiddenAct::Gelu, "");
        let model = Bert::load(&weights, &config, Precision::F32).expect("loads");
        let too_long: Vec<u32> = vec![1; 65];
        assert!(model.pooled(&[(&too_long, &vec![0; 65])]).is_err());
        assert!(model.pooled(&[(&[2, 99, 3], &[0, 0, 0])]).is_err());
        assert!(model.pooled(&[(&[2, 5, 3], &[0, 2, 0])]).is_err());
        assert!(model.pooled(&[(&[2, 5, 3], &[0, 0])]).is_err());
        assert_eq!(model.pooled(&[]).expect("no texts"), Vec::<Vec<f32>>::new());
        let mut missing = config.clone();
        missing.num_hidden_layers = 3;
        assert!(matches!(
            Bert::load(&weights, &missing, Precision::Int8),
            Err(LoadError::Tensor(_))
        ));
    }

    #[test]
    fn transpose_and_concatenation_keep_every_weight_in_place() {
        let t = transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(t, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let part = |base: f32| Linear {
            weight: vec![base, base + 1.0, base + 2.0, base + 3.0],
            bias: vec![base, base],
            outputs: 2,
        };
        let joined = concatenate_outputs(&[part(0.0), part(10.0)], 2);
        assert_eq!(
            joined.weight,
            vec![0.0, 1.0, 10.0, 11.0, 2.0, 3.0, 12.0, 13.0]
        );
        assert_eq!(joined.bias, vec![0.0, 0.0, 10.0, 10.0]);
        assert_eq!(joined.outputs, 4);
    }
}
