//! NomicBert (nomic-embed-text-v1.5's architecture) end to end on a small random-weight model
//! the test writes itself (the real weights cannot be had here): the folder loads, the
//! forward pass through candle matches a plain reference computation of the architecture
//! (rotary positions, fused QKV, SwiGLU, post-norm), padding in a batch changes nothing, and
//! inputs are truncated at the model's trained positions.

#![allow(
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::many_single_char_names,
    clippy::similar_names,
    reason = "a reference computation written like the maths"
)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use sutra_embed::{Output, Pipeline, Prefixes, Task};

const VOCAB: usize = 16;
const WORDS: [&str; 12] = [
    "the", "log", "keeps", "every", "write", "vectors", "are", "stored", "in", "segments", "and",
    "recovers",
];
const EMBD: usize = 16;
const HEADS: usize = 2;
const INNER: usize = 24;
const LAYERS: usize = 2;
const BASE: f32 = 1000.0;
const EPS: f32 = 1e-12;

/// Random weights, deterministic per name.
struct Weights(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl Weights {
    fn new() -> Weights {
        let mut weights = Weights(HashMap::new());
        let mut rng = fastrand::Rng::with_seed(7);
        let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            let count = shape.iter().product();
            let values = (0..count)
                .map(|_| offset + scale * (rng.f32() * 2.0 - 1.0))
                .collect();
            weights.0.insert(name, (shape, values));
        };
        add(
            "embeddings.word_embeddings.weight".into(),
            vec![VOCAB, EMBD],
            1.0,
            0.0,
        );
        add(
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, EMBD],
            0.1,
            0.0,
        );
        let norm = |add: &mut dyn FnMut(String, Vec<usize>, f32, f32), prefix: &str| {
            add(format!("{prefix}.weight"), vec![EMBD], 0.1, 1.0);
            add(format!("{prefix}.bias"), vec![EMBD], 0.1, 0.0);
        };
        norm(&mut add, "emb_ln");
        for layer in 0..LAYERS {
            let p = format!("encoder.layers.{layer}");
            let linear = 1.0 / (EMBD as f32).sqrt();
            add(
                format!("{p}.attn.Wqkv.weight"),
                vec![3 * EMBD, EMBD],
                linear,
                0.0,
            );
            add(
                format!("{p}.attn.out_proj.weight"),
                vec![EMBD, EMBD],
                linear,
                0.0,
            );
            add(
                format!("{p}.mlp.fc11.weight"),
                vec![INNER, EMBD],
                linear,
                0.0,
            );
            add(
                format!("{p}.mlp.fc12.weight"),
                vec![INNER, EMBD],
                linear,
                0.0,
            );
            add(
                format!("{p}.mlp.fc2.weight"),
                vec![EMBD, INNER],
                1.0 / (INNER as f32).sqrt(),
                0.0,
            );
            norm(&mut add, &format!("{p}.norm1"));
            norm(&mut add, &format!("{p}.norm2"));
        }
        weights
    }

    fn get(&self, name: &str) -> &[f32] {
        &self.0[name].1
    }

    fn save(&self, path: &Path) {
        let tensors: HashMap<String, Tensor> = self
            .0
            .iter()
            .map(|(name, (shape, values))| {
                let tensor = Tensor::from_vec(values.clone(), shape.as_slice(), &Device::Cpu)
                    .expect("tensor");
                (name.clone(), tensor)
            })
            .collect();
        candle_core::safetensors::save(&tensors, path).expect("safetensors written");
    }
}

/// A model folder: config.json, a word-level tokenizer with [CLS]/[SEP], random weights.
fn write_model(dir: &Path, weights: &Weights, max_trained_positions: usize) {
    let config = serde_json::json!({
        "model_type": "nomic_bert", "vocab_size": VOCAB, "n_embd": EMBD, "n_head": HEADS,
        "n_layer": LAYERS, "n_inner": INNER, "n_positions": 8192,
        "max_trained_positions": max_trained_positions, "rotary_scaling_factor": null,
        "type_vocab_size": 2, "layer_norm_epsilon": EPS, "rotary_emb_fraction": 1.0,
        "rotary_emb_base": BASE, "rotary_emb_interleaved": false, "qkv_proj_bias": false,
        "mlp_fc1_bias": false, "mlp_fc2_bias": false, "activation_function": "swiglu",
        "prenorm": false,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let mut vocab = serde_json::Map::new();
    for (id, token) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(WORDS.iter())
        .enumerate()
    {
        vocab.insert((*token).to_owned(), id.into());
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("tokenizer");
    weights.save(&dir.join("model.safetensors"));
}

/// `x · Wᵀ` for row-major `x` (rows × cols) and `w` (out × cols).
fn linear(x: &[f32], cols: usize, w: &[f32]) -> Vec<f32> {
    let out = w.len() / cols;
    x.chunks(cols)
        .flat_map(|row| {
            (0..out).map(move |o| {
                row.iter()
                    .zip(&w[o * cols..(o + 1) * cols])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
            })
        })
        .collect()
}

fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32]) {
    for row in x.chunks_mut(EMBD) {
        let mean = row.iter().sum::<f32>() / EMBD as f32;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / EMBD as f32;
        let scale = 1.0 / (var + EPS).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * scale * w + b;
        }
    }
}

/// Rotary positions, GPT-NeoX style (halves, not interleaved), on one head's vector.
fn rotate(head: &mut [f32], position: usize) {
    let half = head.len() / 2;
    for i in 0..half {
        let frequency = 1.0 / BASE.powf(2.0 * i as f32 / head.len() as f32);
        let (sin, cos) = (position as f32 * frequency).sin_cos();
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = b * cos + a * sin;
    }
}

/// The architecture written out: the expected mean-pooled, L2-normalised output for `ids`.
fn reference(weights: &Weights, ids: &[usize]) -> Vec<f32> {
    let n = ids.len();
    let word = weights.get("embeddings.word_embeddings.weight");
    let kind = weights.get("embeddings.token_type_embeddings.weight");
    let mut x: Vec<f32> = ids
        .iter()
        .flat_map(|&id| (0..EMBD).map(move |j| word[id * EMBD + j] + kind[j]))
        .collect();
    layer_norm(
        &mut x,
        weights.get("emb_ln.weight"),
        weights.get("emb_ln.bias"),
    );
    let head = EMBD / HEADS;
    for layer in 0..LAYERS {
        let w = |name: &str| weights.get(&format!("encoder.layers.{layer}.{name}"));
        let qkv = linear(&x, EMBD, w("attn.Wqkv.weight"));
        let part = |t: usize, which: usize, h: usize| {
            let start = t * 3 * EMBD + which * EMBD + h * head;
            qkv[start..start + head].to_vec()
        };
        let mut attended = vec![0.0_f32; n * EMBD];
        for h in 0..HEADS {
            let q: Vec<Vec<f32>> = (0..n)
                .map(|t| {
                    let mut v = part(t, 0, h);
                    rotate(&mut v, t);
                    v
                })
                .collect();
            let k: Vec<Vec<f32>> = (0..n)
                .map(|t| {
                    let mut v = part(t, 1, h);
                    rotate(&mut v, t);
                    v
                })
                .collect();
            let v: Vec<Vec<f32>> = (0..n).map(|t| part(t, 2, h)).collect();
            for t in 0..n {
                let scores: Vec<f32> = (0..n)
                    .map(|s| {
                        q[t].iter().zip(&k[s]).map(|(a, b)| a * b).sum::<f32>()
                            / (head as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::MIN, f32::max);
                let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = exp.iter().sum();
                for (s, e) in exp.iter().enumerate() {
                    for j in 0..head {
                        attended[t * EMBD + h * head + j] += e / total * v[s][j];
                    }
                }
            }
        }
        let projected = linear(&attended, EMBD, w("attn.out_proj.weight"));
        let mut hidden: Vec<f32> = x.iter().zip(&projected).map(|(a, b)| a + b).collect();
        layer_norm(&mut hidden, w("norm1.weight"), w("norm1.bias"));
        let value = linear(&hidden, EMBD, w("mlp.fc11.weight"));
        let gate = linear(&hidden, EMBD, w("mlp.fc12.weight"));
        let product: Vec<f32> = value
            .iter()
            .zip(&gate)
            .map(|(v, g)| v * g / (1.0 + (-g).exp()))
            .collect();
        let mlp = linear(&product, INNER, w("mlp.fc2.weight"));
        x = hidden.iter().zip(&mlp).map(|(a, b)| a + b).collect();
        layer_norm(&mut x, w("norm2.weight"), w("norm2.bias"));
    }
    let mut mean = [0.0_f32; EMBD];
    for row in x.chunks(EMBD) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n as f32;
        }
    }
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
    mean.iter().map(|v| v / norm).collect()
}

fn ids(text: &str) -> Vec<usize> {
    let mut ids = vec![2];
    ids.extend(
        text.split_whitespace()
            .map(|word| WORDS.iter().position(|w| *w == word).map_or(1, |i| i + 4)),
    );
    ids.push(3);
    ids
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0_f32, f32::max);
    assert!(
        worst < 1e-4,
        "{what}: worst difference {worst}\n{actual:?}\n{expected:?}"
    );
}

#[test]
fn random_weight_nomic_bert_matches_the_reference_computation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = Weights::new();
    write_model(dir.path(), &weights, 2048);
    let pipeline = Pipeline::load(dir.path()).expect("the NomicBert folder loads");
    assert_eq!(pipeline.info().hidden_size, EMBD);
    assert_eq!(pipeline.info().prefixes, Prefixes::nomic());

    let texts = [
        "the log keeps every write",
        "vectors are stored in segments and the log recovers every write",
        "write",
        "unknown words become unk",
    ];
    // All four in one batch: each is padded to the longest, which must change nothing.
    let batched = pipeline.embed(&texts, Output::Full).expect("embeds");
    for (text, embedded) in texts.iter().zip(&batched) {
        let expected = reference(&weights, &ids(text));
        assert_eq!(embedded.tokens, expected.len().min(ids(text).len()));
        assert_close(&embedded.vector, &expected, text);
        let alone = pipeline.embed(&[text], Output::Full).expect("embeds");
        assert_close(&alone[0].vector, &embedded.vector, "alone vs batched");
    }

    // Task prefixes are plain text in front: `search_query: ` is two words unknown to this
    // vocabulary (`search_query` and `:`), so the query embeds as [CLS] [UNK] [UNK] <text> [SEP].
    let query = Prefixes::nomic().apply(Task::Query, "the log");
    let embedded = pipeline.embed(&[&query], Output::Full).expect("embeds");
    assert_close(
        &embedded[0].vector,
        &reference(&weights, &[2, 1, 1, 4, 5, 3]),
        "prefixed query",
    );
}

#[test]
fn nomic_bert_inputs_are_cut_at_the_trained_positions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = Weights::new();
    write_model(dir.path(), &weights, 6);
    let pipeline = Pipeline::load(dir.path()).expect("loads");
    assert_eq!(pipeline.info().max_tokens, 6);
    let long = "vectors are stored in segments and the log recovers";
    let embedded = pipeline.embed(&[long], Output::Full).expect("embeds");
    assert_eq!(embedded[0].tokens, 6);
    assert!(embedded[0].truncated);
    let mut cut = ids(long)[..5].to_vec();
    cut.push(3);
    assert_close(&embedded[0].vector, &reference(&weights, &cut), "truncated");
    let short = pipeline.embed(&["the log"], Output::Full).expect("embeds");
    assert!(!short[0].truncated);
}
