//! `sutra-validate`: checks a running stack the way the seed's `validate_scaling` did, and
//! measures the embedding service's cache tiers.
//!
//! ```text
//! sutra-validate check [--storage 127.0.0.1:50051] [--service http://127.0.0.1:8888]
//! sutra-validate bench --service http://127.0.0.1:8888 --case hit|miss|mixed
//! ```
//!
//! `check` prints the seed's report (single learn latency, N concurrent learns, cache
//! effectiveness) and exits 1 when a threshold fails: single learn < 2000 ms, concurrent
//! success > 95%, cache hit rate > 50%. `bench` reports latency percentiles of 1-text
//! `/embed` requests (`hit`: one warm text, answered by L1, or by L2 when the service runs with
//! EMBEDDING_CACHE_SIZE=0; `miss`: every text new) or the throughput of `mixed` traffic where
//! `--repeat` of the texts (default 0.7, the seed's warm-up hit rate) were seen before.
//! Everything it sends goes to the addresses given; counts and durations are bounded.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Validates and benchmarks a running sutra stack.
#[derive(Debug, Parser)]
#[command(name = "sutra-validate", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The seed's validation report; exit status 1 when a threshold fails.
    Check(CheckArgs),
    /// Latency or throughput of the embedding service's /embed.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// sutra-storage's address (its HTTP side serves POST /api/learn).
    #[arg(long, default_value = "127.0.0.1:50051")]
    storage: String,
    /// The embedding service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    service: String,
    /// Concurrent learns (at most 1000).
    #[arg(long, default_value_t = 10)]
    concurrent: usize,
    /// Texts in the cache test (at most 256).
    #[arg(long, default_value_t = 20)]
    texts: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Case {
    /// One warm text, requested again and again.
    Hit,
    /// A new text every request.
    Miss,
    /// `--repeat` of the texts seen before, the rest new; reports throughput.
    Mixed,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The embedding service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    service: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "hit")]
    case: Case,
    /// Requests (at most 1,000,000).
    #[arg(short = 'n', long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent clients (at most 256).
    #[arg(short = 'c', long, default_value_t = 1)]
    clients: usize,
    /// Share of texts already seen, for `mixed`.
    #[arg(long, default_value_t = 0.7)]
    repeat: f64,
    /// Distinct warm texts, for `mixed`.
    #[arg(long, default_value_t = 1000)]
    warm: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sutra-validate: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.mode {
            Mode::Check(args) => check(args).await,
            Mode::Bench(args) => bench(args).await.map(|()| true),
        }
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!(
                "sutra-validate: {}",
                sutra_embed::error_report(error.as_ref())
            );
            std::process::ExitCode::from(2)
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A unique text per run and index, so a rerun never hits an earlier run's cache.
fn text(run: u64, label: &str, index: usize) -> String {
    format!("sutra-validate {run} {label} {index}: the quick brown fox jumps over the lazy dog")
}

async fn learn(http: &reqwest::Client, storage: &str, content: String) -> anyhow::Result<()> {
    let response = http
        .post(format!("http://{storage}/api/learn"))
        .json(&json!({"content": content, "metadata": {"type": "validation"}}))
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(
        status == reqwest::StatusCode::CREATED,
        "learn answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

async fn embed(http: &reqwest::Client, service: &str, texts: &[String]) -> anyhow::Result<Value> {
    let response = http
        .post(format!("{service}/embed"))
        .json(&json!({ "texts": texts }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "/embed answered {status}: {body}");
    Ok(body)
}

#[allow(clippy::cast_precision_loss, reason = "rates for people")]
async fn check(args: CheckArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    println!("== sutra stack validation");

    let started = Instant::now();
    learn(&http, &args.storage, text(run, "single", 0))
        .await
        .context("single learn")?;
    let single = millis(started.elapsed());
    println!("1. single learn: {single:.1} ms");

    let concurrent = args.concurrent.clamp(1, 1000);
    let tasks: Vec<_> = (0..concurrent)
        .map(|index| {
            let (http, storage) = (http.clone(), args.storage.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let result = learn(&http, &storage, text(run, "concurrent", index)).await;
                (result.is_ok(), started.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(concurrent);
    let mut succeeded = 0_usize;
    for task in tasks {
        let (ok, elapsed) = task.await?;
        succeeded += usize::from(ok);
        latencies.push(millis(elapsed));
    }
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    let p95 = latencies[(latencies.len() * 95).div_ceil(100).saturating_sub(1)];
    let success = 100.0 * succeeded as f64 / concurrent as f64;
    println!(
        "2. {concurrent} concurrent learns: {success:.1}% succeeded, mean {mean:.1} ms, p95 {p95:.1} ms"
    );

    let texts: Vec<String> = (0..args.texts.clamp(1, 256))
        .map(|index| text(run, "cache", index))
        .collect();
    let started = Instant::now();
    embed(&http, &args.service, &texts)
        .await
        .context("first /embed")?;
    let first = millis(started.elapsed());
    // Three repeats: the seed's warm-up, after which most requests are hits.
    let started = Instant::now();
    let mut repeated = Value::Null;
    for _ in 0..3 {
        repeated = embed(&http, &args.service, &texts)
            .await
            .context("repeated /embed")?;
    }
    let second = millis(started.elapsed()) / 3.0;
    let stats: Value = http
        .get(format!("{}/cache/stats", args.service))
        .send()
        .await?
        .json()
        .await?;
    let hit_rate = stats["total"]["hit_rate"].as_f64().unwrap_or(0.0) * 100.0;
    println!(
        "3. cache: first {first:.1} ms, repeated {second:.1} ms (mean of 3) ({:.1}x faster, {} of {} cached), service hit rate {hit_rate:.1}%",
        first / second.max(1e-3),
        repeated["cached_count"],
        texts.len()
    );

    let checks = [
        ("single learn < 2000 ms", single < 2000.0),
        ("concurrent success > 95%", success > 95.0),
        ("cache hit rate > 50%", hit_rate > 50.0),
    ];
    let mut passed = true;
    for (name, ok) in checks {
        println!("   [{}] {name}", if ok { "PASS" } else { "FAIL" });
        passed &= ok;
    }
    println!(
        "{}",
        if passed {
            "VALIDATION PASSED"
        } else {
            "VALIDATION FAILED"
        }
    );
    Ok(passed)
}

#[allow(clippy::cast_precision_loss, reason = "rates for people")]
async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?;
    let run = u64::from(std::process::id());
    let requests = args.requests.clamp(1, 1_000_000);
    let clients = args.clients.clamp(1, 256);
    let warm = args.warm.clamp(1, 100_000);
    match args.case {
        Case::Hit => embed(&http, &args.service, &[text(run, "hot", 0)])
            .await
            .map(drop)?,
        Case::Mixed => {
            for chunk in (0..warm).collect::<Vec<_>>().chunks(64) {
                let texts: Vec<String> = chunk.iter().map(|&i| text(run, "warm", i)).collect();
                embed(&http, &args.service, &texts).await?;
            }
        }
        Case::Miss => {}
    }
    let per_client = requests.div_ceil(clients);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (http, service) = (http.clone(), args.service.clone());
            let (case, repeat) = (args.case, args.repeat);
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new(3)?;
                let mut rng = fastrand::Rng::with_seed(client as u64 + 1);
                for index in 0..per_client {
                    let body = match case {
                        Case::Hit => text(run, "hot", 0),
                        Case::Miss => text(run, &format!("miss {client}"), index),
                        Case::Mixed if rng.f64() < repeat => text(run, "warm", rng.usize(..warm)),
                        Case::Mixed => text(run, &format!("new {client}"), index),
                    };
                    let sent = Instant::now();
                    embed(&http, &service, &[body]).await?;
                    histogram
                        .record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                }
                anyhow::Ok(histogram)
            })
        })
        .collect();
    let mut histogram = Histogram::<u64>::new(3)?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = histogram.len() as f64 / elapsed;
    let quantile = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            json!({
                "case": format!("{:?}", args.case).to_lowercase(), "requests": histogram.len(),
                "clients": clients, "per_second": rate, "p50_ms": quantile(0.5),
                "p99_ms": quantile(0.99), "max_ms": histogram.max() as f64 / 1000.0,
            })
        );
    } else {
        println!(
            "{:?}: {} requests, {clients} clients, {rate:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            args.case,
            histogram.len(),
            quantile(0.5),
            quantile(0.99),
            histogram.max() as f64 / 1000.0
        );
    }
    Ok(())
}
