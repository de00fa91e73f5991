//! `sutra-embed-bench`: embeddings per second of sutra's pipeline for batch sizes 1, 8, 32
//! and 64 on short (~15 tokens) and medium (~128 tokens) texts, with the achieved GFLOP/s
//! and its share of a matmul peak measured on the same machine in the same run.
//!
//! ```text
//! ./scripts/fetch-model
//! cargo run --release -p sutra-bench --bin sutra-embed-bench -- --threads 2
//! ```
//!
//! `bench/compare-sentence-transformers.sh` runs it beside sentence-transformers on PyTorch
//! with the same texts (`bench/st_bench.py` builds them the same way) and threads.

#![allow(
    clippy::cast_precision_loss,
    reason = "rates are printed, not computed with"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use sutra_embed::{resolve_model_dir, Output, Pipeline, Precision};

/// The server's allocator, so the pipeline is measured as the server runs it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The short text; every slot of a batch gets ` <slot number>` appended.
const SHORT: &str = "The storage server keeps every acknowledged write safe.";
/// The medium text is these words, cycled to 100 words.
const WORDS: [&str; 12] = [
    "embedding",
    "vectors",
    "are",
    "stored",
    "in",
    "memory",
    "mapped",
    "segments",
    "and",
    "the",
    "log",
    "recovers",
];

/// Embedding throughput of the local pipeline.
#[derive(Debug, Parser)]
#[command(name = "sutra-embed-bench", version, max_term_width = 100)]
struct Args {
    /// The model folder [default: the folder of MODEL_NAME under ./models, else under
    /// $XDG_DATA_HOME/sutra/models, where scripts/fetch-model installs].
    #[arg(long, env = "SUTRA_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// The model's name, looked up under the model roots [default: all-MiniLM-L6-v2].
    #[arg(long, env = "MODEL_NAME")]
    model_name: Option<String>,
    /// Seconds to measure each case (after one warm-up run).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Threads for the model's CPU kernels; 0 = every physical core.
    #[arg(long, env = "EMBED_THREADS", default_value_t = 0)]
    threads: usize,
    /// Arithmetic of the dense layers: f32 or int8.
    #[arg(long, env = "EMBED_PRECISION", default_value = "f32")]
    precision: Precision,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    batch_sizes: Vec<usize>,
    /// Text lengths, comma-separated: `short`, `medium` (100 words), or a number of words
    /// (the medium text's words, cycled).
    #[arg(long, value_delimiter = ',', default_value = "short,medium")]
    lengths: Vec<String>,
    /// Output dimension (Matryoshka), as the server stores it.
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// One JSON object per case instead of a table.
    #[arg(long)]
    json: bool,
}

/// The words of a text of `length` (`short`, `medium` or a number of words), `None` for
/// anything else.
fn words(length: &str) -> Option<usize> {
    match length {
        "short" => Some(0),
        "medium" => Some(100),
        _ => length.parse().ok().filter(|&words| words > 0),
    }
}

/// The text for `slot` of a batch of texts of `words` words (0: the short text).
fn text(words: usize, slot: usize) -> String {
    let base = if words == 0 {
        SHORT.to_owned()
    } else {
        (0..words)
            .map(|index| WORDS[index % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("{base} {slot}")
}

/// GFLOP/s of candle's f32 matmul at the model's feed-forward shape (2048 tokens × hidden ×
/// 4·hidden): the best this machine's kernels do, the yardstick for the pipeline's rate.
fn matmul_peak(hidden: usize, seconds: f64) -> anyhow::Result<f64> {
    use candle_core::{Device, Tensor};
    let (rows, inner, columns) = (2048, hidden, hidden * 4);
    let left = Tensor::rand(-1.0_f32, 1.0, (rows, inner), &Device::Cpu)?;
    let right = Tensor::rand(-1.0_f32, 1.0, (inner, columns), &Device::Cpu)?;
    left.matmul(&right)?;
    let started = Instant::now();
    let mut runs = 0_u32;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        left.matmul(&right)?;
        runs += 1;
    }
    let flops = 2.0 * (rows * inner * columns) as f64 * f64::from(runs);
    Ok(flops / started.elapsed().as_secs_f64() / 1e9)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = sutra_embed::set_threads(args.threads);
    let dir = resolve_model_dir(args.model_dir.as_deref(), args.model_name.as_deref())
        .map_err(anyhow::Error::msg)?;
    let pipeline = Pipeline::load_with(&dir, args.precision)?;
    let info = pipeline.info().clone();
    let peak = matmul_peak(info.hidden_size, args.seconds.min(2.0))?;
    if !args.json {
        println!(
            "model {} ({} dims, {}), {threads} threads, matmul peak {peak:.1} GFLOP/s",
            info.name, info.hidden_size, args.precision
        );
    }
    for length in &args.lengths {
        let length = length.as_str();
        let words = words(length).with_context(|| {
            format!("unknown text length {length:?} (short, medium or a number of words)")
        })?;
        for &batch in &args.batch_sizes {
            let texts: Vec<String> = (0..batch).map(|slot| text(words, slot)).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let tokens = pipeline.count_tokens(&refs)?;
            let width = tokens.iter().copied().max().context("an empty batch")?;
            let flops = info.architecture.forward_flops(batch, width);
            pipeline.embed(&refs, Output::Matryoshka(args.dim))?; // warm-up
            let started = Instant::now();
            let mut runs = 0_u32;
            while started.elapsed() < Duration::from_secs_f64(args.seconds) {
                pipeline.embed(&refs, Output::Matryoshka(args.dim))?;
                runs += 1;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let per_second = f64::from(runs) * batch as f64 / elapsed;
            let gflops = flops * f64::from(runs) / elapsed / 1e9;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "length": length, "batch": batch, "tokens": width,
                        "per_second": per_second, "gflops": gflops,
                        "peak_gflops": peak, "threads": threads,
                        "precision": args.precision.to_string(),
                    })
                );
            } else {
                // The peak is an f32 product's: an INT8 pass's rate is only comparable to it
                // as the f32 work it replaces.
                let share = match args.precision {
                    Precision::F32 => format!("{:>3.0}% of peak", 100.0 * gflops / peak),
                    Precision::Int8 => "f32-equivalent".to_owned(),
                };
                println!(
                    "{length:>6} ({width:>3} tokens) batch {batch:>2}: {per_second:>7.1} embeddings/s, {gflops:>5.1} GFLOP/s ({share})"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{text, words};

    #[test]
    fn lengths_are_named_or_counted_in_words() {
        assert_eq!(words("short"), Some(0));
        assert_eq!(words("medium"), Some(100));
        assert_eq!(words("40"), Some(40));
        for bad in ["0", "long", "-3", ""] {
            assert_eq!(words(bad), None, "{bad:?}");
        }
        assert_eq!(text(3, 7), "embedding vectors are 7");
        assert!(text(0, 2).ends_with("safe. 2"));
        assert_eq!(text(100, 0).split(' ').count(), 101);
    }
}
