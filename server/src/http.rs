//! HTTP on the storage port: `GET /health` and `GET /stats` as JSON, served by axum over
//! hyper's HTTP/1.1 connection (no hand-written HTTP parsing).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sutra_protocol::ErrorCode;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::json;
use crate::net::SessionError;
use crate::service::Service;

/// The HTTP routes, over the shared service.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/stats", get(stats))
        .fallback(not_found)
        .with_state(service)
}

async fn health(State(service): State<Arc<Service>>) -> Json<serde_json::Value> {
    let info = service.health();
    service.count_response(&sutra_protocol::Response::Health(info.clone()));
    let mut body = json::health(&info);
    if let Some(object) = body.as_object_mut() {
        let embedder = service.embedder();
        object.insert(
            "model".to_owned(),
            embedder.map_or(serde_json::Value::Null, |embedder| {
                embedder.model_name().into()
            }),
        );
        object.insert(
            "model_dimension".to_owned(),
            embedder.map_or(serde_json::Value::Null, |_| info.vector_dimension.into()),
        );
    }
    Json(body)
}

async fn stats(State(service): State<Arc<Service>>) -> Json<serde_json::Value> {
    let snapshot = service.stats();
    service.count_response(&sutra_protocol::Response::Stats(snapshot.clone()));
    Json(json::stats(&snapshot))
}

async fn not_found() -> Response {
    let body = json::error(
        ErrorCode::NotFound,
        "no such endpoint; try GET /health or GET /stats",
    );
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "ok": false, "error": body })),
    )
        .into_response()
}

/// Serves HTTP/1.1 on an accepted connection until the client closes it or `shutdown` is
/// cancelled; then in-flight requests finish and the connection closes.
pub(crate) async fn serve(
    stream: TcpStream,
    service: Arc<Service>,
    idle_timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let service = TowerToHyperService::new(router(service));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return Ok(result?),
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    Ok(connection.await?)
}
