//! The sutra wire format, with no I/O.
//!
//! This crate owns every byte that crosses a sutra-storage socket:
//!
//! - [`FrameCodec`]: a 4-byte big-endian length prefix, then the payload. The payload is at
//!   most [`Limits::max_frame_bytes`], which is never above [`MAX_FRAME_BYTES_CAP`]
//!   (16 MiB - 1), so the first byte of every binary frame is `0x00`. The server relies on
//!   that byte to tell binary clients from text (`nc`) and HTTP clients on one port.
//! - [`RequestFrame`] / [`ResponseFrame`]: the payload header (version, opcode, request id)
//!   and each message's body, encoded and decoded side by side in [`request`] and
//!   [`response`].
//! - [`text`]: the line-oriented command parser for `nc`/`telnet`, producing the same
//!   [`Request`] values.
//! - [`ErrorCode`]: stable numeric error codes, never renumbered.
//! - `embed_json` (feature `embed-json`): the embedding service's JSON request bodies.
//!
//! `PROTOCOL.md` at the repository root documents the same layout byte by byte; the tests in
//! this crate pin the encodings against its hex dumps.
//!
//! # Invariants
//!
//! - Every length or count read from the wire is compared with a named limit, or with the
//!   bytes that remain, before anything is allocated, sliced or added. Nothing recurses on
//!   input: the format is flat.
//! - Decoding never panics, whatever the bytes (property-tested).
//! - Decoding has three outcomes: `Ok(None)` (need more bytes), [`FrameError`] (the stream
//!   cannot be delimited any more: reply and close) and [`DecodeError`] (one bad message:
//!   reply and keep the connection).
//!
//! This crate does not use sockets, a runtime, the filesystem or logging.

#![deny(clippy::indexing_slicing)]

#[cfg(feature = "embed-json")]
pub mod embed_json;
mod error;
pub mod fields;
mod frame;
#[cfg(any(test, feature = "test-util"))]
pub mod hexdump;
mod limits;
pub mod request;
pub mod response;
pub mod text;
mod types;
pub mod wire;

pub use error::{DecodeError, EncodeError, ErrorCode, FrameError};
pub use frame::{FrameCodec, FRAME_HEADER_BYTES};
pub use limits::{Limits, LimitsError, MAX_FRAME_BYTES_CAP, MAX_VECTOR_DIMENSION};
pub use request::{
    decode_request, Header, LearnConcept, Opcode, QueryByType, Request, RequestDecodeError,
    RequestFrame, Search, SearchQuery, StoreConcept, HEADER_BYTES, MAX_TOKEN_BYTES,
    PROTOCOL_VERSION,
};
pub use response::{
    decode_response, ErrorResponse, HealthInfo, Learned, QueryPage, Response, ResponseFrame,
    SearchHit, SearchResults, StatsSnapshot, StoreOutcome, STATUS_ERROR, STATUS_OK,
};
pub use types::{Attributes, Concept, ConceptId, Vector, VectorSource};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod protocol_md;
