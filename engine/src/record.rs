//! The engine's log and snapshot record: what one durable change means.
//!
//! This format belongs to the engine and is versioned with the data directory
//! (`MANIFEST`'s `format_version`), not with the wire protocol; it reuses only the protocol's
//! field encodings (`sutra_protocol::wire` and `sutra_protocol::fields`).
//!
//! | field | encoding |
//! |---|---|
//! | tag | u8: 1 = Put, 2 = Delete |
//!
//! Put (the whole concept; times are absolute Unix milliseconds, so replay never extends a TTL):
//!
//! | field | encoding |
//! |---|---|
//! | id | string |
//! | content | string |
//! | concept_type | string |
//! | model | string |
//! | attributes | map<string,string> |
//! | embedding | option<vector>, count = the directory's `vector_dimension` |
//! | created_at_ms | u64 |
//! | expires_at_ms | option<u64> |
//!
//! Delete: id (string).
//!
//! Batch (tag 4, a StoreMany: applied all or nothing): count u32, then count Put records, each
//! as a u32 length and the record's bytes (tag included).
//!
//! ClearType (tag 5): concept_type (string); removes every concept of the type.
//!
//! Expire (tag 6, written by the TTL reaper): id (string), at_ms (u64); removes the id only if
//! its stored concept expires at or before `at_ms`. A store of the same id logged earlier (and
//! not yet applied when the reaper decided) therefore survives, on replay too.
//!
//! PutSlot (tag 3, snapshots only, when vectors live in mapped segments): the fields of Put
//! with `embedding` replaced by an option<u32> vector slot number (see `vectors.rs`).

use bytes::{BufMut, BytesMut};
use sutra_protocol::{fields, wire};
use sutra_protocol::{Concept, ConceptId, DecodeError, EncodeError};

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_PUT_SLOT: u8 = 3;
const TAG_BATCH: u8 = 4;
const TAG_CLEAR_TYPE: u8 = 5;
const TAG_EXPIRE: u8 = 6;

/// One durable change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Put(Concept),
    Delete(ConceptId),
    /// A concept without its embedding, and the slot that holds the embedding.
    PutSlot(Concept, Option<u32>),
    /// Several Puts, applied together.
    Batch(Vec<Concept>),
    /// Remove every concept of a type.
    ClearType(String),
    /// Remove an id if its concept has expired by `at_ms`.
    Expire {
        /// The id.
        id: ConceptId,
        /// The reaper's time.
        at_ms: u64,
    },
}

/// Encodes a Batch of Puts without cloning the concepts.
pub(crate) fn encode_batch(concepts: &[std::sync::Arc<Concept>]) -> Result<Vec<u8>, EncodeError> {
    let mut dst = BytesMut::new();
    dst.put_u8(TAG_BATCH);
    wire::put_len(&mut dst, concepts.len(), "batch")?;
    for concept in concepts {
        let put = encode_put(concept)?;
        wire::put_len(&mut dst, put.len(), "batch item")?;
        dst.extend_from_slice(&put);
    }
    Ok(Vec::from(dst))
}

/// Encodes a Put into `dst` (cleared first): for a caller that encodes many, into one buffer.
pub(crate) fn encode_put_into(dst: &mut BytesMut, concept: &Concept) -> Result<(), EncodeError> {
    dst.clear();
    dst.reserve(concept.encoded_len() + 1);
    put_concept(dst, concept)
}

/// Encodes a Put without cloning the concept.
pub(crate) fn encode_put(concept: &Concept) -> Result<Vec<u8>, EncodeError> {
    let mut dst = BytesMut::with_capacity(concept.encoded_len() + 1);
    put_concept(&mut dst, concept)?;
    Ok(Vec::from(dst))
}

/// Encodes a concept as snapshots used to: a PutSlot when its embedding lives in a vector
/// slot, else a Put. Snapshots now carry vectors inline (see `snapshot`); this stays for
/// the format's documentation and the test that older snapshots still load.
#[cfg(test)]
pub(crate) fn encode_for_snapshot(concept: &Concept) -> Result<Vec<u8>, EncodeError> {
    let mut dst = BytesMut::new();
    encode_for_snapshot_into(&mut dst, concept)?;
    Ok(Vec::from(dst))
}

/// [`encode_for_snapshot`] into `dst` (cleared first).
#[cfg(test)]
pub(crate) fn encode_for_snapshot_into(
    dst: &mut BytesMut,
    concept: &Concept,
) -> Result<(), EncodeError> {
    let slot = concept
        .embedding
        .as_ref()
        .and_then(sutra_protocol::Vector::location);
    let Some(slot) = slot else {
        return encode_put_into(dst, concept);
    };
    let slot = u32::try_from(slot).map_err(|_| EncodeError::FieldTooLong { field: "slot" })?;
    dst.clear();
    dst.reserve(concept.encoded_len() + 1);
    put_head(dst, TAG_PUT_SLOT, concept)?;
    dst.put_u8(1);
    dst.put_u32_le(slot);
    put_tail(dst, concept);
    Ok(())
}

fn put_head(dst: &mut BytesMut, tag: u8, concept: &Concept) -> Result<(), EncodeError> {
    dst.put_u8(tag);
    fields::put_id(dst, &concept.id)?;
    wire::put_str(dst, &concept.content, "content")?;
    wire::put_str(dst, &concept.concept_type, "concept_type")?;
    wire::put_str(dst, &concept.model, "model")?;
    fields::put_attributes(dst, &concept.attributes)
}

fn put_tail(dst: &mut BytesMut, concept: &Concept) {
    dst.put_u64_le(concept.created_at_ms);
    wire::put_option_u64(dst, concept.expires_at_ms);
}

fn put_concept(dst: &mut BytesMut, concept: &Concept) -> Result<(), EncodeError> {
    put_head(dst, TAG_PUT, concept)?;
    fields::put_optional_vector(dst, concept.embedding.as_ref())?;
    put_tail(dst, concept);
    Ok(())
}

impl Record {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut dst = BytesMut::new();
        match self {
            Record::Put(concept) => put_concept(&mut dst, concept)?,
            Record::Batch(concepts) => {
                let concepts: Vec<std::sync::Arc<Concept>> =
                    concepts.iter().cloned().map(std::sync::Arc::new).collect();
                return encode_batch(&concepts);
            }
            Record::ClearType(concept_type) => {
                dst.put_u8(TAG_CLEAR_TYPE);
                wire::put_str(&mut dst, concept_type, "concept_type")?;
            }
            Record::PutSlot(concept, slot) => {
                put_head(&mut dst, TAG_PUT_SLOT, concept)?;
                match slot {
                    Some(slot) => {
                        dst.put_u8(1);
                        dst.put_u32_le(*slot);
                    }
                    None => dst.put_u8(0),
                }
                put_tail(&mut dst, concept);
            }
            Record::Delete(id) => {
                dst.put_u8(TAG_DELETE);
                fields::put_id(&mut dst, id)?;
            }
            Record::Expire { id, at_ms } => {
                dst.put_u8(TAG_EXPIRE);
                fields::put_id(&mut dst, id)?;
                dst.put_u64_le(*at_ms);
            }
        }
        Ok(Vec::from(dst))
    }

    pub(crate) fn decode(bytes: &[u8], vector_dimension: u32) -> Result<Record, DecodeError> {
        let mut buf = bytes;
        let record = match wire::get_u8(&mut buf, "record tag")? {
            TAG_PUT => Record::Put(Concept {
                id: fields::get_id(&mut buf)?,
                content: wire::get_str(&mut buf, "content", u32::MAX)?.to_owned(),
                concept_type: wire::get_str(&mut buf, "concept_type", u32::MAX)?.to_owned(),
                model: wire::get_str(&mut buf, "model", u32::MAX)?.to_owned(),
                attributes: fields::get_attributes(&mut buf)?,
                embedding: fields::get_optional_vector(&mut buf, Some(vector_dimension))?,
                created_at_ms: wire::get_u64(&mut buf, "created_at_ms")?,
                expires_at_ms: wire::get_option_u64(&mut buf, "expires_at_ms")?,
            }),
            TAG_DELETE => Record::Delete(fields::get_id(&mut buf)?),
            TAG_EXPIRE => Record::Expire {
                id: fields::get_id(&mut buf)?,
                at_ms: wire::get_u64(&mut buf, "at_ms")?,
            },
            TAG_CLEAR_TYPE => {
                Record::ClearType(wire::get_str(&mut buf, "concept_type", u32::MAX)?.to_owned())
            }
            TAG_BATCH => {
                // Each item is at least its length and a tag.
                let count = wire::get_count(&mut buf, "batch", u32::MAX, 5)?;
                let mut concepts = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = wire::get_u32(&mut buf, "batch item")? as usize;
                    let item = wire::get_bytes(&mut buf, len, "batch item")?;
                    match Record::decode(item, vector_dimension)? {
                        Record::Put(concept) => concepts.push(concept),
                        _ => {
                            return Err(DecodeError::InvalidTag {
                                field: "batch item",
                                tag: item.first().copied().unwrap_or(0),
                            })
                        }
                    }
                }
                Record::Batch(concepts)
            }
            TAG_PUT_SLOT => {
                let id = fields::get_id(&mut buf)?;
                let content = wire::get_str(&mut buf, "content", u32::MAX)?.to_owned();
                let concept_type = wire::get_str(&mut buf, "concept_type", u32::MAX)?.to_owned();
                let model = wire::get_str(&mut buf, "model", u32::MAX)?.to_owned();
                let attributes = fields::get_attributes(&mut buf)?;
                let slot = if wire::get_option_tag(&mut buf, "slot")? {
                    Some(wire::get_u32(&mut buf, "slot")?)
                } else {
                    None
                };
                let concept = Concept {
                    id,
                    content,
                    concept_type,
                    model,
                    attributes,
                    embedding: None,
                    created_at_ms: wire::get_u64(&mut buf, "created_at_ms")?,
                    expires_at_ms: wire::get_option_u64(&mut buf, "expires_at_ms")?,
                };
                Record::PutSlot(concept, slot)
            }
            tag => {
                return Err(DecodeError::InvalidTag {
                    field: "record tag",
                    tag,
                })
            }
        };
        wire::finish(buf)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use sutra_protocol::{Attributes, Limits, Vector};

    use super::*;

    #[test]
    fn records_round_trip_and_check_the_dimension() {
        let concept = Concept {
            id: ConceptId::new("a", &Limits::default()).unwrap(),
            content: "text".to_owned(),
            concept_type: "t".to_owned(),
            model: "m".to_owned(),
            attributes: Attributes::from([("k".to_owned(), "v".to_owned())]),
            embedding: Some(Vector::new(vec![0.5; 4], 4).unwrap()),
            created_at_ms: 7,
            expires_at_ms: Some(9),
        };
        for record in [
            Record::Put(concept.clone()),
            Record::Delete(concept.id.clone()),
        ] {
            let bytes = record.encode().unwrap();
            assert_eq!(Record::decode(&bytes, 4).unwrap(), record);
            for cut in 0..bytes.len() {
                assert!(Record::decode(&bytes[..cut], 4).is_err());
            }
        }
        let bytes = Record::Put(concept).encode().unwrap();
        assert!(matches!(
            Record::decode(&bytes, 8),
            Err(DecodeError::DimensionMismatch {
                expected: 8,
                got: 4
            })
        ));
    }
}
