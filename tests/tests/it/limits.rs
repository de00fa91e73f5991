//! MAX_CONNECTIONS: clients beyond the limit get Busy in their own dialect and are closed;
//! the connections already open keep working. Idle connections are closed after the timeout.

use std::time::Duration;

use sutra_client::Client;
use sutra_protocol::{ErrorCode, Request, Response};
use sutra_tests::{request_bytes, RawConnection, TestServer, TextConnection};

async fn open_healthy(server: &TestServer) -> anyhow::Result<RawConnection> {
    let mut conn = RawConnection::connect(server.addr).await?;
    conn.send(&request_bytes(1, Request::Health)).await?;
    assert!(matches!(conn.expect().await?.response, Response::Health(_)));
    Ok(conn)
}

#[tokio::test]
async fn connections_over_the_limit_get_busy_then_close() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| config.max_connections = 2).await?;
    let mut first = open_healthy(&server).await?;
    let _second = open_healthy(&server).await?;

    // A binary client: Busy with request id 0, then closed.
    let mut third = RawConnection::connect(server.addr).await?;
    third.send(&request_bytes(5, Request::Health)).await?;
    let frame = third.expect().await?;
    assert_eq!(frame.request_id, 0);
    assert!(
        matches!(&frame.response, Response::Error(error) if error.code == ErrorCode::Busy),
        "{frame:?}"
    );
    third.expect_closed().await?;

    // The async client surfaces it as a typed error.
    let client = Client::connect(server.addr_string()).await?;
    let error = client.health_check().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Busy), "{error:?}");

    // A text client gets a JSON line.
    let mut text = TextConnection::connect(server.addr).await?;
    let reply = text.command("HEALTH").await?;
    assert_eq!(reply["error"]["name"], "Busy");

    // HTTP gets 503 with the JSON error body every HTTP error has.
    let (status, body) = sutra_tests::http_get(server.addr, "/health").await?;
    assert_eq!(status, 503);
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"]["name"], "Busy");

    // The existing connections are unaffected, and a freed slot is reusable.
    first.send(&request_bytes(2, Request::Health)).await?;
    assert_eq!(first.expect().await?.request_id, 2);
    drop(first);
    let mut replacement = None;
    for _ in 0..50 {
        let mut conn = RawConnection::connect(server.addr).await?;
        conn.send(&request_bytes(3, Request::Health)).await?;
        if conn.expect().await?.request_id == 3 {
            replacement = Some(conn);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        replacement.is_some(),
        "a slot freed by a closed connection is reused"
    );
    server.stop().await
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_timeout() -> anyhow::Result<()> {
    let server =
        TestServer::start_with(|config| config.idle_timeout = Duration::from_millis(300)).await?;
    let mut silent = RawConnection::connect(server.addr).await?;
    let mut active = open_healthy(&server).await?;
    let started = tokio::time::Instant::now();
    silent.expect_closed().await?;
    active.expect_closed().await?;
    assert!(started.elapsed() < Duration::from_secs(5));
    let _fresh = open_healthy(&server).await?;
    server.stop().await
}
