//! Async client for sutra-storage's binary protocol (see `PROTOCOL.md`).
//!
//! One [`Client`] holds one TCP connection and may be cloned and shared by any number of
//! tasks: requests are written as they arrive (pipelined), tagged with request ids, and each
//! response is routed back to its caller by id, so a single connection carries thousands of
//! requests in flight (bounded by [`ClientConfig::max_in_flight`]).
//!
//! - Timeouts: connecting ([`ClientConfig::connect_timeout`]) and each request
//!   ([`ClientConfig::request_timeout`]).
//! - Errors: [`ClientError`]; a server error keeps its [`ErrorCode`](sutra_protocol::ErrorCode).
//! - Reconnect: when the connection breaks, requests in flight fail with
//!   [`ClientError::ConnectionClosed`] (they may or may not have been applied) and the next
//!   request opens a new connection. Requests are never retried silently.
//! - [`BlockingClient`] wraps the async client for scripts and synchronous code.
//!
//! This crate depends only on `sutra-protocol` and tokio; it never links the server.

mod blocking;
mod client;
mod config;
mod connection;
mod error;

pub use blocking::BlockingClient;
pub use client::Client;
pub use config::ClientConfig;
pub use error::ClientError;
pub use sutra_protocol;
