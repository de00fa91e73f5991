//! The text command line through a raw socket, as `nc` would use it.

use sutra_tests::{TestServer, TextConnection};

#[tokio::test]
async fn a_first_command_of_get_is_text_not_http() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = TextConnection::connect(server.addr).await?;
    let reply = conn.command("GET doc-1").await?;
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["name"], "NotFound");
    assert_eq!(reply["error"]["code"], 7);
    // The session continues.
    assert_eq!(conn.command("HEALTH").await?["health"]["status"], "ok");
    server.stop().await
}

#[tokio::test]
async fn store_get_type_delete_and_stats_over_text() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = TextConnection::connect(server.addr).await?;
    let stored = conn.command("STORE d1 note hello   world").await?;
    assert_eq!(
        (stored["ok"].as_bool(), stored["created"].as_bool()),
        (Some(true), Some(true))
    );
    conn.command("STORE d2 note second").await?;
    let got = conn.command("get d1").await?;
    assert_eq!(got["concept"]["content"], "hello   world");
    assert_eq!(got["concept"]["concept_type"], "note");
    assert!(got["concept"]["embedding"].is_null());
    let page = conn.command("TYPE note 1").await?;
    assert_eq!(page["concepts"][0]["id"], "d1");
    assert_eq!(page["next_cursor"], "d1");
    let page = conn.command("TYPE note 1 d1").await?;
    assert_eq!(
        (
            page["concepts"][0]["id"].as_str(),
            page["next_cursor"].as_str()
        ),
        (Some("d2"), Some(""))
    );
    assert_eq!(conn.command("DEL d1").await?["existed"], true);
    assert_eq!(conn.command("DEL d1").await?["existed"], false);
    let stats = conn.command("STATS").await?;
    assert_eq!(
        (
            stats["stats"]["concepts"].as_u64(),
            stats["stats"]["role"].as_str()
        ),
        (Some(1), Some("normal"))
    );
    server.stop().await
}

#[tokio::test]
async fn unknown_commands_and_bad_utf8_get_error_lines_and_the_session_continues(
) -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = TextConnection::connect(server.addr).await?;
    let reply = conn.command("FLUSHALL").await?;
    assert_eq!(
        (reply["ok"].as_bool(), reply["error"]["name"].as_str()),
        (Some(false), Some("UnknownOpcode"))
    );
    conn.send(b"GET \xff\xfe\n").await?;
    let reply = conn.reply().await?.expect("a reply line");
    assert_eq!(reply["error"]["name"], "InvalidArgument");
    let reply = conn.command("STORE only-id").await?;
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("usage:"),
        "{reply}"
    );
    let help = conn.command("HELP").await?;
    assert!(help["commands"]
        .as_array()
        .is_some_and(|commands| commands.len() >= 8));
    // A blank line gets no reply; the next command is answered.
    conn.send(b"\r\n").await?;
    assert_eq!(conn.command("PING").await?["ok"], true);
    server.stop().await
}

#[tokio::test]
async fn pipelined_lines_are_answered_in_order_and_quit_closes() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = TextConnection::connect(server.addr).await?;
    let mut script = String::new();
    for index in 0..200 {
        script.push_str(&format!("STORE k{index} t v{index}\r\nGET k{index}\r\n"));
    }
    script.push_str("QUIT\n");
    conn.send(script.as_bytes()).await?;
    for index in 0..200 {
        assert_eq!(conn.reply().await?.expect("store reply")["created"], true);
        assert_eq!(
            conn.reply().await?.expect("get reply")["concept"]["content"],
            format!("v{index}")
        );
    }
    assert_eq!(conn.reply().await?.expect("quit reply")["bye"], true);
    assert!(conn.reply().await?.is_none(), "QUIT closes the connection");
    server.stop().await
}

#[tokio::test]
async fn an_over_long_line_gets_an_error_then_close() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        config.limits.max_frame_bytes = 1024 * 1024 + 200_000;
        config.limits.max_content_bytes = 1024 * 1024;
    })
    .await?;
    let mut conn = TextConnection::connect(server.addr).await?;
    let mut line = b"STORE big t ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 200_001));
    line.push(b'\n');
    conn.send(&line).await?;
    let reply = conn.reply().await?.expect("an error line");
    assert_eq!(reply["error"]["name"], "FrameTooLarge");
    assert!(conn.reply().await?.is_none());
    server.stop().await
}

#[tokio::test]
async fn a_last_line_without_newline_is_still_answered() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = TextConnection::connect(server.addr).await?;
    conn.send(b"HEALTH").await?;
    // Without a newline the sniffer waits for the line to complete; a half-close ends it.
    conn.shutdown_write().await?;
    let reply = conn
        .reply()
        .await?
        .expect("a reply to the unterminated line");
    assert_eq!(reply["health"]["status"], "ok");
    server.stop().await
}
