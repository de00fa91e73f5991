//! Requests: the payload header and each request body, encoded and decoded side by side.
//!
//! # Payload header (6 bytes, shared by requests and responses)
//!
//! | offset | field | encoding |
//! |---|---|---|
//! | 0 | version | u8, [`PROTOCOL_VERSION`] |
//! | 1 | opcode | u8, see [`Opcode`] |
//! | 2 | request_id | u32 LE, echoed in the response |
//!
//! The body follows immediately; its layout depends on the opcode (see each type).

#![deny(clippy::arithmetic_side_effects)]

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::limits::Limits;
use crate::types::{self, Attributes, ConceptId, FieldLimits, Vector};
use crate::wire;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of the payload header in bytes.
pub const HEADER_BYTES: usize = 6;

/// A request's operation. Values are stable and never reused.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Opcode {
    /// Liveness and basic facts about the server.
    Health = 0x01,
    /// Insert or replace a concept.
    StoreConcept = 0x02,
    /// Read one concept.
    GetConceptById = 0x03,
    /// List concepts of one type, paged.
    QueryByType = 0x04,
    /// Remove one concept.
    Delete = 0x05,
    /// Server counters.
    Stats = 0x06,
    /// Read several concepts in one round trip.
    GetMany = 0x07,
    /// Store several concepts atomically in one round trip.
    StoreMany = 0x08,
    /// Remove every concept of a type.
    ClearType = 0x09,
    /// Embed a text with the server's model and store it.
    LearnConcept = 0x0A,
    /// Embed and store several texts in one round trip, all or none.
    LearnBatch = 0x0B,
    /// Present the shared secret (servers started with `SUTRA_AUTH_TOKEN`).
    Auth = 0x0C,
    /// The stored concepts nearest to a vector or a text.
    Search = 0x0D,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 13] = [
        Opcode::Health,
        Opcode::StoreConcept,
        Opcode::GetConceptById,
        Opcode::QueryByType,
        Opcode::Delete,
        Opcode::Stats,
        Opcode::GetMany,
        Opcode::StoreMany,
        Opcode::ClearType,
        Opcode::LearnConcept,
        Opcode::LearnBatch,
        Opcode::Auth,
        Opcode::Search,
    ];

    /// The opcode for a wire byte, if known.
    pub fn from_u8(value: u8) -> Option<Opcode> {
        Opcode::ALL
            .into_iter()
            .find(|opcode| *opcode as u8 == value)
    }

    /// Whether the request changes the store (the server answers the reads queued behind a
    /// write only once the write is applied, so a connection reads its own writes).
    pub const fn is_write(self) -> bool {
        match self {
            Opcode::StoreConcept
            | Opcode::Delete
            | Opcode::StoreMany
            | Opcode::ClearType
            | Opcode::LearnConcept
            | Opcode::LearnBatch => true,
            Opcode::Health
            | Opcode::GetConceptById
            | Opcode::QueryByType
            | Opcode::Stats
            | Opcode::GetMany
            | Opcode::Auth
            | Opcode::Search => false,
        }
    }

    /// The opcode's name as used in `PROTOCOL.md`.
    pub const fn name(self) -> &'static str {
        match self {
            Opcode::Health => "Health",
            Opcode::StoreConcept => "StoreConcept",
            Opcode::GetConceptById => "GetConceptById",
            Opcode::QueryByType => "QueryByType",
            Opcode::Delete => "Delete",
            Opcode::Stats => "Stats",
            Opcode::GetMany => "GetMany",
            Opcode::StoreMany => "StoreMany",
            Opcode::ClearType => "ClearType",
            Opcode::LearnConcept => "LearnConcept",
            Opcode::LearnBatch => "LearnBatch",
            Opcode::Auth => "Auth",
            Opcode::Search => "Search",
        }
    }
}

/// The 6-byte header at the start of every payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u8,
    /// Raw opcode byte (it may be unknown).
    pub opcode: u8,
    /// Request id chosen by the client, echoed in the response. Id 0 is reserved for
    /// connection-level errors the server sends before or without a request.
    pub request_id: u32,
}

impl Header {
    pub(crate) fn decode(buf: &mut &[u8]) -> Result<Header, DecodeError> {
        Ok(Header {
            version: wire::get_u8(buf, "header.version")?,
            opcode: wire::get_u8(buf, "header.opcode")?,
            request_id: wire::get_u32(buf, "header.request_id")?,
        })
    }

    pub(crate) fn encode(self, dst: &mut BytesMut) {
        dst.put_u8(self.version);
        dst.put_u8(self.opcode);
        dst.put_u32_le(self.request_id);
    }
}

/// Body of `StoreConcept` (opcode 0x02): insert or replace a concept. The server sets
/// `created_at`.
///
/// | field | encoding |
/// |---|---|
/// | id | string, 1..=`MAX_ID_BYTES` bytes |
/// | content | string, at most `MAX_CONTENT_BYTES` |
/// | concept_type | string, at most `MAX_NAME_BYTES` |
/// | model | string, at most `MAX_NAME_BYTES` |
/// | attributes | map<string,string>, at most `MAX_ATTRIBUTES` entries and `MAX_ATTRIBUTE_BYTES` |
/// | embedding | option<vector>, count = `VECTOR_DIMENSION`, finite values |
/// | ttl_seconds | option<u64>; absent = the server's default, 0 = never expires |
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConcept {
    /// The id.
    pub id: ConceptId,
    /// The text the concept stands for.
    pub content: String,
    /// A free-form type name.
    pub concept_type: String,
    /// The model that produced the embedding.
    pub model: String,
    /// Free-form attributes.
    pub attributes: Attributes,
    /// The embedding, if any.
    pub embedding: Option<Vector>,
    /// Time to live in seconds: `None` = the server's default, `Some(0)` = no expiry.
    pub ttl_seconds: Option<u64>,
}

impl StoreConcept {
    /// A store of `content` under `id` with no type, model, attributes or embedding and the
    /// server's default TTL; set the public fields for the rest.
    pub fn new(id: ConceptId, content: impl Into<String>) -> StoreConcept {
        StoreConcept {
            id,
            content: content.into(),
            concept_type: String::new(),
            model: String::new(),
            attributes: Attributes::new(),
            embedding: None,
            ttl_seconds: None,
        }
    }

    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.id.encode(dst)?;
        wire::put_str(dst, &self.content, "content")?;
        wire::put_str(dst, &self.concept_type, "concept_type")?;
        wire::put_str(dst, &self.model, "model")?;
        types::encode_attributes(dst, &self.attributes)?;
        types::encode_optional_vector(dst, self.embedding.as_ref())?;
        wire::put_option_u64(dst, self.ttl_seconds);
        Ok(())
    }

    fn decode(buf: &mut &[u8], limits: &Limits) -> Result<StoreConcept, DecodeError> {
        let fields = FieldLimits::from_limits(limits);
        Ok(StoreConcept {
            id: ConceptId::decode(buf, limits.max_id_bytes)?,
            content: wire::get_str(buf, "content", limits.max_content_bytes)?.to_owned(),
            concept_type: wire::get_str(buf, "concept_type", limits.max_name_bytes)?.to_owned(),
            model: wire::get_str(buf, "model", limits.max_name_bytes)?.to_owned(),
            attributes: types::decode_attributes(buf, fields)?,
            embedding: types::decode_optional_vector(buf, Some(limits.vector_dimension))?,
            ttl_seconds: wire::get_option_u64(buf, "ttl_seconds")?,
        })
    }
}

/// Body of `LearnConcept` (opcode 0x0A): the server embeds `content` with its model and
/// stores the concept with that vector and the model's name.
///
/// | field | encoding |
/// |---|---|
/// | id | option<string>; absent = `learn-` + the first 32 hex digits of sha256(model, 0x00, content) |
/// | content | string, 1..=`MAX_CONTENT_BYTES` |
/// | concept_type | string, at most `MAX_NAME_BYTES` |
/// | attributes | map<string,string> |
/// | ttl_seconds | option<u64>; absent = the server's default, 0 = never expires |
#[derive(Debug, Clone, PartialEq)]
pub struct LearnConcept {
    /// The id, or `None` for the stable hash of (model, content).
    pub id: Option<ConceptId>,
    /// The text to embed and store.
    pub content: String,
    /// A free-form type name.
    pub concept_type: String,
    /// Free-form attributes.
    pub attributes: Attributes,
    /// Time to live in seconds: `None` = the server's default, `Some(0)` = no expiry.
    pub ttl_seconds: Option<u64>,
}

impl LearnConcept {
    /// A learn of `content` with a derived id, no type, no attributes, the default TTL.
    pub fn new(content: impl Into<String>) -> LearnConcept {
        LearnConcept {
            id: None,
            content: content.into(),
            concept_type: String::new(),
            attributes: Attributes::new(),
            ttl_seconds: None,
        }
    }

    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match &self.id {
            Some(id) => {
                dst.put_u8(1);
                id.encode(dst)?;
            }
            None => dst.put_u8(0),
        }
        wire::put_str(dst, &self.content, "content")?;
        wire::put_str(dst, &self.concept_type, "concept_type")?;
        types::encode_attributes(dst, &self.attributes)?;
        wire::put_option_u64(dst, self.ttl_seconds);
        Ok(())
    }

    fn decode(buf: &mut &[u8], limits: &Limits) -> Result<LearnConcept, DecodeError> {
        let fields = FieldLimits::from_limits(limits);
        let id = if wire::get_option_tag(buf, "id")? {
            Some(ConceptId::decode(buf, limits.max_id_bytes)?)
        } else {
            None
        };
        let content = wire::get_str(buf, "content", limits.max_content_bytes)?;
        if content.is_empty() {
            return Err(DecodeError::Empty { field: "content" });
        }
        Ok(LearnConcept {
            id,
            content: content.to_owned(),
            concept_type: wire::get_str(buf, "concept_type", limits.max_name_bytes)?.to_owned(),
            attributes: types::decode_attributes(buf, fields)?,
            ttl_seconds: wire::get_option_u64(buf, "ttl_seconds")?,
        })
    }
}

/// Body of `QueryByType` (opcode 0x04): one page of the concepts of a type, in ascending id
/// order (byte-wise), starting after `cursor`.
///
/// | field | encoding |
/// |---|---|
/// | concept_type | string, at most `MAX_NAME_BYTES` |
/// | limit | u32, 1 or more; values above `MAX_QUERY_LIMIT` are clamped to it |
/// | cursor | string: empty for the first page, else the `next_cursor` of the previous page |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryByType {
    /// The type to list.
    pub concept_type: String,
    /// The largest page wanted.
    pub limit: u32,
    /// Where the previous page ended; empty to start.
    pub cursor: String,
}

impl QueryByType {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_str(dst, &self.concept_type, "concept_type")?;
        dst.put_u32_le(self.limit);
        wire::put_str(dst, &self.cursor, "cursor")
    }

    fn decode(buf: &mut &[u8], limits: &Limits) -> Result<QueryByType, DecodeError> {
        let concept_type = wire::get_str(buf, "concept_type", limits.max_name_bytes)?.to_owned();
        let limit = wire::get_u32(buf, "limit")?;
        if limit == 0 {
            return Err(DecodeError::OutOfRange {
                field: "limit",
                expected: "at least 1",
            });
        }
        let cursor = wire::get_str(buf, "cursor", limits.max_id_bytes)?.to_owned();
        Ok(QueryByType {
            concept_type,
            limit: limit.min(limits.max_query_limit),
            cursor,
        })
    }
}

/// What a `Search` looks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchQuery {
    /// A vector of exactly `VECTOR_DIMENSION` finite values.
    Vector(Vector),
    /// A text, embedded by the server's model with the model's query prefix.
    Text(String),
}

/// Body of `Search` (opcode 0x0D): the `k` stored concepts most similar (cosine) to a vector
/// or a text, best first, ties by id; concepts without an embedding are never results.
///
/// | field | encoding |
/// |---|---|
/// | query | u8 kind (0 vector, 1 text), then a vector (count = `VECTOR_DIMENSION`) or a string (1..=`MAX_CONTENT_BYTES`) |
/// | k | u32, 1..=`MAX_SEARCH_K` |
/// | concept_type | string: only concepts of this type; empty for every type |
/// | exact | bool: 1 compares with every stored vector, 0 lets the server use its index |
/// | ef | u32: the index's search breadth (0: the server's default) |
/// | include_concepts | bool: 1 returns each result's concept, 0 only ids and scores |
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// The vector or text to compare with.
    pub query: SearchQuery,
    /// Results wanted.
    pub k: u32,
    /// Only this type; empty for every type.
    pub concept_type: String,
    /// Compare with every stored vector.
    pub exact: bool,
    /// The index's search breadth (0: the server's default, `HNSW_EF_SEARCH`).
    pub ef: u32,
    /// Return each result's concept.
    pub include_concepts: bool,
}

impl Search {
    /// A search for the `k` nearest concepts of any type to `query`, returning ids and scores
    /// (`exact` false, `ef` 0, no concepts).
    pub fn new(query: SearchQuery, k: u32) -> Search {
        Search {
            query,
            k,
            concept_type: String::new(),
            exact: false,
            ef: 0,
            include_concepts: false,
        }
    }

    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match &self.query {
            SearchQuery::Vector(vector) => {
                dst.put_u8(0);
                vector.encode(dst)?;
            }
            SearchQuery::Text(text) => {
                dst.put_u8(1);
                wire::put_str(dst, text, "text")?;
            }
        }
        dst.put_u32_le(self.k);
        wire::put_str(dst, &self.concept_type, "concept_type")?;
        wire::put_bool(dst, self.exact);
        dst.put_u32_le(self.ef);
        wire::put_bool(dst, self.include_concepts);
        Ok(())
    }

    fn decode(buf: &mut &[u8], limits: &Limits) -> Result<Search, DecodeError> {
        let query = match wire::get_u8(buf, "query kind")? {
            0 => SearchQuery::Vector(Vector::decode(buf, Some(limits.vector_dimension))?),
            1 => {
                let text = wire::get_str(buf, "text", limits.max_content_bytes)?;
                if text.is_empty() {
                    return Err(DecodeError::Empty { field: "text" });
                }
                SearchQuery::Text(text.to_owned())
            }
            _ => {
                return Err(DecodeError::OutOfRange {
                    field: "query kind",
                    expected: "0 (vector) or 1 (text)",
                })
            }
        };
        let k = wire::get_u32(buf, "k")?;
        if k == 0 || k > limits.max_search_k {
            return Err(DecodeError::OutOfRange {
                field: "k",
                expected: "1 to MAX_SEARCH_K",
            });
        }
        Ok(Search {
            query,
            k,
            concept_type: wire::get_str(buf, "concept_type", limits.max_name_bytes)?.to_owned(),
            exact: wire::get_bool(buf, "exact")?,
            ef: wire::get_u32(buf, "ef")?,
            include_concepts: wire::get_bool(buf, "include_concepts")?,
        })
    }
}

/// A request body.
///
/// | opcode | request | body |
/// |---|---|---|
/// | 0x01 | Health | empty |
/// | 0x02 | StoreConcept | [`StoreConcept`] |
/// | 0x03 | GetConceptById | id: string |
/// | 0x04 | QueryByType | [`QueryByType`] |
/// | 0x05 | Delete | id: string |
/// | 0x06 | Stats | empty |
/// | 0x07 | GetMany | count: u32 (1..=`MAX_BATCH_ITEMS`), then count ids (strings) |
/// | 0x08 | StoreMany | count: u32 (1..=`MAX_BATCH_ITEMS`), then count [`StoreConcept`] bodies |
/// | 0x09 | ClearType | concept_type: string |
/// | 0x0A | LearnConcept | [`LearnConcept`] |
/// | 0x0B | LearnBatch | count: u32 (1..=`MAX_BATCH_ITEMS`), then count [`LearnConcept`] bodies |
/// | 0x0C | Auth | token: string |
/// | 0x0D | Search | [`Search`] |
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Liveness and basic facts.
    Health,
    /// Insert or replace a concept.
    StoreConcept(StoreConcept),
    /// Read one concept.
    GetConceptById {
        /// The id.
        id: ConceptId,
    },
    /// List one page of concepts of a type.
    QueryByType(QueryByType),
    /// Remove a concept.
    Delete {
        /// The id.
        id: ConceptId,
    },
    /// Server counters.
    Stats,
    /// Read several concepts.
    GetMany {
        /// The ids, answered in this order.
        ids: Vec<ConceptId>,
    },
    /// Store several concepts, all or none.
    StoreMany(Vec<StoreConcept>),
    /// Remove every concept of a type.
    ClearType {
        /// The type.
        concept_type: String,
    },
    /// Embed and store a text.
    LearnConcept(LearnConcept),
    /// Embed and store several texts, all or none.
    LearnBatch(Vec<LearnConcept>),
    /// Authenticate this connection.
    Auth {
        /// The shared secret, at most [`MAX_TOKEN_BYTES`] bytes.
        token: String,
    },
    /// The stored concepts nearest to a vector or a text.
    Search(Search),
}

/// Longest `Auth` token, in bytes.
pub const MAX_TOKEN_BYTES: u32 = 4096;

impl Request {
    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Health => Opcode::Health,
            Request::StoreConcept(_) => Opcode::StoreConcept,
            Request::GetConceptById { .. } => Opcode::GetConceptById,
            Request::QueryByType(_) => Opcode::QueryByType,
            Request::Delete { .. } => Opcode::Delete,
            Request::Stats => Opcode::Stats,
            Request::GetMany { .. } => Opcode::GetMany,
            Request::StoreMany(_) => Opcode::StoreMany,
            Request::ClearType { .. } => Opcode::ClearType,
            Request::LearnConcept(_) => Opcode::LearnConcept,
            Request::LearnBatch(_) => Opcode::LearnBatch,
            Request::Auth { .. } => Opcode::Auth,
            Request::Search(_) => Opcode::Search,
        }
    }

    fn encode_body(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Request::Health | Request::Stats => Ok(()),
            Request::StoreConcept(store) => store.encode(dst),
            Request::GetConceptById { id } | Request::Delete { id } => id.encode(dst),
            Request::QueryByType(query) => query.encode(dst),
            Request::GetMany { ids } => {
                wire::put_len(dst, ids.len(), "ids")?;
                ids.iter().try_for_each(|id| id.encode(dst))
            }
            Request::StoreMany(stores) => {
                wire::put_len(dst, stores.len(), "concepts")?;
                stores.iter().try_for_each(|store| store.encode(dst))
            }
            Request::ClearType { concept_type } => wire::put_str(dst, concept_type, "concept_type"),
            Request::LearnConcept(learn) => learn.encode(dst),
            Request::LearnBatch(learns) => {
                wire::put_len(dst, learns.len(), "texts")?;
                learns.iter().try_for_each(|learn| learn.encode(dst))
            }
            Request::Auth { token } => wire::put_str(dst, token, "token"),
            Request::Search(search) => search.encode(dst),
        }
    }

    /// Reads a batch count: 1..=`MAX_BATCH_ITEMS`, each entry at least `min_entry_bytes`.
    fn batch_count(
        buf: &mut &[u8],
        field: &'static str,
        limits: &Limits,
        min_entry_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = wire::get_count(buf, field, limits.max_batch_items, min_entry_bytes)?;
        if count == 0 {
            return Err(DecodeError::Empty { field });
        }
        Ok(count)
    }

    fn decode_body(
        opcode: Opcode,
        buf: &mut &[u8],
        limits: &Limits,
    ) -> Result<Request, DecodeError> {
        Ok(match opcode {
            Opcode::Health => Request::Health,
            Opcode::Stats => Request::Stats,
            Opcode::StoreConcept => Request::StoreConcept(StoreConcept::decode(buf, limits)?),
            Opcode::GetConceptById => Request::GetConceptById {
                id: ConceptId::decode(buf, limits.max_id_bytes)?,
            },
            Opcode::QueryByType => Request::QueryByType(QueryByType::decode(buf, limits)?),
            Opcode::Delete => Request::Delete {
                id: ConceptId::decode(buf, limits.max_id_bytes)?,
            },
            Opcode::GetMany => {
                // An id is at least its length and one byte.
                let count = Self::batch_count(buf, "ids", limits, 5)?;
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push(ConceptId::decode(buf, limits.max_id_bytes)?);
                }
                Request::GetMany { ids }
            }
            Opcode::StoreMany => {
                // The smallest StoreConcept body: a 1-byte id and empty fields.
                let count = Self::batch_count(buf, "concepts", limits, 23)?;
                let mut stores = Vec::with_capacity(count);
                for _ in 0..count {
                    stores.push(StoreConcept::decode(buf, limits)?);
                }
                Request::StoreMany(stores)
            }
            Opcode::ClearType => Request::ClearType {
                concept_type: wire::get_str(buf, "concept_type", limits.max_name_bytes)?.to_owned(),
            },
            Opcode::LearnConcept => Request::LearnConcept(LearnConcept::decode(buf, limits)?),
            Opcode::LearnBatch => {
                // The smallest LearnConcept body: no id, 1 byte of content, empty fields.
                let count = Self::batch_count(buf, "texts", limits, 15)?;
                let mut learns = Vec::with_capacity(count);
                for _ in 0..count {
                    learns.push(LearnConcept::decode(buf, limits)?);
                }
                Request::LearnBatch(learns)
            }
            Opcode::Auth => Request::Auth {
                token: wire::get_str(buf, "token", MAX_TOKEN_BYTES)?.to_owned(),
            },
            Opcode::Search => Request::Search(Search::decode(buf, limits)?),
        })
    }
}

/// A request with its id: one whole payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFrame {
    /// The client's request id, echoed in the response.
    pub request_id: u32,
    /// The request.
    pub request: Request,
}

impl RequestFrame {
    /// Appends the payload (header and body, without the length prefix) to `dst`.
    pub fn encode_payload(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        Header {
            version: PROTOCOL_VERSION,
            opcode: self.request.opcode() as u8,
            request_id: self.request_id,
        }
        .encode(dst);
        self.request.encode_body(dst)
    }
}

/// A payload that is not a valid request. `header` is present when the first six bytes could
/// be read, so the error response can echo the request id and opcode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct RequestDecodeError {
    /// The header, when it was complete.
    pub header: Option<Header>,
    /// What was wrong.
    pub error: DecodeError,
}

/// Decodes one request payload (as delimited by [`crate::FrameCodec`]).
///
/// Checks, in order: the header is complete, the version is [`PROTOCOL_VERSION`], the opcode
/// is known, the body is valid under `limits`, and nothing trails it.
pub fn decode_request(payload: &[u8], limits: &Limits) -> Result<RequestFrame, RequestDecodeError> {
    let mut buf = payload;
    let header = Header::decode(&mut buf).map_err(|error| RequestDecodeError {
        header: None,
        error,
    })?;
    let fail = |error| RequestDecodeError {
        header: Some(header),
        error,
    };
    if header.version != PROTOCOL_VERSION {
        return Err(fail(DecodeError::UnsupportedVersion {
            got: header.version,
            supported: PROTOCOL_VERSION,
        }));
    }
    let opcode = Opcode::from_u8(header.opcode)
        .ok_or_else(|| fail(DecodeError::UnknownOpcode(header.opcode)))?;
    let request = Request::decode_body(opcode, &mut buf, limits).map_err(fail)?;
    wire::finish(buf).map_err(fail)?;
    Ok(RequestFrame {
        request_id: header.request_id,
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::Opcode;

    #[test]
    fn the_writes_are_the_requests_that_change_the_store() {
        let writes: Vec<u8> = Opcode::ALL
            .into_iter()
            .filter(|opcode| opcode.is_write())
            .map(|opcode| opcode as u8)
            .collect();
        // StoreConcept, Delete, StoreMany, ClearType, LearnConcept, LearnBatch.
        assert_eq!(writes, [0x02, 0x05, 0x08, 0x09, 0x0a, 0x0b]);
    }
}
