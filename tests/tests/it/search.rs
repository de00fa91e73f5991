//! `Search` against real servers: exact results equal a brute-force ranking, deleted,
//! overwritten-away and expired vectors are never found, the type filter, text queries through
//! the model, every interface (binary, text, HTTP) and its errors, and searches while writers
//! change the store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sutra_client::{Client, ClientError};
use sutra_protocol::{ConceptId, ErrorCode, Search, SearchQuery, StoreConcept, Vector};
use sutra_server::{ModelConfig, ServerConfig};
use sutra_tests::{http_post, TestServer, TextConnection};

const DIM: usize = 256;
const DIM_U32: u32 = 256;

/// A deterministic pseudo-random vector.
fn random_vector(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn store(id: &str, concept_type: &str, vector: Option<Vec<f32>>) -> StoreConcept {
    let mut store = StoreConcept::new(ConceptId::parse(id).unwrap(), format!("text of {id}"));
    store.concept_type = concept_type.to_owned();
    store.embedding = vector.map(|values| Vector::new(values, DIM_U32).unwrap());
    store
}

fn by_vector(query: &[f32], k: u32) -> Search {
    Search {
        exact: true,
        ..Search::new(
            SearchQuery::Vector(Vector::new(query.to_vec(), DIM_U32).unwrap()),
            k,
        )
    }
}

/// The brute-force ranking: (id, score), best first, ties by id.
fn ranking(stored: &[(String, Vec<f32>)], query: &[f32], k: usize) -> Vec<(String, f32)> {
    let mut all: Vec<(String, f32)> = stored
        .iter()
        .map(|(id, vector)| (id.clone(), cosine(query, vector)))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

fn ids(results: &sutra_protocol::SearchResults) -> Vec<String> {
    results
        .hits
        .iter()
        .map(|hit| hit.id.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn exact_search_is_the_brute_force_ranking_filtered_by_type() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    let mut notes = Vec::new();
    let mut all = Vec::new();
    for index in 0..300_u64 {
        let id = format!("c-{index:03}");
        let vector = random_vector(index);
        let concept_type = if index % 3 == 0 { "note" } else { "page" };
        client
            .store_concept(store(&id, concept_type, Some(vector.clone())))
            .await?;
        if concept_type == "note" {
            notes.push((id.clone(), vector.clone()));
        }
        all.push((id, vector));
    }
    // Concepts without a vector are never results.
    client
        .store_concept(store("no-vector", "note", None))
        .await?;
    for query_seed in 1000..1010 {
        let query = random_vector(query_seed);
        let results = client.search(by_vector(&query, 10)).await?;
        assert!(results.exact);
        let expected = ranking(&all, &query, 10);
        assert_eq!(
            ids(&results),
            expected
                .iter()
                .map(|(id, _)| id.clone())
                .collect::<Vec<_>>()
        );
        for (hit, (_, score)) in results.hits.iter().zip(&expected) {
            assert!((hit.score - score).abs() < 1e-4, "{} vs {score}", hit.score);
            assert!(hit.concept.is_none(), "concepts only when asked for");
        }
        let mut filtered = by_vector(&query, 5);
        filtered.concept_type = "note".to_owned();
        filtered.include_concepts = true;
        let results = client.search(filtered).await?;
        let expected = ranking(&notes, &query, 5);
        assert_eq!(
            ids(&results),
            expected
                .iter()
                .map(|(id, _)| id.clone())
                .collect::<Vec<_>>()
        );
        assert!(results.hits.iter().all(|hit| hit
            .concept
            .as_ref()
            .is_some_and(|c| c.concept_type == "note")));
    }
    // The nearest to a stored vector is itself, with a score of 1.
    let results = client.search(by_vector(&all[42].1, 1)).await?;
    assert_eq!(ids(&results), ["c-042"]);
    assert!((results.hits[0].score - 1.0).abs() < 1e-5);
    server.stop().await
}

#[tokio::test]
async fn deleted_overwritten_and_expired_vectors_are_never_found() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    let target = random_vector(7);
    let near: Vec<f32> = target.iter().map(|v| v * 2.0).collect();
    client
        .store_concept(store("deleted", "t", Some(near.clone())))
        .await?;
    client
        .store_concept(store("moved", "t", Some(near.clone())))
        .await?;
    let mut short = store("expiring", "t", Some(near.clone()));
    short.ttl_seconds = Some(1);
    client.store_concept(short).await?;
    client
        .store_concept(store("far", "t", Some(random_vector(8))))
        .await?;
    assert_eq!(client.search(by_vector(&target, 3)).await?.hits.len(), 3);

    assert!(client.delete_concept("deleted").await?);
    let opposite: Vec<f32> = target.iter().map(|v| -v).collect();
    client
        .store_concept(store("moved", "t", Some(opposite.clone())))
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let results = client.search(by_vector(&target, 10)).await?;
    assert_eq!(ids(&results), ["far", "moved"], "{results:?}");
    // The overwrite is found under its new vector.
    assert_eq!(
        ids(&client.search(by_vector(&opposite, 1)).await?),
        ["moved"]
    );
    server.stop().await
}

#[tokio::test]
async fn bad_searches_are_refused_clearly() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    let code = |error: ClientError| error.code();
    let query = random_vector(1);
    for k in [0, 1001] {
        let error = client.search(by_vector(&query, k)).await.unwrap_err();
        assert_eq!(code(error), Some(ErrorCode::InvalidArgument), "k = {k}");
    }
    let short = Search::new(
        SearchQuery::Vector(Vector::new(vec![1.0; 3], 3).unwrap()),
        5,
    );
    assert_eq!(
        code(client.search(short).await.unwrap_err()),
        Some(ErrorCode::DimensionMismatch)
    );
    let text = Search::new(SearchQuery::Text("a cat".to_owned()), 5);
    assert_eq!(
        code(client.search(text).await.unwrap_err()),
        Some(ErrorCode::NoModel),
        "no model to embed the query"
    );
    // An empty store answers with no results, not an error.
    assert!(client.search(by_vector(&query, 5)).await?.hits.is_empty());

    let (status, body) = http_post(server.addr, "/api/search", r#"{"k": 3}"#).await?;
    assert_eq!(status, 400, "{body}");
    let both = format!(r#"{{"text": "x", "vector": {:?}}}"#, vec![0.5; DIM]);
    assert_eq!(http_post(server.addr, "/api/search", &both).await?.0, 400);
    let (status, body) = http_post(
        server.addr,
        "/api/search",
        r#"{"vector": [1.0, 2.0], "k": 3}"#,
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("DimensionMismatch"), "{body}");
    let zero = format!(r#"{{"vector": {:?}, "k": 0}}"#, vec![0.5; DIM]);
    assert_eq!(http_post(server.addr, "/api/search", &zero).await?.0, 400);
    let (status, body) = http_post(server.addr, "/api/search", r#"{"text": "x"}"#).await?;
    assert_eq!(status, 503, "{body}");
    server.stop().await
}

#[tokio::test]
async fn http_and_text_mode_answer_searches() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    for index in 0..20 {
        client
            .store_concept(store(
                &format!("h-{index:02}"),
                "doc",
                Some(random_vector(index)),
            ))
            .await?;
    }
    let body = format!(
        r#"{{"vector": {:?}, "k": 2, "type": "doc", "include_concepts": true}}"#,
        random_vector(3)
    );
    let (status, body) = http_post(server.addr, "/api/search", &body).await?;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(answer["results"][0]["id"], "h-03");
    assert_eq!(answer["results"][0]["concept"]["concept_type"], "doc");
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(answer["exact"], true);
    assert!(answer["took_ms"].is_number());

    let mut text = TextConnection::connect(server.addr).await?;
    let reply = text.command("SEARCH 0 hello").await?;
    assert_eq!(reply["error"]["name"], "InvalidArgument", "{reply}");
    let reply = text.command("SEARCH 3 type=doc hello").await?;
    assert_eq!(reply["error"]["name"], "NoModel", "{reply}");
    server.stop().await
}

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_query_finds_the_text_it_means() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config: &mut ServerConfig| {
        config.model = Some(ModelConfig::new(model_dir()));
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    for (id, content) in [
        ("cat", "The cat sat on the warm windowsill all afternoon."),
        (
            "rust",
            "Rust's borrow checker rejects data races at compile time.",
        ),
        (
            "bread",
            "Knead the dough, let it rise, then bake the bread for forty minutes.",
        ),
    ] {
        let mut learn = sutra_protocol::LearnConcept::new(content);
        learn.id = Some(ConceptId::parse(id)?);
        learn.concept_type = "doc".to_owned();
        client.learn_concept(learn).await?;
    }
    let query = Search::new(
        SearchQuery::Text("a kitten resting in the sun".to_owned()),
        3,
    );
    let results = client.search(query).await?;
    assert_eq!(ids(&results)[0], "cat", "{results:?}");
    let mut text = TextConnection::connect(server.addr).await?;
    let reply = text
        .command("SEARCH 1 type=doc how do I make bread")
        .await?;
    assert_eq!(reply["results"][0]["id"], "bread", "{reply}");
    assert_eq!(reply["results"][0]["concept"]["id"], "bread", "{reply}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_during_writes_see_only_live_vectors() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Arc::new(Client::connect(server.addr_string()).await?);
    let mut tasks = Vec::new();
    for writer in 0..8_u64 {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            for round in 0..60_u64 {
                let id = format!("w{writer}-{}", round % 10);
                let vector = random_vector(writer * 1000 + round);
                client.store_concept(store(&id, "w", Some(vector))).await?;
                if round % 7 == 0 {
                    client.delete_concept(&id).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for searcher in 0..8_u64 {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            for round in 0..30 {
                let results = client
                    .search(by_vector(&random_vector(searcher * 77 + round), 10))
                    .await?;
                let scores: Vec<f32> = results.hits.iter().map(|hit| hit.score).collect();
                assert!(
                    scores.windows(2).all(|pair| pair[0] >= pair[1]),
                    "{scores:?}"
                );
                let mut unique = ids(&results);
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), results.hits.len(), "an id twice");
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Quiet now: the answer is the brute-force ranking of what is stored.
    let mut stored = Vec::new();
    for writer in 0..8 {
        for slot in 0..10 {
            let id = format!("w{writer}-{slot}");
            if let Ok(concept) = client.get_concept_by_id(&id).await {
                let vector = concept.embedding.as_ref().map(|v| v.as_slice().to_vec());
                stored.push((id, vector.unwrap_or_default()));
            }
        }
    }
    let query = random_vector(424_242);
    let results = client.search(by_vector(&query, 10)).await?;
    let expected: Vec<String> = ranking(&stored, &query, 10)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids(&results), expected);
    server.stop().await
}

/// Waits until the HNSW graph holds every stored vector; returns the stats then.
async fn settled(client: &Client) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let start = std::time::Instant::now();
    loop {
        let counters: std::collections::HashMap<String, u64> =
            client.stats().await?.counters.into_iter().collect();
        if counters.get("index_pending") == Some(&0) {
            return Ok(counters);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the index never caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// recall@10 of the index against the exact answer over `queries`, filtered by `concept_type`.
async fn recall(
    client: &Client,
    queries: std::ops::Range<u64>,
    concept_type: &str,
) -> anyhow::Result<f64> {
    let (mut hits, mut wanted) = (0_usize, 0_usize);
    for seed in queries {
        let mut exact = by_vector(&random_vector(seed), 10);
        exact.concept_type = concept_type.to_owned();
        // Uniform random vectors in 256 dimensions are the hardest case for a graph: search
        // wider than the default, as for data without structure.
        let approximate = Search {
            exact: false,
            ef: 200,
            ..exact.clone()
        };
        let truth = client.search(exact).await?;
        let found = client.search(approximate).await?;
        assert!(truth.exact && !found.exact, "the index answered");
        let truth = ids(&truth);
        hits += ids(&found).iter().filter(|id| truth.contains(id)).count();
        wanted += truth.len();
    }
    Ok(hits as f64 / wanted as f64)
}

#[tokio::test]
async fn the_hnsw_index_keeps_recall_over_the_protocol_and_across_a_restart() -> anyhow::Result<()>
{
    let graph_always = |config: &mut ServerConfig| config.index.exact_below = 0;
    let server = TestServer::start_with(graph_always).await?;
    let client = Client::connect(server.addr_string()).await?;
    for batch in 0..20_u64 {
        let concepts = (batch * 100..(batch + 1) * 100)
            .map(|seed| {
                let concept_type = if seed % 100 == 0 { "rare" } else { "common" };
                store(&format!("v{seed}"), concept_type, Some(random_vector(seed)))
            })
            .collect();
        client.store_many(concepts).await?;
    }
    let counters = settled(&client).await?;
    assert_eq!(counters["index_vectors"], 2_000);
    assert!(
        counters["index_bytes_per_vector"] > 4 * DIM as u64,
        "{counters:?}"
    );
    let all = recall(&client, 5_000..5_030, "").await?;
    assert!(all >= 0.95, "recall@10 {all}");
    let rare = recall(&client, 5_000..5_030, "rare").await?;
    assert!(rare >= 0.95, "recall@10 of a 1% type {rare}");
    // A search breadth beyond the limit is refused.
    let mut too_broad = by_vector(&random_vector(1), 10);
    too_broad.exact = false;
    too_broad.ef = 1_000_000;
    let error = client.search(too_broad).await.unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Server {
                code: ErrorCode::InvalidArgument,
                ..
            }
        ),
        "{error}"
    );

    // After a restart the graph is rebuilt in the background; meanwhile vectors not in it are
    // compared exactly, so a stored vector is found at once.
    let data = server.stop_keeping_data().await?;
    let server = TestServer::start_in(data, graph_always).await?;
    let client = Client::connect(server.addr_string()).await?;
    let mut own = by_vector(&random_vector(1_234), 1);
    own.exact = false;
    assert_eq!(ids(&client.search(own).await?), ["v1234"]);
    settled(&client).await?;
    let after = recall(&client, 5_000..5_030, "").await?;
    assert!(after >= 0.95, "recall@10 after a restart {after}");
    server.stop().await?;

    // VECTOR_INDEX=none refuses searches.
    let server = TestServer::start_with(|config| {
        config.index.kind = sutra_server::IndexKind::None;
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    let error = client
        .search(by_vector(&random_vector(1), 1))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("VECTOR_INDEX=none"), "{error}");
    server.stop().await
}
