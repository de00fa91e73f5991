//! The engine's HNSW index in process, the way ANN benchmarks measure a library: build time,
//! then queries/s and recall@k at each search breadth, on one thread and on several. The
//! vectors come from files (raw little-endian f32, `dim` values per vector), so the same data
//! can be given to hnswlib and faiss (`bench/compare-ann.sh`).
//!
//! A search here is the whole of `Engine::search`: the graph, the exact pass over vectors not
//! yet in it, the check of each candidate against the store and its exact score.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use sutra_engine::{Durability, Engine, EngineConfig, IndexConfig, IndexKind, SystemClock};
use sutra_protocol::{ConceptId, StoreConcept, Vector};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Builds the engine's HNSW index over vectors from a file and measures its searches.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Vectors to store: raw little-endian f32, DIM per vector.
    #[arg(long)]
    base: PathBuf,
    /// Query vectors, same format.
    #[arg(long)]
    queries: PathBuf,
    /// Values per vector.
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// HNSW links per node (HNSW_M).
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW_EF_CONSTRUCTION.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// Threads building the graph (HNSW_THREADS).
    #[arg(long, default_value_t = 2)]
    build_threads: usize,
    /// Search breadths to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    ef: Vec<usize>,
    /// Query threads to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Seconds per (ef, threads) case.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Every N-th vector gets the type "rare" (the rest "common"); the filtered cases search
    /// that type (the engine decides between the filtered graph and a scan of the type, as
    /// the server does). 0: no filtered cases.
    #[arg(long, default_value_t = 100)]
    rare_every: usize,
}

fn read_vectors(path: &PathBuf, dim: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() % (dim * 4) == 0,
        "{} holds {} bytes, not a whole number of {dim}-value f32 vectors",
        path.display(),
        bytes.len()
    );
    Ok(bytes
        .chunks_exact(dim * 4)
        .map(|vector| {
            vector
                .chunks_exact(4)
                .map(|value| f32::from_le_bytes([value[0], value[1], value[2], value[3]]))
                .collect()
        })
        .collect())
}

fn concept_type(index: usize, rare_every: usize) -> &'static str {
    if rare_every > 0 && index.is_multiple_of(rare_every) {
        "rare"
    } else {
        "common"
    }
}

fn number(id: &ConceptId) -> usize {
    id.as_str()[1..].parse().unwrap_or(usize::MAX)
}

/// One measured case.
#[derive(serde::Serialize)]
struct Case {
    filter: &'static str,
    ef: usize,
    threads: usize,
    qps: f64,
    recall: f64,
    /// The engine answered by scanning (a selective filter).
    scanned: bool,
}

/// Stores every vector and waits for the graph to take them in: (storing time, build time).
fn fill(engine: &Engine, base: &[Vec<f32>], args: &Args) -> anyhow::Result<(Duration, Duration)> {
    let dimension = u32::try_from(args.dim)?;
    let started = Instant::now();
    for (chunk_number, chunk) in base.chunks(1000).enumerate() {
        let requests = chunk
            .iter()
            .enumerate()
            .map(|(offset, values)| {
                let index = chunk_number * 1000 + offset;
                let mut request = StoreConcept::new(ConceptId::parse(&format!("v{index}"))?, "");
                request.concept_type = concept_type(index, args.rare_every).to_owned();
                request.embedding = Some(Vector::new(values.clone(), dimension)?);
                Ok(request)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        engine.store_many(requests)?.wait_blocking()?;
    }
    let stored = started.elapsed();
    while engine.index_pending().context("no index")? > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let build = started.elapsed();

    Ok((stored, build))
}

/// Recall against the exact answer, then queries/s, at each ef and thread count.
fn measure(engine: &Engine, queries: &[Vec<f32>], args: &Args) -> anyhow::Result<Vec<Case>> {
    let mut filters = vec![""];
    if args.rare_every > 0 {
        filters.push("rare");
    }
    let mut cases = Vec::new();
    for filter in filters {
        let truth: Vec<Vec<usize>> = queries
            .iter()
            .map(|query| {
                let found = engine.search(query, args.k, filter, true, 0)?;
                Ok(found
                    .neighbours
                    .iter()
                    .map(|n| number(&n.concept.id))
                    .collect())
            })
            .collect::<anyhow::Result<_>>()?;
        for &ef in &args.ef {
            let (mut hits, mut wanted, mut scans) = (0_usize, 0_usize, 0_usize);
            for (query, truth) in queries.iter().zip(&truth) {
                let found = engine.search(query, args.k, filter, false, ef)?;
                ensure!(
                    !filter.is_empty() || !found.exact,
                    "the index did not answer"
                );
                scans += usize::from(found.exact);
                hits += found
                    .neighbours
                    .iter()
                    .filter(|n| truth.contains(&number(&n.concept.id)))
                    .count();
                wanted += truth.len();
            }
            #[expect(clippy::cast_precision_loss, reason = "counts")]
            let recall = hits as f64 / wanted as f64;
            for &threads in &args.threads {
                let done = AtomicUsize::new(0);
                let deadline = Duration::from_secs_f64(args.seconds);
                let begun = Instant::now();
                std::thread::scope(|scope| {
                    for thread in 0..threads {
                        let (engine, queries, done) = (&engine, &queries, &done);
                        scope.spawn(move || {
                            let mut next = thread;
                            while begun.elapsed() < deadline {
                                let query = &queries[next % queries.len()];
                                if engine.search(query, args.k, filter, false, ef).is_ok() {
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                next += threads;
                            }
                        });
                    }
                });
                #[expect(clippy::cast_precision_loss, reason = "counts")]
                let qps = done.load(Ordering::Relaxed) as f64 / begun.elapsed().as_secs_f64();
                cases.push(Case {
                    filter: if filter.is_empty() { "none" } else { "rare" },
                    ef,
                    threads,
                    qps,
                    recall,
                    scanned: scans > 0,
                });
            }
        }
    }
    Ok(cases)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = read_vectors(&args.base, args.dim)?;
    let queries = read_vectors(&args.queries, args.dim)?;
    ensure!(!base.is_empty() && !queries.is_empty(), "no vectors");
    let dimension = u32::try_from(args.dim)?;
    let index = IndexConfig {
        kind: IndexKind::Hnsw,
        m: args.m,
        ef_construction: args.ef_construction,
        ef_search: 64,
        // Unfiltered searches take the graph; filtered ones follow the engine's own choice.
        exact_below: 1,
        threads: args.build_threads,
    };
    let engine = Engine::open(
        EngineConfig {
            default_ttl: None,
            max_page_bytes: 1 << 20,
            vector_dimension: dimension,
            durability: Durability::InMemory,
            capacity: None,
            index,
        },
        Arc::new(SystemClock),
    )?;

    let (stored, build) = fill(&engine, &base, &args)?;
    let stats = engine.index_stats().context("no index")?;
    let cases = measure(&engine, &queries, &args)?;
    let report = serde_json::json!({
        "side": "sutra",
        "vectors": base.len(),
        "store_s": stored.as_secs_f64(),
        "build_s": build.as_secs_f64(),
        "index_memory_bytes": stats.memory_bytes,
        "bytes_per_vector": stats.memory_bytes / stats.indexed.max(1),
        "cases": cases,
    });
    println!("{report}");
    Ok(())
}
