//! Responses: the status byte and each response body, encoded and decoded side by side.
//!
//! A response payload is the 6-byte header (version, the request's opcode byte echoed,
//! request id echoed), then a status byte, then the body:
//!
//! | status | body |
//! |---|---|
//! | 0 (ok) | the opcode's response body |
//! | 1 (error) | code: u16 LE ([`ErrorCode`]), message: string |

#![deny(clippy::arithmetic_side_effects)]

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::request::{Header, Opcode, PROTOCOL_VERSION};
use crate::types::{Concept, ConceptId, FieldLimits};
use crate::wire;

/// The status byte (after the header) of a successful response.
pub const STATUS_OK: u8 = 0;
/// The status byte (after the header) of an error response.
pub const STATUS_ERROR: u8 = 1;

/// Body of a `Health` response.
///
/// | field | encoding |
/// |---|---|
/// | status | string, `"ok"` when serving |
/// | role | string, `"normal"` or `"cache_shard"` |
/// | vector_dimension | u32 |
/// | concepts | u64, live concepts |
/// | version | string, the server's version |
/// | uptime_seconds | u64 |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthInfo {
    /// `"ok"` when serving.
    pub status: String,
    /// The server's role.
    pub role: String,
    /// The server's `VECTOR_DIMENSION`.
    pub vector_dimension: u32,
    /// Number of stored concepts.
    pub concepts: u64,
    /// Server version.
    pub version: String,
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// The embedding model behind LearnConcept (its name, as in learned ids); empty when the
    /// server has none and learning answers NoModel.
    pub model: String,
}

impl HealthInfo {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_str(dst, &self.status, "status")?;
        wire::put_str(dst, &self.role, "role")?;
        dst.put_u32_le(self.vector_dimension);
        dst.put_u64_le(self.concepts);
        wire::put_str(dst, &self.version, "version")?;
        dst.put_u64_le(self.uptime_seconds);
        wire::put_str(dst, &self.model, "model")?;
        Ok(())
    }

    fn decode(buf: &mut &[u8]) -> Result<HealthInfo, DecodeError> {
        Ok(HealthInfo {
            status: wire::get_str(buf, "status", u32::MAX)?.to_owned(),
            role: wire::get_str(buf, "role", u32::MAX)?.to_owned(),
            vector_dimension: wire::get_u32(buf, "vector_dimension")?,
            concepts: wire::get_u64(buf, "concepts")?,
            version: wire::get_str(buf, "version", u32::MAX)?.to_owned(),
            uptime_seconds: wire::get_u64(buf, "uptime_seconds")?,
            model: wire::get_str(buf, "model", u32::MAX)?.to_owned(),
        })
    }
}

/// Body of a `StoreConcept` response.
///
/// | field | encoding |
/// |---|---|
/// | created | bool: 1 = new id, 0 = replaced an existing concept |
/// | created_at_ms | u64, Unix milliseconds |
/// | expires_at_ms | option<u64>, Unix milliseconds |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Whether the id was new.
    pub created: bool,
    /// The server's timestamp for this version.
    pub created_at_ms: u64,
    /// When it expires, if ever.
    pub expires_at_ms: Option<u64>,
}

impl StoreOutcome {
    fn encode(self, dst: &mut BytesMut) {
        wire::put_bool(dst, self.created);
        dst.put_u64_le(self.created_at_ms);
        wire::put_option_u64(dst, self.expires_at_ms);
    }

    fn decode(buf: &mut &[u8]) -> Result<StoreOutcome, DecodeError> {
        Ok(StoreOutcome {
            created: wire::get_bool(buf, "created")?,
            created_at_ms: wire::get_u64(buf, "created_at_ms")?,
            expires_at_ms: wire::get_option_u64(buf, "expires_at_ms")?,
        })
    }
}

/// Body of a `QueryByType` response.
///
/// | field | encoding |
/// |---|---|
/// | count | u32 |
/// | concepts | count concepts (see [`Concept`]) |
/// | next_cursor | string: empty when this is the last page, else pass it as the next cursor |
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The concepts in ascending id order.
    pub concepts: Vec<Arc<Concept>>,
    /// The cursor of the next page; empty when there is none.
    pub next_cursor: String,
}

impl QueryPage {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_len(dst, self.concepts.len(), "concepts")?;
        for concept in &self.concepts {
            concept.encode(dst)?;
        }
        wire::put_str(dst, &self.next_cursor, "next_cursor")
    }

    fn decode(buf: &mut &[u8]) -> Result<QueryPage, DecodeError> {
        // The smallest concept: four empty strings (16), the attribute count (4), the vector
        // tag (1), created_at (8) and the expiry tag (1).
        const MIN_CONCEPT_BYTES: usize = 30;
        let count = wire::get_count(buf, "concepts", u32::MAX, MIN_CONCEPT_BYTES)?;
        let mut concepts = Vec::with_capacity(count);
        for _ in 0..count {
            concepts.push(Arc::new(Concept::decode(buf, FieldLimits::UNBOUNDED)?));
        }
        let next_cursor = wire::get_str(buf, "next_cursor", u32::MAX)?.to_owned();
        Ok(QueryPage {
            concepts,
            next_cursor,
        })
    }
}

/// Body of a `Stats` response.
///
/// | field | encoding |
/// |---|---|
/// | role | string |
/// | vector_dimension | u32 |
/// | count | u32 |
/// | counters | count pairs of (name: string, value: u64) |
///
/// Counters are named so that new ones can be added without a version change; clients
/// ignore names they do not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// The server's role.
    pub role: String,
    /// The server's `VECTOR_DIMENSION`.
    pub vector_dimension: u32,
    /// Named counters and gauges.
    pub counters: Vec<(String, u64)>,
}

impl StatsSnapshot {
    /// The value of the counter called `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }

    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_str(dst, &self.role, "role")?;
        dst.put_u32_le(self.vector_dimension);
        wire::put_len(dst, self.counters.len(), "counters")?;
        for (name, value) in &self.counters {
            wire::put_str(dst, name, "counter name")?;
            dst.put_u64_le(*value);
        }
        Ok(())
    }

    fn decode(buf: &mut &[u8]) -> Result<StatsSnapshot, DecodeError> {
        let role = wire::get_str(buf, "role", u32::MAX)?.to_owned();
        let vector_dimension = wire::get_u32(buf, "vector_dimension")?;
        let count = wire::get_count(buf, "counters", u32::MAX, 12)?;
        let mut counters = Vec::with_capacity(count);
        for _ in 0..count {
            let name = wire::get_str(buf, "counter name", u32::MAX)?.to_owned();
            counters.push((name, wire::get_u64(buf, "counter value")?));
        }
        Ok(StatsSnapshot {
            role,
            vector_dimension,
            counters,
        })
    }
}

/// An error reply: a stable code and a human-readable message that never carries internal
/// details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The error code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// A response body.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Reply to `Health`.
    Health(HealthInfo),
    /// Reply to `StoreConcept`.
    Stored(StoreOutcome),
    /// Reply to `GetConceptById`: the concept, encoded as [`Concept`].
    Concept(Arc<Concept>),
    /// Reply to `QueryByType`.
    Page(QueryPage),
    /// Reply to `Delete`: `existed` is a bool, 1 when a concept was removed.
    Deleted {
        /// Whether the id existed.
        existed: bool,
    },
    /// Reply to `Stats`.
    Stats(StatsSnapshot),
    /// Reply to `GetMany`: count u32, then per requested id, in request order, an
    /// option<Concept> (absent when there is no live concept with that id).
    Many(Vec<Option<Arc<Concept>>>),
    /// Reply to `StoreMany`: count u32, then a [`StoreOutcome`] per concept, in order.
    StoredMany(Vec<StoreOutcome>),
    /// Reply to `ClearType`: `removed` u64, the live concepts removed.
    Cleared {
        /// How many live concepts were removed.
        removed: u64,
    },
    /// Reply to `LearnConcept`: [`Learned`].
    Learned(Learned),
    /// Reply to `LearnBatch`: count u32, then a [`Learned`] per text, in order.
    LearnedMany(Vec<Learned>),
    /// Reply to `Auth`: no body; the connection may now send any request.
    Authenticated,
    /// Reply to `Search`: [`SearchResults`].
    Found(SearchResults),
    /// Any request can fail with an error.
    Error(ErrorResponse),
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error(ErrorResponse {
            code,
            message: message.into(),
        })
    }

    fn encode_body(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Response::Health(health) => health.encode(dst),
            Response::Stored(outcome) => {
                outcome.encode(dst);
                Ok(())
            }
            Response::Concept(concept) => concept.encode(dst),
            Response::Page(page) => page.encode(dst),
            Response::Deleted { existed } => {
                wire::put_bool(dst, *existed);
                Ok(())
            }
            Response::Stats(stats) => stats.encode(dst),
            Response::Many(concepts) => {
                wire::put_len(dst, concepts.len(), "concepts")?;
                for concept in concepts {
                    match concept {
                        Some(concept) => {
                            dst.put_u8(1);
                            concept.encode(dst)?;
                        }
                        None => dst.put_u8(0),
                    }
                }
                Ok(())
            }
            Response::StoredMany(outcomes) => {
                wire::put_len(dst, outcomes.len(), "outcomes")?;
                for outcome in outcomes {
                    outcome.encode(dst);
                }
                Ok(())
            }
            Response::Cleared { removed } => {
                dst.put_u64_le(*removed);
                Ok(())
            }
            Response::Learned(learned) => learned.encode(dst),
            Response::LearnedMany(learned) => {
                wire::put_len(dst, learned.len(), "learned")?;
                learned.iter().try_for_each(|item| item.encode(dst))
            }
            Response::Authenticated => Ok(()),
            Response::Found(results) => results.encode(dst),
            Response::Error(error) => {
                dst.put_u16_le(error.code.as_u16());
                wire::put_str(dst, &error.message, "message")
            }
        }
    }

    fn decode_body(opcode: Opcode, buf: &mut &[u8]) -> Result<Response, DecodeError> {
        Ok(match opcode {
            Opcode::Health => Response::Health(HealthInfo::decode(buf)?),
            Opcode::StoreConcept => Response::Stored(StoreOutcome::decode(buf)?),
            Opcode::GetConceptById => {
                Response::Concept(Arc::new(Concept::decode(buf, FieldLimits::UNBOUNDED)?))
            }
            Opcode::QueryByType => Response::Page(QueryPage::decode(buf)?),
            Opcode::Delete => Response::Deleted {
                existed: wire::get_bool(buf, "existed")?,
            },
            Opcode::Stats => Response::Stats(StatsSnapshot::decode(buf)?),
            Opcode::GetMany => {
                let count = wire::get_count(buf, "concepts", u32::MAX, 1)?;
                let mut concepts = Vec::with_capacity(count);
                for _ in 0..count {
                    let found = wire::get_option_tag(buf, "concept")?;
                    concepts.push(if found {
                        Some(Arc::new(Concept::decode(buf, FieldLimits::UNBOUNDED)?))
                    } else {
                        None
                    });
                }
                Response::Many(concepts)
            }
            Opcode::StoreMany => {
                // created (1) + created_at_ms (8) + the expiry tag (1).
                let count = wire::get_count(buf, "outcomes", u32::MAX, 10)?;
                let mut outcomes = Vec::with_capacity(count);
                for _ in 0..count {
                    outcomes.push(StoreOutcome::decode(buf)?);
                }
                Response::StoredMany(outcomes)
            }
            Opcode::ClearType => Response::Cleared {
                removed: wire::get_u64(buf, "removed")?,
            },
            Opcode::LearnConcept => Response::Learned(Learned::decode(buf)?),
            Opcode::LearnBatch => {
                // An id (4 + 1) and an outcome (10).
                let count = wire::get_count(buf, "learned", u32::MAX, 15)?;
                let mut learned = Vec::with_capacity(count);
                for _ in 0..count {
                    learned.push(Learned::decode(buf)?);
                }
                Response::LearnedMany(learned)
            }
            Opcode::Auth => Response::Authenticated,
            Opcode::Search => Response::Found(SearchResults::decode(buf)?),
        })
    }
}

/// Body of a `Search` response: the results, best first (ties by id).
///
/// | field | encoding |
/// |---|---|
/// | exact | bool: 1 when every stored vector was compared (the answer is exact) |
/// | count | u32, at most the request's `k` |
/// | each result | id (string), score (f32 LE: the cosine similarity, -1 to 1), concept (option<Concept>: present when the request asked for concepts) |
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// Whether every stored vector was compared.
    pub exact: bool,
    /// The results, best first.
    pub hits: Vec<SearchHit>,
}

/// One result of a `Search`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The concept's id.
    pub id: ConceptId,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The concept, when the request asked for it.
    pub concept: Option<Arc<Concept>>,
}

impl SearchResults {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_bool(dst, self.exact);
        wire::put_len(dst, self.hits.len(), "results")?;
        for hit in &self.hits {
            hit.id.encode(dst)?;
            dst.put_f32_le(hit.score);
            match &hit.concept {
                Some(concept) => {
                    dst.put_u8(1);
                    concept.encode(dst)?;
                }
                None => dst.put_u8(0),
            }
        }
        Ok(())
    }

    fn decode(buf: &mut &[u8]) -> Result<SearchResults, DecodeError> {
        let exact = wire::get_bool(buf, "exact")?;
        // An id (4 + 1), a score (4) and a tag (1).
        let count = wire::get_count(buf, "results", u32::MAX, 10)?;
        let mut hits = Vec::with_capacity(count);
        for _ in 0..count {
            let id = ConceptId::decode(buf, u32::MAX)?;
            let score = f32::from_bits(wire::get_u32(buf, "score")?);
            let concept = if wire::get_option_tag(buf, "concept")? {
                Some(Arc::new(Concept::decode(buf, FieldLimits::UNBOUNDED)?))
            } else {
                None
            };
            hits.push(SearchHit { id, score, concept });
        }
        Ok(SearchResults { exact, hits })
    }
}

/// Body of a `LearnConcept` response (and each item of `LearnBatch`'s).
///
/// | field | encoding |
/// |---|---|
/// | id | string, the stored id (derived when the request had none) |
/// | outcome | [`StoreOutcome`] |
/// | tokens | u32, tokens the model saw ([CLS] and [SEP] included) |
/// | truncated | bool: 1 when the content was longer than the model's limit and was cut |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The stored id.
    pub id: String,
    /// As for StoreConcept.
    pub outcome: StoreOutcome,
    /// Tokens the model saw.
    pub tokens: u32,
    /// Whether the content was cut at the model's limit.
    pub truncated: bool,
}

impl Learned {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_str(dst, &self.id, "id")?;
        self.outcome.encode(dst);
        dst.put_u32_le(self.tokens);
        wire::put_bool(dst, self.truncated);
        Ok(())
    }

    fn decode(buf: &mut &[u8]) -> Result<Learned, DecodeError> {
        Ok(Learned {
            id: wire::get_str(buf, "id", u32::MAX)?.to_owned(),
            outcome: StoreOutcome::decode(buf)?,
            tokens: wire::get_u32(buf, "tokens")?,
            truncated: wire::get_bool(buf, "truncated")?,
        })
    }
}

/// A response with the header fields it echoes: one whole payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseFrame {
    /// The request id being answered (0 for connection-level errors).
    pub request_id: u32,
    /// The request's opcode byte, echoed even when it was unknown (0 when there was no
    /// readable request).
    pub opcode: u8,
    /// The response.
    pub response: Response,
}

impl ResponseFrame {
    /// Appends the payload (header, status and body, without the length prefix) to `dst`.
    pub fn encode_payload(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        Header {
            version: PROTOCOL_VERSION,
            opcode: self.opcode,
            request_id: self.request_id,
        }
        .encode(dst);
        let status = if matches!(self.response, Response::Error(_)) {
            STATUS_ERROR
        } else {
            STATUS_OK
        };
        dst.put_u8(status);
        self.response.encode_body(dst)
    }
}

/// Decodes one response payload. Lengths are bounded by the payload itself, which the frame
/// codec has already bounded.
pub fn decode_response(payload: &[u8]) -> Result<ResponseFrame, DecodeError> {
    let mut buf = payload;
    let header = Header::decode(&mut buf)?;
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            got: header.version,
            supported: PROTOCOL_VERSION,
        });
    }
    let response = match wire::get_u8(&mut buf, "status")? {
        STATUS_OK => {
            let opcode =
                Opcode::from_u8(header.opcode).ok_or(DecodeError::UnknownOpcode(header.opcode))?;
            Response::decode_body(opcode, &mut buf)?
        }
        STATUS_ERROR => {
            let code = ErrorCode::from_u16(wire::get_u16(&mut buf, "error.code")?);
            let message = wire::get_str(&mut buf, "error.message", u32::MAX)?.to_owned();
            Response::Error(ErrorResponse { code, message })
        }
        tag => {
            return Err(DecodeError::InvalidTag {
                field: "status",
                tag,
            })
        }
    };
    wire::finish(buf)?;
    Ok(ResponseFrame {
        request_id: header.request_id,
        opcode: header.opcode,
        response,
    })
}
