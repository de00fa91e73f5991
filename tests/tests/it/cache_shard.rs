//! The bounded (cache shard) store over the wire: the MAX_CONCEPTS bound under 64
//! concurrent clients, LRU eviction, EVICTION_POLICY=none's Full error, evictions that stay
//! evicted across a restart, and the hit/miss/eviction counters.

use sutra_client::Client;
use sutra_protocol::{ConceptId, ErrorCode, StoreConcept, Vector};
use sutra_server::{Capacity, EvictionPolicy};
use sutra_tests::{http_get, TestServer};

fn concept(id: &str) -> anyhow::Result<StoreConcept> {
    let mut store = StoreConcept::new(ConceptId::parse(id)?, format!("text of {id}"));
    store.concept_type = "embedding_cache".to_owned();
    store.embedding = Some(Vector::new(vec![0.5; 256], 256)?);
    Ok(store)
}

fn bounded(
    max_concepts: u64,
    policy: EvictionPolicy,
) -> impl FnOnce(&mut sutra_server::ServerConfig) {
    move |config| {
        config.capacity = Some(Capacity {
            max_concepts,
            policy,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_under_64_concurrent_clients_and_the_counters_add_up() -> anyhow::Result<()>
{
    let server = TestServer::start_with(bounded(200, EvictionPolicy::Lru)).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..64 {
        let client = Client::connect(server.addr_string()).await?;
        tasks.spawn(async move {
            for n in 0..20 {
                client
                    .store_concept(concept(&format!("w{writer}-{n}"))?)
                    .await?;
                // Every other get hits (its own recent store), the rest miss.
                let _ = client.get_concept_by_id(&format!("w{writer}-{n}")).await;
                let _ = client
                    .get_concept_by_id(&format!("absent-{writer}-{n}"))
                    .await;
            }
            anyhow::Ok(())
        });
    }
    let probe = Client::connect(server.addr_string()).await?;
    while !tasks.is_empty() {
        let stats = probe.stats().await?;
        assert!(stats.get("concepts").unwrap_or(0) <= 200, "{stats:?}");
        if let Some(done) = tasks.try_join_next() {
            done??;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let stats = probe.stats().await?;
    let get = |name: &str| stats.get(name).unwrap_or(u64::MAX);
    assert_eq!(get("concepts"), 200);
    assert_eq!(get("max_concepts"), 200);
    assert_eq!(get("evictions"), 64 * 20 - 200);
    assert_eq!(get("hits") + get("misses"), get("gets"));
    assert_eq!(get("misses"), 64 * 20, "every absent id misses");
    // A concept stored and read back at once is never the least recently used of 200.
    assert_eq!(get("hits"), 64 * 20);
    let (status, body) = http_get(server.addr, "/stats").await?;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert!(
        (json["hit_rate"].as_f64().unwrap() - 0.5).abs() < 1e-9,
        "{json}"
    );
    server.stop().await
}

#[tokio::test]
async fn the_least_recently_used_goes_first_over_the_wire() -> anyhow::Result<()> {
    let server = TestServer::start_with(bounded(3, EvictionPolicy::Lru)).await?;
    let client = Client::connect(server.addr_string()).await?;
    for id in ["a", "b", "c"] {
        client.store_concept(concept(id)?).await?;
    }
    client.get_concept_by_id("a").await?;
    client.get_many(&["b"]).await?;
    client.store_concept(concept("d")?).await?; // c was least recently used
    let found = client.get_many(&["a", "b", "c", "d"]).await?;
    let held: Vec<bool> = found.iter().map(Option::is_some).collect();
    assert_eq!(held, [true, true, false, true]);
    server.stop().await
}

#[tokio::test]
async fn policy_none_answers_full_and_stores_nothing() -> anyhow::Result<()> {
    let server = TestServer::start_with(bounded(1, EvictionPolicy::None)).await?;
    let client = Client::connect(server.addr_string()).await?;
    client.store_concept(concept("a")?).await?;
    let error = client.store_concept(concept("b")?).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Full));
    assert!(error.to_string().contains("EVICTION_POLICY"), "{error}");
    assert_eq!(
        client.get_concept_by_id("b").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    client.store_concept(concept("a")?).await?; // an update of a held id is fine
    server.stop().await
}

#[tokio::test]
async fn evicted_ids_stay_evicted_after_a_restart() -> anyhow::Result<()> {
    let server = TestServer::start_with(bounded(2, EvictionPolicy::Lru)).await?;
    let client = Client::connect(server.addr_string()).await?;
    for id in ["a", "b", "c"] {
        client.store_concept(concept(id)?).await?;
    }
    drop(client);
    let data = server.stop_keeping_data().await?;
    let server = TestServer::start_in(data, bounded(2, EvictionPolicy::Lru)).await?;
    let client = Client::connect(server.addr_string()).await?;
    assert_eq!(
        client.get_concept_by_id("a").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    client.get_concept_by_id("b").await?;
    client.get_concept_by_id("c").await?;
    assert_eq!(client.stats().await?.get("concepts"), Some(2));
    server.stop().await
}
