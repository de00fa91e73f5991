//! Encoders and decoders of the protocol's composite fields (ids, attribute maps, optional
//! vectors) for other crates' formats: the engine's log records reuse them, so a concept is
//! written to disk exactly as it crosses the wire. Decoding here is bounded only by the input
//! (data the server wrote itself); network input goes through the request decoder's limits.
//! Built on [`crate::wire`]'s primitives, which know nothing of these types.

use bytes::BytesMut;

use crate::error::{DecodeError, EncodeError};
use crate::types::{self, Attributes, ConceptId, FieldLimits, Vector};

/// Reads a concept id (non-empty; bounded only by the input). For data the server wrote
/// itself, such as its log; network input goes through the request decoder's limits.
pub fn get_id(buf: &mut &[u8]) -> Result<ConceptId, DecodeError> {
    ConceptId::decode(buf, u32::MAX)
}

/// Writes a concept id.
pub fn put_id(dst: &mut BytesMut, id: &ConceptId) -> Result<(), EncodeError> {
    id.encode(dst)
}

/// Reads a map<string,string> bounded only by the input.
pub fn get_attributes(buf: &mut &[u8]) -> Result<Attributes, DecodeError> {
    types::decode_attributes(buf, FieldLimits::UNBOUNDED)
}

/// Writes a map<string,string>.
pub fn put_attributes(dst: &mut BytesMut, attributes: &Attributes) -> Result<(), EncodeError> {
    types::encode_attributes(dst, attributes)
}

/// Reads an option<vector>; with `expected_dimension` the count must match it.
pub fn get_optional_vector(
    buf: &mut &[u8],
    expected_dimension: Option<u32>,
) -> Result<Option<Vector>, DecodeError> {
    types::decode_optional_vector(buf, expected_dimension)
}

/// Writes an option<vector>.
pub fn put_optional_vector(dst: &mut BytesMut, vector: Option<&Vector>) -> Result<(), EncodeError> {
    types::encode_optional_vector(dst, vector)
}
