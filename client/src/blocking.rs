//! A synchronous facade over [`Client`] for scripts and non-async code.

use std::sync::Arc;

use sutra_protocol::{
    Concept, HealthInfo, QueryPage, Request, Response, StatsSnapshot, StoreConcept, StoreOutcome,
};

use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::ClientError;

/// A blocking client: each call runs the async client on a private single-threaded runtime.
/// Do not use it from inside an async runtime (tokio refuses nested `block_on`).
pub struct BlockingClient {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl BlockingClient {
    /// Connects to `addr` (`host:port`) with default settings.
    pub fn connect(addr: impl Into<String>) -> Result<BlockingClient, ClientError> {
        Self::connect_with(addr, ClientConfig::default())
    }

    /// Connects to `addr` with `config`.
    pub fn connect_with(
        addr: impl Into<String>,
        config: ClientConfig,
    ) -> Result<BlockingClient, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| ClientError::Connect {
                addr: String::new(),
                message: error.to_string(),
            })?;
        let client = runtime.block_on(Client::connect_with(addr, config))?;
        Ok(BlockingClient { runtime, client })
    }

    /// See [`Client::call`].
    pub fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.runtime.block_on(self.client.call(request))
    }

    /// See [`Client::health_check`].
    pub fn health_check(&self) -> Result<HealthInfo, ClientError> {
        self.runtime.block_on(self.client.health_check())
    }

    /// See [`Client::store_concept`].
    pub fn store_concept(&self, store: StoreConcept) -> Result<StoreOutcome, ClientError> {
        self.runtime.block_on(self.client.store_concept(store))
    }

    /// See [`Client::get_concept_by_id`].
    pub fn get_concept_by_id(&self, id: &str) -> Result<Arc<Concept>, ClientError> {
        self.runtime.block_on(self.client.get_concept_by_id(id))
    }

    /// See [`Client::query_by_type`].
    pub fn query_by_type(
        &self,
        concept_type: &str,
        limit: u32,
        cursor: &str,
    ) -> Result<QueryPage, ClientError> {
        self.runtime
            .block_on(self.client.query_by_type(concept_type, limit, cursor))
    }

    /// See [`Client::delete_concept`].
    pub fn delete_concept(&self, id: &str) -> Result<bool, ClientError> {
        self.runtime.block_on(self.client.delete_concept(id))
    }

    /// See [`Client::stats`].
    pub fn stats(&self) -> Result<StatsSnapshot, ClientError> {
        self.runtime.block_on(self.client.stats())
    }
}
