//! Pins the encodings to the annotated hex dumps in `PROTOCOL.md`.
//!
//! Each example below is encoded, then walked field by field into annotated hex lines, and the
//! result must equal the block after `<!-- example: NAME -->` in `PROTOCOL.md`. A change to the
//! wire format therefore fails this test until the document changes with it. After an
//! intended change, regenerate the blocks with
//! `UPDATE_PROTOCOL_MD=1 cargo test -p sutra-protocol protocol_md`.

#![allow(
    clippy::indexing_slicing,
    reason = "tests index buffers they built themselves"
)]

use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::codec::Encoder;

use crate::hexdump::{check_document, Dump};
use crate::*;

/// The examples use a 4-dimensional vector so the dumps stay short; a default server expects
/// 256 values (1,024 bytes).
const DIM: u32 = 4;

#[derive(Clone, Copy)]
enum Field {
    FrameLength,
    Header,
    Status,
    Bool(&'static str),
    U16(&'static str),
    U32(&'static str),
    U64(&'static str),
    Str(&'static str),
    Attributes,
    OptionVector,
    OptionU64(&'static str),
    Concept,
    Page,
    Counters,
    IdList,
    StoreList,
    OptionConceptList,
    OutcomeList,
    OptionStr(&'static str),
    LearnList,
    LearnedBody,
    LearnedList,
    SearchRequest,
    SearchAnswer,
}

const LEARN_BODY: [Field; 5] = [
    Field::OptionStr("id"),
    Field::Str("content"),
    Field::Str("concept_type"),
    Field::Attributes,
    Field::OptionU64("ttl_seconds"),
];

/// The fields of a StoreConcept body.
const STORE_BODY: [Field; 7] = [
    Field::Str("id"),
    Field::Str("content"),
    Field::Str("concept_type"),
    Field::Str("model"),
    Field::Attributes,
    Field::OptionVector,
    Field::OptionU64("ttl_seconds"),
];

struct Walker<'a> {
    d: Dump<'a>,
}

impl Walker<'_> {
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per field kind, in one place"
    )]
    fn field(&mut self, field: Field) {
        match field {
            Field::FrameLength => {
                let value = u32::from_be_bytes(self.d.peek_bytes(4).try_into().unwrap());
                self.d
                    .take(4, &format!("frame length = {value} (u32 BIG-endian)"));
            }
            Field::Header => {
                self.d.take(1, "version = 1");
                let opcode = self.d.peek();
                let name = Opcode::from_u8(opcode).map_or("unknown", Opcode::name);
                self.d.take(1, &format!("opcode = 0x{opcode:02x} ({name})"));
                self.d.u32("request_id");
            }
            Field::Status => {
                let status = self.d.peek();
                self.d.take(
                    1,
                    &format!(
                        "status = {status} ({})",
                        if status == 0 { "ok" } else { "error" }
                    ),
                );
            }
            Field::Bool(name) => {
                let value = self.d.peek();
                self.d
                    .take(1, &format!("{name} = {value} ({})", value == 1));
            }
            Field::U16(name) => {
                let value = u16::from_le_bytes(self.d.peek_bytes(2).try_into().unwrap());
                let extra = if name == "error code" {
                    format!(" ({})", ErrorCode::from_u16(value))
                } else {
                    String::new()
                };
                self.d.take(2, &format!("{name} = {value}{extra} (u16 LE)"));
            }
            Field::U32(name) => {
                self.d.u32(name);
            }
            Field::U64(name) => {
                self.d.u64(name);
            }
            Field::Str(name) => self.d.string(name),
            Field::Attributes => self.d.attributes(),
            Field::OptionVector => self.d.option_vector(),
            Field::OptionU64(name) => self.d.option_u64(name),
            Field::Concept => self.d.concept(),
            Field::Page => {
                let count = self.d.u32_le("concepts: count (u32 LE)");
                for _ in 0..count {
                    self.field(Field::Concept);
                }
                self.d.string("next_cursor");
            }
            Field::Counters => {
                let count = self.d.u32_le("counters: count (u32 LE)");
                for _ in 0..count {
                    self.d.string("counter name");
                    self.field(Field::U64("counter value"));
                }
            }
            Field::IdList => {
                let count = self.d.u32_le("ids: count (u32 LE)");
                for _ in 0..count {
                    self.d.string("id");
                }
            }
            Field::StoreList => {
                let count = self.d.u32_le("concepts: count (u32 LE)");
                for _ in 0..count {
                    for field in STORE_BODY {
                        self.field(field);
                    }
                }
            }
            Field::OptionConceptList => {
                let count = self.d.u32_le("concepts: count (u32 LE)");
                for _ in 0..count {
                    let tag = self.d.peek();
                    self.d.take(
                        1,
                        &format!(
                            "concept: option tag = {tag} ({})",
                            if tag == 1 { "found" } else { "not found" }
                        ),
                    );
                    if tag == 1 {
                        self.field(Field::Concept);
                    }
                }
            }
            Field::OptionStr(name) => {
                if self.d.option_tag(name) {
                    self.d.string(name);
                }
            }
            Field::LearnList => {
                let count = self.d.u32_le("texts: count (u32 LE)");
                for _ in 0..count {
                    for field in LEARN_BODY {
                        self.field(field);
                    }
                }
            }
            Field::LearnedBody => {
                for field in [
                    Field::Str("id"),
                    Field::Bool("created"),
                    Field::U64("created_at_ms"),
                    Field::OptionU64("expires_at_ms"),
                    Field::U32("tokens"),
                    Field::Bool("truncated"),
                ] {
                    self.field(field);
                }
            }
            Field::LearnedList => {
                let count = self.d.u32_le("learned: count (u32 LE)");
                for _ in 0..count {
                    self.field(Field::LearnedBody);
                }
            }
            Field::SearchRequest => {
                let kind = self.d.peek();
                self.d.take(
                    1,
                    &format!(
                        "query kind = {kind} ({})",
                        if kind == 0 { "vector" } else { "text" }
                    ),
                );
                if kind == 0 {
                    let count = self.d.u32_le("query vector: count (u32 LE)");
                    for index in 0..count {
                        let value = f32::from_le_bytes(self.d.peek_bytes(4).try_into().unwrap());
                        self.d
                            .take(4, &format!("query vector[{index}] = {value} (f32 LE)"));
                    }
                } else {
                    self.d.string("text");
                }
                self.d.u32("k");
                self.d.string("concept_type");
                self.field(Field::Bool("exact"));
                self.d.u32("ef");
                self.field(Field::Bool("include_concepts"));
            }
            Field::SearchAnswer => {
                self.field(Field::Bool("exact"));
                let count = self.d.u32_le("results: count (u32 LE)");
                for _ in 0..count {
                    self.d.string("id");
                    let score = f32::from_le_bytes(self.d.peek_bytes(4).try_into().unwrap());
                    self.d.take(4, &format!("score = {score} (f32 LE)"));
                    if self.d.option_tag("concept") {
                        self.d.concept();
                    }
                }
            }
            Field::OutcomeList => {
                let count = self.d.u32_le("outcomes: count (u32 LE)");
                for _ in 0..count {
                    self.field(Field::Bool("created"));
                    self.field(Field::U64("created_at_ms"));
                    self.field(Field::OptionU64("expires_at_ms"));
                }
            }
        }
    }
}

/// The example's bytes and their annotated dump.
fn annotated(bytes: &[u8], fields: &[Field]) -> (Vec<u8>, String) {
    (bytes.to_vec(), annotate(bytes, fields))
}

fn annotate(bytes: &[u8], fields: &[Field]) -> String {
    let mut walker = Walker {
        d: Dump::new(bytes),
    };
    for field in fields {
        walker.field(*field);
    }
    walker.d.finish()
}

fn limits() -> Limits {
    Limits {
        vector_dimension: DIM,
        ..Limits::default()
    }
}

fn request(request_id: u32, request: Request) -> Vec<u8> {
    let mut dst = BytesMut::new();
    FrameCodec::new(limits().max_frame_bytes)
        .encode(
            RequestFrame {
                request_id,
                request,
            },
            &mut dst,
        )
        .unwrap();
    dst.to_vec()
}

fn response(request_id: u32, opcode: u8, response: Response) -> Vec<u8> {
    let mut dst = BytesMut::new();
    FrameCodec::new(limits().max_frame_bytes)
        .encode(
            ResponseFrame {
                request_id,
                opcode,
                response,
            },
            &mut dst,
        )
        .unwrap();
    dst.to_vec()
}

fn example_concept() -> Concept {
    Concept {
        id: ConceptId::new("doc-1", &limits()).unwrap(),
        content: "hello".to_owned(),
        concept_type: "note".to_owned(),
        model: "m".to_owned(),
        attributes: [("lang".to_owned(), "en".to_owned())].into_iter().collect(),
        embedding: Some(Vector::new(vec![0.5, -1.0, 0.0, 2.0], DIM).unwrap()),
        created_at_ms: 1_764_201_600_000,
        expires_at_ms: Some(1_764_288_000_000),
    }
}

/// Every example: its name in `PROTOCOL.md`, its bytes and its annotated dump.
#[expect(
    clippy::too_many_lines,
    reason = "a flat table of examples reads best in one place"
)]
fn examples() -> Vec<(&'static str, (Vec<u8>, String))> {
    use Field::*;
    let id = || ConceptId::new("doc-1", &limits()).unwrap();
    let concept = Arc::new(example_concept());
    let request_fields = [FrameLength, Header];
    let response_fields = [FrameLength, Header, Status];
    let with = |base: &[Field], body: &[Field]| -> Vec<Field> {
        base.iter().chain(body).copied().collect()
    };
    vec![
        (
            "health-request",
            annotated(&request(1, Request::Health), &request_fields),
        ),
        (
            "health-response",
            annotated(
                &response(
                    1,
                    0x01,
                    Response::Health(HealthInfo {
                        status: "ok".to_owned(),
                        role: "normal".to_owned(),
                        vector_dimension: 256,
                        concepts: 42,
                        version: "0.1.0".to_owned(),
                        uptime_seconds: 3600,
                        model: "all-MiniLM-L6-v2".to_owned(),
                    }),
                ),
                &with(
                    &response_fields,
                    &[
                        Str("status"),
                        Str("role"),
                        U32("vector_dimension"),
                        U64("concepts"),
                        Str("version"),
                        U64("uptime_seconds"),
                        Str("model"),
                    ],
                ),
            ),
        ),
        (
            "store-request",
            annotated(
                &request(
                    2,
                    Request::StoreConcept(StoreConcept {
                        id: id(),
                        content: "hello".to_owned(),
                        concept_type: "note".to_owned(),
                        model: "m".to_owned(),
                        attributes: concept.attributes.clone(),
                        embedding: concept.embedding.clone(),
                        ttl_seconds: Some(86_400),
                    }),
                ),
                &with(
                    &request_fields,
                    &[
                        Str("id"),
                        Str("content"),
                        Str("concept_type"),
                        Str("model"),
                        Attributes,
                        OptionVector,
                        OptionU64("ttl_seconds"),
                    ],
                ),
            ),
        ),
        (
            "store-response",
            annotated(
                &response(
                    2,
                    0x02,
                    Response::Stored(StoreOutcome {
                        created: true,
                        created_at_ms: concept.created_at_ms,
                        expires_at_ms: concept.expires_at_ms,
                    }),
                ),
                &with(
                    &response_fields,
                    &[
                        Bool("created"),
                        U64("created_at_ms"),
                        OptionU64("expires_at_ms"),
                    ],
                ),
            ),
        ),
        (
            "get-request",
            annotated(
                &request(3, Request::GetConceptById { id: id() }),
                &with(&request_fields, &[Str("id")]),
            ),
        ),
        (
            "get-response",
            annotated(
                &response(3, 0x03, Response::Concept(concept.clone())),
                &with(&response_fields, &[Concept]),
            ),
        ),
        (
            "query-request",
            annotated(
                &request(
                    4,
                    Request::QueryByType(QueryByType {
                        concept_type: "note".to_owned(),
                        limit: 1,
                        cursor: String::new(),
                    }),
                ),
                &with(
                    &request_fields,
                    &[Str("concept_type"), U32("limit"), Str("cursor")],
                ),
            ),
        ),
        (
            "query-response",
            annotated(
                &response(
                    4,
                    0x04,
                    Response::Page(QueryPage {
                        concepts: vec![concept.clone()],
                        next_cursor: "doc-1".to_owned(),
                    }),
                ),
                &with(&response_fields, &[Page]),
            ),
        ),
        (
            "delete-request",
            annotated(
                &request(5, Request::Delete { id: id() }),
                &with(&request_fields, &[Str("id")]),
            ),
        ),
        (
            "delete-response",
            annotated(
                &response(5, 0x05, Response::Deleted { existed: true }),
                &with(&response_fields, &[Bool("existed")]),
            ),
        ),
        (
            "stats-request",
            annotated(&request(6, Request::Stats), &request_fields),
        ),
        (
            "stats-response",
            annotated(
                &response(
                    6,
                    0x06,
                    Response::Stats(StatsSnapshot {
                        role: "normal".to_owned(),
                        vector_dimension: 256,
                        counters: vec![
                            ("concepts".to_owned(), 42),
                            ("requests_total".to_owned(), 1000),
                        ],
                    }),
                ),
                &with(
                    &response_fields,
                    &[Str("role"), U32("vector_dimension"), Counters],
                ),
            ),
        ),
        (
            "get-many-request",
            annotated(
                &request(
                    9,
                    Request::GetMany {
                        ids: vec![id(), ConceptId::new("nope", &limits()).unwrap()],
                    },
                ),
                &with(&request_fields, &[IdList]),
            ),
        ),
        (
            "get-many-response",
            annotated(
                &response(9, 0x07, Response::Many(vec![Some(concept.clone()), None])),
                &with(&response_fields, &[OptionConceptList]),
            ),
        ),
        (
            "store-many-request",
            annotated(
                &request(
                    10,
                    Request::StoreMany(vec![
                        StoreConcept {
                            embedding: None,
                            ttl_seconds: None,
                            ..StoreConcept::new(id(), "hello")
                        },
                        StoreConcept {
                            concept_type: "note".to_owned(),
                            ..StoreConcept::new(ConceptId::new("doc-2", &limits()).unwrap(), "bye")
                        },
                    ]),
                ),
                &with(&request_fields, &[StoreList]),
            ),
        ),
        (
            "store-many-response",
            annotated(
                &response(
                    10,
                    0x08,
                    Response::StoredMany(vec![
                        StoreOutcome {
                            created: false,
                            created_at_ms: concept.created_at_ms,
                            expires_at_ms: None,
                        },
                        StoreOutcome {
                            created: true,
                            created_at_ms: concept.created_at_ms,
                            expires_at_ms: None,
                        },
                    ]),
                ),
                &with(&response_fields, &[OutcomeList]),
            ),
        ),
        (
            "clear-type-request",
            annotated(
                &request(
                    11,
                    Request::ClearType {
                        concept_type: "note".to_owned(),
                    },
                ),
                &with(&request_fields, &[Str("concept_type")]),
            ),
        ),
        (
            "clear-type-response",
            annotated(
                &response(11, 0x09, Response::Cleared { removed: 2 }),
                &with(&response_fields, &[U64("removed")]),
            ),
        ),
        (
            "learn-request",
            annotated(
                &request(
                    12,
                    Request::LearnConcept(LearnConcept {
                        concept_type: "note".to_owned(),
                        ttl_seconds: Some(3600),
                        ..LearnConcept::new("hello")
                    }),
                ),
                &with(&request_fields, &LEARN_BODY),
            ),
        ),
        (
            "learn-response",
            annotated(
                &response(
                    12,
                    0x0A,
                    Response::Learned(Learned {
                        id: "learn-e929322f51807646e290f55b4ea437de".to_owned(),
                        outcome: StoreOutcome {
                            created: true,
                            created_at_ms: concept.created_at_ms,
                            expires_at_ms: Some(concept.created_at_ms + 3_600_000),
                        },
                        tokens: 3,
                        truncated: false,
                    }),
                ),
                &with(&response_fields, &[Field::LearnedBody]),
            ),
        ),
        (
            "learn-batch-request",
            annotated(
                &request(
                    13,
                    Request::LearnBatch(vec![
                        LearnConcept {
                            id: Some(ConceptId::new("q-1", &limits()).unwrap()),
                            ..LearnConcept::new("first")
                        },
                        LearnConcept::new("second"),
                    ]),
                ),
                &with(&request_fields, &[Field::LearnList]),
            ),
        ),
        (
            "learn-batch-response",
            annotated(
                &response(
                    13,
                    0x0B,
                    Response::LearnedMany(vec![
                        Learned {
                            id: "q-1".to_owned(),
                            outcome: StoreOutcome {
                                created: true,
                                created_at_ms: concept.created_at_ms,
                                expires_at_ms: None,
                            },
                            tokens: 3,
                            truncated: false,
                        },
                        Learned {
                            id: "learn-0b4a6ba6b5ca5f4f3fdc1a1c4fa4a3b8".to_owned(),
                            outcome: StoreOutcome {
                                created: true,
                                created_at_ms: concept.created_at_ms,
                                expires_at_ms: None,
                            },
                            tokens: 3,
                            truncated: false,
                        },
                    ]),
                ),
                &with(&response_fields, &[Field::LearnedList]),
            ),
        ),
        (
            "search-request",
            annotated(
                &request(
                    14,
                    Request::Search(Search {
                        concept_type: "note".to_owned(),
                        ..Search::new(
                            SearchQuery::Vector(
                                Vector::new(vec![0.5, -1.0, 0.25, 2.0], DIM).unwrap(),
                            ),
                            2,
                        )
                    }),
                ),
                &with(&request_fields, &[Field::SearchRequest]),
            ),
        ),
        (
            "search-response",
            annotated(
                &response(
                    14,
                    0x0D,
                    Response::Found(SearchResults {
                        exact: true,
                        hits: vec![
                            SearchHit {
                                id: ConceptId::new("doc-1", &limits()).unwrap(),
                                score: 1.0,
                                concept: None,
                            },
                            SearchHit {
                                id: ConceptId::new("doc-7", &limits()).unwrap(),
                                score: 0.5,
                                concept: None,
                            },
                        ],
                    }),
                ),
                &with(&response_fields, &[Field::SearchAnswer]),
            ),
        ),
        (
            "error-unknown-opcode",
            annotated(
                &[
                    &[0u8, 0, 0, 6, 1, 0x7f, 7, 0, 0, 0][..],
                    &response(
                        7,
                        0x7f,
                        Response::error(ErrorCode::UnknownOpcode, "unknown opcode 0x7f"),
                    ),
                ]
                .concat(),
                &with(
                    &[FrameLength, Header],
                    &with(&response_fields, &[U16("error code"), Str("message")]),
                ),
            ),
        ),
        (
            "error-dimension",
            annotated(
                &response(
                    8,
                    0x02,
                    Response::error(
                        ErrorCode::DimensionMismatch,
                        "embedding has 3 values, expected 256",
                    ),
                ),
                &with(&response_fields, &[U16("error code"), Str("message")]),
            ),
        ),
        (
            "error-frame-too-large",
            annotated(
                &response(
                    0,
                    0x00,
                    Response::error(
                        ErrorCode::FrameTooLarge,
                        "frame of 1818850164 bytes exceeds the maximum of 4194304 bytes",
                    ),
                ),
                &with(&response_fields, &[U16("error code"), Str("message")]),
            ),
        ),
    ]
}

fn protocol_md_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../PROTOCOL.md")
}

#[test]
fn protocol_md_hex_dumps_match_the_encoder() {
    let examples: Vec<(&'static str, String)> = examples()
        .into_iter()
        .map(|(name, (_, dump))| (name, dump))
        .collect();
    check_document(&protocol_md_path(), &examples, "UPDATE_PROTOCOL_MD");
}

#[test]
fn protocol_md_names_every_opcode_and_error_code() {
    let document = std::fs::read_to_string(protocol_md_path()).unwrap();
    for opcode in Opcode::ALL {
        let row = format!("| 0x{:02x} | {} |", opcode as u8, opcode.name());
        assert!(
            document.contains(&row),
            "PROTOCOL.md lacks the opcode row {row}"
        );
    }
    for code in ErrorCode::ALL {
        let row = format!("| {} | {} |", code.as_u16(), code.name());
        assert!(
            document.contains(&row),
            "PROTOCOL.md lacks the error code row {row}"
        );
    }
}

/// Lines for the text-mode fuzz target's seed corpus: every command, valid and not.
const TEXT_SEEDS: &[&str] = &[
    "HELP",
    "PING",
    "HEALTH",
    "STATS",
    "GET doc-1",
    "DEL doc-1",
    "TYPE note",
    "TYPE note 10 doc-0",
    "STORE doc-1 note hello world",
    "LEARN note the quick brown fox",
    "AUTH s3cret",
    "QUIT",
    "get",
    "TYPE note -1",
    "STORE doc-1",
];

/// The seed corpus of the fuzz targets (`fuzz/seeds/{request,response,text}/`) is these
/// examples' bytes; this test keeps the checked-in files equal to what the encoder writes now.
/// `UPDATE_FUZZ_SEEDS=1 cargo test -p sutra-protocol fuzz_seeds` rewrites them.
#[test]
fn fuzz_seeds_match_the_encoder() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, (bytes, _)) in examples() {
        let target = if name.ends_with("-request") {
            "request"
        } else {
            "response"
        };
        seeds.push((format!("{target}/{name}"), bytes));
    }
    for (index, line) in TEXT_SEEDS.iter().enumerate() {
        seeds.push((
            format!("text/{index:02}"),
            format!("{line}\r\n").into_bytes(),
        ));
    }
    let update = std::env::var_os("UPDATE_FUZZ_SEEDS").is_some();
    for (name, bytes) in seeds {
        let path = root.join(&name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let current = std::fs::read(&path).unwrap_or_default();
            assert!(
                current == bytes,
                "fuzz seed {name} differs from the encoder; see this test's docs"
            );
        }
    }
}
