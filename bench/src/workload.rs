//! Request generation without allocation: each request kind is encoded once into a template
//! frame, and each request copies the template and patches the request id, the 12 digits of
//! its key and (with vectors from a file) the vector's values in place.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::BytesMut;
use sutra_protocol::{
    Attributes, ConceptId, FrameCodec, QueryByType, Request, RequestFrame, Search, SearchQuery,
    StoreConcept, Vector, FRAME_HEADER_BYTES, MAX_FRAME_BYTES_CAP,
};
use tokio_util::codec::Encoder;

use crate::args::Test;

/// Prefix of every benchmark id; 12 digits follow, as redis-benchmark's `key:__rand_int__`.
pub const KEY_PREFIX: &str = "key:";
/// Digits after [`KEY_PREFIX`].
pub const KEY_DIGITS: usize = 12;
/// Offset of the request id (u32 LE) in a frame: after the length prefix, version and opcode.
const REQUEST_ID_OFFSET: usize = FRAME_HEADER_BYTES + 2;

/// What a request was, to tell a miss from an error when its answer comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A store: only success counts.
    Store,
    /// A get: NotFound is a miss.
    Get,
    /// A delete: NotFound is a miss.
    Delete,
    /// A query page.
    Query,
    /// A GetMany (misses inside it are part of a successful answer).
    GetMany,
    /// A StoreMany.
    StoreMany,
    /// A Search.
    Search,
}

impl Kind {
    /// Whether a NotFound answer is a miss rather than an error.
    pub fn not_found_is_miss(self) -> bool {
        matches!(self, Kind::Get | Kind::Delete)
    }
}

/// Vectors read from a file of little-endian f32 values, `dimension` a vector, back to back
/// (what `bench/ann_bench.py` writes), kept as the bytes a frame carries them in.
#[derive(Clone)]
pub struct VectorFile {
    bytes: Arc<[u8]>,
    row_bytes: usize,
}

impl std::fmt::Debug for VectorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorFile")
            .field("vectors", &self.len())
            .field("row_bytes", &self.row_bytes)
            .finish_non_exhaustive()
    }
}

impl VectorFile {
    /// Reads `path`: a whole number of `dimension`-value vectors, at least one, every value
    /// finite.
    pub fn read(path: &Path, dimension: u32) -> anyhow::Result<VectorFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        VectorFile::new(bytes, dimension).with_context(|| format!("{}", path.display()))
    }

    /// The vectors in `bytes`, checked as [`VectorFile::read`] says.
    pub fn new(bytes: Vec<u8>, dimension: u32) -> anyhow::Result<VectorFile> {
        let row_bytes = dimension as usize * 4;
        if row_bytes == 0 {
            bail!("vectors need a dimension (the server stores none)");
        }
        if bytes.is_empty() || !bytes.len().is_multiple_of(row_bytes) {
            bail!(
                "{} bytes are not a whole number of {dimension}-value f32 vectors ({row_bytes} \
                 bytes each)",
                bytes.len()
            );
        }
        if let Some(at) = bytes.chunks_exact(4).position(|value| {
            !f32::from_le_bytes([value[0], value[1], value[2], value[3]]).is_finite()
        }) {
            bail!("value {at} is not a finite number");
        }
        Ok(VectorFile {
            bytes: bytes.into(),
            row_bytes,
        })
    }

    /// Vectors in the file.
    pub fn len(&self) -> u64 {
        (self.bytes.len() / self.row_bytes) as u64
    }

    /// Whether there are none (never, once read).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes of vector `index` modulo their number.
    fn row(&self, index: u64) -> &[u8] {
        #[expect(clippy::cast_possible_truncation, reason = "below the vector count")]
        let start = (index % self.len()) as usize * self.row_bytes;
        &self.bytes[start..start + self.row_bytes]
    }
}

/// One encoded frame with the places to patch.
#[derive(Debug, Clone)]
struct Template {
    frame: Vec<u8>,
    /// Offset of the first digit of each key (ids or cursor).
    key_digits: Vec<usize>,
    /// Offset of the vector's values, when the frame carries one.
    vector_at: Option<usize>,
}

impl Template {
    /// `request` encoded, with the offsets of its keys and of `vector` (the request's vector
    /// values, little-endian, when it has one).
    fn with_vector(request: Request, vector: Option<&[u8]>) -> anyhow::Result<Template> {
        let mut template = Template::new(request)?;
        if let Some(vector) = vector.filter(|vector| !vector.is_empty()) {
            template.vector_at = template
                .frame
                .windows(vector.len())
                .position(|window| window == vector);
            if template.vector_at.is_none() {
                bail!("the encoded request does not carry its vector's values as they are");
            }
        }
        Ok(template)
    }

    fn new(request: Request) -> anyhow::Result<Template> {
        let mut frame = BytesMut::new();
        FrameCodec::new(MAX_FRAME_BYTES_CAP).encode(
            RequestFrame {
                request_id: 0,
                request,
            },
            &mut frame,
        )?;
        let placeholder = key(0);
        let key_digits = frame
            .windows(placeholder.len())
            .enumerate()
            .filter(|(_, window)| *window == placeholder.as_bytes())
            .map(|(start, _)| start + KEY_PREFIX.len())
            .collect();
        Ok(Template {
            frame: frame.to_vec(),
            key_digits,
            vector_at: None,
        })
    }

    /// Writes `vector` (as many bytes as the template's) over the vector of `frame`, a copy of
    /// this template.
    fn patch_vector(&self, frame: &mut [u8], vector: &[u8]) {
        if let Some(at) = self.vector_at {
            if let Some(values) = frame.get_mut(at..at + vector.len()) {
                values.copy_from_slice(vector);
            }
        }
    }

    /// Appends the frame with `request_id`, giving key number `i` the value `key_index(i)`.
    fn append(&self, request_id: u32, mut key_index: impl FnMut(u64) -> u64, dst: &mut Vec<u8>) {
        let start = dst.len();
        dst.extend_from_slice(&self.frame);
        let frame = &mut dst[start..];
        frame[REQUEST_ID_OFFSET..REQUEST_ID_OFFSET + 4].copy_from_slice(&request_id.to_le_bytes());
        for (i, &offset) in (0u64..).zip(&self.key_digits) {
            write_digits(&mut frame[offset..offset + KEY_DIGITS], key_index(i));
        }
    }

    /// Frame length in bytes.
    fn len(&self) -> usize {
        self.frame.len()
    }
}

/// The id of key number `index`: `key:` and 12 digits.
pub fn key(index: u64) -> String {
    format!("{KEY_PREFIX}{index:0KEY_DIGITS$}")
}

/// Writes `value` as zero-padded decimal into `dst` (its length is the width); digits beyond
/// the width are dropped (keyspaces are bounded to 10^12).
fn write_digits(dst: &mut [u8], mut value: u64) {
    for digit in dst.iter_mut().rev() {
        // `value % 10` is below 10, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let low = (value % 10) as u8;
        *digit = b'0' + low;
        value /= 10;
    }
}

/// What the generator needs to know about the stored concepts.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Content bytes.
    pub content_bytes: usize,
    /// Vector dimension; 0 for none.
    pub dimension: u32,
    /// Concept type.
    pub concept_type: String,
    /// Page size of queries.
    pub query_limit: u32,
    /// Items per GetMany and StoreMany.
    pub batch: u32,
    /// Results per Search.
    pub search_k: u32,
    /// Searches compare every stored vector.
    pub exact: bool,
    /// Search breadth of index searches (0: the server's).
    pub ef: u32,
    /// Stored vectors (key i gets vector i); `None`: one fixed vector.
    pub vectors: Option<VectorFile>,
    /// Search queries, in turn; `None`: the fixed vector.
    pub queries: Option<VectorFile>,
}

/// The encoded templates of every request kind; shared by all connections.
#[derive(Debug, Clone)]
pub struct Templates {
    store: Template,
    get: Template,
    delete: Template,
    query: Template,
    get_many: Template,
    store_many: Template,
    search: Template,
    vectors: Option<VectorFile>,
    queries: Option<VectorFile>,
}

impl Templates {
    /// Encodes the templates for concepts of `shape`.
    pub fn new(shape: &Shape) -> anyhow::Result<Templates> {
        let placeholder = || ConceptId::parse(&key(0));
        for file in [&shape.vectors, &shape.queries].into_iter().flatten() {
            if file.row_bytes != shape.dimension as usize * 4 {
                bail!(
                    "vectors from a file have {} values, the server's dimension is {}",
                    file.row_bytes / 4,
                    shape.dimension
                );
            }
        }
        let embedding = match shape.dimension {
            0 => None,
            dimension => {
                // A fixed, non-trivial unit-ish vector; the values do not matter to the server.
                let values = (0..dimension)
                    .map(|i| f32::from(u16::try_from(i % 1024).unwrap_or(0)) / 1024.0 - 0.5)
                    .collect();
                Some(Vector::new(values, dimension)?)
            }
        };
        let store = StoreConcept {
            id: placeholder()?,
            content: "x".repeat(shape.content_bytes),
            concept_type: shape.concept_type.clone(),
            model: "sutra-bench".to_owned(),
            attributes: Attributes::new(),
            embedding,
            ttl_seconds: None,
        };
        let batch = shape.batch.max(1);
        let vector_bytes: Option<Vec<u8>> = store.embedding.as_ref().map(|vector| {
            vector
                .as_slice()
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect()
        });
        // Without a query file the query is the stored vector itself (every score is 1; the
        // cost of an exact search does not depend on the values). Without a dimension there
        // is nothing to search for: the search template is never sent (a store without
        // vectors).
        let query = store.embedding.clone().map_or(
            SearchQuery::Text("sutra-bench".to_owned()),
            SearchQuery::Vector,
        );
        Ok(Templates {
            search: Template::with_vector(
                Request::Search(Search {
                    exact: shape.exact,
                    ef: shape.ef,
                    ..Search::new(query, shape.search_k.max(1))
                }),
                vector_bytes.as_deref(),
            )?,
            get_many: Template::new(Request::GetMany {
                ids: (0..batch)
                    .map(|_| placeholder())
                    .collect::<Result<_, _>>()?,
            })?,
            store_many: Template::new(Request::StoreMany(vec![store.clone(); batch as usize]))?,
            store: Template::with_vector(Request::StoreConcept(store), vector_bytes.as_deref())?,
            get: Template::new(Request::GetConceptById { id: placeholder()? })?,
            delete: Template::new(Request::Delete { id: placeholder()? })?,
            query: Template::new(Request::QueryByType(QueryByType {
                concept_type: shape.concept_type.clone(),
                limit: shape.query_limit,
                cursor: key(0),
            }))?,
            vectors: shape.vectors.clone(),
            queries: shape.queries.clone(),
        })
    }

    /// Bytes of one StoreConcept frame (what redis-benchmark calls the payload is its value;
    /// this is the whole request).
    pub fn store_frame_bytes(&self) -> usize {
        self.store.len()
    }
}

/// Where a connection's ids come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// Uniform over the keyspace.
    Random,
    /// The request's sequence number (prefill: every key once).
    Sequential,
}

/// One connection's request generator.
#[derive(Debug)]
pub struct Generator {
    templates: Arc<Templates>,
    rng: fastrand::Rng,
    keyspace: u64,
    get_percent: u8,
    ids: Ids,
    next_request_id: u32,
}

impl Generator {
    /// A generator seeded from `seed` (distinct per connection).
    pub fn new(
        templates: Arc<Templates>,
        seed: u64,
        keyspace: u64,
        get_percent: u8,
        ids: Ids,
    ) -> Generator {
        Generator {
            templates,
            rng: fastrand::Rng::with_seed(seed),
            keyspace: keyspace.max(1),
            get_percent,
            ids,
            next_request_id: 1,
        }
    }

    /// Appends the frame of request number `sequence` of `test` to `dst`; returns its request
    /// id and kind.
    pub fn append(&mut self, test: Test, sequence: u64, dst: &mut Vec<u8>) -> (u32, Kind) {
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        let kind = match test {
            Test::Store => Kind::Store,
            Test::Get => Kind::Get,
            Test::Delete => Kind::Delete,
            Test::Query => Kind::Query,
            Test::GetMany => Kind::GetMany,
            Test::StoreMany => Kind::StoreMany,
            Test::Search => Kind::Search,
            Test::Mixed => {
                if self.rng.u8(0..100) < self.get_percent {
                    Kind::Get
                } else {
                    Kind::Store
                }
            }
        };
        let template = match kind {
            Kind::Store => &self.templates.store,
            Kind::Get => &self.templates.get,
            Kind::Delete => &self.templates.delete,
            Kind::Query => &self.templates.query,
            Kind::GetMany => &self.templates.get_many,
            Kind::StoreMany => &self.templates.store_many,
            Kind::Search => &self.templates.search,
        };
        // Sequential ids: request n of a k-key request takes keys n*k .. n*k+k-1.
        let keys = template.key_digits.len() as u64;
        let (ids, keyspace) = (self.ids, self.keyspace);
        let rng = &mut self.rng;
        let start = dst.len();
        let mut first_key = 0;
        template.append(
            request_id,
            |item| {
                let key = match ids {
                    Ids::Random => rng.u64(0..keyspace),
                    Ids::Sequential => sequence.wrapping_mul(keys).wrapping_add(item) % keyspace,
                };
                if item == 0 {
                    first_key = key;
                }
                key
            },
            dst,
        );
        let vector = match kind {
            Kind::Store => self
                .templates
                .vectors
                .as_ref()
                .map(|file| file.row(first_key)),
            Kind::Search => self
                .templates
                .queries
                .as_ref()
                .map(|file| file.row(sequence)),
            _ => None,
        };
        if let Some(vector) = vector {
            template.patch_vector(&mut dst[start..], vector);
        }
        (request_id, kind)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sutra_protocol::{decode_request, Limits};
    use tokio_util::codec::Decoder;

    use super::*;

    fn shape() -> Shape {
        Shape {
            content_bytes: 176,
            dimension: 256,
            concept_type: "bench".to_owned(),
            query_limit: 10,
            batch: 4,
            search_k: 7,
            exact: true,
            ef: 0,
            vectors: None,
            queries: None,
        }
    }

    fn file(vectors: &[Vec<f32>]) -> VectorFile {
        let bytes = vectors
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        VectorFile::new(bytes, 256).unwrap()
    }

    #[test]
    fn vectors_from_files_go_to_their_keys_and_queries_in_turn() {
        let row = |seed: u16| -> Vec<f32> { (0..256).map(|i| f32::from(i + seed)).collect() };
        let templates = Arc::new(
            Templates::new(&Shape {
                exact: false,
                ef: 40,
                vectors: Some(file(&[row(0), row(1), row(2)])),
                queries: Some(file(&[row(7), row(8)])),
                ..shape()
            })
            .unwrap(),
        );
        let mut generator = Generator::new(templates, 1, 1_000, 0, Ids::Sequential);
        for sequence in [0_u16, 1, 2, 4] {
            let mut bytes = Vec::new();
            generator.append(Test::Store, u64::from(sequence), &mut bytes);
            let Request::StoreConcept(store) = decode(&bytes).request else {
                panic!("not a store");
            };
            assert_eq!(store.id.as_str(), key(u64::from(sequence)));
            assert_eq!(
                store.embedding.unwrap().as_slice(),
                row(sequence % 3).as_slice()
            );
            assert_eq!(
                store.content.len(),
                176,
                "the rest of the frame is untouched"
            );
        }
        for sequence in [0_u16, 1, 2] {
            let mut bytes = Vec::new();
            generator.append(Test::Search, u64::from(sequence), &mut bytes);
            let Request::Search(search) = decode(&bytes).request else {
                panic!("not a search");
            };
            assert_eq!((search.k, search.exact, search.ef), (7, false, 40));
            let SearchQuery::Vector(vector) = search.query else {
                panic!("not a vector query");
            };
            assert_eq!(vector.as_slice(), row(7 + sequence % 2).as_slice());
        }
    }

    #[test]
    fn vector_files_must_fit_the_dimension_and_be_finite() {
        assert!(VectorFile::new(vec![0; 1023], 256).is_err());
        assert!(VectorFile::new(Vec::new(), 256).is_err());
        assert!(VectorFile::new(vec![0; 1024], 0).is_err());
        let mut nan = vec![0_u8; 1024];
        nan[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(VectorFile::new(nan, 256).is_err());
        assert_eq!(VectorFile::new(vec![0; 2048], 256).unwrap().len(), 2);
        let wrong = Shape {
            vectors: Some(VectorFile::new(vec![0; 512], 128).unwrap()),
            ..shape()
        };
        assert!(Templates::new(&wrong).is_err());
    }

    #[test]
    fn search_asks_for_k_nearest_to_the_stored_vector() {
        let templates = Arc::new(Templates::new(&shape()).unwrap());
        let mut generator = Generator::new(templates, 1, 100, 90, Ids::Random);
        let mut bytes = Vec::new();
        let (_, kind) = generator.append(Test::Search, 0, &mut bytes);
        assert_eq!(kind, Kind::Search);
        let Request::Search(search) = decode(&bytes).request else {
            panic!("not a search");
        };
        assert_eq!((search.k, search.exact), (7, true));
        assert!(matches!(search.query, SearchQuery::Vector(vector) if vector.len() == 256));
    }

    fn decode(bytes: &[u8]) -> RequestFrame {
        let mut buf = BytesMut::from(bytes);
        let payload = FrameCodec::new(MAX_FRAME_BYTES_CAP)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "one frame per request");
        decode_request(&payload, &Limits::default()).unwrap()
    }

    #[test]
    fn patched_frames_decode_to_the_intended_requests() {
        let templates = Arc::new(Templates::new(&shape()).unwrap());
        let mut generator = Generator::new(templates, 1, 1_000_000, 90, Ids::Sequential);
        for (test, sequence) in [(Test::Store, 987_654), (Test::Get, 42), (Test::Delete, 7)] {
            let mut bytes = Vec::new();
            let (request_id, _) = generator.append(test, sequence, &mut bytes);
            let frame = decode(&bytes);
            assert_eq!(frame.request_id, request_id);
            let id = match frame.request {
                Request::StoreConcept(store) => {
                    assert_eq!(store.content.len(), 176);
                    assert_eq!(store.embedding.unwrap().len(), 256);
                    assert_eq!(store.concept_type, "bench");
                    store.id
                }
                Request::GetConceptById { id } | Request::Delete { id } => id,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(id.as_str(), key(sequence));
        }
        let mut bytes = Vec::new();
        generator.append(Test::Query, 123, &mut bytes);
        match decode(&bytes).request {
            Request::QueryByType(query) => {
                assert_eq!(query.cursor, "key:000000000123");
                assert_eq!((query.concept_type.as_str(), query.limit), ("bench", 10));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn request_ids_increase_and_random_keys_stay_in_the_keyspace() {
        let templates = Arc::new(Templates::new(&shape()).unwrap());
        let mut generator = Generator::new(templates, 9, 50, 50, Ids::Random);
        let mut kinds = (0, 0);
        for expected_id in 1..=500 {
            let mut bytes = Vec::new();
            let (request_id, kind) = generator.append(Test::Mixed, 0, &mut bytes);
            assert_eq!(request_id, expected_id);
            let frame = decode(&bytes);
            let id = match frame.request {
                Request::StoreConcept(store) => {
                    kinds.1 += 1;
                    assert_eq!(kind, Kind::Store);
                    store.id
                }
                Request::GetConceptById { id } => {
                    kinds.0 += 1;
                    assert_eq!(kind, Kind::Get);
                    id
                }
                other => panic!("unexpected {other:?}"),
            };
            let index: u64 = id.as_str()[KEY_PREFIX.len()..].parse().unwrap();
            assert!(index < 50);
        }
        assert!(
            kinds.0 > 150 && kinds.1 > 150,
            "mixed is about half and half: {kinds:?}"
        );
    }

    #[test]
    fn no_vector_when_dimension_is_zero() {
        let templates = Arc::new(
            Templates::new(&Shape {
                dimension: 0,
                ..shape()
            })
            .unwrap(),
        );
        let mut generator = Generator::new(templates, 1, 10, 0, Ids::Random);
        let mut bytes = Vec::new();
        generator.append(Test::Store, 0, &mut bytes);
        match decode(&bytes).request {
            Request::StoreConcept(store) => assert!(store.embedding.is_none()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn batches_get_distinct_keys_per_item() {
        let templates = Arc::new(Templates::new(&shape()).unwrap());
        let mut generator = Generator::new(templates, 3, 1_000, 0, Ids::Sequential);
        let mut bytes = Vec::new();
        let (_, kind) = generator.append(Test::GetMany, 5, &mut bytes);
        assert_eq!(kind, Kind::GetMany);
        match decode(&bytes).request {
            Request::GetMany { ids } => {
                let ids: Vec<&str> = ids.iter().map(ConceptId::as_str).collect();
                assert_eq!(
                    ids,
                    [
                        "key:000000000020",
                        "key:000000000021",
                        "key:000000000022",
                        "key:000000000023"
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut bytes = Vec::new();
        generator.append(Test::StoreMany, 0, &mut bytes);
        match decode(&bytes).request {
            Request::StoreMany(stores) => {
                let ids: Vec<&str> = stores.iter().map(|store| store.id.as_str()).collect();
                assert_eq!(
                    ids,
                    [
                        "key:000000000000",
                        "key:000000000001",
                        "key:000000000002",
                        "key:000000000003"
                    ]
                );
                assert!(stores.iter().all(|store| store.embedding.is_some()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn digits_are_zero_padded() {
        let mut digits = [0u8; KEY_DIGITS];
        write_digits(&mut digits, 1_234);
        assert_eq!(&digits, b"000000001234");
        write_digits(&mut digits, 999_999_999_999);
        assert_eq!(&digits, b"999999999999");
    }
}
