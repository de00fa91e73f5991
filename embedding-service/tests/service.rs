//! The embedding service end to end on loopback: real HTTP, a real sutra-storage server as
//! the L2 cache shard, real ML-base replicas, the default model (`./scripts/fetch-model`).

#![allow(clippy::expect_used, reason = "tests fail loudly")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sutra_embed::{Output, Pipeline};
use sutra_embedding_service::api::{router, Service};
use sutra_embedding_service::config::{L2Config, ReplicaConfig};
use sutra_embedding_service::ServiceConfig;
use sutra_tests::TestServer;

mod common;
use common::{get, model_dir, start_replica};
use tokio_util::sync::CancellationToken;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn vectors(answer: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(answer["embeddings"].clone()).expect("embeddings")
}

struct Running {
    addr: SocketAddr,
    service: Arc<Service>,
    shutdown: CancellationToken,
}

impl Running {
    async fn start(config: ServiceConfig) -> anyhow::Result<Running> {
        let shutdown = CancellationToken::new();
        let service = Service::start(&config, shutdown.clone()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(sutra_embedding_service::serve(
            listener,
            router(Arc::clone(&service)),
            shutdown.clone(),
        ));
        Ok(Running {
            addr,
            service,
            shutdown,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    async fn embed(&self, texts: &[&str]) -> anyhow::Result<Value> {
        let (status, answer) = self.post("/embed", &json!({ "texts": texts })).await?;
        anyhow::ensure!(status == 200, "status {status}: {answer}");
        Ok(answer)
    }

    async fn stats(&self) -> anyhow::Result<Value> {
        Ok(reqwest::get(self.url("/cache/stats")).await?.json().await?)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn with_l2(shard: SocketAddr) -> ServiceConfig {
    let mut config = ServiceConfig::for_tests(model_dir());
    config.l2 = Some(L2Config {
        addr: shard.to_string(),
        ttl: Duration::from_secs(3600),
        timeout: Duration::from_millis(300),
        write_timeout: Duration::from_secs(5),
        write_queue: L2Config::DEFAULT_WRITE_QUEUE,
        auth_token: None,
    });
    config
}

/// A TCP relay in front of the shard that can stall both directions at once, as SIGSTOP of
/// the shard's process would: while stalled it neither reads nor forwards a byte.
async fn stalling_relay(
    target: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::sync::watch::Sender<bool>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stall, stalled) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                ),
                (Box::new(server_read), Box::new(client_write)),
            ] {
                let mut stalled = stalled.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 64 * 1024];
                    loop {
                        if stalled.wait_for(|on| !*on).await.is_err() {
                            return;
                        }
                        let read = match from.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => read,
                        };
                        // Bytes read just before a stall wait for its end too.
                        if stalled.wait_for(|on| !*on).await.is_err() {
                            return;
                        }
                        if to.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    Ok((addr, stall))
}

/// Waits until the shard holds `count` concepts (write-backs are asynchronous).
async fn wait_for_l2(shard: SocketAddr, count: u64) -> anyhow::Result<()> {
    let client = sutra_client::Client::connect(shard.to_string()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.stats().await?.get("concepts").unwrap_or(0) < count {
        anyhow::ensure!(Instant::now() < deadline, "write-back never reached L2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_duplicates_and_both_cache_tiers() -> anyhow::Result<()> {
    let shard = TestServer::start().await?;
    let service = Running::start(with_l2(shard.addr)).await?;
    let pipeline = Pipeline::load(&model_dir())?;

    let first = service.embed(&["alpha text", "beta text"]).await?;
    assert_eq!(first["cached_count"], 0);
    wait_for_l2(shard.addr, 2).await?;

    // Hits and misses interleaved, and a duplicate: the answer keeps the request's order.
    let texts = [
        "gamma text",
        "alpha text",
        "delta text",
        "beta text",
        "gamma text",
    ];
    let answer = service.embed(&texts).await?;
    assert_eq!(answer["cached_count"], 2, "{answer}");
    assert_eq!(answer["batch_size"], 5);
    assert_eq!(answer["dimension"], 256);
    assert_eq!(answer["model"], "all-MiniLM-L6-v2");
    let got = vectors(&answer);
    let want = pipeline.embed(&texts, Output::Matryoshka(256))?;
    for ((text, got), want) in texts.iter().zip(&got).zip(&want) {
        assert!(cosine(got, &want.vector) > 0.99999, "{text}");
    }
    let stats = service.stats().await?;
    // L1: request 1 missed 2; request 2 hit alpha and beta and missed gamma and delta once
    // each (the duplicate gamma is looked up once).
    assert_eq!(stats["l1"]["hits"], 2, "{stats}");
    assert_eq!(stats["l1"]["misses"], 4, "{stats}");
    // `total` counts texts (2 + 5), as the seed does; HTTP requests apart.
    assert_eq!(stats["total"]["requests"], 7, "{stats}");
    assert_eq!(stats["total"]["hits"], 2);
    assert_eq!(stats["total"]["http_requests"], 2, "{stats}");
    assert_eq!(stats["l2"]["enabled"], true);
    let metrics = reqwest::get(service.url("/metrics")).await?.text().await?;
    for line in [
        r#"sutra_embedding_cache_hits_total{tier="l1"} 2"#,
        r#"sutra_embedding_cache_misses_total{tier="l1"} 4"#,
        "sutra_embedding_model_texts_total 4",
        r#"sutra_embedding_http_requests_total{endpoint="/embed",status="200"} 2"#,
        "sutra_embedding_l2_up 1",
        r#"sutra_embedding_upstream_healthy{url="in-process"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains("sutra_embedding_http_request_duration_seconds_bucket"));
    wait_for_l2(shard.addr, 4).await?;

    // A second service (empty L1) finds them in L2 and promotes them to its L1.
    let second = Running::start(with_l2(shard.addr)).await?;
    let answer = second.embed(&["alpha text", "unseen text"]).await?;
    assert_eq!(answer["cached_count"], 1, "{answer}");
    assert!(cosine(&vectors(&answer)[0], &want[1].vector) > 0.99999);
    let again = second.embed(&["alpha text"]).await?;
    assert_eq!(again["cached_count"], 1);
    let stats = second.stats().await?;
    assert_eq!(stats["l2"]["hits"], 1, "{stats}");
    assert_eq!(stats["l1"]["hits"], 1, "{stats}");

    // /cache/clear empties L1 and the shard's embedding_cache concepts.
    wait_for_l2(shard.addr, 5).await?;
    let (code, cleared) = second.post("/cache/clear", &json!({})).await?;
    assert_eq!(code, 200);
    assert_eq!(cleared["l2"]["cleared"], 5, "{cleared}");
    // ... and starts the counters again, as the seed's clear does.
    let stats = second.stats().await?;
    assert_eq!(stats["l1"]["size"], 0);
    for tier in ["l1", "l2", "total"] {
        assert_eq!(stats[tier]["hits"], 0, "{stats}");
        assert_eq!(stats[tier]["misses"], 0, "{stats}");
    }
    assert_eq!(stats["total"]["http_requests"], 0, "{stats}");
    let fresh = Running::start(with_l2(shard.addr)).await?;
    assert_eq!(fresh.embed(&["alpha text"]).await?["cached_count"], 0);
    // `total` counts texts in every field: 3 texts in one request.
    second
        .embed(&["one text", "two texts", "three texts"])
        .await?;
    let stats = second.stats().await?;
    assert_eq!(stats["total"]["requests"], 3, "{stats}");
    assert_eq!(stats["total"]["http_requests"], 1, "{stats}");
    shard.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_keeps_serving_while_the_shard_is_down_and_reconnects() -> anyhow::Result<()> {
    let shard = TestServer::start().await?;
    let shard_addr = shard.addr;
    let service = Running::start(with_l2(shard_addr)).await?;
    for index in 0..10 {
        service.embed(&[&format!("before {index}")]).await?;
    }
    let data = shard.stop_keeping_data().await?;
    for index in 0..10 {
        // Repeats come from L1, new texts from the model: no request fails.
        service
            .embed(&[&format!("before {index}"), &format!("during {index}")])
            .await?;
    }
    assert_eq!(service.stats().await?["l2"]["enabled"], false);
    let (_, health) = service.post("/cache/clear", &json!({})).await?;
    assert!(health["l2"]["error"].is_string(), "{health}");

    let shard = TestServer::start_in(data, |config| config.listen_addr = shard_addr).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut index = 0;
    while service.stats().await?["l2"]["enabled"] != true {
        anyhow::ensure!(Instant::now() < deadline, "L2 never came back");
        service.embed(&[&format!("after {index}")]).await?;
        index += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The entries written before the outage are still there (the shard is durable).
    let fresh = Running::start(with_l2(shard_addr)).await?;
    assert_eq!(fresh.embed(&["before 3"]).await?["cached_count"], 1);
    shard.stop().await
}

/// A shard that stalls for 1.5 s under load (8 clients) is not an outage: lookups skip it
/// after their deadline, no request fails, the write-backs of the stalled window are kept
/// and land once it answers again, and lookups use it again right away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_shard_loses_no_write_back_and_is_used_again_at_once() -> anyhow::Result<()> {
    let shard = TestServer::start().await?;
    let (relay, stall) = stalling_relay(shard.addr).await?;
    let service = Arc::new(Running::start(with_l2(relay)).await?);
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let mut texts = Vec::new();
                while started.elapsed() < Duration::from_secs(4) {
                    let text = format!("client {client} text {}", texts.len());
                    service.embed(&[&text]).await?;
                    texts.push(text);
                }
                anyhow::Ok(texts)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stall.send(true)?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The stall is felt: lookups passed their deadline and skip the shard.
    let during = service.stats().await?;
    assert_eq!(during["l2"]["enabled"], false, "{during}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stall.send(false)?;
    let resumed = Instant::now();
    let mut texts = Vec::new();
    for client in clients {
        texts.extend(client.await??);
    }
    // Used again within a second or two of the stall's end (the load kept running).
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.stats().await?["l2"]["enabled"] != true {
        anyhow::ensure!(Instant::now() < deadline, "L2 stayed off after the stall");
        service.embed(&["probe"]).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let stats = service.stats().await?;
        if stats["l2"]["write_backs"]["queued"] == 0 {
            break stats;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "write-backs never drained: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats["l2"]["write_backs"]["dropped"], 0, "{stats}");
    assert!(resumed.elapsed() < Duration::from_secs(30));
    // Every vector computed, the stalled window's included, is in the shard.
    let client = sutra_client::Client::connect(shard.addr.to_string()).await?;
    let ids: Vec<String> = texts
        .iter()
        .map(|text| sutra_embedding_service::cache::l2_id("all-MiniLM-L6-v2", text))
        .collect();
    for chunk in ids.chunks(200) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let found = client.get_many(&refs).await?;
        let missing = found.iter().filter(|concept| concept.is_none()).count();
        assert_eq!(
            missing,
            0,
            "{missing} of {} texts never written back",
            chunk.len()
        );
    }
    assert!(texts.len() >= 8, "{} texts", texts.len());
    shard.stop().await
}

/// The storage server learning through an embedding service (`SUTRA_EMBEDDING_SERVICE_URL`),
/// an ML-base replica process or the embedding service's own `/embed`: the stored vectors,
/// ids and model are exactly what in-process learning stores; a service that is down fails
/// the request with Busy and its URL, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_server_learns_through_an_embedding_service() -> anyhow::Result<()> {
    use sutra_client::sutra_protocol::{ErrorCode, LearnConcept};
    use sutra_server::config::RemoteConfig;
    let replica = start_replica("learner").await?;
    let service = Running::start(ServiceConfig::for_tests(model_dir())).await?;
    let pipeline = Pipeline::load(&model_dir())?;
    let texts = [
        "The cat sat on the mat.",
        "Paris is the capital of France.",
        "Embeddings map text to vectors.",
    ];
    let want = pipeline.embed(&texts, Output::Matryoshka(256))?;
    let remote = |url: String, retries| RemoteConfig {
        url,
        timeout: Duration::from_secs(20),
        retries,
        // Three texts in two calls.
        max_batch: 2,
    };
    for url in [replica.url.clone(), service.url("")] {
        let config = remote(url.clone(), 1);
        let server =
            TestServer::start_with(|server| server.embedding_service = Some(config)).await?;
        let client = sutra_client::Client::connect(server.addr_string()).await?;
        let learned = client
            .learn_batch(texts.iter().map(|text| LearnConcept::new(*text)).collect())
            .await?;
        let single = client.learn_concept(LearnConcept::new(texts[0])).await?;
        assert_eq!(single.id, learned[0].id, "{url}");
        for ((learned, text), want) in learned.iter().zip(texts).zip(&want) {
            assert_eq!(
                learned.id,
                sutra_server::learn::derived_id("all-MiniLM-L6-v2", text),
                "{url}"
            );
            let stored = client.get_concept_by_id(&learned.id).await?;
            assert_eq!(stored.model, "all-MiniLM-L6-v2");
            let vector = stored.embedding.as_ref().expect("a vector");
            assert_eq!(vector.as_slice(), want.vector.as_slice(), "{url}: {text}");
        }
        server.stop().await?;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let dead = format!("http://{closed}");
    let config = remote(dead.clone(), 1);
    let server = TestServer::start_with(|server| server.embedding_service = Some(config)).await?;
    let client = sutra_client::Client::connect(server.addr_string()).await?;
    let error = client
        .learn_concept(LearnConcept::new("nobody embeds this"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
    assert!(error.to_string().contains(&dead), "{error}");
    assert_eq!(client.stats().await?.get("concepts"), Some(0));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_and_never_reaches_the_model() -> anyhow::Result<()> {
    let mut config = ServiceConfig::for_tests(model_dir());
    config.limits.max_texts = 4;
    config.limits.max_text_bytes = 100;
    let service = Running::start(config).await?;
    let raw = reqwest::Client::new()
        .post(service.url("/embed"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await?;
    assert!(body["error"]["message"].is_string(), "{body}");
    let cases = [
        (json!({"texts": 5}), 422),
        (json!({"text": ["a"]}), 422),
        (json!({"texts": []}), 400),
        (json!({"texts": ["a", "b", "c", "d", "e"]}), 413),
        (json!({"texts": ["x".repeat(101)]}), 413),
        (json!({"texts": ["a"], "normalize": false}), 400),
    ];
    for (body, status) in cases {
        let (got, answer) = service.post("/embed", &body).await?;
        assert_eq!(got, status, "{body} → {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    assert_eq!(service.stats().await?["total"]["http_requests"], 0);

    // `curl -d` sends a form content type; JSON endpoints read JSON whatever it says.
    for (path, body) in [
        ("/embed", r#"{"texts": ["sent by curl -d"]}"#),
        ("/v1/embeddings", r#"{"input": "sent by curl -d"}"#),
    ] {
        let raw = reqwest::Client::new()
            .post(service.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        assert_eq!(raw.status().as_u16(), 200, "{path}");
    }

    // OpenAI-style: one string or a list, `dimensions` up to 256.
    let (status, answer) = service
        .post(
            "/v1/embeddings",
            &json!({"input": "one text", "model": "anything", "dimensions": 64}),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let embedding: Vec<f32> = serde_json::from_value(answer["data"][0]["embedding"].clone())?;
    assert_eq!(embedding.len(), 64);
    assert!((embedding.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4);
    assert_eq!(answer["usage"]["prompt_tokens"], 4);
    let (status, _) = service
        .post(
            "/v1/embeddings",
            &json!({"input": ["a"], "dimensions": 300}),
        )
        .await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_load_evenly_and_a_killed_one_fails_no_request() -> anyhow::Result<()> {
    let (one, two) = tokio::try_join!(start_replica("one"), start_replica("two"))?;
    let mut config = ServiceConfig::for_tests(model_dir());
    config.replicas = Some(ReplicaConfig {
        urls: vec![one.url.clone(), two.url.clone()],
        health_interval: Duration::from_millis(100),
        fall: 2,
        rise: 2,
        timeout: Duration::from_secs(10),
    });
    let service = Arc::new(Running::start(config).await?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.service.model().model().is_none() {
        anyhow::ensure!(Instant::now() < deadline, "no replica answered /health");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for index in 0..40 {
        service.embed(&[&format!("balanced {index}")]).await?;
    }
    let counts = |service: &Running| -> Vec<u64> {
        match service.service.model() {
            sutra_embedding_service::model::ModelSource::Replicas(replicas) => replicas
                .replicas()
                .iter()
                .map(|replica| replica.requests.load(std::sync::atomic::Ordering::Relaxed))
                .collect(),
            sutra_embedding_service::model::ModelSource::Local { .. } => Vec::new(),
        }
    };
    let balance = counts(&service);
    assert_eq!(balance.iter().sum::<u64>(), 40);
    assert!(balance[0].abs_diff(balance[1]) <= 4, "{balance:?}");

    // Load from 4 clients; one replica is killed (its connections dropped) mid-load: after
    // 8 of the 60 requests are answered (a fixed delay let a fast pass finish first).
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (service, answered) = (Arc::clone(&service), Arc::clone(&answered));
            tokio::spawn(async move {
                for index in 0..15 {
                    service
                        .embed(&[&format!("load {client} {index}")])
                        .await
                        .map_err(|error| {
                            anyhow::anyhow!("client {client} request {index}: {error}")
                        })?;
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 8 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(one); // SIGKILL
    for client in clients {
        client.await??;
    }
    // The health checks (every 100 ms, out after 2 failures) take the dead replica out.
    let deadline = Instant::now() + Duration::from_secs(5);
    let health = loop {
        let (status, health) = get(&service.url("/health")).await?;
        assert_eq!(status, 200, "one replica is enough");
        if health["upstreams"][0]["healthy"] == false {
            break health;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the dead replica stayed in: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health["upstreams"][1]["healthy"], true, "{health}");
    drop(two);
    Ok(())
}
