//! `sutra-embedding-service`: `serve` (the embedding service with L1/L2 caching) or `ml-base`
//! (a model replica). Stops on SIGINT/SIGTERM.

use std::io::{IsTerminal, Write as _};

use anyhow::Context;
use clap::Parser;
use sutra_embedding_service::config::{ServiceCli, ServiceRole};
use sutra_embedding_service::{api, ml_base, MlBaseConfig, ServiceConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The storage server's allocator: the model's activations are large, short-lived buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = ServiceCli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log nobody reads (stderr a closed pipe: `... 2>&1 | head`) must not stop the
        // server: by default a failed write is reported with `eprintln!`, which panics on
        // the same broken pipe, inside whatever task was logging (the signal handler, or
        // start-up itself). Lost log lines are the only cost.
        .log_internal_errors(false)
        .init();
    for warning in sutra_embed::seed_warnings(
        sutra_embedding_service::config::SEED_VARIABLES_WITHOUT_EFFECT,
        |name| std::env::var(name).ok(),
    ) {
        tracing::warn!("{warning}");
    }
    // Before the runtime's threads start: candle reads its thread count from the environment.
    let threads = match &cli.role {
        ServiceRole::Serve(args) => args.model.embed_threads,
        ServiceRole::MlBase(args) => args.model.embed_threads,
    };
    sutra_embed::set_threads(threads);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(cli.role)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let report = sutra_embed::error_report(error.as_ref());
            tracing::error!("{report}");
            // Not eprintln!: it panics when stderr is closed.
            let _ = writeln!(std::io::stderr(), "sutra-embedding-service: {report}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(role: ServiceRole) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone())?;
    match role {
        ServiceRole::Serve(args) => {
            let config = ServiceConfig::from(&args);
            let service = api::Service::start(&config, shutdown.clone()).await?;
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            tracing::info!(addr = %listener.local_addr()?, l2 = ?config.l2.as_ref().map(|l2| &l2.addr), replicas = ?config.replicas.as_ref().map(|r| &r.urls), "embedding service listening");
            sutra_embedding_service::serve(listener, api::router(service), shutdown).await?;
        }
        ServiceRole::MlBase(args) => {
            let config = MlBaseConfig::from(&args);
            let state = ml_base::MlBase::new(&config);
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            tracing::info!(addr = %listener.local_addr()?, instance_id = %config.instance_id, "ML-base listening; loading the model");
            let server = tokio::spawn(sutra_embedding_service::serve(
                listener,
                ml_base::router(std::sync::Arc::clone(&state)),
                shutdown.clone(),
            ));
            match ml_base::load(&config.model).await {
                Ok(batcher) => state.set_model(batcher),
                Err(error) => {
                    shutdown.cancel();
                    return Err(error.context("loading the model"));
                }
            }
            server.await??;
        }
    }
    Ok(())
}

/// Cancels `shutdown` on SIGINT or SIGTERM; the handlers are installed before this returns,
/// so a signal right after the "listening" line already shuts down gracefully.
fn cancel_on_signal(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}
