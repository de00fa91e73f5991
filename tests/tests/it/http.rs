//! HTTP on the storage port: what `curl http://127.0.0.1:50051/health` sees.

use sutra_client::Client;
use sutra_protocol::{ConceptId, StoreConcept};
use sutra_tests::{http_get, TestServer};

#[tokio::test]
async fn health_is_json_with_the_documented_fields() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    client
        .store_concept(StoreConcept::new(ConceptId::parse("h1")?, "x"))
        .await?;
    let (status, body) = http_get(server.addr, "/health").await?;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["role"], "normal");
    assert_eq!(health["vector_dimension"], 256);
    assert_eq!(health["concepts"], 1);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_seconds"].is_u64());
    server.stop().await
}

#[tokio::test]
async fn stats_and_unknown_paths() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (status, body) = http_get(server.addr, "/stats").await?;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(stats["concepts"], 0);
    assert!(stats["connections_total"].as_u64() >= Some(1));
    let (status, body) = http_get(server.addr, "/nope").await?;
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(error["ok"], false);
    assert_eq!(error["error"]["name"], "NotFound");
    server.stop().await
}

#[tokio::test]
async fn every_error_status_has_the_one_json_error_body() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    for (method, path) in [
        ("POST", "/health"),
        ("DELETE", "/stats"),
        ("PUT", "/metrics"),
        ("GET", "/api/learn"),
    ] {
        let (status, body) = sutra_tests::http_request(
            server.addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await?;
        assert_eq!(status, 405, "{method} {path}");
        let error: serde_json::Value = serde_json::from_str(&body)
            .map_err(|failure| anyhow::anyhow!("{method} {path}: {failure}: {body:?}"))?;
        assert_eq!(error["ok"], false, "{body}");
        assert_eq!(error["error"]["name"], "InvalidArgument", "{body}");
        assert_eq!(error["error"]["code"], 5, "{body}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("{method} is not allowed on {path}")),
            "{message}"
        );
    }
    server.stop().await
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await?;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await?;
    let request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(sutra_tests::STEP_TIMEOUT, stream.read_to_string(&mut raw)).await??;
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 2, "{raw}");
    server.stop().await
}

/// `GET /metrics`: Prometheus text with per-opcode requests and latency, errors per code, the
/// Stats counters and the fsync and checkpoint histograms, reflecting what was just done over
/// the binary protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_opcode_and_errors_by_code() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = Client::connect(server.addr_string()).await?;
    for index in 0..3 {
        client
            .store_concept(StoreConcept::new(
                ConceptId::parse(&format!("m{index}"))?,
                "text",
            ))
            .await?;
    }
    assert!(client.get_concept_by_id("absent").await.is_err());
    let (status, body) = http_get(server.addr, "/metrics").await?;
    assert_eq!(status, 200);
    for line in [
        r#"sutra_requests_total{opcode="StoreConcept"} 3"#,
        r#"sutra_requests_total{opcode="GetConceptById"} 1"#,
        r#"sutra_errors_total{code="NotFound"} 1"#,
        r#"sutra_request_duration_seconds_count{opcode="StoreConcept"} 3"#,
        "sutra_concepts 3",
        "sutra_stores_total 3",
        "# TYPE sutra_wal_fsync_duration_seconds histogram",
        r#"sutra_wal_fsync_duration_seconds_bucket{le="+Inf"} "#,
        "# TYPE sutra_checkpoint_duration_seconds histogram",
        "sutra_checkpoint_duration_seconds_count ",
    ] {
        assert!(body.contains(line), "{line} not in\n{body}");
    }
    server.stop().await
}
