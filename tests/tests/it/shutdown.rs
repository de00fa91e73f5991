//! Graceful shutdown: in-flight requests finish and their responses are delivered whole,
//! new connections are refused, and the server returns cleanly.

use std::time::Duration;

use sutra_client::Client;
use sutra_protocol::{ConceptId, Request, StoreConcept};
use sutra_tests::{request_bytes, RawConnection, TestServer};

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let addr = server.addr;
    let mut conn = RawConnection::connect(addr).await?;
    let mut batch = Vec::new();
    for request_id in 1..=2_000_u32 {
        let id = ConceptId::parse(&format!("s{request_id}"))?;
        batch.extend(request_bytes(
            request_id,
            Request::StoreConcept(StoreConcept::new(id, "x")),
        ));
    }
    conn.send(&batch).await?;
    let first = conn.expect().await?;
    assert_eq!(first.request_id, 1);
    server.begin_shutdown();
    // Every response that arrives is whole and in order; then the connection closes cleanly
    // (RawConnection::read fails on a frame cut in the middle).
    let mut last = 1;
    while let Some(frame) = conn.read().await? {
        assert_eq!(frame.request_id, last + 1);
        last = frame.request_id;
    }
    server.stop().await?;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener is closed after shutdown"
    );
    Ok(())
}

#[tokio::test]
async fn idle_clients_do_not_delay_shutdown() -> anyhow::Result<()> {
    let server =
        TestServer::start_with(|config| config.shutdown_grace = Duration::from_secs(30)).await?;
    let client = Client::connect(server.addr_string()).await?;
    client.health_check().await?;
    let _silent = tokio::net::TcpStream::connect(server.addr).await?;
    let started = tokio::time::Instant::now();
    server.stop().await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited for idle connections"
    );
    Ok(())
}
