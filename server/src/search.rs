//! `Search`: the stored concepts nearest to a vector, or to a text the model embeds as a
//! query; through the engine's HNSW index or, when asked or configured, exactly.

use std::sync::{Arc, OnceLock};

use sutra_engine::Engine;
use sutra_protocol::{ErrorCode, Limits, Response, Search, SearchHit, SearchQuery, SearchResults};
use tokio::sync::Semaphore;

use crate::learn::Embedder;
use crate::reply::{Pending, Reply};

/// Runs `search`: at once for a vector, after the model for a text.
pub(crate) fn search(
    engine: Arc<Engine>,
    embedder: Option<Embedder>,
    limits: &Limits,
    search: Search,
) -> Reply {
    let max_frame_bytes = limits.max_frame_bytes as usize;
    let Search {
        query,
        k,
        concept_type,
        exact,
        ef,
        include_concepts,
    } = search;
    let how = How {
        k: k as usize,
        concept_type,
        exact,
        ef: ef as usize,
        include_concepts,
        max_frame_bytes,
    };
    match query {
        SearchQuery::Vector(vector) => {
            let query = vector.as_slice();
            if engine.search_is_quick(&how.concept_type, how.exact, how.ef) {
                // A graph walk: cheaper than the hand-off to another thread and back.
                return Reply::Ready(answer(&engine, query, &how));
            }
            let query = query.to_vec();
            Reply::Pending(Pending::new(off_the_runtime(engine, query, how)))
        }
        SearchQuery::Text(text) => {
            let Some(embedder) = embedder else {
                return Reply::Ready(Response::error(
                    ErrorCode::NoModel,
                    "this server has no embedding model to embed the query: search by vector, or start it with --model-dir/SUTRA_MODEL_DIR",
                ));
            };
            Reply::Pending(Pending::new(async move {
                match embedder.embed_query(text).await {
                    Ok(query) if engine.search_is_quick(&how.concept_type, how.exact, how.ef) => {
                        answer(&engine, &query, &how)
                    }
                    Ok(query) => off_the_runtime(engine, query, how).await,
                    Err(response) => response,
                }
            }))
        }
    }
}

/// What a search asks besides its query.
struct How {
    k: usize,
    concept_type: String,
    exact: bool,
    ef: usize,
    include_concepts: bool,
    max_frame_bytes: usize,
}

/// Searches scanning at once: the cores' number (each scan splits across up to 4 threads
/// itself). More wait for a turn instead of starting threads of their own.
fn scans() -> &'static Semaphore {
    static SCANS: OnceLock<Semaphore> = OnceLock::new();
    SCANS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(1, usize::from)))
}

/// Runs a scan on tokio's blocking threads: it takes milliseconds per 10,000 vectors, which
/// would hold an async worker (and every connection on it) for as long. Quick searches (a
/// graph walk, `Engine::search_is_quick`) run where the request arrived: the hand-off to a
/// blocking thread and back cost more than the walk (over TCP, one connection: ef 16 7,000
/// queries/s through the hand-off).
async fn off_the_runtime(engine: Arc<Engine>, query: Vec<f32>, how: How) -> Response {
    let Ok(_turn) = scans().acquire().await else {
        return Response::error(ErrorCode::Busy, "the server is shutting down");
    };
    tokio::task::spawn_blocking(move || answer(&engine, &query, &how))
        .await
        .unwrap_or_else(|_| {
            Response::error(ErrorCode::Internal, "the search failed; see the server log")
        })
}

fn answer(engine: &Engine, query: &[f32], how: &How) -> Response {
    let &How {
        k,
        ref concept_type,
        exact,
        ef,
        include_concepts,
        max_frame_bytes,
    } = how;
    let found = match engine.search(query, k, concept_type, exact, ef) {
        Ok(found) => found,
        Err(error) => return Response::error(error.code(), error.to_string()),
    };
    let exact = found.exact;
    let found = found.neighbours;
    // Header, status, exact, count; each hit's id, score and tag; the concepts asked for.
    let bytes = found.iter().fold(16, |sum: usize, neighbour| {
        let concept = if include_concepts {
            neighbour.concept.encoded_len()
        } else {
            0
        };
        sum.saturating_add(4 + neighbour.concept.id.as_str().len() + 5 + concept)
    });
    if bytes > max_frame_bytes {
        return Response::error(
            ErrorCode::InvalidArgument,
            format!("the {} results take {bytes} bytes, more than MAX_FRAME_BYTES ({max_frame_bytes}); ask for fewer, or without concepts", found.len()),
        );
    }
    Response::Found(SearchResults {
        exact,
        hits: found
            .into_iter()
            .map(|neighbour| SearchHit {
                id: neighbour.concept.id.clone(),
                score: neighbour.score,
                concept: include_concepts.then_some(neighbour.concept),
            })
            .collect(),
    })
}
