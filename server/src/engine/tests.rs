use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sutra_protocol::{Attributes, ConceptId, Limits, QueryByType, StoreConcept, Vector};

use super::*;

fn id(value: &str) -> ConceptId {
    ConceptId::new(value, &Limits::default()).unwrap()
}

fn store_request(key: &str, concept_type: &str, ttl_seconds: Option<u64>) -> StoreConcept {
    StoreConcept {
        id: id(key),
        content: format!("content of {key}"),
        concept_type: concept_type.to_owned(),
        model: "test".to_owned(),
        attributes: Attributes::new(),
        embedding: Some(Vector::new(vec![0.25; 4], 4).unwrap()),
        ttl_seconds,
    }
}

fn engine_with(clock: Arc<ManualClock>, default_ttl: Option<Duration>) -> Engine {
    Engine::new(
        EngineConfig {
            default_ttl,
            max_page_bytes: 1 << 20,
        },
        clock,
    )
}

fn engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    (engine_with(Arc::clone(&clock), None), clock)
}

fn query(engine: &Engine, concept_type: &str, limit: u32, cursor: &str) -> (Vec<String>, String) {
    let page = engine.query_by_type(&QueryByType {
        concept_type: concept_type.to_owned(),
        limit,
        cursor: cursor.to_owned(),
    });
    (
        page.concepts
            .iter()
            .map(|concept| concept.id.to_string())
            .collect(),
        page.next_cursor,
    )
}

#[test]
fn store_then_get_returns_the_concept_with_server_time() {
    let (engine, _) = engine();
    let outcome = engine.store(store_request("a", "note", None)).unwrap();
    assert!(outcome.created);
    assert_eq!(outcome.created_at_ms, 1_000_000);
    assert_eq!(outcome.expires_at_ms, None);
    let concept = engine.get(&id("a")).unwrap();
    assert_eq!(concept.content, "content of a");
    assert_eq!(concept.created_at_ms, 1_000_000);
    assert_eq!(
        engine.get(&id("b")),
        Err(EngineError::NotFound { id: id("b") })
    );
}

#[test]
fn upsert_replaces_and_moves_the_type_index() {
    let (engine, _) = engine();
    engine.store(store_request("a", "note", None)).unwrap();
    let outcome = engine.store(store_request("a", "doc", None)).unwrap();
    assert!(!outcome.created);
    assert_eq!(query(&engine, "note", 10, "").0, Vec::<String>::new());
    assert_eq!(query(&engine, "doc", 10, "").0, vec!["a"]);
    assert_eq!(engine.counters().concepts, 1);
    engine.store.check_invariants();
}

#[test]
fn delete_reports_whether_the_concept_existed() {
    let (engine, _) = engine();
    engine.store(store_request("a", "note", None)).unwrap();
    assert_eq!(engine.delete(&id("a")), Ok(true));
    assert_eq!(engine.delete(&id("a")), Ok(false));
    assert!(engine.get(&id("a")).is_err());
    assert_eq!(engine.counters(), EngineCounters::default());
}

#[test]
fn ttl_expires_on_read_using_the_injected_clock() {
    let clock = Arc::new(ManualClock::new(5_000));
    let engine = engine_with(Arc::clone(&clock), Some(Duration::from_secs(60)));
    let outcome = engine.store(store_request("default", "t", None)).unwrap();
    assert_eq!(outcome.expires_at_ms, Some(65_000));
    engine.store(store_request("short", "t", Some(1))).unwrap();
    engine
        .store(store_request("forever", "t", Some(0)))
        .unwrap();
    clock.advance_ms(1_000);
    assert!(
        engine.get(&id("short")).is_err(),
        "expires exactly at its deadline"
    );
    assert!(engine.get(&id("default")).is_ok());
    clock.advance_ms(60_000);
    assert!(engine.get(&id("default")).is_err());
    assert!(engine.get(&id("forever")).is_ok());
    assert_eq!(query(&engine, "t", 10, "").0, vec!["forever"]);
    // Storing over an expired id counts as a creation.
    assert!(
        engine
            .store(store_request("short", "t", None))
            .unwrap()
            .created
    );
}

#[test]
fn query_pages_are_ordered_and_complete() {
    let (engine, _) = engine();
    for index in (0..25).rev() {
        engine
            .store(store_request(&format!("id-{index:02}"), "note", None))
            .unwrap();
    }
    engine.store(store_request("other", "doc", None)).unwrap();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (ids, next) = query(&engine, "note", 10, &cursor);
        pages += 1;
        seen.extend(ids);
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    let expected: Vec<String> = (0..25).map(|index| format!("id-{index:02}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
    // An exact multiple of the page size ends without an empty extra page.
    let (ids, next) = query(&engine, "note", 25, "");
    assert_eq!((ids.len(), next.as_str()), (25, ""));
}

#[test]
fn query_skips_concepts_deleted_between_pages_without_repeating() {
    let (engine, _) = engine();
    for key in ["a", "b", "c", "d", "e"] {
        engine.store(store_request(key, "t", None)).unwrap();
    }
    let (first, cursor) = query(&engine, "t", 2, "");
    assert_eq!(
        (first, cursor.as_str()),
        (vec!["a".to_owned(), "b".to_owned()], "b")
    );
    engine.delete(&id("c")).unwrap();
    engine.store(store_request("a2", "t", None)).unwrap(); // sorts before the cursor
    let (second, cursor) = query(&engine, "t", 2, &cursor);
    assert_eq!(
        (second, cursor.as_str()),
        (vec!["d".to_owned(), "e".to_owned()], "")
    );
}

#[test]
fn query_respects_the_page_byte_budget() {
    let clock = Arc::new(ManualClock::new(0));
    let one_concept = {
        let engine = engine_with(Arc::clone(&clock), None);
        engine.store(store_request("x0", "t", None)).unwrap();
        engine.get(&id("x0")).unwrap().encoded_len()
    };
    let engine = Engine::new(
        EngineConfig {
            default_ttl: None,
            max_page_bytes: one_concept * 2,
        },
        clock,
    );
    for key in ["x0", "x1", "x2"] {
        engine.store(store_request(key, "t", None)).unwrap();
    }
    assert_eq!(
        query(&engine, "t", 100, ""),
        (vec!["x0".to_owned(), "x1".to_owned()], "x1".to_owned())
    );
}

#[test]
fn writes_after_shutdown_are_refused_but_reads_work() {
    let (engine, _) = engine();
    engine.store(store_request("a", "t", None)).unwrap();
    engine.shutdown().unwrap();
    assert_eq!(
        engine.store(store_request("b", "t", None)),
        Err(EngineError::ShuttingDown)
    );
    assert_eq!(engine.delete(&id("a")), Err(EngineError::ShuttingDown));
    assert!(engine.get(&id("a")).is_ok());
}

#[test]
fn concurrent_writers_on_shared_ids_keep_map_and_index_consistent() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let engine = Arc::clone(&engine);
            scope.spawn(move || {
                for step in 0..2_000_u32 {
                    let key = format!("k{}", step % 37);
                    let concept_type = ["a", "b", "c"][((step + thread) % 3) as usize];
                    if step % 5 == 0 {
                        engine.delete(&id(&key)).unwrap();
                    } else {
                        engine
                            .store(store_request(&key, concept_type, None))
                            .unwrap();
                    }
                }
            });
        }
    });
    engine.store.check_invariants();
}

#[derive(Debug, Clone)]
enum Op {
    Store {
        key: u8,
        concept_type: u8,
        ttl_seconds: Option<u8>,
    },
    Delete {
        key: u8,
    },
    Get {
        key: u8,
    },
    Query {
        concept_type: u8,
        limit: u8,
    },
    Advance {
        seconds: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..16_u8, 0..3_u8, proptest::option::of(0..5_u8)).prop_map(
            |(key, concept_type, ttl_seconds)| Op::Store {
                key,
                concept_type,
                ttl_seconds
            }
        ),
        (0..16_u8).prop_map(|key| Op::Delete { key }),
        (0..16_u8).prop_map(|key| Op::Get { key }),
        (0..3_u8, 1..6_u8).prop_map(|(concept_type, limit)| Op::Query {
            concept_type,
            limit
        }),
        (0..4_u8).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

proptest! {
    /// The engine agrees with a plain BTreeMap model (id -> (type, expires_at)) after every
    /// operation, including full paged scans of each type.
    #[test]
    fn engine_matches_a_map_model(ops in proptest::collection::vec(op(), 1..120)) {
        let (engine, clock) = engine();
        let mut model: BTreeMap<String, (String, Option<u64>)> = BTreeMap::new();
        for op in ops {
            let now = clock.now_ms();
            let live = |entry: &(String, Option<u64>)| entry.1.is_none_or(|at| at > now);
            match op {
                Op::Store { key, concept_type, ttl_seconds } => {
                    let key = format!("k{key:02}");
                    let concept_type = format!("t{concept_type}");
                    let ttl = ttl_seconds.map(u64::from);
                    let outcome = engine.store(store_request(&key, &concept_type, ttl)).unwrap();
                    let was_live = model.get(&key).is_some_and(live);
                    prop_assert_eq!(outcome.created, !was_live);
                    let expires = ttl.filter(|seconds| *seconds > 0).map(|seconds| now + seconds * 1000);
                    model.insert(key, (concept_type, expires));
                }
                Op::Delete { key } => {
                    let key = format!("k{key:02}");
                    let was_live = model.remove(&key).as_ref().is_some_and(live);
                    prop_assert_eq!(engine.delete(&id(&key)).unwrap(), was_live);
                }
                Op::Get { key } => {
                    let key = format!("k{key:02}");
                    let expected = model.get(&key).filter(|entry| live(entry)).map(|entry| entry.0.clone());
                    prop_assert_eq!(engine.get(&id(&key)).ok().map(|concept| concept.concept_type.clone()), expected);
                }
                Op::Query { concept_type, limit } => {
                    let concept_type = format!("t{concept_type}");
                    let expected: Vec<String> = model
                        .iter()
                        .filter(|(_, entry)| entry.0 == concept_type && live(entry))
                        .map(|(key, _)| key.clone())
                        .collect();
                    let mut seen = Vec::new();
                    let mut cursor = String::new();
                    for _ in 0..100 {
                        let (ids, next) = query(&engine, &concept_type, u32::from(limit), &cursor);
                        prop_assert!(ids.len() <= usize::from(limit));
                        seen.extend(ids);
                        if next.is_empty() {
                            break;
                        }
                        cursor = next;
                    }
                    prop_assert_eq!(seen, expected);
                }
                Op::Advance { seconds } => clock.advance_ms(u64::from(seconds) * 1000),
            }
            engine.store.check_invariants();
        }
    }
}
