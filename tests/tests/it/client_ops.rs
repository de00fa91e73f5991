//! Every operation through `sutra-client`, pipelining on one connection, and many
//! connections at once.

use std::sync::Arc;

use sutra_client::{BlockingClient, Client, ClientError};
use sutra_protocol::{ConceptId, ErrorCode, StoreConcept, Vector};
use sutra_tests::TestServer;

fn concept(id: &str, concept_type: &str) -> StoreConcept {
    let mut store = StoreConcept::new(ConceptId::parse(id).unwrap(), format!("content of {id}"));
    store.concept_type = concept_type.to_owned();
    store.model = "all-MiniLM-L6-v2".to_owned();
    store
        .attributes
        .insert("source".to_owned(), "test".to_owned());
    store.embedding =
        Some(Vector::new((0..256).map(|index| index as f32 / 256.0).collect(), 256).unwrap());
    store
}

#[tokio::test]
async fn every_operation_round_trips_through_the_client() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;

    let health = client.health_check().await?;
    assert_eq!(
        (
            health.status.as_str(),
            health.role.as_str(),
            health.vector_dimension
        ),
        ("ok", "normal", 256)
    );
    assert_eq!(health.model, "", "no model: learning answers NoModel");
    // The limits a client sizes its batches by are in Stats.
    let stats = client.stats().await?;
    let counter = |name: &str| {
        stats
            .counters
            .iter()
            .find(|(counter, _)| counter == name)
            .map(|(_, value)| *value)
    };
    assert_eq!(counter("max_batch_items"), Some(256));
    assert_eq!(counter("max_frame_bytes"), Some(4 * 1024 * 1024));
    assert_eq!(counter("max_id_bytes"), Some(512));

    let outcome = client.store_concept(concept("doc-1", "note")).await?;
    assert!(outcome.created);
    assert!(
        !client
            .store_concept(concept("doc-1", "note"))
            .await?
            .created,
        "second store replaces"
    );
    client.store_concept(concept("doc-2", "note")).await?;
    client.store_concept(concept("doc-3", "other")).await?;

    let fetched = client.get_concept_by_id("doc-1").await?;
    assert_eq!(fetched.content, "content of doc-1");
    assert_eq!(
        fetched.attributes.get("source").map(String::as_str),
        Some("test")
    );
    assert_eq!(fetched.embedding.as_ref().map(Vector::len), Some(256));
    assert_eq!(
        fetched.created_at_ms,
        outcome.created_at_ms.max(fetched.created_at_ms)
    );

    let page = client.query_by_type("note", 1, "").await?;
    assert_eq!(page.concepts.len(), 1);
    assert_eq!(page.next_cursor, "doc-1");
    let page = client.query_by_type("note", 1, &page.next_cursor).await?;
    assert_eq!(page.concepts[0].id.as_str(), "doc-2");
    assert_eq!(page.next_cursor, "");

    assert!(client.delete_concept("doc-1").await?);
    assert!(!client.delete_concept("doc-1").await?);
    let missing = client.get_concept_by_id("doc-1").await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));

    let stats = client.stats().await?;
    assert_eq!(stats.get("concepts"), Some(2));
    assert_eq!(stats.get("stores"), Some(4));
    assert_eq!(stats.get("gets_not_found"), Some(1));
    server.stop().await
}

#[tokio::test]
async fn wrong_dimension_is_a_typed_error_and_stores_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    let mut store = concept("bad", "note");
    store.embedding = Some(Vector::new(vec![0.0; 3], 3)?);
    let error = client.store_concept(store).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::DimensionMismatch));
    assert!(error.to_string().contains("expected 256"), "{error}");
    assert_eq!(
        client.get_concept_by_id("bad").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(client.stats().await?.get("concepts"), Some(0));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_requests_share_one_connection() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..10_000_u32 {
        let client = client.clone();
        tasks.spawn(async move {
            let id = format!("p-{index}");
            client
                .store_concept(StoreConcept::new(ConceptId::parse(&id)?, id.clone()))
                .await?;
            let fetched = client.get_concept_by_id(&id).await?;
            anyhow::ensure!(fetched.content == id, "response routed to the wrong caller");
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let stats = client.stats().await?;
    assert_eq!(stats.get("concepts"), Some(10_000));
    assert_eq!(
        stats.get("connections_total"),
        Some(1),
        "all requests used one connection"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_connections() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..64 {
        let addr = server.addr_string();
        tasks.spawn(async move {
            let client = Client::connect(addr).await?;
            for step in 0..50 {
                let id = format!("c{connection}-{step}");
                client
                    .store_concept(concept(&id, &format!("type-{}", connection % 4)))
                    .await?;
                anyhow::ensure!(client.get_concept_by_id(&id).await?.id.as_str() == id);
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let client = Client::connect(server.addr_string()).await?;
    assert_eq!(client.stats().await?.get("concepts"), Some(64 * 50));
    let mut listed = 0;
    let mut cursor = String::new();
    loop {
        let page = client.query_by_type("type-0", 100, &cursor).await?;
        listed += page.concepts.len();
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(listed, 16 * 50);
    server.stop().await
}

#[tokio::test]
async fn client_reconnects_after_the_connection_breaks() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        config.idle_timeout = std::time::Duration::from_millis(200);
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    client.store_concept(concept("r1", "t")).await?;
    // The server closes the idle connection; the client notices, and the next request
    // opens a new connection instead of failing.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(client.get_concept_by_id("r1").await?.id.as_str(), "r1");
    assert!(client.stats().await?.get("connections_total").unwrap_or(0) >= 2);
    server.stop().await
}

#[tokio::test]
async fn connect_errors_are_typed() {
    // Bind and drop a listener to get a port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = Client::connect(format!("127.0.0.1:{port}"))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_client_works_from_plain_threads() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let addr = server.addr_string();
    let fetched =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<sutra_protocol::Concept>> {
            let client = BlockingClient::connect(addr)?;
            client.store_concept(concept("b1", "t"))?;
            Ok(client.get_concept_by_id("b1")?)
        })
        .await??;
    assert_eq!(fetched.content, "content of b1");
    server.stop().await
}
