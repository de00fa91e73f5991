//! sutra's embedding pipeline: a local BERT-family or NomicBert model on candle (f32, CPU),
//! mean pooling, Matryoshka truncation (layer_norm → first `d` values → L2), and a dynamic
//! batcher on its own thread. No networking: the storage server and the embedding service call it
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
mod bert;
mod kernels;
mod locate;
mod model;
mod pipeline;

pub use batcher::{Batcher, BatcherConfig};
pub use model::{Architecture, EmbedError, ModelDir, Precision, Prefixes, Task, MAX_TOKENS};
pub use pipeline::{Embedded, Output, Pipeline, Pooled, SUB_BATCH, SUB_BATCH_TOKENS};

pub use locate::{model_roots, resolve_model_dir, user_models_dir, DEFAULT_MODEL};

/// Sets the threads candle's CPU kernels use (`EMBED_THREADS`) and returns the number in
/// effect; 0 keeps candle's default (`RAYON_NUM_THREADS` if set, else every physical core).
///
/// Call it first thing in `main`, before any other thread starts: candle reads the setting
/// from the environment once, on the first model run.
pub fn set_threads(threads: usize) -> usize {
    if threads > 0 {
        let value = threads.to_string();
        std::env::set_var("RAYON_NUM_THREADS", &value);
        std::env::set_var("CANDLE_NUM_THREADS", &value);
    }
    self::threads()
}

/// The threads candle's CPU kernels use.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// One warning line per variable of `table` (name, what to do instead) that `lookup` finds
/// set: every binary that reads the seed's environment says so at start-up when a variable the
/// seed sets changes nothing in it.
pub fn seed_warnings(
    table: &[(&str, &str)],
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    table
        .iter()
        .filter_map(|(name, instead)| {
            lookup(name).map(|value| format!("{name}={value} has no effect here: {instead}"))
        })
        .collect()
}

/// An error and its causes on one line, `outer: cause: cause`, as anyhow's `{:#}` writes it,
/// but without a cause whose text the line already holds (an error that writes its source
/// into its own message, as most of ours do, would otherwise print it twice). For the
/// binaries' last words.
pub fn error_report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_report_writes_each_cause_once() {
        #[derive(Debug)]
        struct Outer(&'static str, std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.1)
            }
        }
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let repeats = Outer("cannot listen on 127.0.0.1:1: Address already in use", io());
        assert_eq!(
            super::error_report(&repeats),
            "cannot listen on 127.0.0.1:1: Address already in use"
        );
        let adds = Outer("cannot listen on 127.0.0.1:1", io());
        assert_eq!(
            super::error_report(&adds),
            "cannot listen on 127.0.0.1:1: Address already in use"
        );
    }

    #[test]
    fn seed_warnings_name_each_variable_set_and_what_to_use() {
        let table = [
            ("CACHE_MODE", "use SUTRA_ROLE"),
            ("SUTRA_EDITION", "one edition"),
        ];
        let warnings = super::seed_warnings(&table, |name| {
            (name == "CACHE_MODE").then(|| "true".to_owned())
        });
        assert_eq!(
            warnings,
            ["CACHE_MODE=true has no effect here: use SUTRA_ROLE"]
        );
    }
}
