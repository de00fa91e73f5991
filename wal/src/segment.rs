//! Segment files: their header, the record framing, and the recovery scan.
//!
//! A segment is a preallocated file `wal-<first lsn, 20 digits>.seg`.
//!
//! # Segment header (32 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SUTRAWAL` |
//! | 8 | 4 | format version, u32 LE ([`FORMAT_VERSION`]) |
//! | 12 | 4 | seed, u32 LE: random per segment, the initial CRC of every record |
//! | 16 | 8 | first LSN, u64 LE: the sequence number of the segment's first record |
//! | 24 | 4 | reserved, zero |
//! | 28 | 4 | CRC32 of bytes 0..28 |
//!
//! # Record (at 8-byte aligned offsets, from offset 32)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length N, u32 LE, 1..=`max_record_bytes` |
//! | 4 | 4 | CRC32 seeded with the segment seed, over bytes 8..16 + 0..4 + the payload |
//! | 8 | 8 | LSN, u64 LE: one more than the previous record's |
//! | 16 | N | payload |
//! | 16+N | 0-7 | zero padding to a multiple of 8 |
//!
//! The rest of a segment is zeros (preallocated). Recovery reads records in LSN order until
//! the first one that is not valid. If any valid record follows it (in this segment, at any
//! aligned offset, or in a later segment), the log is corrupt in the middle and recovery stops
//! with an error. Otherwise it is the torn tail of an interrupted write: it is dropped, and
//! the number of non-zero bytes dropped is reported.

#![deny(clippy::arithmetic_side_effects)]

use crate::error::WalError;

/// Bytes at the start of every segment.
pub const MAGIC: &[u8; 8] = b"SUTRAWAL";
/// The on-disk format version written and accepted.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 16;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;

/// The name of the segment whose first record is `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.seg")
}

/// The first LSN encoded in a segment name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    Some(u32::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let end = offset.checked_add(8)?;
    Some(u64::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

/// The header of a new segment.
pub fn encode_header(seed: u32, first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0_u8; SEGMENT_HEADER_BYTES];
    let mut fields = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    fields.extend_from_slice(MAGIC);
    fields.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    fields.extend_from_slice(&seed.to_le_bytes());
    fields.extend_from_slice(&first_lsn.to_le_bytes());
    fields.extend_from_slice(&0_u32.to_le_bytes());
    let crc = crc32fast::hash(&fields);
    fields.extend_from_slice(&crc.to_le_bytes());
    header.copy_from_slice(&fields);
    header
}

/// A segment header that passed its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The CRC seed.
    pub seed: u32,
    /// The first record's LSN.
    pub first_lsn: u64,
}

/// Checks a segment header.
pub fn decode_header(bytes: &[u8], name: &str) -> Result<SegmentHeader, WalError> {
    let corrupt = |reason: &'static str| WalError::Corrupt {
        file: name.to_owned(),
        offset: 0,
        reason,
    };
    let header = bytes
        .get(..SEGMENT_HEADER_BYTES)
        .ok_or_else(|| corrupt("segment shorter than its header"))?;
    if header.get(..8) != Some(MAGIC.as_slice()) {
        return Err(corrupt("bad magic: not a sutra WAL segment"));
    }
    let version = u32_at(header, 8).ok_or_else(|| corrupt("short header"))?;
    if version != FORMAT_VERSION {
        return Err(WalError::UnsupportedFormat {
            file: name.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let stored_crc = u32_at(header, 28).ok_or_else(|| corrupt("short header"))?;
    if crc32fast::hash(header.get(..28).unwrap_or_default()) != stored_crc {
        return Err(corrupt("segment header checksum mismatch"));
    }
    Ok(SegmentHeader {
        seed: u32_at(header, 12).ok_or_else(|| corrupt("short header"))?,
        first_lsn: u64_at(header, 16).ok_or_else(|| corrupt("short header"))?,
    })
}

fn record_crc(seed: u32, lsn: u64, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    hasher.update(&lsn.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The bytes a record occupies, padding included; `None` if it overflows.
pub fn record_span(payload_len: usize) -> Option<usize> {
    let raw = payload_len.checked_add(RECORD_HEADER_BYTES)?;
    raw.checked_next_multiple_of(RECORD_ALIGN)
}

/// Appends one framed, padded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, seed: u32, lsn: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .unwrap_or_else(|_| unreachable!("payloads are bounded by max_record_bytes"));
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(seed, lsn, len, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let span = record_span(payload.len()).unwrap_or(0);
    out.resize(start.saturating_add(span), 0);
}

/// A record read back from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its sequence number.
    pub lsn: u64,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Decodes the record at `offset` if it is complete and valid for `seed`; `expected_lsn`,
/// when given, must match. Lengths are checked against `max_record_bytes` and against the
/// bytes that remain before anything else is read.
fn record_at(
    bytes: &[u8],
    offset: usize,
    seed: u32,
    max_record_bytes: u32,
    expected_lsn: Option<u64>,
) -> Option<(RecordRef<'_>, usize)> {
    let len = u32_at(bytes, offset)?;
    if len == 0 || len > max_record_bytes {
        return None;
    }
    let crc = u32_at(bytes, offset.checked_add(4)?)?;
    let lsn = u64_at(bytes, offset.checked_add(8)?)?;
    if expected_lsn.is_some_and(|expected| expected != lsn) {
        return None;
    }
    let payload_start = offset.checked_add(RECORD_HEADER_BYTES)?;
    let payload = bytes.get(payload_start..payload_start.checked_add(len as usize)?)?;
    if record_crc(seed, lsn, len, payload) != crc {
        return None;
    }
    let next = offset.checked_add(record_span(len as usize)?)?;
    Some((RecordRef { lsn, payload }, next))
}

/// What scanning one segment found.
#[derive(Debug)]
pub struct SegmentScan<'a> {
    /// The header.
    pub header: SegmentHeader,
    /// The valid records, in order.
    pub records: Vec<RecordRef<'a>>,
    /// Where the next record goes (the end of the valid records).
    pub end_offset: usize,
    /// Non-zero bytes after `end_offset` that are not valid records (a torn tail).
    pub dropped_bytes: usize,
}

/// Reads every valid record of one segment. The caller decides whether dropped bytes are a
/// torn tail (last segment) or corruption.
pub fn scan_segment<'a>(
    bytes: &'a [u8],
    name: &str,
    max_record_bytes: u32,
) -> Result<SegmentScan<'a>, WalError> {
    let header = decode_header(bytes, name)?;
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = header.first_lsn;
    while let Some((record, next)) =
        record_at(bytes, offset, header.seed, max_record_bytes, Some(expected))
    {
        records.push(record);
        offset = next;
        expected = expected.checked_add(1).ok_or(WalError::Corrupt {
            file: name.to_owned(),
            offset: offset as u64,
            reason: "LSN overflow",
        })?;
    }
    // Anything valid further on means the invalid record is in the middle of the log.
    let mut probe = offset.checked_add(RECORD_ALIGN);
    while let Some(at) = probe.filter(|at| at.saturating_add(RECORD_HEADER_BYTES) <= bytes.len()) {
        if let Some((record, _)) = record_at(bytes, at, header.seed, max_record_bytes, None) {
            if record.lsn >= expected {
                return Err(WalError::Corrupt {
                    file: name.to_owned(),
                    offset: offset as u64,
                    reason: "invalid record followed by valid records (corruption in the middle of the log)",
                });
            }
        }
        probe = at.checked_add(RECORD_ALIGN);
    }
    let dropped_bytes = bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last.saturating_add(1).saturating_sub(offset));
    Ok(SegmentScan {
        header,
        records,
        end_offset: offset,
        dropped_bytes,
    })
}
