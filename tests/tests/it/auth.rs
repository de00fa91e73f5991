//! `SUTRA_AUTH_TOKEN`: every dialect refuses an unauthenticated connection until it presents
//! the token (binary Auth, text AUTH, HTTP Bearer); health stays open unless told otherwise;
//! three wrong tokens close a connection.

use sutra_client::{Client, ClientConfig};
use sutra_protocol::{ConceptId, ErrorCode, Request, Response, StoreConcept};
use sutra_server::AuthConfig;
use sutra_tests::{
    http_get, http_get_bearer, request_bytes, RawConnection, TestServer, TextConnection,
};

const TOKEN: &str = "correct-horse-battery-staple";

fn with_token(open_health: bool) -> impl FnOnce(&mut sutra_server::ServerConfig) {
    move |config| config.auth = Some(AuthConfig::new(TOKEN, open_health))
}

fn client_config(token: Option<&str>) -> ClientConfig {
    ClientConfig {
        auth_token: token.map(str::to_owned),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_clients_must_present_the_token() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_token(true)).await?;
    let anonymous = Client::connect(server.addr_string()).await?;
    assert_eq!(
        anonymous.health_check().await?.status,
        "ok",
        "health stays open"
    );
    let refused = anonymous
        .store_concept(StoreConcept::new(ConceptId::parse("a")?, "x"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Some(ErrorCode::Unauthenticated));

    let wrong = Client::connect_with(server.addr_string(), client_config(Some("guess"))).await;
    assert_eq!(
        wrong.err().and_then(|error| error.code()),
        Some(ErrorCode::Unauthenticated)
    );

    let client = Client::connect_with(server.addr_string(), client_config(Some(TOKEN))).await?;
    client
        .store_concept(StoreConcept::new(ConceptId::parse("a")?, "x"))
        .await?;
    assert_eq!(client.get_concept_by_id("a").await?.content, "x");
    // The refused store stored nothing: the only concept is the authenticated one.
    assert_eq!(client.stats().await?.get("concepts"), Some(1));

    // Three wrong tokens on one connection close it.
    let mut raw = RawConnection::connect(server.addr).await?;
    for attempt in 1..=3 {
        let auth = Request::Auth {
            token: format!("wrong {attempt}"),
        };
        raw.send(&request_bytes(attempt, auth)).await?;
        let answer = raw.expect().await?;
        assert!(
            matches!(&answer.response, Response::Error(error) if error.code == ErrorCode::Unauthenticated),
            "{answer:?}"
        );
    }
    raw.expect_closed().await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_http_need_the_token_too() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_token(true)).await?;
    let mut text = TextConnection::connect(server.addr).await?;
    let refused = text.command("STORE t1 note hello").await?;
    assert_eq!(refused["error"]["name"], "Unauthenticated", "{refused}");
    assert_eq!(text.command("PING").await?["ok"], true, "health stays open");
    assert_eq!(text.command("AUTH nope").await?["ok"], false);
    assert_eq!(
        text.command(&format!("AUTH {TOKEN}")).await?["authenticated"],
        true
    );
    assert_eq!(text.command("STORE t1 note hello").await?["ok"], true);

    let mut guesser = TextConnection::connect(server.addr).await?;
    for guess in ["a", "b", "c"] {
        assert_eq!(
            guesser.command(&format!("AUTH {guess}")).await?["ok"],
            false
        );
    }
    assert!(
        guesser.reply().await?.is_none(),
        "closed after three wrong tokens"
    );

    let (status, body) = http_get(server.addr, "/stats").await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Unauthenticated"), "{body}");
    assert_eq!(http_get(server.addr, "/health").await?.0, 200);
    assert_eq!(http_get_bearer(server.addr, "/stats", TOKEN).await?.0, 200);
    assert_eq!(
        http_get_bearer(server.addr, "/metrics", "guess").await?.0,
        401
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_health_needs_the_token() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_token(false)).await?;
    let anonymous = Client::connect(server.addr_string()).await?;
    let refused = anonymous.health_check().await.expect_err("refused");
    assert_eq!(refused.code(), Some(ErrorCode::Unauthenticated));
    assert_eq!(http_get(server.addr, "/health").await?.0, 401);
    assert_eq!(http_get_bearer(server.addr, "/health", TOKEN).await?.0, 200);
    server.stop().await
}
