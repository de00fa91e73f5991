//! Validated values: engine functions accept only these, so validation cannot be skipped.

#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::limits::Limits;
use crate::wire;

/// A concept id: non-empty UTF-8 of at most [`Limits::max_id_bytes`] bytes.
///
/// Cloning is a reference-count bump, so the store's map, its type index and responses share
/// one allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConceptId(Arc<str>);

impl ConceptId {
    /// Validates `id` against `limits`.
    pub fn new(id: &str, limits: &Limits) -> Result<ConceptId, DecodeError> {
        Self::check(id, limits.max_id_bytes)?;
        Ok(ConceptId(Arc::from(id)))
    }

    /// Validates only what every server requires (non-empty, at most
    /// [`crate::MAX_FRAME_BYTES_CAP`] bytes). Clients use this; the server applies its own,
    /// usually smaller, `MAX_ID_BYTES` and answers InvalidArgument beyond it.
    pub fn parse(id: &str) -> Result<ConceptId, DecodeError> {
        Self::check(id, crate::limits::MAX_FRAME_BYTES_CAP)?;
        Ok(ConceptId(Arc::from(id)))
    }

    fn check(id: &str, max_id_bytes: u32) -> Result<(), DecodeError> {
        if id.is_empty() {
            return Err(DecodeError::Empty { field: "id" });
        }
        if id.len() > max_id_bytes as usize {
            return Err(DecodeError::TooLong {
                field: "id",
                len: id.len() as u64,
                max: u64::from(max_id_bytes),
            });
        }
        Ok(())
    }

    pub(crate) fn decode(buf: &mut &[u8], max_id_bytes: u32) -> Result<ConceptId, DecodeError> {
        let id = wire::get_str(buf, "id", max_id_bytes)?;
        Self::check(id, max_id_bytes)?;
        Ok(ConceptId(Arc::from(id)))
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_str(dst, &self.0, "id")
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for indexes that key on it.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Debug for ConceptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ConceptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a vector's values live when they are not on the heap (the server keeps them in
/// memory-mapped segment files). Implementations must return the same values for as long as
/// they exist.
pub trait VectorSource: Send + Sync {
    /// The values.
    fn values(&self) -> &[f32];
    /// The storage's own position for the values (the server's slot number), if any.
    fn location(&self) -> Option<u64> {
        None
    }
}

#[derive(Clone)]
enum VectorData {
    Owned(Box<[f32]>),
    Shared(Arc<dyn VectorSource>),
}

/// An embedding: exactly the server's `VECTOR_DIMENSION` finite f32 values, on the heap or
/// in shared storage ([`VectorSource`]). Cloning never copies the values.
#[derive(Clone)]
pub struct Vector(VectorData);

impl PartialEq for Vector {
    fn eq(&self, other: &Vector) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Vector {
    /// Validates `values`: the length must equal `dimension` and every value must be finite.
    pub fn new(values: Vec<f32>, dimension: u32) -> Result<Vector, DecodeError> {
        let got = u32::try_from(values.len()).unwrap_or(u32::MAX);
        if got != dimension {
            return Err(DecodeError::DimensionMismatch {
                expected: dimension,
                got,
            });
        }
        if let Some(index) = values.iter().position(|value| !value.is_finite()) {
            return Err(DecodeError::NonFiniteValue { index });
        }
        Ok(Vector(VectorData::Owned(values.into_boxed_slice())))
    }

    /// A vector whose values live in `source`; its length must be `dimension`.
    pub fn from_source(
        source: Arc<dyn VectorSource>,
        dimension: u32,
    ) -> Result<Vector, DecodeError> {
        let got = u32::try_from(source.values().len()).unwrap_or(u32::MAX);
        if got != dimension {
            return Err(DecodeError::DimensionMismatch {
                expected: dimension,
                got,
            });
        }
        Ok(Vector(VectorData::Shared(source)))
    }

    /// The storage position of a shared vector ([`VectorSource::location`]).
    pub fn location(&self) -> Option<u64> {
        match &self.0 {
            VectorData::Owned(_) => None,
            VectorData::Shared(source) => source.location(),
        }
    }

    /// Decodes a vector. With `expected_dimension` the count must match it exactly (the
    /// server's check); without, any count the remaining bytes can hold is accepted (the
    /// client's view of a response). The count is checked before the allocation.
    pub(crate) fn decode(
        buf: &mut &[u8],
        expected_dimension: Option<u32>,
    ) -> Result<Vector, DecodeError> {
        const FIELD: &str = "embedding";
        let count = wire::get_u32(buf, FIELD)?;
        if let Some(expected) = expected_dimension {
            if count != expected {
                return Err(DecodeError::DimensionMismatch {
                    expected,
                    got: count,
                });
            }
        }
        let count = count as usize;
        let bytes = count
            .checked_mul(4)
            .ok_or(DecodeError::Truncated { field: FIELD })?;
        let raw = wire::get_bytes(buf, bytes, FIELD)?;
        // Filled straight from the wire, without zeroing the allocation first (a zeroed 1 KB
        // allocation, then overwritten, per store; 3% of a store's server CPU): whole 4-byte
        // chunks of a slice of exactly `bytes`, a plain copy on little-endian targets, where
        // the wire format is the memory layout.
        let (chunks, _) = raw.as_chunks::<4>();
        let values: Box<[f32]> = chunks.iter().copied().map(f32::from_le_bytes).collect();
        // Checked afterwards in a branch-free pass that vectorises; the position only on
        // failure.
        if !values
            .iter()
            .fold(true, |finite, value| finite & value.is_finite())
        {
            let index = values
                .iter()
                .position(|value| !value.is_finite())
                .unwrap_or(0);
            return Err(DecodeError::NonFiniteValue { index });
        }
        Ok(Vector(VectorData::Owned(values)))
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let values = self.as_slice();
        wire::put_len(dst, values.len(), "embedding")?;
        // The wire format is little-endian f32, which is the memory layout on little-endian
        // targets: one copy instead of a bounds-checked put per value.
        #[cfg(target_endian = "little")]
        dst.extend_from_slice(bytemuck::cast_slice::<f32, u8>(values));
        #[cfg(not(target_endian = "little"))]
        {
            dst.reserve(values.len().saturating_mul(4));
            for value in values {
                dst.put_f32_le(*value);
            }
        }
        Ok(())
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        match &self.0 {
            VectorData::Owned(values) => values,
            VectorData::Shared(source) => source.values(),
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the vector has no values (never true for a server-validated vector).
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl fmt::Debug for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vector(dim={})", self.len())
    }
}

/// Concept attributes: string keys to string values, unique keys, encoded in key order.
pub type Attributes = BTreeMap<String, String>;

/// Limits for decoding the variable parts of a concept. Requests use the server's
/// [`Limits`]; responses are only bounded by the frame they arrived in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldLimits {
    pub(crate) id_bytes: u32,
    pub(crate) content_bytes: u32,
    pub(crate) name_bytes: u32,
    pub(crate) attributes: u32,
    pub(crate) attribute_bytes: u32,
    pub(crate) vector_dimension: Option<u32>,
}

impl FieldLimits {
    pub(crate) fn from_limits(limits: &Limits) -> FieldLimits {
        FieldLimits {
            id_bytes: limits.max_id_bytes,
            content_bytes: limits.max_content_bytes,
            name_bytes: limits.max_name_bytes,
            attributes: limits.max_attributes,
            attribute_bytes: limits.max_attribute_bytes,
            vector_dimension: Some(limits.vector_dimension),
        }
    }

    /// Bounds for data the server produced: lengths are still compared with what remains.
    pub(crate) const UNBOUNDED: FieldLimits = FieldLimits {
        id_bytes: u32::MAX,
        content_bytes: u32::MAX,
        name_bytes: u32::MAX,
        attributes: u32::MAX,
        attribute_bytes: u32::MAX,
        vector_dimension: None,
    };
}

pub(crate) fn decode_attributes(
    buf: &mut &[u8],
    limits: FieldLimits,
) -> Result<Attributes, DecodeError> {
    const FIELD: &str = "attributes";
    // Each entry is two strings, so at least two u32 lengths.
    let count = wire::get_count(buf, FIELD, limits.attributes, 8)?;
    let mut attributes = Attributes::new();
    let mut total_bytes: u64 = 0;
    for _ in 0..count {
        let key = wire::get_str(buf, "attribute key", limits.attribute_bytes)?;
        let value = wire::get_str(buf, "attribute value", limits.attribute_bytes)?;
        total_bytes = total_bytes
            .saturating_add(key.len() as u64)
            .saturating_add(value.len() as u64);
        if total_bytes > u64::from(limits.attribute_bytes) {
            return Err(DecodeError::TooLong {
                field: FIELD,
                len: total_bytes,
                max: u64::from(limits.attribute_bytes),
            });
        }
        if attributes
            .insert(key.to_owned(), value.to_owned())
            .is_some()
        {
            return Err(DecodeError::DuplicateKey {
                key: key.to_owned(),
            });
        }
    }
    Ok(attributes)
}

pub(crate) fn encode_attributes(
    dst: &mut BytesMut,
    attributes: &Attributes,
) -> Result<(), EncodeError> {
    wire::put_len(dst, attributes.len(), "attributes")?;
    for (key, value) in attributes {
        wire::put_str(dst, key, "attribute key")?;
        wire::put_str(dst, value, "attribute value")?;
    }
    Ok(())
}

pub(crate) fn decode_optional_vector(
    buf: &mut &[u8],
    expected_dimension: Option<u32>,
) -> Result<Option<Vector>, DecodeError> {
    if wire::get_option_tag(buf, "embedding")? {
        Ok(Some(Vector::decode(buf, expected_dimension)?))
    } else {
        Ok(None)
    }
}

pub(crate) fn encode_optional_vector(
    dst: &mut BytesMut,
    vector: Option<&Vector>,
) -> Result<(), EncodeError> {
    match vector {
        None => dst.put_u8(0),
        Some(vector) => {
            dst.put_u8(1);
            vector.encode(dst)?;
        }
    }
    Ok(())
}

/// A stored concept as the server returns it.
///
/// | field | encoding |
/// |---|---|
/// | id | string |
/// | content | string |
/// | concept_type | string |
/// | model | string |
/// | attributes | map<string,string> |
/// | embedding | option<vector> |
/// | created_at_ms | u64, Unix milliseconds, set by the server |
/// | expires_at_ms | option<u64>, Unix milliseconds |
#[derive(Debug, Clone, PartialEq)]
pub struct Concept {
    /// The id.
    pub id: ConceptId,
    /// The text the concept stands for.
    pub content: String,
    /// A free-form type name; `QueryByType` lists concepts by it.
    pub concept_type: String,
    /// The model that produced the embedding, if any.
    pub model: String,
    /// Free-form attributes.
    pub attributes: Attributes,
    /// The embedding, when one was stored.
    pub embedding: Option<Vector>,
    /// When the server stored this version, Unix milliseconds.
    pub created_at_ms: u64,
    /// When the concept expires, Unix milliseconds; `None` never.
    pub expires_at_ms: Option<u64>,
}

impl Concept {
    pub(crate) fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.id.encode(dst)?;
        wire::put_str(dst, &self.content, "content")?;
        wire::put_str(dst, &self.concept_type, "concept_type")?;
        wire::put_str(dst, &self.model, "model")?;
        encode_attributes(dst, &self.attributes)?;
        encode_optional_vector(dst, self.embedding.as_ref())?;
        dst.put_u64_le(self.created_at_ms);
        wire::put_option_u64(dst, self.expires_at_ms);
        Ok(())
    }

    pub(crate) fn decode(buf: &mut &[u8], limits: FieldLimits) -> Result<Concept, DecodeError> {
        Ok(Concept {
            id: ConceptId::decode(buf, limits.id_bytes)?,
            content: wire::get_str(buf, "content", limits.content_bytes)?.to_owned(),
            concept_type: wire::get_str(buf, "concept_type", limits.name_bytes)?.to_owned(),
            model: wire::get_str(buf, "model", limits.name_bytes)?.to_owned(),
            attributes: decode_attributes(buf, limits)?,
            embedding: decode_optional_vector(buf, limits.vector_dimension)?,
            created_at_ms: wire::get_u64(buf, "created_at_ms")?,
            expires_at_ms: wire::get_option_u64(buf, "expires_at_ms")?,
        })
    }

    /// The exact size of this concept's encoding, in bytes. The server uses it to keep
    /// query pages within one frame and to report bytes used.
    pub fn encoded_len(&self) -> usize {
        let strings = [
            self.id.as_str(),
            &self.content,
            &self.concept_type,
            &self.model,
        ]
        .iter()
        .fold(0_usize, |sum, value| {
            sum.saturating_add(4).saturating_add(value.len())
        });
        let attributes = self.attributes.iter().fold(4_usize, |sum, (key, value)| {
            sum.saturating_add(8)
                .saturating_add(key.len())
                .saturating_add(value.len())
        });
        let embedding = self
            .embedding
            .as_ref()
            .map_or(1, |vector| vector.len().saturating_mul(4).saturating_add(5));
        let times = if self.expires_at_ms.is_some() { 17 } else { 9 };
        strings
            .saturating_add(attributes)
            .saturating_add(embedding)
            .saturating_add(times)
    }
}
