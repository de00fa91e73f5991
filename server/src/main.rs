//! `sutra-storage`: parses the configuration, starts the server, stops it on SIGINT/SIGTERM.

use std::io::{IsTerminal, Write as _};

use anyhow::Context;
use clap::Parser;
use sutra_server::{Cli, Server, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: requests allocate on the runtime's threads and are freed
/// on the log thread, which glibc's arenas serve with locks and consolidation passes (about a
/// fifth of the store path's CPU in a profile; see bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
        sutra_server::config::SEED_VARIABLES_WITHOUT_EFFECT,
        |name| std::env::var(name).ok(),
    ) {
        warn!("{warning}");
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let report = sutra_embed::error_report(error.as_ref());
            tracing::error!("{report}");
            // Not eprintln!: it panics when stderr is closed.
            let _ = writeln!(std::io::stderr(), "sutra-storage: {report}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let server_threads = cli.server_threads;
    let config = ServerConfig::try_from(cli).context("invalid configuration")?;
    if let Some(model) = &config.model {
        // Before the runtime's threads start: candle reads its thread count from the
        // environment.
        sutra_embed::set_threads(model.threads);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if server_threads > 0 {
        runtime.worker_threads(usize::from(server_threads));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let storage_path = config.storage_path.clone();
        let fsync = config.wal.fsync;
        let (role, dimension) = (config.role, config.limits.vector_dimension);
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone())?;
        let server = Server::bind(config).await?;
        info!(
            addr = %server.local_addr(),
            role = role.as_str(),
            vector_dimension = dimension,
            version = sutra_server::executor::VERSION,
            storage_path = %storage_path.display(),
            ?fsync,
            "sutra-storage listening (binary protocol, text commands and HTTP on one port)"
        );
        server.run(shutdown).await?;
        Ok(())
    })
}

/// Cancels `token` on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed before this
/// returns (not when the task first runs), so a signal right after the "listening" line
/// already shuts down gracefully.
fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::spawn(async move {
        let signal = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        // Cancel first: nothing (not even a failing log) may stand between a signal and
        // shutdown.
        token.cancel();
        info!("{signal} received; shutting down");
    });
    Ok(())
}
