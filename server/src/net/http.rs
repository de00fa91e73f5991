//! HTTP on the storage port: `GET /health` and `GET /stats` as JSON, `GET /metrics`
//! (Prometheus text), and the learn path
//! (`POST /api/learn`, `GET /api/health`), served by axum over hyper's HTTP/1.1 connection
//! (no hand-written HTTP parsing).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use sutra_protocol::{ErrorCode, LearnConcept, Request, RequestFrame, Search, SearchQuery};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::session::SessionError;
use crate::executor::Executor;
use crate::json;

/// The HTTP routes, over the shared executor.
pub fn router(executor: Arc<Executor>) -> Router {
    let body_limit = executor.limits().max_frame_bytes as usize;
    Router::new()
        .route("/health", get(health))
        .route("/api/health", get(health))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/learn", post(learn))
        .route("/api/search", post(search))
        .layer(DefaultBodyLimit::max(body_limit))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&executor),
            require_token,
        ))
        .with_state(executor)
}

/// The peer of an HTTP connection, for the authentication log.
#[derive(Debug, Clone, Copy)]
struct Peer(Option<std::net::SocketAddr>);

/// With `SUTRA_AUTH_TOKEN`: every request needs `Authorization: Bearer <token>`, except the
/// health endpoints while they are open; else 401 with a JSON error.
async fn require_token(
    State(executor): State<Arc<Executor>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !executor.auth().requires() {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if executor.auth().health_is_open() && (path == "/health" || path == "/api/health") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    if presented.is_some_and(|token| executor.auth().check_token(token)) {
        return next.run(request).await;
    }
    if presented.is_some() {
        let peer = request.extensions().get::<Peer>().and_then(|peer| peer.0);
        if let Some(peer) = peer {
            executor.auth().failed(peer, "http");
        }
        tokio::time::sleep(crate::auth::AUTH_FAILURE_DELAY).await;
    }
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        "this server requires Authorization: Bearer <token>",
    );
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// `POST /api/learn` body: the text and its metadata.
#[derive(Debug, Deserialize)]
struct LearnBody {
    content: String,
    /// `type`/`concept_type` (a string) sets the concept type, `ttl_seconds` (a number) its
    /// lifetime, `id` (a string) its id; every other key becomes an attribute (strings as
    /// they are, anything else as JSON text).
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(json::failure(code, message))).into_response()
}

fn learn_request(body: LearnBody) -> Result<LearnConcept, String> {
    let mut learn = LearnConcept::new(body.content);
    for (key, value) in body.metadata {
        match (key.as_str(), value) {
            ("type" | "concept_type", serde_json::Value::String(name)) => {
                learn.concept_type = name;
            }
            ("ttl_seconds", serde_json::Value::Number(seconds)) => {
                learn.ttl_seconds = Some(
                    seconds
                        .as_u64()
                        .ok_or("metadata.ttl_seconds must be a whole number of seconds")?,
                );
            }
            ("id", serde_json::Value::String(id)) => {
                learn.id =
                    Some(sutra_protocol::ConceptId::parse(&id).map_err(|error| error.to_string())?);
            }
            (_, serde_json::Value::String(text)) => {
                learn.attributes.insert(key, text);
            }
            (_, other) => {
                learn.attributes.insert(key, other.to_string());
            }
        }
    }
    Ok(learn)
}

/// A request body as the JSON of endpoint `what`, whatever its Content-Type says
/// (`curl -d '{...}'`, as the seed writes it, sends application/x-www-form-urlencoded); else
/// the 400 (or 413, over the body limit) to answer.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, Box<Response>> {
    let bytes = body.map_err(|rejection| {
        Box::new(error_response(
            rejection.status(),
            ErrorCode::InvalidArgument,
            &rejection.body_text(),
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|error| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            &format!("the body is not the {what} JSON: {error}"),
        ))
    })
}

/// `POST /api/learn`: LearnConcept over HTTP; 201 with the concept id. The body is read as
/// JSON whatever its Content-Type. The request is checked
/// by the binary protocol's own decoder under the server's limits, so HTTP accepts exactly
/// what a frame would.
async fn learn(
    State(executor): State<Arc<Executor>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let invalid = |message: &str| {
        error_response(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message)
    };
    let body: LearnBody = match json_body(body, "learn") {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let learn = match learn_request(body) {
        Ok(learn) => learn,
        Err(message) => return invalid(&message),
    };
    let frame = RequestFrame {
        request_id: 1,
        request: Request::LearnConcept(learn),
    };
    let mut payload = bytes::BytesMut::new();
    if let Err(error) = frame.encode_payload(&mut payload) {
        return invalid(&error.to_string());
    }
    let request = match sutra_protocol::decode_request(&payload, executor.limits()) {
        Ok(frame) => frame.request,
        Err(error) => return invalid(&error.error.to_string()),
    };
    let response = executor.call_and_wait(request).await;
    executor.count_response(&response);
    match response {
        sutra_protocol::Response::Learned(learned) => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "ok": true,
                "concept_id": learned.id,
                "created": learned.outcome.created,
                "tokens": learned.tokens,
                "truncated": learned.truncated,
            })),
        )
            .into_response(),
        other => failure(other),
    }
}

async fn health(State(executor): State<Arc<Executor>>) -> Json<serde_json::Value> {
    let info = executor.health();
    executor.count_response(&sutra_protocol::Response::Health(info.clone()));
    let mut body = json::health(&info);
    if let Some(object) = body.as_object_mut() {
        let embedder = executor.embedder();
        if let Some(url) = embedder.and_then(|embedder| embedder.service_url()) {
            object.insert("embedding_service".to_owned(), url.into());
        }
        object.insert(
            "model_dimension".to_owned(),
            embedder.map_or(serde_json::Value::Null, |_| info.vector_dimension.into()),
        );
    }
    Json(body)
}

async fn stats(State(executor): State<Arc<Executor>>) -> Json<serde_json::Value> {
    let snapshot = executor.stats();
    executor.count_response(&sutra_protocol::Response::Stats(snapshot.clone()));
    Json(json::stats(&snapshot))
}

async fn metrics(State(executor): State<Arc<Executor>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        executor.metrics_text(),
    )
        .into_response()
}

/// `POST /api/search` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    text: Option<String>,
    vector: Option<Vec<f32>>,
    #[serde(default = "default_k")]
    k: u32,
    #[serde(default, rename = "type")]
    concept_type: String,
    #[serde(default)]
    exact: bool,
    #[serde(default)]
    ef: u32,
    #[serde(default)]
    include_concepts: bool,
}

fn default_k() -> u32 {
    10
}

/// `POST /api/search`: `{"text": ...}` or `{"vector": [...]}`, `"k"` (10), `"type"`,
/// `"exact"`, `"ef"`, `"include_concepts"` -> `{"results": [{"id", "score", "concept"?}],
/// "exact", "took_ms"}`. Checked by the binary protocol's own decoder, like learn.
async fn search(
    State(executor): State<Arc<Executor>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let invalid = |message: &str| {
        error_response(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message)
    };
    let body: SearchBody = match json_body(body, "search") {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let query = match (body.text, body.vector) {
        (Some(text), None) => SearchQuery::Text(text),
        (None, Some(values)) => {
            let dimension = u32::try_from(values.len()).unwrap_or(u32::MAX);
            match sutra_protocol::Vector::new(values, dimension) {
                Ok(vector) => SearchQuery::Vector(vector),
                Err(error) => return invalid(&format!("vector: {error}")),
            }
        }
        _ => return invalid("give exactly one of \"text\" and \"vector\""),
    };
    let frame = RequestFrame {
        request_id: 1,
        request: Request::Search(Search {
            query,
            k: body.k,
            concept_type: body.concept_type,
            exact: body.exact,
            ef: body.ef,
            include_concepts: body.include_concepts,
        }),
    };
    let mut payload = bytes::BytesMut::new();
    if let Err(error) = frame.encode_payload(&mut payload) {
        return invalid(&error.to_string());
    }
    let request = match sutra_protocol::decode_request(&payload, executor.limits()) {
        Ok(frame) => frame.request,
        Err(error) => {
            let code = error.error.code();
            return error_response(status_of(code), code, &error.error.to_string());
        }
    };
    match executor.call_and_wait(request).await {
        sutra_protocol::Response::Found(results) => Json(serde_json::json!({
            "results": json::search_hits(&results),
            "exact": results.exact,
            "took_ms": started.elapsed().as_secs_f64() * 1000.0,
        }))
        .into_response(),
        other => failure(other),
    }
}

/// The HTTP status of a protocol error code.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NoModel | ErrorCode::Busy | ErrorCode::StorageUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Full => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::DimensionMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// An endpoint's answer when the request did not succeed: the error with its status, or a 500
/// for an answer of the wrong kind (a bug).
fn failure(answer: sutra_protocol::Response) -> Response {
    match answer {
        sutra_protocol::Response::Error(sutra_protocol::ErrorResponse { code, message }) => {
            error_response(status_of(code), code, &message)
        }
        other => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            &format!("unexpected answer {other:?}"),
        ),
    }
}

/// The endpoints, for the error of a request that matches none.
const ENDPOINTS: &str =
    "GET /health, GET /api/health, GET /stats, GET /metrics, POST /api/learn or POST /api/search";

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        &format!("no such endpoint; try {ENDPOINTS}"),
    )
}

/// A known path with another method (`POST /health`): 405 with the same JSON error body as
/// every other error status, and the `Allow` header axum sets.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidArgument,
        &format!(
            "{method} is not allowed on {}; the endpoints are {ENDPOINTS}",
            uri.path()
        ),
    )
}

/// Serves HTTP/1.1 on an accepted connection until the client closes it or `shutdown` is
/// cancelled; then in-flight requests finish and the connection closes.
pub(crate) async fn serve(
    stream: TcpStream,
    executor: Arc<Executor>,
    read_timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let peer = Peer(stream.peer_addr().ok());
    let executor = TowerToHyperService::new(router(executor).layer(axum::Extension(peer)));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .serve_connection(TokioIo::new(stream), executor);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return Ok(result?),
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    Ok(connection.await?)
}
