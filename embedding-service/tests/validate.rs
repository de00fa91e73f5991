//! `sutra-validate check` against a real stack on loopback (sutra-storage with the model,
//! the embedding service) passes, and fails with exit status 1 when a threshold fails.

use std::process::Command;
use std::sync::Arc;

use sutra_embedding_service::api::{router, Service};
use sutra_embedding_service::ServiceConfig;
use sutra_server::ModelConfig;
use sutra_tests::TestServer;
use tokio_util::sync::CancellationToken;

mod common;
use common::model_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_check_passes_on_a_working_stack() -> anyhow::Result<()> {
    let storage = TestServer::start_with(|config| {
        config.model = Some(ModelConfig::new(model_dir()));
    })
    .await?;
    let shutdown = CancellationToken::new();
    let service = Service::start(&ServiceConfig::for_tests(model_dir()), shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(sutra_embedding_service::serve(
        listener,
        router(Arc::clone(&service)),
        shutdown.clone(),
    ));

    let run = |storage: String, service: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_sutra-validate"))
                .args(["check", "--storage", &storage, "--service", &service])
                .args(["--concurrent", "8", "--texts", "5"])
                .output()
        })
    };
    let output = run(storage.addr_string(), service_url.clone()).await??;
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("VALIDATION PASSED"), "{report}");
    assert!(
        report.contains("8 concurrent learns: 100.0% succeeded"),
        "{report}"
    );

    // A storage server without a model: learns fail, so the check fails (exit status 2: the
    // single learn is an error, not a number).
    let bare = TestServer::start().await?;
    let output = run(bare.addr_string(), service_url).await??;
    assert!(!output.status.success());
    shutdown.cancel();
    bare.stop().await?;
    storage.stop().await
}
