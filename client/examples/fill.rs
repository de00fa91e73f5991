//! Loads a running sutra-storage with concepts, for durability and restart measurements:
//! `count` stores of ~`content_bytes` content and a full-dimension vector, from `clients`
//! connections, each with one request in flight (like redis-benchmark `-P 1`). Prints the
//! store rate and, from the server's counters, how many writes each `fdatasync` covered.
//!
//! ```text
//! cargo run --release -p sutra-client --example fill -- 127.0.0.1:50051 1000000 50 200
//! ```

#![allow(
    clippy::cast_precision_loss,
    reason = "rates are printed, not computed with"
)]

use std::time::Instant;

use sutra_client::sutra_protocol::{ConceptId, StoreConcept, Vector};
use sutra_client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let count: u64 = args.next().map_or(Ok(100_000), |value| value.parse())?;
    let clients: u64 = args.next().map_or(Ok(50), |value| value.parse())?;
    let content_bytes: usize = args.next().map_or(Ok(200), |value| value.parse())?;

    let probe = Client::connect(addr.clone()).await?;
    let dimension = probe.health_check().await?.vector_dimension;
    let before = probe.stats().await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client_index in 0..clients {
        let client = Client::connect(addr.clone()).await?;
        tasks.spawn(async move {
            let mut index = client_index;
            while index < count {
                let id = format!("fill-{index:09}");
                let mut store = StoreConcept::new(
                    ConceptId::parse(&id)?,
                    format!("{id} {}", "c".repeat(content_bytes.saturating_sub(15))),
                );
                store.concept_type = "fill".to_owned();
                let seed = index as f32;
                store.embedding = Some(Vector::new(
                    (0..dimension).map(|i| seed + i as f32 / 1000.0).collect(),
                    dimension,
                )?);
                client.store_concept(store).await?;
                index += clients;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result?.map_err(|error| error.to_string())?;
    }
    let elapsed = started.elapsed();
    let after = probe.stats().await?;
    let delta = |name: &str| {
        after
            .get(name)
            .unwrap_or(0)
            .saturating_sub(before.get(name).unwrap_or(0))
    };
    let (appends, syncs) = (delta("wal_appends"), delta("wal_syncs"));
    println!(
        "stored {count} concepts from {clients} clients in {elapsed:.2?}: {:.0} stores/s; {appends} log records in {syncs} fsyncs = {:.1} writes/fsync",
        count as f64 / elapsed.as_secs_f64(),
        appends as f64 / syncs.max(1) as f64,
    );
    Ok(())
}
