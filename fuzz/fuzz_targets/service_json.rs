//! The embedding service's JSON bodies (`POST /embed`, `POST /v1/embeddings`, ML-base
//! `POST /embed`) on arbitrary bytes: the parser every handler uses
//! (`sutra_protocol::embed_json`, which builds without the model). Accepted bodies satisfy
//! the limits; refused ones get 400, 413 or 422, never anything else.
#![no_main]

use libfuzzer_sys::fuzz_target;

use sutra_protocol::embed_json as request;
use request::{TextLimits, RequestError};

fn within(texts: &[String], limits: &TextLimits) {
    assert!(!texts.is_empty());
    assert!(texts.len() <= limits.max_texts);
    assert!(texts.iter().all(|text| text.len() <= limits.max_text_bytes));
}

fn refused(error: &RequestError) {
    assert!(
        matches!(error.status, 400 | 413 | 422),
        "status {} for {}",
        error.status,
        error.message
    );
    assert!(!error.message.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let limits = TextLimits {
        max_texts: 8,
        max_text_bytes: 64,
    };
    match request::embed(data, &limits) {
        Ok(embed) => within(&embed.texts, &limits),
        Err(error) => refused(&error),
    }
    match request::openai(data, &limits, 256) {
        Ok(openai) => {
            within(&openai.texts, &limits);
            assert!((1..=256).contains(&openai.dimensions));
        }
        Err(error) => refused(&error),
    }
    match request::replica(data, &limits) {
        Ok(replica) => within(&replica.texts, &limits),
        Err(error) => refused(&error),
    }
});
