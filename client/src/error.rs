//! Why a request failed.

use sutra_protocol::{DecodeError, EncodeError, ErrorCode};

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address.
        addr: String,
        /// The operating system's reason.
        message: String,
    },
    /// Connecting took longer than `connect_timeout`.
    #[error("connecting to {addr} timed out")]
    ConnectTimeout {
        /// The address.
        addr: String,
    },
    /// No response within `request_timeout`.
    #[error("request timed out")]
    Timeout,
    /// The connection closed before the response arrived; the request may have been applied.
    #[error("connection closed")]
    ConnectionClosed,
    /// The server answered with an error.
    #[error("server error {code}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The request could not be encoded (too large, or an invalid id).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server sent bytes this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<EncodeError> for ClientError {
    fn from(error: EncodeError) -> Self {
        ClientError::InvalidRequest(error.to_string())
    }
}

impl From<DecodeError> for ClientError {
    fn from(error: DecodeError) -> Self {
        ClientError::InvalidRequest(error.to_string())
    }
}
