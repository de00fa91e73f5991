//! The async client: one pipelined connection, reopened on the next call after it breaks.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use sutra_protocol::{
    Concept, ConceptId, HealthInfo, LearnConcept, Learned, QueryByType, QueryPage, Request,
    Response, Search, SearchResults, StatsSnapshot, StoreConcept, StoreOutcome,
};
use tokio::sync::{Mutex, Semaphore};

use crate::config::ClientConfig;
use crate::connection;
use crate::error::ClientError;

struct Inner {
    addr: String,
    config: ClientConfig,
    connection: Mutex<Option<connection::Handle>>,
    in_flight: Semaphore,
    next_request_id: AtomicU32,
}

/// A cloneable handle to one pipelined connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to `addr` (`host:port`) with default settings.
    pub async fn connect(addr: impl Into<String>) -> Result<Client, ClientError> {
        Self::connect_with(addr, ClientConfig::default()).await
    }

    /// Connects to `addr` with `config`.
    pub async fn connect_with(
        addr: impl Into<String>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let client = Self::lazy(addr, config);
        client.handle().await?;
        Ok(client)
    }

    /// A client for `addr` that connects on its first request (and reconnects on the next
    /// request after a broken connection), for servers that may not be up yet.
    pub fn lazy(addr: impl Into<String>, config: ClientConfig) -> Client {
        let in_flight = Semaphore::new(config.max_in_flight.max(1));
        Client {
            inner: Arc::new(Inner {
                addr: addr.into(),
                config,
                connection: Mutex::new(None),
                in_flight,
                next_request_id: AtomicU32::new(1),
            }),
        }
    }

    /// The address this client connects to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The live connection, opening a new one if the last one broke.
    async fn handle(&self) -> Result<connection::Handle, ClientError> {
        let mut current = self.inner.connection.lock().await;
        if let Some(handle) = current.as_ref().filter(|handle| handle.is_open()) {
            return Ok(handle.clone());
        }
        let handle = connection::open(&self.inner.addr, &self.inner.config).await?;
        if let Some(token) = &self.inner.config.auth_token {
            let request = Request::Auth {
                token: token.clone(),
            };
            let answer = handle
                .call(
                    self.next_request_id(),
                    request,
                    self.inner.config.request_timeout,
                )
                .await?;
            match answer {
                Response::Authenticated => {}
                Response::Error(error) => {
                    return Err(ClientError::Server {
                        code: error.code,
                        message: error.message,
                    })
                }
                other => return Err(unexpected(&other)),
            }
        }
        *current = Some(handle.clone());
        Ok(handle)
    }

    fn next_request_id(&self) -> u32 {
        loop {
            // Id 0 is reserved for the server's connection-level errors.
            let id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Sends any request and returns its response; server errors become
    /// [`ClientError::Server`].
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let _slot = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| ClientError::ConnectionClosed)?;
        let handle = self.handle().await?;
        let request_id = self.next_request_id();
        let response = handle
            .call(request_id, request, self.inner.config.request_timeout)
            .await?;
        match response {
            Response::Error(error) => Err(ClientError::Server {
                code: error.code,
                message: error.message,
            }),
            response => Ok(response),
        }
    }

    /// `Health`.
    pub async fn health_check(&self) -> Result<HealthInfo, ClientError> {
        match self.call(Request::Health).await? {
            Response::Health(health) => Ok(health),
            other => Err(unexpected(&other)),
        }
    }

    /// `StoreConcept` (upsert).
    pub async fn store_concept(&self, store: StoreConcept) -> Result<StoreOutcome, ClientError> {
        match self.call(Request::StoreConcept(store)).await? {
            Response::Stored(outcome) => Ok(outcome),
            other => Err(unexpected(&other)),
        }
    }

    /// `GetConceptById`; a missing id is `ClientError::Server { code: NotFound, .. }`.
    pub async fn get_concept_by_id(&self, id: &str) -> Result<Arc<Concept>, ClientError> {
        let id = ConceptId::parse(id)?;
        match self.call(Request::GetConceptById { id }).await? {
            Response::Concept(concept) => Ok(concept),
            other => Err(unexpected(&other)),
        }
    }

    /// `QueryByType`: one page after `cursor` (empty for the first page).
    pub async fn query_by_type(
        &self,
        concept_type: &str,
        limit: u32,
        cursor: &str,
    ) -> Result<QueryPage, ClientError> {
        let query = QueryByType {
            concept_type: concept_type.to_owned(),
            limit,
            cursor: cursor.to_owned(),
        };
        match self.call(Request::QueryByType(query)).await? {
            Response::Page(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// `Delete`; returns whether the concept existed.
    pub async fn delete_concept(&self, id: &str) -> Result<bool, ClientError> {
        let id = ConceptId::parse(id)?;
        match self.call(Request::Delete { id }).await? {
            Response::Deleted { existed } => Ok(existed),
            other => Err(unexpected(&other)),
        }
    }

    /// `GetMany`: one round trip for several ids; `None` where there is no live concept.
    pub async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<Arc<Concept>>>, ClientError> {
        let ids = ids
            .iter()
            .map(|id| ConceptId::parse(id))
            .collect::<Result<Vec<_>, _>>()?;
        match self.call(Request::GetMany { ids }).await? {
            Response::Many(found) => Ok(found),
            other => Err(unexpected(&other)),
        }
    }

    /// `StoreMany`: several concepts in one round trip, stored atomically.
    pub async fn store_many(
        &self,
        stores: Vec<StoreConcept>,
    ) -> Result<Vec<StoreOutcome>, ClientError> {
        match self.call(Request::StoreMany(stores)).await? {
            Response::StoredMany(outcomes) => Ok(outcomes),
            other => Err(unexpected(&other)),
        }
    }

    /// `ClearType`: removes every concept of a type; returns how many live ones were removed.
    pub async fn clear_type(&self, concept_type: &str) -> Result<u64, ClientError> {
        match self
            .call(Request::ClearType {
                concept_type: concept_type.to_owned(),
            })
            .await?
        {
            Response::Cleared { removed } => Ok(removed),
            other => Err(unexpected(&other)),
        }
    }

    /// `LearnConcept`: the server embeds the text with its model and stores it; the answer
    /// carries the stored id (derived from the text when `learn.id` is `None`).
    pub async fn learn_concept(&self, learn: LearnConcept) -> Result<Learned, ClientError> {
        match self.call(Request::LearnConcept(learn)).await? {
            Response::Learned(learned) => Ok(learned),
            other => Err(unexpected(&other)),
        }
    }

    /// `LearnBatch`: several texts in one model run and one log record (all or none).
    pub async fn learn_batch(
        &self,
        learns: Vec<LearnConcept>,
    ) -> Result<Vec<Learned>, ClientError> {
        match self.call(Request::LearnBatch(learns)).await? {
            Response::LearnedMany(learned) => Ok(learned),
            other => Err(unexpected(&other)),
        }
    }

    /// `Stats`.
    pub async fn stats(&self) -> Result<StatsSnapshot, ClientError> {
        match self.call(Request::Stats).await? {
            Response::Stats(stats) => Ok(stats),
            other => Err(unexpected(&other)),
        }
    }

    /// `Search`: the concepts nearest to a vector or a text, best first.
    pub async fn search(&self, search: Search) -> Result<SearchResults, ClientError> {
        match self.call(Request::Search(search)).await? {
            Response::Found(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {response:?}"))
}
