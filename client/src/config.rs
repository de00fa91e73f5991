//! Client settings.

use std::time::Duration;

use sutra_protocol::MAX_FRAME_BYTES_CAP;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Time allowed to open the TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request, from sending to its response.
    pub request_timeout: Duration,
    /// Most requests in flight on the connection; further callers wait for a slot.
    pub max_in_flight: usize,
    /// Largest response frame accepted.
    pub max_frame_bytes: u32,
    /// Shared secret sent with `Auth` on every new connection, for servers started with
    /// `SUTRA_AUTH_TOKEN`.
    pub auth_token: Option<String>,
}

impl ClientConfig {
    /// Default `connect_timeout`.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `request_timeout`.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_in_flight`.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            max_frame_bytes: MAX_FRAME_BYTES_CAP,
            auth_token: None,
        }
    }
}
