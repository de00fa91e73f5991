//! Checkpoint snapshots: every live concept at one LSN, so that restart replays only the log
//! written after it and the log segments it covers can be deleted.
//!
//! File `snapshot-<lsn, 20 digits>.snap`, written as a temporary file, fsynced, renamed, then
//! the directory fsynced; older snapshots are deleted only after that.
//!
//! | part | encoding |
//! |---|---|
//! | header (32 bytes) | magic `SUTRASNP`, format version u32 LE, vector_dimension u32 LE, lsn u64 LE, reserved u32, CRC32 of bytes 0..28 u32 LE |
//! | each concept | length u32 LE, CRC32 of the payload u32 LE, payload (a Put [`Record`], the vector inline) |
//! | footer (16 bytes) | length 0 (u32), reserved u32, concept count u64 LE |
//!
//! A snapshot is only ever read whole: a bad checksum, a missing footer or a count mismatch
//! stops start-up with an error naming the file.
//!
//! Vectors are written inline even when they live in mapped segments (`MMAP_ENABLED`), so
//! the segments are never a source of truth and never synced: the log and the snapshot
//! carry every vector. Snapshots written before this named each concept's slot instead
//! (PutSlot records, after syncing the segments with `msync`); they are still read. Syncing
//! the segments at each checkpoint made every dirty page read-only again, so the next store
//! to it took a page fault, and each page cost a TLB shootdown on every core: a quarter of
//! the server's CPU under a heavy store load (bench/RESULTS.md).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use sutra_protocol::Concept;

use super::datadir::{io_error, sync_dir, FORMAT_VERSION};
use super::record::{self, Record};
use super::vectors::VectorStore;
use crate::error::EngineError;

const MAGIC: &[u8; 8] = b"SUTRASNP";
const HEADER_BYTES: usize = 32;
/// Largest record a snapshot may hold: a concept is bounded by the frame limit (16 MiB).
const MAX_RECORD_BYTES: u32 = 1 << 24;

pub(crate) fn name(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.snap")
}

fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

fn snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, EngineError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|error| io_error("list", dir, error))? {
        let entry = entry.map_err(|error| io_error("list", dir, error))?;
        if let Some(lsn) = entry.file_name().to_str().and_then(parse_name) {
            found.push((lsn, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn corrupt(path: &Path, reason: &str) -> EngineError {
    EngineError::BadDataDir {
        path: path.display().to_string(),
        reason: format!("snapshot is damaged: {reason}"),
    }
}

/// Writes a snapshot of `concepts` at `lsn` and deletes older snapshots. Concepts are
/// written in the store's map order: loading sorts each type's ids once to build the type
/// index, and sorting them here, at every checkpoint, cost a fifth of a checkpoint's CPU.
pub(crate) fn write(
    dir: &Path,
    lsn: u64,
    vector_dimension: u32,
    concepts: &[Arc<Concept>],
) -> Result<(), EngineError> {
    write_with(
        dir,
        lsn,
        vector_dimension,
        concepts,
        record::encode_put_into,
    )
}

/// [`write`] with each concept encoded by `encode` into a reused buffer (tests write the
/// older PutSlot format).
pub(crate) fn write_with(
    dir: &Path,
    lsn: u64,
    vector_dimension: u32,
    concepts: &[Arc<Concept>],
    encode: fn(&mut BytesMut, &Concept) -> Result<(), sutra_protocol::EncodeError>,
) -> Result<(), EngineError> {
    let path = dir.join(name(lsn));
    let temp = path.with_extension("tmp");
    let file = File::create(&temp).map_err(|error| io_error("create", &temp, error))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&vector_dimension.to_le_bytes());
    header.extend_from_slice(&lsn.to_le_bytes());
    header.extend_from_slice(&0_u32.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    let write_err = |error| io_error("write", &temp, error);
    out.write_all(&header).map_err(write_err)?;
    let mut payload = BytesMut::new();
    for concept in concepts {
        encode(&mut payload, concept).map_err(|error| EngineError::Internal {
            message: format!("encoding a snapshot record: {error}"),
        })?;
        let len = u32::try_from(payload.len()).map_err(|_| EngineError::Internal {
            message: "snapshot record too large".to_owned(),
        })?;
        out.write_all(&len.to_le_bytes()).map_err(write_err)?;
        out.write_all(&crc32fast::hash(&payload).to_le_bytes())
            .map_err(write_err)?;
        out.write_all(&payload).map_err(write_err)?;
    }
    out.write_all(&0_u32.to_le_bytes()).map_err(write_err)?;
    out.write_all(&0_u32.to_le_bytes()).map_err(write_err)?;
    out.write_all(&(concepts.len() as u64).to_le_bytes())
        .map_err(write_err)?;
    let file = out
        .into_inner()
        .map_err(|error| io_error("write", &temp, error.into_error()))?;
    file.sync_all()
        .map_err(|error| io_error("sync", &temp, error))?;
    drop(file);
    fs::rename(&temp, &path).map_err(|error| io_error("rename", &temp, error))?;
    sync_dir(dir)?;
    for (older, older_path) in snapshots(dir)? {
        if older < lsn {
            fs::remove_file(&older_path).map_err(|error| io_error("remove", &older_path, error))?;
        }
    }
    sync_dir(dir)
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<(), EngineError> {
    reader.read_exact(buf).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(path, "truncated")
        } else {
            io_error("read", path, error)
        }
    })
}

fn u32_le(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0_u8; 4];
    raw.copy_from_slice(bytes.get(offset..offset + 4).unwrap_or(&[0; 4]));
    u32::from_le_bytes(raw)
}

fn u64_le(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0_u8; 8];
    raw.copy_from_slice(bytes.get(offset..offset + 8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(raw)
}

/// Concepts per batch handed from the snapshot reader to the loader.
const LOAD_BATCH: usize = 1024;
/// Batches in flight between them.
const LOAD_QUEUE_BATCHES: usize = 8;

fn read_records(
    reader: &mut impl Read,
    path: &Path,
    vector_dimension: u32,
    vectors: Option<&Arc<VectorStore>>,
    batches: &std::sync::mpsc::SyncSender<Vec<Concept>>,
) -> Result<(), EngineError> {
    let mut count = 0_u64;
    let mut payload = Vec::new();
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    loop {
        let mut frame = [0_u8; 8];
        read_exact(reader, &mut frame, path)?;
        let len = u32_le(&frame, 0);
        if len == 0 {
            let mut footer = [0_u8; 8];
            read_exact(reader, &mut footer, path)?;
            if u64::from_le_bytes(footer) != count {
                return Err(corrupt(path, "concept count does not match the footer"));
            }
            break;
        }
        if len > MAX_RECORD_BYTES {
            return Err(corrupt(path, "record length over the limit"));
        }
        payload.resize(len as usize, 0);
        read_exact(reader, &mut payload, path)?;
        if crc32fast::hash(&payload) != u32_le(&frame, 4) {
            return Err(corrupt(path, "record checksum mismatch"));
        }
        match Record::decode(&payload, vector_dimension) {
            Ok(Record::Put(mut concept)) => {
                // Written with MMAP_ENABLED=false and read with it on: move the vector to a slot.
                if let (Some(vectors), Some(embedding)) = (vectors, &concept.embedding) {
                    concept.embedding = Some(vectors.store(embedding.as_slice())?);
                }
                batch.push(concept);
            }
            Ok(Record::PutSlot(mut concept, slot)) => {
                if let Some(slot) = slot {
                    let vectors = vectors.ok_or_else(|| corrupt(path, "it names vector slots but MMAP_ENABLED is false; start with MMAP_ENABLED=true"))?;
                    concept.embedding = Some(
                        vectors
                            .claim(slot)
                            .map_err(|reason| corrupt(path, &reason))?,
                    );
                }
                batch.push(concept);
            }
            Ok(
                Record::Delete(_) | Record::Batch(_) | Record::ClearType(_) | Record::Expire { .. },
            )
            | Err(_) => {
                return Err(corrupt(path, "undecodable record"));
            }
        }
        count += 1;
        if batch.len() == LOAD_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(LOAD_BATCH));
            batches.send(full).map_err(|_| EngineError::ShuttingDown)?;
        }
    }
    if !batch.is_empty() {
        batches.send(batch).map_err(|_| EngineError::ShuttingDown)?;
    }
    Ok(())
}

/// Loads the newest snapshot, passing its concepts to `load`; returns its LSN (0 when there
/// is none). Leftover temporary files from an interrupted checkpoint are removed.
pub(crate) fn load(
    dir: &Path,
    vector_dimension: u32,
    vectors: Option<&Arc<VectorStore>>,
    load: impl FnOnce(&mut dyn Iterator<Item = Concept>),
) -> Result<u64, EngineError> {
    for entry in fs::read_dir(dir).map_err(|error| io_error("list", dir, error))? {
        let path = entry.map_err(|error| io_error("list", dir, error))?.path();
        let is_temp = path.extension().is_some_and(|extension| extension == "tmp");
        if is_temp
            && path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("snapshot-"))
        {
            fs::remove_file(&path).map_err(|error| io_error("remove", &path, error))?;
        }
    }
    let Some((lsn, path)) = snapshots(dir)?.pop() else {
        return Ok(0);
    };
    let file = File::open(&path).map_err(|error| io_error("open", &path, error))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0_u8; HEADER_BYTES];
    read_exact(&mut reader, &mut header, &path)?;
    if header.get(..8) != Some(MAGIC.as_slice())
        || crc32fast::hash(header.get(..28).unwrap_or_default()) != u32_le(&header, 28)
    {
        return Err(corrupt(&path, "bad header"));
    }
    if u32_le(&header, 8) != FORMAT_VERSION
        || u32_le(&header, 12) != vector_dimension
        || u64_le(&header, 16) != lsn
    {
        return Err(corrupt(
            &path,
            "header does not match the file name, format version or VECTOR_DIMENSION",
        ));
    }
    // Reading, checksumming and decoding run on a second thread while the caller inserts:
    // restart time at a million concepts is CPU-bound, and there are two cores.
    std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Concept>>(LOAD_QUEUE_BATCHES);
        let reader = scope
            .spawn(move || read_records(&mut reader, &path, vector_dimension, vectors, &batches));
        load(&mut received.iter().flatten());
        reader.join().unwrap_or_else(|_| {
            Err(EngineError::Internal {
                message: "snapshot reader panicked".to_owned(),
            })
        })
    })?;
    Ok(lsn)
}
