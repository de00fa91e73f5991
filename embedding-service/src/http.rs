//! What both roles share over HTTP: serving a router until shutdown, and the JSON error
//! body every failed request gets.

use sutra_protocol::embed_json::RequestError;

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A JSON error body with an HTTP status: every bad request gets one, never a bare status.
#[derive(Debug)]
pub struct HttpError {
    /// The status.
    pub status: axum::http::StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

impl HttpError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// `status` with `message`.
    pub fn new(status: axum::http::StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

impl axum::response::IntoResponse for HttpError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({
            "error": {"status": self.status.as_u16(), "message": self.message}
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<axum::extract::rejection::BytesRejection> for HttpError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> HttpError {
        HttpError::new(rejection.status(), rejection.body_text())
    }
}

impl From<RequestError> for HttpError {
    fn from(error: RequestError) -> HttpError {
        let status = axum::http::StatusCode::from_u16(error.status)
            .unwrap_or(axum::http::StatusCode::BAD_REQUEST);
        HttpError::new(status, error.message)
    }
}
