//! Primitive field encodings shared by every message (and reused by the server's own disk
//! formats, which are versioned separately from the wire).
//!
//! | type | encoding |
//! |---|---|
//! | u8, u16, u32, u64 | little-endian |
//! | bool | u8: 0 = false, 1 = true; anything else is an error |
//! | string | u32 byte length, then that many bytes of UTF-8 |
//! | option<T> | u8 tag: 0 = absent, 1 = present followed by T |
//! | map<string,string> | u32 count, then count (key, value) string pairs, keys unique |
//! | vector | u32 count, then count f32 little-endian values |
//!
//! Readers work on `&mut &[u8]`, use only `try_get_*` and `split_at_checked`, and compare every
//! announced length with its limit and with the bytes that remain before touching them.

#![deny(clippy::arithmetic_side_effects)]

use bytes::{Buf, BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// Reads a u8.
pub fn get_u8(buf: &mut &[u8], field: &'static str) -> Result<u8, DecodeError> {
    buf.try_get_u8()
        .map_err(|_| DecodeError::Truncated { field })
}

/// Reads a u16 LE.
pub fn get_u16(buf: &mut &[u8], field: &'static str) -> Result<u16, DecodeError> {
    buf.try_get_u16_le()
        .map_err(|_| DecodeError::Truncated { field })
}

/// Reads a u32 LE.
pub fn get_u32(buf: &mut &[u8], field: &'static str) -> Result<u32, DecodeError> {
    buf.try_get_u32_le()
        .map_err(|_| DecodeError::Truncated { field })
}

/// Reads a u64 LE.
pub fn get_u64(buf: &mut &[u8], field: &'static str) -> Result<u64, DecodeError> {
    buf.try_get_u64_le()
        .map_err(|_| DecodeError::Truncated { field })
}

/// Reads a bool (0 or 1).
pub fn get_bool(buf: &mut &[u8], field: &'static str) -> Result<bool, DecodeError> {
    match get_u8(buf, field)? {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(DecodeError::InvalidTag { field, tag }),
    }
}

/// Reads an option tag: `Ok(true)` when a value follows.
pub fn get_option_tag(buf: &mut &[u8], field: &'static str) -> Result<bool, DecodeError> {
    get_bool(buf, field)
}

/// Reads `len` raw bytes; `len` is compared with what remains before slicing.
pub fn get_bytes<'a>(
    buf: &mut &'a [u8],
    len: usize,
    field: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let (head, tail) = buf
        .split_at_checked(len)
        .ok_or(DecodeError::Truncated { field })?;
    *buf = tail;
    Ok(head)
}

/// Reads a string of at most `max_bytes` bytes, borrowed from the input.
pub fn get_str<'a>(
    buf: &mut &'a [u8],
    field: &'static str,
    max_bytes: u32,
) -> Result<&'a str, DecodeError> {
    let len = get_u32(buf, field)?;
    if len > max_bytes {
        return Err(DecodeError::TooLong {
            field,
            len: u64::from(len),
            max: u64::from(max_bytes),
        });
    }
    let bytes = get_bytes(buf, len as usize, field)?;
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })
}

/// Reads a count of entries that each occupy at least `min_entry_bytes`, checked against the limit and the bytes that remain.
pub fn get_count(
    buf: &mut &[u8],
    field: &'static str,
    max: u32,
    min_entry_bytes: usize,
) -> Result<usize, DecodeError> {
    let count = get_u32(buf, field)?;
    if count > max {
        return Err(DecodeError::TooMany {
            field,
            count: u64::from(count),
            max: u64::from(max),
        });
    }
    let count = count as usize;
    let fits = buf
        .remaining()
        .checked_div(min_entry_bytes)
        .unwrap_or(usize::MAX);
    if count > fits {
        return Err(DecodeError::Truncated { field });
    }
    Ok(count)
}

/// Fails unless every byte was consumed.
pub fn finish(buf: &[u8]) -> Result<(), DecodeError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes { count: buf.len() })
    }
}

/// Writes a u32 LE length.
pub fn put_len(dst: &mut BytesMut, len: usize, field: &'static str) -> Result<(), EncodeError> {
    let len = u32::try_from(len).map_err(|_| EncodeError::FieldTooLong { field })?;
    dst.put_u32_le(len);
    Ok(())
}

/// Writes a string.
pub fn put_str(dst: &mut BytesMut, value: &str, field: &'static str) -> Result<(), EncodeError> {
    put_len(dst, value.len(), field)?;
    dst.put_slice(value.as_bytes());
    Ok(())
}

/// Writes a bool.
pub fn put_bool(dst: &mut BytesMut, value: bool) {
    dst.put_u8(u8::from(value));
}

/// Writes an option<u64>.
pub fn put_option_u64(dst: &mut BytesMut, value: Option<u64>) {
    match value {
        None => dst.put_u8(0),
        Some(value) => {
            dst.put_u8(1);
            dst.put_u64_le(value);
        }
    }
}

/// Reads an option<u64>.
pub fn get_option_u64(buf: &mut &[u8], field: &'static str) -> Result<Option<u64>, DecodeError> {
    if get_option_tag(buf, field)? {
        Ok(Some(get_u64(buf, field)?))
    } else {
        Ok(None)
    }
}
