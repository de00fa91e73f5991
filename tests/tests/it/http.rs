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
    assert!(body.contains("NotFound"));
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
