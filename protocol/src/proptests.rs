//! Property tests: every message round-trips, arbitrary bytes never panic a decoder, and a
//! frame cut at any point waits for more bytes.

#![allow(
    clippy::indexing_slicing,
    reason = "tests index buffers they built themselves"
)]

use std::sync::Arc;

use bytes::BytesMut;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use crate::*;

const DIM: u32 = 8;

fn limits() -> Limits {
    Limits {
        vector_dimension: DIM,
        ..Limits::default()
    }
}

fn id() -> impl Strategy<Value = ConceptId> {
    "[a-zA-Z0-9_:./-]{1,40}".prop_map(|id| ConceptId::new(&id, &limits()).unwrap())
}

fn vector() -> impl Strategy<Value = Vector> {
    vec(-1.0e6_f32..1.0e6, DIM as usize).prop_map(|values| Vector::new(values, DIM).unwrap())
}

fn attributes() -> impl Strategy<Value = Attributes> {
    btree_map("\\PC{0,12}", "\\PC{0,24}", 0..6)
}

fn concept() -> impl Strategy<Value = Concept> {
    (
        id(),
        "\\PC{0,64}",
        "\\PC{0,16}",
        "\\PC{0,16}",
        attributes(),
        proptest::option::of(vector()),
        any::<u64>(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(
                id,
                content,
                concept_type,
                model,
                attributes,
                embedding,
                created_at_ms,
                expires_at_ms,
            )| Concept {
                id,
                content,
                concept_type,
                model,
                attributes,
                embedding,
                created_at_ms,
                expires_at_ms,
            },
        )
}

fn store() -> impl Strategy<Value = StoreConcept> {
    (
        id(),
        "\\PC{0,64}",
        "\\PC{0,16}",
        "\\PC{0,16}",
        attributes(),
        proptest::option::of(vector()),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(id, content, concept_type, model, attributes, embedding, ttl_seconds)| StoreConcept {
                id,
                content,
                concept_type,
                model,
                attributes,
                embedding,
                ttl_seconds,
            },
        )
}

fn learn() -> impl Strategy<Value = LearnConcept> {
    (
        proptest::option::of(id()),
        "\\PC{1,40}",
        "\\PC{0,16}",
        attributes(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(id, content, concept_type, attributes, ttl_seconds)| LearnConcept {
                id,
                content,
                concept_type,
                attributes,
                ttl_seconds,
            },
        )
}

fn learned() -> impl Strategy<Value = Learned> {
    (
        "[a-z0-9-]{1,40}",
        any::<bool>(),
        any::<u64>(),
        any::<Option<u64>>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(id, created, created_at_ms, expires_at_ms, tokens, truncated)| Learned {
                id,
                outcome: StoreOutcome {
                    created,
                    created_at_ms,
                    expires_at_ms,
                },
                tokens,
                truncated,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        learn().prop_map(Request::LearnConcept),
        vec(learn(), 1..4).prop_map(Request::LearnBatch),
        Just(Request::Health),
        Just(Request::Stats),
        "\\PC{1,32}".prop_map(|token| Request::Auth { token }),
        vec(id(), 1..8).prop_map(|ids| Request::GetMany { ids }),
        vec(store(), 1..4).prop_map(Request::StoreMany),
        "\\PC{0,16}".prop_map(|concept_type| Request::ClearType { concept_type }),
        id().prop_map(|id| Request::GetConceptById { id }),
        id().prop_map(|id| Request::Delete { id }),
        (
            "\\PC{0,16}",
            1..=Limits::DEFAULT_MAX_QUERY_LIMIT,
            "[a-z0-9]{0,20}"
        )
            .prop_map(|(concept_type, limit, cursor)| {
                Request::QueryByType(QueryByType {
                    concept_type,
                    limit,
                    cursor,
                })
            }),
        store().prop_map(Request::StoreConcept),
        search().prop_map(Request::Search),
    ]
}

fn search() -> impl Strategy<Value = Search> {
    (
        prop_oneof![
            vec(-1e3_f32..1e3, DIM as usize)
                .prop_map(|values| SearchQuery::Vector(Vector::new(values, DIM).unwrap())),
            "\\PC{1,40}".prop_map(SearchQuery::Text),
        ],
        1..=Limits::DEFAULT_MAX_SEARCH_K,
        "\\PC{0,16}",
        any::<bool>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(query, k, concept_type, exact, ef, include_concepts)| Search {
                query,
                k,
                concept_type,
                exact,
                ef,
                include_concepts,
            },
        )
}

fn response() -> impl Strategy<Value = (u8, Response)> {
    prop_oneof![
        (
            "\\PC{0,8}",
            "\\PC{0,12}",
            any::<u32>(),
            any::<u64>(),
            "\\PC{0,8}",
            any::<u64>(),
            "\\PC{0,12}"
        )
            .prop_map(
                |(status, role, vector_dimension, concepts, version, uptime_seconds, model)| {
                    (
                        0x01,
                        Response::Health(HealthInfo {
                            status,
                            role,
                            vector_dimension,
                            concepts,
                            version,
                            uptime_seconds,
                            model,
                        }),
                    )
                }
            ),
        (any::<bool>(), any::<u64>(), any::<Option<u64>>()).prop_map(
            |(created, created_at_ms, expires_at_ms)| {
                (
                    0x02,
                    Response::Stored(StoreOutcome {
                        created,
                        created_at_ms,
                        expires_at_ms,
                    }),
                )
            }
        ),
        concept().prop_map(|concept| (0x03, Response::Concept(Arc::new(concept)))),
        (vec(concept(), 0..4), "[a-z0-9]{0,20}").prop_map(|(concepts, next_cursor)| {
            (
                0x04,
                Response::Page(QueryPage {
                    concepts: concepts.into_iter().map(Arc::new).collect(),
                    next_cursor,
                }),
            )
        }),
        any::<bool>().prop_map(|existed| (0x05, Response::Deleted { existed })),
        vec(proptest::option::of(concept().prop_map(Arc::new)), 0..4)
            .prop_map(|concepts| (0x07, Response::Many(concepts))),
        vec((any::<bool>(), any::<u64>(), any::<Option<u64>>()), 0..6).prop_map(|outcomes| {
            let outcomes = outcomes
                .into_iter()
                .map(|(created, created_at_ms, expires_at_ms)| StoreOutcome {
                    created,
                    created_at_ms,
                    expires_at_ms,
                })
                .collect();
            (0x08, Response::StoredMany(outcomes))
        }),
        any::<u64>().prop_map(|removed| (0x09, Response::Cleared { removed })),
        Just((0x0c, Response::Authenticated)),
        vec(("[a-z0-9-]{1,20}", -1.0_f32..=1.0), 0..6).prop_map(|hits| (
            0x0D,
            Response::Found(SearchResults {
                exact: hits.len() % 2 == 0,
                hits: hits
                    .into_iter()
                    .map(|(id, score)| SearchHit {
                        id: ConceptId::parse(&id).unwrap(),
                        score,
                        concept: None,
                    })
                    .collect(),
            })
        )),
        learned().prop_map(|learned| (0x0A, Response::Learned(learned))),
        vec(learned(), 0..4).prop_map(|learned| (0x0B, Response::LearnedMany(learned))),
        (
            "\\PC{0,12}",
            any::<u32>(),
            vec(("[a-z_]{1,20}", any::<u64>()), 0..8)
        )
            .prop_map(|(role, vector_dimension, counters)| (
                0x06,
                Response::Stats(StatsSnapshot {
                    role,
                    vector_dimension,
                    counters
                })
            )),
        (
            any::<u8>(),
            proptest::sample::select(ErrorCode::ALL.to_vec()),
            "\\PC{0,40}"
        )
            .prop_map(|(opcode, code, message)| (opcode, Response::error(code, message))),
    ]
}

fn encode_request(frame: &RequestFrame) -> BytesMut {
    let mut dst = BytesMut::new();
    FrameCodec::new(limits().max_frame_bytes)
        .encode(frame, &mut dst)
        .unwrap();
    dst
}

proptest! {
    #[test]
    fn request_round_trips(request_id: u32, request in request()) {
        let frame = RequestFrame { request_id, request };
        let mut bytes = encode_request(&frame);
        prop_assert_eq!(bytes.first().copied(), Some(0));
        let payload = FrameCodec::new(limits().max_frame_bytes).decode(&mut bytes).unwrap().unwrap();
        prop_assert!(bytes.is_empty());
        prop_assert_eq!(decode_request(&payload, &limits()).unwrap(), frame);
    }

    #[test]
    fn response_round_trips(request_id: u32, (opcode, response) in response()) {
        let frame = ResponseFrame { request_id, opcode, response };
        let mut bytes = BytesMut::new();
        FrameCodec::new(limits().max_frame_bytes).encode(frame.clone(), &mut bytes).unwrap();
        let payload = FrameCodec::new(limits().max_frame_bytes).decode(&mut bytes).unwrap().unwrap();
        prop_assert_eq!(decode_response(&payload).unwrap(), frame);
    }

    #[test]
    fn encoded_len_is_exact(concept in concept()) {
        let mut dst = BytesMut::new();
        concept.encode(&mut dst).unwrap();
        prop_assert_eq!(concept.encoded_len(), dst.len());
    }

    #[test]
    fn any_bytes_decode_without_panicking(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes, &limits());
        let _ = decode_response(&bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = FrameCodec::new(1024);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        if let Ok(line) = std::str::from_utf8(&bytes) {
            let _ = text::parse_text_command(line, &limits());
        }
    }

    #[test]
    fn mutated_requests_decode_without_panicking(
        request in request(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode_request(&RequestFrame { request_id: 7, request }).split_off(FRAME_HEADER_BYTES).to_vec();
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        let _ = decode_request(&bytes, &limits());
        let _ = decode_response(&bytes);
    }

    #[test]
    fn every_prefix_of_a_frame_waits_for_more(request in request(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_request(&RequestFrame { request_id: 1, request });
        let cut = cut.index(bytes.len());
        let mut partial = BytesMut::from(&bytes[..cut]);
        let mut codec = FrameCodec::new(limits().max_frame_bytes);
        prop_assert!(codec.decode(&mut partial).unwrap().is_none());
        // Feeding the rest completes the same frame.
        partial.extend_from_slice(&bytes[cut..]);
        let payload = codec.decode(&mut partial).unwrap().unwrap();
        prop_assert!(decode_request(&payload, &limits()).is_ok());
    }

    #[test]
    fn truncated_payloads_are_errors_not_panics(request in request(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_request(&RequestFrame { request_id: 1, request });
        let payload = &bytes[FRAME_HEADER_BYTES..];
        let cut = cut.index(payload.len());
        prop_assert!(decode_request(&payload[..cut], &limits()).is_err());
    }
}

#[test]
fn oversized_length_is_rejected_before_any_allocation() {
    let mut codec = FrameCodec::new(1024);
    let mut buf = BytesMut::from(&[0x00, 0x00, 0x04, 0x01][..]);
    let error = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        error,
        FrameError::TooLarge {
            len: 1025,
            max: 1024
        }
    ));
    assert!(buf.capacity() < 1024);
    // Exactly at the limit is accepted (and waits for the body).
    let mut buf = BytesMut::from(&[0x00, 0x00, 0x04, 0x00][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
}

#[test]
fn text_is_a_huge_frame_not_a_huge_allocation() {
    // The public Sutra server read the four bytes `list` as a 1.8 GB length and reserved it.
    let mut codec = FrameCodec::new(Limits::DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::from(&b"list"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn frame_encoder_refuses_payloads_over_the_limit() {
    let mut codec = FrameCodec::new(64);
    let mut dst = BytesMut::new();
    let frame = ResponseFrame {
        request_id: 1,
        opcode: 0,
        response: Response::error(ErrorCode::Internal, "x".repeat(100)),
    };
    assert!(codec.encode(frame, &mut dst).is_err());
    assert!(
        dst.is_empty(),
        "a failed encode leaves the buffer unchanged"
    );
}

/// The payload of a store of id `a` with `values` as its vector and nothing else.
fn store_payload(request_id: u32, values: Vec<f32>) -> BytesMut {
    let dimension = u32::try_from(values.len()).unwrap();
    let store = StoreConcept {
        id: ConceptId::new("a", &limits()).unwrap(),
        content: String::new(),
        concept_type: String::new(),
        model: String::new(),
        attributes: Attributes::new(),
        embedding: Some(Vector::new(values, dimension).unwrap()),
        ttl_seconds: None,
    };
    let mut payload = BytesMut::new();
    RequestFrame {
        request_id,
        request: Request::StoreConcept(store),
    }
    .encode_payload(&mut payload)
    .unwrap();
    payload
}

#[test]
fn wrong_dimension_and_non_finite_values_are_rejected() {
    let payload = store_payload(9, vec![0.0; 3]);
    let error = decode_request(&payload, &limits()).unwrap_err();
    assert_eq!(
        error.error,
        DecodeError::DimensionMismatch {
            expected: DIM,
            got: 3
        }
    );
    assert_eq!(error.error.code(), ErrorCode::DimensionMismatch);
    assert_eq!(error.header.map(|header| header.request_id), Some(9));
    assert!(Vector::new(vec![f32::NAN; DIM as usize], DIM).is_err());
}

#[test]
fn a_non_finite_value_on_the_wire_is_refused_with_its_position() {
    let values: Vec<f32> = (0..u16::try_from(DIM).unwrap())
        .map(|index| f32::from(index) / 8.0)
        .collect();
    let payload = store_payload(3, values.clone());
    let decoded = decode_request(&payload, &limits()).unwrap();
    let Request::StoreConcept(store) = decoded.request else {
        panic!("not a store: {decoded:?}");
    };
    assert_eq!(store.embedding.unwrap().as_slice(), values.as_slice());
    // The vector is the payload's last 4 * DIM bytes before the absent TTL's one byte.
    let start = payload.len() - 1 - 4 * DIM as usize;
    let last = DIM as usize - 1;
    for (index, bad) in [
        (0, f32::NAN),
        (last / 2, f32::INFINITY),
        (last, f32::NEG_INFINITY),
    ] {
        let mut broken = payload.clone();
        broken[start + 4 * index..start + 4 * index + 4].copy_from_slice(&bad.to_le_bytes());
        let error = decode_request(&broken, &limits()).unwrap_err();
        assert_eq!(error.error, DecodeError::NonFiniteValue { index });
    }
}

#[test]
fn version_opcode_and_trailing_bytes_are_checked() {
    let limits = limits();
    let error = decode_request(&[2, 1, 0, 0, 0, 0], &limits).unwrap_err();
    assert_eq!(error.error.code(), ErrorCode::UnsupportedVersion);
    let error = decode_request(&[1, 0x7f, 5, 0, 0, 0], &limits).unwrap_err();
    assert_eq!(error.error, DecodeError::UnknownOpcode(0x7f));
    assert_eq!(error.header.map(|header| header.request_id), Some(5));
    let error = decode_request(&[1, 1, 0, 0, 0, 0, 0xaa], &limits).unwrap_err();
    assert_eq!(error.error.code(), ErrorCode::MalformedFrame);
    let error = decode_request(&[1, 1, 0], &limits).unwrap_err();
    assert!(error.header.is_none());
}

#[test]
fn bad_utf8_and_huge_counts_are_invalid_arguments() {
    let limits = limits();
    // GetConceptById with a 2-byte id that is not UTF-8.
    let error = decode_request(&[1, 3, 1, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xfe], &limits).unwrap_err();
    assert_eq!(error.error, DecodeError::InvalidUtf8 { field: "id" });
    // A string length of u32::MAX is refused against the limit, not allocated.
    let error = decode_request(&[1, 3, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], &limits).unwrap_err();
    assert!(matches!(
        error.error,
        DecodeError::TooLong { field: "id", .. }
    ));
    // A page announcing u32::MAX concepts in a tiny payload.
    let error = decode_response(&[1, 4, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(error, DecodeError::Truncated { .. }));
}

#[test]
fn id_limits_are_enforced_at_n_and_n_plus_one() {
    let limits = limits();
    let at_limit = "i".repeat(limits.max_id_bytes as usize);
    assert!(ConceptId::new(&at_limit, &limits).is_ok());
    let over = "i".repeat(limits.max_id_bytes as usize + 1);
    assert!(ConceptId::new(&over, &limits).is_err());
    assert_eq!(
        ConceptId::new("", &limits),
        Err(DecodeError::Empty { field: "id" })
    );
}

#[test]
fn batch_counts_are_checked_at_n_and_n_plus_one() {
    let limits = Limits {
        max_batch_items: 3,
        ..limits()
    };
    let ids = |count: usize| {
        (0..count)
            .map(|index| ConceptId::new(&format!("i{index}"), &limits).unwrap())
            .collect::<Vec<_>>()
    };
    let payload = |request: Request| {
        let mut dst = BytesMut::new();
        RequestFrame {
            request_id: 1,
            request,
        }
        .encode_payload(&mut dst)
        .unwrap();
        dst
    };
    assert!(decode_request(&payload(Request::GetMany { ids: ids(3) }), &limits).is_ok());
    let error = decode_request(&payload(Request::GetMany { ids: ids(4) }), &limits).unwrap_err();
    assert!(
        matches!(
            error.error,
            DecodeError::TooMany {
                field: "ids",
                count: 4,
                max: 3
            }
        ),
        "{error:?}"
    );
    let error =
        decode_request(&payload(Request::GetMany { ids: Vec::new() }), &limits).unwrap_err();
    assert_eq!(error.error, DecodeError::Empty { field: "ids" });
}
