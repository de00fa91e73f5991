//! `sutra-embed`: embeds texts from stdin and prints one JSON array of vectors.
//!
//! ```text
//! printf 'first text\nsecond text\n' | sutra-embed            # 256-dim Matryoshka vectors
//! echo '["a", "b"]' | sutra-embed --json --dim 0              # full (384-dim) vectors
//! ```

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sutra_embed::{Output, Pipeline, DEFAULT_MODEL_DIR};

/// Embeds texts with a local model: one text per line on stdin (or a JSON array with
/// --json), one JSON array of vectors on stdout, in input order.
#[derive(Debug, Parser)]
#[command(name = "sutra-embed", version, max_term_width = 100)]
struct Args {
    /// The model folder (config.json, tokenizer.json, model.safetensors).
    #[arg(long, env = "SUTRA_MODEL_DIR", default_value = DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,

    /// Output dimension: Matryoshka truncation (layer_norm, first DIM values, L2); 0 gives
    /// the model's full, L2-normalised vector as sentence-transformers returns it.
    #[arg(long, env = "MATRYOSHKA_DIM", default_value_t = 256)]
    dim: usize,

    /// Read a JSON array of strings instead of lines.
    #[arg(long)]
    json: bool,

    /// Text prepended to every input (task prefixes such as `search_document: `).
    #[arg(long, default_value = "")]
    prefix: String,

    /// Also print each text's token count and whether it was truncated, as objects.
    #[arg(long)]
    details: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pipeline = Pipeline::load(&args.model_dir)?;
    let texts: Vec<String> = if args.json {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input)?;
        serde_json::from_str(&input).context("stdin is not a JSON array of strings")?
    } else {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .context("stdin is not UTF-8 text")?
    };
    let texts: Vec<String> = texts
        .into_iter()
        .map(|text| format!("{}{text}", args.prefix))
        .collect();
    let output = match args.dim {
        0 => Output::Full,
        dim => Output::Matryoshka(dim),
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embedded = pipeline.embed(&refs, output)?;
    let value = if args.details {
        serde_json::Value::from(
            embedded
                .iter()
                .map(|item| {
                    serde_json::json!({
                        "embedding": item.vector,
                        "tokens": item.tokens,
                        "truncated": item.truncated,
                    })
                })
                .collect::<Vec<_>>(),
        )
    } else {
        serde_json::Value::from(
            embedded
                .iter()
                .map(|item| item.vector.clone())
                .collect::<Vec<_>>(),
        )
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &value)?;
    writeln!(stdout)?;
    Ok(())
}
