//! `Search`: the stored concepts nearest to a vector, or to a text the model embeds as a
//! query. Exact for now: every stored vector (of the type asked for) is compared.

use std::sync::Arc;

use sutra_engine::Engine;
use sutra_protocol::{ErrorCode, Limits, Response, Search, SearchHit, SearchQuery, SearchResults};

use crate::learn::Embedder;
use crate::reply::Reply;

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
        include_concepts,
        ..
    } = search;
    let k = k as usize;
    match query {
        SearchQuery::Vector(vector) => Reply::Ready(answer(
            &engine,
            vector.as_slice(),
            k,
            &concept_type,
            include_concepts,
            max_frame_bytes,
        )),
        SearchQuery::Text(text) => {
            let Some(embedder) = embedder else {
                return Reply::Ready(Response::error(
                    ErrorCode::NoModel,
                    "this server has no embedding model to embed the query: search by vector, or start it with --model-dir/SUTRA_MODEL_DIR",
                ));
            };
            Reply::Pending(Box::pin(async move {
                match embedder.embed_query(text).await {
                    Ok(vector) => answer(
                        &engine,
                        &vector,
                        k,
                        &concept_type,
                        include_concepts,
                        max_frame_bytes,
                    ),
                    Err(response) => response,
                }
            }))
        }
    }
}

fn answer(
    engine: &Engine,
    query: &[f32],
    k: usize,
    concept_type: &str,
    include_concepts: bool,
    max_frame_bytes: usize,
) -> Response {
    let found = engine.search_exact(query, k, concept_type);
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
        exact: true,
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
