//! `sutra-bench`: see `sutra-bench --help` and the README's "Benchmarks" section.
//!
//! Exit status: 0 when every test ran and no request got an error answer (misses are not
//! errors), 1 when the run failed (no server, a connection lost, an undecodable answer), 3
//! when the tests ran but some requests were answered with errors.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sutra_bench::args::{Args, Test};
use sutra_bench::report::{self, RunInfo, RunJson, TestReport};
use sutra_bench::run::{self, Plan};
use sutra_bench::workload::{Ids, Shape, Templates, VectorFile};
use sutra_protocol::{HealthInfo, Request, Response};
use tokio::net::TcpStream;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    };
    let result = runtime
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(bench(&args)));
    match result {
        Ok(reports) if reports.iter().any(|report| report.tally.errors > 0) => {
            eprintln!("sutra-bench: some requests were answered with errors (see above)");
            ExitCode::from(3)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sutra-bench: {}", sutra_embed::error_report(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: &Args) -> anyhow::Result<Vec<TestReport>> {
    let address = args.address();
    let health = health(&address, args.auth.as_deref(), args.timeout).await?;
    let dimension = args.dimension.unwrap_or(health.vector_dimension);
    if dimension != 0 && dimension != health.vector_dimension {
        bail!(
            "--dimension {dimension} does not match the server's VECTOR_DIMENSION {}",
            health.vector_dimension
        );
    }
    let templates = Arc::new(Templates::new(&Shape {
        content_bytes: args.data_size as usize,
        dimension,
        concept_type: args.concept_type.clone(),
        query_limit: args.query_limit,
        batch: args.batch,
        search_k: args.search_k,
        exact: args.exact,
        ef: args.ef,
        vectors: args
            .vectors
            .as_deref()
            .map(|path| VectorFile::read(path, dimension))
            .transpose()
            .context("--vectors")?,
        queries: args
            .queries
            .as_deref()
            .map(|path| VectorFile::read(path, dimension))
            .transpose()
            .context("--queries")?,
    })?);
    let info = RunInfo {
        address: address.clone(),
        clients: args.clients,
        pipeline: args.pipeline,
        content_bytes: args.data_size,
        vector_dimension: dimension,
        store_frame_bytes: templates.store_frame_bytes(),
        keyspace: args.keyspace,
        batch: args.batch,
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        rate: args.rate,
        threads: args.threads,
    };
    let show_progress = !args.json && !args.csv && !args.quiet && std::io::stdout().is_terminal();
    let plan = |test: Test| Plan {
        test,
        address: address.clone(),
        clients: args.clients,
        pipeline: args.pipeline,
        requests: args.requests,
        duration: args.duration,
        rate: args.rate,
        ids: Ids::Random,
        keyspace: args.keyspace,
        get_percent: args.get_percent,
        seed: args.seed,
        timeout: args.timeout,
        auth: args.auth.clone(),
    };

    if args.prefill {
        prefill(args, plan(Test::Store), &templates, show_progress).await?;
    }

    if args.csv {
        println!("{}", report::CSV_HEADER);
    }
    let mut reports = Vec::with_capacity(args.tests.len());
    for &test in &args.tests {
        let plan = plan(test);
        let report = run::run(&plan, &templates, progress(show_progress, &plan))
            .await
            .with_context(|| format!("test {test}"))?;
        if args.csv {
            println!("{}", report::csv_row(&report));
        } else if args.quiet {
            println!("{}", report::quiet_line(&report));
        } else if !args.json {
            println!("{}", report::text_block(&report, &info));
        }
        reports.push(report);
    }
    if args.json {
        let document = RunJson {
            info,
            tests: reports.iter().map(TestReport::to_json).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    Ok(reports)
}

/// Stores every key of the keyspace once (untimed), so gets hit.
async fn prefill(
    args: &Args,
    store: Plan,
    templates: &Arc<Templates>,
    show_progress: bool,
) -> anyhow::Result<()> {
    let prefill = Plan {
        requests: args.keyspace,
        duration: None,
        rate: None,
        ids: Ids::Sequential,
        pipeline: args.pipeline.max(32),
        ..store
    };
    let report = run::run(&prefill, templates, progress(show_progress, &prefill)).await?;
    if report.tally.errors > 0 {
        bail!(
            "prefill: {} stores failed (first: {})",
            report.tally.errors,
            report.tally.first_error.unwrap_or_default()
        );
    }
    if !args.json && !args.csv {
        eprintln!(
            "prefilled {} keys in {:.2} s",
            args.keyspace,
            report.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// A progress bar on stderr for a terminal; none otherwise.
fn progress(show: bool, plan: &Plan) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = match plan.duration {
        Some(_) => ProgressBar::new_spinner(),
        None => ProgressBar::new(plan.requests),
    };
    let style = ProgressStyle::with_template(
        "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(plan.test.name().to_uppercase());
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Asks the server for Health (after Auth, with a token): checks it is a sutra-storage server
/// and reads its dimension.
async fn health(
    address: &str,
    auth: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<HealthInfo> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address} (is sutra-storage running?)"))?;
        if let Some(token) = auth {
            run::authenticate(&mut stream, token).await?;
        }
        match run::exchange(&mut stream, Request::Health).await? {
            Response::Health(info) => Ok(info),
            other => Err(anyhow::anyhow!("unexpected answer to Health: {other:?}")),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{address} did not answer Health within {timeout:?}"))?
}
