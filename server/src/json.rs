//! JSON views of responses, shared by the text mode and HTTP.

use serde_json::{json, Map, Value};
use sutra_protocol::{Concept, ErrorCode, HealthInfo, Response, SearchResults, StatsSnapshot};

/// A concept as JSON.
pub fn concept(concept: &Concept) -> Value {
    json!({
        "id": concept.id.as_str(),
        "content": concept.content,
        "concept_type": concept.concept_type,
        "model": concept.model,
        "attributes": concept.attributes,
        "embedding": concept.embedding.as_ref().map(sutra_protocol::Vector::as_slice),
        "created_at_ms": concept.created_at_ms,
        "expires_at_ms": concept.expires_at_ms,
    })
}

/// Health as JSON.
pub fn health(health: &HealthInfo) -> Value {
    json!({
        "status": health.status,
        "role": health.role,
        "vector_dimension": health.vector_dimension,
        "concepts": health.concepts,
        "version": health.version,
        "uptime_seconds": health.uptime_seconds,
        "model": if health.model.is_empty() { Value::Null } else { Value::from(health.model.as_str()) },
    })
}

/// Stats as one flat JSON object: role, vector_dimension, every counter by name, and
/// `hit_rate`.
pub fn stats(stats: &StatsSnapshot) -> Value {
    let mut object = Map::new();
    object.insert("role".to_owned(), Value::from(stats.role.as_str()));
    object.insert(
        "vector_dimension".to_owned(),
        Value::from(stats.vector_dimension),
    );
    for (name, value) in &stats.counters {
        object.insert(name.clone(), Value::from(*value));
    }
    // hits / (hits + misses), for dashboards; 0 before the first get. (The binary Stats
    // carries integer counters only; clients compute it from hits and misses.)
    let (hits, misses) = (
        stats.get("hits").unwrap_or(0),
        stats.get("misses").unwrap_or(0),
    );
    #[allow(clippy::cast_precision_loss, reason = "a ratio for display")]
    let hit_rate = if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    };
    object.insert("hit_rate".to_owned(), Value::from(hit_rate));
    Value::Object(object)
}

fn learned_json(learned: &sutra_protocol::Learned) -> Value {
    json!({
        "id": learned.id,
        "created": learned.outcome.created,
        "created_at_ms": learned.outcome.created_at_ms,
        "expires_at_ms": learned.outcome.expires_at_ms,
        "tokens": learned.tokens,
        "truncated": learned.truncated,
    })
}

/// An error body: `{"code": 7, "name": "NotFound", "message": "..."}`.
pub fn error(code: ErrorCode, message: &str) -> Value {
    json!({ "code": code.as_u16(), "name": code.name(), "message": message })
}

/// The one shape of every failed reply, a text line or an HTTP error body:
/// `{"ok":false,"error":{"code","name","message"}}`.
pub fn failure(code: ErrorCode, message: &str) -> Value {
    json!({ "ok": false, "error": error(code, message) })
}

/// The text-mode reply line for a response.
pub fn reply(response: &Response) -> Value {
    match response {
        Response::Health(info) => json!({ "ok": true, "health": health(info) }),
        Response::Authenticated => json!({ "ok": true, "authenticated": true }),
        Response::Stats(snapshot) => json!({ "ok": true, "stats": stats(snapshot) }),
        Response::Stored(outcome) => json!({
            "ok": true,
            "created": outcome.created,
            "created_at_ms": outcome.created_at_ms,
            "expires_at_ms": outcome.expires_at_ms,
        }),
        Response::Concept(found) => json!({ "ok": true, "concept": concept(found) }),
        Response::Page(page) => json!({
            "ok": true,
            "concepts": page.concepts.iter().map(|found| concept(found)).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        }),
        Response::Deleted { existed } => json!({ "ok": true, "existed": existed }),
        Response::Many(found) => json!({
            "ok": true,
            "concepts": found.iter().map(|item| item.as_ref().map(|found| concept(found))).collect::<Vec<_>>(),
        }),
        Response::StoredMany(outcomes) => json!({
            "ok": true,
            "outcomes": outcomes
                .iter()
                .map(|outcome| json!({ "created": outcome.created, "created_at_ms": outcome.created_at_ms, "expires_at_ms": outcome.expires_at_ms }))
                .collect::<Vec<_>>(),
        }),
        Response::Cleared { removed } => json!({ "ok": true, "removed": removed }),
        Response::Learned(learned) => json!({ "ok": true, "learned": learned_json(learned) }),
        Response::LearnedMany(learned) => json!({
            "ok": true,
            "learned": learned.iter().map(learned_json).collect::<Vec<_>>(),
        }),
        Response::Found(results) => json!({
            "ok": true,
            "exact": results.exact,
            "results": search_hits(results),
        }),
        Response::Error(error) => failure(error.code, &error.message),
    }
}

/// Search results as JSON: `[{"id", "score", "concept"?}]`, best first.
pub fn search_hits(results: &SearchResults) -> Vec<Value> {
    results
        .hits
        .iter()
        .map(|hit| {
            let mut item = Map::new();
            item.insert("id".to_owned(), Value::from(hit.id.as_str()));
            item.insert("score".to_owned(), Value::from(hit.score));
            if let Some(found) = &hit.concept {
                item.insert("concept".to_owned(), concept(found));
            }
            Value::Object(item)
        })
        .collect()
}
