//! Embeddings per second of the pipeline for batch sizes 1, 8, 32 and 64, on short texts
//! (~15 tokens) and medium texts (~128 tokens), as the embedding issue's benchmark asks.
//!
//! ```text
//! ./scripts/fetch-model
//! cargo run --release -p sutra-embed --example throughput [-- MODEL_DIR SECONDS_PER_CASE]
//! ```
//!
//! Threads: candle's CPU matmul uses all cores unless `RAYON_NUM_THREADS` says otherwise.

#![allow(
    clippy::cast_precision_loss,
    reason = "rates are printed, not computed with"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sutra_embed::{Output, Pipeline, DEFAULT_MODEL_DIR};

const SHORT: &str = "The storage server keeps every acknowledged write safe.";
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR), PathBuf::from);
    let seconds: f64 = args.next().map_or(Ok(3.0), |value| value.parse())?;
    let pipeline = Pipeline::load(&dir)?;
    let medium: String = (0..100)
        .map(|index| WORDS[index % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ");
    for (name, text) in [("short", SHORT), ("medium", medium.as_str())] {
        let tokens = pipeline.count_tokens(&[text])?[0];
        for batch in [1_usize, 8, 32, 64] {
            // Distinct texts per slot (a suffix number) so nothing is trivially repeated.
            let texts: Vec<String> = (0..batch).map(|index| format!("{text} {index}")).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            pipeline.embed(&refs, Output::Matryoshka(256))?; // warm-up
            let started = Instant::now();
            let mut embedded = 0_usize;
            while started.elapsed() < Duration::from_secs_f64(seconds) {
                embedded += pipeline.embed(&refs, Output::Matryoshka(256))?.len();
            }
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{name:>6} ({tokens:>3} tokens) batch {batch:>2}: {:>7.1} embeddings/s",
                embedded as f64 / elapsed
            );
        }
    }
    Ok(())
}
