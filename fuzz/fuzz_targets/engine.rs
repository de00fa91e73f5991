//! The engine driven by arbitrary operation sequences against a plain map model, in the
//! manner of redb's fuzzer: stores (with TTLs and vectors), batch stores, gets, deletes,
//! type queries, clearing a type, the clock moving, the reaper, checkpoints, crashes (the
//! engine dropped without a shutdown, as a killed process leaves its files) and clean
//! restarts, all on a real data directory (on tmpfs when there is one).
//!
//! Unbounded, the engine must equal the model after every step. With `MAX_CONCEPTS` it may
//! hold less (evictions), never more, and never anything the model does not.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sutra_engine::{
    Capacity, CheckpointConfig, Clock, Durability, Engine, EngineConfig, EngineError, PersistConfig,
    EvictionPolicy, IndexConfig, IndexKind, ManualClock,
};
use sutra_protocol::{Attributes, ConceptId, Limits, QueryByType, StoreConcept, Vector};
use sutra_wal::{FsyncPolicy, WalConfig};

const KEYS: u8 = 12;
const TYPES: u8 = 3;
const DIMENSION: u32 = 4;

#[derive(Arbitrary, Debug)]
enum Op {
    Store {
        key: u8,
        kind: u8,
        content: u8,
        ttl_seconds: Option<u8>,
        vector: Option<u8>,
    },
    StoreMany(Vec<(u8, u8, u8)>),
    Get(u8),
    GetMany(Vec<u8>),
    Delete(u8),
    Query {
        kind: u8,
        limit: u8,
    },
    ClearType(u8),
    Advance {
        seconds: u8,
    },
    Reap(u8),
    Checkpoint,
    Crash,
    Restart,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// `MAX_CONCEPTS` (1 + this % 8) when present; LRU or `none` by `lru`.
    bound: Option<u8>,
    lru: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq)]
struct Model {
    kind: String,
    content: String,
    vector: Option<Vec<f32>>,
    expires_at_ms: Option<u64>,
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    capacity: Option<Capacity>,
    engine: Option<Engine>,
    model: BTreeMap<String, Model>,
}

fn key(k: u8) -> String {
    format!("k{:02}", k % KEYS)
}

fn kind(t: u8) -> String {
    format!("t{}", t % TYPES)
}

fn id(key: &str) -> ConceptId {
    ConceptId::new(key, &Limits::default()).expect("a short id")
}

fn vector(seed: u8) -> Vec<f32> {
    (0..DIMENSION)
        .map(|i| f32::from(seed) - i as f32 * 0.5)
        .collect()
}

impl Harness {
    fn config(&self) -> EngineConfig {
        EngineConfig {
            default_ttl: None,
            max_page_bytes: 1 << 20,
            vector_dimension: DIMENSION,
            durability: Durability::Persistent(PersistConfig {
                data_dir: self.dir.path().to_path_buf(),
                wal: WalConfig {
                    segment_bytes: 64 * 1024,
                    max_record_bytes: 16 * 1024,
                    fsync: FsyncPolicy::Never,
                    ..WalConfig::default()
                },
                checkpoint: CheckpointConfig {
                    interval: Duration::from_secs(3600),
                    wal_bytes: 1 << 30,
                },
                mmap_vectors: true,
            }),
            capacity: self.capacity,
            // No HNSW index: each open would start its indexer threads, thousands a second
            // here. The index has its own tests under concurrent change (engine/src/tests.rs).
            index: IndexConfig::new(IndexKind::Exact),
        }
    }

    fn open(&mut self) {
        let engine = Engine::open(self.config(), Arc::clone(&self.clock) as Arc<dyn Clock>)
            .expect("the engine reopens its own directory");
        self.engine = Some(engine);
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("open")
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn live(&self, key: &str) -> Option<&Model> {
        let now = self.now();
        self.model
            .get(key)
            .filter(|m| m.expires_at_ms.is_none_or(|at| at > now))
    }

    fn request(
        &self,
        key: &str,
        kind: String,
        content: u8,
        ttl: Option<u8>,
        vector_seed: Option<u8>,
    ) -> StoreConcept {
        StoreConcept {
            id: id(key),
            content: format!("content {content}"),
            concept_type: kind,
            model: "fuzz".to_owned(),
            attributes: Attributes::new(),
            embedding: vector_seed
                .map(|seed| Vector::new(vector(seed), DIMENSION).expect("dimension")),
            ttl_seconds: ttl.map(|ttl| u64::from(ttl % 20) + 1),
        }
    }

    fn remember(&mut self, request: &StoreConcept) {
        let expires_at_ms = request.ttl_seconds.map(|ttl| self.now() + ttl * 1000);
        self.model.insert(
            request.id.to_string(),
            Model {
                kind: request.concept_type.clone(),
                content: request.content.clone(),
                vector: request.embedding.as_ref().map(|v| v.as_slice().to_vec()),
                expires_at_ms,
            },
        );
    }

    fn bounded(&self) -> bool {
        self.capacity.is_some()
    }

    /// Every key: the engine's answer agrees with the model's.
    fn check(&self) {
        let mut held = 0;
        for k in 0..KEYS {
            let key = key(k);
            let expected = self.live(&key);
            match self.engine().get(&id(&key)) {
                Ok(concept) => {
                    held += 1;
                    let expected =
                        expected.unwrap_or_else(|| panic!("{key} is held but not in the model"));
                    assert_eq!(concept.concept_type, expected.kind, "{key}");
                    assert_eq!(concept.content, expected.content, "{key}");
                    assert_eq!(concept.expires_at_ms, expected.expires_at_ms, "{key}");
                    let vector = concept.embedding.as_ref().map(|v| v.as_slice().to_vec());
                    assert_eq!(vector, expected.vector, "{key}");
                }
                Err(EngineError::NotFound { .. }) => {
                    assert!(
                        self.bounded() || expected.is_none(),
                        "{key} is missing but live in the model"
                    );
                }
                Err(error) => panic!("get {key}: {error}"),
            }
        }
        if let Some(capacity) = self.capacity {
            assert!(
                held <= capacity.max_concepts,
                "{held} held above MAX_CONCEPTS"
            );
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Store {
                key: k,
                kind: t,
                content,
                ttl_seconds,
                vector,
            } => {
                let key = key(k);
                let request = self.request(&key, kind(t), content, ttl_seconds, vector);
                let was_live = self.live(&key).is_some();
                match self
                    .engine()
                    .store(request.clone())
                    .and_then(|p| p.wait_blocking())
                {
                    Ok(outcome) => {
                        if !self.bounded() {
                            assert_eq!(outcome.created, !was_live, "created for {key}");
                        }
                        self.remember(&request);
                    }
                    Err(EngineError::Full { .. }) if self.bounded() => {}
                    Err(error) => panic!("store {key}: {error}"),
                }
            }
            Op::StoreMany(items) => {
                let requests: Vec<StoreConcept> = items
                    .iter()
                    .take(8)
                    .map(|&(k, t, content)| {
                        self.request(&key(k), kind(t), content, None, Some(content))
                    })
                    .collect();
                if requests.is_empty() {
                    return;
                }
                match self
                    .engine()
                    .store_many(requests.clone())
                    .and_then(|p| p.wait_blocking())
                {
                    Ok(outcomes) => {
                        assert_eq!(outcomes.len(), requests.len());
                        for (request, outcome) in requests.iter().zip(outcomes) {
                            let was_live = self.live(request.id.as_str()).is_some();
                            if !self.bounded() {
                                assert_eq!(
                                    outcome.created, !was_live,
                                    "created for {}",
                                    request.id
                                );
                            }
                            self.remember(request);
                        }
                    }
                    // A bounded store refuses a batch with more new ids than MAX_CONCEPTS.
                    Err(EngineError::Full { .. } | EngineError::Invalid(_)) if self.bounded() => {}
                    Err(error) => panic!("store_many: {error}"),
                }
            }
            Op::Get(k) => {
                let key = key(k);
                let got = self.engine().get(&id(&key)).ok();
                if !self.bounded() {
                    assert_eq!(got.is_some(), self.live(&key).is_some(), "get {key}");
                }
            }
            Op::GetMany(keys) => {
                let ids: Vec<ConceptId> = keys.iter().take(16).map(|&k| id(&key(k))).collect();
                let got = self.engine().get_many(&ids);
                assert_eq!(got.len(), ids.len());
                for (id, concept) in ids.iter().zip(got) {
                    let live = self.live(id.as_str()).is_some();
                    match concept {
                        Some(concept) => assert!(
                            live,
                            "get_many returned {id}, not live in the model {}",
                            concept.id
                        ),
                        None => assert!(self.bounded() || !live, "get_many lost {id}"),
                    }
                }
            }
            Op::Delete(k) => {
                let key = key(k);
                let was_live = self.live(&key).is_some();
                let existed = self
                    .engine()
                    .delete(&id(&key))
                    .and_then(|p| p.wait_blocking())
                    .unwrap_or_else(|error| panic!("delete {key}: {error}"));
                if !self.bounded() {
                    assert_eq!(existed, was_live, "delete {key}");
                }
                self.model.remove(&key);
            }
            Op::Query { kind: t, limit } => {
                let kind = kind(t);
                let limit = u32::from(limit % 5) + 1;
                let mut listed = Vec::new();
                let mut cursor = String::new();
                for _ in 0..=KEYS {
                    let page = self.engine().query_by_type(&QueryByType {
                        concept_type: kind.clone(),
                        limit,
                        cursor: cursor.clone(),
                    });
                    assert!(page.concepts.len() <= limit as usize);
                    listed.extend(page.concepts.iter().map(|c| c.id.to_string()));
                    if page.next_cursor.is_empty() {
                        break;
                    }
                    cursor = page.next_cursor;
                }
                let now = self.now();
                let expected: Vec<String> = self
                    .model
                    .iter()
                    .filter(|(_, m)| m.kind == kind && m.expires_at_ms.is_none_or(|at| at > now))
                    .map(|(key, _)| key.clone())
                    .collect();
                if self.bounded() {
                    assert!(
                        listed.iter().all(|key| expected.contains(key)),
                        "{listed:?} ⊄ {expected:?}"
                    );
                } else {
                    assert_eq!(listed, expected, "query {kind}");
                }
            }
            Op::ClearType(t) => {
                let kind = kind(t);
                let removed = self
                    .engine()
                    .clear_type(kind.clone())
                    .and_then(|p| p.wait_blocking())
                    .unwrap_or_else(|error| panic!("clear_type {kind}: {error}"));
                let now = self.now();
                let live = self
                    .model
                    .values()
                    .filter(|m| m.kind == kind && m.expires_at_ms.is_none_or(|at| at > now))
                    .count() as u64;
                if !self.bounded() {
                    assert_eq!(removed, live, "clear_type {kind}");
                }
                self.model.retain(|_, m| m.kind != kind);
            }
            Op::Advance { seconds } => self.clock.advance_ms(u64::from(seconds % 30) * 1000),
            Op::Reap(max) => {
                self.engine().reap_expired(usize::from(max % 4) + 1);
                // The Expire records are applied on the log's thread; a barrier write (a
                // delete of an id never stored) waits for them.
                self.engine()
                    .delete(&id("barrier"))
                    .and_then(|p| p.wait_blocking())
                    .expect("barrier");
            }
            Op::Checkpoint => self.engine().checkpoint().expect("checkpoint"),
            Op::Crash => {
                drop(self.engine.take());
                self.open();
            }
            Op::Restart => {
                self.engine().shutdown().expect("shutdown");
                drop(self.engine.take());
                self.open();
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let base = std::path::Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let capacity = input.bound.map(|bound| Capacity {
        max_concepts: u64::from(bound % 8) + 1,
        policy: if input.lru {
            EvictionPolicy::Lru
        } else {
            EvictionPolicy::None
        },
    });
    let mut harness = Harness {
        dir,
        clock: Arc::new(ManualClock::new(1_000_000)),
        capacity,
        engine: None,
        model: BTreeMap::new(),
    };
    harness.open();
    for op in input.ops.into_iter().take(64) {
        harness.step(op);
        harness.check();
    }
    if let Some(engine) = harness.engine.take() {
        engine.shutdown().expect("shutdown");
    }
});
