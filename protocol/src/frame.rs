//! The length-prefixed frame codec.
//!
//! | offset | field | encoding |
//! |---|---|---|
//! | 0 | length | u32 **big-endian**, payload bytes, at most `max_frame_bytes` (< 2^24) |
//! | 4 | payload | `length` bytes: a request or response payload |
//!
//! Modelled on tokio-util's `LengthDelimitedCodec`: the length is compared with the limit
//! before anything is reserved, and the payload is handed out with `split_to(..).freeze()`
//! without copying.

#![deny(clippy::arithmetic_side_effects)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{EncodeError, FrameError};
use crate::limits::MAX_FRAME_BYTES_CAP;
use crate::request::RequestFrame;
use crate::response::ResponseFrame;

/// Size of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    Head,
    Data(usize),
}

/// Splits a byte stream into payloads and writes payloads with their length prefix.
///
/// Decoding yields raw payloads; [`crate::decode_request`] and [`crate::decode_response`] parse
/// them, so a bad body costs one error reply instead of the connection.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: u32,
    state: DecodeState,
}

impl FrameCodec {
    /// A codec accepting payloads of at most `max_frame_bytes` (clamped to
    /// [`MAX_FRAME_BYTES_CAP`]).
    pub fn new(max_frame_bytes: u32) -> FrameCodec {
        FrameCodec {
            max_frame_bytes: max_frame_bytes.min(MAX_FRAME_BYTES_CAP),
            state: DecodeState::Head,
        }
    }

    /// The largest payload this codec accepts.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Writes one frame: reserves the prefix, lets `encode_payload` append the payload, then
    /// fills in the length. On error `dst` is left as it was.
    fn encode_with(
        &self,
        dst: &mut BytesMut,
        encode_payload: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let start = dst.len();
        dst.put_u32(0);
        let result = encode_payload(dst).and_then(|()| {
            let len = dst
                .len()
                .saturating_sub(start)
                .saturating_sub(FRAME_HEADER_BYTES);
            match u32::try_from(len) {
                Ok(len) if len <= self.max_frame_bytes => Ok(len),
                _ => Err(EncodeError::FrameTooLarge {
                    len,
                    max: self.max_frame_bytes,
                }),
            }
        });
        match result {
            Ok(len) => {
                let end = start.saturating_add(FRAME_HEADER_BYTES);
                if let Some(prefix) = dst.get_mut(start..end) {
                    prefix.copy_from_slice(&len.to_be_bytes());
                }
                Ok(())
            }
            Err(error) => {
                dst.truncate(start);
                Err(error)
            }
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let len = match self.state {
            DecodeState::Data(len) => len,
            DecodeState::Head => {
                let mut head: &[u8] = src.as_ref();
                let Ok(len) = head.try_get_u32() else {
                    return Ok(None);
                };
                if len > self.max_frame_bytes {
                    return Err(FrameError::TooLarge {
                        len,
                        max: self.max_frame_bytes,
                    });
                }
                src.advance(FRAME_HEADER_BYTES);
                let len = len as usize;
                // Bounded by the check above, so this reserves at most max_frame_bytes.
                src.reserve(len.saturating_sub(src.len()));
                self.state = DecodeState::Data(len);
                len
            }
        };
        if src.len() < len {
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<RequestFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: RequestFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        Ok(self.encode_with(dst, |dst| item.encode_payload(dst))?)
    }
}

impl Encoder<&RequestFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &RequestFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        Ok(self.encode_with(dst, |dst| item.encode_payload(dst))?)
    }
}

impl Encoder<ResponseFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: ResponseFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        Ok(self.encode_with(dst, |dst| item.encode_payload(dst))?)
    }
}
