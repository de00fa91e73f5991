//! Durability through the server: a graceful restart keeps every write, a second server on
//! the same data directory is refused, and the stats show group commit at work.

use sutra_client::Client;
use sutra_protocol::{ConceptId, StoreConcept, Vector};
use sutra_server::{Server, ServerConfig};
use sutra_tests::TestServer;

fn concept(id: &str) -> anyhow::Result<StoreConcept> {
    let mut store = StoreConcept::new(ConceptId::parse(id)?, format!("content of {id}"));
    store.concept_type = "doc".to_owned();
    store.embedding = Some(Vector::new(
        (0..256).map(|index| index as f32).collect(),
        256,
    )?);
    Ok(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_acknowledged_write() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    for index in 0..300 {
        client.store_concept(concept(&format!("d{index}"))?).await?;
    }
    for index in 0..100 {
        assert!(client.delete_concept(&format!("d{index}")).await?);
    }
    let before = client.get_concept_by_id("d250").await?;
    let data = server.stop_keeping_data().await?;

    let server = TestServer::start_in(data, |_| {}).await?;
    let client = Client::connect(server.addr_string()).await?;
    assert_eq!(client.stats().await?.get("concepts"), Some(200));
    assert_eq!(client.get_concept_by_id("d250").await?, before);
    assert!(
        client.get_concept_by_id("d5").await.is_err(),
        "deleted ids stay deleted"
    );
    let stats = client.stats().await?;
    assert_eq!(stats.get("persistent"), Some(1));
    assert_eq!(
        stats.get("checkpoints"),
        Some(0),
        "nothing written since the shutdown checkpoint"
    );
    assert!(
        stats.get("checkpoint_lsn") >= Some(400),
        "the shutdown checkpoint covers every write"
    );
    server.stop().await
}

#[tokio::test]
async fn a_second_server_on_the_same_directory_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let first = Server::bind(ServerConfig::for_tests(dir.path().to_path_buf())).await?;
    let error = Server::bind(ServerConfig::for_tests(dir.path().to_path_buf()))
        .await
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .contains("in use by another sutra-storage process"),
        "{error}"
    );
    drop(first);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..50 {
        let addr = server.addr_string();
        tasks.spawn(async move {
            let client = Client::connect(addr).await?;
            for index in 0..20 {
                client
                    .store_concept(concept(&format!("w{writer}-{index}"))?)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let stats = Client::connect(server.addr_string()).await?.stats().await?;
    let appends = stats.get("wal_appends").unwrap_or(0);
    let syncs = stats.get("wal_syncs").unwrap_or(u64::MAX);
    assert_eq!(appends, 1000);
    // Not a timing assertion: with 50 writers waiting at once, a batch almost never holds one.
    assert!(
        syncs < appends,
        "{appends} appends took {syncs} fsyncs: no group commit"
    );
    server.stop().await
}
