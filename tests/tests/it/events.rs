//! `SUTRA_EVENTS=on`: the server records its own operational events as concepts of type
//! `sutra_event`, listed in time order by QueryByType; they are durable like any store.

use std::time::{Duration, Instant};

use sutra_client::Client;
use sutra_protocol::{ConceptId, StoreConcept};
use sutra_server::config::EventsConfig;
use sutra_server::events::EVENT_TYPE;
use sutra_server::{Capacity, EvictionPolicy, ServerConfig};
use sutra_tests::TestServer;

fn with_events(config: &mut ServerConfig) {
    config.events = Some(EventsConfig {
        ttl: Duration::from_secs(3600),
        interval: Duration::from_millis(200),
    });
}

/// `(kind, attributes)` of every event, in listing order.
async fn events(client: &Client) -> anyhow::Result<Vec<(String, Vec<(String, String)>)>> {
    let page = client.query_by_type(EVENT_TYPE, 1000, "").await?;
    Ok(page
        .concepts
        .iter()
        .map(|concept| {
            let kind = concept.attributes.get("kind").cloned().unwrap_or_default();
            let attributes = concept
                .attributes
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            (kind, attributes)
        })
        .collect())
}

/// Polls until `wanted` kinds are all present (in this order among the events), for 10 s.
async fn wait_for(
    client: &Client,
    wanted: &[&str],
) -> anyhow::Result<Vec<(String, Vec<(String, String)>)>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = events(client).await?;
        let mut remaining = wanted.iter().peekable();
        for (kind, _) in &listed {
            if remaining.peek().is_some_and(|want| *want == kind) {
                remaining.next();
            }
        }
        if remaining.peek().is_none() {
            return Ok(listed);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "events {wanted:?} not all recorded: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn attribute<'a>(attributes: &'a [(String, String)], key: &str) -> &'a str {
    attributes
        .iter()
        .find(|(name, _)| name == key)
        .map_or("", |(_, value)| value.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_and_stop_are_recorded_and_survive_a_restart() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_events).await?;
    let client = Client::connect(server.addr_string()).await?;
    for index in 0..5 {
        let mut store = StoreConcept::new(ConceptId::parse(&format!("doc-{index}"))?, "text");
        store.concept_type = "note".to_owned();
        client.store_concept(store).await?;
    }
    assert!(client.get_concept_by_id("absent").await.is_err());
    let listed = wait_for(&client, &["start", "errors"]).await?;
    let (_, errors) = listed
        .iter()
        .find(|(kind, _)| kind == "errors")
        .expect("an errors event");
    assert_eq!(attribute(errors, "count"), "1", "{errors:?}");
    // Events are concepts of their own type: the user's type is untouched.
    assert_eq!(
        client.query_by_type("note", 100, "").await?.concepts.len(),
        5
    );
    drop(client);

    let dir = server.stop_keeping_data().await?;
    let server = TestServer::start_in(dir, with_events).await?;
    let client = Client::connect(server.addr_string()).await?;
    let listed = wait_for(&client, &["start", "errors", "stop", "start"]).await?;
    let (_, restarted) = listed.last().expect("the second start is the newest event");
    assert_eq!(attribute(restarted, "role"), "normal");
    // The graceful stop wrote a checkpoint: the restart loaded the 5 concepts and the
    // events before it from the snapshot.
    let loaded: u64 = attribute(restarted, "snapshot_concepts").parse()?;
    assert!(loaded >= 5 + 3, "{restarted:?}");
    assert!(!attribute(restarted, "recovery_ms").is_empty());
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_are_summarised() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        with_events(config);
        config.capacity = Some(Capacity {
            max_concepts: 10,
            policy: EvictionPolicy::Lru,
        });
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    for index in 0..15 {
        client
            .store_concept(StoreConcept::new(
                ConceptId::parse(&format!("doc-{index}"))?,
                "text",
            ))
            .await?;
    }
    let listed = wait_for(&client, &["evictions"]).await?;
    let (_, evictions) = listed
        .iter()
        .find(|(kind, _)| kind == "evictions")
        .expect("an evictions event");
    // 15 stores into 10 places; events take none.
    let count: u64 = attribute(evictions, "count").parse()?;
    assert_eq!(count, 5, "{evictions:?}");
    server.stop().await
}

/// Events are bookkeeping: in a full cache shard they evict no user concept, and the event a
/// checkpoint causes never causes the next checkpoint (an idle server goes idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_neither_evict_user_data_nor_feed_checkpoints() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        with_events(config);
        config.checkpoint.interval = Duration::from_millis(200);
        config.capacity = Some(Capacity {
            max_concepts: 3,
            policy: EvictionPolicy::Lru,
        });
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    for index in 0..3 {
        client
            .store_concept(StoreConcept::new(
                ConceptId::parse(&format!("doc-{index}"))?,
                "text",
            ))
            .await?;
    }
    // The user writes are checkpointed, and that checkpoint is recorded as an event.
    wait_for(&client, &["start", "checkpoint"]).await?;
    let settled = client.stats().await?;
    // Ten more event intervals and checkpoint intervals with no client writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = client.stats().await?;
    assert_eq!(idle.get("evictions"), Some(0), "an event evicted user data");
    assert_eq!(
        idle.get("checkpoints"),
        settled.get("checkpoints"),
        "events fed checkpoints while idle"
    );
    for index in 0..3 {
        client.get_concept_by_id(&format!("doc-{index}")).await?;
    }
    // Clients cannot write the events' type (it would escape MAX_CONCEPTS).
    let mut forged = StoreConcept::new(ConceptId::parse("forged")?, "text");
    forged.concept_type = EVENT_TYPE.to_owned();
    assert!(client.store_concept(forged).await.is_err());
    server.stop().await
}
