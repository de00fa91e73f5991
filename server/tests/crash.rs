//! Crash harness: `kill -9` the real server under write load, restart it, and check that
//! every acknowledged write is there, byte for byte, and no deleted id came back.
//!
//! Method: the `sutra-storage` binary runs on 127.0.0.1 (ephemeral port) over one data
//! directory with `WAL_FSYNC=always`, small log segments and frequent checkpoints (so kills
//! also land during segment rolls and checkpoints). Eight writers store and delete concepts
//! in their own key ranges, one request at a time, and record each acknowledgement. At a
//! random moment the harness sends SIGKILL. On restart it reads every key: a key must hold its
//! last acknowledged state, or the state of the one request that was in flight when the kill
//! came (which may or may not have been applied). The similarity index must agree: each
//! present key is found by its own vector at once (before the graph is rebuilt), and once it
//! is rebuilt its answers match the exact ones and name only present keys, scored by their
//! vectors now. Then the next cycle begins.
//!
//! A `kill -9` keeps the page cache, so this catches lost writes and recovery bugs but not a
//! missing fsync; the simulated disk in `sutra-wal` covers that.
//!
//! `cargo test -p sutra-server --test crash -- --cycles 200 [--seed N]`; CI runs the default
//! 20 cycles. The seed is printed so a failure can be replayed.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failed expectation is a failed test"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sutra_client::sutra_protocol::{
    Attributes, ConceptId, ErrorCode, Search, SearchQuery, StoreConcept, Vector,
};
use sutra_client::{Client, ClientConfig};

const BINARY: &str = env!("CARGO_BIN_EXE_sutra-storage");
const WRITERS: u64 = 8;
const KEYS_PER_WRITER: u64 = 64;
const DIMENSION: u32 = 16;

/// What a key holds: `None` = absent.
type State = Option<Value>;

#[derive(Debug, Clone, PartialEq)]
struct Value {
    content: String,
    attributes: Attributes,
    embedding: Vec<f32>,
}

#[derive(Debug, Default, Clone)]
struct Key {
    acknowledged: State,
    /// The request in flight when the server died, if any.
    in_flight: Option<State>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The server process; killed if the harness panics, so no server outlives a failed run.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &std::path::Path) -> (ServerProcess, String) {
    let mut child = Command::new(BINARY)
        .env_clear()
        .env("RUST_LOG", "info")
        .env("STORAGE_PORT", "0")
        .env("STORAGE_PATH", dir)
        .env("VECTOR_DIMENSION", DIMENSION.to_string())
        .env("WAL_FSYNC", "always")
        .env("MAX_FRAME_BYTES", "65536")
        .env("MAX_CONTENT_BYTES", "16384")
        .env("MAX_ATTRIBUTES", "8")
        .env("MAX_ATTRIBUTE_BYTES", "4096")
        .env("WAL_SEGMENT_BYTES", "262144")
        .env("CHECKPOINT_INTERVAL_SECS", "1")
        .env("CHECKPOINT_WAL_BYTES", "131072")
        // Searches go through the graph however few vectors there are.
        .env("SEARCH_EXACT_BELOW", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("listening") {
            let addr = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("addr="))
                .expect("addr field")
                .to_owned();
            std::thread::spawn(move || lines.for_each(drop));
            return (ServerProcess(child), addr);
        }
        log.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not start:\n{}", log.join("\n"));
}

fn value(rng: &mut Rng, cycle: u64, writer: u64, sequence: u64) -> Value {
    let size = 1 + usize::try_from(rng.below(2000)).unwrap_or(0);
    let content = format!("c{cycle}w{writer}s{sequence}:{}", "x".repeat(size));
    let attributes = Attributes::from([
        ("sequence".to_owned(), sequence.to_string()),
        ("writer".to_owned(), writer.to_string()),
    ]);
    // Random directions, so that the nearest vector to a key's own is that key's.
    let embedding = direction(rng);
    Value {
        content,
        attributes,
        embedding,
    }
}

/// A random vector, each value in -1..=1 in steps of 0.001.
fn direction(rng: &mut Rng) -> Vec<f32> {
    #[expect(clippy::cast_precision_loss, reason = "test data")]
    (0..DIMENSION)
        .map(|_| rng.below(2_001) as f32 / 1_000.0 - 1.0)
        .collect()
}

fn id(writer: u64, key: u64) -> String {
    format!("w{writer}-k{key}")
}

/// One writer: sequential stores and deletes in its own key range until the server dies.
async fn write_until_killed(
    client: Client,
    model: Arc<Mutex<BTreeMap<String, Key>>>,
    mut rng: Rng,
    cycle: u64,
    writer: u64,
) -> u64 {
    let mut acknowledged = 0;
    for sequence in 0.. {
        let key = id(writer, rng.below(KEYS_PER_WRITER));
        let next: State = if rng.below(4) == 0 {
            None
        } else {
            Some(value(&mut rng, cycle, writer, sequence))
        };
        model
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .in_flight = Some(next.clone());
        let result = match &next {
            Some(value) => {
                let mut store =
                    StoreConcept::new(ConceptId::parse(&key).unwrap(), value.content.clone());
                store.concept_type = format!("writer-{writer}");
                store.attributes = value.attributes.clone();
                store.embedding = Some(Vector::new(value.embedding.clone(), DIMENSION).unwrap());
                client.store_concept(store).await.map(drop)
            }
            None => client.delete_concept(&key).await.map(drop),
        };
        match result {
            Ok(()) => {
                let mut model = model.lock().unwrap();
                let entry = model.get_mut(&key).unwrap();
                entry.acknowledged = next;
                entry.in_flight = None;
                acknowledged += 1;
            }
            // The server is gone (or refusing after a kill); the request stays in flight.
            Err(_) => return acknowledged,
        }
    }
    acknowledged
}

/// The identifying head of a value's content, for failure messages.
fn summary(value: &Value) -> &str {
    value.content.split(':').next().unwrap_or_default()
}

/// Reads every key and checks it against the model; then the model adopts what was read.
async fn verify(addr: &str, model: &Mutex<BTreeMap<String, Key>>, cycle: u64) {
    let client = Client::connect(addr.to_owned())
        .await
        .expect("connects after restart");
    // The writers are stopped; work on a copy so no lock is held across the reads.
    let expected = model.lock().unwrap().clone();
    let mut observed = BTreeMap::new();
    for (key, entry) in expected {
        let actual: State = match client.get_concept_by_id(&key).await {
            Ok(concept) => Some(Value {
                content: concept.content.clone(),
                attributes: concept.attributes.clone(),
                embedding: concept
                    .embedding
                    .as_ref()
                    .map(|vector| vector.as_slice().to_vec())
                    .unwrap_or_default(),
            }),
            Err(error) if error.code() == Some(ErrorCode::NotFound) => None,
            Err(error) => panic!("cycle {cycle}: reading {key}: {error}"),
        };
        let allowed = actual == entry.acknowledged
            || entry
                .in_flight
                .as_ref()
                .is_some_and(|in_flight| *in_flight == actual);
        assert!(
            allowed,
            "cycle {cycle}: {key} holds {:?}, but its last acknowledged state is {:?} (in flight: {:?})",
            actual.as_ref().map(summary),
            entry.acknowledged.as_ref().map(summary),
            entry.in_flight.as_ref().map(|state| state.as_ref().map(summary)),
        );
        observed.insert(
            key,
            Key {
                acknowledged: actual,
                in_flight: None,
            },
        );
    }
    check_search(&client, &observed, cycle).await;
    *model.lock().unwrap() = observed;
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn search_for(vector: &[f32], k: u32, exact: bool) -> Search {
    Search {
        exact,
        ef: 200,
        ..Search::new(
            SearchQuery::Vector(Vector::new(vector.to_vec(), DIMENSION).unwrap()),
            k,
        )
    }
}

/// The index after a restart: present keys found by their own vectors at once, then (graph
/// rebuilt) recall@10 against the exact answer, and only present keys, scored as they are now.
async fn check_search(client: &Client, observed: &BTreeMap<String, Key>, cycle: u64) {
    let present: BTreeMap<&str, &[f32]> = observed
        .iter()
        .filter_map(|(key, entry)| {
            Some((
                key.as_str(),
                entry.acknowledged.as_ref()?.embedding.as_slice(),
            ))
        })
        .collect();
    for (key, vector) in present.iter().step_by(7) {
        let found = client.search(search_for(vector, 1, false)).await.unwrap();
        let first = found.hits.first().map(|hit| hit.id.as_str());
        assert_eq!(
            first,
            Some(*key),
            "cycle {cycle}: {key}'s own vector finds {first:?}"
        );
    }
    let start = Instant::now();
    while client
        .stats()
        .await
        .unwrap()
        .counters
        .iter()
        .any(|(name, value)| name == "index_pending" && *value > 0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cycle {cycle}: the index never caught up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rng = Rng(cycle + 1);
    let (mut hits, mut wanted) = (0, 0);
    for _ in 0..20 {
        let query = direction(&mut rng);
        let truth = client.search(search_for(&query, 10, true)).await.unwrap();
        let found = client.search(search_for(&query, 10, false)).await.unwrap();
        for hit in &found.hits {
            let vector = present.get(hit.id.as_str()).unwrap_or_else(|| {
                panic!(
                    "cycle {cycle}: the index found {}, which is not present",
                    hit.id.as_str()
                )
            });
            assert!(
                (hit.score - cosine(&query, vector)).abs() < 1e-4,
                "cycle {cycle}: {} scored from another vector",
                hit.id.as_str()
            );
        }
        let truth: Vec<&str> = truth.hits.iter().map(|hit| hit.id.as_str()).collect();
        wanted += truth.len();
        hits += found
            .hits
            .iter()
            .filter(|hit| truth.contains(&hit.id.as_str()))
            .count();
    }
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    let recall = if wanted == 0 {
        1.0
    } else {
        hits as f64 / wanted as f64
    };
    assert!(
        recall >= 0.95,
        "cycle {cycle}: recall@10 after the restart {recall}"
    );
}

fn parse_args() -> (u64, u64) {
    let args: Vec<String> = std::env::args().collect();
    let value_of = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|index| args.get(index + 1))
            .and_then(|value| value.parse().ok())
    };
    let cycles = value_of("--cycles")
        .or_else(|| {
            std::env::var("CRASH_CYCLES")
                .ok()
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(20);
    let seed = value_of("--seed").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| u64::from(since.subsec_nanos()))
    });
    (cycles, seed)
}

fn main() {
    let (cycles, seed) = parse_args();
    // `cargo test --workspace -- <filter>` passes filters to every test binary; honour
    // `--list` so test listings work.
    if std::env::args().any(|arg| arg == "--list") {
        println!("crash_harness: test");
        return;
    }
    println!("crash harness: {cycles} kill -9 cycles, seed {seed} (replay with --seed {seed})");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model: Arc<Mutex<BTreeMap<String, Key>>> = Arc::default();
    let mut rng = Rng(seed);
    let mut total_acknowledged = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let (mut child, addr) = start_server(dir.path());
        runtime.block_on(async {
            verify(&addr, &model, cycle).await;
            let config = ClientConfig {
                request_timeout: Duration::from_secs(10),
                ..ClientConfig::default()
            };
            let mut writers = Vec::new();
            for writer in 0..WRITERS {
                let client = Client::connect_with(addr.clone(), config.clone())
                    .await
                    .expect("connects");
                let writer_rng = Rng(rng.next());
                writers.push(tokio::spawn(write_until_killed(
                    client,
                    Arc::clone(&model),
                    writer_rng,
                    cycle,
                    writer,
                )));
            }
            tokio::time::sleep(Duration::from_millis(100 + rng.below(700))).await;
            child.0.kill().expect("SIGKILL");
            let _ = child.0.wait();
            for writer in writers {
                total_acknowledged += writer.await.unwrap();
            }
        });
    }
    // A last restart verifies the final kill, then a clean shutdown must exit 0.
    let (mut child, addr) = start_server(dir.path());
    runtime.block_on(verify(&addr, &model, cycles));
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert_eq!(
        exit.code(),
        Some(0),
        "clean shutdown after the crash cycles"
    );
    let present = model
        .lock()
        .unwrap()
        .values()
        .filter(|entry| entry.acknowledged.is_some())
        .count();
    println!(
        "crash harness: {cycles} cycles in {:.1?}, {total_acknowledged} acknowledged writes, 0 lost; {present} keys present at the end",
        started.elapsed()
    );
    println!("crash: 1 passed, 0 failed");
}
