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
use sutra_embed::{resolve_model_dir, Output, Pipeline, Precision, Task};

/// What the texts are for: decides the model's task prefix.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TaskArg {
    /// Texts to be stored (nomic: `search_document: `).
    Document,
    /// Texts to search with (nomic: `search_query: `).
    Query,
}

/// Embeds texts with a local model: one text per line on stdin (or a JSON array with
/// --json), one JSON array of vectors on stdout, in input order.
#[derive(Debug, Parser)]
#[command(name = "sutra-embed", version, max_term_width = 100)]
struct Args {
    /// The model folder (config.json, tokenizer.json, model.safetensors) [default: the
    /// folder of MODEL_NAME under ./models, else under $XDG_DATA_HOME/sutra/models
    /// (~/.local/share/sutra/models), where scripts/fetch-model installs].
    #[arg(long, env = "SUTRA_MODEL_DIR")]
    model_dir: Option<PathBuf>,

    /// The model's name, looked up as a folder under the model roots above [default:
    /// all-MiniLM-L6-v2]. Ignored when SUTRA_MODEL_DIR is set.
    #[arg(long, env = "MODEL_NAME")]
    model_name: Option<String>,

    /// Output dimension: Matryoshka truncation (layer_norm, first DIM values, L2); 0 gives
    /// the model's full, L2-normalised vector as sentence-transformers returns it.
    #[arg(long, env = "MATRYOSHKA_DIM", default_value_t = 256)]
    dim: usize,

    /// Read a JSON array of strings instead of lines.
    #[arg(long)]
    json: bool,

    /// What the texts are for; picks the model's task prefix (nomic_bert models:
    /// `search_document: ` or `search_query: `; BERT models have none).
    #[arg(long, value_enum, default_value = "document")]
    task: TaskArg,

    /// Text prepended to every input instead of the task's prefix (`--prefix ''` for none).
    #[arg(long)]
    prefix: Option<String>,

    /// Threads for the model's CPU kernels; 0 = every physical core.
    #[arg(long, env = "EMBED_THREADS", default_value_t = 0)]
    threads: usize,

    /// Arithmetic of the dense layers: f32 (exact) or int8 (faster; cosine ≥ 0.99 to f32 on
    /// the golden texts).
    #[arg(long, env = "EMBED_PRECISION", default_value = "f32")]
    precision: Precision,

    /// Also print each text's token count and whether it was truncated, as objects.
    #[arg(long)]
    details: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sutra_embed::set_threads(args.threads);
    let dir = resolve_model_dir(args.model_dir.as_deref(), args.model_name.as_deref())
        .map_err(anyhow::Error::msg)?;
    let pipeline = Pipeline::load_with(&dir, args.precision)?;
    let task = match args.task {
        TaskArg::Document => Task::Document,
        TaskArg::Query => Task::Query,
    };
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| pipeline.info().prefixes.get(task).to_owned());
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
        .map(|text| format!("{prefix}{text}"))
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
