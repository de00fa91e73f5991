//! GetMany, StoreMany and ClearType: one round trip per batch, answers in request order,
//! StoreMany atomic, limits at N and N+1, and all of it durable across a restart.

use sutra_client::Client;
use sutra_protocol::{ConceptId, ErrorCode, Limits, Request, Response, StoreConcept, Vector};
use sutra_tests::{request_bytes, RawConnection, TestServer};

fn concept(id: &str, concept_type: &str) -> anyhow::Result<StoreConcept> {
    let mut store = StoreConcept::new(ConceptId::parse(id)?, format!("text of {id}"));
    store.concept_type = concept_type.to_owned();
    store.embedding = Some(Vector::new(vec![0.5; 256], 256)?);
    Ok(store)
}

#[tokio::test]
async fn get_many_answers_in_request_order_with_misses() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    let outcomes = client
        .store_many(vec![
            concept("a", "emb")?,
            concept("b", "emb")?,
            concept("a", "emb")?,
        ])
        .await?;
    let created: Vec<bool> = outcomes.iter().map(|outcome| outcome.created).collect();
    assert_eq!(
        created,
        vec![true, true, false],
        "a later item with the same id replaces the earlier"
    );
    let found = client.get_many(&["b", "missing", "a", "b"]).await?;
    let ids: Vec<Option<&str>> = found
        .iter()
        .map(|item| item.as_ref().map(|concept| concept.id.as_str()))
        .collect();
    assert_eq!(ids, vec![Some("b"), None, Some("a"), Some("b")]);
    let stats = client.stats().await?;
    assert_eq!(
        (
            stats.get("gets"),
            stats.get("gets_not_found"),
            stats.get("stores")
        ),
        (Some(4), Some(1), Some(3))
    );
    server.stop().await
}

#[tokio::test]
async fn clear_type_removes_only_that_type() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    let batch = (0..64)
        .map(|index| concept(&format!("e{index}"), "embedding_cache"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    client.store_many(batch).await?;
    client.store_concept(concept("keep", "note")?).await?;
    assert_eq!(client.clear_type("embedding_cache").await?, 64);
    assert_eq!(client.clear_type("embedding_cache").await?, 0);
    assert_eq!(client.stats().await?.get("concepts"), Some(1));
    assert!(client.get_concept_by_id("keep").await.is_ok());
    server.stop().await
}

#[tokio::test]
async fn batch_limits_hold_at_n_and_n_plus_one() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| config.limits.max_batch_items = 4).await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    let ids = |count: usize| {
        (0..count)
            .map(|index| ConceptId::parse(&format!("i{index}")).unwrap())
            .collect::<Vec<_>>()
    };
    conn.send(&request_bytes(1, Request::GetMany { ids: ids(4) }))
        .await?;
    assert!(matches!(conn.expect().await?.response, Response::Many(found) if found.len() == 4));
    conn.send(&request_bytes(2, Request::GetMany { ids: ids(5) }))
        .await?;
    let frame = conn.expect().await?;
    assert!(
        matches!(&frame.response, Response::Error(error) if error.code == ErrorCode::InvalidArgument),
        "{frame:?}"
    );
    // A StoreMany with one bad item stores nothing.
    let mut bad = concept("bad", "t")?;
    bad.embedding = Some(Vector::new(vec![0.0; 3], 3)?);
    conn.send(&request_bytes(
        3,
        Request::StoreMany(vec![concept("good", "t")?, bad]),
    ))
    .await?;
    let frame = conn.expect().await?;
    assert!(
        matches!(&frame.response, Response::Error(error) if error.code == ErrorCode::DimensionMismatch),
        "{frame:?}"
    );
    conn.send(&request_bytes(
        4,
        Request::GetMany {
            ids: vec![ConceptId::parse("good")?],
        },
    ))
    .await?;
    assert!(
        matches!(conn.expect().await?.response, Response::Many(found) if found[0].is_none()),
        "nothing stored"
    );
    server.stop().await
}

#[tokio::test]
async fn get_many_that_cannot_fit_a_frame_is_refused_whole() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        config.limits.max_frame_bytes = 600 * 1024;
        config.limits.max_content_bytes = 256 * 1024;
        config.limits.max_attribute_bytes = 1024;
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    for index in 0..3 {
        let mut big = concept(&format!("big{index}"), "t")?;
        big.content = "x".repeat(250 * 1024);
        client.store_concept(big).await?;
    }
    assert_eq!(client.get_many(&["big0", "big1"]).await?.len(), 2);
    let error = client
        .get_many(&["big0", "big1", "big2"])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
    assert!(error.to_string().contains("fewer ids"), "{error}");
    assert!(
        Limits::default().max_batch_items >= 64,
        "an embedding batch of 64 fits one request"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_clears_survive_a_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    client
        .store_many(vec![
            concept("x1", "a")?,
            concept("x2", "b")?,
            concept("x3", "a")?,
        ])
        .await?;
    client.clear_type("a").await?;
    client.store_many(vec![concept("x4", "a")?]).await?;
    let data = server.stop_keeping_data().await?;
    let server = TestServer::start_in(data, |_| {}).await?;
    let client = Client::connect(server.addr_string()).await?;
    let found = client.get_many(&["x1", "x2", "x3", "x4"]).await?;
    let present: Vec<bool> = found.iter().map(Option::is_some).collect();
    assert_eq!(present, vec![false, true, false, true]);
    server.stop().await
}
