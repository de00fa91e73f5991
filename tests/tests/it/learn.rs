//! LearnConcept and LearnBatch against a real server with the default model: the stored
//! vector is the pipeline's Matryoshka-256 output, ids derive from (model, text), batches are
//! atomic, text mode's LEARN works, and a server without a model says NoModel.

use std::path::PathBuf;

use sutra_client::Client;
use sutra_embed::{Output, Pipeline, Precision};
use sutra_protocol::{ConceptId, ErrorCode, LearnConcept};
use sutra_server::{ModelConfig, ServerConfig};
use sutra_tests::{http_get, http_post, http_post_as, TestServer, TextConnection};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2")
}

fn with_model(config: &mut ServerConfig) {
    config.model = Some(ModelConfig::new(model_dir()));
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_stores_the_pipelines_vector_under_a_stable_id() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_model).await?;
    let client = Client::connect(server.addr_string()).await?;
    let text = "The quick brown fox jumps over the lazy dog.";
    let mut learn = LearnConcept::new(text);
    learn.concept_type = "note".to_owned();
    let learned = client.learn_concept(learn.clone()).await?;
    assert!(
        learned.id.starts_with("learn-") && learned.id.len() == 38,
        "{learned:?}"
    );
    assert!(learned.outcome.created);
    assert!(!learned.truncated);
    assert_eq!(learned.tokens, 12);
    // The same text again is the same concept.
    let again = client.learn_concept(learn).await?;
    assert_eq!(again.id, learned.id);
    assert!(!again.outcome.created);

    let stored = client.get_concept_by_id(&learned.id).await?;
    assert_eq!(stored.content, text);
    assert_eq!(stored.model, "all-MiniLM-L6-v2");
    let stored_vector = stored
        .embedding
        .as_ref()
        .expect("a learned concept has a vector");
    assert_eq!(stored_vector.len(), 256);
    let pipeline = Pipeline::load(&model_dir())?;
    let direct = pipeline.embed(&[text], Output::Matryoshka(256))?;
    assert!(cosine(stored_vector.as_slice(), &direct[0].vector) > 0.99999);

    let (status, body) = http_get(server.addr, "/health").await?;
    assert_eq!(status, 200);
    assert!(body.contains("\"model\":\"all-MiniLM-L6-v2\""), "{body}");
    // A binary client learns that learning works (and with which model) from Health.
    assert_eq!(client.health_check().await?.model, "all-MiniLM-L6-v2");
    server.stop().await
}

/// `EMBED_PRECISION=int8`: the server learns with the INT8 pipeline: the stored vector is the
/// INT8 pipeline's, close to (not equal to) the f32 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_precision_learns_with_the_int8_pipeline() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        with_model(config);
        if let Some(model) = &mut config.model {
            model.precision = Precision::Int8;
        }
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    let text = "Quantised weights keep the neighbours of every text.";
    let learned = client.learn_concept(LearnConcept::new(text)).await?;
    let stored = client.get_concept_by_id(&learned.id).await?;
    let stored_vector = stored.embedding.as_ref().expect("a vector");
    let int8 = Pipeline::load_with(&model_dir(), Precision::Int8)?;
    let exact = Pipeline::load(&model_dir())?;
    let quantised = int8.embed(&[text], Output::Matryoshka(256))?;
    let reference = exact.embed(&[text], Output::Matryoshka(256))?;
    assert!(cosine(stored_vector.as_slice(), &quantised[0].vector) > 0.99999);
    let close = cosine(stored_vector.as_slice(), &reference[0].vector);
    assert!((0.99..0.99999).contains(&close), "cosine to f32 {close}");
    server.stop().await
}

/// `EMBED_DOCUMENT_PREFIX`: the text is embedded with the prefix in front, and stored (and
/// its id derived) without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_prefix_is_embedded_not_stored() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        with_model(config);
        if let Some(model) = &mut config.model {
            model.document_prefix = Some("passage: ".to_owned());
        }
    })
    .await?;
    let client = Client::connect(server.addr_string()).await?;
    let text = "Prefixes change what a retrieval model sees.";
    let learned = client.learn_concept(LearnConcept::new(text)).await?;
    assert_eq!(
        learned.id,
        sutra_server::learn::derived_id("all-MiniLM-L6-v2", text)
    );
    let stored = client.get_concept_by_id(&learned.id).await?;
    assert_eq!(stored.content, text);
    let stored_vector = stored.embedding.as_ref().expect("a vector");
    let pipeline = Pipeline::load(&model_dir())?;
    let prefixed = pipeline.embed(&[&format!("passage: {text}")], Output::Matryoshka(256))?;
    let plain = pipeline.embed(&[text], Output::Matryoshka(256))?;
    assert_eq!(learned.tokens as usize, prefixed[0].tokens);
    assert!(cosine(stored_vector.as_slice(), &prefixed[0].vector) > 0.99999);
    assert!(cosine(stored_vector.as_slice(), &plain[0].vector) < 0.999);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_batch_is_one_round_trip_and_keeps_order_and_given_ids() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_model).await?;
    let client = Client::connect(server.addr_string()).await?;
    let texts = [
        "first text",
        "a second, somewhat longer text about storage",
        "third",
    ];
    let mut learns: Vec<LearnConcept> = texts.iter().map(|text| LearnConcept::new(*text)).collect();
    learns[1].id = Some(ConceptId::parse("chosen-id")?);
    let learned = client.learn_batch(learns).await?;
    assert_eq!(learned.len(), 3);
    assert_eq!(learned[1].id, "chosen-id");
    let found = client
        .get_many(&[learned[0].id.as_str(), "chosen-id", learned[2].id.as_str()])
        .await?;
    for (concept, text) in found.iter().zip(texts) {
        assert_eq!(concept.as_ref().map(|c| c.content.as_str()), Some(text));
    }
    // A learned concept survives a restart with its vector.
    let data = server.stop_keeping_data().await?;
    let server = TestServer::start_in(data, with_model).await?;
    let client = Client::connect(server.addr_string()).await?;
    let concept = client.get_concept_by_id("chosen-id").await?;
    assert_eq!(
        concept.embedding.as_ref().map(sutra_protocol::Vector::len),
        Some(256)
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_learn_and_a_server_without_a_model() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_model).await?;
    let mut text = TextConnection::connect(server.addr).await?;
    let reply = text.command("LEARN note hello from netcat").await?;
    assert_eq!(reply["ok"], true, "{reply}");
    let id = reply["learned"]["id"].as_str().expect("id").to_owned();
    let got = text.command(&format!("GET {id}")).await?;
    assert_eq!(got["concept"]["content"], "hello from netcat", "{got}");
    server.stop().await?;

    let bare = TestServer::start().await?;
    let client = Client::connect(bare.addr_string()).await?;
    let error = client
        .learn_concept(LearnConcept::new("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NoModel));
    assert!(error.to_string().contains("SUTRA_MODEL_DIR"), "{error}");
    bare.stop().await
}

/// The learn path over HTTP on the storage port: 201 with the concept id; metadata becomes
/// the type, the TTL and attributes; bad bodies get 400 with a JSON error and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_learn_stores_and_answers_201() -> anyhow::Result<()> {
    let server = TestServer::start_with(with_model).await?;
    let body = r#"{"content": "Learned over HTTP.", "metadata": {"type": "note", "source": "web", "rank": 3}}"#;
    let (status, answer) = http_post(server.addr, "/api/learn", body).await?;
    assert_eq!(status, 201, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    let id = answer["concept_id"].as_str().expect("an id").to_owned();
    let client = Client::connect(server.addr_string()).await?;
    let stored = client.get_concept_by_id(&id).await?;
    assert_eq!(stored.content, "Learned over HTTP.");
    assert_eq!(stored.concept_type, "note");
    assert_eq!(
        stored.attributes.get("source").map(String::as_str),
        Some("web")
    );
    assert_eq!(stored.attributes.get("rank").map(String::as_str), Some("3"));
    for bad in [
        "{not json",
        r#"{"content": 5}"#,
        r#"{"content": "x", "metadata": {"ttl_seconds": -1}}"#,
        r#"{"content": ""}"#,
    ] {
        let (status, answer) = http_post(server.addr, "/api/learn", bad).await?;
        assert!((400..500).contains(&status), "{bad} → {status} {answer}");
        assert!(answer.contains("\"error\""), "{answer}");
    }
    // The seed's `curl -X POST .../api/learn -d '{...}'` sends a form content type; the body is
    // JSON all the same (and so without any Content-Type).
    for content_type in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
    ] {
        let body = r#"{"content": "Learned with curl -d."}"#;
        let (status, answer) = http_post_as(server.addr, "/api/learn", content_type, body).await?;
        assert_eq!(status, 201, "{content_type:?}: {answer}");
    }
    let (status, health) = http_get(server.addr, "/api/health").await?;
    assert_eq!(status, 200);
    assert!(health.contains("all-MiniLM-L6-v2"), "{health}");
    server.stop().await
}
