//! Pins the data directory's formats to the annotated dumps in `docs/storage-format.md`, the
//! way `protocol_md.rs` pins `PROTOCOL.md`: each example is written by the engine's own code
//! (the log's segment and record encoders, the engine's records, a real snapshot and
//! manifest), dumped field by field, and must equal the block after
//! `<!-- example: NAME -->`. After an intended change, regenerate the blocks with
//! `UPDATE_STORAGE_MD=1 cargo test -p sutra-engine storage_md`.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test of examples it builds itself"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use sutra_protocol::hexdump::{check_document, Dump};
use sutra_protocol::{Concept, ConceptId, Vector, VectorSource};
use sutra_wal::segment;

use crate::datadir::DataDir;
use crate::record::{self, Record};
use crate::snapshot;
use crate::vectors::slots_per_segment;

/// The examples' vectors have 4 values (a default server's have 256).
const DIM: u32 = 4;
/// The example segment's CRC seed (random per segment in a real log).
const SEED: u32 = 0x5eed_0001;
/// 2025-11-27T00:00:00Z, and an hour later.
const CREATED_AT_MS: u64 = 1_764_201_600_000;
const EXPIRES_AT_MS: u64 = 1_764_205_200_000;

fn concept(id: &str, embedding: Option<Vector>) -> Concept {
    Concept {
        id: ConceptId::parse(id).unwrap(),
        content: "hello".to_owned(),
        concept_type: "note".to_owned(),
        model: "m".to_owned(),
        attributes: BTreeMap::from([("lang".to_owned(), "en".to_owned())]),
        embedding,
        created_at_ms: CREATED_AT_MS,
        expires_at_ms: Some(EXPIRES_AT_MS),
    }
}

fn vector() -> Vector {
    Vector::new(vec![0.5, -1.0, 0.25, 2.0], DIM).unwrap()
}

/// A vector in slot 3 of the mapped segments, as a snapshot names it.
struct InSlot(Vec<f32>);

impl VectorSource for InSlot {
    fn values(&self) -> &[f32] {
        &self.0
    }

    fn location(&self) -> Option<u64> {
        Some(3)
    }
}

const TAGS: [(u8, &str); 6] = [
    (1, "Put"),
    (2, "Delete"),
    (3, "PutSlot"),
    (4, "Batch"),
    (5, "ClearType"),
    (6, "Expire"),
];

fn tag(dump: &mut Dump<'_>) -> u8 {
    let tag = dump.peek();
    let name = TAGS
        .iter()
        .find(|(value, _)| *value == tag)
        .map_or("unknown", |(_, name)| name);
    dump.take(1, &format!("tag = {tag} ({name})"));
    tag
}

/// One engine record (the payload of a log record, or of a snapshot entry).
fn record(dump: &mut Dump<'_>) {
    match tag(dump) {
        1 => dump.concept(),
        3 => {
            dump.concept_head();
            if dump.option_tag("vector slot") {
                dump.u32("vector slot");
            }
            dump.concept_tail();
        }
        2 => dump.string("id"),
        4 => {
            let count = dump.u32("count");
            for _ in 0..count {
                dump.u32("record length");
                record(dump);
            }
        }
        5 => dump.string("concept_type"),
        6 => {
            dump.string("id");
            dump.u64("at_ms");
        }
        other => panic!("unknown record tag {other}"),
    }
}

fn dump_record(bytes: &[u8]) -> String {
    let mut dump = Dump::new(bytes);
    record(&mut dump);
    dump.finish()
}

fn segment_header() -> String {
    let bytes = segment::encode_header(SEED, 1);
    let mut dump = Dump::new(&bytes);
    dump.take(8, "magic \"SUTRAWAL\"");
    dump.u32("format version");
    dump.u32("seed");
    dump.u64("first_lsn");
    dump.u32("reserved");
    dump.u32_le("CRC32 of bytes 0..28 (u32 LE)");
    dump.finish()
}

fn log_record() -> String {
    let payload = record::encode_put(&concept("doc-1", Some(vector()))).unwrap();
    let mut bytes = Vec::new();
    segment::encode_record(&mut bytes, SEED, 1, &payload);
    let mut dump = Dump::new(&bytes);
    dump.u32("payload length");
    dump.u32_le("CRC32 seeded with the segment's seed (u32 LE)");
    dump.u64("lsn");
    record(&mut dump);
    let padding = bytes.len() - 16 - payload.len();
    dump.take(padding, "zero padding to a multiple of 8");
    dump.finish()
}

fn snapshot_file() -> String {
    let dir = tempfile::tempdir().unwrap();
    let concepts = vec![Arc::new(concept("doc-1", Some(vector())))];
    snapshot::write(dir.path(), 7, DIM, &concepts).unwrap();
    let bytes = std::fs::read(dir.path().join(snapshot::name(7))).unwrap();
    let mut dump = Dump::new(&bytes);
    dump.take(8, "magic \"SUTRASNP\"");
    dump.u32("format version");
    dump.u32("vector_dimension");
    dump.u64("lsn");
    dump.u32("reserved");
    dump.u32_le("CRC32 of bytes 0..28 (u32 LE)");
    dump.u32("record length");
    dump.u32_le("CRC32 of the record (u32 LE)");
    record(&mut dump);
    dump.u32("end marker (a record length of 0)");
    dump.u32("reserved");
    dump.u64("concept count");
    dump.finish()
}

fn manifest() -> String {
    let dir = tempfile::tempdir().unwrap();
    drop(DataDir::open(dir.path(), 256).unwrap());
    std::fs::read_to_string(dir.path().join("MANIFEST")).unwrap()
}

fn examples() -> Vec<(&'static str, String)> {
    let id = ConceptId::parse("doc-1").unwrap();
    let in_slot = Vector::from_source(Arc::new(InSlot(vec![0.0; 4])), DIM).unwrap();
    vec![
        ("manifest", manifest()),
        ("wal-segment-header", segment_header()),
        ("wal-record", log_record()),
        (
            "record-delete",
            dump_record(&Record::Delete(id.clone()).encode().unwrap()),
        ),
        (
            "record-batch",
            dump_record(
                &record::encode_batch(&[
                    Arc::new(concept("doc-1", None)),
                    Arc::new(concept("doc-2", None)),
                ])
                .unwrap(),
            ),
        ),
        (
            "record-clear-type",
            dump_record(&Record::ClearType("note".to_owned()).encode().unwrap()),
        ),
        (
            "record-expire",
            dump_record(
                &Record::Expire {
                    id,
                    at_ms: EXPIRES_AT_MS,
                }
                .encode()
                .unwrap(),
            ),
        ),
        (
            "record-put-slot",
            dump_record(&record::encode_for_snapshot(&concept("doc-1", Some(in_slot))).unwrap()),
        ),
        ("snapshot", snapshot_file()),
    ]
}

#[test]
fn storage_format_md_matches_the_encoders() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/storage-format.md");
    check_document(&path, &examples(), "UPDATE_STORAGE_MD");
}

#[test]
fn vector_slots_are_where_the_document_says() {
    // docs/storage-format.md: 8 MiB segments of whole slots; slot s of a 256-dim directory is
    // in vectors-<s / 8192>.seg at byte (s % 8192) * 1024.
    assert_eq!(slots_per_segment(256), 8192);
    assert_eq!(slots_per_segment(4), 524_288);
}
